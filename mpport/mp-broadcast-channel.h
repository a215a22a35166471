/* mp-broadcast-channel.h: same-name fan-out between threads
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#if !defined(MPPORT_INSIDE) && !defined(MPPORT_COMPILATION)
# error "Only <mpport/mpport.h> can be included directly."
#endif

#include <gio/gio.h>

#include "mp-version-macros.h"
#include "mp-message.h"

G_BEGIN_DECLS

#define MP_TYPE_BROADCAST_CHANNEL (mp_broadcast_channel_get_type ())

MP_AVAILABLE_IN_ALL
G_DECLARE_FINAL_TYPE (MpBroadcastChannel, mp_broadcast_channel, MP, BROADCAST_CHANNEL, GObject)

MP_AVAILABLE_IN_ALL
MpBroadcastChannel *mp_broadcast_channel_new          (const char         *name) G_GNUC_WARN_UNUSED_RESULT;
MP_AVAILABLE_IN_ALL
MpBroadcastChannel *mp_broadcast_channel_new_for_bus  (const char          *name,
                                                       GDBusConnection     *connection,
                                                       GCancellable        *cancellable,
                                                       GError             **error) G_GNUC_WARN_UNUSED_RESULT;
MP_AVAILABLE_IN_ALL
void                mp_broadcast_channel_new_for_bus_async  (const char          *name,
                                                             GDBusConnection     *connection,
                                                             GCancellable        *cancellable,
                                                             GAsyncReadyCallback  callback,
                                                             gpointer             user_data);
MP_AVAILABLE_IN_ALL
MpBroadcastChannel *mp_broadcast_channel_new_for_bus_finish (GAsyncResult        *result,
                                                             GError             **error) G_GNUC_WARN_UNUSED_RESULT;
MP_AVAILABLE_IN_ALL
const char         *mp_broadcast_channel_get_name     (MpBroadcastChannel *self);
MP_AVAILABLE_IN_ALL
GDBusConnection    *mp_broadcast_channel_get_connection (MpBroadcastChannel *self);
MP_AVAILABLE_IN_ALL
gboolean            mp_broadcast_channel_post_message (MpBroadcastChannel *self,
                                                       GVariant           *message,
                                                       GError            **error);
MP_AVAILABLE_IN_ALL
void                mp_broadcast_channel_close        (MpBroadcastChannel *self);
MP_AVAILABLE_IN_ALL
gboolean            mp_broadcast_channel_is_closed    (MpBroadcastChannel *self);
MP_AVAILABLE_IN_ALL
GMainContext       *mp_broadcast_channel_get_context  (MpBroadcastChannel *self);
MP_AVAILABLE_IN_ALL
int                 mp_broadcast_channel_get_priority (MpBroadcastChannel *self);
MP_AVAILABLE_IN_ALL
void                mp_broadcast_channel_set_priority (MpBroadcastChannel *self,
                                                       int                 priority);

G_END_DECLS
