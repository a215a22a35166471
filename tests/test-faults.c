/* test-faults.c: a thread drops its GMainContext while it owns started ports and channels
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The contract: "When a port's or channel's GMainContext is finalized (its
 * thread quit and dropped it), its started ports and channels close: the
 * peers get "close", everything is finalized."
 *
 * /mpport/faults/context-drop/owned
 *   Worker threads each own started ports (some referenced only by their
 *   sources, some still held by the worker), ports they received in transfer
 *   lists and started, and BroadcastChannels (some held only by the name
 *   table). They echo traffic from the main thread, then quit their loop
 *   with more messages, ports and broadcasts queued and undelivered, and
 *   drop their context. Checked: the context itself is finalized; every peer
 *   on the main thread gets "notify::closed" then "close" exactly once, after
 *   exactly the echoes of what was delivered; the peers of ports carried in
 *   undelivered messages get "close" too; the dead channels are closed and
 *   receive nothing more while the other channels of their names still do;
 *   every object on the worker side is finalized.
 *
 * /mpport/faults/context-drop/racing
 *   The same drop while other threads keep posting (some posts carrying
 *   ports) to the worker's ports and broadcasting to its channels' names, at
 *   random moments of its run, many rounds. No crash, no hang; every peer
 *   reaches the close marker after exactly the echoes of what the worker
 *   handled; every carried port's peer sees "close"; everything is finalized.
 *
 * Environment:
 *   MP_STRESS_SCALE=X     multiply the racing rounds by X (default 1)
 *   MP_STRESS_TIMEOUT=S   seconds a wait may take before failing (default 120)
 */

#include <mpport/mpport.h>

#include "mp-test-util.h"

/* Iterates @context until @done (@data) holds, failing at the deadline. */
static void
iterate_until (GMainContext *context,
               gboolean    (*done) (gpointer data),
               gpointer      data,
               const char   *what)
{
  gint64 deadline = stress_deadline ();

  while (!done (data))
    {
      if (g_get_monotonic_time () > deadline)
        g_error ("timed out waiting for %s", what);
      if (!g_main_context_iteration (context, FALSE))
        g_usleep (200);
    }
}

static void
broadcast_or_die (MpBroadcastChannel *channel,
                  GVariant           *data)
{
  GError *error = NULL;

  g_assert_true (mp_broadcast_channel_post_message (channel, data, &error));
  g_assert_no_error (error);
}

/* A source that never dispatches: its destroy notify tells that the context
 * it is attached to was finalized. */
static gboolean
never_dispatched (gpointer data)
{
  g_assert_not_reached ();
  return G_SOURCE_REMOVE;
}

static void
sentinel_destroyed (gpointer data)
{
  g_atomic_int_set ((gint *) data, TRUE);
}

static void
attach_sentinel (GMainContext *context,
                 gint         *destroyed)
{
  GSource *source = g_timeout_source_new_seconds (3600);

  g_source_set_callback (source, never_dispatched, destroyed, sentinel_destroyed);
  g_source_attach (source, context);
  g_source_unref (source);
}

/* Echoes whatever arrives back through the same port; starts ports that
 * arrive in transfer lists (on the same context) and echoes on them too. */
static void on_echo_message (MpMessagePort *port, MpMessage *message, gpointer user_data);

static void
start_echo (MpMessagePort *port,
            gint          *handled)
{
  g_signal_connect (port, "message", G_CALLBACK (on_echo_message), handled);
  mp_message_port_start (port);
}

static void
on_echo_message (MpMessagePort *port,
                 MpMessage     *message,
                 gpointer       user_data)
{
  gint *handled = user_data;
  GPtrArray *ports = mp_message_get_ports (message);
  guint i;

  g_atomic_int_inc (handled);
  for (i = 0; i < ports->len; i++)
    start_echo (g_ptr_array_index (ports, i), handled);
  /* post_message() takes its own reference (it sinks floating ones only). */
  post_or_die (port, mp_message_get_data (message), NULL);
}

/* ------------------------------------------------------------------ */
/* A main-side port that records what it hears                          */
/* ------------------------------------------------------------------ */

typedef struct
{
  MpMessagePort *port;   /* strong */
  guint messages;
  guint notify_closed;
  guint closes;
} Peer;

