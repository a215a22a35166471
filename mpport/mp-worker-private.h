/* mp-worker-private.h: mpport's own thread, for what must not depend on the application's
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* The context of mpport's worker thread ("mpport-worker"), started on first use and run for
 * the life of the process; it is that thread's thread-default context. It runs what must
 * happen whatever the application's threads do (they may run no main loop at all): GDBus
 * emits a connection's "closed" on the context it was made on, so mpport's own connections
 * are made there; a bus's fallback sends; a stream's relays and its sending. Nothing of the
 * application's ever runs there, and nothing there may block. Any thread. */
GMainContext *mp_worker_context (void);

G_END_DECLS
