/* mp-message-port.c: one end of a message channel
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include "mp-error.h"
#include "mp-i18n-private.h"
#include "mp-message-port-private.h"
#include "mp-waker-private.h"
#include "mp-wire-private.h"

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
 * [signal@Mp.MessagePort::message], [signal@Mp.MessagePort::message-error] and
 * [signal@Mp.MessagePort::close] signals are emitted only from that context's dispatch, on
 * the thread iterating it, and never inside the call that caused them.
 * [method@Mp.MessagePort.receive] takes messages synchronously instead.
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
 * Ports come in pairs from [ctor@Mp.MessageChannel.new] (or arrive in a message). A port
 * made on its own (`g_object_new (MP_TYPE_MESSAGE_PORT, NULL)`, `Mp.MessagePort()` in
 * Python, `new Mp.MessagePort()` in GJS) has no peer: it is closed from the start, posting
 * on it fails with %MP_ERROR_INVALID_STATE and it receives nothing.
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
  PROP_HIGH_WATER_MARK,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

enum {
  SIGNAL_MESSAGE,
  SIGNAL_MESSAGE_ERROR,
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

static GError *
transferred_error (void)
{
  return g_error_new_literal (MP_ERROR, MP_ERROR_INVALID_STATE, _("The port was transferred away"));
}

/* An async post to a closed peer: room will never come, and a producer loop must end. */
static GError *
peer_closed_error (void)
{
  return g_error_new_literal (MP_ERROR, MP_ERROR_CLOSED,
                              _("The other port of the channel was closed"));
}

static GError *
post_cancelled_error (void)
{
  return g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, _("The post was cancelled"));
}

static gboolean
mp_port_source_dispatch (GSource     *source,
                         GSourceFunc  callback,
                         gpointer     user_data)
{
  MpMessagePort *self = ((MpPortSource *) source)->port;
  MpPipeSide *side = self->side;
  GSource *retired = NULL;
  MpMessage *overflow = NULL;   /* a bare node the side had no use for */
  gboolean retiring = FALSE;
  gboolean emit_close = FALSE;
  guint budget;

  /* Order matters (see mp_pipe_side_wake_locked()): clear the pending flag before looking
   * at the inbox; ARMED stays set until the inbox is found empty, under the lock, so that
   * posts made while this dispatch drains do not wake the context again. */
  mp_wakeable_source_set_pending (source, FALSE);

  g_mutex_lock (&side->mutex);

  /* With a high-water mark, producers refill the queue as this dispatch takes from it: a
   * dispatch takes at most one mark's worth, so that the context's other sources (a frame
   * clock) come round as often as the queue holds. (A relay's side has the other process's
   * mark, which says nothing of this context.) */
  budget = mp_pipe_side_test (side, MP_SIDE_REMOTE) ? 0 : mp_pipe_side_get_high_water_mark_locked (side);
  if (budget == 0 || budget > MP_MESSAGE_PORT_DISPATCH_BUDGET)
    budget = MP_MESSAGE_PORT_DISPATCH_BUDGET;

  /* One message at a time under the lock, so that receive() on other threads, a transfer
   * or a close() made by a handler all see the exact rest of the queue. */
  while (side->source == source)
    {
      MpMessage *message;
      MpMessage *spare;
      MpPipeDeliverFunc deliver;
      gpointer deliver_data;

      if (mp_pipe_side_test (side, MP_SIDE_CLOSE_PENDING))
        {
          side->source = NULL;
          mp_pipe_side_clear_locked (side, MP_SIDE_CLOSE_PENDING | MP_SIDE_ATTACHED | MP_SIDE_ARMED);
          emit_close = TRUE;
          break;
        }

      if (budget == 0)
        {
          /* Still ARMED: come back after one iteration in which lower-priority sources
           * (a GTK frame clock) get their turn; our own thread, so no eventfd write. */
          mp_pipe_side_flush_lane_locked (side);
          if (side->inbox.length > 0 || !mp_pipe_side_disarm_locked (side))
            mp_wakeable_source_yield (source);
          break;
        }

      message = mp_pipe_side_pop_for_dispatch_locked (side);
      if (message == NULL)
        {
          /* Unless a post came on the lane as we cleared ARMED. */
          if (!mp_pipe_side_disarm_locked (side))
            continue;
          break;
        }

      if (mp_message_is_close_marker (message))
        {
          MpPipeDeferred rest = MP_PIPE_DEFERRED_INIT;

          /* The peer closed: everything it posted before was delivered. */
          mp_pipe_side_reach_peer_close_locked (side, message, &rest);
          g_mutex_unlock (&side->mutex);
          mp_pipe_deferred_release (&rest);
          g_mutex_lock (&side->mutex);
          continue;
        }

      deliver = side->waiters != NULL ? side->waiters->deliver : NULL;
      deliver_data = deliver != NULL ? side->waiters->deliver_data : NULL;
      g_mutex_unlock (&side->mutex);
      g_clear_pointer (&overflow, g_free);

      /* An entry for a message from another process that could not be decoded takes that
       * message's place, in order, and its share of the budget. */
      if (G_UNLIKELY (mp_message_is_error (message)))
        g_signal_emit (self, signals[SIGNAL_MESSAGE_ERROR], 0, message->error);
      else if (deliver != NULL)
        deliver (message, deliver_data);
      else
        g_signal_emit (self, signals[SIGNAL_MESSAGE], 0, message);
      /* Unless a handler kept it, its node goes back to the side for the peer's next post,
       * under the lock taken for the next message anyway. */
      spare = mp_message_unref_to_node (message);
      budget--;

      g_mutex_lock (&side->mutex);
      if (spare != NULL && !mp_pipe_side_keep_spare_locked (side, spare))
        overflow = spare;   /* freed once unlocked */
    }

  /* Closed, or transferred away (maybe by a handler just now, maybe from another thread,
   * which then woke us for this): the source retires itself, here on its own thread. The
   * port may already hold a new source (a cancelled async post gave the port its side back
   * and it was started again): then that one is the port's and this one just goes. */
  if (side->source != source)
    {
      retiring = TRUE;
      if (self->source == source)
        retired = g_steal_pointer (&self->source);
    }
  /* The posts this dispatch let in are told now, together. */
  mp_pipe_side_wake_deferred_locked (side);
  g_mutex_unlock (&side->mutex);
  g_clear_pointer (&overflow, g_free);

  if (emit_close)
    {
      g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_CLOSED]);
      g_signal_emit (self, signals[SIGNAL_CLOSE], 0);
    }

  if (retired != NULL)
    {
      /* The context is ours only as long as the source is attached to it: forget it now
       * (it is alive while we dispatch it), unless a new start() set another. GLib holds
       * the source through this dispatch; the port goes with its finalize. */
      g_mutex_lock (&side->mutex);
      if (self->source == NULL)
        self->context = NULL;
      g_mutex_unlock (&side->mutex);
      /* Notified here, on the owning thread, for a port that closed. Not for one transferred
       * away (that object emits nothing more) nor when start() set it (start() emits nothing
       * inside the call; its caller knows the context). */
      if (emit_close)
        g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_CONTEXT]);
      g_source_unref (retired);
    }

  return retiring ? G_SOURCE_REMOVE : G_SOURCE_CONTINUE;
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
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;
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
      closed = mp_pipe_side_close_locked (side, TRUE, &deferred);
    }
  g_mutex_unlock (&side->mutex);

  if (closed)
    mp_pipe_side_notify_peer_closed (side);
  mp_pipe_deferred_release (&deferred);
  g_source_unref (source);
}

