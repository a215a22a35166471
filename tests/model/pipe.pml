/* tests/model/pipe.pml: the wake-up and close protocol of one pipe side, checked by spin.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Run by tests/model/run-spin (meson test suite "model"); by hand:
 *   spin -a pipe.pml && gcc -O2 -DSAFETY -o pan pan.c && ./pan -m100000
 *   spin -DBUG_ARMED_ORDER -a pipe.pml && ...          (must report errors)
 *
 * What is modelled
 * ----------------
 * One channel: side S (the inbox of everything posted on the other port, P) and side P.
 * S is the side under test; P is modelled only as far as S depends on it (its CLOSED and
 * PEER_CLOSED bits and its lock). Code references are to mpport/mp-pipe.c and
 * mpport/mp-message-port.c.
 *
 *   sender(0), sender(1)  two threads posting NMSG messages each on P, i.e. into S's inbox
 *                         (mp_message_port_post_message -> mp_pipe_side_send).
 *   starter               start() of the original owner object of S (object 1) on context 1
 *                         (mp_message_port_start), racing with the posts.
 *   loop(1), loop(2)      the GMainContexts of object 1 and object 2: each dispatches our
 *                         GSource when it is ready (mp_port_source_dispatch). The "message"
 *                         handler (user code) may close the port or transfer it away.
 *   receiver              a third thread calling mp_message_port_receive() on object 1,
 *                         then on object 2 (NULL while that one is detached).
 *   mover                 a thread transferring object 1 away (post_with_transfer(), from a
 *                         post on some other channel), or not.
 *   starter2              whoever receives the new object 2: starts it on context 2 at any
 *                         time after the transfer, or never.
 *   closer                close() of S (object 1 or 2) or of P from another thread
 *                         (mp_message_port_close), or nothing.
 *   monitor               runs once nothing else can move (spin's `timeout`) and checks the
 *                         end state.
 * Every optional action is a nondeterministic choice, so one search covers: no close, a
 * close of either side from another thread or from the handler (of object 1 or 2), no
 * transfer, a transfer from another thread or from the handler, the new object started or
 * not, receive() on the owner or on a detached object, in every interleaving. (-DNO_MOVER,
 * -DNO_CLOSER, -DNO_RECEIVER, -DNO_HANDLER_CLOSE, -DNO_HANDLER_TRANSFER drop an actor, for
 * smaller searches by hand.)
 *
 * How GLib is modelled
 * --------------------
 * A GSource has a ready time: ready[src] == 1 stands for ready time 0 ("dispatch now"),
 * 0 for -1 ("never"). g_source_set_ready_time() takes the context lock: one atomic store.
 * A main loop dispatches a source that is attached, not destroyed and ready
 * (g_main_context_check: ready_time <= now). GLib never resets the ready time by itself,
 * and a source is blocked (not checked) while its own dispatch runs, which the sequential
 * loop process gives for free. A source leaves its context only when its own dispatch
 * returns G_SOURCE_REMOVE: a port's source retires itself, on its own thread, once it is
 * no longer the side's (closed, or transferred away: the transfer only wakes it). Source i
 * belongs to object i and is attached to context i. Receive-async waiters and context
 * finalization (mp_port_source_destroyed) are not modelled.
 *
 * Mutexes and atomicity
 * ---------------------
 * Mutexes are bits taken with an atomic test-and-set. The state word is a byte of the
 * MP_SIDE_* bits of mp-pipe-private.h, written only with the side lock held, as in C.
 * Each critical section of the C code is one `CS { lock ... unlock }` step (CS is `atomic`).
 * That is Lipton's reduction and loses no behaviour: inside a section, everything touched is
 * guarded by the lock (inbox, source, state bits, owner) except at most one access to
 * something else — the store into a ready time (wake_locked) — so the section commutes
 * to one point. Where the C code drops the lock inside a function (around each "message"
 * emission, around the release of dropped messages) the model drops it too. The lock-free
 * reads of the state (start()'s early return, post_message()'s own-side check) are
 * separate steps; they read monotonic bits (CLOSED, owner), so any interleaving is covered.
 * spin -DFINE_GRAINED makes every statement its own step (the lock then really
 * serializes); that search is far larger and not run by the test.
 *
 * Properties checked
 * ------------------
 *  - Exactly once: a message is taken (popped for delivery by a dispatch or by receive())
 *    only while it is queued, and only once (assert in take()).
 *  - FIFO per sender: each sender's messages are taken in the order posted (take()).
 *  - No delivery after close returns: no message is taken once S is CLOSED (take()); close()
 *    sets CLOSED before it returns and nothing clears it. Taking is the linearization point
 *    of a delivery:
 *    a handler that closes its own port from the owning thread therefore sees no further
 *    "message", which is the contract; a close() from another thread may overlap one
 *    emission already taken before it.
 *  - No "message" on an object after its "close"; "close" at most once per side, and its
 *    source retires with it (dispatch_end()); exactly once when owed (the side closed
 *    while attached: CLOSE_PENDING was set), checked at the end. When the peer's marker is
 *    reached, nothing posted before it is still queued (take_marker()).
 *  - No zombie source: at the end every source that is no longer the side's has retired
 *    (otherwise it would keep its port object alive forever).
 *  - Errors only as documented: a post fails (MP_ERROR_INVALID_STATE) only when its own
 *    port P is closed; a transfer fails (MP_ERROR_DATA_CLONE) only for a detached or
 *    closed port.
 *  - No lost wake-up, and no message lost while the side is open (monitor). Every run of
 *    this model is finite: each worker does a bounded number of steps, and a dispatch only
 *    re-arms while messages remain, which are finite. So every execution ends in a
 *    quiescent state where only the main loops are left, blocked waiting for a ready
 *    source; spin's `timeout` is true exactly there. A wake-up was lost iff, in that state,
 *    an attached side still has queued messages (or ARMED/CLOSE_PENDING set): the loop
 *    will never dispatch it again, although "[] (queued && attached -> <> dispatched)"
 *    requires it. Conversely, messages queued on an attached side at some point are either
 *    taken later or the side was transferred/closed meanwhile, which the per-message fate
 *    accounts for. So on these finite runs the end-state assertion is the liveness property,
 *    and we check it with a safety search (-DSAFETY), which also reports any deadlock (a
 *    thread stuck before its end) as an invalid end state.
 *  - At the end every message is exactly one of: taken (delivered to object 1, object 2 or
 *    receive()), dropped because S closed (at post, or queued when S closed: the documented
 *    close rule), refused with an error because P was closed, or still queued at an open
 *    side that is not attached (never started, or transferred and not started again).
 *
 * Compile-time switches (spin -DNAME):
 *  BUG_ARMED_ORDER  the dispatch clears ARMED first and resets the ready time after (the
 *                   wrong order): must fail with a lost wake-up.
 *  BUG_NO_RETIRE_WAKE  the transfer does not wake the old source: it is never retired and
 *                   keeps its port object alive (a zombie source): must fail.
 *  BUDGET=n         dispatch budget (default 1; the library uses 1024).
 *  WAKER            the protocol of perf-01 (mp-waker.c): the source is ready while its
 *                   pending flag is set (ready[] stands for it: set by the waker before its
 *                   eventfd write, cleared as the dispatch begins); the dispatch no longer
 *                   clears ARMED as it begins but only when it finds the inbox empty, under
 *                   the lock, so posts made while it drains do not wake it; when the budget
 *                   runs out with messages left it sets its own flag again (ARMED stays).
 *  BUG_WAKER_NO_REARM  (with WAKER) the budget path leaves without setting the flag: must
 *                   fail with a lost wake-up.
 *  BUG_WAKER_ORDER  (with WAKER) the ARMED clear and the dispatch's reset in the wrong order:
 *                   the pending flag is reset after the drain cleared ARMED instead of before
 *                   it looks at the inbox: must fail with a lost wake-up.
 *  FINE_GRAINED     no atomic critical sections (see above).
 */

