/* mp-broadcast-channel.c: same-name fan-out between threads
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <string.h>

#include "mp-broadcast-channel.h"
#include "mp-bus-private.h"
#include "mp-error.h"
#include "mp-i18n-private.h"
#include "mp-lane-private.h"
#include "mp-message-private.h"
#include "mp-waker-private.h"
#include "mp-wire-private.h"

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
 * A channel made with [ctor@Mp.BroadcastChannel.new_for_bus] reaches other processes too:
 * every bus channel of its name on the same D-Bus message bus gets its posts, exactly once,
 * each sender's in order, and it gets theirs. See the guide "Channels across processes".
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

  /* A bus channel's bus (strong), else NULL. Set under bc_lock right after construction,
   * before the constructor returns; immutable after. */
  MpBus *bus;
  /* Set once, under bc_lock, when the bus is lost: posts fail with MP_ERROR_CLOSED and a
   * LOST entry on the way closes the channel on its context. Read atomically. */
  int bus_lost;
  /* Set once the channel posted on the bus: its close() flushes the connection. Atomic. */
  int bus_posted;
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
  /* Posts push their entries here without the lock (newest first, through link.next; see
   * mp-lane-private.h), and the dispatch moves them to entries before it looks there;
   * MP_LANE_SHUT once dead. Atomic; only the lock holder takes it or shuts it. */
  gpointer lane;
  /* Strong, until the source retires itself from its dispatch (once dead) or its context is
   * finalized. Only those two ever destroy it, on the owning thread or inside the context's
   * finalization: destroying it from another thread would race with that finalization. */
  GSource *source;
  /* The source was woken and its dispatch has not found the queue empty. Written under the
   * lock, atomically: a post that pushed on the empty lane reads it without the lock. */
  int armed;
  gboolean dead;     /* torn down: no more entries; the source is woken to retire */

  /* Guarded by bc_lock. group is NULL once the inbox is unlinked. */
  MpBroadcastGroup *group;
  guint n_channels;

  /* Recycled entries (see inbox_take_entry_locked()): the dispatch pushes the entries it
   * delivered on returned, a lock-free stack (compare-and-swap), counting them in
   * n_returned; a post, under bc_lock, takes them all at once into spares, a list of its
   * own (guarded by bc_lock), takes their number off n_returned, and uses them from there. */
  gpointer returned;   /* MpBroadcastEntry, atomic */
  gint n_returned;     /* atomic; may be briefly off by the pushes in progress */
  gpointer spares;     /* MpBroadcastEntry */

  /* Immutable: the lookup key within the group. Weak. */
  GMainContext *context;
};

typedef enum {
  ENTRY_MESSAGE,   /* "message" with message */
  ENTRY_ERROR,     /* "message-error" with error: a post from another process was invalid */
  ENTRY_LOST,      /* the bus is gone: the destinations close, notifying "closed" */
} EntryKind;

typedef struct _MpBroadcastEntry MpBroadcastEntry;

struct _MpBroadcastEntry
{
  GList link;            /* in MpBroadcastInbox.entries; link.data == self */
  EntryKind kind;
  MpMessage *message;    /* owned, for ENTRY_MESSAGE */
  GError *error;         /* owned, for ENTRY_ERROR */
  guint n_destinations;
  guint capacity;        /* of destinations */
  /* While recycled (bare: no message, error or destination): the next one. */
  MpBroadcastEntry *next_spare;
  MpBroadcastChannel *destinations[];   /* strong, in creation order */
};

/* The most entries an inbox keeps for reuse on its returned stack (about: the count is
 * raised just after the push; as many again may wait in its spares list). */
#define MP_BROADCAST_INBOX_SPARES_MAX 64

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
  PROP_CONNECTION,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