static void
mp_message_port_finalize (GObject *object)
{
  MpMessagePort *self = MP_MESSAGE_PORT (object);
  MpPipeSide *side = self->side;
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;
  gboolean closed = FALSE;

  /* An inert port (made with g_object_new()) holds nothing. */
  if (mp_pipe_side_is_inert (side))
    {
      G_OBJECT_CLASS (mp_message_port_parent_class)->finalize (object);
      return;
    }

  /* A started port cannot get here while open (its source holds it), so an owner being
   * finalized is unstarted: its side closes and the peer gets "close". */
  g_mutex_lock (&side->mutex);
  g_assert (self->source == NULL);
  if (!is_detached (self))
    closed = mp_pipe_side_close_locked (side, TRUE, &deferred);
  g_mutex_unlock (&side->mutex);

  if (closed)
    mp_pipe_side_notify_peer_closed (side);
  mp_pipe_deferred_release (&deferred);

  mp_pipe_unref (mp_pipe_side_get_pipe (side));

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

    case PROP_HIGH_WATER_MARK:
      g_value_set_uint (value, mp_message_port_get_high_water_mark (self));
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

    case PROP_HIGH_WATER_MARK:
      mp_message_port_set_high_water_mark (self, g_value_get_uint (value));
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
   * MpMessagePort:context: (getter get_context)
   *
   * The context the port delivers on: the thread-default [struct@GLib.MainContext] of
   * the thread that called [method@Mp.MessagePort.start]. %NULL until then, for a port
   * that was transferred away, and once a closed port has emitted
   * [signal@Mp.MessagePort::close] (or its context was finalized). The port does not keep
   * the context alive.
   *
   * "notify::context" is emitted on the owning thread when it turns %NULL as the port
   * closes (after [signal@Mp.MessagePort::close]). It is not emitted by
   * [method@Mp.MessagePort.start], which emits nothing inside the call (its caller knows
   * the context it is on), nor for a port transferred away, which emits nothing more, nor
   * when the context is finalized.
   *
   * Since: 1.0
   */
  properties[PROP_CONTEXT] =
    g_param_spec_boxed ("context", NULL, NULL,
                        G_TYPE_MAIN_CONTEXT,
                        G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * MpMessagePort:closed: (getter is_closed)
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
   * MpMessagePort:priority: (getter get_priority) (setter set_priority)
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

  /**
   * MpMessagePort:high-water-mark: (getter get_high_water_mark) (setter set_high_water_mark)
   *
   * How many messages may be queued at this port before posts towards it made with
   * [method@Mp.MessagePort.post_message_async] wait for room: the number of messages
   * posted by the peer and not yet delivered or received (see
   * [method@Mp.MessagePort.get_n_queued]), at or above which such a post waits. 0, the
   * default, means no limit, as on the Web.
   *
   * [method@Mp.MessagePort.post_message] never waits and never fails for fullness. The
   * mark travels with the port when it is transferred within the process; a port
   * transferred to another process arrives there without one. When the peer is in
   * another process (see [ctor@Mp.MessagePort.new_for_stream_sync]), the mark holds there
   * too: that process learns it, and how many messages this one took, over the stream,
   * and its async posts wait for that room. Set it from any thread; the notification is
   * emitted on the calling thread.
   *
   * Since: 1.0
   */
  properties[PROP_HIGH_WATER_MARK] =
    g_param_spec_uint ("high-water-mark", NULL, NULL,
                       0, G_MAXUINT, 0,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  g_object_class_install_properties (object_class, N_PROPS, properties);

  /**
   * MpMessagePort::message:
   * @self: the port
   * @message: the message
   *
   * Emitted for each message, in the order posted, on the thread iterating the port's
   * context, once [method@Mp.MessagePort.start] was called. One dispatch delivers at most
   * 1024 messages, or the port's [property@Mp.MessagePort:high-water-mark] if it is lower
   * (a [signal@Mp.MessagePort::message-error] counts as one), then yields to the main
   * loop.
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
   * MpMessagePort::message-error:
   * @self: the port
   * @error: what was wrong with the message
   *
   * Emitted, instead of [signal@Mp.MessagePort::message], for a message that arrived from
   * another process but could not be turned back into a valid [struct@GLib.Variant] (the
   * Web's `messageerror`): a type string that is invalid, or data that is not in normal
   * form. @error is in the %G_IO_ERROR domain, %G_IO_ERROR_INVALID_DATA.
   *
   * Like [signal@Mp.MessagePort::message], it is emitted on the thread iterating the port's
   * context, once [method@Mp.MessagePort.start] was called, in order with the messages;
   * later messages still arrive. A port whose peer is in this process never emits it.
   *
   * Since: 1.0
   */
  signals[SIGNAL_MESSAGE_ERROR] =
    g_signal_new ("message-error",
                  G_TYPE_FROM_CLASS (klass),
                  G_SIGNAL_RUN_LAST,
                  0,
                  NULL, NULL,
                  g_cclosure_marshal_VOID__BOXED,
                  G_TYPE_NONE,
                  1,
                  G_TYPE_ERROR);

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
  /* A port made with g_object_new() (Mp.MessagePort() in Python, new Mp.MessagePort() in
   * GJS) stays on the shared inert side: closed, it fails cleanly instead of crashing. A
   * channel or a transfer gives the port its real side right after construction. */
  self->side = mp_pipe_get_inert_side ();
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
  if (!mp_pipe_side_is_inert (side))   /* the inert pipe is never freed: no reference */
    mp_pipe_ref (mp_pipe_side_get_pipe (side));

  return self;
}

/* Before start(), on the thread that will start the port; unset (NULL) on that thread at
 * any time. */
void
mp_message_port_set_sink (MpMessagePort     *self,
                          MpMessagePortSink  sink,
                          gpointer           data)
{
  MpPipeSide *side;

  g_return_if_fail (MP_IS_MESSAGE_PORT (self));

  side = self->side;
  g_mutex_lock (&side->mutex);
  g_warn_if_fail (sink == NULL || !self->started);
  if (side->waiters == NULL && sink != NULL)
    side->waiters = g_new0 (MpPipeWaiters, 1);
  if (side->waiters != NULL)
    {
      side->waiters->deliver = sink;
      side->waiters->deliver_data = data;
    }
  g_mutex_unlock (&side->mutex);
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
      if (port->side == mp_pipe_side_get_peer (self->side))
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
static MpSendResult
post_with_transfer (MpMessagePort        *self,
                    GVariant             *data,
                    MpMessagePort *const *transfer,
                    guint                 n_transfer,
                    MpPostWaiter         *waiter,
                    GCancellable         *cancellable,
                    GError              **error)
{
  g_autofree MpMessagePort **sorted = g_new (MpMessagePort *, n_transfer);
  g_autofree MpPipeSide **locks = g_new (MpPipeSide *, n_transfer + 1);
  MpPipeSide *to = mp_pipe_side_get_peer (self->side);
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;
  g_autofree MpPipeSide **travelling = g_new (MpPipeSide *, n_transfer);
  MpSendResult result = MP_SEND_REFUSED;
  GPtrArray *created;
  MpMessage *message;
  gboolean valid = TRUE;
  gboolean cycle = FALSE;
  gboolean cancelled = FALSE;

  if (!check_transfer_list (self, transfer, n_transfer, sorted, error))
    {
      g_clear_pointer (&data, g_variant_unref);
      return MP_SEND_REFUSED;
    }

  /* Made before locking (no GObject construction under a lock); they stay detached, and so
   * inert if dropped, until the commit below makes them owners. */
  created = g_ptr_array_new_full (n_transfer, g_object_unref);
  for (guint i = 0; i < n_transfer; i++)
    g_ptr_array_add (created, mp_message_port_new_for_side (transfer[i]->side, FALSE));
  message = mp_message_new_take (data, created);
  if (waiter != NULL)
    waiter->message = message;

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
       * before anything changes: result stays MP_SEND_REFUSED. An async post to a closed
       * peer fails (MP_ERROR_CLOSED), and a failed call leaves its transfer list alone. */
      if (valid && waiter != NULL && g_cancellable_is_cancelled (cancellable))
        cancelled = TRUE;   /* before it was queued: nothing changes */
      else if (valid && waiter != NULL && mp_pipe_side_test (to, MP_SIDE_CLOSED))
        result = MP_SEND_DROPPED;
      else if (valid && (mp_pipe_side_test (to, MP_SIDE_CLOSED) ||
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
              if (mp_pipe_side_has_waiters (side))
                mp_pipe_side_fail_waiters_locked (side, transferred_error (), &deferred);
              g_atomic_int_set (&((MpMessagePort *) g_ptr_array_index (created, i))->detached,
                                FALSE);
            }
          result = mp_pipe_side_post_locked (to, message, waiter, &deferred);
        }

      for (guint i = n_transfer + 1; i > 0; i--)
        g_mutex_unlock (&locks[i - 1]->mutex);
    }

  if (cancelled)
    {
      mp_message_drop (message);
      g_propagate_error (error, post_cancelled_error ());
      return MP_SEND_REFUSED;
    }

  if (cycle)
    {
      mp_message_drop (message);
      g_set_error_literal (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                           _("The destination port travels in a message queued at a port of the transfer list: the message could never be received"));
      return MP_SEND_REFUSED;
    }

  if (!valid)
    {
      mp_message_drop (message);
      g_set_error_literal (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                           _("The transfer list contains a port that is closed or was already transferred"));
      return MP_SEND_REFUSED;
    }

  mp_pipe_deferred_release (&deferred);
  if (result != MP_SEND_QUEUED && result != MP_SEND_WAITING)
    mp_message_drop (message);

  if (result == MP_SEND_REFUSED)
    g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                         _("The port is closed"));

  return result;
}

typedef enum {
  POST_FAILED,   /* error set */
  POST_SENT,     /* taken by the relay's sink: done */
  POST_GO_ON,    /* to be queued */
} PostCheck;

/* What every post checks first: @self is usable, and, towards another process, *@data can
 * travel (it is replaced by its normal form, and may leave for the stream at once). */
static PostCheck
post_check (MpMessagePort  *self,
            GVariant      **data,
            guint           n_transfer,
            gboolean        needs_room,
            GError        **error)
{
  if (is_detached (self))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                           _("The port was transferred away"));
      return POST_FAILED;
    }
  if (mp_pipe_side_test (self->side, MP_SIDE_CLOSED_HERE))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                           _("The port is closed"));
      return POST_FAILED;
    }

  /* Towards another process (the peer is a stream's relay, mp-stream.c): a message that
   * cannot travel fails here, with MP_ERROR_DATA_CLONE, rather than being lost later. */
  if (G_UNLIKELY (mp_pipe_side_test (mp_pipe_side_get_peer (self->side), MP_SIDE_REMOTE)))
    {
      GVariant *normal = *data != NULL ? mp_wire_encode_payload (*data, error) : NULL;

      if (*data != NULL && normal == NULL)
        return POST_FAILED;
      /* What travels is the normal form: the relay need not make it again. */
      g_clear_pointer (data, g_variant_unref);
      *data = normal;
      /* Nothing ahead of it at the relay: it goes to the stream from this thread. */
      if (n_transfer == 0 && mp_pipe_side_send_to_sink (self->side, *data, needs_room))
        return POST_SENT;
    }

  return POST_GO_ON;
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
 * Posting on a port that its own code closed (or whose context was finalized), or that
 * was transferred away, fails with %MP_ERROR_INVALID_STATE: that is misuse. Posting on a
 * port whose peer closed succeeds and drops the message, before and after @self reaches
 * the peer's close (when it turns closed itself): a worker cannot know when that happens,
 * so a user's Cancel never becomes an error in the worker. Check
 * [method@Mp.MessagePort.is_peer_closed] to stop early. A transfer list holding %NULL, something that is not a port,
 * @self, its peer, the same port twice, or a port that is closed or transferred away fails
 * with %MP_ERROR_DATA_CLONE, and then nothing changes: every listed port stays usable.
 * So does a transfer that would make a cycle: when the peer of @self itself travels in a
 * message queued at a listed port (directly, or inside a port travelling in a message
 * queued there, and so on), the message would end up inside its own cargo, where nothing
 * could ever receive it.
 * If the peer is closed, the message is dropped and the call succeeds (its ports close).
 *
 * When the peer is a port of another process (see
 * [ctor@Mp.MessagePort.new_for_stream_sync]), a message that cannot travel fails here with
 * %MP_ERROR_DATA_CLONE and nothing is posted: one whose type holds a handle (`h`), whose
 * serialized data takes more than 8 MiB, whose type string is longer than 255 bytes, or
 * that is nested too deeply for the other side to accept (the limits of `docs/wire.md`).
 *
 * Returns: %TRUE if the message was posted (or dropped because the peer is closed), %FALSE
 *   with @error set otherwise
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

  switch (post_check (self, &data, n_transfer, FALSE, error))
    {
    case POST_FAILED:
      return FALSE;
    case POST_SENT:
      return TRUE;
    case POST_GO_ON:
      break;
    }

  if (n_transfer > 0)
    return post_with_transfer (self, g_steal_pointer (&data), transfer, n_transfer, NULL,
                               NULL, error) != MP_SEND_REFUSED;

  if (!mp_pipe_side_send_data (self->side, g_steal_pointer (&data)))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                           _("The port is closed"));
      return FALSE;
    }

  return TRUE;
}

