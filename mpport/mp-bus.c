/* mp-bus.c: a message bus connection and its broadcast-channel subscriptions
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <string.h>

#include "mp-bus-private.h"
#include "mp-error.h"
#include "mp-i18n-private.h"
#include "mp-wire-private.h"
#include "mp-worker-private.h"

/* A bus channel's posts are D-Bus broadcast signals (mp-wire.c has the format). To receive
 * those of a name, a connection asks the bus for them with a match rule on the name's object
 * path, and waits for the bus's reply: GDBus's own signal_subscribe() sends AddMatch
 * without waiting, so a post made by another process just after it returned could be
 * missed. The signals are read by a filter, in GDBus's worker thread, which decodes them
 * and hands each post to the layer above (it queues them in the channels' inboxes, one
 * wake-up per burst), instead of GDBus's one idle source per subscriber per signal.
 *
 * The bus sends a broadcast back to its sender too: signals whose sender is one of this
 * process's own connections are dropped, since local channels get every local post
 * without the bus. */

struct _MpBus
{
  /* Decremented under buses_lock (see mp_bus_unref()), so that a look-up in the table
   * never finds a bus on its way out. */
  gatomicrefcount ref_count;

  /* Immutable. */
  GDBusConnection *connection;   /* strong */
  char *unique_name;
  guint filter_id;
  gulong closed_id;
  /* mpport's own session connection: nobody else subscribes on it, so its filter can take
   * mpport's signals out of GDBus's own dispatch. Set under buses_lock before the bus is
   * published. */
  gboolean private_connection;

  /* Set once, when the connection is found closed; read anywhere. */
  int lost;

  /* Guards names and the state of every MpBusName. */
  GMutex lock;
  /* Broadcast when a name's match rule is acknowledged or refused, and on cancellation. */
  GCond cond;
  /* Object path -> MpBusName: the names subscribed (or being subscribed) to. */
  GHashTable *names;

  /* The sending side, clocked by the bus's echo. The bus sends every broadcast back to its
   * sender too (we are subscribed to the names we post on), so hearing our own signal back
   * means the bus has it. A post made while nothing is on the way goes out at once, from the
   * posting thread: the lowest latency, no thread hop. Posts made while signals are on the
   * way wait in the outbox; the echo of the last one (in GDBus's worker thread) sends them
   * all, as few signals as the body cap allows: a burst costs the bus, and every receiver,
   * one message instead of one per post. Should an echo never come (a bus drops broadcasts
   * to a full queue), a timer on mpport's worker thread sends the outbox anyway. Guarded by
   * out_lock. send_lock, taken before out_lock, serializes the emissions: a post is
   * decided and emitted (or queued) under it, and an outbox is taken and emitted under it,
   * so that signals leave in the order their posts were made. */
  GMutex send_lock;
  GMutex out_lock;
  GCond out_cond;        /* broadcast when the outbox empties */
  GQueue outbox;         /* OutPost, oldest first */
  guint in_flight;       /* signals sent and not heard back yet */
  gboolean fallback;     /* the worker thread's timer is armed */
};

typedef struct
{
  char *name;
  GVariant *item;        /* "(say)" */
} OutPost;

typedef enum {
  NAME_PENDING,   /* the first subscriber sent AddMatch and waits for the reply */
  NAME_READY,     /* the bus acknowledged the rule */
  NAME_FAILED,    /* the bus refused it: waiters leave with the error */
} NameState;

typedef struct
{
  char *name;
  char *path;
  char *rule;
  guint n_subscribers;   /* including those still waiting */
  NameState state;
  GError *error;         /* while NAME_FAILED */
} MpBusName;

/* GDBusConnection -> MpBus (weak: a bus removes itself when its last reference goes), and
 * the unique names of those connections (the senders whose echoes are dropped). Touched
 * when buses come and go, and by the filter once per mpport signal. */
static GMutex buses_lock;
static GHashTable *buses;

static const MpBusFuncs *bus_funcs;

/* mpport's private session bus connection, replaced once lost. Guarded by buses_lock; the
 * static holds a reference. */
static MpBus *session_bus;

