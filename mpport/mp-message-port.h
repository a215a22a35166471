/* mp-message-port.h: one end of a message channel
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

#define MP_TYPE_MESSAGE_PORT (mp_message_port_get_type ())

MP_AVAILABLE_IN_ALL
G_DECLARE_FINAL_TYPE (MpMessagePort, mp_message_port, MP, MESSAGE_PORT, GObject)

MP_AVAILABLE_IN_ALL
gboolean      mp_message_port_post_message (MpMessagePort        *self,
                                            GVariant             *message,
                                            MpMessagePort *const *transfer,
                                            guint                 n_transfer,
                                            GError              **error);
MP_AVAILABLE_IN_ALL
gboolean      mp_message_port_post         (MpMessagePort        *self,
                                            GVariant             *message,
                                            GError              **error);
MP_AVAILABLE_IN_ALL
void          mp_message_port_start        (MpMessagePort        *self);
MP_AVAILABLE_IN_ALL
void          mp_message_port_close        (MpMessagePort        *self);
MP_AVAILABLE_IN_ALL
MpMessage    *mp_message_port_receive      (MpMessagePort        *self) G_GNUC_WARN_UNUSED_RESULT;
MP_AVAILABLE_IN_ALL
void          mp_message_port_receive_async  (MpMessagePort        *self,
                                              GCancellable         *cancellable,
                                              GAsyncReadyCallback   callback,
                                              gpointer              user_data);
MP_AVAILABLE_IN_ALL
MpMessage    *mp_message_port_receive_finish (MpMessagePort        *self,
                                              GAsyncResult         *result,
                                              GError              **error) G_GNUC_WARN_UNUSED_RESULT;
MP_AVAILABLE_IN_ALL
MpMessage    *mp_message_port_receive_timeout (MpMessagePort     *self,
                                               gint64             timeout_us,
                                               GCancellable      *cancellable,
                                               GError           **error) G_GNUC_WARN_UNUSED_RESULT;
MP_AVAILABLE_IN_ALL
GMainContext *mp_message_port_get_context  (MpMessagePort        *self);
MP_AVAILABLE_IN_ALL
GMainContext *mp_message_port_dup_context  (MpMessagePort        *self) G_GNUC_WARN_UNUSED_RESULT;
MP_AVAILABLE_IN_ALL
gboolean      mp_message_port_is_closed    (MpMessagePort        *self);
MP_AVAILABLE_IN_ALL
gboolean      mp_message_port_is_peer_closed (MpMessagePort      *self);
MP_AVAILABLE_IN_ALL
int           mp_message_port_get_priority (MpMessagePort        *self);
MP_AVAILABLE_IN_ALL
void          mp_message_port_set_priority (MpMessagePort        *self,
                                            int                   priority);

G_END_DECLS
