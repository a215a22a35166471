/* mp-message-port.c: one end of a message channel
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include "mp-error.h"
#include "mp-i18n-private.h"
#include "mp-message-port-private.h"
#include "mp-waker-private.h"

/**
 * MpMessagePort:
 *
 * One end of a [class@Mp.MessageChannel]: what is posted on one port is delivered, in order
 * and exactly once, at the other.
 *
 * Every method may be called from any thread. Messages are [struct@GLib.Variant]s, which
 * are immutable and so safe to share between threads; ports travel in the transfer list of
 * [method@Mp.MessagePort.post_message] and arrive as new objects.
 *
 * A port delivers nothing until [method@Mp.MessagePort.start] binds it to the calling
 * thread's thread-default [struct@GLib.MainContext]; from then on its
 * [signal@Mp.MessagePort::message] and [signal@Mp.MessagePort::close] signals are emitted
 * only from that context's dispatch, on the thread iterating it, and never inside the call
 * that caused them. [method@Mp.MessagePort.receive] takes messages synchronously instead.
 *
 * ```c
 * static void
 * on_message (MpMessagePort *port, MpMessage *message, gpointer user_data)
 * {
 *   g_print ("got %d\n", g_variant_get_int32 (mp_message_get_data (message)));
 * }
 *
 * g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
 * MpMessagePort *port2 = mp_message_channel_get_port2 (channel);
 *
 * g_signal_connect (port2, "message", G_CALLBACK (on_message), NULL);
 * mp_message_port_start (port2);   // delivers on this thread's main context
 *
 * // from any thread:
 * mp_message_port_post_message (mp_message_channel_get_port1 (channel),
 *                               g_variant_new_int32 (42), NULL, 0, NULL);
 * ```
 *
 * A started, open port keeps itself alive until it or its peer is closed, so a caller does
 * not need to keep a reference to it just to receive.
 *
 * Since: 1.0
 */

struct _MpMessagePort
{
  GObject parent_instance;

  /* Immutable. The port holds a reference on side->pipe. */
  MpPipeSide *side;

  /* TRUE once the side belongs to another object (transferred away), or for an object made
   * for a transfer that has not been committed. At most one object per side is not detached:
   * the owner. Written under side->mutex, read atomically anywhere. */
  int detached;

  /* TRUE once start() attached a source. Guarded by side->mutex. */
  gboolean started;

  /* This object's source (strong) from start() until the source retires itself from its own
   * dispatch, or its context is finalized. While the port owns its side and is attached,
   * side->source points to it too. Guarded by side->mutex. Only the owning thread (the
   * dispatch, by returning G_SOURCE_REMOVE) or the context's finalization ever destroys it:
   * destroying a source from another thread races with the finalization of its context. */
  GSource *source;

  /* The context start() attached to. Weak: the source attached to the context holds the
   * port, so a strong reference would be a cycle that keeps a dropped context alive. Cleared
   * when the port is detached or the context is finalized. Guarded by side->mutex. */
  GMainContext *context;

  /* Priority of the source. Written only by set_priority() (from the owning thread, as
   * GObject setters are), read anywhere. Atomic. */
  int priority;
};

