/* mp-message-channel.c: a pair of entangled message ports
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include "mp-message-channel.h"
#include "mp-message-port-private.h"

/**
 * MpMessageChannel:
 *
 * A pair of entangled [class@Mp.MessagePort]s, like the Web's `MessageChannel`: what is
 * posted on [property@Mp.MessageChannel:port1] is delivered at
 * [property@Mp.MessageChannel:port2] and the other way round.
 *
 * Hand one port to another thread (or transfer it in a message) and keep the other:
 *
 * ```c
 * g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
 * MpMessagePort *mine = mp_message_channel_get_port1 (channel);
 * MpMessagePort *theirs = mp_message_channel_get_port2 (channel);
 * ```
 *
 * The channel holds a reference on both ports; it is otherwise only a constructor, and may
 * be released at any time. A port that is not started and is finalized closes, and its peer
 * gets [signal@Mp.MessagePort::close]. Callable from any thread.
 *
 * Since: 1.0
 */

struct _MpMessageChannel
{
  GObject parent_instance;

  /* Immutable after construction. */
  MpMessagePort *port1;
  MpMessagePort *port2;
};

G_DEFINE_FINAL_TYPE (MpMessageChannel, mp_message_channel, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_PORT1,
  PROP_PORT2,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

static void
mp_message_channel_dispose (GObject *object)
{
  MpMessageChannel *self = MP_MESSAGE_CHANNEL (object);

  g_clear_object (&self->port1);
  g_clear_object (&self->port2);

  G_OBJECT_CLASS (mp_message_channel_parent_class)->dispose (object);
}

static void
mp_message_channel_get_property (GObject    *object,
                                 guint       prop_id,
                                 GValue     *value,
                                 GParamSpec *pspec)
{
  MpMessageChannel *self = MP_MESSAGE_CHANNEL (object);

  switch (prop_id)
    {
    case PROP_PORT1:
      g_value_set_object (value, self->port1);
      break;

    case PROP_PORT2:
      g_value_set_object (value, self->port2);
      break;

    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
mp_message_channel_class_init (MpMessageChannelClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = mp_message_channel_dispose;
  object_class->get_property = mp_message_channel_get_property;

  /**
   * MpMessageChannel:port1:
   *
   * The first port; what is posted on it arrives at [property@Mp.MessageChannel:port2].
   *
   * Since: 1.0
   */
  properties[PROP_PORT1] =
    g_param_spec_object ("port1", NULL, NULL,
                         MP_TYPE_MESSAGE_PORT,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);

  /**
   * MpMessageChannel:port2:
   *
   * The second port; what is posted on it arrives at [property@Mp.MessageChannel:port1].
   *
   * Since: 1.0
   */
  properties[PROP_PORT2] =
    g_param_spec_object ("port2", NULL, NULL,
                         MP_TYPE_MESSAGE_PORT,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);

  g_object_class_install_properties (object_class, N_PROPS, properties);
}

static void
mp_message_channel_init (MpMessageChannel *self)
{
  MpPipe *pipe = mp_pipe_new ();

  self->port1 = mp_message_port_new_for_side (&pipe->sides[0], TRUE);
  self->port2 = mp_message_port_new_for_side (&pipe->sides[1], TRUE);

  mp_pipe_unref (pipe);
}

/**
 * mp_message_channel_new:
 *
 * Creates a channel: two new entangled ports, not started. Callable from any thread.
 *
 * Returns: (transfer full): a new channel
 *
 * Since: 1.0
 */
MpMessageChannel *
mp_message_channel_new (void)
{
  return g_object_new (MP_TYPE_MESSAGE_CHANNEL, NULL);
}

/**
 * mp_message_channel_get_port1:
 * @self: a channel
 *
 * Gets the first port. Callable from any thread.
 *
 * Returns: (transfer none): the first port
 *
 * Since: 1.0
 */
MpMessagePort *
mp_message_channel_get_port1 (MpMessageChannel *self)
{
  g_return_val_if_fail (MP_IS_MESSAGE_CHANNEL (self), NULL);

  return self->port1;
}

/**
 * mp_message_channel_get_port2:
 * @self: a channel
 *
 * Gets the second port. Callable from any thread.
 *
 * Returns: (transfer none): the second port
 *
 * Since: 1.0
 */
MpMessagePort *
mp_message_channel_get_port2 (MpMessageChannel *self)
{
  g_return_val_if_fail (MP_IS_MESSAGE_CHANNEL (self), NULL);

  return self->port2;
}