/**
 * mp_message_port_post:
 * @self: a port
 * @message: (nullable): the payload; a floating reference is sunk
 * @error: return location for a #GError
 *
 * Posts @message to the peer of @self with no transfer list: the one-argument form of
 * [method@Mp.MessagePort.post_message] (`port.post(v)` in GJS and Python, which have no
 * optional arguments). Callable from any thread; it never emits a signal.
 *
 * Like [method@Mp.MessagePort.post_message], it fails with %MP_ERROR_INVALID_STATE on a
 * port its own code closed or that was transferred away, and succeeds (dropping the
 * message) when the peer is closed.
 *
 * Returns: %TRUE if the message was posted (or dropped because the peer is closed), %FALSE
 *   with @error set otherwise
 *
 * Since: 1.0
 */
gboolean
mp_message_port_post (MpMessagePort  *self,
                      GVariant       *message,
                      GError        **error)
{
  return mp_message_port_post_message (self, message, NULL, 0, error);
}

/* An async post that waits for room at its destination (see mp-pipe.c, "Flow control"): a
 * source on the poster's context, woken once the post went into the inbox or failed, whose
 * dispatch completes the task. Owned by its context from the moment it is attached; its
 * destroy-notify takes it out of the destination's queue if it is still there (its context
 * was finalized: the post stays, as a sync post would, with nobody to tell). */