G_DEFINE_FINAL_TYPE (MpMessagePort, mp_message_port, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_CONTEXT,
  PROP_CLOSED,
  PROP_PRIORITY,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

enum {
  SIGNAL_MESSAGE,
  SIGNAL_CLOSE,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

/* The persistent source of a started port, attached to its owning context. */
typedef struct
{
  MpWakeableSource parent;   /* ready while its pending flag is set (mp-waker-private.h) */
  MpMessagePort *port;       /* strong, released in finalize */
} MpPortSource;

static gboolean
is_detached (MpMessagePort *self)
{
  return g_atomic_int_get (&self->detached) != 0;
}

static gboolean
mp_port_source_dispatch (GSource     *source,
                         GSourceFunc  callback,
                         gpointer     user_data)
{
  MpMessagePort *self = ((MpPortSource *) source)->port;
  MpPipeSide *side = self->side;
  GSource *retired = NULL;
  gboolean emit_close = FALSE;
  guint budget = MP_MESSAGE_PORT_DISPATCH_BUDGET;

  /* Order matters (see mp_pipe_side_wake_locked()): clear the pending flag before looking
   * at the inbox; ARMED stays set until the inbox is found empty, under the lock, so that
   * posts made while this dispatch drains do not wake the context again. */
  mp_wakeable_source_set_pending (source, FALSE);

  g_mutex_lock (&side->mutex);

  /* One message at a time under the lock, so that receive() on other threads, a transfer
   * or a close() made by a handler all see the exact rest of the queue. */
  while (side->source == source)
    {
      MpMessage *message;

      if (mp_pipe_side_test (side, MP_SIDE_CLOSE_PENDING))
        {
          side->source = NULL;
          mp_pipe_side_clear_locked (side, MP_SIDE_CLOSE_PENDING | MP_SIDE_ATTACHED | MP_SIDE_ARMED);
          emit_close = TRUE;
          break;
        }

      if (budget == 0)
        {
          /* Still ARMED: come back at once, after the other sources had their turn (our
           * own thread: the flag is enough, no eventfd write). */
          if (side->inbox.length > 0)
            mp_wakeable_source_set_pending (source, TRUE);
          else
            mp_pipe_side_clear_locked (side, MP_SIDE_ARMED);
          break;
        }

      message = mp_pipe_side_pop_locked (side);
      if (message == NULL)
        {
          mp_pipe_side_clear_locked (side, MP_SIDE_ARMED);
          break;
        }

      if (mp_message_is_close_marker (message))
        {
          MpPipeDropped rest = MP_PIPE_DROPPED_INIT;

          /* The peer closed: everything it posted before was delivered. */
          mp_pipe_side_close_locked (side, &rest);
          g_queue_push_tail_link (&rest.messages, &message->link);
          g_mutex_unlock (&side->mutex);
          mp_pipe_dropped_release (&rest, NULL);
          g_mutex_lock (&side->mutex);
          continue;
        }

      g_mutex_unlock (&side->mutex);

      g_signal_emit (self, signals[SIGNAL_MESSAGE], 0, message);
      mp_message_unref (message);
      budget--;

      g_mutex_lock (&side->mutex);
    }

  /* Closed, or transferred away (maybe by a handler just now, maybe from another thread,
   * which then woke us for this): the source retires itself, here on its own thread. */
  if (side->source != source && self->source == source)
    retired = g_steal_pointer (&self->source);
  g_mutex_unlock (&side->mutex);

  if (emit_close)
    {
      g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_CLOSED]);
      g_signal_emit (self, signals[SIGNAL_CLOSE], 0);
    }

  if (retired != NULL)
    {
      /* The context is ours only as long as the source is attached to it: forget it now
       * (it is alive while we dispatch it). GLib holds the source through this dispatch;
       * the port goes with its finalize. */
      g_mutex_lock (&side->mutex);
      self->context = NULL;
      g_mutex_unlock (&side->mutex);
      g_source_unref (retired);
      return G_SOURCE_REMOVE;
    }

  return G_SOURCE_CONTINUE;
}

static void
mp_port_source_finalize (GSource *source)
{
  g_clear_object (&((MpPortSource *) source)->port);
  mp_wakeable_source_finalize (source);
}

static GSourceFuncs mp_port_source_funcs = {
  .prepare = mp_wakeable_source_prepare,
  .check = mp_wakeable_source_check,
  .dispatch = mp_port_source_dispatch,
  .finalize = mp_port_source_finalize,
};

/* Never called: the dispatch function does not use the callback. The callback slot only
 * carries mp_port_source_destroyed(), which GLib runs when the source is destroyed. */
static gboolean
mp_port_source_unused_callback (gpointer user_data)
{
  g_assert_not_reached ();
  return G_SOURCE_REMOVE;
}

/* Runs whenever the source is destroyed, with no context lock held. If the port still holds
 * the source, it did not retire itself: its context is being finalized (its thread quit and
 * dropped it). An attached port then closes, silently since it has no context left, and the
 * peer is told. Taking the side lock here waits out any thread that is waking the source, so
 * the context cannot be freed under a waker. */
static void
mp_port_source_destroyed (gpointer data)
{
  GSource *source = data;
  MpMessagePort *self = ((MpPortSource *) source)->port;
  MpPipeSide *side;
  MpPipeDropped dropped = MP_PIPE_DROPPED_INIT;
  gboolean closed = FALSE;

  if (self == NULL)
    return;
  side = self->side;

  g_mutex_lock (&side->mutex);
  if (self->source != source)
    {
      g_mutex_unlock (&side->mutex);
      return;
    }
  self->source = NULL;
  self->context = NULL;
  if (side->source == source)
    {
      side->source = NULL;
      mp_pipe_side_clear_locked (side, MP_SIDE_ATTACHED | MP_SIDE_ARMED | MP_SIDE_CLOSE_PENDING);
      closed = mp_pipe_side_close_locked (side, &dropped);
    }
  g_mutex_unlock (&side->mutex);

  if (closed)
    mp_pipe_side_notify_peer_closed (side);
  mp_pipe_dropped_release (&dropped, NULL);
  g_source_unref (source);
}

static void
mp_message_port_finalize (GObject *object)
{
  MpMessagePort *self = MP_MESSAGE_PORT (object);
  MpPipeSide *side = self->side;
  MpPipeDropped dropped = MP_PIPE_DROPPED_INIT;
  gboolean closed = FALSE;

  /* A started port cannot get here while open (its source holds it), so an owner being
   * finalized is unstarted: its side closes and the peer gets "close". */
  g_mutex_lock (&side->mutex);
  g_assert (self->source == NULL);
  if (!is_detached (self))
    closed = mp_pipe_side_close_locked (side, &dropped);
  g_mutex_unlock (&side->mutex);

  if (closed)
    mp_pipe_side_notify_peer_closed (side);
  mp_pipe_dropped_release (&dropped, NULL);

  mp_pipe_unref (side->pipe);

  G_OBJECT_CLASS (mp_message_port_parent_class)->finalize (object);
}

