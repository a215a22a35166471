/* mp-waker-private.h: one lock-free wake-up per GMainContext
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* An eventfd polled by one never-dispatched source on a context, shared by every mpport
 * source attached there. Sources that use it are ready through their own flags (checked in
 * their prepare/check); mp_waker_wake() only makes the context's poll return. Unlike
 * g_source_set_ready_time() it takes no GLib lock (that one holds the context's lock across
 * its eventfd write, so the woken thread often sleeps again on that lock), and unlike
 * g_main_context_wakeup() it is valid at any time, even while the context is being
 * finalized or after: the eventfd lives as long as a reference to the waker. */
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
 * it looks at its queue, and sets it again itself when it stops early with work left. */
typedef struct
{
  GSource parent;
  MpWaker *waker;   /* strong, immutable: its context's */
  int pending;      /* atomic: see above */
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

/* Called by the owning thread's dispatch only. */
static inline void
mp_wakeable_source_set_pending (GSource  *source,
                             gboolean  pending)
{
  g_atomic_int_set (&((MpWakeableSource *) source)->pending, pending ? 1 : 0);
}

G_END_DECLS