enum {
  SIGNAL_MESSAGE,
  SIGNAL_MESSAGE_ERROR,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

#define MP_BROADCAST_DISPATCH_BUDGET 1024

/* Frees a list of bare recycled entries, linked through next_spare. */
static void
bare_entries_free (MpBroadcastEntry *entry)
{
  for (MpBroadcastEntry *next; entry != NULL; entry = next)
    {
      next = entry->next_spare;
      g_free (entry);
    }
}

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
  g_assert (inbox->lane == MP_LANE_SHUT || inbox->lane == NULL);
  bare_entries_free (inbox->spares);
  bare_entries_free (g_atomic_pointer_get (&inbox->returned));
  g_mutex_clear (&inbox->mutex);
  g_free (inbox);
}

/* Releases what @entry holds (destinations, message, error: finalizers may run, so never
 * under a lock); the bare entry stays. */
static void
entry_clear (MpBroadcastEntry *entry)
{
  for (guint i = 0; i < entry->n_destinations; i++)
    g_object_unref (entry->destinations[i]);
  entry->n_destinations = 0;
  g_clear_pointer (&entry->message, mp_message_unref);
  g_clear_error (&entry->error);
}

static void
entry_free (MpBroadcastEntry *entry)
{
  entry_clear (entry);
  g_free (entry);
}

/* Recycled entries. A post to a context allocates an entry, and that context's thread frees
 * it once delivered: with four receiving contexts, four allocations a post, each freed by
 * another thread into the poster's malloc arena. The dispatch instead releases what a
 * delivered entry holds and pushes the bare entry on its inbox's returned stack; posts
 * (which hold bc_lock, so one at a time) take the whole stack with an atomic exchange when
 * their own list runs dry. A single pop-everything consumer makes the stack free of ABA. */

/* After a dispatch delivered @entry; @inbox is alive (the dispatching source holds it). */
static void
inbox_return_entry (MpBroadcastInbox *inbox,
                    MpBroadcastEntry *entry)
{
  MpBroadcastEntry *head;

  entry_clear (entry);
  if (g_atomic_int_get (&inbox->n_returned) >= MP_BROADCAST_INBOX_SPARES_MAX)
    {
      g_free (entry);
      return;
    }
  /* The head is never dereferenced here: a post may take it (and free it) at any time. */
  do
    {
      head = g_atomic_pointer_get (&inbox->returned);
      entry->next_spare = head;
    }
  while (!g_atomic_pointer_compare_and_exchange (&inbox->returned, head, entry));
  g_atomic_int_inc (&inbox->n_returned);
}

/* A bare entry with room for @n_destinations, recycled from @inbox if it has one. With
 * bc_lock held. */
static MpBroadcastEntry *
inbox_take_entry_locked (MpBroadcastInbox *inbox,
                         guint             n_destinations)
{
  MpBroadcastEntry *entry = inbox->spares;

  if (entry == NULL)
    {
      gint n = 0;

      entry = g_atomic_pointer_exchange (&inbox->returned, NULL);
      for (MpBroadcastEntry *e = entry; e != NULL; e = e->next_spare)
        n++;
      if (n > 0)
        g_atomic_int_add (&inbox->n_returned, -n);
    }
  if (entry != NULL)
    {
      inbox->spares = entry->next_spare;
      if (entry->capacity >= n_destinations)
        return entry;
      g_free (entry);
    }

  /* Room for a few more than asked, so that a group that grows a little can still reuse it. */
  n_destinations = MAX (n_destinations, 8);
  entry = g_malloc (sizeof (MpBroadcastEntry) + n_destinations * sizeof (MpBroadcastChannel *));
  entry->capacity = n_destinations;
  entry->n_destinations = 0;
  entry->message = NULL;
  entry->error = NULL;

  return entry;
}

/* The inbox's lane: as a port's (mp-pipe.c, "The posts' lane"), a post pushes its entry with
 * one compare-and-swap instead of taking the inbox lock, which the receiving thread then takes
 * for itself alone. Only the dispatch takes entries out, and it moves the whole lane to the
 * tail of entries (one exchange, reversed into posting order) before it looks there. The
 * post that finds the lane empty wakes the inbox unless it reads armed; the dispatch clears
 * armed when it finds nothing and then looks at the lane once more. Every post goes by the
 * lane, so the order of entries is the order of the pushes. */