typedef struct
{
  MpWakeableSource parent;
  MpPostWaiter head;          /* head.source == this source */
  /* The side the post waits at; alive as long as the task, which holds the port. */
  MpPipeSide *to;
  GTask *task;                /* strong until the dispatch completes it */
  /* The transfer-list objects (strong), in the order of the message's ports, or NULL: a
   * cancelled post gives them their sides back. */
  GPtrArray *transfer;
  GCancellable *cancellable;  /* strong, or NULL */
  gulong cancelled_id;
} MpPortPost;

static gboolean
port_post_dispatch (GSource     *source,
                    GSourceFunc  callback,
                    gpointer     user_data)
{
  MpPortPost *post = (MpPortPost *) source;
  g_autoptr(GTask) task = NULL;
  GError *error;

  mp_wakeable_source_set_pending (source, FALSE);

  /* No lock: the source is woken once, after the waiter left the queue with its result
   * (mp-pipe.c), and the check that found it ready read the flag that wake set. */
  if (g_atomic_int_get (&post->head.queued) || post->task == NULL)
    return G_SOURCE_CONTINUE;
  error = g_atomic_pointer_exchange (&post->head.error, NULL);
  task = g_steal_pointer (&post->task);

  /* Later than the task was made, on its context: GTask calls back at once. */
  if (error != NULL)
    g_task_return_error (task, error);
  else
    g_task_return_boolean (task, TRUE);

  return G_SOURCE_REMOVE;
}

static void
port_post_finalize (GSource *source)
{
  mp_wakeable_source_finalize (source);
}

static GSourceFuncs port_post_funcs = {
  .prepare = mp_wakeable_source_prepare,
  .check = mp_wakeable_source_check,
  .dispatch = port_post_dispatch,
  .finalize = port_post_finalize,
};

/* After the dispatch, or when the context is finalized first. */
static void
port_post_destroyed (gpointer data)
{
  MpPortPost *post = data;
  MpPipeSide *to = post->to;

  /* Dispatched (the task is gone): the waiter left the queue and was woken, and nothing
   * else touches it. Otherwise its context is being finalized, maybe while another thread
   * resolves it: under the lock, it leaves the queue or has its result. */
  if (post->task != NULL)
    {
      g_mutex_lock (&to->mutex);
      mp_pipe_side_forget_waiter_locked (to, &post->head);
      g_mutex_unlock (&to->mutex);
    }
  g_clear_error (&post->head.error);

  /* Never inside a handler of this cancellable on this thread: it waits out a handler
   * running on another thread, which may use the waiter. */
  if (post->cancelled_id != 0)
    g_cancellable_disconnect (post->cancellable, post->cancelled_id);
  g_clear_object (&post->cancellable);
  g_clear_pointer (&post->transfer, g_ptr_array_unref);
  g_clear_object (&post->task);   /* may finalize the port, and so the side */
}

/* Runs in the thread that cancels, inside g_cancellable_cancel() (or in the poster, for a
 * cancellable cancelled while it queued the post). A post still waiting is withdrawn and
 * fails with G_IO_ERROR_CANCELLED; its transfer list gets its sides back. One that already
 * went into the inbox stays posted. */
static void
port_post_cancelled (GCancellable *cancellable,
                     gpointer      data)
{
  MpPortPost *post = data;
  guint n = post->transfer != NULL ? post->transfer->len : 0;
  g_autofree MpPipeSide **locks = g_new (MpPipeSide *, n + 1);
  guint n_locks = 0;
  MpMessage *message;

  for (guint i = 0; i < n; i++)
    locks[i] = ((MpMessagePort *) g_ptr_array_index (post->transfer, i))->side;
  locks[n] = post->to;
  qsort (locks, n + 1, sizeof (MpPipeSide *), compare_sides);
  /* A post refused for its transfer list (a port listed twice, the destination listed)
   * stays connected until its result is dispatched: a side may come twice. Each is locked
   * once. */
  for (guint i = 0; i <= n; i++)
    if (n_locks == 0 || locks[n_locks - 1] != locks[i])
      locks[n_locks++] = locks[i];

  for (guint i = 0; i < n_locks; i++)
    g_mutex_lock (&locks[i]->mutex);

  message = mp_pipe_side_withdraw_locked (post->to, &post->head, post_cancelled_error ());
  /* The objects made for the transfer were never seen: the listed ones own their sides
   * again, unstarted (their sources retired when the post detached them). */
  for (guint i = 0; message != NULL && i < n; i++)
    {
      MpMessagePort *listed = g_ptr_array_index (post->transfer, i);
      MpMessagePort *made = g_ptr_array_index (message->ports, i);

      g_assert (made->side == listed->side);
      g_atomic_int_set (&made->detached, TRUE);
      g_atomic_int_set (&listed->detached, FALSE);
      listed->started = FALSE;
    }

  for (guint i = n_locks; i > 0; i--)
    g_mutex_unlock (&locks[i - 1]->mutex);

  if (message != NULL)
    mp_message_drop (message);
}

