/* tests/model/pipe.pml: the wake-up, close and flow-control protocol of one pipe side,
 * checked by spin.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Run by tests/model/run-spin (meson test suite "model"); by hand:
 *   spin -a pipe.pml && gcc -O2 -DSAFETY -o pan pan.c && ./pan -m100000
 *   spin -DBUG_ARMED_ORDER -a pipe.pml && ...          (must report errors)
 *   spin -DFLOW -DNO_CLOSER -DNO_HANDLER_CLOSE -a pipe.pml && ...   (flow control)
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
 * Flow control (-DFLOW, issue #17)
 * --------------------------------
 * S gets a high-water mark (MARK, default 1) and P's two senders become posters on their
 * own contexts: poster0 makes async post 0 (with a cancellable) and then sync post 1
 * without waiting for it; poster1 makes async posts 2 and 3, each once the previous one
 * completed. An async post (mp_message_port_post_message_async) looks for room under S's
 * lock, and if there is none makes its waiter's source and posts again under the lock: into
 * the inbox if there is room now and nothing waits, else into S's posting queue with its
 * waiter (queued). A sync post goes behind waiting posts, else into the inbox.
 *
 * Every pop admits (admit_locked ()): while posts wait and there is room, the oldest goes
 * into the inbox and its waiter, if it is the oldest waiter's, leaves the queue (queued
 * cleared) and is resolved and its source woken (pending flag). Only the pops of S's own
 * dispatch (mp_pipe_side_pop_for_dispatch_locked ()) put that off: the waiter goes into
 * S's to_wake (wake_deferred), to be resolved with success and woken, all together, by
 * mp_pipe_side_wake_deferred_locked (). The dispatch calls that under the lock on every way
 * out, and everything else that takes from S, waits on it, raises its mark or closes it
 * calls it first (and then admits at once): every other pop (mp_pipe_side_pop_locked ():
 * receive () on any thread, receive_timeout () from the handler), a receive that queues its
 * waiter (mp_pipe_side_enqueue_waiter_locked ()), a raised mark (mp_pipe_side_admit_locked
 * ()) and a close of S (mp_pipe_side_close_locked (): those posts are dropped with the
 * inbox, but were queued: success). So waiters are put off only while S's dispatch runs,
 * and only by it. With a mark, the dispatch's budget is the mark (none: the library's 1024,
 * more than the model ever holds).
 *
 * The poster's context dispatches the post's source (port_post_dispatch) without the lock:
 * still queued -> nothing, else the task returns the error it was resolved with and the
 * source is freed (G_SOURCE_REMOVE; its destroy-notify then takes no lock either). A post
 * that sees the POSTS_WAIT hint (read unlocked) makes its waiter without looking for room
 * first.
 *
 * Also: canceller (g_cancellable_cancel () on post 0: port_post_cancelled withdraws it if
 * it still waits; one put off is no longer queued: the post succeeded), raiser (the mark
 * raised by one or removed, which admits), close of S (waiting posts fail with
 * MP_ERROR_CLOSED, sync ones dropped; an async post made after it fails with
 * MP_ERROR_CLOSED too) and of P (its waiting async posts fail with MP_ERROR_INVALID_STATE,
 * sync ones behind them go in before the marker; the wakes put off stay with the
 * dispatch's end). With -DFLOW_FORGET poster1's context is finalized while post 3 is
 * pending (port_post_destroyed (), under the lock: a queued waiter leaves, the post stays as
 * a sync post's; one put off leaves to_wake), and with -DFLOW_MAY_NOT_START S may never be
 * started (a consumer that only calls receive ()). With -DFLOW_HANDLER_RECEIVES the
 * "message" handler may call mp_message_port_receive_timeout (self, -1, ...), which the
 * documentation allows: its first locked step pops (or fails, S closed) or queues its
 * receive waiter (rwait; the inbox is empty); a post made while it waits is handed to it
 * (mp_pipe_side_post_locked ()), and a close (of S, or P's marker) fails it. The handler
 * waiting for good is a valid end state only as the end of the whole run (the monitor
 * checks everything else: in particular that no wake it might be waiting for is put off).
 *
 * The actors that transfer S are left out (the waiting posts belong to the side, which a
 * transfer does not touch). A post source is woken at most once, and only once its waiter
 * left the queue and has its result (asserted), after which nothing writes queued or the
 * error again; so its lock-free dispatch (the reset of the pending flag, the look at
 * queued, the exchange of the error) is one step here. meson.build splits the search into
 * configurations (-DNO_CLOSER, -DNO_RECEIVER, -DNO_CANCELLER, -DNO_RAISER...): the whole
 * flow model is more than 40 M states.
 *
 * How GLib is modelled
 * --------------------
 * A GSource has a ready time: ready[src] == 1 stands for ready time 0 ("dispatch now"),
 * 0 for -1 ("never"). g_source_set_ready_time() takes the context lock: one atomic store.
 * With WAKER, ready[] stands for the pending flag, and the eventfd write that makes the
 * owner's poll return is not modelled: a post sets the flag under the side lock and writes
 * the eventfd only after it unlocked (mp-pipe.c, wake_after_unlock_locked()), a close or an
 * admission under the lock. What the model relies on holds either way: a write follows every
 * flag set 0 -> 1, so a loop waiting in poll for a set flag wakes; it may run one iteration
 * later than the model's loop does, which only delays the dispatch.
 * A main loop dispatches a source that is attached, not destroyed and ready
 * (g_main_context_check: ready_time <= now). GLib never resets the ready time by itself,
 * and a source is blocked (not checked) while its own dispatch runs, which the sequential
 * loop process gives for free. A source leaves its context only when its own dispatch
 * returns G_SOURCE_REMOVE: a port's source retires itself, on its own thread, once it is
 * no longer the side's (closed, or transferred away: the transfer only wakes it). Source i
 * belongs to object i and is attached to context i. Receive-async waiters and context
 * finalization (mp_port_source_destroyed) are not modelled (one sync receive waiter is,
 * with FLOW_HANDLER_RECEIVES).
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
 * With FLOW a section may also set post sources' pending flags (and S's ready time after
 * them, in admit): each flag is set only under the lock, last for its waiter, and only read
 * and cleared by its own dispatcher, which then reads only what was written before it (a
 * waiter's queued flag and error, never written again), so those stores commute with the
 * rest of the section too. The mark, the posting queue, to_wake and the waiters' fields
 * (receive waiters' too) are written under S's lock, as in C.
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
 *  - FLOW, whenever S's lock is free (s_unlock): posts wait only while the inbox holds at
 *    least the mark and S is open (so a pop, which admits, is still to come: no waiter
 *    sleeps while there is room), and the posting queue, post_waiters and the queued flags
 *    agree. With only async posts (-DFLOW_ALL_ASYNC) the inbox never exceeds the mark.
 *    Waiters are put off only while S's dispatch runs (its end, still to come, wakes them;
 *    in_dispatch is a ghost: C keeps no count), and never while a receive waits (it told
 *    them as it began to wait: what it waits for may hang on them); to_wake and the
 *    wake_deferred flags agree; a waiter is never both queued and put off.
 *  - FLOW, as a message enters the inbox (inbox_enter): exactly once (it was not posted or
 *    was waiting), no overtaking (its sender's previous post is not left waiting), and an
 *    async post only below the mark. take() also asserts that the previous one is not
 *    waiting. Each wake of a post source comes after its waiter left the queue and got its
 *    result, once, and while the source is alive (not freed by its dispatch or by the
 *    finalization of its context): so is every other use of the waiter by S's side (the
 *    cancel handler is left to g_cancellable_disconnect (), which is not modelled).
 *  - FLOW, as a post completes (complete): once, and only as documented: TRUE only if its
 *    message went into the inbox (and was taken, is queued, or was dropped by a later
 *    close), CANCELLED only if it was withdrawn, CLOSED only if S was closed while it waited
 *    or when it was made, INVALID_STATE only if P closed. Its lock-free dispatch finds it
 *    resolved (not put off).
 *  - FLOW, at the end: no lost wake-up of a waiter: nothing is put off (every dispatch's
 *    end woke what it owed), no dispatch runs unless its handler waits for good in
 *    receive_timeout () (FLOW_HANDLER_RECEIVES: then nothing could ever come, which is the
 *    handler's business, and everything else below must still hold: no deadlock), nothing
 *    waits at an attached side (the receiver keeps consuming), and every async post that no
 *    longer waits has completed (its source was woken and dispatched: no pending flag is
 *    left set).
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
 *  LANE             the posts' lock-free lane (mp-pipe.c, "The posts' lane"; implies WAKER):
 *                   while S is attached and open, a post pushes its message on the lane
 *                   with one compare-and-swap (a step of its own, no lock), and, if the lane
 *                   was empty, reads ARMED (another step) and wakes S under the lock only if
 *                   it is clear. Whoever holds S's lock and looks at the inbox first moves
 *                   the lane's messages to its tail (one exchange); a receive() that finds
 *                   the inbox empty shuts the lane, a dispatch that finds it empty opens it
 *                   again. Every change of ATTACHED, CLOSED, CLOSE_PENDING or PEER_CLOSED
 *                   shuts it (moving what it held into the inbox) or opens it, under the
 *                   lock. A dispatch that finds nothing clears ARMED and then, in a step of
 *                   its own, looks at the lane once more, and goes on if a post came
 *                   (mp_pipe_side_disarm_locked ()). The lane is kept oldest first here: C
 *                   keeps it newest first and reverses it as it takes it, the same sequence.
 *                   The sections that take the lane keep Lipton's reduction: the exchange is
 *                   their one access shared with lock-free posters (a wake's store into a
 *                   ready time does not touch what posters read), and the two accesses that
 *                   do not commute (a poster's push and its read of ARMED, the dispatch's
 *                   clear of ARMED and its second look) are separate steps.
 *  BUG_LANE_NO_RECHECK  (LANE) the dispatch clears ARMED and stops without looking at the
 *                   lane again: a post that saw ARMED set is left asleep: must fail.
 *  BUG_LANE_STAYS_OPEN  (LANE) a transfer leaves the lane open: posts go on landing there
 *                   while no dispatch looks at it: must fail (a message on the lane of a side
 *                   that is not attached, or lost).
 *  FINE_GRAINED     no atomic critical sections (see above).
 *  FLOW             flow control (see above); implies WAKER, NO_MOVER, NO_HANDLER_TRANSFER.
 *                   MARK=n the mark (default 1); FLOW_ALL_ASYNC post 1 async too;
 *                   FLOW_FORGET poster1's context may go away; FLOW_MAY_NOT_START S may
 *                   never be started (its thread consumes with receive () only: no
 *                   dispatch ever runs); NO_CANCELLER, NO_RAISER drop those actors;
 *                   NO_FLOW_INVARIANT leaves the lock-free invariant out, so that a lost
 *                   wake-up must show in the end state.
 *  BUG_NO_ADMIT     (FLOW) a pop does not admit waiting posts: a waiter sleeps although
 *                   the inbox has room: must fail (the invariant, or the end state).
 *  BUG_SYNC_BYPASS  (FLOW) a sync post goes into the inbox while async posts wait: it
 *                   overtakes its sender's waiting post: must fail.
 *  BUG_NO_RECHECK   (FLOW) the async post's second locked step queues the waiter without
 *                   looking for room again (a pop in between made room and admitted
 *                   nothing): must fail with a post waiting forever.
 *  BUG_NO_DIRECT_WAKE  (FLOW) a post that found room at its second step does not wake its
 *                   source: the task never returns: must fail.
 *  BUG_ADMIT_WAKES_HEAD  (FLOW) admission resolves the oldest waiter whatever post it let
 *                   in (a sync post): a post reports success while it still waits: must
 *                   fail.
 *  BUG_NO_END_WAKE  (FLOW) a dispatch that leaves on the budget path (its budget used up)
 *                   ends without waking the waiters it put off: must fail (the invariant,
 *                   or with NO_FLOW_INVARIANT the end state: a waiter put off for good).
 *  BUG_DEFER_OUTSIDE_DISPATCH  (FLOW) receive () pops as the dispatch does: the waiters it
 *                   lets in are put off, also while no dispatch runs, with nobody left to
 *                   wake them: must fail (the invariant, or at a side never started the
 *                   end state).
 *  FLOW_HANDLER_RECEIVES  (FLOW) the "message" handler may wait for the next message with
 *                   mp_message_port_receive_timeout (self, -1, ...) (see above). The
 *                   protocol of 98141a8, which put off every admission made while a
 *                   dispatch ran, failed it: a deadlock, the wake of post 2, whose
 *                   completion lets poster 1 make post 3, put off until the end of the very
 *                   dispatch whose handler waits for post 3.
 *  BUG_NO_FLUSH_ON_RECEIVE  (FLOW) receive () and receive_timeout () do not tell the wakes
 *                   put off (neither as they pop nor as they queue their waiter): with
 *                   FLOW_HANDLER_RECEIVES must fail (the invariant, or with
 *                   NO_FLOW_INVARIANT the end state: that deadlock).
 */

