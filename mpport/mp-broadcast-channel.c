/* mp-broadcast-channel.c: same-name fan-out between threads
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <string.h>

#include "mp-broadcast-channel.h"
#include "mp-error.h"
#include "mp-i18n-private.h"
#include "mp-message-private.h"
#include "mp-waker-private.h"

/**
 * MpBroadcastChannel:
 *
 * A named channel, like the Web's `BroadcastChannel`: what one channel posts is delivered to
 * every other open channel of the same name in the process, on whatever thread each lives.
 *
 * A channel binds at creation to the creating thread's thread-default
 * [struct@GLib.MainContext] and delivers from then on: its [signal@Mp.BroadcastChannel::message]
 * signal is emitted only from that context's dispatch, never inside
 * [method@Mp.BroadcastChannel.post_message]. An open channel keeps itself alive until
 * [method@Mp.BroadcastChannel.close] or until its context is finalized.
 *
 * ```c
 * static void
 * on_message (MpBroadcastChannel *channel, MpMessage *message, gpointer user_data)
 * {
 *   g_print ("%s\n", g_variant_get_string (mp_message_get_data (message), NULL));
 * }
 *
 * MpBroadcastChannel *listener = mp_broadcast_channel_new ("jobs");
 * g_signal_connect (listener, "message", G_CALLBACK (on_message), NULL);
 *
 * // from any thread:
 * g_autoptr(MpBroadcastChannel) sender = mp_broadcast_channel_new ("jobs");
 * mp_broadcast_channel_post_message (sender, g_variant_new_string ("done"), NULL);
 * mp_broadcast_channel_close (sender);
 * ```
 *
 * Order follows HTML: on one context, posts on a name are delivered in the order they were
 * made, and each post reaches that context's channels in their creation order. The
 * destinations of a post are fixed when it is made; a channel closed before its delivery
 * runs receives nothing.
 *
 * Since: 1.0
 */

typedef struct _MpBroadcastGroup MpBroadcastGroup;
typedef struct _MpBroadcastInbox MpBroadcastInbox;

struct _MpBroadcastChannel
{
  GObject parent_instance;

  char *name;   /* immutable after construction */

  /* Set once, under bc_lock; read atomically anywhere. */
  int closed;

  /* Guarded by bc_lock; NULL once closed. The inbox reference is strong. */
  MpBroadcastGroup *group;
  MpBroadcastInbox *inbox;
  GMainContext *context;   /* weak: the inbox's source is attached to it */

  /* Written by set_priority() (owning thread) under bc_lock; read atomically. */
  int priority;
};

/* All channels of one name, in creation order. */
struct _MpBroadcastGroup
{
  char *name;
  GPtrArray *channels;   /* MpBroadcastChannel, strong, open ones in creation order */
  GPtrArray *inboxes;    /* MpBroadcastInbox, weak, the live ones of this name */
};

/* The deliveries of one name to one context: posts are queued here as entries (message,
 * destinations in creation order), so one context sees every post message-major and
 * creation-minor, with one wake-up per burst. */
struct _MpBroadcastInbox
{
  gatomicrefcount ref_count;

  /* Guards entries, source, armed and dead. Taken after bc_lock, never before it. */
  GMutex mutex;
  GQueue entries;    /* MpBroadcastEntry links, oldest first */
  /* Strong, until the source retires itself from its dispatch (once dead) or its context is
   * finalized. Only those two ever destroy it, on the owning thread or inside the context's
   * finalization: destroying it from another thread would race with that finalization. */
  GSource *source;
  gboolean armed;    /* the source was woken and its dispatch has not found the queue empty */
  gboolean dead;     /* torn down: no more entries; the source is woken to retire */

  /* Guarded by bc_lock. group is NULL once the inbox is unlinked. */
  MpBroadcastGroup *group;
  guint n_channels;

  /* Immutable: the lookup key within the group. Weak. */
  GMainContext *context;
};

typedef struct
{
  GList link;            /* in MpBroadcastInbox.entries; link.data == self */
  MpMessage *message;    /* owned */
  guint n_destinations;
  MpBroadcastChannel *destinations[];   /* strong, in creation order */
} MpBroadcastEntry;

typedef struct
{
  MpWakeableSource parent;   /* ready while its pending flag is set (mp-waker-private.h) */
  MpBroadcastInbox *inbox;   /* strong, released in finalize */
} MpInboxSource;