static void
on_peer_message (MpMessagePort *port,
                 MpMessage     *message,
                 gpointer       user_data)
{
  Peer *peer = user_data;

  g_assert_cmpuint (peer->closes, ==, 0);
  peer->messages++;
}

static void
on_peer_notify_closed (GObject    *object,
                       GParamSpec *pspec,
                       gpointer    user_data)
{
  Peer *peer = user_data;

  g_assert_cmpuint (peer->closes, ==, 0);
  peer->notify_closed++;
}

static void
on_peer_close (MpMessagePort *port,
               gpointer       user_data)
{
  Peer *peer = user_data;

  g_assert_cmpuint (peer->notify_closed, ==, 1);
  peer->closes++;
}

/* Takes @port (a new reference) and starts it on the thread-default context. */
static void
peer_init (Peer          *peer,
           MpMessagePort *port)
{
  peer->port = port;
  peer->messages = peer->notify_closed = peer->closes = 0;
  g_signal_connect (port, "message", G_CALLBACK (on_peer_message), peer);
  g_signal_connect (port, "notify::closed", G_CALLBACK (on_peer_notify_closed), peer);
  g_signal_connect (port, "close", G_CALLBACK (on_peer_close), peer);
  mp_message_port_start (port);
}

static void
peer_finish (Peer *peer)
{
  g_assert_cmpuint (peer->closes, ==, 1);
  g_assert_true (mp_message_port_is_closed (peer->port));
  g_signal_handlers_disconnect_by_data (peer->port, peer);
  g_assert_finalize_object (g_steal_pointer (&peer->port));
}

/* ------------------------------------------------------------------ */
/* /mpport/faults/context-drop/owned                                    */
/* ------------------------------------------------------------------ */

#define OWNED_WORKERS     4
#define OWNED_PORTS       32    /* per worker */
#define OWNED_CARRIED     8     /* ports carried to each worker and started there */
#define OWNED_QUEUED_CARRIED 8  /* ports carried in messages never delivered */
#define OWNED_CHANNELS    8     /* BroadcastChannels per worker, two per name */
#define OWNED_NAMES       (OWNED_CHANNELS / 2)
#define OWNED_ECHOES      5     /* messages per port delivered and echoed */
#define OWNED_QUEUED      3     /* messages per port queued when the context goes */
#define OWNED_BROADCASTS  5     /* delivered per name */
#define OWNED_QUEUED_BROADCASTS 3

typedef struct
{
  guint id;
  GThread *thread;
  GMainLoop *loop;                          /* the worker's; quit by main */
  Gate ready;                               /* worker: everything is started */
  Gate stopped;                             /* worker: no longer iterating */
  Gate drop;                                /* main: drop the context now */

  MpMessagePort *ports[OWNED_PORTS];        /* given by main: port2 of each channel */
  gint handled;                             /* atomic: messages the worker echoed */
  gint sentinel;                            /* atomic: the context was finalized */

  /* Worker side, weakly watched by main once the worker is gone. */
  gpointer port_watch[OWNED_PORTS];
  MpBroadcastChannel *channels[OWNED_CHANNELS];   /* worker's ref, or NULL if dropped */
  gpointer channel_watch[OWNED_CHANNELS];
  gint channel_received[OWNED_CHANNELS];    /* atomic */
  char *names[OWNED_NAMES];
} OwnedWorker;

static void
on_owned_channel_message (MpBroadcastChannel *channel,
                          MpMessage          *message,
                          gpointer            user_data)
{
  g_atomic_int_inc ((gint *) user_data);
}

