/* baselines.h: a Link, one direction from producer threads to one receiving context, for
 * mpport (a started port) and for each in-thread baseline: (a) invoke, (b) queue, (c) ring
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include "mp-bench.h"

G_BEGIN_DECLS

typedef struct _Link Link;

/* IMPL_MPPORT, IMPL_INVOKE, IMPL_QUEUE or IMPL_RING. */
Link    *link_new   (Impl         impl);
/* On the receiving thread, with its Loop pushed: @deliver gets each message's GVariant. */
void     link_start (Link        *link,
                     DeliverFunc  deliver,
                     gpointer     deliver_data);
/* From a producer thread (one producer per link for (c)); takes the reference of @data,
 * floating or not. */
void     link_send  (Link        *link,
                     GVariant    *data);
/* (b), (c): the wake-ups the producer signalled; 0 for the others. */
guint64  link_wakes (Link        *link);
/* On the receiving thread, once every producer is done. */
void     link_free  (Link        *link);

G_END_DECLS