static void
mp_message_port_get_property (GObject    *object,
                              guint       prop_id,
                              GValue     *value,
                              GParamSpec *pspec)
{
  MpMessagePort *self = MP_MESSAGE_PORT (object);

  switch (prop_id)
    {
    case PROP_CONTEXT:
      g_value_set_boxed (value, mp_message_port_get_context (self));
      break;

    case PROP_CLOSED:
      g_value_set_boolean (value, mp_message_port_is_closed (self));
      break;

    case PROP_PRIORITY:
      g_value_set_int (value, mp_message_port_get_priority (self));
      break;

    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
mp_message_port_set_property (GObject      *object,
                              guint         prop_id,
                              const GValue *value,
                              GParamSpec   *pspec)
{
  MpMessagePort *self = MP_MESSAGE_PORT (object);

  switch (prop_id)
    {
    case PROP_PRIORITY:
      mp_message_port_set_priority (self, g_value_get_int (value));
      break;

    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
mp_message_port_class_init (MpMessagePortClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = mp_message_port_finalize;
  object_class->get_property = mp_message_port_get_property;
  object_class->set_property = mp_message_port_set_property;

  /**
   * MpMessagePort:context:
   *
   * The context the port delivers on: the thread-default [struct@GLib.MainContext] of
   * the thread that called [method@Mp.MessagePort.start]. %NULL until then, for a port
   * that was transferred away, and once a closed port has emitted
   * [signal@Mp.MessagePort::close] (or its context was finalized). The port does not keep
   * the context alive.
   *
   * Since: 1.0
   */
  properties[PROP_CONTEXT] =
    g_param_spec_boxed ("context", NULL, NULL,
                        G_TYPE_MAIN_CONTEXT,
                        G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * MpMessagePort:closed:
   *
   * Whether the port is closed: %TRUE as soon as its own [method@Mp.MessagePort.close]
   * returns, for a port that was transferred away, and for the surviving port once it
   * reaches its peer's close, after the messages posted before it.
   *
   * A started port notifies it on its context, just before [signal@Mp.MessagePort::close].
   *
   * Since: 1.0
   */
  properties[PROP_CLOSED] =
    g_param_spec_boolean ("closed", NULL, NULL,
                          FALSE,
                          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * MpMessagePort:priority:
   *
   * The priority of the port's dispatch on its context, like a [struct@GLib.Source]'s.
   * Set it from the owning thread; the notification is emitted on the calling thread.
   *
   * Since: 1.0
   */
  properties[PROP_PRIORITY] =
    g_param_spec_int ("priority", NULL, NULL,
                      G_MININT, G_MAXINT, G_PRIORITY_DEFAULT,
                      G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  g_object_class_install_properties (object_class, N_PROPS, properties);

  /**
   * MpMessagePort::message:
   * @self: the port
   * @message: the message
   *
   * Emitted for each message, in the order posted, on the thread iterating the port's
   * context, once [method@Mp.MessagePort.start] was called. One dispatch delivers at most
   * 1024 messages, then yields to the main loop.
   *
   * @message belongs to the emission: take a reference to keep it. Its ports are unstarted.
   *
   * Since: 1.0
   */
  signals[SIGNAL_MESSAGE] =
    g_signal_new ("message",
                  G_TYPE_FROM_CLASS (klass),
                  G_SIGNAL_RUN_LAST,
                  0,
                  NULL, NULL,
                  g_cclosure_marshal_VOID__BOXED,
                  G_TYPE_NONE,
                  1,
                  MP_TYPE_MESSAGE);
  /* No copy of the message for C handlers: the dispatch holds it across the emission. */
  g_signal_set_va_marshaller (signals[SIGNAL_MESSAGE],
                              G_TYPE_FROM_CLASS (klass),
                              mp_message_marshal_VOID__MESSAGEv);

  /**
   * MpMessagePort::close:
   * @self: the port
   *
   * Emitted once on a started port's context when the port closes: after its own
   * [method@Mp.MessagePort.close], after the messages its peer posted before the peer
   * closed, or when the peer went away. Never emitted inside the call that closed it.
   *
   * Since: 1.0
   */
  signals[SIGNAL_CLOSE] =
    g_signal_new ("close",
                  G_TYPE_FROM_CLASS (klass),
                  G_SIGNAL_RUN_LAST,
                  0,
                  NULL, NULL,
                  g_cclosure_marshal_VOID__VOID,
                  G_TYPE_NONE,
                  0);
  g_signal_set_va_marshaller (signals[SIGNAL_CLOSE],
                              G_TYPE_FROM_CLASS (klass),
                              g_cclosure_marshal_VOID__VOIDv);
}

static void
mp_message_port_init (MpMessagePort *self)
{
  self->priority = G_PRIORITY_DEFAULT;
}

/* A new port object for @side. Unless it is made the @owner (by a new channel), it stays
 * detached until a transfer commits it. */
MpMessagePort *
mp_message_port_new_for_side (MpPipeSide *side,
                              gboolean    owner)
{
  MpMessagePort *self = g_object_new (MP_TYPE_MESSAGE_PORT, NULL);

  self->side = side;
  self->detached = !owner;
  mp_pipe_ref (side->pipe);

  return self;
}

/* The side @self views. Immutable: callable under any lock. */
MpPipeSide *
mp_message_port_get_side (MpMessagePort *self)
{
  return self->side;
}

static int
compare_ports_by_side (gconstpointer a,
                       gconstpointer b)
{
  const MpMessagePort *pa = *(MpMessagePort *const *) a;
  const MpMessagePort *pb = *(MpMessagePort *const *) b;

  if (pa->side != pb->side)
    return pa->side < pb->side ? -1 : 1;

  return pa < pb ? -1 : (pa > pb ? 1 : 0);
}

static gboolean
check_transfer_list (MpMessagePort        *self,
                     MpMessagePort *const *transfer,
                     guint                 n_transfer,
                     MpMessagePort       **sorted,
                     GError              **error)
{
  for (guint i = 0; i < n_transfer; i++)
    {
      MpMessagePort *port = transfer[i];

      if (port == NULL)
        {
          g_set_error (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                       _("Entry %u of the transfer list is NULL"), i);
          return FALSE;
        }
      if (!MP_IS_MESSAGE_PORT (port))
        {
          g_set_error (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                       _("Entry %u of the transfer list is not a message port"), i);
          return FALSE;
        }
      if (port == self || port->side == self->side)
        {
          g_set_error_literal (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                               _("The transfer list contains the source port"));
          return FALSE;
        }
      if (port->side == self->side->peer)
        {
          g_set_error_literal (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                               _("The transfer list contains the peer of the source port"));
          return FALSE;
        }
      sorted[i] = port;
    }

  /* Sorted by side, so that duplicates are adjacent and the side locks are taken in one
   * global order. */
  qsort (sorted, n_transfer, sizeof (MpMessagePort *), compare_ports_by_side);
  for (guint i = 1; i < n_transfer; i++)
    if (sorted[i] == sorted[i - 1])
      {
        g_set_error_literal (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                             _("The transfer list contains a port twice"));
        return FALSE;
      }

  return TRUE;
}

static int
compare_sides (gconstpointer a,
               gconstpointer b)
{
  const MpPipeSide *sa = *(MpPipeSide *const *) a;
  const MpPipeSide *sb = *(MpPipeSide *const *) b;

  return sa < sb ? -1 : (sa > sb ? 1 : 0);
}

/* Posts @data (transfer full) with the ports of @transfer, atomically: the sides of the
 * listed ports and the destination are locked together (in address order), so either every
 * port was open and is handed to a new object travelling in the message, or nothing changed
 * and @error is set. */
static gboolean
post_with_transfer (MpMessagePort        *self,
                    GVariant             *data,
                    MpMessagePort *const *transfer,
                    guint                 n_transfer,
                    GError              **error)
{
  g_autofree MpMessagePort **sorted = g_new (MpMessagePort *, n_transfer);
  g_autofree MpPipeSide **locks = g_new (MpPipeSide *, n_transfer + 1);
  MpPipeSide *to = self->side->peer;
  MpPipeDropped waiters = MP_PIPE_DROPPED_INIT;
  g_autofree MpPipeSide **travelling = g_new (MpPipeSide *, n_transfer);
  MpReceiveWaiter *waiter = NULL;
  MpSendResult result = MP_SEND_REFUSED;
  GPtrArray *created;
  MpMessage *message;
  gboolean valid = TRUE;
  gboolean cycle = FALSE;

  if (!check_transfer_list (self, transfer, n_transfer, sorted, error))
    {
      g_clear_pointer (&data, g_variant_unref);
      return FALSE;
    }

  /* Made before locking (no GObject construction under a lock); they stay detached, and so
   * inert if dropped, until the commit below makes them owners. */
  created = g_ptr_array_new_full (n_transfer, g_object_unref);
  for (guint i = 0; i < n_transfer; i++)
    g_ptr_array_add (created, mp_message_port_new_for_side (transfer[i]->side, FALSE));
  message = mp_message_new (data, created);

  for (guint i = 0; i < n_transfer; i++)
    {
      /* Two objects of one side: at most one of them owns it. */
      if (i > 0 && sorted[i]->side == sorted[i - 1]->side)
        valid = FALSE;
      locks[i] = travelling[i] = sorted[i]->side;
    }
  locks[n_transfer] = to;
  qsort (locks, n_transfer + 1, sizeof (MpPipeSide *), compare_sides);

  if (valid)
    {
      for (guint i = 0; i <= n_transfer; i++)
        g_mutex_lock (&locks[i]->mutex);

      for (guint i = 0; i < n_transfer && valid; i++)
        if (is_detached (transfer[i]) || mp_pipe_side_test (transfer[i]->side, MP_SIDE_CLOSED))
          valid = FALSE;

      /* A message bound for the inbox (not dropped at a closed @to, not handed to a pending
       * receive) must not close a transit cycle (see mp-pipe.c): its edges are added here,
       * or it is refused before anything changes. */
      if (valid && !mp_pipe_side_test (to, MP_SIDE_CLOSED | MP_SIDE_PEER_CLOSED) &&
          !mp_pipe_side_has_waiters (to) &&
          !mp_pipe_side_transit_add_locked (to, travelling, n_transfer))
        {
          valid = FALSE;
          cycle = TRUE;
        }

      /* A sender closed meanwhile (its close marker is queued at @to) refuses the post
       * before anything changes: result stays MP_SEND_REFUSED. */
      if (valid && (mp_pipe_side_test (to, MP_SIDE_CLOSED) ||
                    !mp_pipe_side_test (to, MP_SIDE_PEER_CLOSED)))
        {
          for (guint i = 0; i < n_transfer; i++)
            {
              MpMessagePort *port = transfer[i];
              MpPipeSide *side = port->side;

              g_atomic_int_set (&port->detached, TRUE);
              port->context = NULL;
              if (side->source != NULL)
                {
                  /* The old object's source emits nothing more: it is woken to retire itself
                   * on its own thread (see mp_port_source_dispatch()). */
                  mp_wakeable_source_wake (side->source);
                  side->source = NULL;
                  mp_pipe_side_clear_locked (side, MP_SIDE_ATTACHED | MP_SIDE_ARMED);
                }
              /* Receives pending on the old object fail; the new one starts with none. */
              mp_pipe_side_steal_waiters_locked (side, &waiters);
              g_atomic_int_set (&((MpMessagePort *) g_ptr_array_index (created, i))->detached,
                                FALSE);
            }
          result = mp_pipe_side_send_locked (to, message, &waiter);
        }

      for (guint i = n_transfer + 1; i > 0; i--)
        g_mutex_unlock (&locks[i - 1]->mutex);
    }

  if (cycle)
    {
      mp_message_drop (message);
      g_set_error_literal (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                           _("The destination port travels in a message queued at a port of the transfer list: the message could never be received"));
      return FALSE;
    }

  if (!valid)
    {
      mp_message_drop (message);
      g_set_error_literal (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                           _("The transfer list contains a port that is closed or was already transferred"));
      return FALSE;
    }

  mp_pipe_dropped_release (&waiters, _("The port was transferred away"));

  if (!mp_pipe_send_complete (result, message, waiter))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                           _("The port is closed"));
      return FALSE;
    }

  return TRUE;
}

/**
 * mp_message_port_post_message:
 * @self: a port
 * @message: (nullable): the payload; a floating reference is sunk
 * @transfer: (array length=n_transfer) (nullable): ports to transfer with the message
 * @n_transfer: the number of ports in @transfer
 * @error: return location for a #GError
 *
 * Posts @message to the peer of @self. Callable from any thread; it never emits a signal.
 *
 * The ports of @transfer go with the message: the receiver finds new objects for them in
 * [method@Mp.Message.get_ports], in the same order, and the objects in @transfer become
 * detached — posting on them fails, and they emit nothing more. Messages queued at a
 * transferred port travel with it.
 *
 * Posting on a port that was closed or transferred away fails with
 * %MP_ERROR_INVALID_STATE. A transfer list holding %NULL, something that is not a port,
 * @self, its peer, the same port twice, or a port that is closed or transferred away fails
 * with %MP_ERROR_DATA_CLONE, and then nothing changes: every listed port stays usable.
 * So does a transfer that would make a cycle: when the peer of @self itself travels in a
 * message queued at a listed port (directly, or inside a port travelling in a message
 * queued there, and so on), the message would end up inside its own cargo, where nothing
 * could ever receive it.
 * If the peer is closed, the message is dropped and the call succeeds (its ports close).
 *
 * Returns: %TRUE if the message was posted (or dropped because the peer is closed)
 *
 * Since: 1.0
 */
gboolean
mp_message_port_post_message (MpMessagePort        *self,
                              GVariant             *message,
                              MpMessagePort *const *transfer,
                              guint                 n_transfer,
                              GError              **error)
{
  g_autoptr(GVariant) data = message != NULL ? g_variant_ref_sink (message) : NULL;

  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), FALSE);
  g_return_val_if_fail (transfer != NULL || n_transfer == 0, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (is_detached (self))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                           _("The port was transferred away"));
      return FALSE;
    }
  if (mp_pipe_side_test (self->side, MP_SIDE_CLOSED))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                           _("The port is closed"));
      return FALSE;
    }

  if (n_transfer > 0)
    return post_with_transfer (self, g_steal_pointer (&data), transfer, n_transfer, error);

  if (!mp_pipe_side_send (self->side, mp_message_new (g_steal_pointer (&data), NULL)))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                           _("The port is closed"));
      return FALSE;
    }

  return TRUE;
}

