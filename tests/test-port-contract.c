/* test-port-contract.c: what a new application author meets first
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The rules of the issue "Day-one fixes", each failing on the library before it:
 * - objects made with g_object_new() and no arguments are usable or inert, never a crash;
 * - a survivor whose peer closed posts without error, before and after it reaches the
 *   peer's close; only a port its own code closed (or transferred away) refuses, with
 *   MP_ERROR_INVALID_STATE; mp_message_port_is_peer_closed() tells a worker to stop;
 * - receives end with MP_ERROR_CLOSED at the end of the stream; both flavours of
 *   cancellation give one error;
 * - mp_message_new(), mp_message_port_dup_context(), mp_message_port_post(),
 *   mp_message_port_receive_timeout(), and "notify::context" on the owning thread.
 */

#include <mpport/mpport.h>

#include "mp-message-port-private.h"
#include "mp-test-util.h"

/* How many receives wait on @port (private: a test must know a blocked receive is queued
 * before it acts, without sleeping and hoping). */
static guint
n_waiting (MpMessagePort *port)
{
  MpPipeSide *side = mp_message_port_get_side (port);
  guint n;

  g_mutex_lock (&side->mutex);
  n = side->waiters != NULL ? side->waiters->waiting.length : 0;
  g_mutex_unlock (&side->mutex);

  return n;
}

typedef struct
{
  GMainContext *context;
} Fixture;

static void
fixture_setup (Fixture       *f,
               gconstpointer  data)
{
  f->context = context_push_new ();
}

static void
fixture_teardown (Fixture       *f,
                  gconstpointer  data)
{
  context_pop_free (f->context);
}

#define ADD_TEST(path, func) \
  g_test_add (path, Fixture, NULL, fixture_setup, func, fixture_teardown)

static void
assert_post_error (MpMessagePort *port,
                   GQuark         domain,
                   int            code)
{
  GError *error = NULL;

  g_assert_false (mp_message_port_post_message (port, g_variant_new_int32 (1), NULL, 0, &error));
  g_assert_error (error, domain, code);
  g_clear_error (&error);
  g_assert_false (mp_message_port_post (port, NULL, &error));
  g_assert_error (error, domain, code);
  g_clear_error (&error);
}

static void
assert_post_ok (MpMessagePort *port,
                gint32         value)
{
  GError *error = NULL;

  g_assert_true (mp_message_port_post (port, g_variant_new_int32 (value), &error));
  g_assert_no_error (error);
}

/* ------------------------------------------------------------------------ */
/* Direct construction                                                      */
/* ------------------------------------------------------------------------ */

static void
on_async_done (GObject      *source,
               GAsyncResult *result,
               gpointer      user_data)
{
  GError **error = user_data;
  MpMessage *message = mp_message_port_receive_finish (MP_MESSAGE_PORT (source), result, error);

  g_assert_null (message);
  g_assert_nonnull (*error);
}

/* g_object_new (MP_TYPE_MESSAGE_PORT) used to crash in finalize (a NULL side). It is an
 * inert, closed port now: every method answers cleanly. */