static gpointer
owned_worker_func (gpointer data)
{
  OwnedWorker *w = data;
  GMainContext *context = g_main_context_new ();
  guint i;

  g_main_context_push_thread_default (context);
  w->loop = g_main_loop_new (context, FALSE);
  attach_sentinel (context, &w->sentinel);

  for (i = 0; i < OWNED_PORTS; i++)
    {
      start_echo (w->ports[i], &w->handled);
      g_assert_true (mp_message_port_get_context (w->ports[i]) == context);
      w->port_watch[i] = w->ports[i];
      g_object_add_weak_pointer (G_OBJECT (w->ports[i]), &w->port_watch[i]);
      /* Even ones: kept alive by their source only. */
      if (i % 2 == 0)
        g_clear_object (&w->ports[i]);
    }

  for (i = 0; i < OWNED_CHANNELS; i++)
    {
      MpBroadcastChannel *channel = mp_broadcast_channel_new (w->names[i / 2]);

      g_assert_true (mp_broadcast_channel_get_context (channel) == context);
      g_signal_connect (channel, "message", G_CALLBACK (on_owned_channel_message),
                        &w->channel_received[i]);
      w->channel_watch[i] = channel;
      g_object_add_weak_pointer (G_OBJECT (channel), &w->channel_watch[i]);
      /* Odd ones: held by the name table only. */
      if (i % 2 == 1)
        g_object_unref (channel);
      else
        w->channels[i] = channel;
    }

  gate_open (&w->ready);
  g_main_loop_run (w->loop);
  gate_open (&w->stopped);

  /* Main queues more work on this context now; none of it is dispatched. */
  gate_wait (&w->drop);

  g_main_context_pop_thread_default (context);
  g_main_loop_unref (w->loop);
  w->loop = NULL;
  g_main_context_unref (context);

  /* The context is gone: what this thread still holds is closed. */
  g_assert_true (g_atomic_int_get (&w->sentinel));
  for (i = 0; i < OWNED_PORTS; i++)
    {
      if (w->ports[i] == NULL)
        continue;
      g_assert_true (mp_message_port_is_closed (w->ports[i]));
      g_assert_null (mp_message_port_get_context (w->ports[i]));
      g_clear_object (&w->ports[i]);
    }
  for (i = 0; i < OWNED_CHANNELS; i++)
    {
      GError *error = NULL;

      if (w->channels[i] == NULL)
        continue;
      g_assert_true (mp_broadcast_channel_is_closed (w->channels[i]));
      g_assert_null (mp_broadcast_channel_get_context (w->channels[i]));
      g_assert_false (mp_broadcast_channel_post_message (w->channels[i], NULL, &error));
      g_assert_error (error, MP_ERROR, MP_ERROR_INVALID_STATE);
      g_clear_error (&error);
      g_clear_object (&w->channels[i]);
    }

  return NULL;
}

typedef struct
{
  OwnedWorker *workers;
  Peer *peers;           /* OWNED_WORKERS * OWNED_PORTS */
  Peer *carried;         /* OWNED_WORKERS * OWNED_CARRIED, delivered and started */
  Peer *queued_carried;  /* OWNED_WORKERS * OWNED_QUEUED_CARRIED, never delivered */
} Owned;

/* Echoes due on link @i of a worker: one per message, and one more on the
 * first OWNED_CARRIED links for the message that carried a port. */
static guint
owned_expected_echoes (guint i)
{
  return OWNED_ECHOES + (i < OWNED_CARRIED ? 1 : 0);
}

static gboolean
owned_echoes_done (gpointer data)
{
  Owned *o = data;
  guint i;

  for (i = 0; i < OWNED_WORKERS * OWNED_PORTS; i++)
    if (o->peers[i].messages < owned_expected_echoes (i % OWNED_PORTS))
      return FALSE;
  for (i = 0; i < OWNED_WORKERS * OWNED_CARRIED; i++)
    if (o->carried[i].messages < 1)
      return FALSE;
  return TRUE;
}

static gboolean
owned_broadcasts_done (gpointer data)
{
  Owned *o = data;
  guint w, i;

  for (w = 0; w < OWNED_WORKERS; w++)
    for (i = 0; i < OWNED_CHANNELS; i++)
      if (g_atomic_int_get (&o->workers[w].channel_received[i]) < OWNED_BROADCASTS)
        return FALSE;
  return TRUE;
}

static gboolean
owned_closes_done (gpointer data)
{
  Owned *o = data;
  guint i;

  for (i = 0; i < OWNED_WORKERS * OWNED_PORTS; i++)
    if (o->peers[i].closes == 0)
      return FALSE;
  for (i = 0; i < OWNED_WORKERS * OWNED_CARRIED; i++)
    if (o->carried[i].closes == 0)
      return FALSE;
  for (i = 0; i < OWNED_WORKERS * OWNED_QUEUED_CARRIED; i++)
    if (o->queued_carried[i].closes == 0)
      return FALSE;
  return TRUE;
}