void
mp_bus_set_funcs (const MpBusFuncs *funcs)
{
  g_atomic_pointer_set (&bus_funcs, funcs);
}

static void
bus_name_free (gpointer data)
{
  MpBusName *entry = data;

  g_clear_error (&entry->error);
  g_free (entry->rule);
  g_free (entry->path);
  g_free (entry->name);
  g_free (entry);
}

MpBus *
mp_bus_ref (MpBus *self)
{
  g_atomic_ref_count_inc (&self->ref_count);
  return self;
}

void
mp_bus_unref (MpBus *self)
{
  g_mutex_lock (&buses_lock);
  if (!g_atomic_ref_count_dec (&self->ref_count))
    {
      g_mutex_unlock (&buses_lock);
      return;
    }
  g_hash_table_remove (buses, self->connection);
  g_mutex_unlock (&buses_lock);

  /* The filter and the handler look their bus up in the table, so they can still run now
   * but can no longer find this one. */
  g_dbus_connection_remove_filter (self->connection, self->filter_id);
  g_signal_handler_disconnect (self->connection, self->closed_id);
  g_object_unref (self->connection);
  g_hash_table_unref (self->names);
  g_assert (self->outbox.length == 0 && !self->fallback);
  g_cond_clear (&self->out_cond);
  g_mutex_clear (&self->out_lock);
  g_mutex_clear (&self->send_lock);
  g_cond_clear (&self->cond);
  g_mutex_clear (&self->lock);
  g_free (self->unique_name);
  g_free (self);
}

/* The bus of @connection with a new reference, or NULL. With buses_lock held. */
static MpBus *
lookup_locked (GDBusConnection *connection)
{
  MpBus *bus = buses != NULL ? g_hash_table_lookup (buses, connection) : NULL;

  return bus != NULL ? mp_bus_ref (bus) : NULL;
}

static gboolean
is_own_sender_locked (const char *sender)
{
  GHashTableIter iter;
  gpointer value;

  if (sender == NULL)
    return FALSE;

  g_hash_table_iter_init (&iter, buses);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    if (g_strcmp0 (((MpBus *) value)->unique_name, sender) == 0)
      return TRUE;

  return FALSE;
}

static void
out_post_free (OutPost *post)
{
  g_free (post->name);
  g_variant_unref (post->item);
  g_free (post);
}

/* Marks @self lost, once, and tells the layer above. Any thread. */
static void
bus_lose (MpBus *self)
{
  if (g_atomic_int_compare_and_exchange (&self->lost, 0, 1))
    {
      const MpBusFuncs *funcs = g_atomic_pointer_get (&bus_funcs);

      GQueue dropped = G_QUEUE_INIT;
      OutPost *post;

      g_mutex_lock (&self->lock);
      g_cond_broadcast (&self->cond);
      g_mutex_unlock (&self->lock);

      g_mutex_lock (&self->out_lock);
      dropped = self->outbox;
      g_queue_init (&self->outbox);
      g_cond_broadcast (&self->out_cond);
      g_mutex_unlock (&self->out_lock);
      while ((post = g_queue_pop_head (&dropped)) != NULL)
        out_post_free (post);

      if (funcs != NULL)
        funcs->lost (self);
    }
}

gboolean
mp_bus_is_lost (MpBus *self)
{
  return g_atomic_int_get (&self->lost) != 0;
}

GDBusConnection *
mp_bus_get_connection (MpBus *self)
{
  return self->connection;
}

/* "closed" of a connection: emitted on the context the connection was made on. */
static void
on_connection_closed (GDBusConnection *connection,
                      gboolean         remote_peer_vanished,
                      GError          *error,
                      gpointer         user_data)
{
  MpBus *bus;

  g_mutex_lock (&buses_lock);
  bus = lookup_locked (connection);
  g_mutex_unlock (&buses_lock);

  if (bus != NULL)
    {
      bus_lose (bus);
      mp_bus_unref (bus);
    }
}

typedef struct
{
  MpBus *bus;
  const char *name;
  const char *sender;
} Delivery;