/**
 * mp_message_port_start:
 * @self: a port
 *
 * Starts delivering @self's messages, those already queued first, as
 * [signal@Mp.MessagePort::message] signals on the calling thread's thread-default
 * [struct@GLib.MainContext] (see [method@GLib.MainContext.push_thread_default]; the global
 * default context if none was pushed). Call it on the thread that will iterate that
 * context. Starting twice, or starting a closed or transferred-away port, does nothing.
 *
 * Once started, the open port keeps itself alive until it or its peer closes. Nothing is
 * emitted inside this call.
 *
 * Since: 1.0
 */
void
mp_message_port_start (MpMessagePort *self)
{
  MpPipeSide *side;
  GMainContext *context;
  GSource *source;
  gboolean attached = FALSE;

  g_return_if_fail (MP_IS_MESSAGE_PORT (self));

  side = self->side;
  if (is_detached (self) || mp_pipe_side_test (side, MP_SIDE_CLOSED | MP_SIDE_ATTACHED))
    return;

  context = g_main_context_ref_thread_default ();
  source = mp_wakeable_source_new (&mp_port_source_funcs, sizeof (MpPortSource), context);
  ((MpPortSource *) source)->port = g_object_ref (self);
  g_source_set_static_name (source, "MpMessagePort");
  g_source_set_priority (source, g_atomic_int_get (&self->priority));
  g_source_set_callback (source, mp_port_source_unused_callback, source, mp_port_source_destroyed);
  g_source_attach (source, context);

  g_mutex_lock (&side->mutex);
  if (!is_detached (self) && !self->started && !mp_pipe_side_test (side, MP_SIDE_CLOSED))
    {
      self->started = TRUE;
      self->context = context;
      self->source = source;   /* takes our reference */
      side->source = source;
      mp_pipe_side_set_locked (side, MP_SIDE_ATTACHED);
      if (side->inbox.length > 0)
        mp_pipe_side_wake_locked (side);
      attached = TRUE;
    }
  g_mutex_unlock (&side->mutex);

  if (!attached)
    {
      /* Lost a race with another start(), a close() or a transfer. */
      g_source_destroy (source);
      g_source_unref (source);
    }

  g_main_context_unref (context);
}