typedef struct
{
  MpBroadcastChannel *channel;
  gint received;
} Witness;

static void
on_witness_message (MpBroadcastChannel *channel,
                    MpMessage          *message,
                    gpointer            user_data)
{
  Witness *witness = user_data;

  witness->received++;
}

static gboolean
witnesses_done (gpointer data)
{
  Witness *witnesses = data;
  guint i;

  for (i = 0; i < OWNED_WORKERS * OWNED_NAMES; i++)
    if (witnesses[i].received < 1)
      return FALSE;
  return TRUE;
}

/* Makes a channel, keeps port1 as a started peer and returns port2 (a new
 * reference) to be carried away. */
static MpMessagePort *
carried_port_new (Peer *peer)
{
  MpMessageChannel *channel = mp_message_channel_new ();
  MpMessagePort *port2 = g_object_ref (mp_message_channel_get_port2 (channel));

  peer_init (peer, g_object_ref (mp_message_channel_get_port1 (channel)));
  g_object_unref (channel);

  return port2;
}

static void
test_context_drop_owned (void)
{
  GMainContext *context = g_main_context_new ();
  OwnedWorker workers[OWNED_WORKERS];
  Peer peers[OWNED_WORKERS * OWNED_PORTS];
  Peer carried[OWNED_WORKERS * OWNED_CARRIED];
  Peer queued_carried[OWNED_WORKERS * OWNED_QUEUED_CARRIED];
  Witness witnesses[OWNED_WORKERS * OWNED_NAMES];
  MpBroadcastChannel *senders[OWNED_WORKERS * OWNED_NAMES];
  Owned o = { workers, peers, carried, queued_carried };
  guint w, i, k;

  g_main_context_push_thread_default (context);
  memset (workers, 0, sizeof workers);

  for (w = 0; w < OWNED_WORKERS; w++)
    {
      OwnedWorker *worker = &workers[w];

      worker->id = w;
      gate_init (&worker->ready);
      gate_init (&worker->stopped);
      gate_init (&worker->drop);
      for (i = 0; i < OWNED_NAMES; i++)
        {
          guint n = w * OWNED_NAMES + i;

          worker->names[i] = g_strdup_printf ("faults/owned/w%u/n%u", w, i);
          senders[n] = mp_broadcast_channel_new (worker->names[i]);
          witnesses[n].channel = mp_broadcast_channel_new (worker->names[i]);
          witnesses[n].received = 0;
          g_signal_connect (witnesses[n].channel, "message",
                            G_CALLBACK (on_witness_message), &witnesses[n]);
        }
      for (i = 0; i < OWNED_PORTS; i++)
        {
          MpMessageChannel *channel = mp_message_channel_new ();

          peer_init (&peers[w * OWNED_PORTS + i],
                     g_object_ref (mp_message_channel_get_port1 (channel)));
          worker->ports[i] = g_object_ref (mp_message_channel_get_port2 (channel));
          g_object_unref (channel);
        }
      worker->thread = g_thread_new ("faults-owned", owned_worker_func, worker);
    }

  for (w = 0; w < OWNED_WORKERS; w++)
    gate_wait (&workers[w].ready);

  /* Live traffic: echoes, ports carried over and started there, broadcasts. */
  for (w = 0; w < OWNED_WORKERS; w++)
    {
      for (i = 0; i < OWNED_PORTS; i++)
        for (k = 0; k < OWNED_ECHOES; k++)
          post_or_die (peers[w * OWNED_PORTS + i].port, g_variant_new_uint32 (k), NULL);
      for (i = 0; i < OWNED_CARRIED; i++)
        {
          Peer *peer = &carried[w * OWNED_CARRIED + i];
          MpMessagePort *port = carried_port_new (peer);

          /* The carrying message is echoed too; then the carried port echoes
           * what its peer posts. */
          post_or_die (peers[w * OWNED_PORTS + i].port, g_variant_new_uint32 (OWNED_ECHOES), port);
          g_object_unref (port);
          post_or_die (peer->port, g_variant_new_string ("carried"), NULL);
        }
      for (i = 0; i < OWNED_NAMES; i++)
        for (k = 0; k < OWNED_BROADCASTS; k++)
          broadcast_or_die (senders[w * OWNED_NAMES + i], g_variant_new_uint32 (k));
    }

  iterate_until (context, owned_echoes_done, &o, "the echoes");
  iterate_until (context, owned_broadcasts_done, &o, "the broadcasts");

  /* Stop the workers' loops; queue what will never be delivered. */
  for (w = 0; w < OWNED_WORKERS; w++)
    {
      g_main_loop_quit (workers[w].loop);
      gate_wait (&workers[w].stopped);
    }
  for (w = 0; w < OWNED_WORKERS; w++)
    {
      for (i = 0; i < OWNED_PORTS; i++)
        for (k = 0; k < OWNED_QUEUED; k++)
          post_or_die (peers[w * OWNED_PORTS + i].port, g_variant_new_uint32 (100 + k), NULL);
      for (i = 0; i < OWNED_QUEUED_CARRIED; i++)
        {
          MpMessagePort *port = carried_port_new (&queued_carried[w * OWNED_QUEUED_CARRIED + i]);

          post_or_die (peers[w * OWNED_PORTS + OWNED_PORTS - 1 - i].port,
                       g_variant_new_uint32 (200), port);
          g_object_unref (port);
        }
      for (i = 0; i < OWNED_NAMES; i++)
        for (k = 0; k < OWNED_QUEUED_BROADCASTS; k++)
          broadcast_or_die (senders[w * OWNED_NAMES + i], g_variant_new_uint32 (100 + k));
    }

  /* Drop the contexts. */
  for (w = 0; w < OWNED_WORKERS; w++)
    {
      gate_open (&workers[w].drop);
      g_thread_join (workers[w].thread);
      g_assert_true (g_atomic_int_get (&workers[w].sentinel));
    }

  /* Every peer hears "close" once, after exactly the delivered echoes. */
  iterate_until (context, owned_closes_done, &o, "every peer's close");
  for (w = 0; w < OWNED_WORKERS; w++)
    {
      OwnedWorker *worker = &workers[w];
      guint echoed = 0;

      for (i = 0; i < OWNED_PORTS; i++)
        {
          Peer *peer = &peers[w * OWNED_PORTS + i];
          g_assert_cmpuint (peer->messages, ==, owned_expected_echoes (i));
          echoed += peer->messages;
        }
      for (i = 0; i < OWNED_CARRIED; i++)
        {
          g_assert_cmpuint (carried[w * OWNED_CARRIED + i].messages, ==, 1);
          echoed++;
        }
      for (i = 0; i < OWNED_QUEUED_CARRIED; i++)
        g_assert_cmpuint (queued_carried[w * OWNED_QUEUED_CARRIED + i].messages, ==, 0);
      g_assert_cmpint (g_atomic_int_get (&worker->handled), ==, (gint) echoed);

      /* The dead channels got only what was dispatched before the drop. */
      for (i = 0; i < OWNED_CHANNELS; i++)
        {
          g_assert_cmpint (g_atomic_int_get (&worker->channel_received[i]), ==, OWNED_BROADCASTS);
          g_assert_null (worker->channel_watch[i]);
        }
      for (i = 0; i < OWNED_PORTS; i++)
        g_assert_null (worker->port_watch[i]);
    }

  /* The witnesses, on live contexts, got every broadcast. */
  while (g_main_context_iteration (context, FALSE))
    ;
  for (i = 0; i < OWNED_WORKERS * OWNED_NAMES; i++)
    g_assert_cmpint (witnesses[i].received, ==, OWNED_BROADCASTS + OWNED_QUEUED_BROADCASTS);

  /* The names still work for the channels left, and only for them. */
  for (i = 0; i < OWNED_WORKERS * OWNED_NAMES; i++)
    {
      witnesses[i].received = 0;
      broadcast_or_die (senders[i], g_variant_new_string ("after"));
    }
  iterate_until (context, witnesses_done, witnesses, "the witnesses after the drop");
  while (g_main_context_iteration (context, FALSE))
    ;
  for (i = 0; i < OWNED_WORKERS * OWNED_NAMES; i++)
    g_assert_cmpint (witnesses[i].received, ==, 1);
  for (w = 0; w < OWNED_WORKERS; w++)
    for (i = 0; i < OWNED_CHANNELS; i++)
      g_assert_cmpint (g_atomic_int_get (&workers[w].channel_received[i]), ==, OWNED_BROADCASTS);

  for (i = 0; i < OWNED_WORKERS * OWNED_PORTS; i++)
    peer_finish (&peers[i]);
  for (i = 0; i < OWNED_WORKERS * OWNED_CARRIED; i++)
    peer_finish (&carried[i]);
  for (i = 0; i < OWNED_WORKERS * OWNED_QUEUED_CARRIED; i++)
    peer_finish (&queued_carried[i]);
  for (i = 0; i < OWNED_WORKERS * OWNED_NAMES; i++)
    {
      mp_broadcast_channel_close (senders[i]);
      mp_broadcast_channel_close (witnesses[i].channel);
      g_assert_finalize_object (senders[i]);
      g_assert_finalize_object (witnesses[i].channel);
    }
  while (g_main_context_iteration (context, FALSE))
    ;
  for (w = 0; w < OWNED_WORKERS; w++)
    {
      gate_clear (&workers[w].ready);
      gate_clear (&workers[w].stopped);
      gate_clear (&workers[w].drop);
      for (i = 0; i < OWNED_NAMES; i++)
        g_free (workers[w].names[i]);
    }

  g_main_context_pop_thread_default (context);
  g_main_context_unref (context);
}