#ifndef BUDGET
#define BUDGET 1
#endif

#ifdef FINE_GRAINED
#define CS
#else
#define CS atomic
#endif

/* Vacuity checks: with -DREACH=n, point n fails an assertion when it is reached, so that
 * run must report an error (run-spin checks every point). Without it they vanish. */
#ifdef REACH
#define REACH_POINT(n)     assert(REACH != n);
#define REACH_IF(n, cond)  assert(REACH != n || !(cond));
#else
#define REACH_POINT(n)
#define REACH_IF(n, cond)
#endif

#define NSEND   2
#define NMSG    2
#define NMSGS   4      /* NSEND * NMSG */
#define MARKER  7      /* the in-band close marker (mp_message_new_close_marker) */

/* MpSideState (mp-pipe-private.h) */
#define CLOSED          1
#define ARMED           2
#define ATTACHED        4
#define CLOSE_PENDING   8
#define PEER_CLOSED    16

/* Where a message is (ghost). */
#define F_NONE      0   /* not posted yet */
#define F_QUEUED    1   /* in S's inbox */
#define F_TAKEN     2   /* taken by a dispatch ("message") or by receive() */
#define F_DROPPED   3   /* dropped: S was closed (at post, or queued when S closed) */
#define F_REFUSED   4   /* post_message() failed with MP_ERROR_INVALID_STATE */