/**
 * mp_message_port_close:
 * @self: a port
 *
 * Closes @self and disentangles it from its peer. Callable from any thread; closing twice,
 * or closing a transferred-away port, does nothing.
 *
 * Messages queued at @self are dropped, and once this returns on the owning thread (for
 * example inside a [signal@Mp.MessagePort::message] handler) no further message is
 * emitted. A started port emits [signal@Mp.MessagePort::close] later, on its context. The
 * peer emits it after the messages @self posted before closing; posting to it from then
 * on succeeds and drops the message.
 *
 * Since: 1.0
 */
void
mp_message_port_close (MpMessagePort *self)
{
  MpPipeSide *side;
  MpPipeDropped dropped = MP_PIPE_DROPPED_INIT;
  gboolean closed = FALSE;

  g_return_if_fail (MP_IS_MESSAGE_PORT (self));

  side = self->side;
  g_mutex_lock (&side->mutex);
  if (!is_detached (self))
    closed = mp_pipe_side_close_locked (side, &dropped);
  g_mutex_unlock (&side->mutex);

  if (closed)
    mp_pipe_side_notify_peer_closed (side);
  mp_pipe_dropped_release (&dropped, NULL);
}

/**
 * mp_message_port_receive:
 * @self: a port
 *
 * Takes the oldest queued message of @self, synchronously and without emitting anything.
 * Callable from any thread, whether or not the port is started; it shares one queue with
 * the [signal@Mp.MessagePort::message] delivery, so each message goes to exactly one of
 * them. Never blocks.
 *
 * Reaching the peer's close closes @self (a started port then emits
 * [signal@Mp.MessagePort::close] on its context) and returns %NULL.
 *
 * Returns: (transfer full) (nullable): the oldest message, or %NULL if none is queued or
 *   the port is closed
 *
 * Since: 1.0
 */
