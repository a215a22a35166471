/* mp-message-private.h: MpMessage internals, shared with the pipe
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include "mp-message.h"

G_BEGIN_DECLS

typedef enum {
  MP_MESSAGE_FLAG_NONE         = 0,
  /* The peer closed: the in-band marker it appends last to the survivor's inbox. */
  MP_MESSAGE_FLAG_CLOSE_MARKER = 1 << 0,
  /* A message from another process that could not be decoded: an in-band entry that takes
   * the message's place in the inbox, so that "message-error" (or a failed receive) comes in
   * order with the messages around it. It has an error, and never data or ports. */
  MP_MESSAGE_FLAG_ERROR        = 1 << 1,
} MpMessageFlags;

struct _MpMessage
{
  /* The queue node, so that a post costs one allocation. link.data == self. While the
   * message is queued, the link belongs to the inbox and is guarded by its side's lock;
   * a queued message has exactly one reference, the queue's. */
  GList link;

  gatomicrefcount ref_count;
  MpMessageFlags flags;   /* immutable */
  GVariant *data;         /* immutable, nullable */

  /* (element-type MpMessagePort): the transferred ports, owned. NULL until a transfer list
   * or get_ports() asks for it; installed once with a compare-and-swap. */
  GPtrArray *ports;

  union {
    /* The unique bus name of the connection that sent it, for a post that came over a
     * message bus; NULL for one made in this process. Owned, immutable once delivered. */
    char *sender;
    /* For an error entry (MP_MESSAGE_FLAG_ERROR) instead: why the message could not be
     * decoded, a G_IO_ERROR_INVALID_DATA. Owned, immutable, never NULL. An error entry is
     * never handed out as a message (its receivers get a copy of the error), so it needs no
     * sender. Sharing the slot keeps every message at 56 bytes, a 64-byte glibc chunk (one
     * more pointer would make every message an 80-byte chunk), for an entry that is rare. */
    GError *error;
  };
};

/* @data and @ports (element-type MpMessagePort) are taken. */
MpMessage *mp_message_new_take          (GVariant  *data,
                                         GPtrArray *ports);
MpMessage *mp_message_new_close_marker  (void);

/* Recycled nodes (the pipe keeps a few per side, see mp_pipe_side_keep_spare_locked()): a
 * post and its delivery then cost no allocation of the message itself, and no free() on
 * the receiving thread of a chunk the sending thread allocated.
 *
 * mp_message_unref_to_node() drops a reference; the last one releases what the message
 * holds (never under a lock: a GBytes free function or a port's finalization may run) and
 * returns the bare node, else NULL. A bare node is only reused by
 * mp_message_renew_take(), which makes it (or a new node, for NULL) a message of @data
 * (taken) with no ports, or freed with g_free(). Neither calls code of anyone else's, so
 * both may run under a lock. */
MpMessage *mp_message_unref_to_node     (MpMessage *self);
MpMessage *mp_message_renew_take        (MpMessage *node,
                                         GVariant  *data);
/* An error entry; @error (a G_IO_ERROR_INVALID_DATA) is taken. */
MpMessage *mp_message_new_error         (GError    *error);

static inline gboolean
mp_message_is_close_marker (const MpMessage *self)
{
  return (self->flags & MP_MESSAGE_FLAG_CLOSE_MARKER) != 0;
}

static inline gboolean
mp_message_is_error (const MpMessage *self)
{
  return (self->flags & MP_MESSAGE_FLAG_ERROR) != 0;
}

void       mp_message_queue_drop        (GQueue    *messages);
void       mp_message_drop              (MpMessage *message);

/* The pipe side viewed by the @index-th port the message carries: what the pipe's transit
 * graph (mp-pipe.c) needs of a travelling port, so that the pipe knows nothing of ports. */
struct _MpPipeSide *mp_message_get_port_side (MpMessage *self,
                                              guint      index);

/* The va_list marshaller of the "message" signals (VOID:MpMessage). Unlike
 * g_cclosure_marshal_VOID__BOXEDv it hands C handlers the emitter's message without
 * copying it (g_boxed_copy() + g_boxed_free() go through GType's global rwlock and cost
 * about a fifth of a delivery): every emitter holds a reference across g_signal_emit(), and
 * a handler that keeps the message takes its own, as documented. GLib uses a va marshaller
 * only for C closures when the signal has one handler; other closures (GJS, PyGObject) and
 * several handlers go through GValues, which still take a reference each. */
void       mp_message_marshal_VOID__MESSAGEv (GClosure *closure,
                                              GValue   *return_value,
                                              gpointer  instance,
                                              va_list   args,
                                              gpointer  marshal_data,
                                              int       n_params,
                                              GType    *param_types);

G_END_DECLS