/* ------------------------------------------------------------------ */
/* /mpport/faults/context-drop/racing                                   */
/* ------------------------------------------------------------------ */

#define RACING_ROUNDS      100    /* scaled by MP_STRESS_SCALE */
#define RACING_WORKERS     4
#define RACING_PORTS       16     /* per worker */
#define RACING_NAMES       2      /* per worker, two channels each */
#define RACING_HAMMERS     2
#define RACING_CARRY_PERMILLE 50
#define RACING_RUN_MAX_US  4000   /* a worker runs its loop up to this long */

typedef struct
{
  guint id;
  GThread *thread;
  guint32 seed;
  MpMessagePort *ports[RACING_PORTS];   /* port2s given by main; the worker drops them */
  gpointer port_watch[RACING_PORTS];
  gpointer channel_watch[RACING_NAMES * 2];
  char *names[RACING_NAMES];
  gint handled;       /* atomic */
  gint received;      /* atomic: broadcast deliveries */
  gint sentinel;      /* atomic */
} RacingWorker;

typedef struct
{
  RacingWorker workers[RACING_WORKERS];
  MpMessagePort *peers[RACING_WORKERS * RACING_PORTS];    /* port1s, unstarted */
  MpBroadcastChannel *senders[RACING_WORKERS * RACING_NAMES];
  gint stop;          /* atomic: hammers stop */

  GMutex lock;
  GPtrArray *carry_peers;   /* MpMessagePort *, owned: peers of carried ports */
} Racing;