MpMessage *
mp_message_port_receive (MpMessagePort *self)
{
  MpPipeSide *side;
  MpPipeDropped dropped = MP_PIPE_DROPPED_INIT;
  MpMessage *message = NULL;

  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), NULL);

  side = self->side;
  g_mutex_lock (&side->mutex);
  if (!is_detached (self) && !mp_pipe_side_test (side, MP_SIDE_CLOSED) &&
      (message = mp_pipe_side_pop_locked (side)) != NULL)
    {
      if (mp_message_is_close_marker (message))
        {
          mp_pipe_side_close_locked (side, &dropped);
          g_queue_push_tail_link (&dropped.messages, &message->link);
          message = NULL;
        }
    }
  g_mutex_unlock (&side->mutex);

  mp_pipe_dropped_release (&dropped, NULL);

  return message;
}

/**
 * mp_message_port_get_context:
 * @self: a port
 *
 * Gets the context @self delivers on. Callable from any thread.
 *
 * Returns: (transfer none) (nullable): the context given by
 *   [method@Mp.MessagePort.start], or %NULL if the port was not started, was
 *   transferred away, or closed and has emitted [signal@Mp.MessagePort::close]
 *
 * Since: 1.0
 */
GMainContext *
mp_message_port_get_context (MpMessagePort *self)
{
  GMainContext *context;

  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), NULL);

  g_mutex_lock (&self->side->mutex);
  context = self->context;
  g_mutex_unlock (&self->side->mutex);

  return context;
}