/* What one step of the dispatch loop decided. */
#define D_STOP      0
#define D_EMIT      1
#define D_AGAIN     2
#define D_FIRST     3

/* ---- side S ---- */
bit  s_mutex;                     /* MpPipeSide.mutex */
byte st;                          /* MpPipeSide.state */
chan inbox = [NMSGS + 1] of { byte };   /* MpPipeSide.inbox: message ids and MARKER */
byte s_source;                    /* MpPipeSide.source: 0 = NULL, else the source index */
byte owner = 1;                   /* the one object that is not detached (MpMessagePort.detached) */
bit  started[3];                  /* MpMessagePort.started of object 1, 2 */

/* ---- side P (only what S depends on) ---- */
bit  p_mutex;
byte pst;

/* ---- GSources: index 1 and 2 (object i's source, attached to context i) ---- */
bit  ready[3];                    /* ready time 0 (1) or -1 (0) */
bit  alive[3];                    /* attached and not destroyed */
bit  obj_source[3];               /* MpMessagePort.source of object i is set */

/* ---- ghosts ---- */
byte fate[NMSGS];
bit  close_owed;                  /* CLOSE_PENDING was set: the side owes one "close" */
byte close_emitted;               /* "close" emissions on S, any object */
byte close_obj;                   /* the object that emitted it */
bit  handler_acted;               /* the handler closes or transfers at most once */

inline lock(m)   { atomic { m == 0 -> m = 1 } }
inline unlock(m) { m = 0 }

/* g_source_set_ready_time (source, t): one store under the context lock. */
inline set_ready_time(src, v) { ready[src] = v }

/* mp_pipe_side_wake_locked (S) */
inline wake_locked()
{
  if
  :: (st & (ATTACHED | ARMED)) == ATTACHED ->
       st = st | ARMED;
       set_ready_time(s_source, 1)
  :: else -> skip
  fi
}

/* A message leaves the inbox for a consumer (dispatch or receive), under the side lock. */
inline take(m)
{
  assert(fate[m] == F_QUEUED);                     /* exactly once */
  assert((st & CLOSED) == 0);                      /* no delivery after close */
  /* FIFO per sender: the sender's previous message is not still queued */
  assert(m % NMSG == 0 || fate[m - 1] != F_QUEUED);
  fate[m] = F_TAKEN
}

/* The peer's close marker left the inbox: everything posted before it was taken. */
inline take_marker()
{
  assert(fate[0] != F_QUEUED && fate[1] != F_QUEUED &&
         fate[2] != F_QUEUED && fate[3] != F_QUEUED)
}