/* Moves the lane's entries to the tail of @inbox's entries, oldest first, and shuts the
 * lane if @shut. With the inbox lock held. */
static void
inbox_take_lane_locked (MpBroadcastInbox *inbox,
                        gboolean          shut)
{
  if (g_atomic_pointer_get (&inbox->lane) != MP_LANE_SHUT &&
      (shut || mp_lane_is_busy (&inbox->lane)))
    mp_lane_take (&inbox->lane, &inbox->entries, shut);
}

/* The dispatch found nothing (the lane taken, the lock held): clears armed, so that the next
 * post wakes it; FALSE, armed again, if a post came on the lane meanwhile, which may have
 * read armed and left the wake-up to us. */
static gboolean
inbox_disarm_locked (MpBroadcastInbox *inbox)
{
  g_atomic_int_set (&inbox->armed, FALSE);
  if (!mp_lane_is_busy (&inbox->lane))
    return TRUE;

  g_atomic_int_set (&inbox->armed, TRUE);
  return FALSE;
}

static void
entries_free (GQueue *entries)
{
  GList *link;

  while ((link = g_queue_pop_head_link (entries)) != NULL)
    entry_free (link->data);
}

/* Only the post that finds the inbox unarmed wakes it; the dispatch clears armed only when
 * it finds the queue empty, so posts made while it drains cost no wake-up. The caller
 * writes the wake-up once it unlocked the inbox (mp_waker_wake_end() on what this returns,
 * if not NULL), as a port's post does (see mp-pipe.c, wake_after_unlock_locked()): written
 * under the lock, it let the woken thread run into the lock still held and sleep on it. */
static MpWaker *
inbox_wake_begin_locked (MpBroadcastInbox *inbox)
{
  if (g_atomic_int_get (&inbox->armed) || inbox->source == NULL)
    return NULL;

  g_atomic_int_set (&inbox->armed, TRUE);
  return mp_wakeable_source_wake_begin (inbox->source);
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

      if (inbox->entries.head == NULL)
        inbox_take_lane_locked (inbox, FALSE);

      if (budget == 0)
        {
          /* Still armed: come back after one iteration in which lower-priority sources get
           * their turn (our own thread: no eventfd write). */
          if (inbox->entries.length > 0 || !inbox_disarm_locked (inbox))
            mp_wakeable_source_yield (source);
          break;
        }

      link = g_queue_pop_head_link (&inbox->entries);
      if (link == NULL)
        {
          /* Unless a post came on the lane as we cleared armed. */
          if (!inbox_disarm_locked (inbox))
            continue;
          break;
        }
      entry = link->data;
      budget--;
      g_mutex_unlock (&inbox->mutex);

      /* A destination closed since the post (even by a handler just now) gets nothing. */
      for (guint i = 0; i < entry->n_destinations; i++)
        {
          MpBroadcastChannel *dest = entry->destinations[i];

          if (is_closed (dest))
            continue;
          switch (entry->kind)
            {
            case ENTRY_MESSAGE:
              g_signal_emit (dest, signals[SIGNAL_MESSAGE], 0, entry->message);
              break;
            case ENTRY_ERROR:
              g_signal_emit (dest, signals[SIGNAL_MESSAGE_ERROR], 0, entry->error);
              break;
            case ENTRY_LOST:
              mp_broadcast_channel_close (dest);
              g_object_notify_by_pspec (G_OBJECT (dest), properties[PROP_CLOSED]);
              break;
            default:
              g_assert_not_reached ();
            }
        }
      inbox_return_entry (inbox, entry);

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
  inbox_take_lane_locked (inbox, TRUE);
  entries = inbox->entries;
  g_queue_init (&inbox->entries);
  if (inbox->source != NULL)
    mp_wakeable_source_wake (inbox->source);
  g_mutex_unlock (&inbox->mutex);

  entries_free (&entries);
}