static void
deliver_item (GVariant *data,
              GError   *error,
              gpointer  user_data)
{
  Delivery *d = user_data;
  const MpBusFuncs *funcs = g_atomic_pointer_get (&bus_funcs);

  if (funcs != NULL)
    funcs->received (d->bus, d->name, d->sender, data, error);
  else
    {
      g_clear_pointer (&data, g_variant_unref);
      g_clear_error (&error);
    }
}

static void on_echo (MpBus *self);

/* What the filter returns for an mpport signal it handled: nothing more to do with it on
 * mpport's own connection (GDBus's dispatch would only look for subscribers there are
 * none of), the message itself on an application's connection, whose own subscriptions
 * may want it. Releases the filter's reference on @bus (outside buses_lock: the last
 * reference takes it). */
static GDBusMessage *
consume (MpBus        *bus,
         GDBusMessage *message)
{
  gboolean drop = bus->private_connection;

  mp_bus_unref (bus);
  if (drop)
    {
      g_object_unref (message);   /* a filter owns the message it drops */
      return NULL;
    }

  return message;
}

/* Runs in GDBus's worker thread for every message of the connection, both ways. Only
 * incoming mpport signals on a subscribed path are looked at; every message is passed on
 * unchanged, so that an application's own subscriptions on a shared connection see them
 * too. */
static GDBusMessage *
bus_filter (GDBusConnection *connection,
            GDBusMessage    *message,
            gboolean         incoming,
            gpointer         user_data)
{
  const char *path;
  const char *sender;
  MpBus *bus;
  MpBusName *entry;
  char *name = NULL;
  GVariant *body;
  gboolean own;
  Delivery d;

  if (!incoming ||
      g_dbus_message_get_message_type (message) != G_DBUS_MESSAGE_TYPE_SIGNAL ||
      g_strcmp0 (g_dbus_message_get_interface (message), MP_WIRE_INTERFACE) != 0 ||
      g_strcmp0 (g_dbus_message_get_member (message), MP_WIRE_MEMBER) != 0 ||
      (path = g_dbus_message_get_path (message)) == NULL)
    return message;

  sender = g_dbus_message_get_sender (message);

  g_mutex_lock (&buses_lock);
  bus = lookup_locked (connection);
  own = bus != NULL && is_own_sender_locked (sender);
  g_mutex_unlock (&buses_lock);
  if (bus == NULL)
    return message;
  if (own)
    {
      /* Our own post, echoed by the bus: local channels had it without the bus. The echo of
       * this connection's own signal tells its sending side the bus has it. (The unref
       * takes buses_lock: never under it.) */
      if (g_strcmp0 (sender, bus->unique_name) == 0)
        on_echo (bus);
      return consume (bus, message);
    }

  g_mutex_lock (&bus->lock);
  entry = g_hash_table_lookup (bus->names, path);
  if (entry != NULL)
    name = g_strdup (entry->name);
  g_mutex_unlock (&bus->lock);

  if (name != NULL)
    {
      body = g_dbus_message_get_body (message);
      if (body == NULL)
        body = g_variant_new ("()");
      g_variant_ref_sink (body);

      d.bus = bus;
      d.name = name;
      d.sender = sender;
      mp_wire_decode_body (body, name, deliver_item, &d);

      g_variant_unref (body);
      g_free (name);
    }

  return consume (bus, message);
}

/* Makes the MpBus of @connection; buses_lock held, none there yet. */
static MpBus *
bus_new_locked (GDBusConnection *connection)
{
  MpBus *self = g_new0 (MpBus, 1);

  g_atomic_ref_count_init (&self->ref_count);
  self->connection = g_object_ref (connection);
  self->unique_name = g_strdup (g_dbus_connection_get_unique_name (connection));
  g_mutex_init (&self->lock);
  g_cond_init (&self->cond);
  g_mutex_init (&self->send_lock);
  g_mutex_init (&self->out_lock);
  g_cond_init (&self->out_cond);
  g_queue_init (&self->outbox);
  self->names = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, bus_name_free);

  if (buses == NULL)
    buses = g_hash_table_new (NULL, NULL);
  g_hash_table_insert (buses, connection, self);

  self->closed_id = g_signal_connect (connection, "closed", G_CALLBACK (on_connection_closed),
                                      NULL);
  self->filter_id = g_dbus_connection_add_filter (connection, bus_filter, NULL, NULL);

  /* Closed before we were looking: nobody will emit "closed" for us any more. */
  if (g_dbus_connection_is_closed (connection))
    g_atomic_int_set (&self->lost, 1);

  return self;
}

