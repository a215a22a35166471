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

G_END_DECLS