/* queue_move (&dropped->messages, &side->inbox) in mp_pipe_side_close_locked(); the
 * messages are released after the unlock (mp_pipe_dropped_release), which changes nothing
 * here. */
inline drop_inbox(m)
{
  do
  :: len(inbox) > 0 ->
       inbox?m;
       if
       :: m != MARKER -> REACH_POINT(16) assert(fate[m] == F_QUEUED); fate[m] = F_DROPPED
       :: else -> skip
       fi
  :: else -> break
  od
}

/* mp_pipe_side_close_locked (S, &dropped) */
inline close_locked_S(res, m)
{
  if
  :: (st & CLOSED) != 0 -> res = 0
  :: else ->
       st = st | CLOSED;
       drop_inbox(m);
       if
       :: (st & ATTACHED) != 0 ->
            st = st | CLOSE_PENDING;
            close_owed = 1;
            wake_locked()
       :: else -> skip
       fi;
       res = 1
  fi
}

/* mp_pipe_side_notify_peer_closed (S): the marker goes into P's inbox, which is not
 * modelled; only P's bits matter to S. */
inline notify_peer_closed_S()
{
  CS {
    lock(p_mutex);
    if
    :: (pst & (CLOSED | PEER_CLOSED)) != 0 -> skip   /* mp_message_drop (marker) */
    :: else -> pst = pst | PEER_CLOSED                /* push marker; P is never attached */
    fi;
    unlock(p_mutex)
  }
}

/* mp_pipe_side_notify_peer_closed (P): appends the marker to S's inbox. */
inline notify_peer_closed_P()
{
  CS {
    lock(s_mutex);
    if
    :: (st & (CLOSED | PEER_CLOSED)) != 0 -> skip    /* marker dropped */
    :: else ->
         st = st | PEER_CLOSED;
         inbox!MARKER;
         wake_locked()
    fi;
    unlock(s_mutex)
  }
}

/* mp_message_port_close (object o of S) */
inline close_S(o, res, m)
{
  CS {
    lock(s_mutex);
    if
    :: owner == o -> close_locked_S(res, m)          /* !is_detached (self) */
    :: else -> res = 0
    fi;
    unlock(s_mutex)
  };
  if
  :: res -> notify_peer_closed_S()
  :: else -> skip
  fi;
  atomic { m = 0; res = 0 }                          /* dead temporaries */
}

/* mp_message_port_close (P's owner object). P's own inbox is not modelled and P is never
 * attached, so mp_pipe_side_close_locked (P) only sets CLOSED. */
inline close_P(res)
{
  CS {
    lock(p_mutex);
    if
    :: (pst & CLOSED) == 0 -> pst = pst | CLOSED; res = 1
    :: else -> res = 0
    fi;
    unlock(p_mutex)
  };
  if
  :: res -> notify_peer_closed_P()
  :: else -> skip
  fi
}

/* mp_message_port_receive (object o of S). Reaching the marker closes S (no marker back:
 * the peer is closed already). */
inline receive_S(o, res, m)
{
  CS {
    lock(s_mutex);
    if
    :: owner == o && (st & CLOSED) == 0 && len(inbox) > 0 ->
         inbox?m;
         if
         :: m == MARKER -> REACH_POINT(5) take_marker(); close_locked_S(res, m)
         :: else -> REACH_POINT(4) take(m)
         fi
    :: else -> skip                                  /* returns NULL */
    fi;
    m = 0; res = 0;                                  /* dead temporaries */
    unlock(s_mutex)
  }
}

/* mp_message_port_start (object o) on context o. Its lock-free early return (detached,
 * CLOSED or ATTACHED) is folded into the locked check: for one object those bits only ever
 * go one way here, so the early return happens only when the locked check fails too. The
 * g_source_new () + g_source_attach () before the lock, and the g_source_destroy () after
 * it when the check fails, are folded too: a source whose ready time is -1 is invisible
 * to its loop. */