/* The private session connection is made on mpport's worker thread, which iterates the
 * context it was made on: GDBus emits "closed" there, whatever the application's threads
 * do (the thread that asked for the bus may run no main loop at all). */

typedef struct
{
  GMutex lock;
  GCond cond;
  gboolean done;
  GCancellable *cancellable;
  GDBusConnection *connection;
  GError *error;
} OpenSession;

static gboolean
open_session_on_worker (gpointer data)
{
  OpenSession *op = data;
  g_autofree char *address = NULL;
  GDBusConnection *connection = NULL;
  GError *error = NULL;

  address = g_dbus_address_get_for_bus_sync (G_BUS_TYPE_SESSION, op->cancellable, &error);
  if (address != NULL)
    connection = g_dbus_connection_new_for_address_sync (address,
                                                         G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                         G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                                         NULL, op->cancellable, &error);
  if (connection != NULL)
    g_dbus_connection_set_exit_on_close (connection, FALSE);

  g_mutex_lock (&op->lock);
  op->connection = connection;
  op->error = error;
  op->done = TRUE;
  g_cond_signal (&op->cond);
  g_mutex_unlock (&op->lock);

  return G_SOURCE_REMOVE;
}

static GDBusConnection *
open_session_connection (GCancellable  *cancellable,
                         GError       **error)
{
  OpenSession op = { .cancellable = cancellable };

  g_mutex_init (&op.lock);
  g_cond_init (&op.cond);
  g_main_context_invoke (mp_worker_context (), open_session_on_worker, &op);
  g_mutex_lock (&op.lock);
  while (!op.done)
    g_cond_wait (&op.cond, &op.lock);
  g_mutex_unlock (&op.lock);
  g_cond_clear (&op.cond);
  g_mutex_clear (&op.lock);

  if (op.error != NULL)
    g_propagate_error (error, op.error);

  return op.connection;
}

MpBus *
mp_bus_get_sync (GDBusConnection  *connection,
                 GCancellable     *cancellable,
                 GError          **error)
{
  g_autoptr(GDBusConnection) opened = NULL;
  MpBus *bus;

  if (connection != NULL)
    {
      if (g_dbus_connection_get_unique_name (connection) == NULL)
        {
          g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               _("The connection is not a connection to a message bus"));
          return NULL;
        }

      g_mutex_lock (&buses_lock);
      bus = lookup_locked (connection);
      if (bus == NULL)
        bus = bus_new_locked (connection);
      g_mutex_unlock (&buses_lock);
      return bus;
    }

  g_mutex_lock (&buses_lock);
  /* Closed but not yet known lost ("closed" runs later, on the worker thread): reconnect. */
  if (session_bus != NULL && !mp_bus_is_lost (session_bus) &&
      !g_dbus_connection_is_closed (session_bus->connection))
    {
      bus = mp_bus_ref (session_bus);
      g_mutex_unlock (&buses_lock);
      return bus;
    }
  g_mutex_unlock (&buses_lock);

  /* Outside the lock: connecting takes a while. Two threads may both connect; the first to
   * come back wins and the other connection is closed. */
  opened = open_session_connection (cancellable, error);
  if (opened == NULL)
    return NULL;

  g_mutex_lock (&buses_lock);
  if (session_bus == NULL || mp_bus_is_lost (session_bus) ||
      g_dbus_connection_is_closed (session_bus->connection))
    {
      MpBus *old = g_steal_pointer (&session_bus);

      session_bus = bus_new_locked (opened);
      session_bus->private_connection = TRUE;
      bus = mp_bus_ref (session_bus);
      g_clear_object (&opened);
      g_mutex_unlock (&buses_lock);
      if (old != NULL)
        mp_bus_unref (old);
    }
  else
    {
      bus = mp_bus_ref (session_bus);
      g_mutex_unlock (&buses_lock);
      g_dbus_connection_close (opened, NULL, NULL, NULL);
    }

  return bus;
}