/* Never called: the dispatch does not use the callback slot, which only carries the
 * destroy-notify. */
static gboolean
port_post_unused_callback (gpointer user_data)
{
  g_assert_not_reached ();
  return G_SOURCE_REMOVE;
}

/* A waiter for @task's post (not queued), attached to the task's context, which is the
 * calling thread's thread-default one. The caller holds one reference on the source. */
static MpPortPost *
port_post_new (MpMessagePort        *self,
               GTask                *task)
{
  GSource *source = mp_wakeable_source_new (&port_post_funcs, sizeof (MpPortPost),
                                            g_task_get_context (task));
  MpPortPost *post = (MpPortPost *) source;

  post->head.link.data = &post->head;
  post->head.source = source;
  post->to = mp_pipe_side_get_peer (self->side);
  post->task = g_object_ref (task);
  g_source_set_static_name (source, "MpMessagePort post");
  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_callback (source, port_post_unused_callback, post, port_post_destroyed);
  g_source_attach (source, g_task_get_context (task));

  return post;
}

/* Watches @cancellable for @post, before it is queued with the ports of @transfer: a cancel
 * then withdraws it and gives them back. A handler run before the post is queued finds
 * nothing to withdraw; the post checks the cancellable as it is queued. */
static void
port_post_watch (MpPortPost           *post,
                 MpMessagePort *const *transfer,
                 guint                 n_transfer,
                 GCancellable         *cancellable)
{
  gboolean all_ports = TRUE;

  if (cancellable == NULL)
    return;

  /* A list with something else than ports fails before anything is queued. */
  for (guint i = 0; i < n_transfer; i++)
    all_ports = all_ports && MP_IS_MESSAGE_PORT (transfer[i]);
  if (n_transfer > 0 && all_ports)
    {
      post->transfer = g_ptr_array_new_full (n_transfer, g_object_unref);
      for (guint i = 0; i < n_transfer; i++)
        g_ptr_array_add (post->transfer, g_object_ref (transfer[i]));
    }

  post->cancellable = g_object_ref (cancellable);
  post->cancelled_id = g_cancellable_connect (cancellable, G_CALLBACK (port_post_cancelled),
                                              post, NULL);
}

/**
 * mp_message_port_post_message_async:
 * @self: a port
 * @message: (nullable): the payload; a floating reference is sunk
 * @transfer: (array length=n_transfer) (nullable): ports to transfer with the message
 * @n_transfer: the number of ports in @transfer
 * @cancellable: (nullable): a #GCancellable, or %NULL
 * @callback: (scope async): called once the message is queued at the peer, or the post
 *   failed
 * @user_data: (closure callback): data for @callback
 *
 * Posts @message to the peer of @self like [method@Mp.MessagePort.post_message], but waits
 * for room when the peer has a [property@Mp.MessagePort:high-water-mark]: the message is
 * queued at once if the peer holds fewer messages than its mark and no earlier post waits;
 * otherwise it waits, in order behind the posts that already wait (from any thread), and is
 * queued as soon as the peer's receiver takes a message out. @callback runs on the calling
 * thread's thread-default [struct@GLib.MainContext] once the message is queued (or the post
 * failed), never inside this call; call [method@Mp.MessagePort.post_message_finish] there.
 * When the room was made by the peer's dispatch (its [signal@Mp.MessagePort::message]
 * emissions), the callbacks of the posts it let in are scheduled when that dispatch ends,
 * all at once — or as soon as the peer's side takes a message in another way
 * ([method@Mp.MessagePort.receive] and the like, from a handler say), waits for one, or
 * closes: a producer is woken once per dispatch of its consumer, not once per message. A
 * handler that blocks waiting for the producer by other means (a condition variable, a
 * sleep, a receive on another port, a nested main loop) waits for a word that only its
 * return gives: do not block in handlers.
 *
 * Callable from any thread that iterates its thread-default context. Order: the posts of
 * @self, sync and async, are delivered in the order they were made: a
 * [method@Mp.MessagePort.post_message] made while async posts wait queues behind them
 * (without waiting itself).
 *
 * The transfer list is checked and its ports are detached at once, as by
 * [method@Mp.MessagePort.post_message]. Cancelling @cancellable while the post waits
 * withdraws this message, and only it: the post fails with %G_IO_ERROR_CANCELLED and the
 * ports of its transfer list belong to their objects again, open and unstarted (a started
 * one must be started again), with every message that reached them meanwhile. Cancelling
 * once the message is queued changes nothing: the post succeeds.
 *
 * Since: 1.0
 */