/* A bus channel that just closed (the caller made it so, under bc_lock) gives up its
 * subscription; if it posted, what it posted is written out first, so that a program that
 * posts, closes and exits is heard. No lock held. */
static void
bus_leave (MpBroadcastChannel *self)
{
  if (self->bus == NULL)
    return;

  if (g_atomic_int_get (&self->bus_posted))
    mp_bus_flush (self->bus);
  mp_bus_unsubscribe (self->bus, self->name);
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
  inbox_take_lane_locked (inbox, TRUE);
  entries = inbox->entries;
  g_queue_init (&inbox->entries);
  if (inbox->source == source)
    stolen = g_steal_pointer (&inbox->source);
  g_mutex_unlock (&inbox->mutex);

  entries_free (&entries);
  if (stolen != NULL)
    g_source_unref (stolen);

  for (guint i = 0; i < closed->len; i++)
    bus_leave (g_ptr_array_index (closed, i));
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
  inbox->lane = NULL;   /* open: the source is set below, before anyone can post */
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
  g_clear_pointer (&self->bus, mp_bus_unref);
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

    case PROP_CONNECTION:
      g_value_set_object (value, mp_broadcast_channel_get_connection (self));
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
   * context was finalized; neither notifies it (closing emits nothing). A bus channel whose
   * bus went away closes on its context and notifies it there.
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

  /**
   * MpBroadcastChannel:connection: (getter get_connection)
   *
   * The message bus connection of a bus channel (see
   * [ctor@Mp.BroadcastChannel.new_for_bus]): the one it was made with, or mpport's own
   * connection to the session bus. %NULL for a channel of this process only.
   *
   * Since: 1.0
   */
  properties[PROP_CONNECTION] =
    g_param_spec_object ("connection", NULL, NULL,
                         G_TYPE_DBUS_CONNECTION,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

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

  /**
   * MpBroadcastChannel::message-error:
   * @self: the channel
   * @error: what was wrong with the message
   *
   * Emitted, instead of [signal@Mp.BroadcastChannel::message], for a post from another
   * process that could not be turned back into a valid [struct@GLib.Variant] (the Web's
   * `messageerror`): a message that does not follow the wire format, a type string that is
   * invalid, or data that is not in normal form. Only bus channels emit it, on their
   * context, in order with the messages; later messages still arrive.
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

/* The entries of one post (or one event), one per destination inbox (context): a few, on
 * the stack unless there are many. */
typedef struct
{
  Delivery stack[8];
  Delivery *items;
  guint n_items;
  guint max_items;
} Deliveries;

static void
deliveries_init (Deliveries *d)
{
  d->items = d->stack;
  d->n_items = 0;
  d->max_items = G_N_ELEMENTS (d->stack);
}

/* Adds @dest to the entry of its inbox, made if need be of @kind with a reference on
 * @message or a copy of @error. With bc_lock held. */
/* Inline: it is the inner loop of every post. */
static inline void
deliveries_add_locked (Deliveries         *d,
                       MpBroadcastChannel *dest,
                       EntryKind           kind,
                       MpMessage          *message,
                       const GError       *error)
{
  Delivery *delivery = NULL;

  for (guint j = 0; j < d->n_items; j++)
    if (d->items[j].inbox == dest->inbox)
      delivery = &d->items[j];

  if (delivery == NULL)
    {
      /* The inbox's channels bound the destinations it gets from one post. */
      MpBroadcastEntry *entry = inbox_take_entry_locked (dest->inbox, dest->inbox->n_channels);

      entry->link.data = entry;
      entry->link.next = entry->link.prev = NULL;
      entry->kind = kind;
      entry->message = message != NULL ? mp_message_ref (message) : NULL;
      entry->error = error != NULL ? g_error_copy (error) : NULL;
      entry->n_destinations = 0;

      if (d->n_items == d->max_items)
        {
          Delivery *grown = g_new (Delivery, d->max_items * 2);

          memcpy (grown, d->items, d->n_items * sizeof (Delivery));
          if (d->items != d->stack)
            g_free (d->items);
          d->items = grown;
          d->max_items *= 2;
        }
      delivery = &d->items[d->n_items++];
      delivery->inbox = inbox_ref (dest->inbox);
      delivery->entry = entry;
    }

  delivery->entry->destinations[delivery->entry->n_destinations++] = g_object_ref (dest);
}

/* Queues every entry at its inbox, one wake-up per inbox. No lock held. */
static void
deliveries_queue (Deliveries *d)
{
  for (guint i = 0; i < d->n_items; i++)
    {
      Delivery *delivery = &d->items[i];
      MpBroadcastInbox *inbox = delivery->inbox;
      gboolean first;

      if (!mp_lane_push (&inbox->lane, &delivery->entry->link, &first))
        {
          /* An inbox torn down meanwhile means all its channels closed: nothing to
           * deliver. */
          entry_free (delivery->entry);
        }
      else if (first && !g_atomic_int_get (&inbox->armed))
        {
          MpWaker *wake;

          g_mutex_lock (&inbox->mutex);
          wake = inbox_wake_begin_locked (inbox);
          g_mutex_unlock (&inbox->mutex);
          /* Written once unlocked, so that the woken thread does not find the lock held. */
          if (wake != NULL)
            mp_waker_wake_end (wake);
        }
      inbox_unref (inbox);
    }
  if (d->items != d->stack)
    g_free (d->items);
}

/* MpBusFuncs.received, in GDBus's worker thread: a post from another process reaches every
 * open bus channel of its name on that bus here, in creation order per context. */
static void
on_bus_received (MpBus      *bus,
                 const char *name,
                 const char *sender,
                 GVariant   *data,
                 GError     *error)
{
  MpMessage *message = NULL;
  MpBroadcastGroup *group;
  Deliveries d;

  deliveries_init (&d);
  if (error == NULL)
    {
      message = mp_message_new_take (data, NULL);
      message->sender = g_strdup (sender);
    }

  g_mutex_lock (&bc_lock);
  group = bc_table != NULL ? g_hash_table_lookup (bc_table, name) : NULL;
  if (group != NULL)
    for (guint i = 0; i < group->channels->len; i++)
      {
        MpBroadcastChannel *dest = g_ptr_array_index (group->channels, i);

        if (dest->bus == bus && !is_closed (dest))
          deliveries_add_locked (&d, dest,
                                 error == NULL ? ENTRY_MESSAGE : ENTRY_ERROR, message, error);
      }
  g_mutex_unlock (&bc_lock);

  deliveries_queue (&d);
  g_clear_pointer (&message, mp_message_unref);
  g_clear_error (&error);
}

/* MpBusFuncs.lost, from any thread: every bus channel on @bus fails its posts from now on,
 * and closes on its context. */
static void
on_bus_lost (MpBus *bus)
{
  GHashTableIter iter;
  gpointer value;
  Deliveries d;

  deliveries_init (&d);

  g_mutex_lock (&bc_lock);
  if (bc_table != NULL)
    {
      g_hash_table_iter_init (&iter, bc_table);
      while (g_hash_table_iter_next (&iter, NULL, &value))
        {
          MpBroadcastGroup *group = value;

          for (guint i = 0; i < group->channels->len; i++)
            {
              MpBroadcastChannel *channel = g_ptr_array_index (group->channels, i);

              if (channel->bus == bus && !is_closed (channel) &&
                  g_atomic_int_get (&channel->bus_lost) == 0)
                {
                  g_atomic_int_set (&channel->bus_lost, 1);
                  deliveries_add_locked (&d, channel, ENTRY_LOST,
                                         NULL, NULL);
                }
            }
        }
    }
  g_mutex_unlock (&bc_lock);

  deliveries_queue (&d);
}

static const MpBusFuncs bus_funcs = {
  .received = on_bus_received,
  .lost = on_bus_lost,
};

/* A bus channel's name travels in every signal: UTF-8 (a D-Bus string) and within the
 * wire format's cap. */
static gboolean
check_bus_name (const char  *name,
                GError     **error)
{
  if (!g_utf8_validate (name, -1, NULL) || strlen (name) > MP_WIRE_MAX_NAME)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                           _("A bus channel's name must be valid UTF-8 of at most 4 MiB"));
      return FALSE;
    }

  return TRUE;
}