static void
wake_waiters (GCancellable *cancellable,
              gpointer      data)
{
  MpBus *self = data;

  g_mutex_lock (&self->lock);
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
}

/* Counts a subscriber of @entry out; removes the entry if it was the last. With the lock
 * held; returns whether the rule must be removed from the bus (it was acknowledged). */
static gboolean
leave_locked (MpBus     *self,
              MpBusName *entry,
              char     **rule)
{
  g_assert (entry->n_subscribers > 0);

  if (--entry->n_subscribers > 0)
    return FALSE;

  if (entry->state == NAME_READY)
    *rule = g_strdup (entry->rule);
  g_hash_table_remove (self->names, entry->path);

  return *rule != NULL;
}

static void
remove_rule (MpBus *self,
             char  *rule)
{
  if (!mp_bus_is_lost (self))
    /* No callback: sent with NO_REPLY_EXPECTED; nothing to wait for. */
    g_dbus_connection_call (self->connection, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                            "org.freedesktop.DBus", "RemoveMatch", g_variant_new ("(s)", rule),
                            NULL, G_DBUS_CALL_FLAGS_NONE, -1, NULL, NULL, NULL);
  g_free (rule);
}

gboolean
mp_bus_subscribe_sync (MpBus         *self,
                       const char    *name,
                       GCancellable  *cancellable,
                       GError       **error)
{
  g_autofree char *path = mp_wire_path_for_name (name);
  MpBusName *entry;
  gboolean first = FALSE;
  gboolean ok;
  char *rule = NULL;

  if (mp_bus_is_lost (self))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_CLOSED, _("The bus connection is closed"));
      return FALSE;
    }

  g_mutex_lock (&self->lock);
  entry = g_hash_table_lookup (self->names, path);
  if (entry == NULL)
    {
      entry = g_new0 (MpBusName, 1);
      entry->name = g_strdup (name);
      entry->path = g_steal_pointer (&path);
      entry->rule = g_strdup_printf ("type='signal',interface='%s',member='%s',path='%s'",
                                     MP_WIRE_INTERFACE, MP_WIRE_MEMBER, entry->path);
      entry->state = NAME_PENDING;
      g_hash_table_insert (self->names, entry->path, entry);
      first = TRUE;
    }
  entry->n_subscribers++;

  if (first)
    {
      g_autoptr(GVariant) reply = NULL;
      GError *failure = NULL;
      g_autofree char *add = g_strdup (entry->rule);

      g_mutex_unlock (&self->lock);
      /* Not cancellable: once sent, whether the rule exists would be unknown. It is quick. */
      reply = g_dbus_connection_call_sync (self->connection, "org.freedesktop.DBus",
                                           "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                           "AddMatch", g_variant_new ("(s)", add), NULL,
                                           G_DBUS_CALL_FLAGS_NONE, -1, NULL, &failure);
      g_mutex_lock (&self->lock);
      if (reply != NULL)
        entry->state = NAME_READY;
      else
        {
          entry->state = NAME_FAILED;
          entry->error = failure;
        }
      g_cond_broadcast (&self->cond);
    }
  else
    {
      gulong cancelled_id = 0;

      if (cancellable != NULL)
        {
          /* Connected with the lock released: the handler takes it. */
          g_mutex_unlock (&self->lock);
          cancelled_id = g_cancellable_connect (cancellable, G_CALLBACK (wake_waiters), self, NULL);
          g_mutex_lock (&self->lock);
        }
      while (entry->state == NAME_PENDING && !g_cancellable_is_cancelled (cancellable) &&
             !mp_bus_is_lost (self))
        g_cond_wait (&self->cond, &self->lock);
      if (cancelled_id != 0)
        {
          g_mutex_unlock (&self->lock);
          g_cancellable_disconnect (cancellable, cancelled_id);
          g_mutex_lock (&self->lock);
        }
    }

  ok = entry->state == NAME_READY && !g_cancellable_is_cancelled (cancellable);
  if (!ok)
    {
      if (g_cancellable_set_error_if_cancelled (cancellable, error))
        ;
      else if (entry->state == NAME_FAILED)
        g_propagate_prefixed_error (error, g_error_copy (entry->error),
                                    _("The bus refused the subscription: "));
      else
        g_set_error_literal (error, MP_ERROR, MP_ERROR_CLOSED, _("The bus connection is closed"));
      leave_locked (self, entry, &rule);
    }
  g_mutex_unlock (&self->lock);

  if (rule != NULL)
    remove_rule (self, rule);

  return ok;
}