/**
 * mp_message_port_is_closed:
 * @self: a port
 *
 * Gets [property@Mp.MessagePort:closed]. Callable from any thread.
 *
 * Returns: %TRUE if @self is closed or was transferred away
 *
 * Since: 1.0
 */
gboolean
mp_message_port_is_closed (MpMessagePort *self)
{
  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), TRUE);

  return is_detached (self) || mp_pipe_side_test (self->side, MP_SIDE_CLOSED);
}

/**
 * mp_message_port_get_priority:
 * @self: a port
 *
 * Gets [property@Mp.MessagePort:priority]. Callable from any thread.
 *
 * Returns: the priority of the port's dispatch
 *
 * Since: 1.0
 */
int
mp_message_port_get_priority (MpMessagePort *self)
{
  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), G_PRIORITY_DEFAULT);

  return g_atomic_int_get (&self->priority);
}

/**
 * mp_message_port_set_priority:
 * @self: a port
 * @priority: the priority, such as %G_PRIORITY_DEFAULT
 *
 * Sets [property@Mp.MessagePort:priority], before or after
 * [method@Mp.MessagePort.start]. Call it from the owning thread: "notify::priority" is
 * emitted on the calling thread.
 *
 * Since: 1.0
 */
void
mp_message_port_set_priority (MpMessagePort *self,
                              int            priority)
{
  GSource *source = NULL;

  g_return_if_fail (MP_IS_MESSAGE_PORT (self));

  if (g_atomic_int_exchange (&self->priority, priority) == priority)
    return;

  g_mutex_lock (&self->side->mutex);
  if (self->source != NULL)
    source = g_source_ref (self->source);
  g_mutex_unlock (&self->side->mutex);

  if (source != NULL)
    {
      g_source_set_priority (source, priority);
      g_source_unref (source);
    }

  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PRIORITY]);
}

typedef struct
{
  MpReceiveWaiter *waiter;   /* owned */
  MpMessage *message;        /* owned, or NULL */
  GError *error;             /* owned, or NULL */
} WaiterCompletion;

/* Runs from the completion idle (or its release), never from a cancellable handler, so the
 * disconnect cannot deadlock; it waits out a handler running on another thread. */
static void
waiter_free (MpReceiveWaiter *waiter)
{
  if (waiter->cancelled_id != 0)
    g_cancellable_disconnect (g_task_get_cancellable (waiter->task), waiter->cancelled_id);
  g_object_unref (waiter->task);
  g_free (waiter);
}

static gboolean
waiter_completion_dispatch (gpointer data)
{
  WaiterCompletion *completion = data;
  GTask *task = g_object_ref (completion->waiter->task);

  waiter_free (g_steal_pointer (&completion->waiter));

  /* We are a later iteration's source on the task's context: GTask completes right here. */
  if (completion->message != NULL)
    g_task_return_pointer (task, g_steal_pointer (&completion->message),
                           (GDestroyNotify) mp_message_unref);
  else
    g_task_return_error (task, g_steal_pointer (&completion->error));
  g_object_unref (task);

  return G_SOURCE_REMOVE;
}

static void
waiter_completion_free (gpointer data)
{
  WaiterCompletion *completion = data;

  /* Normally all was handed over by the dispatch. The GTask keeps its context alive, so the
   * idle is not destroyed undispatched unless someone destroys it by hand; then the message
   * is dropped like any undelivered one. */
  if (completion->waiter != NULL)
    waiter_free (completion->waiter);
  if (completion->message != NULL)
    mp_message_drop (completion->message);
  g_clear_error (&completion->error);
  g_free (completion);
}

void
mp_receive_waiter_complete (MpReceiveWaiter *waiter,
                            MpMessage       *message,
                            GError          *error)
{
  WaiterCompletion *completion = g_new0 (WaiterCompletion, 1);
  GSource *idle = g_idle_source_new ();

  g_assert (!waiter->queued);
  g_assert ((message != NULL) != (error != NULL));

  completion->waiter = waiter;
  completion->message = message;
  completion->error = error;

  g_source_set_static_name (idle, "MpMessagePort receive");
  g_source_set_priority (idle, g_task_get_priority (waiter->task));
  g_source_set_callback (idle, waiter_completion_dispatch, completion, waiter_completion_free);
  g_source_attach (idle, g_task_get_context (waiter->task));
  g_source_unref (idle);
}

/* Runs in the thread that cancels, inside g_cancellable_cancel(), so that once it returns
 * the receive can no longer take a message. A receive still waiting leaves the queue and
 * fails (later, from its context); one already served completes with its message. */
static void
waiter_cancelled (GCancellable *cancellable,
                  gpointer      data)
{
  MpReceiveWaiter *waiter = data;
  gboolean was_queued;

  g_mutex_lock (&waiter->side->mutex);
  was_queued = waiter->queued;
  if (was_queued)
    {
      g_queue_unlink (waiter->side->waiters, &waiter->link);
      waiter->queued = FALSE;
    }
  g_mutex_unlock (&waiter->side->mutex);

  if (was_queued)
    mp_receive_waiter_complete (waiter, NULL,
                                g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED,
                                                     _("The receive was cancelled")));
}