inline start_S(o)
{
  CS {
    lock(s_mutex);
    if
    :: owner == o && !started[o] && (st & CLOSED) == 0 ->
         ready[o] = 0;                     /* g_source_attach (): ready time -1 */
         alive[o] = 1;
         started[o] = 1;
         obj_source[o] = 1;                /* self->source: takes our reference */
         s_source = o;                     /* the side takes our reference */
         st = st | ATTACHED;
         if
         :: len(inbox) > 0 -> REACH_POINT(13) wake_locked()
         :: else -> skip
         fi
    :: else -> skip                        /* lost a race: the source is destroyed */
    fi;
    unlock(s_mutex)
  }
}

/* post_with_transfer () with object 1 of S in the transfer list of a post on another
 * channel: lock (S and that post's destination, in address order), check (is_detached /
 * CLOSED), commit (old object detached, the side's source woken so that it retires itself
 * on its own thread, side->source cleared, ATTACHED|ARMED cleared, heir made owner),
 * unlock. Nothing is destroyed from this thread. */
inline transfer_S(ok)
{
  CS {
    lock(s_mutex);
    if
    :: owner != 1 || (st & CLOSED) != 0 ->
         REACH_POINT(14) ok = 0                     /* MP_ERROR_DATA_CLONE, nothing changes */
    :: else ->
         owner = 2;
         if
#ifndef BUG_NO_RETIRE_WAKE
         :: s_source != 0 -> set_ready_time(s_source, 1)  /* wake it to retire */
#endif
         :: else -> skip
         fi;
         s_source = 0;
         st = st & ~(ATTACHED | ARMED);
         ok = 1
    fi;
    unlock(s_mutex)
  }
}

/* The end of mp_port_source_dispatch (), no lock held: notify::closed and "close" if the
 * side closed; then, if the source retired, G_SOURCE_REMOVE: GLib destroys it once the
 * dispatch returns (its destroy-notify, mp_port_source_destroyed (), finds
 * self->source != source and does nothing). */
inline dispatch_end(c, closing, retired)
{
  atomic {
    if
    :: closing ->
         REACH_POINT(6) REACH_IF(15, c == 2)
         assert(close_emitted == 0);          /* "close" once per side */
         assert(retired);                     /* and the source goes with it */
         close_emitted++;
         close_obj = c
    :: else -> skip
    fi;
    if
    :: retired ->
         REACH_IF(18, !closing)               /* retired after a transfer */
         alive[c] = 0
    :: else -> skip
    fi;
    closing = 0;
    retired = 0
  }
}

/* One turn of the loop of mp_port_source_dispatch (source c), lock held on entry; releases
 * it. Sets act: D_STOP (left the loop), D_EMIT (m taken, to emit with no lock held) or
 * D_AGAIN (the marker was reached: the lock is dropped to release it, then the loop goes
 * on). */
inline dispatch_turn(c, budget, m, res, act, closing, retired)
{
  if
  :: s_source != c ->                                /* the loop condition */
       REACH_IF(9, act == D_AGAIN)                    /* ... while a handler ran */
       act = D_STOP
  :: else ->
       if
       :: (st & CLOSE_PENDING) != 0 ->
            /* the side's source goes; "close" is emitted after the loop */
            s_source = 0;
            st = st & ~(CLOSE_PENDING | ATTACHED | ARMED);
            closing = 1;
            act = D_STOP
       :: else ->
            if
            :: budget == 0 ->
#ifndef WAKER
                 if
                 :: len(inbox) > 0 ->
                      REACH_POINT(2) wake_locked()   /* re-arm and yield to the loop */
                 :: else -> skip
                 fi;
#else
                 if
                 :: len(inbox) > 0 ->
                      /* still ARMED: set our own flag and yield to the loop */
#ifndef BUG_WAKER_NO_REARM
                      REACH_POINT(2) set_ready_time(c, 1)
#else
                      REACH_POINT(2) skip
#endif
                 :: else -> st = st & ~ARMED
                 fi;
#endif
                 act = D_STOP
            :: else ->
                 if
                 :: len(inbox) == 0 ->
                      REACH_IF(12, act == D_FIRST)   /* an empty dispatch */
#ifdef WAKER
                      st = st & ~ARMED;              /* found empty: only now unarmed */
#endif
                      act = D_STOP
                 :: else ->
                      inbox?m;                       /* g_queue_pop_head_link () */
                      if
                      :: m == MARKER ->
                           /* the peer closed: everything it posted before was delivered */
                           REACH_POINT(3) take_marker();
                           close_locked_S(res, m);
                           act = D_AGAIN
                      :: else ->
                           REACH_POINT(1) REACH_IF(10, c == 2) REACH_IF(17, budget < BUDGET)
                           take(m);
                           act = D_EMIT
                      fi
                 fi
            fi
       fi
  fi;
  /* After the loop: closed or transferred away (by a handler just now, or by another
   * thread, which then woke us for this): the source retires itself, here on its own
   * thread (self->source and self->context cleared). */
  if
  :: act == D_STOP && s_source != c && obj_source[c] ->
       obj_source[c] = 0;
       retired = 1
  :: else -> skip
  fi;
  m = 0; res = 0;                                    /* dead temporaries */
  unlock(s_mutex)
}