/* A channel of @name on @bus (whose reference it takes), which is subscribed to @name. */
static MpBroadcastChannel *
channel_new_for_subscribed_bus (const char *name,
                                MpBus      *bus)
{
  MpBroadcastChannel *self = g_object_new (MP_TYPE_BROADCAST_CHANNEL, "name", name, NULL);

  mp_bus_set_funcs (&bus_funcs);

  g_mutex_lock (&bc_lock);
  self->bus = bus;
  g_mutex_unlock (&bc_lock);

  /* Lost before we were on the table's list of its channels: tell this one now. */
  if (mp_bus_is_lost (bus))
    on_bus_lost (bus);

  return self;
}

/**
 * mp_broadcast_channel_new_for_bus:
 * @name: the name of the channel
 * @connection: (nullable): a connection to a message bus, or %NULL for the session bus
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Creates an open channel of @name that also reaches every bus channel of @name on the same
 * message bus, in every process: what it posts goes to them over the bus, and what they
 * post arrives here. Within this process it is an ordinary channel: it gets every local
 * post of @name without a round trip through the bus, and its posts reach every local
 * channel of @name, plain or bus. It is bound, like [ctor@Mp.BroadcastChannel.new], to
 * the calling thread's thread-default [struct@GLib.MainContext].
 *
 * With %NULL, mpport uses its own private connection to the session bus, opened on first
 * use and shared by all such channels of the process (never g_bus_get()'s, which exits the
 * process when the bus goes away). Any other connection to a message bus works: a test
 * bus, the system bus where its policy allows, a bus on another address.
 *
 * This blocks until the bus has acknowledged the subscription, so that a post another
 * process makes after it returns is never missed; see
 * [func@Mp.BroadcastChannel.new_for_bus_async] for the asynchronous form. Callable from any
 * thread; call it on the thread that iterates the context.
 *
 * A channel name is global on its bus: prefix it with your application id. The session
 * bus is no privilege boundary: any process of the user can read and post on any channel.
 * Payloads are limited to 8 MiB; see [method@Mp.BroadcastChannel.post_message].
 *
 * It fails with %G_IO_ERROR_INVALID_ARGUMENT for a name that is not valid UTF-8 or is
 * longer than 4 MiB, or a connection that is not to a message bus; with %MP_ERROR_CLOSED
 * if the connection is closed; with %G_IO_ERROR_CANCELLED if @cancellable was cancelled;
 * and with GDBus's errors if the session bus cannot be reached or refuses the match rule.
 *
 * Returns: (transfer full): a new channel, or %NULL with @error set
 *
 * Since: 1.0
 */
