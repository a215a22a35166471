/* mp-message.c: one delivered message
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include "mp-message-private.h"
#include "mp-message-port-private.h"

/**
 * MpMessage:
 *
 * One message delivered by a [class@Mp.MessagePort]: its payload, a [struct@GLib.Variant]
 * or %NULL, and the ports that travelled with it in the transfer list.
 *
 * `MpMessage` is a reference-counted boxed type, not a `GObject`, because one is made for
 * every message posted. It is immutable, so a reference may be used and released from any
 * thread. A handler of [signal@Mp.MessagePort::message] that wants to keep the message
 * past its return takes a reference with [method@Mp.Message.ref].
 *
 * Since: 1.0
 */

G_DEFINE_BOXED_TYPE (MpMessage, mp_message, mp_message_ref, mp_message_unref)

MpMessage *
mp_message_new_take (GVariant  *data,
                     GPtrArray *ports)
{
  MpMessage *self = mp_message_renew_take (NULL, data);

  self->ports = ports;

  return self;
}

MpMessage *
mp_message_new_close_marker (void)
{
  MpMessage *self = mp_message_new_take (NULL, NULL);

  self->flags = MP_MESSAGE_FLAG_CLOSE_MARKER;

  return self;
}

MpMessage *
mp_message_new_error (GError *error)
{
  MpMessage *self = mp_message_new_take (NULL, NULL);

  g_assert (error != NULL);

  self->flags = MP_MESSAGE_FLAG_ERROR;
  self->error = error;

  return self;
}

/**
 * mp_message_new:
 * @data: (nullable): the payload; a floating reference is sunk
 * @ports: (array length=n_ports) (nullable): ports the message holds, as if they had
 *   travelled with it
 * @n_ports: the number of ports in @ports
 *
 * Makes a message without a channel, as [signal@Mp.MessagePort::message] would deliver
 * it: for an application's own tests, to feed its handlers. The message takes a reference
 * on each port; unlike [method@Mp.MessagePort.post_message], nothing is transferred or
 * detached. Callable from any thread.
 *
 * ```c
 * g_autoptr(MpMessage) message = mp_message_new (g_variant_new_string ("hi"), NULL, 0);
 * my_app_on_message (NULL, message, app);
 * ```
 *
 * Returns: (transfer full): a new message
 *
 * Since: 1.0
 */
MpMessage *
mp_message_new (GVariant             *data,
                MpMessagePort *const *ports,
                guint                 n_ports)
{
  GPtrArray *held = NULL;

  g_return_val_if_fail (ports != NULL || n_ports == 0, NULL);
  for (guint i = 0; i < n_ports; i++)
    g_return_val_if_fail (G_TYPE_CHECK_INSTANCE_TYPE (ports[i], mp_message_port_get_type ()),
                          NULL);

  if (n_ports > 0)
    {
      held = g_ptr_array_new_full (n_ports, g_object_unref);
      for (guint i = 0; i < n_ports; i++)
        g_ptr_array_add (held, g_object_ref (ports[i]));
    }

  return mp_message_new_take (data != NULL ? g_variant_ref_sink (data) : NULL, held);
}

/**
 * mp_message_ref:
 * @self: a message
 *
 * Takes a reference on @self. Callable from any thread.
 *
 * Returns: (transfer full): @self
 *
 * Since: 1.0
 */
MpMessage *
mp_message_ref (MpMessage *self)
{
  g_return_val_if_fail (self != NULL, NULL);

  g_atomic_ref_count_inc (&self->ref_count);

  return self;
}

/* Releases what @self holds; the node itself stays. Runs code of its own choosing (a
 * GBytes free function, the finalization of ports), so never under a lock. */
static void
mp_message_clear (MpMessage *self)
{
  g_clear_pointer (&self->data, g_variant_unref);
  /* Only messages from another process have either; they share one slot. */
  if (G_UNLIKELY (mp_message_is_error (self)))
    g_error_free (self->error);
  else if (G_UNLIKELY (self->sender != NULL))
    g_free (self->sender);
  /* Ports that were never delivered are unstarted: finalizing them closes their sides, and
   * that drops their own queues through mp_message_queue_drop(), never recursively. */
  g_clear_pointer (&self->ports, g_ptr_array_unref);
  self->sender = NULL;
  self->flags = MP_MESSAGE_FLAG_NONE;
}

static void
mp_message_free (MpMessage *self)
{
  mp_message_clear (self);
  g_free (self);
}

MpMessage *
mp_message_renew_take (MpMessage *node,
                       GVariant  *data)
{
  MpMessage *self = node != NULL ? node : g_new (MpMessage, 1);

  self->link.data = self;
  self->link.next = NULL;
  self->link.prev = NULL;
  g_atomic_ref_count_init (&self->ref_count);
  self->flags = MP_MESSAGE_FLAG_NONE;
  self->data = data;
  self->ports = NULL;
  self->sender = NULL;

  return self;
}

MpMessage *
mp_message_unref_to_node (MpMessage *self)
{
  if (!g_atomic_ref_count_dec (&self->ref_count))
    return NULL;

  mp_message_clear (self);
  return self;
}

/**
 * mp_message_unref:
 * @self: (transfer full): a message
 *
 * Releases a reference on @self; the last one frees it, its payload, and its reference on
 * each transferred port. Callable from any thread.
 *
 * Since: 1.0
 */