typedef struct
{
  Racing *racing;
  GThread *thread;
  guint32 seed;
  guint posts;
  guint broadcasts;
} Hammer;

static void
on_racing_broadcast (MpBroadcastChannel *channel,
                     MpMessage          *message,
                     gpointer            user_data)
{
  g_atomic_int_inc ((gint *) user_data);
}

static gpointer
racing_worker_func (gpointer data)
{
  RacingWorker *w = data;
  GMainContext *context = g_main_context_new ();
  GRand *rand = g_rand_new_with_seed (w->seed);
  gint64 until;
  guint i;

  g_main_context_push_thread_default (context);
  attach_sentinel (context, &w->sentinel);

  for (i = 0; i < RACING_PORTS; i++)
    {
      start_echo (w->ports[i], &w->handled);
      w->port_watch[i] = w->ports[i];
      g_object_add_weak_pointer (G_OBJECT (w->ports[i]), &w->port_watch[i]);
      g_clear_object (&w->ports[i]);
    }
  for (i = 0; i < RACING_NAMES * 2; i++)
    {
      MpBroadcastChannel *channel = mp_broadcast_channel_new (w->names[i / 2]);

      g_signal_connect (channel, "message", G_CALLBACK (on_racing_broadcast), &w->received);
      w->channel_watch[i] = channel;
      g_object_add_weak_pointer (G_OBJECT (channel), &w->channel_watch[i]);
      g_object_unref (channel);
    }

  /* Run for a random while (sometimes not at all), then drop everything. */
  until = g_get_monotonic_time () + g_rand_int_range (rand, 0, RACING_RUN_MAX_US);
  while (g_get_monotonic_time () < until)
    {
      if (!g_main_context_iteration (context, FALSE))
        g_thread_yield ();
    }

  g_main_context_pop_thread_default (context);
  g_main_context_unref (context);
  g_assert_true (g_atomic_int_get (&w->sentinel));
  g_rand_free (rand);

  return NULL;
}

