/* tests/model/waker.pml: the coalescing wake-up of MpWaker (mpport/mp-waker.c) and its
 * wakeable sources, checked by spin.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Run by tests/model/run-spin (meson test suite "model"); by hand:
 *   spin -a waker.pml && gcc -O2 -DSAFETY -o pan pan.c && ./pan
 *   spin -DBUG_CLEAR_BEFORE_READ -a waker.pml && ...      (must report errors)
 *
 * What is modelled
 * ----------------
 * One GMainContext with its MpWaker (an eventfd and the atomic `signalled` flag) and two
 * wakeable sources 0 and 1 of the same priority, each with its atomic `pending` flag and a
 * queue of work guarded by its own lock.
 *
 *   waker(i)   NW threads, each NWAKE times: append one piece of work to the queue of
 *              source k (either; one locked step), then mp_wakeable_source_wake(): the
 *              compare-and-exchange of pending[k], then (if it won) mp_waker_wake(): the
 *              compare-and-exchange of signalled, then (if it won) eventfd_write (1).
 *              Each is its own step: separate atomics and a syscall.
 *   context    the thread iterating the context (g_main_context_iteration), forever:
 *                prepare   each source reads its pending flag (mp_wakeable_source_prepare)
 *                          and is ready if it is set; separate steps.
 *                poll      returns at once if a source is ready (timeout 0); else sleeps
 *                          until the eventfd counter is > 0. It may also return early, with
 *                          the eventfd unreadable (a timeout, another fd, or GLib's own
 *                          wake-up), at most NSPUR times. revents is what the poll saw.
 *                check     the waker source first (G_MININT: its check always runs, before
 *                          any other): if revents, mp_waker_drain(): the read that takes the
 *                          counter to 0, then signalled = 0 (two steps). Then each source not
 *                          already ready reads its pending flag (mp_wakeable_source_check).
 *                dispatch  each ready source: set_pending (FALSE), then under its lock takes
 *                          all of its work (one step; it tolerates an empty queue).
 *              At most NBUSY iterations find a source of better priority ready: GLib then
 *              skips our sources' prepare and check and does not dispatch them, but the
 *              poll does not block and the waker source's check (better still) drains.
 *   monitor    runs once nothing else can move (spin's `timeout`) and checks the end state.
 *
 * A pipe instead of the eventfd (MP_WAKER_EVENTFD 0) is the same: the drain reads until
 * EAGAIN, and that last read is the instant every byte written so far is consumed.
 *
 * Properties checked
 * ------------------
 *  - No lost wake-up. Every run is finite (the wakers do a bounded number of steps, and the
 *    context loops without blocking only while a flag is set, the counter is > 0 or an
 *    early return is left), so every execution ends in a state where only the context is
 *    left, asleep in poll; spin's `timeout` is true exactly there. A wake-up was lost iff
 *    work is still queued there, or a pending flag is set (a woken source never
 *    dispatched): the context sleeps for good although "[] (queued -> <> taken)" requires
 *    a dispatch. So the end-state assertion is the liveness property on these runs, checked
 *    with a safety search (-DSAFETY), which also reports a thread stuck before its end.
 *  - Coalescing (the point of signalled): a wake writes only to an empty counter (at most
 *    one write per drain), and at the end the waker is clean (signalled 0, counter 0), so
 *    the next wake writes. Left out of the broken variants, so that what they report is
 *    the lost wake-up.
 *  The prepare is part of the protocol: in an iteration where a better source is ready
 *  (NBUSY), the drain eats the write while our checks do not run, and only the next
 *  prepare, which reads pending, keeps the context from sleeping. With the prepare's reads
 *  taken out the search finds that lost wake-up (without NBUSY it does not).
 *
 * Compile-time switches (spin -DNAME):
 *  NW=n, NWAKE=n, NSPUR=n, NBUSY=n  (defaults 2, 2, 1, 1; see above). 3 x 2 wakes is
 *                   63 M states (100 s, 2.7 GB): meson.build runs 2 x 2, 3 x 1 and 2 x 3.
 *  BUG_CLEAR_BEFORE_READ  the drain clears signalled before its read: a wake in between
 *                   writes, the read eats the write, signalled stays set: must fail.
 *  BUG_NO_CLEAR     the drain never clears signalled: no wake writes after the first.
 *  BUG_SKIP_WRITE   the winner of signalled does not write: must fail.
 *  BUG_PENDING_AFTER_TAKE  the dispatch takes its work before it clears pending: a wake in
 *                   between finds pending set and is forgotten: must fail.
 */

#ifndef NW
#define NW 2
#endif
#ifndef NWAKE
#define NWAKE 2
#endif
#ifndef NSPUR
#define NSPUR 1
#endif
#ifndef NBUSY
#define NBUSY 1
#endif

#if defined(BUG_CLEAR_BEFORE_READ) || defined(BUG_NO_CLEAR) || defined(BUG_SKIP_WRITE) || \
    defined(BUG_PENDING_AFTER_TAKE)
#define BUG
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