MpBroadcastChannel *
mp_broadcast_channel_new_for_bus (const char       *name,
                                  GDBusConnection  *connection,
                                  GCancellable     *cancellable,
                                  GError          **error)
{
  MpBus *bus;

  g_return_val_if_fail (name != NULL, NULL);
  g_return_val_if_fail (connection == NULL || G_IS_DBUS_CONNECTION (connection), NULL);
  g_return_val_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (!check_bus_name (name, error))
    return NULL;
  bus = mp_bus_get_sync (connection, cancellable, error);
  if (bus == NULL)
    return NULL;
  if (!mp_bus_subscribe_sync (bus, name, cancellable, error))
    {
      mp_bus_unref (bus);
      return NULL;
    }

  return channel_new_for_subscribed_bus (name, bus);
}

typedef struct
{
  char *name;
  GDBusConnection *connection;   /* nullable */
  MpBus *bus;                    /* set once subscribed */
} BusSubscription;

static void
bus_subscription_free (gpointer data)
{
  BusSubscription *sub = data;

  if (sub->bus != NULL)
    {
      mp_bus_unsubscribe (sub->bus, sub->name);
      mp_bus_unref (sub->bus);
    }
  g_clear_object (&sub->connection);
  g_free (sub->name);
  g_free (sub);
}