#ifndef BUDGET
#define BUDGET 1
#endif

/* Flow control is checked on the wake-up protocol in use (WAKER), with the actors that
 * transfer S left out (see the header). */
#ifdef FLOW
#ifndef WAKER
#define WAKER
#endif
#ifndef NO_MOVER
#define NO_MOVER
#endif
#ifndef NO_HANDLER_TRANSFER
#define NO_HANDLER_TRANSFER
#endif
#ifndef MARK
#define MARK 1
#endif
#endif

#ifdef LANE
#ifndef WAKER
#define WAKER
#endif
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
#define F_WAITING   5   /* FLOW: in S's posting queue (an async post waiting, or a sync post
                         * behind one) */
#define F_CANCELLED 6   /* FLOW: an async post cancelled while it waited, or before it began */
#define F_FAILED    7   /* FLOW: an async post dropped while it waited (MP_ERROR_CLOSED when
                         * S closed, MP_ERROR_INVALID_STATE when P closed) */


/* What one step of the dispatch loop decided. */
#define D_STOP      0
#define D_EMIT      1
#define D_AGAIN     2
#define D_FIRST     3
#define D_DISARM    4   /* LANE: found nothing (the lane taken), the lock still held */

/* ---- side S ---- */
bit  s_mutex;                     /* MpPipeSide.mutex */
byte st;                          /* MpPipeSide.state */
chan inbox = [NMSGS + 1] of { byte };   /* MpPipeSide.inbox: message ids and MARKER */
byte s_source;                    /* MpPipeSide.source: 0 = NULL, else the source index */
byte owner = 1;                   /* the one object that is not detached (MpMessagePort.detached) */
bit  started[3];                  /* MpMessagePort.started of object 1, 2 */
#ifdef LANE
chan lane = [NMSGS] of { byte };  /* MpPipeSide.lane: posts pushed without the lock */
bit  lane_shut = 1;               /* MpPipeSide.lane == MP_LANE_SHUT */
byte lm;                          /* scratch of the lane's locked steps (0 outside them) */
#endif

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