/* ---------------------------------------------------------------------------------------- */

/* mp_message_port_post_message () on P, from one thread */
proctype sender(byte s)
{
  byte i = 0;
  byte id;
  bit ok;

  do
  :: i < NMSG ->
       id = s * NMSG + i;
       if
       :: (pst & CLOSED) != 0 ->                   /* mp_pipe_side_test (self->side, CLOSED) */
            fate[id] = F_REFUSED                   /* MP_ERROR_INVALID_STATE */
       :: else ->
            /* mp_pipe_side_send (P, message) */
            CS {
              lock(s_mutex);
              if
              :: (st & (CLOSED | PEER_CLOSED)) != 0 ->
                   ok = ((st & CLOSED) != 0);
                   if
                   :: ok -> REACH_POINT(7) fate[id] = F_DROPPED   /* closed peer: success, dropped */
                   :: else ->
                        /* P closed concurrently and its marker is queued already */
                        REACH_POINT(8) assert((pst & CLOSED) != 0);
                        fate[id] = F_REFUSED       /* MP_ERROR_INVALID_STATE */
                   fi
              :: else ->
                   inbox!id;                       /* g_queue_push_tail_link () */
                   fate[id] = F_QUEUED;
                   wake_locked()
              fi;
              unlock(s_mutex)
            }
       fi;
       i++
  :: else -> break
  od
}

proctype starter()
{
  start_S(1)
}

proctype receiver()
{
  byte m;
  bit res;

  /* The thread holds both objects: the original, then the one made by the transfer
   * (receive() on a detached object returns NULL). */
  receive_S(1, res, m);
  receive_S(2, res, m)
}

proctype mover()
{
  bit ok;

  if
  :: transfer_S(ok)       /* fails with MP_ERROR_DATA_CLONE if the handler transferred first */
  :: skip
  fi
}

/* Whoever receives the message carrying the new object may start it, here on context 2,
 * at any time after the transfer, or never. */
proctype starter2()
{
  if
  :: atomic { owner == 2 -> start_S(2) }
  :: skip
  fi
}

proctype closer()
{
  bit res;
  byte m;

  if
  :: close_S(1, res, m)
  :: close_S(2, res, m)
  :: close_P(res)
  :: skip
  fi
}

