/* mp-waker-private.h: one lock-free wake-up per GMainContext
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* An eventfd (a pipe where there is none: MP_WAKER_EVENTFD in config.h) polled by one
 * never-dispatched source on a context, shared by every mpport source attached there.
 * Sources that use it are ready through their own flags (checked in their prepare/check);
 * mp_waker_wake() only makes the context's poll return. Unlike g_source_set_ready_time() it
 * takes no GLib lock (that one holds the context's lock across its eventfd write, so the
 * woken thread often sleeps again on that lock), and unlike g_main_context_wakeup() it is
 * valid at any time, even while the context is being finalized or after: the fds live as
 * long as a reference to the waker. */
typedef struct _MpWaker MpWaker;

/* The waker of @context, made and attached on first use. Call it while @context is alive
 * (from the thread that owns it). The waker detaches when the context is finalized. */
MpWaker *mp_waker_ref_for_context (GMainContext *context);
MpWaker *mp_waker_ref             (MpWaker *self);
void     mp_waker_unref           (MpWaker *self);

/* Makes the context's poll return soon. Any thread; no lock. */
void     mp_waker_wake            (MpWaker *self);

/* The head of every mpport source woken through a waker (a port's, a broadcast inbox's).
 * It is ready while its pending flag is set. mp_wakeable_source_wake() sets the flag and, only
 * if it was clear, writes the eventfd; the waker's check reads the eventfd before any such
 * source's check reads its flag (it runs first), so a flag set after that read comes with a
 * write that makes the next poll return. The dispatch clears the flag as it begins, before
 * it looks at its queue; when it stops early with work left it yields
 * (mp_wakeable_source_yield()) and the check that ends the yield sets the flag again. */
typedef struct
{
  GSource parent;
  MpWaker *waker;   /* strong, immutable: its context's */
  int pending;      /* atomic: see above */
  /* Touched only by the thread dispatching the context (yield, prepare, check), never by a
   * waker: set by mp_wakeable_source_yield(), cleared by the next check. While it is set the
   * source is not ready whatever pending says. */
  int yielding;
} MpWakeableSource;

/* A new source of @struct_size bytes (at least sizeof (MpWakeableSource)) woken through
 * @context's waker. @funcs must use mp_wakeable_source_prepare() and _check(), and its
 * finalize must call mp_wakeable_source_finalize(). Call it on the thread that owns
 * @context, while @context is alive. */
GSource *mp_wakeable_source_new   (GSourceFuncs *funcs,
                                   gsize         struct_size,
                                   GMainContext *context);
gboolean mp_wakeable_source_prepare  (GSource      *source,
                                     gint         *timeout);
gboolean mp_wakeable_source_check    (GSource      *source);
void     mp_wakeable_source_finalize (GSource      *source);
/* Any thread; no GLib lock. */
void     mp_wakeable_source_wake     (GSource      *source);
/* The same, for a source whose dispatch takes no lock that the waker holds, and may
 * therefore free the source as soon as it sees the flag: the waker is kept alive across
 * the write. The caller makes sure the source is alive when it calls. */
void     mp_wakeable_source_wake_last (GSource     *source);
/* The first half of mp_wakeable_source_wake(), for a caller that holds a lock the woken
 * thread will want at once: sets the flag and, if it was clear, returns a reference on the
 * waker (else NULL) for the caller to pass to mp_waker_wake_end() once it dropped that
 * lock, so that the woken thread does not find it still held and sleep on it. The source
 * may be gone by then; the waker is not. */
MpWaker *mp_wakeable_source_wake_begin (GSource   *source);
/* Writes the wake-up and drops the reference. */
void     mp_waker_wake_end           (MpWaker      *waker);

/* Called by the owning thread's dispatch when it stopped early (its budget ran out) with
 * work left: the source stays unready for one main-loop iteration, so that lower-priority
 * sources of its context get a turn, then is ready again without any wake-up. */
void     mp_wakeable_source_yield    (GSource      *source);

/* Called by the owning thread's dispatch only. */
static inline void
mp_wakeable_source_set_pending (GSource  *source,
                             gboolean  pending)
{
  g_atomic_int_set (&((MpWakeableSource *) source)->pending, pending ? 1 : 0);
}

G_END_DECLS