#ifdef FLOW
/* What an async post's GTask returned (finish()), or R_NONE while it has not completed. */
#define R_NONE      0
#define R_OK        1
#define R_CLOSED    2   /* MP_ERROR_CLOSED */
#define R_INVALID   3   /* MP_ERROR_INVALID_STATE */
#define R_CANCELLED 4   /* G_IO_ERROR_CANCELLED */

/* MpSendResult */
#define S_QUEUED    0
#define S_DROPPED   1
#define S_REFUSED   2
#define S_WAITING   3

/* The posts: poster 0 makes async post 0 (with a cancellable) then sync post 1 without
 * waiting; poster 1 makes async posts 2 and 3, each after the previous one completed.
 * -DFLOW_ALL_ASYNC makes post 1 async too. */
#ifdef FLOW_ALL_ASYNC
#define IS_ASYNC(i) (1)
#else
#define IS_ASYNC(i) ((i) != 1)
#endif
#define CANCEL_ID   0

/* ---- S's MpPipeWaiters, guarded by s_mutex ---- */
byte mark = MARK;                          /* high_water_mark (0: none) */
chan posting = [NMSGS] of { byte };        /* posting: message ids, oldest first */
chan post_waiters = [NMSGS] of { byte };   /* post_waiters: each by its message's id */
#define HAS_ROOM (mark == 0 || len(inbox) < mark)             /* has_room () */
chan to_wake = [NMSGS] of { byte };        /* to_wake: waiters put off, by message id */
bit  rwait;                                /* waiting: the handler's receive waiter
                                            * (FLOW_HANDLER_RECEIVES; the only one) */
/* A dispatch's budget with a mark: the mark; without one, the library's 1024, which no
 * dispatch here can use up. */
#define NO_BUDGET (NMSGS + 1)

/* ---- the MpPostWaiter of async post i and its source on the poster's context ---- */
bit  wq[NMSGS];                   /* queued (written under s_mutex, read without it by the
                                   * waiter's dispatch) */
bit  wd[NMSGS];                   /* wake_deferred: in to_wake (s_mutex) */
byte werr[NMSGS];                 /* error: R_NONE while unset, R_OK for NULL (s_mutex) */
bit  wsrc[NMSGS];                 /* the source was made (port_post_new ()) */
bit  pending[NMSGS];              /* its pending flag: ready while set */

/* ---- the GCancellable of post CANCEL_ID ---- */
bit  cancelled;
bit  connected;                   /* port_post_cancelled () is connected */

/* ---- ghosts ---- */
byte result[NMSGS];               /* R_*: what the post's task returned */
bit  entered[NMSGS];              /* the message went into the inbox */
bit  wgone[NMSGS];                /* the waiter's source was freed: its dispatch completed the
                                   * post, or its context was finalized */
bit  in_dispatch;                 /* S's dispatch runs: from its first lock to its last unlock
                                   * (C keeps no such count) */

/* FLOW_FORGET: the context of poster 1 was finalized while post 3 was pending. */
bit  forgot;
#define FORGOTTEN(i) ((i) == 3 && forgot)

/* Scratch for the locked sections below (always 0 outside them). */
byte fm;
byte fw;
bit  fmoved;
#endif

inline lock(m)   { atomic { m == 0 -> m = 1 } }
inline unlock(m) { m = 0 }

/* Leaves a critical section of S. FLOW: the invariant that makes a waiting post's wake-up
 * certain holds whenever S's lock is free: posts wait only while the inbox is at the mark,
 * so some message is in the inbox, and taking it out (which must admit) is still to come;
 * and a waiter admitted but put off is owed its wake by S's dispatch, still running, and
 * is not what a waiting receive may be waiting for. And the posting queue, post_waiters,
 * to_wake and the queued and wake_deferred flags agree. */
inline s_unlock()
{
#ifdef FLOW
#ifndef NO_FLOW_INVARIANT
  assert(len(posting) == 0 ||
         (mark > 0 && len(inbox) >= mark && (st & (CLOSED | PEER_CLOSED)) == 0));
  /* Waiters are put off only while S's dispatch runs: its end is still to come; and
   * not while a receive waits, which may be waiting for a post that their posters make
   * once told (FLOW_HANDLER_RECEIVES: the handler, inside that very dispatch). */
  assert(in_dispatch || len(to_wake) == 0);
  assert(!rwait || len(to_wake) == 0);
#endif
  assert(len(post_waiters) <= len(posting));
  assert(wq[0] + wq[1] + wq[2] + wq[3] == len(post_waiters));
  assert(wd[0] + wd[1] + wd[2] + wd[3] == len(to_wake));
  assert(!(wq[0] && wd[0]) && !(wq[1] && wd[1]) && !(wq[2] && wd[2]) && !(wq[3] && wd[3]));
#ifdef FLOW_ALL_ASYNC
  /* Only async posts: the inbox never holds more than the mark (plus the peer's marker). */
  assert(mark == 0 || len(inbox) <= mark + ((st & PEER_CLOSED) != 0 -> 1 : 0));
#endif
#endif
  unlock(s_mutex)
}

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

#ifdef LANE
/* mp_pipe_side_flush_lane_locked (S): the lane's messages go to the inbox's tail. */
inline lane_flush()
{
  do
  :: len(lane) > 0 -> lane?lm; inbox!lm
  :: else -> break
  od;
  lm = 0
}

/* lane_shut_locked (S) */
inline lane_shut_locked()
{
  lane_flush();
  lane_shut = 1
}

/* mp_pipe_side_update_lane_locked (S), which every change of the lane's state bits calls
 * (mp_pipe_side_set_locked (), mp_pipe_side_clear_locked ()). */