static void
subscribe_in_thread (GTask        *task,
                     gpointer      source_object,
                     gpointer      task_data,
                     GCancellable *cancellable)
{
  BusSubscription *sub = task_data;
  BusSubscription *result;
  GError *error = NULL;
  MpBus *bus;

  bus = mp_bus_get_sync (sub->connection, cancellable, &error);
  if (bus != NULL && !mp_bus_subscribe_sync (bus, sub->name, cancellable, &error))
    g_clear_pointer (&bus, mp_bus_unref);

  /* Cancelled meanwhile: the caller got G_IO_ERROR_CANCELLED already; undo. */
  if (!g_task_set_return_on_cancel (task, FALSE))
    {
      if (bus != NULL)
        {
          mp_bus_unsubscribe (bus, sub->name);
          mp_bus_unref (bus);
        }
      g_clear_error (&error);
      return;
    }

  if (bus == NULL)
    {
      g_task_return_error (task, error);
      return;
    }

  result = g_new0 (BusSubscription, 1);
  result->name = g_strdup (sub->name);
  result->bus = bus;
  g_task_return_pointer (task, result, bus_subscription_free);
}

/**
 * mp_broadcast_channel_new_for_bus_async:
 * @name: the name of the channel
 * @connection: (nullable): a connection to a message bus, or %NULL for the session bus
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when the channel is ready or failed
 * @user_data: data for @callback
 *
 * Creates a bus channel like [ctor@Mp.BroadcastChannel.new_for_bus], without blocking:
 * @callback runs on the calling thread's thread-default [struct@GLib.MainContext] once
 * the bus has acknowledged the subscription; call
 * [ctor@Mp.BroadcastChannel.new_for_bus_finish] there to get the channel, which is bound
 * to that context. Callable from any thread.
 *
 * Since: 1.0
 */
void
mp_broadcast_channel_new_for_bus_async (const char          *name,
                                        GDBusConnection     *connection,
                                        GCancellable        *cancellable,
                                        GAsyncReadyCallback  callback,
                                        gpointer             user_data)
{
  g_autoptr(GTask) task = NULL;
  BusSubscription *sub;

  g_return_if_fail (name != NULL);
  g_return_if_fail (connection == NULL || G_IS_DBUS_CONNECTION (connection));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, mp_broadcast_channel_new_for_bus_async);
  {
    GError *error = NULL;

    if (!check_bus_name (name, &error))
      {
        g_task_return_error (task, error);
        return;
      }
  }

  sub = g_new0 (BusSubscription, 1);
  sub->name = g_strdup (name);
  sub->connection = connection != NULL ? g_object_ref (connection) : NULL;

  g_task_set_task_data (task, sub, bus_subscription_free);
  /* A cancel answers at once; the thread undoes what it did when it comes back. */
  g_task_set_return_on_cancel (task, TRUE);
  g_task_run_in_thread (task, subscribe_in_thread);
}

/**
 * mp_broadcast_channel_new_for_bus_finish:
 * @result: the result given to the callback
 * @error: return location for a #GError
 *
 * Finishes [func@Mp.BroadcastChannel.new_for_bus_async]. Call it from the callback: the
 * channel binds to the thread-default context of the thread that runs it. It fails with
 * the errors of [ctor@Mp.BroadcastChannel.new_for_bus] (%MP_ERROR_CLOSED,
 * %G_IO_ERROR_CANCELLED, %G_IO_ERROR_INVALID_ARGUMENT, GDBus's).
 *
 * Returns: (transfer full): a new channel, or %NULL with @error set
 *
 * Since: 1.0
 */