void
mp_bus_unsubscribe (MpBus      *self,
                    const char *name)
{
  g_autofree char *path = mp_wire_path_for_name (name);
  MpBusName *entry;
  char *rule = NULL;

  g_mutex_lock (&self->lock);
  entry = g_hash_table_lookup (self->names, path);
  g_assert (entry != NULL);
  leave_locked (self, entry, &rule);
  g_mutex_unlock (&self->lock);

  if (rule != NULL)
    remove_rule (self, rule);
}

/* After a post waited this long for the echo of what was on the way, it is sent anyway. */
#define ECHO_TIMEOUT_MS 20

/* Sends the posts taken from the outbox (out_lock released), grouped by name into bodies
 * under the cap, in order. The caller counted them in_flight beforehand (one per body, see
 * count_bodies ()), so that no post overtakes them. */
static void
send_posts (MpBus  *self,
            GQueue *posts)
{
  GPtrArray *items = g_ptr_array_new ();
  OutPost *post;

  while ((post = g_queue_pop_head (posts)) != NULL)
    {
      const char *name = post->name;
      gsize size = mp_wire_body_base_size (name) + mp_wire_item_size (post->item);
      g_autofree char *path = mp_wire_path_for_name (name);
      g_autoptr(GVariant) body = NULL;
      GList *next;

      /* This post and the ones after it of the same name, while they fit. */
      g_ptr_array_set_size (items, 0);
      g_ptr_array_add (items, g_variant_ref (post->item));
      while ((next = g_queue_peek_head_link (posts)) != NULL &&
             strcmp (((OutPost *) next->data)->name, name) == 0 &&
             size + mp_wire_item_size (((OutPost *) next->data)->item) <= MP_WIRE_MAX_BODY)
        {
          OutPost *more = g_queue_pop_head (posts);

          size += mp_wire_item_size (more->item);
          g_ptr_array_add (items, g_variant_ref (more->item));
          out_post_free (more);
        }
      body = mp_wire_build_body (name, (GVariant *const *) items->pdata, items->len);
      for (guint i = 0; i < items->len; i++)
        g_variant_unref (items->pdata[i]);

      if (!mp_bus_is_lost (self))
        g_dbus_connection_emit_signal (self->connection, NULL, path, MP_WIRE_INTERFACE,
                                       MP_WIRE_MEMBER, body, NULL);
      out_post_free (post);
    }
  g_ptr_array_unref (items);
}

/* How many signals send_posts () makes of @posts. */
static guint
count_bodies (GQueue *posts)
{
  const char *name = NULL;
  gsize size = 0;
  guint n = 0;

  for (GList *l = posts->head; l != NULL; l = l->next)
    {
      OutPost *post = l->data;
      gsize item = mp_wire_item_size (post->item);

      if (name == NULL || strcmp (name, post->name) != 0 || size + item > MP_WIRE_MAX_BODY)
        {
          name = post->name;
          size = mp_wire_body_base_size (name);
          n++;
        }
      size += item;
    }

  return n;
}

/* Takes the whole outbox and counts it in flight; out_lock held. */
static void
take_outbox_locked (MpBus  *self,
                    GQueue *posts)
{
  *posts = self->outbox;
  g_queue_init (&self->outbox);
  self->in_flight += count_bodies (posts);
  g_cond_broadcast (&self->out_cond);
}

/* Our own signal came back from the bus (GDBus's worker thread): one fewer on the way; the
 * last one sends what waited meanwhile. */
static void
on_echo (MpBus *self)
{
  GQueue posts = G_QUEUE_INIT;

  g_mutex_lock (&self->send_lock);
  g_mutex_lock (&self->out_lock);
  if (self->in_flight > 0)
    self->in_flight--;
  if (self->in_flight == 0 && self->outbox.length > 0)
    take_outbox_locked (self, &posts);
  g_mutex_unlock (&self->out_lock);
  send_posts (self, &posts);
  g_mutex_unlock (&self->send_lock);
}