static gpointer
hammer_func (gpointer data)
{
  Hammer *h = data;
  Racing *r = h->racing;
  GRand *rand = g_rand_new_with_seed (h->seed);

  while (!g_atomic_int_get (&r->stop))
    {
      guint k = (guint) g_rand_int_range (rand, 0, RACING_WORKERS * RACING_PORTS);

      if (g_rand_int_range (rand, 0, 1000) < RACING_CARRY_PERMILLE)
        {
          MpMessageChannel *channel = mp_message_channel_new ();
          MpMessagePort *carried = mp_message_channel_get_port2 (channel);

          g_mutex_lock (&r->lock);
          g_ptr_array_add (r->carry_peers, g_object_ref (mp_message_channel_get_port1 (channel)));
          g_mutex_unlock (&r->lock);
          post_or_die (mp_message_channel_get_port1 (channel), g_variant_new_string ("queued"), NULL);
          post_or_die (r->peers[k], g_variant_new_uint32 (h->posts), carried);
          g_object_unref (channel);
        }
      else
        {
          post_or_die (r->peers[k], g_variant_new_uint32 (h->posts), NULL);
        }
      h->posts++;

      if (g_rand_int_range (rand, 0, 4) == 0)
        {
          broadcast_or_die (r->senders[g_rand_int_range (rand, 0, RACING_WORKERS * RACING_NAMES)],
                            g_variant_new_uint32 (h->broadcasts));
          h->broadcasts++;
        }
      if (g_rand_int_range (rand, 0, 64) == 0)
        g_thread_yield ();
    }

  g_rand_free (rand);
  return NULL;
}

static guint
drain_to_marker (MpMessagePort *port)
{
  MpMessage *message;
  guint n = 0;

  while ((message = mp_message_port_receive (port)) != NULL)
    {
      n++;
      mp_message_unref (message);
    }
  /* receive() returned NULL: the close marker was reached, nothing is left. */
  g_assert_true (mp_message_port_is_closed (port));

  return n;
}