MpBroadcastChannel *
mp_broadcast_channel_new_for_bus_finish (GAsyncResult  *result,
                                         GError       **error)
{
  BusSubscription *sub;
  MpBroadcastChannel *self;

  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) ==
                        mp_broadcast_channel_new_for_bus_async, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  sub = g_task_propagate_pointer (G_TASK (result), error);
  if (sub == NULL)
    return NULL;

  self = channel_new_for_subscribed_bus (sub->name, g_steal_pointer (&sub->bus));
  bus_subscription_free (sub);

  return self;
}

/**
 * mp_broadcast_channel_get_connection: (get-property connection)
 * @self: a channel
 *
 * Gets [property@Mp.BroadcastChannel:connection]. Callable from any thread.
 *
 * Returns: (transfer none) (nullable): the bus connection of a bus channel, or %NULL
 *
 * Since: 1.0
 */
GDBusConnection *
mp_broadcast_channel_get_connection (MpBroadcastChannel *self)
{
  MpBus *bus;

  g_return_val_if_fail (MP_IS_BROADCAST_CHANNEL (self), NULL);

  g_mutex_lock (&bc_lock);
  bus = self->bus;
  g_mutex_unlock (&bc_lock);

  return bus != NULL ? mp_bus_get_connection (bus) : NULL;
}

/**
 * mp_broadcast_channel_post_message:
 * @self: a channel
 * @message: (nullable): the payload; a floating reference is sunk
 * @error: return location for a #GError
 *
 * Posts @message to every other open channel of the same name, on every thread, and for a
 * bus channel to every bus channel of the name on its bus in other processes. Callable
 * from any thread; it never emits a signal. The destinations are the channels open now;
 * each gets the message on its own context, unless it is closed before that.
 *
 * Posting on a closed channel fails with %MP_ERROR_INVALID_STATE. On a bus channel whose
 * bus went away it fails with %MP_ERROR_CLOSED (the channel then closes on its context).
 * A bus channel refuses, with %MP_ERROR_DATA_CLONE and sending nothing at all, a payload
 * over 8 MiB serialized or one whose type holds a D-Bus handle (`h`, an fd index that
 * means nothing in another process; a handle inside a variant is not looked for and
 * travels as the integer it is).
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
  g_autoptr(GVariant) item = NULL;
  MpMessage *shared;
  Deliveries d;

  g_return_val_if_fail (MP_IS_BROADCAST_CHANNEL (self), FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (g_atomic_int_get (&self->bus_lost))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_CLOSED,
                           _("The bus connection of the broadcast channel is closed"));
      return FALSE;
    }
  if (is_closed (self))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_INVALID_STATE,
                           _("The broadcast channel is closed"));
      return FALSE;
    }

  /* What cannot cross the bus is refused before anything is sent, locally included. */
  if (self->bus != NULL && (item = mp_wire_encode_item (data, error)) == NULL)
    return FALSE;

  shared = mp_message_new_take (g_steal_pointer (&data), NULL);
  deliveries_init (&d);

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

      for (guint i = 0; i < channels->len; i++)
        {
          MpBroadcastChannel *dest = g_ptr_array_index (channels, i);

          if (dest != self)
            deliveries_add_locked (&d, dest, ENTRY_MESSAGE, shared, NULL);
        }
    }
  g_mutex_unlock (&bc_lock);

  deliveries_queue (&d);
  mp_message_unref (shared);

  if (item != NULL)
    {
      g_atomic_int_set (&self->bus_posted, 1);
      if (!mp_bus_send (self->bus, self->name, item, error))
        return FALSE;
    }

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
  bus_leave (self);
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