inline lane_update()
{
  if
  :: (st & (ATTACHED | CLOSED | CLOSE_PENDING | PEER_CLOSED)) == ATTACHED -> lane_shut = 0
  :: else -> lane_shut_locked()
  fi
}
#define LANE_UPDATE lane_update();
#else
#define LANE_UPDATE
#endif

/* A message leaves the inbox for a consumer (dispatch or receive), under the side lock. */
inline take(m)
{
  assert(fate[m] == F_QUEUED);                     /* exactly once */
  assert((st & CLOSED) == 0);                      /* no delivery after close */
  /* FIFO per sender: the sender's previous message is not still queued (nor waiting) */
  assert(m % NMSG == 0 || (fate[m - 1] != F_QUEUED && fate[m - 1] != F_WAITING));
  fate[m] = F_TAKEN
}

/* The peer's close marker left the inbox: everything posted before it was taken. */
inline take_marker()
{
  assert(fate[0] != F_QUEUED && fate[1] != F_QUEUED &&
         fate[2] != F_QUEUED && fate[3] != F_QUEUED);
  assert(fate[0] != F_WAITING && fate[1] != F_WAITING &&
         fate[2] != F_WAITING && fate[3] != F_WAITING)
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

#ifdef FLOW
/* After a pop of message m: admission (n: posts waited), the wakes put off if defer. */
#define FLOW_POP_ADMIT(m, n, defer) \
  ; REACH_IF(n, len(posting) > 0) pop_admit(m, defer)
/* mp_pipe_side_wake_deferred_locked () first (n: there was something to tell). */
#define FLOW_TELL_DEFERRED(n) REACH_IF(n, len(to_wake) > 0) wake_deferred();
/* What mp_pipe_side_pop_locked () (receive () and the like) does: it tells first
 * (RECEIVE_TELLS) and admits at once (RECEIVE_DEFERS 0); and the queueing of a receive's
 * waiter tells too (ENQUEUE_TELLS). */
#if defined(BUG_DEFER_OUTSIDE_DISPATCH)
#define RECEIVE_TELLS(n)                     /* BUG: pops as the dispatch does */
#define RECEIVE_DEFERS 1
#define ENQUEUE_TELLS wake_deferred();
#elif defined(BUG_NO_FLUSH_ON_RECEIVE)
#define RECEIVE_TELLS(n)                     /* BUG: receives do not tell */
#define RECEIVE_DEFERS 0
#define ENQUEUE_TELLS
#else
#define RECEIVE_TELLS(n) FLOW_TELL_DEFERRED(n)
#define RECEIVE_DEFERS 0
#define ENQUEUE_TELLS wake_deferred();
#endif
#define HANDLER_WAITS rwait
#else
#define FLOW_POP_ADMIT(m, n, defer)
#define FLOW_TELL_DEFERRED(n)
#define RECEIVE_TELLS(n)
#define HANDLER_WAITS 0
#endif

#ifdef FLOW
/* ---- Flow control (mp-pipe.c, "Flow control"), all under S's lock ---- */

/* Message i goes into the inbox: posted straight in, or admitted from the posting queue. */
inline inbox_enter(i)
{
  assert(fate[i] == F_NONE || fate[i] == F_WAITING);   /* exactly once */
  /* No overtaking: the sender's previous post is not left waiting behind this one. */
  assert(i % NMSG == 0 || (fate[i - 1] != F_WAITING && fate[i - 1] != F_NONE));
  /* An async post goes in only below the mark (one whose poster went away is a sync post). */
  assert(!IS_ASYNC(i) || HAS_ROOM || FORGOTTEN(i));
  inbox!i;
  fate[i] = F_QUEUED;
  entered[i] = 1
}

/* mp_wakeable_source_wake (waiter i's source): its pending flag; the eventfd write that goes
 * with it is the GLib model's business (a ready source is dispatched). */
inline wake_post(i)
{
  /* A post's source is woken once its waiter left the queue (and to_wake) with its result,
   * never before: so the lock-free port_post_dispatch () finds it out and reads its result,
   * it is woken exactly once, and while it is alive (mp_wakeable_source_wake_last ()). */
  assert(!wq[i] && !wd[i] && werr[i] != R_NONE && !pending[i] && !wgone[i]);
  pending[i] = 1
}

/* post_waiter_resolve_locked (): waiter i, just out of the queue, gets its result. */
inline resolve(i, e)
{
  assert(!wq[i] && !wd[i] && werr[i] == R_NONE && !wgone[i]);
  werr[i] = e;
  wake_post(i)
}

/* The post of fm was just unlinked from the head of the posting queue: fw = 1 + the id of its
 * waiter, taken out of post_waiters, if it is the oldest waiter's (post_waiter_pop_for_locked
 * ()), else 0 (a sync post's). */
inline pop_waiter_for()
{
  if
  :: len(post_waiters) > 0 ->
       post_waiters?<fw>;                        /* the oldest waiter */
       if
#ifndef BUG_ADMIT_WAKES_HEAD
       :: fw == fm -> assert(!wgone[fw]); post_waiters?_; wq[fw] = 0; fw = fw + 1
#else
       :: true -> post_waiters?_; wq[fw] = 0; fw = fw + 1   /* BUG: whatever post left */
#endif
       :: fw != fm -> fw = 0
       fi
  :: len(post_waiters) == 0 -> fw = 0
  fi
}

/* Waiter i was let in by a pop of S's dispatch: its post is in the inbox, its wake put off
 * (wake_deferred, pushed on to_wake) until wake_deferred (). */
inline defer_wake(i)
{
  REACH_POINT(38)
  assert(!wq[i] && !wd[i] && werr[i] == R_NONE && !wgone[i]);
  wd[i] = 1;
  to_wake!i
}

/* admit_locked (S, defer): oldest first, while there is room; the waiters of the posts let
 * in are told at once, or with defer (the dispatch's pops) put off. */
inline admit(defer)
{
  do
  :: len(posting) > 0 && HAS_ROOM ->
       /* nobody waits to receive: the inbox is not empty while posts wait */
       assert(!rwait);
       posting?fm;
       pop_waiter_for();
       inbox_enter(fm);
       REACH_IF(25, fmoved)                      /* several let in at once */
       fmoved = 1;
       if
       :: fw != 0 && defer -> defer_wake(fw - 1)
       :: fw != 0 && !defer -> resolve(fw - 1, R_OK)
       :: else -> REACH_POINT(22) skip         /* a sync post, queued behind waiting ones */
       fi
  :: else -> break
  od;
  if
  :: fmoved -> wake_locked()
  :: else -> skip
  fi;
  fm = 0; fw = 0; fmoved = 0
}

/* mp_pipe_side_wake_deferred_locked (S): every waiter put off is resolved with success and
 * woken, oldest first. */
inline wake_deferred()
{
  do
  :: len(to_wake) > 0 ->
       to_wake?fw;
       wd[fw] = 0;
       resolve(fw, R_OK)
  :: else -> break
  od;
  fw = 0
}

/* S's dispatch takes the lock the first time (a ghost: C keeps no count). */
inline begin_dispatch()
{
  assert(!in_dispatch);                         /* one dispatch of S at a time here */
  in_dispatch = 1
}

/* The end of S's dispatch, under the lock, on every way out: the wakes it put off are told
 * (41: some; 45: two at once, with a mark of 2). BUG_NO_END_WAKE: not when it used its
 * budget up (nowake). */
inline end_dispatch(nowake)
{
  assert(in_dispatch);
  in_dispatch = 0;
  REACH_IF(41, len(to_wake) > 0 && !nowake) REACH_IF(45, len(to_wake) == 2 && !nowake)
  if
  :: !nowake -> wake_deferred()
  :: else -> skip
  fi
}

/* mp_pipe_side_admit_locked (S), the public one (a raised mark): tells the wakes put off
 * first, then admits at once. */
inline admit_public(n)
{
  FLOW_TELL_DEFERRED(n)
  admit(0)
}

/* What a pop of message m (not the marker) does after taking it out. */
inline pop_admit(m, defer)
{
#ifndef BUG_NO_ADMIT
  if
  :: len(posting) > 0 -> admit(defer)
  :: else -> skip
  fi
#else
  skip                                          /* BUG: room made, nobody let in */
#endif
}

/* A post handed to the handler's waiting receive (mp_pipe_side_post_locked (), pending
 * receives first): it never enters the inbox (empty: the receive waits), the receive takes
 * it, and the source is not woken. Here it enters and leaves in one step, for the checks. */
inline hand_over(i)
{
  assert(len(inbox) == 0 && len(posting) == 0);
  REACH_POINT(49)
  inbox_enter(i);
  inbox?eval(i);
  take(i);
  rwait = 0
}

/* posting_end_locked (S, e, keep_sync): every waiting post fails with e, its message dropped;
 * sync posts behind them go into the inbox if keep_sync, else are dropped too. */
inline posting_end(e, keep_sync)
{
  do
  :: len(posting) > 0 ->
       posting?fm;
       pop_waiter_for();
       assert(fate[fm] == F_WAITING);
       if
       :: fw == 0 && keep_sync -> REACH_POINT(34) inbox_enter(fm)
       :: else ->
            if
            :: fw != 0 -> REACH_IF(33, e == R_CLOSED) REACH_IF(35, e == R_INVALID)
                     fate[fm] = F_FAILED; resolve(fw - 1, e)
            :: else -> fate[fm] = F_DROPPED      /* a sync post: S closed */
            fi
       fi
  :: else -> break
  od;
  assert(len(post_waiters) == 0);
  fm = 0; fw = 0
}

/* mp_pipe_side_post_locked (S, message i, waiter if async, ...) -> r; with no waiter it is
 * mp_pipe_side_send_locked () (a sync post, or the fast path of an async one). */
inline post_locked(i, async, r)
{
  if
  :: (st & CLOSED) != 0 ->
       /* success, dropped (36: an async post's second step found S closed) */
       REACH_IF(36, async) fate[i] = F_DROPPED; r = S_DROPPED
  :: (st & (CLOSED | PEER_CLOSED)) == PEER_CLOSED ->
       /* P closed concurrently and its marker is queued already */
       assert((pst & CLOSED) != 0);
       fate[i] = F_REFUSED; r = S_REFUSED
  :: (st & (CLOSED | PEER_CLOSED)) == 0 ->
       if
#ifndef BUG_SYNC_BYPASS
       :: len(posting) > 0 || (async && !HAS_ROOM) ->
#else
       :: (async && len(posting) > 0) || (async && !HAS_ROOM) ->   /* BUG: sync goes in */
#endif
            posting!i;
            fate[i] = F_WAITING;
            if
            :: async ->
                 wq[i] = 1; post_waiters!i; r = S_WAITING;
                 REACH_IF(30, len(post_waiters) == 2)       /* two posters wait */
            :: else -> REACH_POINT(21) r = S_QUEUED      /* sync, behind waiting posts */
            fi
       :: else ->
            if
            :: rwait -> hand_over(i)            /* pending receives are served first */
            :: else -> inbox_enter(i); wake_locked()
            fi;
            r = S_QUEUED
       fi
  fi
}

/* A post completes: its task returns res (on the poster's context). */
inline complete(i, res)
{
  assert(result[i] == R_NONE);                 /* once */
  /* and only as documented */
  assert(res != R_OK || fate[i] == F_QUEUED || fate[i] == F_TAKEN ||
         (fate[i] == F_DROPPED && entered[i]));
  assert(res != R_CANCELLED || fate[i] == F_CANCELLED);
  assert(res != R_CLOSED || ((fate[i] == F_FAILED || (fate[i] == F_DROPPED && !entered[i])) &&
                             (st & CLOSED) != 0));
  assert(res != R_INVALID || ((fate[i] == F_FAILED || fate[i] == F_REFUSED) && (pst & CLOSED) != 0));
  result[i] = res
}

/* port_post_cancelled () of post i: in the thread that cancels, or in the poster. */
inline cancel_handler(i)
{
  CS {
    lock(s_mutex);
    /* mp_pipe_side_withdraw_locked () */
    if
    :: wq[i] ->
         REACH_POINT(23)
         assert(fate[i] == F_WAITING && post_waiters??[eval(i)] && posting??[eval(i)]);
         post_waiters??eval(i);
         wq[i] = 0;
         posting??eval(i);
         fate[i] = F_CANCELLED;
         resolve(i, R_CANCELLED)
    :: else ->
         /* too late (42: admitted, its wake put off: the post succeeded) */
         REACH_IF(24, fate[i] == F_QUEUED || fate[i] == F_TAKEN) REACH_IF(42, wd[i])
    fi;
    s_unlock()
  }
}
#endif

/* mp_pipe_side_close_locked (S, &dropped) */
inline close_locked_S(res, m)
{
  if
  :: (st & CLOSED) != 0 -> res = 0
  :: else ->
       st = st | CLOSED;
       LANE_UPDATE
       FLOW_TELL_DEFERRED(37)
       drop_inbox(m);
#ifdef FLOW
       /* room will never come: waiting posts fail (MP_ERROR_CLOSED), every post dropped
        * (the waiters put off were told first (37): success, their posts were queued);
        * a waiting receive fails (mp_pipe_side_fail_waiters_locked (), 50) */
       if
       :: len(posting) > 0 -> posting_end(R_CLOSED, 0)
       :: else -> skip
       fi;
       if
       :: rwait -> REACH_POINT(50) rwait = 0
       :: else -> skip
       fi;
#endif
       if
       :: (st & ATTACHED) != 0 ->
            st = st | CLOSE_PENDING;
            LANE_UPDATE
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

/* mp_pipe_side_notify_peer_closed (P): appends the marker to S's inbox, or hands it to a
 * waiting receive: S reaches P's close at once (mp_pipe_side_reach_peer_close_locked ()). */
inline notify_peer_closed_P(res, m)
{
  CS {
    lock(s_mutex);
    if
    :: (st & (CLOSED | PEER_CLOSED)) != 0 -> skip    /* marker dropped */
    :: else ->
         st = st | PEER_CLOSED;
         LANE_UPDATE
#ifdef FLOW
         /* P's own code closed it: its waiting async posts fail (MP_ERROR_INVALID_STATE),
          * its sync posts behind them go in before the marker */
         if
         :: len(posting) > 0 -> posting_end(R_INVALID, 1)
         :: else -> skip
         fi;
         if
         :: rwait -> take_marker(); close_locked_S(res, m)   /* the receive fails */
         :: else -> inbox!MARKER; wake_locked()
         fi
#else
         inbox!MARKER;
         wake_locked()
#endif
    fi;
    s_unlock()
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
    s_unlock()
  };
  if
  :: res -> notify_peer_closed_S()
  :: else -> skip
  fi;
  atomic { m = 0; res = 0 }                          /* dead temporaries */
}

/* mp_message_port_close (P's owner object). P's own inbox is not modelled and P is never
 * attached, so mp_pipe_side_close_locked (P) only sets CLOSED. */
inline close_P(res, m)
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
  :: res -> notify_peer_closed_P(res, m)
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
    :: owner == o && (st & CLOSED) == 0 ->
         RECEIVE_TELLS(39)                           /* mp_pipe_side_pop_locked () */
#ifdef LANE
         if
         :: len(inbox) == 0 -> lane_shut_locked()   /* it may queue itself to wait */
         :: else -> skip
         fi;
#endif
         if
         :: len(inbox) > 0 ->
              inbox?m;
              if
              :: m == MARKER -> REACH_POINT(5) take_marker(); close_locked_S(res, m)
              :: else -> REACH_POINT(4) take(m) FLOW_POP_ADMIT(m, 26, RECEIVE_DEFERS)
              fi
         :: else -> skip                             /* returns NULL */
         fi
    :: else -> skip                                  /* returns NULL */
    fi;
    m = 0; res = 0;                                  /* dead temporaries */
    s_unlock()
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
         LANE_UPDATE
         if
         :: len(inbox) > 0 -> REACH_POINT(13) wake_locked()
         :: else -> skip
         fi
    :: else -> skip                        /* lost a race: the source is destroyed */
    fi;
    s_unlock()
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
#ifndef BUG_LANE_STAYS_OPEN
         LANE_UPDATE
#endif
         ok = 1
    fi;
    s_unlock()
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
#ifdef FLOW
  if
  :: act == D_FIRST ->
       begin_dispatch();
       budget = (mark == 0 -> NO_BUDGET : mark)   /* the mark's worth at most */
  :: else -> skip
  fi;
#endif
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
            LANE_UPDATE
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
#ifdef LANE
                 lane_flush();
#endif
                 if
                 :: len(inbox) > 0 ->
                      /* still ARMED: set our own flag and yield to the loop */
#ifndef BUG_WAKER_NO_REARM
                      REACH_POINT(2) set_ready_time(c, 1)
#else
                      REACH_POINT(2) skip
#endif
                      ; act = D_STOP
#ifndef LANE
                 :: else -> st = st & ~ARMED; act = D_STOP
#else
                 :: else -> act = D_DISARM     /* clears ARMED, then looks at the lane */
#endif
                 fi;
#endif
#ifndef WAKER
                 act = D_STOP
#endif
            :: else ->
#ifdef LANE
                 /* pop_locked (S, TRUE): the lane first; found nothing: open it again */
                 if
                 :: len(inbox) == 0 ->
                      lane_flush();
                      if
                      :: len(inbox) == 0 && lane_shut -> lane_update()
                      :: else -> skip
                      fi
                 :: else -> skip
                 fi;
#endif
                 if
                 :: len(inbox) == 0 ->
                      REACH_IF(12, act == D_FIRST)   /* an empty dispatch */
#ifndef LANE
#ifdef WAKER
                      st = st & ~ARMED;              /* found empty: only now unarmed */
#endif
                      act = D_STOP
#else
                      act = D_DISARM                 /* clears ARMED, then looks at the lane */
#endif
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
                           /* mp_pipe_side_pop_for_dispatch_locked (): wakes put off */
                           take(m) FLOW_POP_ADMIT(m, 20, 1);
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
#ifdef FLOW
  /* On every way out, under the lock: the waiters this dispatch put off are told
   * (mp_pipe_side_wake_deferred_locked (); 43: after the budget path) */
  if
  :: act == D_STOP ->
       REACH_IF(43, budget == 0 && !closing && len(to_wake) > 0)
#ifndef BUG_NO_END_WAKE
       end_dispatch(0)
#else
       end_dispatch(budget == 0 && !closing)       /* BUG: not after the budget path */
#endif
  :: else -> skip
  fi;
#endif
  m = 0; res = 0;                                    /* dead temporaries */
#ifdef LANE
  if
  :: act == D_DISARM -> skip                         /* the lock is kept for the next step */
  :: else -> s_unlock()
  fi
#else
  s_unlock()
#endif
}

/* ---------------------------------------------------------------------------------------- */

/* mp_message_port_post_message () on P, from one thread */
proctype sender(byte s)
{
  byte i = 0;
  byte id;
  bit ok;
#ifdef LANE
  bit pushed;
  bit first;
#endif

  do
  :: i < NMSG ->
       id = s * NMSG + i;
       if
       :: (pst & CLOSED) != 0 ->                   /* mp_pipe_side_test (self->side, CLOSED) */
            fate[id] = F_REFUSED                   /* MP_ERROR_INVALID_STATE */
       :: else ->
#ifdef LANE
            /* send_plain (): mp_lane_push (), one compare-and-swap */
            atomic {
              if
              :: !lane_shut ->
                   REACH_POINT(51)
                   first = (len(lane) == 0);
                   lane!id;
                   fate[id] = F_QUEUED;
                   pushed = 1
              :: else -> skip
              fi
            };
            if
            :: pushed && first ->
                 /* the first of a burst: unless a dispatch is draining, wake S under its lock */
                 if
                 :: atomic { (st & ARMED) == 0 -> first = 0 };
                    CS {
                      lock(s_mutex);
                      wake_locked();
                      s_unlock()
                    }
                 :: atomic { (st & ARMED) != 0 -> first = 0 }
                 fi
            :: pushed && !first -> skip
            :: !pushed ->
#endif
            /* mp_pipe_side_send (P, message) */
            CS {
              lock(s_mutex);
#ifdef LANE
              lane_flush();                        /* mp_pipe_side_post_locked (): lane first */
#endif
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
              s_unlock()
            }
#ifdef LANE
            fi;
            atomic { pushed = 0; first = 0 }
#endif
       fi;
       i++
  :: else -> break
  od
}

#ifdef FLOW
/* mp_message_port_post_message () on P: post i. */
inline sync_post(i, r)
{
  if
  :: (pst & CLOSED) != 0 -> fate[i] = F_REFUSED          /* post_check (): own side closed */
  :: else ->
       CS {
         lock(s_mutex);
         post_locked(i, 0, r);                             /* mp_pipe_side_send () */
         s_unlock()
       }
  fi;
  r = 0
}

/* mp_message_port_post_message_async () on P without a transfer list: post i. */
inline async_post(i, r, c)
{
  if
  :: i == CANCEL_ID && cancelled ->                   /* g_cancellable_set_error_if_cancelled */
       REACH_POINT(27)
       fate[i] = F_CANCELLED;
       complete(i, R_CANCELLED)
  :: else ->
       if
       :: (pst & CLOSED) != 0 ->                       /* post_check (): own side closed */
            fate[i] = F_REFUSED;
            complete(i, R_INVALID)
       :: else ->
            /* Room (the common case): queued at once, with no waiter made. While posts
             * wait (MP_SIDE_POSTS_WAIT, read unlocked: it is set exactly while the posting
             * queue is not empty), the waiter is made first. */
            if
            :: atomic { len(posting) > 0 -> r = S_WAITING }
            :: atomic { len(posting) == 0 -> skip };
               CS {
                 lock(s_mutex);
                 if
                 :: len(posting) == 0 && HAS_ROOM -> post_locked(i, 0, r)   /* has_room */
                 :: else -> r = S_WAITING
                 fi;
                 s_unlock()
               }
            fi;
            if
            :: r == S_QUEUED -> complete(i, R_OK)
            :: r == S_DROPPED -> complete(i, R_CLOSED)           /* peer_closed_error () */
            :: r == S_REFUSED -> complete(i, R_INVALID)
            :: r == S_WAITING ->
                 /* port_post_new (): the waiter's source on our context (unready), then the
                  * post again, now with the waiter: room may have come meanwhile. */
                 CS {
                   lock(s_mutex);
                   wsrc[i] = 1;
#ifndef BUG_NO_RECHECK
                   post_locked(i, 1, r);
#else
                   /* BUG: the waiter is queued on the strength of the first look */
                   if
                   :: (st & (CLOSED | PEER_CLOSED)) == 0 ->
                        posting!i; fate[i] = F_WAITING; wq[i] = 1; post_waiters!i; r = S_WAITING
                   :: else -> post_locked(i, 1, r)
                   fi;
#endif
                   s_unlock()
                 };
                 if
                 :: r == S_WAITING ->
                      REACH_POINT(19)
                      /* port_post_watch (): g_cancellable_connect () runs the handler at once
                       * if the cancellable is cancelled already; then the explicit check. */
                      if
                      :: i == CANCEL_ID ->
                           atomic { connected = 1; c = cancelled };
                           if
                           :: c -> cancel_handler(i)
                           :: else -> skip
                           fi;
                           if
                           :: cancelled -> cancel_handler(i)
                           :: else -> skip
                           fi;
                           c = 0
                      :: else -> skip
                      fi
                 :: else ->
                      /* Not queued as a waiter: the source delivers the result at once. */
                      REACH_IF(28, r == S_QUEUED)
#ifndef BUG_NO_DIRECT_WAKE
                      CS {
                        lock(s_mutex);
                        werr[i] = (r == S_REFUSED -> R_INVALID :
                                   (r == S_DROPPED -> R_CLOSED : R_OK));
                        wake_post(i);
                        s_unlock()
                      }
#else
                      skip                              /* BUG: nobody wakes the source */
#endif
                 fi
            fi
       fi
  fi;
  r = 0
}

/* The poster's context dispatches the source of post i until the post completed
 * (port_post_dispatch ()), without S's lock: it was woken once, after its waiter left the
 * queue with its result, and nothing writes queued or the error after that (see the header:
 * one step). Completed, it returns G_SOURCE_REMOVE and the source is freed (its
 * destroy-notify, the task gone, takes no lock). Blocks, as a valid end state, while
 * nothing wakes it. */
inline await_post(i, done)
{
  do
  :: !wsrc[i] || result[i] != R_NONE -> break
  :: atomic {
       pending[i] ->
       pending[i] = 0;                        /* mp_wakeable_source_set_pending (FALSE) */
       if
       :: wq[i] -> done = 0                   /* still waiting: G_SOURCE_CONTINUE */
       :: else ->
            /* resolved, not merely admitted with its wake put off */
            assert(!wd[i] && werr[i] != R_NONE);
            REACH_IF(31, werr[i] == R_OK) done = 1; complete(i, werr[i]);
            wgone[i] = 1
       fi;
       done = 0
     }
  od
}

proctype poster0()
{
  byte r;
  bit c;
  bit done;

  async_post(0, r, c);
#ifdef FLOW_ALL_ASYNC
  async_post(1, r, c);
#else
  sync_post(1, r);
#endif
end_wait0:
  await_post(0, done);
#ifdef FLOW_ALL_ASYNC
end_wait1:
  await_post(1, done)
#endif
}

proctype poster1()
{
  byte r;
  bit c;
  bit done;

  async_post(2, r, c);
end_wait2:
  await_post(2, done);
  async_post(3, r, c);
#ifdef FLOW_FORGET
  if
  :: skip
  :: /* The poster's context is finalized instead: port_post_destroyed (), the task still
      * there, takes the lock: a waiting post stays in the queue as a sync post's, one let
      * in leaves the wakes put off, with nobody to tell (forget_waiter_locked ()). */
     CS {
       lock(s_mutex);
       if
       :: wq[3] -> REACH_POINT(32) post_waiters??eval(3); wq[3] = 0
       :: wd[3] -> REACH_POINT(44) to_wake??eval(3); wd[3] = 0
       :: else -> skip
       fi;
       wgone[3] = wsrc[3];                   /* the source is freed */
       wsrc[3] = 0;
       pending[3] = 0;
       forgot = 1;
       s_unlock()
     }
  fi;
#endif
end_wait3:
  await_post(3, done)
}

/* g_cancellable_cancel () of post 0's cancellable, at any time, or never: it runs the
 * handler connected by then. */
proctype canceller()
{
  bit handler;

  if
  :: atomic { cancelled = 1; handler = connected };
     if
     :: handler -> cancel_handler(CANCEL_ID)
     :: else -> skip
     fi
  :: skip
  fi
}

/* mp_message_port_set_high_water_mark () on S's owner, from any thread: raised, or removed;
 * either admits what waits as far as room allows. */
proctype raiser()
{
  if
  :: CS { lock(s_mutex); mark = MARK + 1; admit_public(40); s_unlock() }
  :: CS { lock(s_mutex); mark = 0; REACH_IF(29, len(posting) > 0) admit_public(40); s_unlock() }
  :: skip
  fi
}
#endif

#ifdef FLOW_HANDLER_RECEIVES
/* mp_message_port_receive_timeout (self, -1, NULL, ...) from the "message" handler: its
 * documentation allows it on the port's own thread (only not on the peer's context's). One
 * locked step (receive_now_locked ()): S closed, it fails; else mp_pipe_side_pop_locked ()
 * tells the wakes put off (47) and pops (46: and admits), or, the inbox empty, the waiter
 * is queued (mp_pipe_side_enqueue_waiter_locked (), which tells them too; 48). Then
 * mp_receive_waiter_wait_locked (): g_cond_wait () until a post is handed over or a close
 * fails it (rwait cleared); taking the lock back changes nothing. Waiting here for good is
 * a valid end state only if nothing else is left to happen (the monitor). */
inline handler_receive(m, res)
{
  CS {
    lock(s_mutex);
    if
    :: (st & CLOSED) != 0 -> skip                        /* fails: MP_ERROR_CLOSED */
    :: else ->
         RECEIVE_TELLS(47)
         if
         :: len(inbox) > 0 ->
              inbox?m;
              if
              :: m == MARKER -> take_marker(); close_locked_S(res, m)   /* fails */
              :: else -> take(m) FLOW_POP_ADMIT(m, 46, RECEIVE_DEFERS)
              fi
         :: else ->
              ENQUEUE_TELLS
              REACH_POINT(48)
              rwait = 1
         fi
    fi;
    m = 0; res = 0;                                      /* dead temporaries */
    s_unlock()
  };
end_handler_wait:
  rwait == 0
}
#endif

proctype starter()
{
#ifndef FLOW_MAY_NOT_START
  start_S(1)
#else
  /* or never: the receiving thread consumes with receive () only */
  if
  :: start_S(1)
  :: skip
  fi
#endif
}

proctype receiver()
{
  byte m;
  bit res;

  /* The thread holds both objects: the original, then the one made by the transfer
   * (receive() on a detached object returns NULL). */
  receive_S(1, res, m);
#ifndef FLOW
  receive_S(2, res, m)
#else
  skip                                /* (no transfer: there is no object 2) */
#endif
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
#ifndef FLOW
  :: close_S(2, res, m)
#endif
  :: close_P(res, m)
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
       s_unlock()
     };
     set_ready_time(c, 0);                       /* ... the ready time reset after */
     act = D_AGAIN;
#endif
     do
     :: act == D_STOP -> break
#ifdef LANE
     :: act == D_DISARM ->
          /* mp_pipe_side_disarm_locked (), the lock still held: ARMED cleared (which posters
           * read without the lock), then, in a step of its own, one more look at the lane */
          st = st & ~ARMED;
          atomic {
            if
#ifndef BUG_LANE_NO_RECHECK
            :: len(lane) > 0 ->
                 REACH_POINT(52)
                 st = st | ARMED;
                 if
                 :: budget == 0 -> set_ready_time(c, 1); act = D_STOP; s_unlock()   /* yield */
                 :: else -> dispatch_turn(c, budget, m, res, act, closing, retired)  /* goes on */
                 fi
#endif
            :: else -> act = D_STOP; s_unlock()
            fi
          }
#endif
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
#ifdef FLOW_HANDLER_RECEIVES
          :: atomic { !handler_acted -> handler_acted = 1 }; handler_receive(m, res)
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
#ifdef FLOW
  byte waiting = 0;
  /* Poster 1 makes post 3 once post 2 completed: never, if post 2 still waits (at an
   * unattached side, which the assertions below check). */
#define POST3_NEVER_MADE (fate[3] == F_NONE && fate[2] == F_WAITING)
#endif

  timeout ->
  d_step {
    /* No lost wake-up: an attached side has nothing pending (unless its dispatch is stuck
     * in a handler that waits for good: FLOW_HANDLER_RECEIVES, checked below). */
    assert((st & ATTACHED) == 0 || HANDLER_WAITS ||
           (len(inbox) == 0 && (st & (ARMED | CLOSE_PENDING)) == 0));
#ifdef LANE
    /* Nothing left on the lane, which is open only while S is attached and open (a
     * receive () may have shut it since the last dispatch). */
    assert(len(lane) == 0);
    assert(lane_shut || (st & (ATTACHED | CLOSED | CLOSE_PENDING | PEER_CLOSED)) == ATTACHED);
#endif
    assert((st & (CLOSED | ATTACHED)) != (CLOSED | ATTACHED));

    /* "close" exactly once when owed. */
    assert(close_emitted == close_owed);

    /* Every source that is no longer the side's retired itself (no zombie source keeping
     * a port object alive), and an object holds its source exactly while it is attached. */
    assert(!alive[1] || s_source == 1);
    assert(!alive[2] || s_source == 2);
    assert(obj_source[1] == alive[1] && obj_source[2] == alive[2]);

#ifdef FLOW
    /* No lost wake-up of a waiter: none is left put off (it would never be told); no
     * dispatch runs, or only the one whose handler waits for good in receive_timeout (),
     * with nothing left that could reach it (S open, the inbox empty): no deadlock, since
     * everything below holds too (every post made, told and completed); nothing waits at
     * an attached side (the receiver keeps consuming: it admits what waits), and every
     * async post that no longer waits has completed: its source was woken and dispatched. */
    assert(len(to_wake) == 0);
    assert(in_dispatch == rwait);
    assert(!rwait || (len(inbox) == 0 && (st & CLOSED) == 0));
    assert((st & ATTACHED) == 0 || len(posting) == 0);
    assert(fate[0] == F_WAITING || result[0] != R_NONE);
    assert(!IS_ASYNC(1) || fate[1] == F_WAITING || result[1] != R_NONE);
    assert(fate[2] == F_WAITING || result[2] != R_NONE);
    assert(fate[3] == F_WAITING || result[3] != R_NONE || forgot || POST3_NEVER_MADE);
#endif

    /* Every message accounted for. */
    i = 0;
    do
    :: i < NMSGS ->
#ifndef FLOW
         assert(fate[i] != F_NONE);
#else
         assert(fate[i] != F_NONE || (i == 3 && POST3_NEVER_MADE));
         if
         :: fate[i] == F_WAITING ->
              assert((st & (CLOSED | ATTACHED)) == 0);
              waiting++
         :: else -> skip
         fi;
         assert(!pending[i]);                    /* every wake-up was dispatched */
         assert(fate[i] != F_FAILED || (st & CLOSED) != 0 || (pst & CLOSED) != 0);
         assert(fate[i] != F_CANCELLED || i == CANCEL_ID);
#endif
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
#ifdef FLOW
    assert(len(posting) == waiting);
#endif
  }
}

init
{
  atomic {
#ifndef FLOW
    run sender(0);
    run sender(1);
#else
    run poster0();
    run poster1();
#ifndef NO_CANCELLER
    run canceller();
#endif
#ifndef NO_RAISER
    run raiser();
#endif
#endif
    run starter();
#ifndef FLOW
    run starter2();
#endif
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
#ifndef FLOW
    run loop(2)
#else
    skip
#endif
  }
}
