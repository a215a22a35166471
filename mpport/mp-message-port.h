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

/**
 * MpStreamFlags:
 * @MP_STREAM_FLAGS_NONE: no flag: this end authenticates as the client of the
 *   D-Bus peer-to-peer connection (the other end must be the server).
 * @MP_STREAM_FLAGS_SERVER: this end authenticates as the server (the other end
 *   must not set this flag). [ctor@Mp.MessagePort.new_for_launcher] is always the
 *   server, [ctor@Mp.MessagePort.new_for_fd_sync] always the client.
 * @MP_STREAM_FLAGS_ALLOW_ANONYMOUS: with %MP_STREAM_FLAGS_SERVER, accept a client
 *   that authenticates anonymously, as a client over TCP must (a Unix socket
 *   proves the peer's user instead, and without this flag the server only
 *   accepts a client running as its own user).
 *
 * How [ctor@Mp.MessagePort.new_for_stream_sync] sets up the D-Bus
 * peer-to-peer connection it runs over a stream.
 *
 * Since: 1.0
 */
typedef enum /*< flags >*/ {
  MP_STREAM_FLAGS_NONE            = 0,
  MP_STREAM_FLAGS_SERVER          = 1 << 0,
  MP_STREAM_FLAGS_ALLOW_ANONYMOUS = 1 << 1,
} MpStreamFlags;

MP_AVAILABLE_IN_ALL
G_DECLARE_FINAL_TYPE (MpMessagePort, mp_message_port, MP, MESSAGE_PORT, GObject)

MP_AVAILABLE_IN_ALL
MpMessagePort *mp_message_port_new_for_stream_sync   (GIOStream            *stream,
                                                       MpStreamFlags         flags,
                                                       GCancellable         *cancellable,
                                                       GError              **error);
MP_AVAILABLE_IN_ALL
void           mp_message_port_new_for_stream        (GIOStream            *stream,
                                                       MpStreamFlags         flags,
                                                       GCancellable         *cancellable,
                                                       GAsyncReadyCallback   callback,
                                                       gpointer              user_data);
MP_AVAILABLE_IN_ALL
MpMessagePort *mp_message_port_new_for_stream_finish (GAsyncResult         *result,
                                                       GError              **error);
MP_AVAILABLE_IN_ALL
MpMessagePort *mp_message_port_new_for_launcher      (GSubprocessLauncher  *launcher,
                                                       int                   child_fd,
                                                       GError              **error);
MP_AVAILABLE_IN_ALL
MpMessagePort *mp_message_port_new_for_fd_sync       (int                   fd,
                                                       GCancellable         *cancellable,
                                                       GError              **error);
MP_AVAILABLE_IN_ALL
void           mp_message_port_new_for_fd            (int                   fd,
                                                       GCancellable         *cancellable,
                                                       GAsyncReadyCallback   callback,
                                                       gpointer              user_data);
MP_AVAILABLE_IN_ALL
MpMessagePort *mp_message_port_new_for_fd_finish     (GAsyncResult         *result,
                                                       GError              **error);

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
void          mp_message_port_post_message_async  (MpMessagePort        *self,
                                                   GVariant             *message,
                                                   MpMessagePort *const *transfer,
                                                   guint                 n_transfer,
                                                   GCancellable         *cancellable,
                                                   GAsyncReadyCallback   callback,
                                                   gpointer              user_data);
MP_AVAILABLE_IN_ALL
gboolean      mp_message_port_post_message_finish (MpMessagePort        *self,
                                                   GAsyncResult         *result,
                                                   GError              **error);
MP_AVAILABLE_IN_ALL
guint         mp_message_port_get_high_water_mark (MpMessagePort        *self);
MP_AVAILABLE_IN_ALL
void          mp_message_port_set_high_water_mark (MpMessagePort        *self,
                                                   guint                 mark);
MP_AVAILABLE_IN_ALL
guint         mp_message_port_get_n_queued     (MpMessagePort        *self);
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
