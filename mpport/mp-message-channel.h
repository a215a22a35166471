/* mp-message-channel.h: a pair of entangled message ports
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#if !defined(MPPORT_INSIDE) && !defined(MPPORT_COMPILATION)
# error "Only <mpport/mpport.h> can be included directly."
#endif

#include <glib-object.h>

#include "mp-version-macros.h"
#include "mp-message-port.h"

G_BEGIN_DECLS

#define MP_TYPE_MESSAGE_CHANNEL (mp_message_channel_get_type ())

MP_AVAILABLE_IN_ALL
G_DECLARE_FINAL_TYPE (MpMessageChannel, mp_message_channel, MP, MESSAGE_CHANNEL, GObject)

MP_AVAILABLE_IN_ALL
MpMessageChannel *mp_message_channel_new       (void) G_GNUC_WARN_UNUSED_RESULT;
MP_AVAILABLE_IN_ALL
MpMessagePort    *mp_message_channel_get_port1 (MpMessageChannel *self);
MP_AVAILABLE_IN_ALL
MpMessagePort    *mp_message_channel_get_port2 (MpMessageChannel *self);

G_END_DECLS