/* The process-wide name table: name -> MpBroadcastGroup. It guards the table, the groups,
 * each channel's group/inbox/context and each inbox's group/n_channels. Touched on create,
 * close, priority change and to snapshot the destinations of a post; never held while user
 * code runs. */
static GMutex bc_lock;
static GHashTable *bc_table;

G_DEFINE_FINAL_TYPE (MpBroadcastChannel, mp_broadcast_channel, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_NAME,
  PROP_CLOSED,
  PROP_CONTEXT,
  PROP_PRIORITY,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

enum {
  SIGNAL_MESSAGE,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

#define MP_BROADCAST_DISPATCH_BUDGET 1024

static MpBroadcastInbox *
inbox_ref (MpBroadcastInbox *inbox)
{
  g_atomic_ref_count_inc (&inbox->ref_count);
  return inbox;
}

static void
inbox_unref (MpBroadcastInbox *inbox)
{
  if (!g_atomic_ref_count_dec (&inbox->ref_count))
    return;

  g_assert (inbox->source == NULL);
  g_assert (inbox->entries.length == 0);
  g_mutex_clear (&inbox->mutex);
  g_free (inbox);
}

static void
entry_free (MpBroadcastEntry *entry)
{
  for (guint i = 0; i < entry->n_destinations; i++)
    g_object_unref (entry->destinations[i]);
  mp_message_unref (entry->message);
  g_free (entry);
}

static void
entries_free (GQueue *entries)
{
  GList *link;

  while ((link = g_queue_pop_head_link (entries)) != NULL)
    entry_free (link->data);
}

/* Only the post that finds the inbox unarmed wakes it; the dispatch clears armed only when
 * it finds the queue empty, so posts made while it drains cost no wake-up. */
static void
inbox_wake_locked (MpBroadcastInbox *inbox)
{
  if (inbox->armed || inbox->source == NULL)
    return;

  inbox->armed = TRUE;
  mp_wakeable_source_wake (inbox->source);
}

static gboolean
is_closed (MpBroadcastChannel *self)
{
  return g_atomic_int_get (&self->closed) != 0;
}

static gboolean
mp_inbox_source_dispatch (GSource     *source,
                          GSourceFunc  callback,
                          gpointer     user_data)
{
  MpBroadcastInbox *inbox = ((MpInboxSource *) source)->inbox;
  GSource *retired = NULL;
  guint budget = MP_BROADCAST_DISPATCH_BUDGET;

  /* Clear the pending flag before looking at the queue; armed stays set until the queue is
   * found empty, under the lock. */
  mp_wakeable_source_set_pending (source, FALSE);

  g_mutex_lock (&inbox->mutex);
  while (!inbox->dead)
    {
      GList *link;
      MpBroadcastEntry *entry;

      if (budget == 0)
        {
          /* Still armed: come back after one iteration in which lower-priority sources get
           * their turn (our own thread: no eventfd write). */
          if (inbox->entries.length > 0)
            mp_wakeable_source_yield (source);
          else
            inbox->armed = FALSE;
          break;
        }

      link = g_queue_pop_head_link (&inbox->entries);
      if (link == NULL)
        {
          inbox->armed = FALSE;
          break;
        }
      entry = link->data;
      budget--;
      g_mutex_unlock (&inbox->mutex);

      /* A destination closed since the post (even by a handler just now) gets nothing. */
      for (guint i = 0; i < entry->n_destinations; i++)
        if (!is_closed (entry->destinations[i]))
          g_signal_emit (entry->destinations[i], signals[SIGNAL_MESSAGE], 0, entry->message);
      entry_free (entry);

      g_mutex_lock (&inbox->mutex);
    }
  if (inbox->dead)
    retired = g_steal_pointer (&inbox->source);
  g_mutex_unlock (&inbox->mutex);

  if (retired != NULL)
    {
      /* GLib holds the source through this dispatch. */
      g_source_unref (retired);
      return G_SOURCE_REMOVE;
    }

  return G_SOURCE_CONTINUE;
}

static void
mp_inbox_source_finalize (GSource *source)
{
  g_clear_pointer (&((MpInboxSource *) source)->inbox, inbox_unref);
  mp_wakeable_source_finalize (source);
}

static GSourceFuncs mp_inbox_source_funcs = {
  .prepare = mp_wakeable_source_prepare,
  .check = mp_wakeable_source_check,
  .dispatch = mp_inbox_source_dispatch,
  .finalize = mp_inbox_source_finalize,
};

static gboolean
mp_inbox_source_unused_callback (gpointer user_data)
{
  g_assert_not_reached ();
  return G_SOURCE_REMOVE;
}

static void
group_free_if_empty_locked (MpBroadcastGroup *group)
{
  if (group->channels->len > 0)
    return;

  g_assert (group->inboxes->len == 0);
  g_hash_table_remove (bc_table, group->name);
  g_ptr_array_unref (group->channels);
  g_ptr_array_unref (group->inboxes);
  g_free (group->name);
  g_free (group);
}

/* Unlinks an inbox whose last channel left. The caller tears it down once unlocked. */
static void
inbox_unlink_locked (MpBroadcastInbox *inbox)
{
  g_ptr_array_remove_fast (inbox->group->inboxes, inbox);
  inbox->group = NULL;
}

/* Stops an unlinked inbox from any thread: queued deliveries are dropped (their channels
 * are all closed or gone elsewhere) and the source is woken to retire itself on its own
 * thread. No lock held by the caller. */
static void
inbox_teardown (MpBroadcastInbox *inbox)
{
  GQueue entries = G_QUEUE_INIT;

  g_mutex_lock (&inbox->mutex);
  inbox->dead = TRUE;
  entries = inbox->entries;
  g_queue_init (&inbox->entries);
  if (inbox->source != NULL)
    mp_wakeable_source_wake (inbox->source);
  g_mutex_unlock (&inbox->mutex);

  entries_free (&entries);
}

/* Runs when the inbox's source is destroyed, with no context lock held. If the inbox is
 * still linked, its context is being finalized: every channel delivering through it closes.
 * Either way, taking the inbox lock waits out any thread mid-wake-up before the context can
 * be freed, and a source not yet retired is released here. */
static void
mp_inbox_source_destroyed (gpointer data)
{
  GSource *source = data;
  MpBroadcastInbox *inbox = ((MpInboxSource *) source)->inbox;
  g_autoptr(GPtrArray) closed = g_ptr_array_new_with_free_func (g_object_unref);
  GQueue entries = G_QUEUE_INIT;
  GSource *stolen = NULL;

  if (inbox == NULL)
    return;

  g_mutex_lock (&bc_lock);
  if (inbox->group != NULL)
    {
      MpBroadcastGroup *group = inbox->group;

      for (guint i = 0; i < group->channels->len; )
        {
          MpBroadcastChannel *channel = g_ptr_array_index (group->channels, i);

          if (channel->inbox != inbox)
            {
              i++;
              continue;
            }
          g_atomic_int_set (&channel->closed, TRUE);
          channel->group = NULL;
          channel->context = NULL;
          channel->inbox = NULL;
          inbox_unref (inbox);   /* the channel's; the source still holds one */
          g_ptr_array_add (closed, g_ptr_array_steal_index (group->channels, i));
        }
      inbox->n_channels = 0;
      inbox_unlink_locked (inbox);
      group_free_if_empty_locked (group);
    }
  g_mutex_unlock (&bc_lock);

  g_mutex_lock (&inbox->mutex);
  inbox->dead = TRUE;
  entries = inbox->entries;
  g_queue_init (&inbox->entries);
  if (inbox->source == source)
    stolen = g_steal_pointer (&inbox->source);
  g_mutex_unlock (&inbox->mutex);

  entries_free (&entries);
  if (stolen != NULL)
    g_source_unref (stolen);
}

/* Finds or makes the inbox of @group for @context and counts a channel in. */
static MpBroadcastInbox *
inbox_join_locked (MpBroadcastGroup *group,
                   GMainContext     *context,
                   int               priority)
{
  MpBroadcastInbox *inbox;
  GSource *source;

  for (guint i = 0; i < group->inboxes->len; i++)
    {
      inbox = g_ptr_array_index (group->inboxes, i);
      if (inbox->context == context)
        {
          inbox->n_channels++;
          return inbox_ref (inbox);
        }
    }

  inbox = g_new0 (MpBroadcastInbox, 1);
  g_atomic_ref_count_init (&inbox->ref_count);   /* the joining channel's */
  g_mutex_init (&inbox->mutex);
  g_queue_init (&inbox->entries);
  inbox->group = group;
  inbox->n_channels = 1;
  inbox->context = context;

  source = mp_wakeable_source_new (&mp_inbox_source_funcs, sizeof (MpInboxSource), context);
  ((MpInboxSource *) source)->inbox = inbox_ref (inbox);
  g_source_set_static_name (source, "MpBroadcastChannel");
  g_source_set_priority (source, priority);
  g_source_set_callback (source, mp_inbox_source_unused_callback, source, mp_inbox_source_destroyed);
  inbox->source = source;   /* the inbox keeps the source's initial reference */
  g_source_attach (source, context);

  g_ptr_array_add (group->inboxes, inbox);

  return inbox;
}

/* The priority of an inbox: the highest (numerically lowest) among its channels. Channels of
 * one name on one context share one queue, so that posts keep their order there. */
static int
inbox_priority_locked (MpBroadcastInbox *inbox)
{
  GPtrArray *channels = inbox->group->channels;
  int priority = G_MAXINT;

  for (guint i = 0; i < channels->len; i++)
    {
      MpBroadcastChannel *channel = g_ptr_array_index (channels, i);

      if (channel->inbox == inbox)
        priority = MIN (priority, g_atomic_int_get (&channel->priority));
    }

  return priority;
}

/* Applies a priority computed by inbox_priority_locked(). Called on the owning thread,
 * which keeps the context alive, with no lock held. */
static void
inbox_apply_priority (MpBroadcastInbox *inbox,
                      int               priority)
{
  GSource *source = NULL;

  g_mutex_lock (&inbox->mutex);
  if (inbox->source != NULL)
    source = g_source_ref (inbox->source);
  g_mutex_unlock (&inbox->mutex);

  if (source != NULL)
    {
      if (g_source_get_priority (source) != priority)
        g_source_set_priority (source, priority);
      g_source_unref (source);
    }
}

/* Counts a channel out of its inbox. Returns the inbox if it must be torn down. */
static MpBroadcastInbox *
inbox_leave_locked (MpBroadcastInbox *inbox)
{
  g_assert (inbox->n_channels > 0);

  if (--inbox->n_channels > 0)
    return NULL;

  inbox_unlink_locked (inbox);
  return inbox;
}

static void
mp_broadcast_channel_constructed (GObject *object)
{
  MpBroadcastChannel *self = MP_BROADCAST_CHANNEL (object);
  GMainContext *context = g_main_context_ref_thread_default ();
  MpBroadcastGroup *group;
  MpBroadcastInbox *inbox;
  int priority;

  G_OBJECT_CLASS (mp_broadcast_channel_parent_class)->constructed (object);

  if (self->name == NULL)
    self->name = g_strdup ("");

  g_mutex_lock (&bc_lock);
  if (bc_table == NULL)
    bc_table = g_hash_table_new (g_str_hash, g_str_equal);

  group = g_hash_table_lookup (bc_table, self->name);
  if (group == NULL)
    {
      group = g_new0 (MpBroadcastGroup, 1);
      group->name = g_strdup (self->name);
      group->channels = g_ptr_array_new ();
      group->inboxes = g_ptr_array_new ();
      g_hash_table_insert (bc_table, group->name, group);
    }

  self->group = group;
  self->context = context;
  self->inbox = inbox_join_locked (group, context, self->priority);
  /* The table's reference keeps the open channel alive. */
  g_ptr_array_add (group->channels, g_object_ref (self));
  inbox = inbox_ref (self->inbox);
  priority = inbox_priority_locked (inbox);
  g_mutex_unlock (&bc_lock);

  inbox_apply_priority (inbox, priority);
  inbox_unref (inbox);
  g_main_context_unref (context);
}

static void
mp_broadcast_channel_finalize (GObject *object)
{
  MpBroadcastChannel *self = MP_BROADCAST_CHANNEL (object);

  /* The table holds every open channel: only a closed one gets here. */
  g_assert (self->inbox == NULL);
  g_free (self->name);

  G_OBJECT_CLASS (mp_broadcast_channel_parent_class)->finalize (object);
}

static void
mp_broadcast_channel_get_property (GObject    *object,
                                   guint       prop_id,
                                   GValue     *value,
                                   GParamSpec *pspec)
{
  MpBroadcastChannel *self = MP_BROADCAST_CHANNEL (object);

  switch (prop_id)
    {
    case PROP_NAME:
      g_value_set_string (value, self->name);
      break;

    case PROP_CLOSED:
      g_value_set_boolean (value, mp_broadcast_channel_is_closed (self));
      break;

    case PROP_CONTEXT:
      g_value_set_boxed (value, mp_broadcast_channel_get_context (self));
      break;

    case PROP_PRIORITY:
      g_value_set_int (value, mp_broadcast_channel_get_priority (self));
      break;

    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
mp_broadcast_channel_set_property (GObject      *object,
                                   guint         prop_id,
                                   const GValue *value,
                                   GParamSpec   *pspec)
{
  MpBroadcastChannel *self = MP_BROADCAST_CHANNEL (object);

  switch (prop_id)
    {
    case PROP_NAME:
      self->name = g_value_dup_string (value);
      break;

    case PROP_PRIORITY:
      mp_broadcast_channel_set_priority (self, g_value_get_int (value));
      break;

    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
mp_broadcast_channel_class_init (MpBroadcastChannelClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->constructed = mp_broadcast_channel_constructed;
  object_class->finalize = mp_broadcast_channel_finalize;
  object_class->get_property = mp_broadcast_channel_get_property;
  object_class->set_property = mp_broadcast_channel_set_property;

  /**
   * MpBroadcastChannel:name: (getter get_name)
   *
   * The name: channels of the same name in the process receive each other's posts.
   *
   * Since: 1.0
   */
  properties[PROP_NAME] =
    g_param_spec_string ("name", NULL, NULL,
                         "",
                         G_PARAM_READWRITE | G_PARAM_CONSTRUCT_ONLY | G_PARAM_STATIC_STRINGS);

  /**
   * MpBroadcastChannel:closed: (getter is_closed)
   *
   * Whether the channel is closed, by [method@Mp.BroadcastChannel.close] or because its
   * context was finalized. It is not notified: closing emits nothing.
   *
   * Since: 1.0
   */
  properties[PROP_CLOSED] =
    g_param_spec_boolean ("closed", NULL, NULL,
                          FALSE,
                          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * MpBroadcastChannel:context: (getter get_context)
   *
   * The context the channel delivers on: the thread-default [struct@GLib.MainContext] of
   * the thread that created it. %NULL once the channel is closed.
   *
   * Since: 1.0
   */
  properties[PROP_CONTEXT] =
    g_param_spec_boxed ("context", NULL, NULL,
                        G_TYPE_MAIN_CONTEXT,
                        G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * MpBroadcastChannel:priority: (getter get_priority) (setter set_priority)
   *
   * The priority of the channel's deliveries on its context. Channels of one name on one
   * context share one queue (so that posts reach them in creation order), dispatched at
   * the highest priority among them. Set it from the owning thread.
   *
   * Since: 1.0
   */
  properties[PROP_PRIORITY] =
    g_param_spec_int ("priority", NULL, NULL,
                      G_MININT, G_MAXINT, G_PRIORITY_DEFAULT,
                      G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  g_object_class_install_properties (object_class, N_PROPS, properties);

  /**
   * MpBroadcastChannel::message:
   * @self: the channel
   * @message: the message; its ports are always empty
   *
   * Emitted for each post of another channel of the same name, on the thread iterating
   * this channel's context.
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
  /* No copy of the message for C handlers: the delivery entry holds it across the emission. */
  g_signal_set_va_marshaller (signals[SIGNAL_MESSAGE],
                              G_TYPE_FROM_CLASS (klass),
                              mp_message_marshal_VOID__MESSAGEv);
}

static void
mp_broadcast_channel_init (MpBroadcastChannel *self)
{
  self->priority = G_PRIORITY_DEFAULT;
}

/**
 * mp_broadcast_channel_new:
 * @name: the name of the channel
 *
 * Creates an open channel of @name, bound to the calling thread's thread-default
 * [struct@GLib.MainContext] (the global default context if none was pushed). It receives
 * the posts other channels of @name make from now on. Callable from any thread; call it on
 * the thread that iterates the context.
 *
 * Returns: (transfer full): a new channel
 *
 * Since: 1.0
 */
MpBroadcastChannel *
mp_broadcast_channel_new (const char *name)
{
  g_return_val_if_fail (name != NULL, NULL);

  return g_object_new (MP_TYPE_BROADCAST_CHANNEL, "name", name, NULL);
}

/**
 * mp_broadcast_channel_get_name: (get-property name)
 * @self: a channel
 *
 * Gets [property@Mp.BroadcastChannel:name]. Callable from any thread.
 *
 * Returns: (transfer none): the name
 *
 * Since: 1.0
 */
const char *
mp_broadcast_channel_get_name (MpBroadcastChannel *self)
{
  g_return_val_if_fail (MP_IS_BROADCAST_CHANNEL (self), NULL);

  return self->name;
}

typedef struct
{
  MpBroadcastInbox *inbox;   /* strong */
  MpBroadcastEntry *entry;
} Delivery;

/**
 * mp_broadcast_channel_post_message:
 * @self: a channel
 * @message: (nullable): the payload; a floating reference is sunk
 * @error: return location for a #GError
 *
 * Posts @message to every other open channel of the same name, on every thread. Callable
 * from any thread; it never emits a signal. The destinations are the channels open now;
 * each gets the message on its own context, unless it is closed before that.
 *
 * Posting on a closed channel fails with %MP_ERROR_INVALID_STATE.
 *
 * Returns: %TRUE if the message was posted
 *
 * Since: 1.0
 */
gboolean
mp_broadcast_channel_post_message (MpBroadcastChannel  *self,
                                   GVariant            *message,
                                   GError             **error)
{
  g_autoptr(GVariant) data = message != NULL ? g_variant_ref_sink (message) : NULL;
  /* One per destination inbox (context): a few, on the stack unless there are many. */
  Delivery stack_deliveries[8];
  Delivery *deliveries = stack_deliveries;
  guint n_deliveries = 0;
  guint max_deliveries = G_N_ELEMENTS (stack_deliveries);
  MpMessage *shared;

  g_return_val_if_fail (MP_IS_BROADCAST_CHANNEL (self), FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (is_closed (self))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                           _("The broadcast channel is closed"));
      return FALSE;
    }

  shared = mp_message_new_take (g_steal_pointer (&data), NULL);

  g_mutex_lock (&bc_lock);
  if (is_closed (self))
    {
      g_mutex_unlock (&bc_lock);
      mp_message_unref (shared);
      g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                           _("The broadcast channel is closed"));
      return FALSE;
    }
  else
    {
      GPtrArray *channels = self->group->channels;

      /* One entry per destination inbox, sized for every channel of the name. */
      for (guint i = 0; i < channels->len; i++)
        {
          MpBroadcastChannel *dest = g_ptr_array_index (channels, i);
          Delivery *d = NULL;

          if (dest == self)
            continue;

          for (guint j = 0; j < n_deliveries; j++)
            if (deliveries[j].inbox == dest->inbox)
              d = &deliveries[j];

          if (d == NULL)
            {
              Delivery fresh;

              fresh.inbox = inbox_ref (dest->inbox);
              fresh.entry = g_malloc (sizeof (MpBroadcastEntry) +
                                      channels->len * sizeof (MpBroadcastChannel *));
              fresh.entry->link.data = fresh.entry;
              fresh.entry->link.next = fresh.entry->link.prev = NULL;
              fresh.entry->message = mp_message_ref (shared);
              fresh.entry->n_destinations = 0;
              if (n_deliveries == max_deliveries)
                {
                  Delivery *grown = g_new (Delivery, max_deliveries * 2);

                  memcpy (grown, deliveries, n_deliveries * sizeof (Delivery));
                  if (deliveries != stack_deliveries)
                    g_free (deliveries);
                  deliveries = grown;
                  max_deliveries *= 2;
                }
              deliveries[n_deliveries] = fresh;
              d = &deliveries[n_deliveries++];
            }

          d->entry->destinations[d->entry->n_destinations++] = g_object_ref (dest);
        }
    }
  g_mutex_unlock (&bc_lock);

  for (guint i = 0; i < n_deliveries; i++)
    {
      Delivery *d = &deliveries[i];
      gboolean queued = FALSE;

      g_mutex_lock (&d->inbox->mutex);
      if (d->inbox->source != NULL)
        {
          g_queue_push_tail_link (&d->inbox->entries, &d->entry->link);
          inbox_wake_locked (d->inbox);
          queued = TRUE;
        }
      g_mutex_unlock (&d->inbox->mutex);

      /* An inbox torn down meanwhile means all its channels closed: nothing to deliver. */
      if (!queued)
        entry_free (d->entry);
      inbox_unref (d->inbox);
    }
  if (deliveries != stack_deliveries)
    g_free (deliveries);

  mp_message_unref (shared);

  return TRUE;
}

/**
 * mp_broadcast_channel_close:
 * @self: a channel
 *
 * Closes @self: it receives nothing more, not even posts already made, and posting on it
 * fails. Callable from any thread; closing twice does nothing. Nothing is emitted. The
 * channel's own reference on itself is released.
 *
 * Since: 1.0
 */
void
mp_broadcast_channel_close (MpBroadcastChannel *self)
{
  MpBroadcastInbox *inbox = NULL;
  MpBroadcastInbox *teardown = NULL;

  g_return_if_fail (MP_IS_BROADCAST_CHANNEL (self));

  g_mutex_lock (&bc_lock);
  if (is_closed (self))
    {
      g_mutex_unlock (&bc_lock);
      return;
    }
  else
    {
      MpBroadcastGroup *group = self->group;

      g_atomic_int_set (&self->closed, TRUE);
      inbox = g_steal_pointer (&self->inbox);
      teardown = inbox_leave_locked (inbox);
      self->group = NULL;
      self->context = NULL;
      /* Removing keeps the others in creation order; the table's reference is ours now. */
      g_ptr_array_remove (group->channels, self);
      group_free_if_empty_locked (group);
    }
  g_mutex_unlock (&bc_lock);

  if (teardown != NULL)
    inbox_teardown (teardown);
  inbox_unref (inbox);
  g_object_unref (self);
}

/**
 * mp_broadcast_channel_is_closed: (get-property closed)
 * @self: a channel
 *
 * Gets [property@Mp.BroadcastChannel:closed]. Callable from any thread.
 *
 * Returns: %TRUE if @self is closed
 *
 * Since: 1.0
 */
gboolean
mp_broadcast_channel_is_closed (MpBroadcastChannel *self)
{
  g_return_val_if_fail (MP_IS_BROADCAST_CHANNEL (self), TRUE);

  return is_closed (self);
}

/**
 * mp_broadcast_channel_get_context: (get-property context)
 * @self: a channel
 *
 * Gets [property@Mp.BroadcastChannel:context], the context @self delivers on. Callable
 * from any thread.
 *
 * Returns: (transfer none) (nullable): the context, or %NULL once @self is closed
 *
 * Since: 1.0
 */
GMainContext *
mp_broadcast_channel_get_context (MpBroadcastChannel *self)
{
  GMainContext *context;

  g_return_val_if_fail (MP_IS_BROADCAST_CHANNEL (self), NULL);

  g_mutex_lock (&bc_lock);
  context = self->context;
  g_mutex_unlock (&bc_lock);

  return context;
}

/**
 * mp_broadcast_channel_get_priority: (get-property priority)
 * @self: a channel
 *
 * Gets [property@Mp.BroadcastChannel:priority]. Callable from any thread.
 *
 * Returns: the priority of the channel's deliveries
 *
 * Since: 1.0
 */
int
mp_broadcast_channel_get_priority (MpBroadcastChannel *self)
{
  g_return_val_if_fail (MP_IS_BROADCAST_CHANNEL (self), G_PRIORITY_DEFAULT);

  return g_atomic_int_get (&self->priority);
}

/**
 * mp_broadcast_channel_set_priority: (set-property priority)
 * @self: a channel
 * @priority: the priority, such as %G_PRIORITY_DEFAULT
 *
 * Sets [property@Mp.BroadcastChannel:priority]. Call it from the thread that owns the
 * channel's context: "notify::priority" is emitted on the calling thread.
 *
 * The channels of one name on one context share one queue, so that each post reaches
 * them in creation order; it is dispatched at the highest priority among them.
 *
 * Since: 1.0
 */
void
mp_broadcast_channel_set_priority (MpBroadcastChannel *self,
                                   int                 priority)
{
  MpBroadcastInbox *inbox = NULL;
  int effective = priority;

  g_return_if_fail (MP_IS_BROADCAST_CHANNEL (self));

  g_mutex_lock (&bc_lock);
  if (g_atomic_int_get (&self->priority) == priority)
    {
      g_mutex_unlock (&bc_lock);
      return;
    }
  g_atomic_int_set (&self->priority, priority);
  if (!is_closed (self))
    {
      inbox = inbox_ref (self->inbox);
      effective = inbox_priority_locked (inbox);
    }
  g_mutex_unlock (&bc_lock);

  if (inbox != NULL)
    {
      inbox_apply_priority (inbox, effective);
      inbox_unref (inbox);
    }

  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PRIORITY]);
}