void
mp_message_port_post_message_async (MpMessagePort        *self,
                                    GVariant             *message,
                                    MpMessagePort *const *transfer,
                                    guint                 n_transfer,
                                    GCancellable         *cancellable,
                                    GAsyncReadyCallback   callback,
                                    gpointer              user_data)
{
  g_autoptr(GVariant) data = message != NULL ? g_variant_ref_sink (message) : NULL;
  g_autoptr(GTask) task = NULL;
  GError *error = NULL;
  MpPipeSide *to;
  MpPortPost *post;
  MpSendResult result;

  g_return_if_fail (MP_IS_MESSAGE_PORT (self));
  g_return_if_fail (transfer != NULL || n_transfer == 0);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, mp_message_port_post_message_async);
  /* Once queued, a post succeeds whatever the cancellable says. */
  g_task_set_check_cancellable (task, FALSE);

  if (g_cancellable_is_cancelled (cancellable))
    {
      g_task_return_error (task, post_cancelled_error ());
      return;
    }

  switch (post_check (self, &data, n_transfer, TRUE, &error))
    {
    case POST_FAILED:
      g_task_return_error (task, error);
      return;
    case POST_SENT:
      g_task_return_boolean (task, TRUE);
      return;
    case POST_GO_ON:
      break;
    }

  to = mp_pipe_side_get_peer (self->side);
  if (n_transfer == 0)
    {
      MpMessage *queued = mp_message_new_take (g_steal_pointer (&data), NULL);
      MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;

      /* Room (the common case): queued at once, with no waiter made. While posts wait
       * (a hint, read unlocked), this one most likely waits too: make its waiter first. */
      result = MP_SEND_WAITING;
      if (!mp_pipe_side_test (to, MP_SIDE_POSTS_WAIT))
        {
          g_mutex_lock (&to->mutex);
          if (mp_pipe_side_has_room_locked (to))
            result = mp_pipe_side_send_locked (to, queued, &deferred);
          g_mutex_unlock (&to->mutex);
          mp_pipe_deferred_release (&deferred);
        }

      if (result != MP_SEND_WAITING)
        {
          if (result != MP_SEND_QUEUED)
            mp_message_drop (queued);
          if (result == MP_SEND_REFUSED)
            g_task_return_error (task, g_error_new_literal (MP_ERROR, MP_ERROR_INVALID_STATE,
                                                            _("The port is closed")));
          else if (result == MP_SEND_DROPPED)
            g_task_return_error (task, peer_closed_error ());
          else
            g_task_return_boolean (task, TRUE);
          return;
        }

      post = port_post_new (self, task);
      post->head.message = queued;
      port_post_watch (post, NULL, 0, cancellable);
      g_mutex_lock (&to->mutex);
      /* Cancelled before it could be queued (the handler, connected above, found nothing
       * to withdraw): it is not queued. */
      if (g_cancellable_is_cancelled (cancellable))
        {
          result = MP_SEND_REFUSED;
          error = post_cancelled_error ();
        }
      else
        result = mp_pipe_side_post_locked (to, queued, &post->head, &deferred);
      g_mutex_unlock (&to->mutex);
      mp_pipe_deferred_release (&deferred);
      if (result != MP_SEND_QUEUED && result != MP_SEND_WAITING)
        mp_message_drop (queued);
    }
  else
    {
      post = port_post_new (self, task);
      port_post_watch (post, transfer, n_transfer, cancellable);
      result = post_with_transfer (self, g_steal_pointer (&data), transfer, n_transfer,
                                   &post->head, cancellable, &error);
    }

  /* Once queued, the post belongs to its waiter: another thread iterating the task's
   * context may complete and free it (but for our reference) at any time. */
  if (result != MP_SEND_WAITING)
    {
      /* Not queued: the source delivers the result at once. */
      g_mutex_lock (&to->mutex);
      if (result == MP_SEND_REFUSED && error == NULL)
        error = g_error_new_literal (MP_ERROR, MP_ERROR_INVALID_STATE, _("The port is closed"));
      else if (result == MP_SEND_DROPPED)
        error = peer_closed_error ();
      g_atomic_pointer_set (&post->head.error, g_steal_pointer (&error));
      mp_wakeable_source_wake_last (post->head.source);
      g_mutex_unlock (&to->mutex);
    }

  g_source_unref ((GSource *) post);
}

/**
 * mp_message_port_post_message_finish:
 * @self: a port
 * @result: the result passed to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Mp.MessagePort.post_message_async]. Call it from the callback, on the
 * thread that made the post. It fails with
 * %MP_ERROR_INVALID_STATE if @self was closed by its own code (when the post was made, or
 * while it waited: the message is then dropped) or had been transferred away when the post
 * was made (a post that waits when @self is transferred stays, and completes), with
 * %MP_ERROR_DATA_CLONE for a transfer list or a message that
 * [method@Mp.MessagePort.post_message] would refuse, with %MP_ERROR_CLOSED if the peer
 * closed while the post waited for room (room will never come; the message is dropped),
 * and with %G_IO_ERROR_CANCELLED if it was cancelled before it was queued. A post made
 * when the peer is already closed fails with %MP_ERROR_CLOSED too, and drops the message
 * (its transfer list stays with the caller, usable):
 * unlike [method@Mp.MessagePort.post_message], which succeeds then, an async post tells a
 * producer loop that nobody will take what it posts.
 *
 * Returns: %TRUE if the message was queued at the peer, %FALSE with @error set otherwise
 *
 * Since: 1.0
 */
gboolean
mp_message_port_post_message_finish (MpMessagePort  *self,
                                     GAsyncResult   *result,
                                     GError        **error)
{
  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), FALSE);
  g_return_val_if_fail (g_task_is_valid (result, self), FALSE);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) ==
                        mp_message_port_post_message_async, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  return g_task_propagate_boolean (G_TASK (result), error);
}

/**
 * mp_message_port_get_high_water_mark: (get-property high-water-mark)
 * @self: a port
 *
 * Gets the [property@Mp.MessagePort:high-water-mark] of @self. Callable from any thread.
 *
 * Returns: the mark, or 0 for none (and for a port transferred away)
 *
 * Since: 1.0
 */
guint
mp_message_port_get_high_water_mark (MpMessagePort *self)
{
  MpPipeSide *side;
  guint mark;

  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), 0);

  side = self->side;
  g_mutex_lock (&side->mutex);
  mark = is_detached (self) ? 0 : mp_pipe_side_get_high_water_mark_locked (side);
  g_mutex_unlock (&side->mutex);

  return mark;
}

/**
 * mp_message_port_set_high_water_mark: (set-property high-water-mark)
 * @self: a port
 * @mark: the new mark, or 0 for none
 *
 * Sets the [property@Mp.MessagePort:high-water-mark] of @self. Posts that wait go in at once
 * as far as a raised mark allows (all of them with 0); with a lowered one, new async posts
 * wait until the queue is below it. Callable from any thread; "notify::high-water-mark" is
 * emitted on the calling thread. Does nothing on a port that was transferred away or made
 * without a channel.
 *
 * Since: 1.0
 */
void
mp_message_port_set_high_water_mark (MpMessagePort *self,
                                     guint          mark)
{
  MpPipeSide *side;
  gboolean changed = FALSE;

  g_return_if_fail (MP_IS_MESSAGE_PORT (self));

  side = self->side;
  if (mp_pipe_side_is_inert (side))
    return;

  g_mutex_lock (&side->mutex);
  if (!is_detached (self) && mp_pipe_side_get_high_water_mark_locked (side) != mark)
    {
      mp_pipe_side_set_high_water_mark_locked (side, mark);
      changed = TRUE;
    }
  g_mutex_unlock (&side->mutex);

  if (changed)
    g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_HIGH_WATER_MARK]);
}

/**
 * mp_message_port_get_n_queued:
 * @self: a port
 *
 * Counts the messages queued at @self: posted by its peer and not yet delivered or received
 * (the message a [signal@Mp.MessagePort::message] handler is running for is no longer
 * queued). Posts that wait for room (see [property@Mp.MessagePort:high-water-mark]) are not
 * counted. Callable from any thread; by the time it returns, other threads may have changed
 * it.
 *
 * Returns: the number of queued messages; 0 for a closed port or one transferred away
 *
 * Since: 1.0
 */