/* The worker thread's timer: the echoes did not come in time; send what waits, and count
 * only what is sent now as on the way. */
static gboolean
on_echo_timeout (gpointer data)
{
  MpBus *self = data;
  GQueue posts = G_QUEUE_INIT;

  g_mutex_lock (&self->send_lock);
  g_mutex_lock (&self->out_lock);
  self->fallback = FALSE;
  if (self->outbox.length > 0)
    {
      self->in_flight = 0;
      take_outbox_locked (self, &posts);
    }
  g_mutex_unlock (&self->out_lock);
  send_posts (self, &posts);
  g_mutex_unlock (&self->send_lock);

  return G_SOURCE_REMOVE;
}

static gboolean
arm_fallback_on_worker (gpointer data)
{
  GSource *timer = g_timeout_source_new (ECHO_TIMEOUT_MS);

  g_source_set_callback (timer, on_echo_timeout, mp_bus_ref (data), (GDestroyNotify) mp_bus_unref);
  g_source_attach (timer, mp_worker_context ());
  g_source_unref (timer);

  return G_SOURCE_REMOVE;
}

gboolean
mp_bus_send (MpBus       *self,
             const char  *name,
             GVariant    *item,
             GError     **error)
{
  gboolean direct = FALSE;
  gboolean arm = FALSE;

  if (mp_bus_is_lost (self) || g_dbus_connection_is_closed (self->connection))
    {
      bus_lose (self);
      g_set_error_literal (error, MP_ERROR, MP_ERROR_CLOSED, _("The bus connection is closed"));
      return FALSE;
    }

  g_mutex_lock (&self->send_lock);
  g_mutex_lock (&self->out_lock);
  if (self->in_flight == 0)
    {
      self->in_flight = 1;
      direct = TRUE;
    }
  else
    {
      OutPost *post = g_new (OutPost, 1);

      post->name = g_strdup (name);
      post->item = g_variant_ref (item);
      g_queue_push_tail (&self->outbox, post);
      if (!self->fallback)
        self->fallback = arm = TRUE;
    }
  g_mutex_unlock (&self->out_lock);

  if (direct)
    {
      g_autofree char *path = mp_wire_path_for_name (name);
      g_autoptr(GVariant) body = mp_wire_build_body (name, &item, 1);
      GError *failure = NULL;
      gboolean sent;

      sent = g_dbus_connection_emit_signal (self->connection, NULL, path, MP_WIRE_INTERFACE,
                                            MP_WIRE_MEMBER, body, &failure);
      g_mutex_unlock (&self->send_lock);
      if (!sent)
        {
          /* Nothing went: no echo will come. */
          on_echo (self);
          if (g_error_matches (failure, G_IO_ERROR, G_IO_ERROR_CLOSED))
            {
              bus_lose (self);
              g_clear_error (&failure);
              g_set_error_literal (error, MP_ERROR, MP_ERROR_CLOSED,
                                   _("The bus connection is closed"));
            }
          else
            g_propagate_error (error, failure);
          return FALSE;
        }
    }
  else
    g_mutex_unlock (&self->send_lock);

  if (arm)
    g_main_context_invoke_full (mp_worker_context (), G_PRIORITY_DEFAULT, arm_fallback_on_worker,
                                mp_bus_ref (self), (GDestroyNotify) mp_bus_unref);

  return TRUE;
}

void
mp_bus_flush (MpBus *self)
{
  g_mutex_lock (&self->out_lock);
  while (self->outbox.length > 0 && !mp_bus_is_lost (self))
    g_cond_wait (&self->out_cond, &self->out_lock);
  g_mutex_unlock (&self->out_lock);

  /* Whoever took the outbox holds send_lock until it has emitted it all: wait for that. */
  g_mutex_lock (&self->send_lock);
  g_mutex_unlock (&self->send_lock);

  if (!mp_bus_is_lost (self))
    g_dbus_connection_flush_sync (self->connection, NULL, NULL);
}