byte work[2];       /* the length of source k's queue; guarded by its lock */
bit  pending[2];    /* MpWakeableSource.pending (atomic) */
bit  signalled;     /* MpWaker.signalled (atomic) */
byte efd;           /* the eventfd counter */

/* ---- ghosts ---- */
byte done;          /* waker threads finished */
#ifdef REACH
bit  draining;      /* the drain is between its read and its clear of signalled */
#define DRAINING(v) draining = v
#else
#define DRAINING(v) skip
#endif

active [NW] proctype waker()
{
  byte n = 0;
  byte k;
  bit won;

  do
  :: n < NWAKE ->
       /* The caller queues its work, under the queue's lock, before it wakes. */
       atomic {
         if
         :: k = 0
         :: k = 1
         fi;
         work[k]++
       };
       /* mp_wakeable_source_wake */
       atomic {
         if
         :: pending[k] == 0 -> pending[k] = 1; won = 1
         :: else -> won = 0; REACH_POINT(1)     /* the source is woken already */
         fi
       };
       if
       :: won ->
            /* mp_waker_wake */
            atomic {
              if
              :: signalled == 0 -> signalled = 1; won = 1
              :: else ->
                   won = 0;
                   REACH_POINT(2)               /* another wake's write covers this one */
                   REACH_IF(3, draining)        /* ... found set between read and clear */
              fi
            };
            if
            :: won ->
#ifndef BUG_SKIP_WRITE
#ifndef BUG
                 /* At most one write per drain: the counter is empty. */
                 assert(efd == 0);
#endif
                 efd++                          /* eventfd_write (1) */
#else
                 skip
#endif
            :: else -> skip
            fi
       :: else -> skip
       fi;
       won = 0;
       n++
  :: else -> break
  od;
  done++
}

active proctype context()
{
  bit r0, r1;       /* our sources found ready in this iteration */
  bit revents;      /* the poll saw the eventfd readable */
  bit busy;         /* a source of better priority is ready in this iteration */
  byte nspur = 0;
  byte nbusy = 0;

  do
  :: /* prepare */
     if
     :: nbusy < NBUSY -> nbusy++; busy = 1
     :: true
     fi;
     if
     :: !busy ->
          r0 = pending[0];
          REACH_IF(4, r0)                       /* ready at prepare: no poll sleep */
          r1 = pending[1]
     :: else -> skip
     fi;

     /* poll: sleeps (for good, if that is the end) until there is something to do. */
end_poll:
     atomic {
       if
       :: busy || r0 || r1 || efd > 0
       :: nspur < NSPUR -> nspur++               /* returned early: timeout, other fd */
       fi;
       revents = (efd > 0)
     };

     /* check: the waker source's first, mp_waker_drain () when readable */
     if
     :: revents ->
#ifdef BUG_CLEAR_BEFORE_READ
          signalled = 0;
          efd = 0;
#else
          atomic {
            REACH_IF(8, busy && (pending[0] || pending[1]))
            efd = 0;                            /* eventfd_read: the counter to 0 */
            DRAINING(1)
          };
#ifndef BUG_NO_CLEAR
          atomic {
            signalled = 0;                      /* g_atomic_int_set (&signalled, 0) */
            DRAINING(0)
          }
#endif
#endif
     :: else -> skip
     fi;
     /* then each source's own check, unless GLib found a better one ready */
     if
     :: !busy ->
          if
          :: !r0 ->
               r0 = pending[0];
               REACH_IF(5, r0 && revents)       /* woken through the eventfd */
               REACH_IF(6, r0 && !revents)      /* found without any drain */
          :: else -> skip
          fi;
          if
          :: !r1 -> r1 = pending[1]
          :: else -> skip
          fi
     :: else -> skip
     fi;

     /* dispatch */
     if
     :: r0 ->
#ifndef BUG_PENDING_AFTER_TAKE
          pending[0] = 0;                       /* mp_wakeable_source_set_pending (FALSE) */
#endif
          atomic {
            REACH_IF(7, work[0] == 0)           /* woken for work an earlier dispatch took */
            work[0] = 0
          };
#ifdef BUG_PENDING_AFTER_TAKE
          pending[0] = 0;
#endif
          r0 = 0
     :: else -> skip
     fi;
     if
     :: r1 ->
#ifndef BUG_PENDING_AFTER_TAKE
          pending[1] = 0;
#endif
          atomic {
            work[1] = 0
          };
#ifdef BUG_PENDING_AFTER_TAKE
          pending[1] = 0;
#endif
          r1 = 0
     :: else -> skip
     fi;
     revents = 0;
     busy = 0
  od
}

/* Runs only when no other statement can run: the final state of every execution. */
active proctype monitor()
{
  timeout ->
  d_step {
    assert(done == NW);
    /* No lost wake-up: the context sleeps for good with every piece of work taken and
     * every woken source dispatched. */
    assert(work[0] == 0 && work[1] == 0 && !pending[0] && !pending[1]);
#ifndef BUG
    /* The waker is left clean: the next wake writes, and the poll blocks until it does. */
    assert(signalled == 0 && efd == 0);
#endif
  }
}
