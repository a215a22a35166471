/* mp-message-port-private.h: MpMessagePort internals
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include "mp-message-port.h"
#include "mp-pipe-private.h"

G_BEGIN_DECLS

/* How many messages one dispatch of a port delivers at most before it yields to the main loop
 * (and re-arms itself), so that a sender feeding itself cannot starve other sources. */
#define MP_MESSAGE_PORT_DISPATCH_BUDGET 1024

MpMessagePort *mp_message_port_new_for_side (MpPipeSide *side,
                                              gboolean    owner);
MpPipeSide    *mp_message_port_get_side     (MpMessagePort *self);

/* Receives what the port would emit as "message", in its place: the message is borrowed,
 * as a handler's is. Kept with its side's rarely used parts (MpPipeWaiters). */
typedef MpPipeDeliverFunc MpMessagePortSink;

void           mp_message_port_set_sink     (MpMessagePort     *self,
                                             MpMessagePortSink  sink,
                                             gpointer           data);

G_END_DECLS