/* A GMainContext iterated by its thread; only our source c is on it. */
proctype loop(byte c)
{
  byte budget;
  byte m;
  bit res;
  bit closing;
  bit retired;
  byte act;
  bit ok;

end_idle:
  do
  :: atomic { alive[c] && ready[c] -> budget = BUDGET; closing = 0; act = D_FIRST }
     /* ---- mp_port_source_dispatch (source c) ---- */
#if defined(BUG_WAKER_ORDER)
     skip;                                       /* BUG: the flag is reset after the drain */
#elif !defined(BUG_ARMED_ORDER)
     set_ready_time(c, 0);                       /* g_source_set_ready_time (source, -1);
                                                  * WAKER: pending = 0 */
#else
     CS {
       lock(s_mutex);
       if
       :: s_source == c -> st = st & ~ARMED      /* BUG: ARMED cleared first ... */
       :: else -> skip
       fi;
       unlock(s_mutex)
     };
     set_ready_time(c, 0);                       /* ... the ready time reset after */
     act = D_AGAIN;
#endif
     do
     :: act == D_STOP -> break
     :: act == D_EMIT ->
          /* g_signal_emit ("message") with no lock held: the handler is user code */
          atomic {
            assert(close_obj != c);              /* no "message" after "close" */
            budget--;
            act = D_AGAIN
          };
          if
#ifndef NO_HANDLER_CLOSE
          :: atomic { !handler_acted -> handler_acted = 1 }; close_S(c, res, m)
#endif
#ifndef NO_HANDLER_TRANSFER
          :: atomic { !handler_acted && c == 1 -> handler_acted = 1 }; transfer_S(ok)
#endif
          :: skip
          fi
     :: act == D_FIRST || act == D_AGAIN ->
          /* D_FIRST: the lock taken at the start; ARMED is cleared only if the source is
           * still the side's, and otherwise the loop is not entered (it only retires).
           * D_AGAIN: the lock taken again after an emission, or after the release of the
           * dropped marker (mp_pipe_dropped_release). */
          CS {
            lock(s_mutex);
#ifndef WAKER
            if
            :: act == D_FIRST && s_source == c ->
                 st = st & ~ARMED                /* mp_pipe_side_clear_locked (ARMED) */
            :: else -> skip
            fi;
#endif
            dispatch_turn(c, budget, m, res, act, closing, retired)
          }
     od;
#ifdef BUG_WAKER_ORDER
     set_ready_time(c, 0);                       /* ... once ARMED was cleared: a post in
                                                  * between armed it, and is forgotten */
#endif
     dispatch_end(c, closing, retired)
  od
}

/* Runs only when no other statement can run: the final state of every execution. */
active proctype monitor()
{
  byte i;
  byte queued = 0;

  timeout ->
  d_step {
    /* No lost wake-up: an attached side has nothing pending. */
    assert((st & ATTACHED) == 0 || (len(inbox) == 0 && (st & (ARMED | CLOSE_PENDING)) == 0));
    assert((st & (CLOSED | ATTACHED)) != (CLOSED | ATTACHED));

    /* "close" exactly once when owed. */
    assert(close_emitted == close_owed);

    /* Every source that is no longer the side's retired itself (no zombie source keeping
     * a port object alive), and an object holds its source exactly while it is attached. */
    assert(!alive[1] || s_source == 1);
    assert(!alive[2] || s_source == 2);
    assert(obj_source[1] == alive[1] && obj_source[2] == alive[2]);

    /* Every message accounted for. */
    i = 0;
    do
    :: i < NMSGS ->
         assert(fate[i] != F_NONE);
         assert(fate[i] != F_DROPPED || (st & CLOSED) != 0);
         assert(fate[i] != F_REFUSED || (pst & CLOSED) != 0);
         if
         :: fate[i] == F_QUEUED ->
              assert((st & (CLOSED | ATTACHED)) == 0);
              queued++
         :: else -> skip
         fi;
         i++
    :: else -> break
    od;
    /* The inbox holds exactly the queued messages, plus the marker if P closed. */
    assert(len(inbox) == queued + (((st & PEER_CLOSED) != 0 && (st & CLOSED) == 0) -> 1 : 0));
    REACH_IF(11, queued > 0)                     /* left queued at an unattached side */
  }
}

init
{
  atomic {
    run sender(0);
    run sender(1);
    run starter();
    run starter2();
#ifndef NO_RECEIVER
    run receiver();
#endif
#ifndef NO_MOVER
    run mover();
#endif
#ifndef NO_CLOSER
    run closer();
#endif
    run loop(1);
    run loop(2)
  }
}