void
mp_message_unref (MpMessage *self)
{
  g_return_if_fail (self != NULL);

  if (g_atomic_ref_count_dec (&self->ref_count))
    mp_message_free (self);
}

/**
 * mp_message_get_data:
 * @self: a message
 *
 * Gets the payload that was posted. Callable from any thread.
 *
 * Returns: (transfer none) (nullable): the payload, or %NULL if %NULL was posted
 *
 * Since: 1.0
 */
GVariant *
mp_message_get_data (MpMessage *self)
{
  g_return_val_if_fail (self != NULL, NULL);

  return self->data;
}

/**
 * mp_message_get_ports:
 * @self: a message
 *
 * Gets the ports that travelled in the transfer list, in transfer-list order. They are new
 * [class@Mp.MessagePort] objects, not yet started: call [method@Mp.MessagePort.start] on
 * the thread whose context should receive their messages, or [method@Mp.MessagePort.receive].
 * Keep a reference to a port that must outlive the message. Callable from any thread.
 *
 * Returns: (transfer none) (element-type MpMessagePort): the ports, never %NULL
 *
 * Since: 1.0
 */
GPtrArray *
mp_message_get_ports (MpMessage *self)
{
  GPtrArray *ports;

  g_return_val_if_fail (self != NULL, NULL);

  ports = g_atomic_pointer_get (&self->ports);
  if (ports == NULL)
    {
      GPtrArray *empty = g_ptr_array_new_with_free_func (g_object_unref);

      if (g_atomic_pointer_compare_and_exchange_full (&self->ports, NULL, empty, &ports))
        ports = empty;
      else
        g_ptr_array_unref (empty);
    }

  return ports;
}

/**
 * mp_message_get_sender:
 * @self: a message
 *
 * Gets the sender of a message that came from another process over a message bus (see
 * [ctor@Mp.BroadcastChannel.new_for_bus]): the unique bus name of the sending connection,
 * such as `:1.42`, the counterpart of the Web's `MessageEvent.origin`. A process can
 * answer it on a D-Bus interface of its own. Callable from any thread.
 *
 * Returns: (nullable): the sender's unique bus name, or %NULL for a message posted in this
 *   process
 *
 * Since: 1.0
 */
const char *
mp_message_get_sender (MpMessage *self)
{
  g_return_val_if_fail (self != NULL, NULL);

  return self->sender;
}

void
mp_message_marshal_VOID__MESSAGEv (GClosure *closure,
                                   GValue   *return_value,
                                   gpointer  instance,
                                   va_list   args,
                                   gpointer  marshal_data,
                                   int       n_params,
                                   GType    *param_types)
{
  typedef void (*MarshalFunc) (gpointer data1, gpointer message, gpointer data2);
  GCClosure *cc = (GCClosure *) closure;
  gpointer data1, data2;
  MarshalFunc callback;
  gpointer message;
  va_list args_copy;

  G_VA_COPY (args_copy, args);
  message = va_arg (args_copy, gpointer);
  va_end (args_copy);

  if (G_CCLOSURE_SWAP_DATA (closure))
    {
      data1 = closure->data;
      data2 = instance;
    }
  else
    {
      data1 = instance;
      data2 = closure->data;
    }
  callback = (MarshalFunc) (marshal_data != NULL ? marshal_data : cc->callback);

  callback (data1, message, data2);
}

/* Messages dropped undelivered may carry ports whose sides hold queues of messages carrying
 * ports, and so on (a nesting 20 000 deep must not overflow the stack). Each thread drains
 * such drops from a flat list: a drop nested inside another is appended and handled by the
 * outermost call's loop. Thread-local, so no lock. */
static _Thread_local GQueue drop_pending = G_QUEUE_INIT;
static _Thread_local gboolean drop_draining;

static void
queue_splice_tail (GQueue *dest,
                   GQueue *src)
{
  if (src->head == NULL)
    return;

  if (dest->tail != NULL)
    {
      dest->tail->next = src->head;
      src->head->prev = dest->tail;
    }
  else
    dest->head = src->head;

  dest->tail = src->tail;
  dest->length += src->length;
  g_queue_init (src);
}

/* Releases every message of @messages (a queue of MpMessage links, emptied) with no lock
 * held by the caller. */
void
mp_message_queue_drop (GQueue *messages)
{
  GList *link;

  /* Nothing to drop (most closes): drop_pending is empty unless a drain is running, which
   * has nothing to gain from us either. Saves the thread-local look-ups. */
  if (messages->head == NULL)
    return;

  queue_splice_tail (&drop_pending, messages);

  if (drop_draining)
    return;

  drop_draining = TRUE;
  while ((link = g_queue_pop_head_link (&drop_pending)) != NULL)
    mp_message_unref (link->data);
  drop_draining = FALSE;
}

void
mp_message_drop (MpMessage *message)
{
  GQueue one = G_QUEUE_INIT;

  g_queue_push_tail_link (&one, &message->link);
  mp_message_queue_drop (&one);
}

struct _MpPipeSide *
mp_message_get_port_side (MpMessage *self,
                          guint      index)
{
  return mp_message_port_get_side (g_ptr_array_index (self->ports, index));
}