static void
racing_round (guint   round,
              guint64 *total_posts,
              guint64 *total_echoes,
              guint64 *total_carried,
              guint64 *total_broadcasts)
{
  Racing r;
  Hammer hammers[RACING_HAMMERS];
  guint w, i;

  memset (&r, 0, sizeof r);
  g_mutex_init (&r.lock);
  r.carry_peers = g_ptr_array_new_with_free_func (g_object_unref);

  for (w = 0; w < RACING_WORKERS; w++)
    {
      RacingWorker *worker = &r.workers[w];

      worker->id = w;
      worker->seed = g_test_rand_int ();
      for (i = 0; i < RACING_NAMES; i++)
        {
          worker->names[i] = g_strdup_printf ("faults/racing/%u/w%u/n%u", round, w, i);
          /* Created on this thread's default context; they never receive
           * (each is the only channel of its name there) and only post. */
          r.senders[w * RACING_NAMES + i] = mp_broadcast_channel_new (worker->names[i]);
        }
      for (i = 0; i < RACING_PORTS; i++)
        {
          MpMessageChannel *channel = mp_message_channel_new ();

          r.peers[w * RACING_PORTS + i] = g_object_ref (mp_message_channel_get_port1 (channel));
          worker->ports[i] = g_object_ref (mp_message_channel_get_port2 (channel));
          g_object_unref (channel);
        }
    }

  for (i = 0; i < RACING_HAMMERS; i++)
    {
      hammers[i] = (Hammer) { .racing = &r, .seed = g_test_rand_int () };
      hammers[i].thread = g_thread_new ("faults-hammer", hammer_func, &hammers[i]);
    }
  for (w = 0; w < RACING_WORKERS; w++)
    r.workers[w].thread = g_thread_new ("faults-racing", racing_worker_func, &r.workers[w]);
  for (w = 0; w < RACING_WORKERS; w++)
    g_thread_join (r.workers[w].thread);

  /* The hammers were posting all along; let them go on a little on dead
   * sides, then stop. */
  g_usleep (1000);
  g_atomic_int_set (&r.stop, TRUE);
  for (i = 0; i < RACING_HAMMERS; i++)
    {
      g_thread_join (hammers[i].thread);
      *total_posts += hammers[i].posts;
      *total_broadcasts += hammers[i].broadcasts;
    }

  for (w = 0; w < RACING_WORKERS; w++)
    {
      RacingWorker *worker = &r.workers[w];
      guint echoes = 0;

      for (i = 0; i < RACING_PORTS; i++)
        {
          MpMessagePort *peer = r.peers[w * RACING_PORTS + i];

          echoes += drain_to_marker (peer);
          g_assert_finalize_object (peer);
          g_assert_null (worker->port_watch[i]);
        }
      /* Echoes come back on the links and on the carried ports the worker
       * started: their peers are drained below; count both. */
      *total_echoes += echoes;
      for (i = 0; i < RACING_NAMES * 2; i++)
        g_assert_null (worker->channel_watch[i]);
      for (i = 0; i < RACING_NAMES; i++)
        {
          mp_broadcast_channel_close (r.senders[w * RACING_NAMES + i]);
          g_assert_finalize_object (r.senders[w * RACING_NAMES + i]);
          g_free (worker->names[i]);
        }
    }

  /* Every carried port was delivered and started on a worker's context (and
   * closed with it) or dropped undelivered (and closed by finalization). */
  {
    guint handled = 0, echoes = 0;

    for (i = 0; i < r.carry_peers->len; i++)
      {
        MpMessagePort *peer = g_ptr_array_index (r.carry_peers, i);
        MpMessage *message;

        while ((message = mp_message_port_receive (peer)) != NULL)
          {
            echoes++;
            mp_message_unref (message);
          }
        g_assert_true (mp_message_port_is_closed (peer));
      }
    *total_carried += r.carry_peers->len;
    *total_echoes += echoes;

    for (w = 0; w < RACING_WORKERS; w++)
      handled += (guint) g_atomic_int_get (&r.workers[w].handled);
    /* Each handled message was echoed exactly once, on the link it came on
     * or on the carried port, and every echo reached its peer before the
     * close marker. */
    g_assert_cmpuint (handled, ==, (guint) *total_echoes);
  }

  g_ptr_array_unref (r.carry_peers);
  g_mutex_clear (&r.lock);
}

static void
test_context_drop_racing (void)
{
  guint n_rounds = stress_scaled (RACING_ROUNDS);
  guint64 posts = 0, echoes = 0, carried = 0, broadcasts = 0;
  gint64 start = g_get_monotonic_time ();
  guint round;

  for (round = 0; round < n_rounds; round++)
    {
      guint64 round_echoes = 0;

      racing_round (round, &posts, &round_echoes, &carried, &broadcasts);
      echoes += round_echoes;
    }

  g_test_message ("racing: %u rounds, %" G_GUINT64_FORMAT " posts (%" G_GUINT64_FORMAT
                  " carrying a port), %" G_GUINT64_FORMAT " echoes, %" G_GUINT64_FORMAT
                  " broadcasts, %.3f s",
                  n_rounds, posts, carried, echoes, broadcasts,
                  (g_get_monotonic_time () - start) / (double) G_TIME_SPAN_SECOND);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/mpport/faults/context-drop/owned", test_context_drop_owned);
  g_test_add_func ("/mpport/faults/context-drop/racing", test_context_drop_racing);

  return g_test_run ();
}