guint
mp_message_port_get_n_queued (MpMessagePort *self)
{
  MpPipeSide *side;
  guint n = 0;

  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), 0);

  side = self->side;
  g_mutex_lock (&side->mutex);
  if (!is_detached (self))
    {
      mp_pipe_side_flush_lane_locked (side);
      n = side->inbox.length;
      /* The peer's close marker, if queued, is last. */
      if (n > 0 && mp_message_is_close_marker (side->inbox.tail->data))
        n--;
    }
  g_mutex_unlock (&side->mutex);

  return n;
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
  GSource *old_source = NULL;
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
      /* A source from before a cancelled async post took the side away and gave it back
       * may not have retired yet: it will, on its own (side->source is not it); the port
       * drops its reference. */
      old_source = g_steal_pointer (&self->source);
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
  if (old_source != NULL)
    g_source_unref (old_source);

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
 * on succeeds and drops the message. Pending receives on @self fail with %MP_ERROR_CLOSED;
 * posting on @self from now on fails with %MP_ERROR_INVALID_STATE.
 *
 * Since: 1.0
 */
void
mp_message_port_close (MpMessagePort *self)
{
  MpPipeSide *side;
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;
  gboolean closed = FALSE;

  g_return_if_fail (MP_IS_MESSAGE_PORT (self));

  side = self->side;
  g_mutex_lock (&side->mutex);
  if (!is_detached (self))
    closed = mp_pipe_side_close_locked (side, TRUE, &deferred);
  g_mutex_unlock (&side->mutex);

  if (closed)
    mp_pipe_side_notify_peer_closed (side);
  mp_pipe_deferred_release (&deferred);
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
 * A message that arrived from another process but could not be decoded is skipped: this
 * call drops it and returns the next message, or %NULL. It has no error to report it
 * with; use [method@Mp.MessagePort.receive_timeout] with a zero timeout, or the
 * [signal@Mp.MessagePort::message-error] signal, to see such messages.
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
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;
  GQueue skipped = G_QUEUE_INIT;
  MpMessage *message = NULL;

  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), NULL);

  side = self->side;
  g_mutex_lock (&side->mutex);
  if (!is_detached (self) && !mp_pipe_side_test (side, MP_SIDE_CLOSED))
    while ((message = mp_pipe_side_pop_locked (side)) != NULL)
      {
        if (mp_message_is_close_marker (message))
          {
            mp_pipe_side_reach_peer_close_locked (side, message, &deferred);
            message = NULL;
            break;
          }
        if (G_LIKELY (!mp_message_is_error (message)))
          break;
        /* An error entry, which we have no GError to report in: dropped, once unlocked.
         * Not in deferred.messages, which a close reached next takes over whole. */
        g_queue_push_tail_link (&skipped, &message->link);
      }
  g_mutex_unlock (&side->mutex);

  mp_message_queue_drop (&skipped);
  mp_pipe_deferred_release (&deferred);

  return message;
}

/**
 * mp_message_port_get_context: (get-property context)
 * @self: a port
 *
 * Gets the context @self delivers on. Call it from the thread that owns that context
 * (it may be finalized once the port closes); from other threads use
 * [method@Mp.MessagePort.dup_context].
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
 * mp_message_port_dup_context:
 * @self: a port
 *
 * Gets the context @self delivers on, with a reference of the caller's, so that it stays
 * valid whatever the owning thread does meanwhile. Callable from any thread.
 *
 * Returns: (transfer full) (nullable): the context given by
 *   [method@Mp.MessagePort.start], or %NULL if the port was not started, was
 *   transferred away, or closed and has emitted [signal@Mp.MessagePort::close]
 *
 * Since: 1.0
 */
GMainContext *
mp_message_port_dup_context (MpMessagePort *self)
{
  GMainContext *context = NULL;

  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), NULL);

  /* self->context is cleared, under this lock, before the source that keeps the context
   * alive goes (its dispatch, or the context's finalization that runs the source's
   * destroy-notify, takes this lock first), so a context read here is still alive. */
  g_mutex_lock (&self->side->mutex);
  if (self->context != NULL)
    context = g_main_context_ref (self->context);
  g_mutex_unlock (&self->side->mutex);

  return context;
}

/**
 * mp_message_port_is_closed: (get-property closed)
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
 * mp_message_port_is_peer_closed:
 * @self: a port
 *
 * Whether the other port of the channel is gone: closed by its code, finalized unstarted,
 * or closed with its context. From then on nothing posted on @self can arrive (posts
 * succeed and are dropped), while messages the peer posted before closing may still be
 * queued at @self. Callable from any thread; it takes no lock, so a busy worker can check
 * it before each unit of work and stop when the other side was cancelled:
 *
 * ```c
 * while (!mp_message_port_is_peer_closed (port) && have_work ())
 *   mp_message_port_post (port, do_one_unit (), NULL);
 * ```
 *
 * Also %TRUE for a port that was transferred away (it has no peer any more) and for a
 * port made with g_object_new() (it never had one).
 *
 * Returns: %TRUE if the peer is closed
 *
 * Since: 1.0
 */
gboolean
mp_message_port_is_peer_closed (MpMessagePort *self)
{
  MpPipeSide *side;

  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), TRUE);

  side = self->side;
  return is_detached (self) ||
         mp_pipe_side_test (side, MP_SIDE_PEER_CLOSED) ||
         mp_pipe_side_test (mp_pipe_side_get_peer (side), MP_SIDE_CLOSED);
}

/**
 * mp_message_port_get_priority: (get-property priority)
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
 * mp_message_port_set_priority: (set-property priority)
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

/* What a receive finds on arrival, with the side lock held: TRUE if that decides it (then
 * *message or *error is set), FALSE if it must wait for the next post. */