/**
 * mp_message_port_receive_async:
 * @self: a port
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when a message arrived or the receive failed
 * @user_data: data for @callback
 *
 * Takes the next message of @self asynchronously: the oldest queued one, or else the next
 * one posted. Callable from any thread, started or not; @callback runs on the calling
 * thread's thread-default [struct@GLib.MainContext], never inside this call. Call
 * [method@Mp.MessagePort.receive_finish] from it.
 *
 * Receives share one queue with [method@Mp.MessagePort.receive] and the
 * [signal@Mp.MessagePort::message] delivery, so each message goes to exactly one of
 * them; pending receives are served before the signal, oldest first.
 *
 * It fails with %MP_ERROR_INVALID_STATE when the port is or becomes closed or is
 * transferred away, and with %G_IO_ERROR_CANCELLED when @cancellable is cancelled first;
 * a cancelled receive takes no message.
 *
 * As with every #GTask, the pending call holds a reference on the calling thread's
 * context and on @self until @callback has run: keep iterating that context (or cancel
 * and then iterate) before dropping it.
 *
 * Since: 1.0
 */
void
mp_message_port_receive_async (MpMessagePort       *self,
                               GCancellable        *cancellable,
                               GAsyncReadyCallback  callback,
                               gpointer             user_data)
{
  g_autoptr(GTask) task = NULL;
  MpPipeSide *side;
  MpReceiveWaiter *waiter;
  MpMessage *message = NULL;
  MpPipeDropped dropped = MP_PIPE_DROPPED_INIT;
  const char *failure = NULL;
  gboolean cancelled = FALSE;
  gboolean queued;

  g_return_if_fail (MP_IS_MESSAGE_PORT (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, mp_message_port_receive_async);
  /* Once a message is handed over, a late cancel must not lose it. */
  g_task_set_check_cancellable (task, FALSE);

  if (g_task_return_error_if_cancelled (task))
    return;

  waiter = g_new0 (MpReceiveWaiter, 1);
  waiter->link.data = waiter;
  waiter->task = g_object_ref (task);
  waiter->side = side = self->side;

  /* Connected before the waiter is queued (a handler run at once finds it unqueued and does
   * nothing) and never under the side lock, which the handler takes. */
  if (cancellable != NULL)
    waiter->cancelled_id = g_cancellable_connect (cancellable, G_CALLBACK (waiter_cancelled),
                                                  waiter, NULL);

  g_mutex_lock (&side->mutex);
  if (is_detached (self))
    failure = _("The port was transferred away");
  else if (mp_pipe_side_test (side, MP_SIDE_CLOSED))
    failure = _("The port is closed");
  else if (side->inbox.length > 0)
    {
      message = mp_pipe_side_pop_locked (side);
      if (mp_message_is_close_marker (message))
        {
          mp_pipe_side_close_locked (side, &dropped);
          g_queue_push_tail_link (&dropped.messages, &message->link);
          message = NULL;
          failure = _("The port is closed");
        }
    }
  else if (g_cancellable_is_cancelled (cancellable))
    cancelled = TRUE;
  else
    {
      waiter->queued = TRUE;
      if (side->waiters == NULL)
        side->waiters = g_new0 (GQueue, 1);
      g_queue_push_tail_link (side->waiters, &waiter->link);
    }
  queued = waiter->queued;
  g_mutex_unlock (&side->mutex);

  /* Once queued, the waiter belongs to the side: a post, a close or a cancel completes it,
   * maybe already on another thread. */
  if (queued)
    return;

  mp_pipe_dropped_release (&dropped, NULL);
  if (message != NULL)
    mp_receive_waiter_complete (waiter, message, NULL);
  else if (cancelled)
    mp_receive_waiter_complete (waiter, NULL,
                                g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED,
                                                     _("The receive was cancelled")));
  else
    mp_receive_waiter_complete (waiter, NULL,
                                g_error_new_literal (MP_ERROR, MP_ERROR_INVALID_STATE, failure));
}

/**
 * mp_message_port_receive_finish:
 * @self: a port
 * @result: the result given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Mp.MessagePort.receive_async]. Call it from the callback, on the
 * thread that runs it (the thread-default context of the thread that called
 * [method@Mp.MessagePort.receive_async]).
 *
 * Fails with %MP_ERROR_INVALID_STATE if the port was or became closed (its peer's close
 * reached included) or was transferred away before a message arrived, and with
 * %G_IO_ERROR_CANCELLED if the cancellable was cancelled first.
 *
 * Returns: (transfer full): the message, or %NULL with @error set
 *
 * Since: 1.0
 */
MpMessage *
mp_message_port_receive_finish (MpMessagePort  *self,
                                GAsyncResult   *result,
                                GError        **error)
{
  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), NULL);
  g_return_val_if_fail (g_task_is_valid (result, self), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}