static void
test_construct_port_is_inert (Fixture       *f,
                              gconstpointer  data)
{
  MpMessagePort *port = g_object_new (MP_TYPE_MESSAGE_PORT, NULL);
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *other = g_object_new (MP_TYPE_MESSAGE_PORT, NULL);
  GError *error = NULL;
  GError *async_error = NULL;
  MpMessagePort *list[2];

  g_assert_true (mp_message_port_is_closed (port));
  g_assert_true (mp_message_port_is_peer_closed (port));
  assert_post_error (port, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_assert_null (mp_message_port_receive (port));
  g_assert_null (mp_message_port_receive_timeout (port, 0, NULL, &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_clear_error (&error);
  mp_message_port_start (port);
  g_assert_null (mp_message_port_get_context (port));
  g_assert_null (mp_message_port_dup_context (port));
  mp_message_port_close (port);
  mp_message_port_set_priority (port, G_PRIORITY_LOW);
  g_assert_cmpint (mp_message_port_get_priority (port), ==, G_PRIORITY_LOW);

  mp_message_port_receive_async (port, NULL, on_async_done, &async_error);
  WAIT_FOR (f->context, async_error != NULL);
  g_assert_error (async_error, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_clear_error (&async_error);

  /* In a transfer list it is a closed port: refused, nothing changes. */
  list[0] = port;
  g_assert_false (mp_message_port_post_message (mp_message_channel_get_port1 (channel), NULL,
                                                list, 1, &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_DATA_CLONE);
  g_clear_error (&error);
  list[1] = other;
  g_assert_false (mp_message_port_post_message (mp_message_channel_get_port1 (channel), NULL,
                                                list, 2, &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_DATA_CLONE);
  g_clear_error (&error);
  post_int (mp_message_channel_get_port1 (channel), 7);
  g_assert_cmpint (receive_int (mp_message_channel_get_port2 (channel)), ==, 7);

  g_assert_finalize_object (port);
  g_assert_finalize_object (other);
  g_assert_finalize_object (g_object_new (MP_TYPE_MESSAGE_PORT, NULL));
}

static void
test_construct_channel_is_usable (Fixture       *f,
                                  gconstpointer  data)
{
  MpMessageChannel *channel = g_object_new (MP_TYPE_MESSAGE_CHANNEL, NULL);
  MpMessagePort *port1, *port2;

  g_object_get (channel, "port1", &port1, "port2", &port2, NULL);
  post_int (port1, 1);
  post_int (port2, 2);
  g_assert_cmpint (receive_int (port2), ==, 1);
  g_assert_cmpint (receive_int (port1), ==, 2);
  g_object_unref (port1);
  g_object_unref (port2);
  g_assert_finalize_object (channel);
}

static void
count_message (MpBroadcastChannel *channel,
               MpMessage          *message,
               gpointer            user_data)
{
  guint *count = user_data;

  (*count)++;
}

/* Without a name a broadcast channel joins the channels named "". */
static void
test_construct_broadcast_without_name (Fixture       *f,
                                       gconstpointer  data)
{
  MpBroadcastChannel *a = g_object_new (MP_TYPE_BROADCAST_CHANNEL, NULL);
  MpBroadcastChannel *b = mp_broadcast_channel_new ("");
  guint count = 0;
  GError *error = NULL;

  g_assert_cmpstr (mp_broadcast_channel_get_name (a), ==, "");
  g_signal_connect (b, "message", G_CALLBACK (count_message), &count);
  g_assert_true (mp_broadcast_channel_post_message (a, g_variant_new_int32 (1), &error));
  g_assert_no_error (error);
  WAIT_FOR (f->context, count == 1);

  mp_broadcast_channel_close (a);
  mp_broadcast_channel_close (b);
  spin_context (f->context, QUIET_MSEC);
  g_assert_finalize_object (a);
  g_assert_finalize_object (b);
}

/* ------------------------------------------------------------------------ */
/* A peer's close is not the survivor's error                               */
/* ------------------------------------------------------------------------ */

static void
test_peer_closed_posts_succeed (Fixture       *f,
                                gconstpointer  data)
{
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *worker = mp_message_channel_get_port1 (channel);
  MpMessagePort *ui = mp_message_channel_get_port2 (channel);

  g_assert_false (mp_message_port_is_peer_closed (worker));
  g_assert_false (mp_message_port_is_peer_closed (ui));

  post_int (ui, 1);
  mp_message_port_close (ui);
  g_assert_true (mp_message_port_is_peer_closed (worker));
  g_assert_false (mp_message_port_is_closed (worker));

  /* Before the survivor reaches the marker... */
  assert_post_ok (worker, 10);
  g_assert_cmpint (receive_int (worker), ==, 1);
  assert_receive_null (worker);   /* reaches the marker */
  g_assert_true (mp_message_port_is_closed (worker));

  /* ...and after: never an error, the message is dropped. */
  assert_post_ok (worker, 11);
  g_assert_true (mp_message_port_is_peer_closed (worker));

  /* Its own close makes posting misuse. */
  mp_message_port_close (worker);
  assert_post_error (worker, MP_ERROR, MP_ERROR_INVALID_STATE);
  assert_post_error (ui, MP_ERROR, MP_ERROR_INVALID_STATE);
}

/* A started survivor reaches the close through its dispatch: same rule. */
static void
test_peer_closed_started_survivor (Fixture       *f,
                                   gconstpointer  data)
{
  MpMessageChannel *channel = mp_message_channel_new ();
  MpMessagePort *worker = g_object_ref (mp_message_channel_get_port1 (channel));
  MpMessagePort *ui = mp_message_channel_get_port2 (channel);

  mp_message_port_start (worker);
  mp_message_port_close (ui);
  g_object_unref (channel);
  WAIT_FOR (f->context, mp_message_port_is_closed (worker));
  assert_post_ok (worker, 1);
  assert_finalized_eventually (f->context, worker);
}

typedef struct
{
  MpMessagePort *port;
  guint n_posted;
  guint n_failed;
  guint n_after_peer_closed;
} Worker;

static gpointer
worker_thread (gpointer data)
{
  Worker *w = data;

  for (guint i = 0; i < 100000; i++)
    {
      GError *error = NULL;

      if (!mp_message_port_post (w->port, g_variant_new_uint32 (i), &error))
        {
          w->n_failed++;
          g_clear_error (&error);
        }
      w->n_posted++;
      if (mp_message_port_is_peer_closed (w->port))
        w->n_after_peer_closed++;
    }
  return NULL;
}

static void
count_and_close (MpMessagePort *port,
                 MpMessage     *message,
                 gpointer       user_data)
{
  guint *received = user_data;

  g_assert_cmpuint (g_variant_get_uint32 (mp_message_get_data (message)), ==, *received);
  if (++(*received) == 500)
    mp_message_port_close (port);
}

/* The reproducer: a worker posts progress while the UI closes its end. Every post
 * succeeds, whenever the close lands; the UI got 0..499 in order and nothing after. */
static void
test_peer_closed_worker_never_fails (Fixture       *f,
                                     gconstpointer  data)
{
  for (guint round = 0; round < 20; round++)
    {
      MpMessageChannel *channel = mp_message_channel_new ();
      MpMessagePort *ui = g_object_ref (mp_message_channel_get_port2 (channel));
      Worker w = { .port = g_object_ref (mp_message_channel_get_port1 (channel)) };
      guint received = 0;
      GThread *thread;

      g_object_unref (channel);
      g_signal_connect (ui, "message", G_CALLBACK (count_and_close), &received);
      mp_message_port_start (ui);
      thread = g_thread_new ("worker", worker_thread, &w);
      WAIT_FOR (f->context, mp_message_port_is_closed (ui));
      g_thread_join (thread);
      spin_context (f->context, QUIET_MSEC);

      g_assert_cmpuint (w.n_failed, ==, 0);
      g_assert_cmpuint (w.n_posted, ==, 100000);
      g_assert_cmpuint (received, ==, 500);
      g_assert_true (mp_message_port_is_peer_closed (w.port));
      mp_message_port_close (w.port);
      g_assert_finalize_object (w.port);
      assert_finalized_eventually (f->context, ui);
    }
}

/* ------------------------------------------------------------------------ */
/* End of stream and cancellation                                           */
/* ------------------------------------------------------------------------ */

typedef struct
{
  gboolean done;
  MpMessage *message;
  GError *error;
} Outcome;

static void
on_outcome (GObject      *source,
            GAsyncResult *result,
            gpointer      user_data)
{
  Outcome *o = user_data;

  o->message = mp_message_port_receive_finish (MP_MESSAGE_PORT (source), result, &o->error);
  o->done = TRUE;
}

static void
outcome_clear (Outcome *o)
{
  g_clear_pointer (&o->message, mp_message_unref);
  g_clear_error (&o->error);
}

static void
test_end_of_stream_is_closed (Fixture       *f,
                              gconstpointer  data)
{
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *a = mp_message_channel_get_port1 (channel);
  MpMessagePort *b = mp_message_channel_get_port2 (channel);
  Outcome waiting = { 0 }, after = { 0 }, own = { 0 };
  GError *error = NULL;

  mp_message_port_receive_async (b, NULL, on_outcome, &waiting);
  mp_message_port_close (a);
  WAIT_FOR (f->context, waiting.done);
  g_assert_error (waiting.error, MP_ERROR, MP_ERROR_CLOSED);
  g_assert_cmpstr (waiting.error->message, ==, "The other port of the channel was closed");

  /* Started after the end of the stream: the same. */
  mp_message_port_receive_async (b, NULL, on_outcome, &after);
  WAIT_FOR (f->context, after.done);
  g_assert_error (after.error, MP_ERROR, MP_ERROR_CLOSED);
  g_assert_null (mp_message_port_receive_timeout (b, 0, NULL, &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_CLOSED);
  g_clear_error (&error);

  /* After its own close(): misuse. */
  mp_message_port_close (b);
  mp_message_port_receive_async (b, NULL, on_outcome, &own);
  WAIT_FOR (f->context, own.done);
  g_assert_error (own.error, MP_ERROR, MP_ERROR_INVALID_STATE);

  outcome_clear (&waiting);
  outcome_clear (&after);
  outcome_clear (&own);
}

/* Cancelled before the call or while waiting: one error, one message. */
static void
test_cancel_one_error (Fixture       *f,
                       gconstpointer  data)
{
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *port = mp_message_channel_get_port2 (channel);
  g_autoptr(GCancellable) early = g_cancellable_new ();
  g_autoptr(GCancellable) late = g_cancellable_new ();
  Outcome before = { 0 }, waiting = { 0 };
  GError *error = NULL;

  g_cancellable_cancel (early);
  mp_message_port_receive_async (port, early, on_outcome, &before);
  mp_message_port_receive_async (port, late, on_outcome, &waiting);
  g_cancellable_cancel (late);
  WAIT_FOR (f->context, before.done && waiting.done);

  g_assert_error (before.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_error (waiting.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpstr (before.error->message, ==, waiting.error->message);
  g_assert_cmpstr (before.error->message, ==, "The receive was cancelled");

  g_assert_null (mp_message_port_receive_timeout (port, -1, early, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpstr (error->message, ==, "The receive was cancelled");
  g_clear_error (&error);

  outcome_clear (&before);
  outcome_clear (&waiting);
}

/* ------------------------------------------------------------------------ */
/* receive_timeout()                                                        */
/* ------------------------------------------------------------------------ */

static void
test_receive_timeout_times_out (Fixture       *f,
                                gconstpointer  data)
{
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *port = mp_message_channel_get_port2 (channel);
  GError *error = NULL;
  gint64 start = g_get_monotonic_time ();

  g_assert_null (mp_message_port_receive_timeout (port, 0, NULL, &error));
  g_assert_no_error (error);
  g_assert_null (mp_message_port_receive_timeout (port, 20 * 1000, NULL, &error));
  g_assert_no_error (error);
  /* It did wait (a lower bound only: never an upper one in a test). */
  g_assert_cmpint (g_get_monotonic_time () - start, >=, 20 * 1000);

  /* A queued message comes at once, even with no time to wait. */
  post_int (mp_message_channel_get_port1 (channel), 5);
  {
    g_autoptr(MpMessage) message = mp_message_port_receive_timeout (port, 0, NULL, &error);

    g_assert_no_error (error);
    g_assert_cmpint (message_get_int (message), ==, 5);
  }
}

typedef struct
{
  MpMessagePort *port;
  guint n;
  Gate *go;
} Poster;

static gpointer
poster_thread (gpointer data)
{
  Poster *p = data;

  gate_wait (p->go);
  for (guint i = 0; i < p->n; i++)
    {
      post_int (p->port, (gint32) i);
      if (i % 64 == 0)
        g_thread_yield ();
    }
  mp_message_port_close (p->port);
  return NULL;
}

/* A worker with no main loop takes every message of another thread, in order, and ends
 * with MP_ERROR_CLOSED. */
static void
test_receive_timeout_cross_thread (Fixture       *f,
                                   gconstpointer  data)
{
  MpMessageChannel *channel = mp_message_channel_new ();
  MpMessagePort *port = g_object_ref (mp_message_channel_get_port2 (channel));
  Gate go;
  Poster p = { g_object_ref (mp_message_channel_get_port1 (channel)), 20000, &go };
  GThread *thread;
  GError *error = NULL;
  gint32 expected = 0;

  g_object_unref (channel);
  gate_init (&go);
  thread = g_thread_new ("poster", poster_thread, &p);
  gate_open (&go);
  for (;;)
    {
      MpMessage *message = mp_message_port_receive_timeout (port, WAIT_TIMEOUT_USEC, NULL,
                                                            &error);

      if (message == NULL)
        break;
      g_assert_cmpint (message_get_int (message), ==, expected);
      expected++;
      mp_message_unref (message);
    }
  g_assert_error (error, MP_ERROR, MP_ERROR_CLOSED);
  g_clear_error (&error);
  g_assert_cmpint (expected, ==, 20000);
  g_thread_join (thread);
  gate_clear (&go);
  g_assert_finalize_object (p.port);
  g_assert_finalize_object (port);
}

typedef struct
{
  MpMessagePort *port;
  GCancellable *cancellable;
  gint64 timeout;
  gboolean done;
  MpMessage *message;
  GError *error;
} Blocked;

static gpointer
blocked_thread (gpointer data)
{
  Blocked *b = data;

  b->message = mp_message_port_receive_timeout (b->port, b->timeout, b->cancellable, &b->error);
  g_atomic_int_set (&b->done, TRUE);
  return NULL;
}

static void
blocked_start (Blocked       *b,
               GThread      **thread,
               MpMessagePort *port,
               GCancellable  *cancellable)
{
  b->port = port;
  b->cancellable = cancellable;
  b->timeout = -1;
  *thread = g_thread_new ("blocked", blocked_thread, b);
  WAIT_FOR (NULL, n_waiting (port) == 1);
}

/* A blocked receive is woken by a cancel, by its own port's close, by the peer's close, by
 * a transfer, and shares the FIFO with receive_async(): oldest receive first. */
static void
test_receive_timeout_woken (Fixture       *f,
                            gconstpointer  data)
{
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *a = mp_message_channel_get_port1 (channel);
  MpMessagePort *b = mp_message_channel_get_port2 (channel);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Blocked blocked = { 0 };
  Outcome later = { 0 };
  GThread *thread;

  /* Cancelled while it waits. */
  blocked_start (&blocked, &thread, b, cancellable);
  g_cancellable_cancel (cancellable);
  g_thread_join (thread);
  g_assert_error (blocked.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&blocked.error);

  /* Served before a later receive_async(), FIFO. */
  memset (&blocked, 0, sizeof blocked);
  blocked_start (&blocked, &thread, b, NULL);
  mp_message_port_receive_async (b, NULL, on_outcome, &later);
  post_int (a, 1);
  post_int (a, 2);
  g_thread_join (thread);
  g_assert_no_error (blocked.error);
  g_assert_cmpint (message_get_int (blocked.message), ==, 1);
  g_clear_pointer (&blocked.message, mp_message_unref);
  WAIT_FOR (f->context, later.done);
  g_assert_cmpint (message_get_int (later.message), ==, 2);
  outcome_clear (&later);

  /* The peer closes while it waits: the end of the stream. */
  memset (&blocked, 0, sizeof blocked);
  blocked_start (&blocked, &thread, b, NULL);
  mp_message_port_close (a);
  g_thread_join (thread);
  g_assert_error (blocked.error, MP_ERROR, MP_ERROR_CLOSED);
  g_clear_error (&blocked.error);
}

static void
test_receive_timeout_own_close_and_transfer (Fixture       *f,
                                             gconstpointer  data)
{
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  g_autoptr(MpMessageChannel) carrier = mp_message_channel_new ();
  MpMessagePort *b = mp_message_channel_get_port2 (channel);
  Blocked blocked = { 0 };
  GThread *thread;
  g_autoptr(MpMessage) carried = NULL;

  /* Transferred away while it waits: misuse of the old object. */
  blocked_start (&blocked, &thread, b, NULL);
  post_int_with_ports (mp_message_channel_get_port1 (carrier), 0, &b, 1);
  g_thread_join (thread);
  g_assert_error (blocked.error, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_clear_error (&blocked.error);

  /* Its own port closed by another thread while it waits: the end of the stream. */
  carried = mp_message_port_receive (mp_message_channel_get_port2 (carrier));
  b = g_ptr_array_index (mp_message_get_ports (carried), 0);
  memset (&blocked, 0, sizeof blocked);
  blocked_start (&blocked, &thread, b, NULL);
  mp_message_port_close (b);
  g_thread_join (thread);
  g_assert_error (blocked.error, MP_ERROR, MP_ERROR_CLOSED);
  g_assert_cmpstr (blocked.error->message, ==, "The port was closed");
  g_clear_error (&blocked.error);
}

/* ------------------------------------------------------------------------ */
/* What an application's own tests need                                     */
/* ------------------------------------------------------------------------ */

static void
test_message_new (Fixture       *f,
                  gconstpointer  data)
{
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *ports[] = { mp_message_channel_get_port1 (channel),
                             mp_message_channel_get_port2 (channel) };
  MpMessage *message = mp_message_new (g_variant_new_string ("hi"), ports, 2);
  MpMessage *empty = mp_message_new (NULL, NULL, 0);

  g_assert_cmpstr (g_variant_get_string (mp_message_get_data (message), NULL), ==, "hi");
  g_assert_false (g_variant_is_floating (mp_message_get_data (message)));
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 2);
  g_assert_true (g_ptr_array_index (mp_message_get_ports (message), 0) == ports[0]);
  g_assert_true (g_ptr_array_index (mp_message_get_ports (message), 1) == ports[1]);
  /* Nothing was transferred: the ports still work. */
  post_int (ports[0], 3);
  g_assert_cmpint (receive_int (ports[1]), ==, 3);
  mp_message_unref (message);

  g_assert_null (mp_message_get_data (empty));
  g_assert_cmpuint (mp_message_get_ports (empty)->len, ==, 0);
  mp_message_unref (empty);

  EXPECT_CRITICAL (g_assert_null (mp_message_new (NULL, NULL, 1)));
}

static void
on_notify (GObject    *object,
           GParamSpec *pspec,
           gpointer    user_data)
{
  GString *log = user_data;

  g_string_append_printf (log, "%s%s ", pspec->name,
                          mp_message_port_get_context (MP_MESSAGE_PORT (object)) ? "+" : "-");
}

static void
on_close (MpMessagePort *port,
          gpointer       user_data)
{
  g_string_append ((GString *) user_data, "close ");
}

/* dup_context() from another thread; "notify::context" on the owning thread, once, when
 * the port closes (start() emits nothing). */
static void
test_context_dup_and_notify (Fixture       *f,
                             gconstpointer  data)
{
  MpMessageChannel *channel = mp_message_channel_new ();
  MpMessagePort *port = g_object_ref (mp_message_channel_get_port2 (channel));
  g_autoptr(GString) log = g_string_new (NULL);
  GMainContext *dup;

  g_assert_null (mp_message_port_dup_context (port));
  g_signal_connect (port, "notify", G_CALLBACK (on_notify), log);
  g_signal_connect (port, "close", G_CALLBACK (on_close), log);
  mp_message_port_start (port);
  g_assert_cmpstr (log->str, ==, "");

  dup = mp_message_port_dup_context (port);
  g_assert_true (dup == f->context);
  g_main_context_unref (dup);

  mp_message_port_close (mp_message_channel_get_port1 (channel));
  g_object_unref (channel);
  WAIT_FOR (f->context, mp_message_port_get_context (port) == NULL);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpstr (log->str, ==, "closed+ close context- ");
  g_assert_null (mp_message_port_dup_context (port));
  g_assert_finalize_object (port);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  ADD_TEST ("/mpport/construct/port-is-inert", test_construct_port_is_inert);
  ADD_TEST ("/mpport/construct/channel-is-usable", test_construct_channel_is_usable);
  ADD_TEST ("/mpport/construct/broadcast-without-name", test_construct_broadcast_without_name);

  ADD_TEST ("/mpport/port/peer-closed/posts-succeed", test_peer_closed_posts_succeed);
  ADD_TEST ("/mpport/port/peer-closed/started-survivor", test_peer_closed_started_survivor);
  ADD_TEST ("/mpport/port/peer-closed/worker-never-fails", test_peer_closed_worker_never_fails);

  ADD_TEST ("/mpport/port/receive/end-of-stream-is-closed", test_end_of_stream_is_closed);
  ADD_TEST ("/mpport/port/receive/cancel-one-error", test_cancel_one_error);

  ADD_TEST ("/mpport/port/receive-timeout/times-out", test_receive_timeout_times_out);
  ADD_TEST ("/mpport/port/receive-timeout/cross-thread", test_receive_timeout_cross_thread);
  ADD_TEST ("/mpport/port/receive-timeout/woken", test_receive_timeout_woken);
  ADD_TEST ("/mpport/port/receive-timeout/own-close-and-transfer",
            test_receive_timeout_own_close_and_transfer);

  ADD_TEST ("/mpport/message/new", test_message_new);
  ADD_TEST ("/mpport/port/context/dup-and-notify", test_context_dup_and_notify);

  return g_test_run ();
}