static gboolean
receive_now_locked (MpMessagePort   *self,
                    GCancellable    *cancellable,
                    MpMessage      **message,
                    GError         **error,
                    MpPipeDeferred  *deferred)
{
  MpPipeSide *side = self->side;
  MpMessage *first;

  if (g_cancellable_is_cancelled (cancellable))
    *error = mp_receive_cancelled_error ();
  else if (is_detached (self))
    *error = transferred_error ();
  else if (mp_pipe_side_test (side, MP_SIDE_CLOSED_HERE))
    *error = g_error_new_literal (MP_ERROR, MP_ERROR_INVALID_STATE, _("The port is closed"));
  else if (mp_pipe_side_test (side, MP_SIDE_CLOSED))
    *error = mp_receive_closed_error (FALSE);
  else if ((first = mp_pipe_side_pop_locked (side)) != NULL)
    {
      if (mp_message_is_close_marker (first))
        {
          mp_pipe_side_reach_peer_close_locked (side, first, deferred);
          *error = mp_receive_closed_error (FALSE);
        }
      else
        mp_pipe_entry_take_result (first, message, error, deferred);
    }
  else
    return FALSE;

  return TRUE;
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
 * them; pending receives are served before the signal, oldest first, and the callbacks of
 * one thread's receives run in the order their messages were taken, even when a receive
 * is cancelled after it was served (it keeps its message).
 *
 * It fails with %MP_ERROR_CLOSED at the end of the stream: the other port closed and
 * everything it posted before was taken, or @self was closed while the receive waited. It
 * fails with %MP_ERROR_INVALID_STATE when called on a port its own code closed, and when
 * the port is or becomes transferred away; with %G_IO_ERROR_CANCELLED when @cancellable is
 * cancelled first (before or while it waits; a cancelled receive takes no message). It
 * fails with %G_IO_ERROR_INVALID_DATA when what it takes, in the message's place, is a
 * message that arrived from another process but could not be decoded (see
 * [signal@Mp.MessagePort::message-error]); the next receive goes on with the next message.
 *
 * The pending call holds a reference on the calling thread's context and on @self until
 * @callback has run: keep iterating that context (or cancel and then iterate) before
 * dropping it.
 *
 * Since: 1.0
 */
void
mp_message_port_receive_async (MpMessagePort       *self,
                               GCancellable        *cancellable,
                               GAsyncReadyCallback  callback,
                               gpointer             user_data)
{
  MpPipeSide *side;
  MpReceiveWaiter *waiter;
  MpMessage *message = NULL;
  GError *error = NULL;
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;

  g_return_if_fail (MP_IS_MESSAGE_PORT (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  side = self->side;
  waiter = mp_receive_waiter_new_async (side, self, mp_message_port_receive_async,
                                        cancellable, callback, user_data);

  /* Once queued, the waiter belongs to the side: a post, a close or a cancel resolves it,
   * maybe already on another thread. */
  g_mutex_lock (&side->mutex);
  if (receive_now_locked (self, cancellable, &message, &error, &deferred))
    mp_receive_waiter_resolve_locked (waiter, message, error, &deferred);
  else
    mp_pipe_side_enqueue_waiter_locked (side, waiter);
  g_mutex_unlock (&side->mutex);

  mp_pipe_deferred_release (&deferred);
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
 * Fails with %MP_ERROR_CLOSED at the end of the stream (the other port closed and
 * everything it posted was taken, or @self was closed while the receive waited), with
 * %MP_ERROR_INVALID_STATE if the receive was made on a port its own code had closed or the
 * port was transferred away, with %G_IO_ERROR_CANCELLED if the cancellable was
 * cancelled first, and with %G_IO_ERROR_INVALID_DATA if it took a message that arrived
 * from another process but could not be decoded (the next receive goes on with the next
 * message).
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
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == mp_message_port_receive_async,
                        NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}

/**
 * mp_message_port_receive_timeout:
 * @self: a port
 * @timeout_us: how long to wait at most, in microseconds: 0 does not wait, -1 waits
 *   without limit
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Takes the next message of @self, waiting up to @timeout_us for one to be posted: a
 * blocking receive for a worker thread that runs no main loop (like
 * g_async_queue_timeout_pop() or GStreamer's gst_bus_timed_pop()). Callable from any
 * thread, started or not; never call it on the thread that iterates the context of the
 * port's peer, which would then never post. It emits nothing.
 *
 * It shares one queue with [method@Mp.MessagePort.receive],
 * [method@Mp.MessagePort.receive_async] and the [signal@Mp.MessagePort::message]
 * delivery, oldest receive first, so each message goes to exactly one of them.
 *
 * When the time runs out it returns %NULL without an error. It fails with the errors of
 * [method@Mp.MessagePort.receive_async]: %MP_ERROR_CLOSED at the end of the stream,
 * %MP_ERROR_INVALID_STATE on a port its own code closed or that is (or becomes)
 * transferred away, %G_IO_ERROR_CANCELLED when @cancellable is cancelled before a message
 * arrives, %G_IO_ERROR_INVALID_DATA when it takes a message that arrived from another
 * process but could not be decoded (the next call goes on with the next message). With a
 * zero timeout it is the way to see such a message without a main loop:
 * [method@Mp.MessagePort.receive] skips them.
 *
 * ```c
 * for (;;)
 *   {
 *     g_autoptr(GError) error = NULL;
 *     g_autoptr(MpMessage) message = mp_message_port_receive_timeout (port, G_USEC_PER_SEC,
 *                                                                     cancellable, &error);
 *     if (message != NULL)
 *       handle (message);
 *     else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA))
 *       g_warning ("%s", error->message);   // one bad message from another process
 *     else if (error != NULL)
 *       break;   // MP_ERROR_CLOSED: the other end is done; or cancelled
 *     else
 *       do_idle_work ();   // a second went by
 *   }
 * ```
 *
 * Returns: (transfer full) (nullable): the message, or %NULL if none came in time or on
 *   error
 *
 * Since: 1.0
 */
MpMessage *
mp_message_port_receive_timeout (MpMessagePort  *self,
                                 gint64          timeout_us,
                                 GCancellable   *cancellable,
                                 GError        **error)
{
  MpPipeSide *side;
  MpReceiveWaiter waiter;
  GCond cond;
  MpMessage *message = NULL;
  GError *failure = NULL;
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;
  gint64 end_time = -1;

  g_return_val_if_fail (MP_IS_MESSAGE_PORT (self), NULL);
  g_return_val_if_fail (timeout_us >= -1, NULL);
  g_return_val_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  side = self->side;
  if (timeout_us > 0)
    {
      gint64 now = g_get_monotonic_time ();

      /* A timeout past the end of time is no timeout (and no signed overflow). */
      end_time = timeout_us <= G_MAXINT64 - now ? now + timeout_us : -1;
    }

  g_cond_init (&cond);
  mp_receive_waiter_init_sync (&waiter, side, &cond, cancellable);

  g_mutex_lock (&side->mutex);
  if (!receive_now_locked (self, cancellable, &message, &failure, &deferred) && timeout_us != 0)
    {
      mp_pipe_side_enqueue_waiter_locked (side, &waiter);
      mp_receive_waiter_wait_locked (&waiter, end_time);
      message = g_steal_pointer (&waiter.message);
      failure = g_steal_pointer (&waiter.error);
    }
  g_mutex_unlock (&side->mutex);

  mp_receive_waiter_clear_sync (&waiter);
  g_cond_clear (&cond);
  mp_pipe_deferred_release (&deferred);

  if (failure != NULL)
    g_propagate_error (error, failure);

  return message;
}
