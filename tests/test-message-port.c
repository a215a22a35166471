/* test-message-port.c: behaviour of MpMessageChannel, MpMessagePort and MpMessage
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Every line of DESIGN.md §2 "Threads and contexts", "Transfer", "Close and
 * lifetime" and "Errors and bad input" has at least one case here; the test
 * paths name the behaviour. Every wait on a main context is bounded, so a bug
 * shows up as a failed assertion, never as a hang.
 */

/* pthread_attr_setstacksize() for the deep-nesting cases (-std=c11 hides it). */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <string.h>

#include <mpport/mpport.h>

#include "mp-message-port-private.h"
#include "mp-test-util.h"

/* The documented per-dispatch budget (contract notes). */
#define DISPATCH_BUDGET 1024

#define DEEP_NESTING_LEVELS 20000

/* A recursive drop of DEEP_NESTING_LEVELS levels cannot fit in this stack
 * (it would need less than 26 bytes per level), an iterative one easily does. */
#define SMALL_STACK_SIZE (512 * 1024)

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static void
post_value (MpMessagePort *port,
            GVariant      *value)
{
  GError *error = NULL;
  gboolean ok;

  ok = mp_message_port_post_message (port, value, NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_true (ok);
}

/* Synchronously take the next message, which must carry exactly one port;
 * returns a new reference on that (new) port object. */
static MpMessagePort *
receive_port (MpMessagePort *port)
{
  g_autoptr(MpMessage) message = mp_message_port_receive (port);
  GPtrArray *ports;
  MpMessagePort *received;

  g_assert_nonnull (message);
  ports = mp_message_get_ports (message);
  g_assert_nonnull (ports);
  g_assert_cmpuint (ports->len, ==, 1);
  received = g_ptr_array_index (ports, 0);
  g_assert_true (MP_IS_MESSAGE_PORT (received));
  return g_object_ref (received);
}

static void
assert_post_fails (MpMessagePort        *port,
                   MpMessagePort *const *transfer,
                   guint                 n_transfer,
                   gint                  code);

/* Counting payloads: a GVariant whose serialized data has a destroy notify,
 * so a test sees exactly when the library releases a payload. */
static void
count_free (gpointer data)
{
  gint *counter = data;

  g_atomic_int_inc (counter);
}

static GVariant *
counted_variant_new (gint  *counter,
                     gsize  size)
{
  static const guint8 payload[64 * 1024];

  g_assert_cmpuint (size, <=, sizeof payload);
  /* floating */
  return g_variant_new_from_data (G_VARIANT_TYPE_BYTESTRING, payload, size,
                                  TRUE, count_free, counter);
}

/* ------------------------------------------------------------------------ */
/* Channels                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpMessageChannel *channel;
  MpMessagePort *port1; /* owned */
  MpMessagePort *port2; /* owned */
} Pair;

static void
pair_init (Pair *pair)
{
  pair->channel = mp_message_channel_new ();
  g_assert_true (MP_IS_MESSAGE_CHANNEL (pair->channel));
  pair->port1 = g_object_ref (mp_message_channel_get_port1 (pair->channel));
  pair->port2 = g_object_ref (mp_message_channel_get_port2 (pair->channel));
}

/* Close both ports and check that the channel and both port objects are
 * finalized (iterating @ctx, where started ports deliver their "close"). */
static void
pair_finish (Pair         *pair,
             GMainContext *ctx)
{
  mp_message_port_close (pair->port1);
  mp_message_port_close (pair->port2);
  g_assert_finalize_object (pair->channel);
  assert_finalized_eventually (ctx, g_steal_pointer (&pair->port1));
  assert_finalized_eventually (ctx, g_steal_pointer (&pair->port2));
}

/* Move @port through a fresh carrier channel; returns the new object (a new
 * reference). @port becomes a detached object. */
static MpMessagePort *
transfer_port (MpMessagePort *port)
{
  Pair carrier;
  MpMessagePort *moved;

  pair_init (&carrier);
  post_int_with_ports (carrier.port1, -1, &port, 1);
  moved = receive_port (carrier.port2);
  g_assert_true (moved != port);
  pair_finish (&carrier, NULL);
  return moved;
}

/* ------------------------------------------------------------------------ */
/* Collector: records what a port emits, where, and in which order         */
/* ------------------------------------------------------------------------ */

typedef struct _Collector Collector;
typedef void (*CollectorHook) (Collector     *collector,
                               MpMessagePort *port,
                               MpMessage     *message);

struct _Collector
{
  GWeakRef port;
  gulong message_id;
  gulong message_error_id;
  gulong close_id;
  gulong notify_id;

  /* Configuration: set before the port can emit. */
  const char *name;            /* prefix in the shared log, if any */
  GString *shared;             /* shared log across collectors, under shared_mutex */
  GMutex *shared_mutex;
  gboolean record_events;      /* FALSE for bulk tests */
  gboolean keep_messages;
  gboolean tolerate_in_flight; /* close() from another thread may race one emission */
  GThread *owner;              /* every emission must happen on this thread */
  const gint *forbidden;       /* emission while *forbidden != 0 is a violation */
  CollectorHook hook;          /* runs after recording a "message" */
  gpointer hook_data;

  GMutex mutex;
  GString *events;             /* guarded by mutex: "1 2 null N C" */
  GArray *values;              /* guarded by mutex: int32 payloads in order */
  GPtrArray *messages;         /* guarded by mutex: refs if keep_messages */

  /* atomics */
  gint n_messages;
  gint n_message_errors;
  gint n_close;
  gint n_notify_closed;
  gint n_wrong_thread;
  gint n_outside_dispatch;
  gint n_reentrant;
  gint n_message_after_close;
  gint n_open_at_close;
};

static void
collector_append_locked (Collector  *collector,
                         const char *token)
{
  if (collector->events->len > 0)
    g_string_append_c (collector->events, ' ');
  g_string_append (collector->events, token);
}

/* Append a token to the collector's event log from a hook. */
static void
collector_note (Collector  *collector,
                const char *token)
{
  g_mutex_lock (&collector->mutex);
  collector_append_locked (collector, token);
  g_mutex_unlock (&collector->mutex);
}

static char *
message_describe (MpMessage *message)
{
  GVariant *data = mp_message_get_data (message);
  GPtrArray *ports = mp_message_get_ports (message);
  GString *string = g_string_new (NULL);

  if (data == NULL)
    g_string_append (string, "null");
  else if (g_variant_is_of_type (data, G_VARIANT_TYPE_INT32))
    g_string_append_printf (string, "%d", g_variant_get_int32 (data));
  else if (g_variant_is_of_type (data, G_VARIANT_TYPE_STRING))
    g_string_append (string, g_variant_get_string (data, NULL));
  else
    g_string_append_printf (string, "<%s>", g_variant_get_type_string (data));

  if (ports == NULL)
    g_string_append (string, "+NULL-PORTS");
  else if (ports->len > 0)
    g_string_append_printf (string, "+%up", ports->len);

  return g_string_free (string, FALSE);
}

/* Checks common to every emission: right thread, inside a dispatch of the
 * port's own context, and not inside a call the test marked as forbidden. */
static void
collector_check_emission (Collector     *collector,
                          MpMessagePort *port)
{
  GMainContext *ctx;

  if (collector->owner != NULL && g_thread_self () != collector->owner)
    g_atomic_int_inc (&collector->n_wrong_thread);

  ctx = mp_message_port_get_context (port);
  if (g_main_current_source () == NULL ||
      (ctx != NULL && !g_main_context_is_owner (ctx)))
    g_atomic_int_inc (&collector->n_outside_dispatch);

  if (collector->forbidden != NULL && g_atomic_int_get (collector->forbidden))
    g_atomic_int_inc (&collector->n_reentrant);
}

static void
collector_on_message (MpMessagePort *port,
                      MpMessage     *message,
                      gpointer       user_data)
{
  Collector *collector = user_data;
  GVariant *data;
  char *token;

  collector_check_emission (collector, port);
  if (g_atomic_int_get (&collector->n_close) > 0 ||
      (!collector->tolerate_in_flight && mp_message_port_is_closed (port)))
    g_atomic_int_inc (&collector->n_message_after_close);

  data = mp_message_get_data (message);
  token = (collector->record_events || collector->shared != NULL) ? message_describe (message) : NULL;

  g_mutex_lock (&collector->mutex);
  if (collector->record_events)
    collector_append_locked (collector, token);
  if (data != NULL && g_variant_is_of_type (data, G_VARIANT_TYPE_INT32))
    {
      gint32 value = g_variant_get_int32 (data);

      g_array_append_val (collector->values, value);
    }
  if (collector->keep_messages)
    g_ptr_array_add (collector->messages, mp_message_ref (message));
  g_mutex_unlock (&collector->mutex);

  if (collector->shared != NULL)
    {
      g_mutex_lock (collector->shared_mutex);
      if (collector->shared->len > 0)
        g_string_append_c (collector->shared, ' ');
      g_string_append_printf (collector->shared, "%s%s", collector->name, token);
      g_mutex_unlock (collector->shared_mutex);
    }
  g_free (token);

  if (collector->hook != NULL)
    collector->hook (collector, port, message);

  g_atomic_int_inc (&collector->n_messages);
}

/* Logs "E:<text>" for a G_IO_ERROR_INVALID_DATA, "E?<domain>:<code>" for anything else. */
static void
collector_on_message_error (MpMessagePort *port,
                            GError        *error,
                            gpointer       user_data)
{
  Collector *collector = user_data;
  char *token;

  collector_check_emission (collector, port);
  if (g_atomic_int_get (&collector->n_close) > 0 ||
      (!collector->tolerate_in_flight && mp_message_port_is_closed (port)))
    g_atomic_int_inc (&collector->n_message_after_close);

  g_assert_nonnull (error);
  if (collector->record_events)
    {
      if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA))
        token = g_strdup_printf ("E:%s", error->message);
      else
        token = g_strdup_printf ("E?%s:%d", g_quark_to_string (error->domain), error->code);
      collector_note (collector, token);
      g_free (token);
    }

  g_atomic_int_inc (&collector->n_message_errors);
}

static void
collector_on_close (MpMessagePort *port,
                    gpointer       user_data)
{
  Collector *collector = user_data;

  collector_check_emission (collector, port);
  if (!mp_message_port_is_closed (port))
    g_atomic_int_inc (&collector->n_open_at_close);
  collector_note (collector, "C");
  g_atomic_int_inc (&collector->n_close);
}

static void
collector_on_notify_closed (GObject    *object,
                            GParamSpec *pspec,
                            gpointer    user_data)
{
  Collector *collector = user_data;
  MpMessagePort *port = MP_MESSAGE_PORT (object);

  collector_check_emission (collector, port);
  if (!mp_message_port_is_closed (port))
    g_atomic_int_inc (&collector->n_open_at_close);
  collector_note (collector, "N");
  g_atomic_int_inc (&collector->n_notify_closed);
}

static void
collector_init (Collector     *collector,
                MpMessagePort *port)
{
  memset (collector, 0, sizeof *collector);
  g_mutex_init (&collector->mutex);
  g_weak_ref_init (&collector->port, port);
  collector->events = g_string_new (NULL);
  collector->values = g_array_new (FALSE, FALSE, sizeof (gint32));
  collector->messages = g_ptr_array_new_with_free_func ((GDestroyNotify) mp_message_unref);
  collector->record_events = TRUE;
  collector->owner = g_thread_self ();

  collector->message_id = g_signal_connect (port, "message",
                                            G_CALLBACK (collector_on_message), collector);
  collector->message_error_id = g_signal_connect (port, "message-error",
                                                  G_CALLBACK (collector_on_message_error),
                                                  collector);
  collector->close_id = g_signal_connect (port, "close",
                                          G_CALLBACK (collector_on_close), collector);
  collector->notify_id = g_signal_connect (port, "notify::closed",
                                           G_CALLBACK (collector_on_notify_closed), collector);
}

static gint
collector_count (Collector *collector)
{
  return g_atomic_int_get (&collector->n_messages);
}

static gint
collector_closes (Collector *collector)
{
  return g_atomic_int_get (&collector->n_close);
}

static void
collector_assert_events (Collector  *collector,
                         const char *expected)
{
  char *events;

  g_mutex_lock (&collector->mutex);
  events = g_strdup (collector->events->str);
  g_mutex_unlock (&collector->mutex);
  g_assert_cmpstr (events, ==, expected);
  g_free (events);
}

/* The invariants every collector checks, whatever the test. */
static void
collector_assert_clean (Collector *collector)
{
  g_assert_cmpint (g_atomic_int_get (&collector->n_wrong_thread), ==, 0);
  g_assert_cmpint (g_atomic_int_get (&collector->n_outside_dispatch), ==, 0);
  g_assert_cmpint (g_atomic_int_get (&collector->n_reentrant), ==, 0);
  g_assert_cmpint (g_atomic_int_get (&collector->n_message_after_close), ==, 0);
  g_assert_cmpint (g_atomic_int_get (&collector->n_open_at_close), ==, 0);
  g_assert_cmpint (g_atomic_int_get (&collector->n_close), <=, 1);
  g_assert_cmpint (g_atomic_int_get (&collector->n_notify_closed), <=, 1);
  g_assert_cmpint (g_atomic_int_get (&collector->n_notify_closed), ==,
                   g_atomic_int_get (&collector->n_close));
}

/* Check the invariants, disconnect (if the port is still alive) and free. */
static void
collector_clear (Collector *collector)
{
  MpMessagePort *port;

  collector_assert_clean (collector);

  port = g_weak_ref_get (&collector->port);
  if (port != NULL)
    {
      g_signal_handler_disconnect (port, collector->message_id);
      g_signal_handler_disconnect (port, collector->message_error_id);
      g_signal_handler_disconnect (port, collector->close_id);
      g_signal_handler_disconnect (port, collector->notify_id);
      g_object_unref (port);
    }
  g_weak_ref_clear (&collector->port);

  g_string_free (collector->events, TRUE);
  g_array_unref (collector->values);
  g_ptr_array_unref (collector->messages);
  g_mutex_clear (&collector->mutex);
}

/* The int32 values the collector saw must be exactly first, first+1, …. */
static void
collector_assert_sequence (Collector *collector,
                           gint32     first,
                           guint      n)
{
  guint i;

  g_mutex_lock (&collector->mutex);
  g_assert_cmpuint (collector->values->len, ==, n);
  for (i = 0; i < n; i++)
    {
      gint32 value = g_array_index (collector->values, gint32, i);

      if (value != first + (gint32) i)
        g_assert_cmpint (value, ==, first + (gint32) i);
    }
  g_mutex_unlock (&collector->mutex);
}

/* pair_init(), with @c1 recording port1 and @c2 port2, both ports started on
 * the thread-default context when @start. */
static void
pair_init_collected (Pair      *pair,
                     Collector *c1,
                     Collector *c2,
                     gboolean   start)
{
  pair_init (pair);
  collector_init (c1, pair->port1);
  collector_init (c2, pair->port2);
  if (start)
    {
      mp_message_port_start (pair->port1);
      mp_message_port_start (pair->port2);
    }
}

/* collector_clear() on @c1 then @c2 (each asserts that nothing unchecked is
 * left), then pair_finish(). */
static void
pair_finish_collected (Pair         *pair,
                       Collector    *c1,
                       Collector    *c2,
                       GMainContext *ctx)
{
  collector_clear (c1);
  collector_clear (c2);
  pair_finish (pair, ctx);
}

/* ------------------------------------------------------------------------ */
/* Workers: threads running their own thread-default GMainContext           */
/* ------------------------------------------------------------------------ */

typedef struct
{
  GThread *thread;
  GMainContext *context;
  GMainLoop *loop;
} Worker;

typedef void (*WorkerFunc) (gpointer data);

typedef struct
{
  GMutex mutex;
  GCond cond;
  gboolean done;
  WorkerFunc func;
  gpointer data;
} WorkerCall;

static gpointer
worker_thread_main (gpointer data)
{
  Worker *worker = data;

  g_main_context_push_thread_default (worker->context);
  g_main_loop_run (worker->loop);
  g_main_context_pop_thread_default (worker->context);
  return NULL;
}

static Worker *
worker_new (const char *name)
{
  Worker *worker = g_new0 (Worker, 1);

  worker->context = g_main_context_new ();
  worker->loop = g_main_loop_new (worker->context, FALSE);
  worker->thread = g_thread_new (name, worker_thread_main, worker);
  return worker;
}

static gboolean
worker_call_dispatch (gpointer data)
{
  WorkerCall *call = data;

  call->func (call->data);
  g_mutex_lock (&call->mutex);
  call->done = TRUE;
  g_cond_signal (&call->cond);
  g_mutex_unlock (&call->mutex);
  return G_SOURCE_REMOVE;
}

/* Run @func on the worker thread (from its loop, never synchronously in the
 * caller: an idle source, not g_main_context_invoke) and wait for it. */
static void
worker_run_sync (Worker     *worker,
                 WorkerFunc  func,
                 gpointer    data)
{
  WorkerCall call;
  GSource *source;
  gint64 deadline;
  gboolean done;

  memset (&call, 0, sizeof call);
  g_mutex_init (&call.mutex);
  g_cond_init (&call.cond);
  call.func = func;
  call.data = data;

  source = g_idle_source_new ();
  g_source_set_priority (source, G_PRIORITY_HIGH);
  g_source_set_callback (source, worker_call_dispatch, &call, NULL);
  g_source_attach (source, worker->context);
  g_source_unref (source);

  deadline = g_get_monotonic_time () + WAIT_TIMEOUT_USEC;
  g_mutex_lock (&call.mutex);
  while (!call.done)
    if (!g_cond_wait_until (&call.cond, &call.mutex, deadline))
      break;
  done = call.done;
  g_mutex_unlock (&call.mutex);
  g_assert_true (done);

  g_cond_clear (&call.cond);
  g_mutex_clear (&call.mutex);
}

static void
worker_quit_cb (gpointer data)
{
  g_main_loop_quit (data);
}

static void
worker_free (Worker *worker)
{
  worker_run_sync (worker, worker_quit_cb, worker->loop);
  g_thread_join (worker->thread);
  g_main_loop_unref (worker->loop);
  g_main_context_unref (worker->context);
  g_free (worker);
}

static void
start_port_cb (gpointer data)
{
  mp_message_port_start (data);
}

/* ------------------------------------------------------------------------ */
/* Fixture: each test runs on its own thread-default main context           */
/* ------------------------------------------------------------------------ */

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

/* ------------------------------------------------------------------------ */
/* Channel, message and basics                                              */
/* ------------------------------------------------------------------------ */

static void
test_channel_ports (void)
{
  MpMessageChannel *channel = mp_message_channel_new ();
  MpMessagePort *port1, *port2;
  MpMessagePort *prop1 = NULL, *prop2 = NULL;
  GWeakRef weak1, weak2;

  g_assert_true (MP_IS_MESSAGE_CHANNEL (channel));
  port1 = mp_message_channel_get_port1 (channel);
  port2 = mp_message_channel_get_port2 (channel);
  g_assert_true (MP_IS_MESSAGE_PORT (port1));
  g_assert_true (MP_IS_MESSAGE_PORT (port2));
  g_assert_true (port1 != port2);
  g_assert_true (mp_message_channel_get_port1 (channel) == port1);
  g_assert_true (mp_message_channel_get_port2 (channel) == port2);

  g_object_get (channel, "port1", &prop1, "port2", &prop2, NULL);
  g_assert_true (prop1 == port1);
  g_assert_true (prop2 == port2);
  g_object_unref (prop1);
  g_object_unref (prop2);

  g_assert_false (mp_message_port_is_closed (port1));
  g_assert_false (mp_message_port_is_closed (port2));
  g_assert_null (mp_message_port_get_context (port1));
  g_assert_null (mp_message_port_get_context (port2));

  /* The two ports are entangled, in both directions. */
  post_int (port1, 12);
  post_int (port2, 21);
  g_assert_cmpint (receive_int (port2), ==, 12);
  g_assert_cmpint (receive_int (port1), ==, 21);

  /* The channel owns its ports: they go with it. */
  g_weak_ref_init (&weak1, port1);
  g_weak_ref_init (&weak2, port2);
  g_assert_finalize_object (channel);
  g_assert_true (weak_ref_is_empty (&weak1));
  g_assert_true (weak_ref_is_empty (&weak2));
  g_weak_ref_clear (&weak1);
  g_weak_ref_clear (&weak2);
}

static void
test_message_boxed (void)
{
  Pair pair;
  MpMessage *message, *ref, *copy;
  GPtrArray *ports;

  g_assert_true (g_type_is_a (MP_TYPE_MESSAGE, G_TYPE_BOXED));

  pair_init (&pair);
  post_value (pair.port1, g_variant_new_string ("payload"));
  message = mp_message_port_receive (pair.port2);
  g_assert_nonnull (message);

  ref = mp_message_ref (message);
  g_assert_true (ref == message);
  mp_message_unref (ref);

  copy = g_boxed_copy (MP_TYPE_MESSAGE, message);
  g_assert_nonnull (copy);
  g_assert_cmpstr (g_variant_get_string (mp_message_get_data (copy), NULL), ==, "payload");
  g_boxed_free (MP_TYPE_MESSAGE, copy);

  /* get_ports() is never NULL: an empty array without transfer. */
  ports = mp_message_get_ports (message);
  g_assert_nonnull (ports);
  g_assert_cmpuint (ports->len, ==, 0);

  /* A message outlives its channel. */
  pair_finish (&pair, NULL);
  g_assert_cmpstr (g_variant_get_string (mp_message_get_data (message), NULL), ==, "payload");

  {
    g_autoptr(MpMessage) autoptr = message;

    g_assert_nonnull (mp_message_get_data (autoptr));
  }
}

static void
on_echo_double (Collector     *collector,
                MpMessagePort *port,
                MpMessage     *message)
{
  post_int (port, message_get_int (message) * 2);
}

static void
test_basics_round_trip (Fixture       *f,
                        gconstpointer  data)
{
  Pair pair;
  Collector c1, c2;

  pair_init_collected (&pair, &c1, &c2, TRUE);
  g_assert_true (mp_message_port_get_context (pair.port1) == f->context);
  g_assert_true (mp_message_port_get_context (pair.port2) == f->context);

  post_int (pair.port1, 1);
  post_value (pair.port2, g_variant_new_string ("hello"));

  WAIT_FOR (f->context, collector_count (&c1) == 1 && collector_count (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "1");
  collector_assert_events (&c1, "hello");

  pair_finish_collected (&pair, &c1, &c2, f->context);
}

static void
test_basics_echo (Fixture       *f,
                  gconstpointer  data)
{
  Pair pair;
  Collector c1, c2;

  pair_init_collected (&pair, &c1, &c2, FALSE);
  c2.hook = on_echo_double;
  mp_message_port_start (pair.port1);
  mp_message_port_start (pair.port2);

  post_int (pair.port1, 2);
  WAIT_FOR (f->context, collector_count (&c1) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "2");
  collector_assert_events (&c1, "4");

  pair_finish_collected (&pair, &c1, &c2, f->context);
}

static void
test_basics_null_payload (Fixture       *f,
                          gconstpointer  data)
{
  Pair pair;
  Collector c2;
  MpMessage *message;
  GError *error = NULL;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.keep_messages = TRUE;
  mp_message_port_start (pair.port2);

  g_assert_true (mp_message_port_post_message (pair.port1, NULL, NULL, 0, &error));
  g_assert_no_error (error);
  WAIT_FOR (f->context, collector_count (&c2) == 1);
  collector_assert_events (&c2, "null");

  g_assert_cmpuint (c2.messages->len, ==, 1);
  message = g_ptr_array_index (c2.messages, 0);
  g_assert_null (mp_message_get_data (message));
  g_assert_nonnull (mp_message_get_ports (message));
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

static void
test_basics_floating_payload (Fixture       *f,
                              gconstpointer  data)
{
  Pair pair;
  Collector c2;
  gint freed = 0;
  MpMessage *message;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.keep_messages = TRUE;
  mp_message_port_start (pair.port2);

  /* No reference kept: the library sinks the floating reference. */
  post_value (pair.port1, g_variant_new_int32 (7));
  post_value (pair.port1, counted_variant_new (&freed, 4096));
  WAIT_FOR (f->context, collector_count (&c2) == 2);
  collector_assert_events (&c2, "7 <ay>");

  message = g_ptr_array_index (c2.messages, 1);
  g_assert_false (g_variant_is_floating (mp_message_get_data (message)));
  g_assert_cmpuint (g_variant_get_size (mp_message_get_data (message)), ==, 4096);

  /* Only the kept message still holds the payload; dropping it frees it. */
  g_assert_cmpint (g_atomic_int_get (&freed), ==, 0);
  g_ptr_array_set_size (c2.messages, 0);
  g_assert_cmpint (g_atomic_int_get (&freed), ==, 1);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

static void
test_basics_payload_reference_kept (void)
{
  Pair pair;
  gint freed = 0;
  GVariant *value;
  MpMessage *message;

  pair_init (&pair);
  value = g_variant_ref_sink (counted_variant_new (&freed, 4096));
  post_value (pair.port1, value);
  message = mp_message_port_receive (pair.port2);
  g_assert_nonnull (message);
  g_assert_true (g_variant_equal (mp_message_get_data (message), value));
  mp_message_unref (message);

  /* The caller's own reference is untouched. */
  g_assert_cmpint (g_atomic_int_get (&freed), ==, 0);
  g_assert_cmpuint (g_variant_get_size (value), ==, 4096);
  g_variant_unref (value);
  g_assert_cmpint (g_atomic_int_get (&freed), ==, 1);

  pair_finish (&pair, NULL);
}

static void
on_priority_notify (GObject    *object,
                    GParamSpec *pspec,
                    gpointer    user_data)
{
  gint *count = user_data;

  (*count)++;
}

static void
test_basics_properties (Fixture       *f,
                        gconstpointer  data)
{
  Pair pair;
  GParamSpec *pspec;
  GValue value = G_VALUE_INIT;
  gboolean closed = TRUE;
  int priority = 0;
  gint notifies = 0;
  gpointer context;

  pair_init (&pair);

  pspec = g_object_class_find_property (G_OBJECT_GET_CLASS (pair.port1), "priority");
  g_assert_nonnull (pspec);
  g_assert_true (G_IS_PARAM_SPEC_INT (pspec));
  g_assert_cmpint (G_PARAM_SPEC_INT (pspec)->default_value, ==, G_PRIORITY_DEFAULT);
  g_assert_true (pspec->flags & G_PARAM_WRITABLE);
  g_assert_cmpint (mp_message_port_get_priority (pair.port1), ==, G_PRIORITY_DEFAULT);

  pspec = g_object_class_find_property (G_OBJECT_GET_CLASS (pair.port1), "closed");
  g_assert_nonnull (pspec);
  g_assert_true (pspec->value_type == G_TYPE_BOOLEAN);
  g_assert_false (pspec->flags & G_PARAM_WRITABLE);

  pspec = g_object_class_find_property (G_OBJECT_GET_CLASS (pair.port1), "context");
  g_assert_nonnull (pspec);
  g_assert_false (pspec->flags & G_PARAM_WRITABLE);

  /* "context": NULL until started, then the thread-default context. */
  g_value_init (&value, pspec->value_type);
  g_object_get_property (G_OBJECT (pair.port1), "context", &value);
  context = G_VALUE_HOLDS_BOXED (&value) ? g_value_get_boxed (&value) : g_value_get_pointer (&value);
  g_assert_null (context);
  g_value_unset (&value);

  mp_message_port_start (pair.port1);
  g_value_init (&value, pspec->value_type);
  g_object_get_property (G_OBJECT (pair.port1), "context", &value);
  context = G_VALUE_HOLDS_BOXED (&value) ? g_value_get_boxed (&value) : g_value_get_pointer (&value);
  g_assert_true (context == f->context);
  g_value_unset (&value);

  g_object_get (pair.port1, "closed", &closed, NULL);
  g_assert_false (closed);

  /* Setters notify synchronously on the calling (owning) thread. */
  g_signal_connect (pair.port1, "notify::priority", G_CALLBACK (on_priority_notify), &notifies);
  mp_message_port_set_priority (pair.port1, G_PRIORITY_LOW);
  g_assert_cmpint (notifies, ==, 1);
  g_assert_cmpint (mp_message_port_get_priority (pair.port1), ==, G_PRIORITY_LOW);
  g_object_set (pair.port1, "priority", G_PRIORITY_HIGH, NULL);
  g_assert_cmpint (notifies, ==, 2);
  g_object_get (pair.port1, "priority", &priority, NULL);
  g_assert_cmpint (priority, ==, G_PRIORITY_HIGH);
  g_signal_handlers_disconnect_by_func (pair.port1, on_priority_notify, &notifies);

  mp_message_port_close (pair.port1);
  g_object_get (pair.port1, "closed", &closed, NULL);
  g_assert_true (closed);

  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Threads and contexts                                                     */
/* ------------------------------------------------------------------------ */

static gint in_call;

static void
test_threads_no_emission_inside_calls (Fixture       *f,
                                       gconstpointer  data)
{
  Pair pair, other;
  Collector c1, c2, c3;
  MpMessage *message;

  pair_init (&pair);
  pair_init (&other);
  collector_init (&c1, pair.port1);
  collector_init (&c2, pair.port2);
  collector_init (&c3, other.port2);
  c1.forbidden = c2.forbidden = c3.forbidden = &in_call;
  mp_message_port_start (pair.port1);
  mp_message_port_start (pair.port2);

  /* post_message, both directions, on the owning thread. */
  g_atomic_int_set (&in_call, 1);
  post_int (pair.port1, 1);
  post_int (pair.port2, 2);
  g_atomic_int_set (&in_call, 0);
  WAIT_FOR (f->context, collector_count (&c1) == 1 && collector_count (&c2) == 1);

  /* start() with messages already queued. */
  post_int (other.port1, 3);
  post_int (other.port1, 4);
  g_atomic_int_set (&in_call, 1);
  mp_message_port_start (other.port2);
  mp_message_port_start (other.port2);
  g_atomic_int_set (&in_call, 0);
  WAIT_FOR (f->context, collector_count (&c3) == 2);

  /* receive() on a started port with handlers connected. */
  post_int (pair.port1, 5);
  g_atomic_int_set (&in_call, 1);
  message = mp_message_port_receive (pair.port2);
  g_atomic_int_set (&in_call, 0);
  g_assert_cmpint (message_get_int (message), ==, 5);
  mp_message_unref (message);

  /* close(), on both the closing side and (same thread) the survivor. */
  post_int (pair.port1, 6);
  g_atomic_int_set (&in_call, 1);
  mp_message_port_close (pair.port1);
  mp_message_port_close (other.port2);
  g_atomic_int_set (&in_call, 0);
  g_assert_cmpint (collector_closes (&c1), ==, 0);
  g_assert_cmpint (collector_closes (&c2), ==, 0);
  g_assert_cmpint (collector_closes (&c3), ==, 0);

  WAIT_FOR (f->context,
            collector_closes (&c1) == 1 && collector_closes (&c2) == 1 &&
            collector_closes (&c3) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c1, "2 N C");
  collector_assert_events (&c2, "1 6 N C");
  collector_assert_events (&c3, "3 4 N C");

  collector_clear (&c1);
  collector_clear (&c2);
  collector_clear (&c3);
  pair_finish (&pair, f->context);
  pair_finish (&other, f->context);
}

typedef struct
{
  MpMessagePort *port1;
  MpMessagePort *port2;
  GMainContext *expected_context;
  gboolean context_ok;
  gboolean closed_seen;
  int priority;
  gint32 received;
} AnyThreadCalls;

static gpointer
any_thread_calls_main (gpointer data)
{
  AnyThreadCalls *calls = data;
  MpMessage *message;

  post_int (calls->port1, 1);
  post_int (calls->port1, 2);
  message = mp_message_port_receive (calls->port2);
  calls->received = message != NULL ? message_get_int (message) : -1;
  if (message != NULL)
    mp_message_unref (message);
  calls->context_ok = mp_message_port_get_context (calls->port2) == calls->expected_context;
  calls->closed_seen = mp_message_port_is_closed (calls->port2);
  calls->priority = mp_message_port_get_priority (calls->port2);
  post_int (calls->port2, 3);
  mp_message_port_close (calls->port1);
  return NULL;
}

/* Every function may be called from a thread that does not own the port;
 * the signals still come from the owning context. */
static void
test_threads_calls_from_any_thread (Fixture       *f,
                                    gconstpointer  data)
{
  Pair pair;
  Collector c2;
  AnyThreadCalls calls;
  GThread *thread;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  mp_message_port_start (pair.port2);

  memset (&calls, 0, sizeof calls);
  calls.port1 = pair.port1;
  calls.port2 = pair.port2;
  calls.expected_context = f->context;
  /* The main thread does not iterate while the thread runs. */
  thread = g_thread_new ("any-thread", any_thread_calls_main, &calls);
  g_thread_join (thread);

  g_assert_cmpint (calls.received, ==, 1);
  g_assert_true (calls.context_ok);
  g_assert_false (calls.closed_seen);
  g_assert_cmpint (calls.priority, ==, G_PRIORITY_DEFAULT);
  g_assert_true (mp_message_port_is_closed (pair.port1));
  g_assert_cmpint (collector_count (&c2), ==, 0);

  WAIT_FOR (f->context, collector_closes (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "2 N C");

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

static void
on_echo_same (Collector     *collector,
              MpMessagePort *port,
              MpMessage     *message)
{
  post_int (port, message_get_int (message) + 1000);
}

typedef struct
{
  MpMessagePort *port;
  gint32 first;
  guint n;
} SenderArgs;

static gpointer
sender_thread_main (gpointer data)
{
  SenderArgs *args = data;
  guint i;

  for (i = 0; i < args->n; i++)
    post_int (args->port, args->first + (gint32) i);
  return NULL;
}

/* Signals are emitted only on the owning context's thread, whoever posts. */
static void
test_threads_signals_on_owning_context (Fixture       *f,
                                        gconstpointer  data)
{
  Pair pair;
  Collector c1, c2;
  Worker *worker;
  SenderArgs args = { NULL, 100, 3 };
  GThread *sender;

  worker = worker_new ("owner");
  pair_init_collected (&pair, &c1, &c2, FALSE);
  c2.owner = worker->thread;
  c2.hook = on_echo_same;
  mp_message_port_start (pair.port1);
  worker_run_sync (worker, start_port_cb, pair.port2);
  g_assert_true (mp_message_port_get_context (pair.port2) == worker->context);

  /* From the main thread and from a third thread. */
  post_int (pair.port1, 1);
  post_int (pair.port1, 2);
  WAIT_FOR (f->context, collector_count (&c2) == 2 && collector_count (&c1) == 2);
  args.port = pair.port1;
  sender = g_thread_new ("sender", sender_thread_main, &args);
  g_thread_join (sender);
  WAIT_FOR (f->context, collector_count (&c2) == 5 && collector_count (&c1) == 5);

  /* Close from the main thread: the worker's port hears it on its thread. */
  mp_message_port_close (pair.port1);
  WAIT_FOR (f->context, collector_closes (&c1) == 1 && collector_closes (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "1 2 100 101 102 N C");
  collector_assert_events (&c1, "1001 1002 1100 1101 1102 N C");

  pair_finish_collected (&pair, &c1, &c2, f->context);
  worker_free (worker);
}

/* ------------------------------------------------------------------------ */
/* start()                                                                  */
/* ------------------------------------------------------------------------ */

static void
test_start_binds_thread_default_context (Fixture       *f,
                                         gconstpointer  data)
{
  Pair pair;
  Collector c2;
  Worker *worker;

  worker = worker_new ("binder");
  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.owner = worker->thread;

  post_int (pair.port1, 1);
  g_assert_null (mp_message_port_get_context (pair.port2));
  worker_run_sync (worker, start_port_cb, pair.port2);
  g_assert_true (mp_message_port_get_context (pair.port2) == worker->context);
  g_assert_true (mp_message_port_get_context (pair.port2) != g_main_context_default ());
  post_int (pair.port1, 2);

  /* Iterating the main thread's context delivers nothing there. */
  WAIT_FOR (f->context, collector_count (&c2) == 2);
  collector_assert_events (&c2, "1 2");

  /* A later start() from another thread does not rebind. */
  mp_message_port_start (pair.port2);
  g_assert_true (mp_message_port_get_context (pair.port2) == worker->context);
  post_int (pair.port1, 3);
  WAIT_FOR (f->context, collector_count (&c2) == 3);

  mp_message_port_close (pair.port1);
  WAIT_FOR (NULL, collector_closes (&c2) == 1);
  collector_assert_events (&c2, "1 2 3 N C");

  collector_clear (&c2);
  pair_finish (&pair, NULL);
  worker_free (worker);
}

/* With no thread-default context pushed, start() uses the global default. */
static void
test_start_default_context_when_none_pushed (void)
{
  Pair pair;
  Collector c2;
  GMainContext *main_context = g_main_context_default ();

  g_assert_null (g_main_context_get_thread_default ());
  pair_init (&pair);
  collector_init (&c2, pair.port2);
  mp_message_port_start (pair.port2);
  g_assert_true (mp_message_port_get_context (pair.port2) == main_context);

  post_int (pair.port1, 1);
  WAIT_FOR (main_context, collector_count (&c2) == 1);
  collector_assert_events (&c2, "1");

  collector_clear (&c2);
  pair_finish (&pair, main_context);
}

static void
test_start_nothing_delivered_without_start (Fixture       *f,
                                            gconstpointer  data)
{
  Pair pair;
  Collector c2;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  post_int (pair.port1, 1);
  post_int (pair.port1, 2);
  post_int (pair.port1, 3);

  spin_context (f->context, 100);
  spin_context (g_main_context_default (), 20);
  g_assert_cmpint (collector_count (&c2), ==, 0);
  g_assert_null (mp_message_port_get_context (pair.port2));
  collector_assert_events (&c2, "");

  /* Still queued, in order. */
  g_assert_cmpint (receive_int (pair.port2), ==, 1);
  g_assert_cmpint (receive_int (pair.port2), ==, 2);
  g_assert_cmpint (receive_int (pair.port2), ==, 3);
  assert_receive_null (pair.port2);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

static void
test_start_queued_before_start_delivered (Fixture       *f,
                                          gconstpointer  data)
{
  Pair pair;
  Collector c2;
  gint32 i;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  for (i = 1; i <= 5; i++)
    post_int (pair.port1, i);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpint (collector_count (&c2), ==, 0);

  mp_message_port_start (pair.port2);
  post_int (pair.port1, 6);
  WAIT_FOR (f->context, collector_count (&c2) == 6);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "1 2 3 4 5 6");

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

static void
test_start_queue_unbounded_before_start (Fixture       *f,
                                         gconstpointer  data)
{
  const guint n = 100000;
  Pair pair;
  Collector c2;
  guint i;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.record_events = FALSE;
  for (i = 0; i < n; i++)
    post_int (pair.port1, (gint32) i);

  mp_message_port_start (pair.port2);
  WAIT_FOR (f->context, collector_count (&c2) == (gint) n);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_sequence (&c2, 0, n);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

static void
test_start_twice_no_duplicates (Fixture       *f,
                                gconstpointer  data)
{
  Pair pair;
  Collector c2;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  post_int (pair.port1, 1);
  mp_message_port_start (pair.port2);
  mp_message_port_start (pair.port2);
  post_int (pair.port1, 2);
  post_int (pair.port1, 3);
  WAIT_FOR (f->context, collector_count (&c2) == 3);
  mp_message_port_start (pair.port2);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "1 2 3");

  post_int (pair.port1, 4);
  mp_message_port_start (pair.port2);
  WAIT_FOR (f->context, collector_count (&c2) == 4);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "1 2 3 4");

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

/* start() on a closed port (own close, or survivor that saw the close) and on
 * a transferred-away object is a no-op: no context, nothing emitted. */
static void
test_start_closed_port_noop (Fixture       *f,
                             gconstpointer  data)
{
  Pair pair, survivor, moved_pair;
  Collector c1, c2, cs, cm;
  MpMessagePort *moved;

  pair_init_collected (&pair, &c1, &c2, FALSE);
  mp_message_port_start (pair.port1);
  post_int (pair.port1, 1);
  mp_message_port_close (pair.port2);
  mp_message_port_start (pair.port2);
  g_assert_null (mp_message_port_get_context (pair.port2));
  assert_receive_null (pair.port2);

  /* The survivor of an unstarted closing side hears the close. */
  WAIT_FOR (f->context, collector_closes (&c1) == 1);

  /* Survivor that consumed the marker via receive(), unstarted. */
  pair_init (&survivor);
  collector_init (&cs, survivor.port2);
  mp_message_port_close (survivor.port1);
  assert_receive_null (survivor.port2);
  g_assert_true (mp_message_port_is_closed (survivor.port2));
  mp_message_port_start (survivor.port2);
  g_assert_null (mp_message_port_get_context (survivor.port2));

  /* Transferred-away object. */
  pair_init (&moved_pair);
  collector_init (&cm, moved_pair.port2);
  moved = transfer_port (moved_pair.port2);
  mp_message_port_start (moved_pair.port2);
  g_assert_null (mp_message_port_get_context (moved_pair.port2));
  post_int (moved_pair.port1, 5);

  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c1, "N C");
  collector_assert_events (&c2, "");
  collector_assert_events (&cs, "");
  collector_assert_events (&cm, "");
  g_assert_cmpint (receive_int (moved), ==, 5);

  collector_clear (&c1);
  collector_clear (&c2);
  collector_clear (&cs);
  collector_clear (&cm);
  mp_message_port_close (moved);
  g_assert_finalize_object (moved);
  pair_finish (&pair, f->context);
  pair_finish (&survivor, f->context);
  pair_finish (&moved_pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Ordering                                                                 */
/* ------------------------------------------------------------------------ */

static void
test_order_fifo_100000 (Fixture       *f,
                        gconstpointer  data)
{
  const guint n = 100000;
  Pair pair;
  Collector c2;
  guint i;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.record_events = FALSE;
  mp_message_port_start (pair.port2);

  for (i = 0; i < n; i++)
    {
      post_int (pair.port1, (gint32) i);
      /* Let some deliveries interleave with the posting. */
      if (i % 7919 == 0)
        g_main_context_iteration (f->context, FALSE);
    }
  WAIT_FOR (f->context, collector_count (&c2) == (gint) n);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_sequence (&c2, 0, n);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

static void
on_message_keep_every_tenth (Collector     *collector,
                             MpMessagePort *port,
                             MpMessage     *message)
{
  GPtrArray *kept = collector->hook_data;

  if (message_get_int (message) % 10 == 0)
    g_ptr_array_add (kept, mp_message_ref (message));
}

/* The dispatch reuses the nodes of delivered messages for later posts (mp-pipe.c,
 * "Recycled message nodes"): only those nobody kept. Bursts of 250 with deliveries in
 * between, so that nodes go round many times: every message arrives once, in order, with
 * its own payload; the ones a handler kept still hold theirs after 1 000 more went
 * through the port; and a payload is released as soon as its message is delivered (the
 * node does not hold it). */
static void
test_order_recycled_nodes (Fixture       *f,
                           gconstpointer  data)
{
  const guint n_bursts = 8, burst = 250;
  g_autoptr(GPtrArray) kept = g_ptr_array_new_with_free_func ((GDestroyNotify) mp_message_unref);
  Pair pair;
  Collector c2;
  gint freed = 0;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.record_events = FALSE;
  c2.hook = on_message_keep_every_tenth;
  c2.hook_data = kept;
  mp_message_port_start (pair.port2);

  for (guint b = 0; b < n_bursts; b++)
    {
      for (guint i = 0; i < burst; i++)
        post_int (pair.port1, (gint32) (b * burst + i));
      WAIT_FOR (f->context, collector_count (&c2) == (gint) ((b + 1) * burst));
    }
  collector_assert_sequence (&c2, 0, n_bursts * burst);

  g_assert_cmpuint (kept->len, ==, n_bursts * burst / 10);
  for (guint i = 0; i < kept->len; i++)
    {
      MpMessage *message = g_ptr_array_index (kept, i);

      g_assert_cmpint (message_get_int (message), ==, (gint32) (i * 10));
      g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);
    }

  /* Nodes that carried ports are reused too, and carry none afterwards: a burst of posts
   * each with a port, then plain ones (kept, and checked for ports). */
  {
    Pair carried[4];
    guint before = collector_count (&c2);

    for (guint i = 0; i < G_N_ELEMENTS (carried); i++)
      {
        pair_init (&carried[i]);
        post_int_with_ports (pair.port1, 1000000 + (gint32) i, &carried[i].port2, 1);
      }
    WAIT_FOR (f->context, collector_count (&c2) == (gint) (before + G_N_ELEMENTS (carried)));
    g_ptr_array_set_size (kept, 0);
    for (guint i = 0; i < 10 * G_N_ELEMENTS (carried); i++)
      post_int (pair.port1, (gint32) (i * 10));   /* every one kept */
    WAIT_FOR (f->context, collector_count (&c2) == (gint) (before + 11 * G_N_ELEMENTS (carried)));
    g_assert_cmpuint (kept->len, ==, 10 * G_N_ELEMENTS (carried));
    for (guint i = 0; i < kept->len; i++)
      {
        MpMessage *message = g_ptr_array_index (kept, i);

        g_assert_cmpint (message_get_int (message), ==, (gint32) (i * 10));
        g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);
      }
    for (guint i = 0; i < G_N_ELEMENTS (carried); i++)
      {
        mp_message_port_close (carried[i].port1);
        g_clear_object (&carried[i].port1);
        g_clear_object (&carried[i].channel);
        g_clear_object (&carried[i].port2);
      }
  }

  /* Payloads of messages nobody kept are released at delivery. */
  c2.hook = NULL;
  for (guint i = 0; i < burst; i++)
    g_assert_true (mp_message_port_post_message (pair.port1, counted_variant_new (&freed, 16),
                                                 NULL, 0, NULL));
  WAIT_FOR (f->context, g_atomic_int_get (&freed) == (gint) burst);
  g_assert_cmpint (collector_count (&c2), ==, (gint) ((n_bursts + 1) * burst + 44));

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

#define N_SENDERS 4
#define N_PER_SENDER 25000

/* Several threads post on one port at once: exactly once each, and each
 * sender's own order kept. */
static void
test_order_multi_sender_threads (Fixture       *f,
                                 gconstpointer  data)
{
  Pair pair;
  Collector c2;
  SenderArgs args[N_SENDERS];
  GThread *threads[N_SENDERS];
  guint next[N_SENDERS] = { 0 };
  guint i;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.record_events = FALSE;
  mp_message_port_start (pair.port2);

  for (i = 0; i < N_SENDERS; i++)
    {
      args[i].port = pair.port1;
      args[i].first = (gint32) (i << 24);
      args[i].n = N_PER_SENDER;
      threads[i] = g_thread_new ("sender", sender_thread_main, &args[i]);
    }

  WAIT_FOR (f->context, collector_count (&c2) == N_SENDERS * N_PER_SENDER);
  for (i = 0; i < N_SENDERS; i++)
    g_thread_join (threads[i]);
  spin_context (f->context, QUIET_MSEC);

  g_mutex_lock (&c2.mutex);
  g_assert_cmpuint (c2.values->len, ==, N_SENDERS * N_PER_SENDER);
  for (i = 0; i < c2.values->len; i++)
    {
      gint32 value = g_array_index (c2.values, gint32, i);
      guint sender = (guint) value >> 24;
      guint seq = (guint) value & 0xffffff;

      g_assert_cmpuint (sender, <, N_SENDERS);
      if (seq != next[sender])
        g_assert_cmpuint (seq, ==, next[sender]);
      next[sender]++;
    }
  g_mutex_unlock (&c2.mutex);
  for (i = 0; i < N_SENDERS; i++)
    g_assert_cmpuint (next[i], ==, N_PER_SENDER);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

#define LANE_SENDERS 3
#define LANE_PER_SENDER 10000
#define LANE_CARRY_EVERY 8

/* A sender of test_order_lane_and_lock(): every LANE_CARRY_EVERY-th post carries a port,
 * so it goes through the destination's lock, while the others take the lock-free lane. */
static gpointer
lane_sender_main (gpointer data)
{
  SenderArgs *args = data;

  for (guint i = 0; i < args->n; i++)
    if (i % LANE_CARRY_EVERY == LANE_CARRY_EVERY - 1)
      {
        Pair carried;

        pair_init (&carried);
        post_int_with_ports (args->port, args->first + (gint32) i, &carried.port2, 1);
        g_object_unref (carried.port1);
        g_object_unref (carried.port2);
        g_object_unref (carried.channel);
      }
    else
      post_int (args->port, args->first + (gint32) i);

  return NULL;
}

typedef struct
{
  MpMessagePort *port;
  GArray *values;   /* what receive() took, in order; the taker's until joined */
  gint n_taken;     /* values->len, atomic */
  gint total;       /* how many both consumers must take; atomic */
  Collector *collector;
} LaneTaker;

/* A thread that takes messages with receive() (non-blocking) and counts the queue, racing
 * the port's own dispatch: both shut the lane and take it into the inbox under the lock. */
static gpointer
lane_taker_main (gpointer data)
{
  LaneTaker *taker = data;

  while (g_atomic_int_get (&taker->n_taken) + collector_count (taker->collector) <
         g_atomic_int_get (&taker->total))
    {
      MpMessage *message = mp_message_port_receive (taker->port);

      if (message != NULL)
        {
          gint32 value = message_get_int (message);

          g_array_append_val (taker->values, value);
          g_atomic_int_inc (&taker->n_taken);
          mp_message_unref (message);
        }
      /* Now and then only: a receive that finds the inbox empty shuts the lane (until the
       * dispatch opens it again), and the lane is what this test is about. */
      (void) mp_message_port_get_n_queued (taker->port);
      g_usleep (100);
    }

  return NULL;
}

/* Checks that @values (a consumer's takes, in order) keeps each sender's order; counts
 * them into @seen. */
static void
assert_lane_order (const GArray *values,
                   guint        *seen)
{
  gint next[LANE_SENDERS];

  for (guint i = 0; i < LANE_SENDERS; i++)
    next[i] = -1;
  for (guint i = 0; i < values->len; i++)
    {
      gint32 value = g_array_index (values, gint32, i);
      guint sender = (guint) value >> 24;
      gint seq = value & 0xffffff;

      g_assert_cmpuint (sender, <, LANE_SENDERS);
      if (seq <= next[sender])
        g_assert_cmpint (seq, >, next[sender]);
      next[sender] = seq;
      seen[sender * LANE_PER_SENDER + (guint) seq]++;
    }
}

/* One round of test_order_lane_and_lock() on @pair (port2 started on @context): the
 * senders post on port1; with @taker, a thread takes with receive() meanwhile, else the
 * context is iterated only once every sender is done, so that every post finds its
 * sender's previous ones still on the lane. */
static void
lane_round (Pair         *pair,
            GMainContext *context,
            gboolean      with_taker)
{
  Collector c2;
  SenderArgs args[LANE_SENDERS];
  GThread *threads[LANE_SENDERS];
  LaneTaker taker = { 0 };
  GThread *taker_thread = NULL;
  guint *seen = g_new0 (guint, LANE_SENDERS * LANE_PER_SENDER);
  GArray *dispatched = g_array_new (FALSE, FALSE, sizeof (gint32));

  collector_init (&c2, pair->port2);
  c2.record_events = FALSE;

  taker.port = pair->port2;
  taker.values = g_array_new (FALSE, FALSE, sizeof (gint32));
  taker.total = LANE_SENDERS * LANE_PER_SENDER;
  taker.collector = &c2;
  if (with_taker)
    taker_thread = g_thread_new ("taker", lane_taker_main, &taker);
  for (guint i = 0; i < LANE_SENDERS; i++)
    {
      args[i].port = pair->port1;
      args[i].first = (gint32) (i << 24);
      args[i].n = LANE_PER_SENDER;
      threads[i] = g_thread_new ("sender", lane_sender_main, &args[i]);
    }
  if (!with_taker)
    {
      for (guint i = 0; i < LANE_SENDERS; i++)
        g_thread_join (threads[i]);
      g_assert_cmpint (collector_count (&c2), ==, 0);
      g_assert_cmpuint (mp_message_port_get_n_queued (pair->port2), ==,
                        LANE_SENDERS * LANE_PER_SENDER);
    }

  WAIT_FOR (context, collector_count (&c2) + g_atomic_int_get (&taker.n_taken) ==
                     LANE_SENDERS * LANE_PER_SENDER);
  if (with_taker)
    {
      for (guint i = 0; i < LANE_SENDERS; i++)
        g_thread_join (threads[i]);
      g_thread_join (taker_thread);
    }
  spin_context (context, QUIET_MSEC);

  g_mutex_lock (&c2.mutex);
  g_array_append_vals (dispatched, c2.values->data, c2.values->len);
  g_mutex_unlock (&c2.mutex);
  assert_lane_order (dispatched, seen);
  assert_lane_order (taker.values, seen);
  for (guint i = 0; i < LANE_SENDERS * LANE_PER_SENDER; i++)
    if (seen[i] != 1)
      g_assert_cmpuint (seen[i], ==, 1);
  g_assert_cmpuint (dispatched->len + taker.values->len, ==, LANE_SENDERS * LANE_PER_SENDER);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair->port2), ==, 0);

  g_array_unref (dispatched);
  g_array_unref (taker.values);
  g_free (seen);
  collector_clear (&c2);
}

/* Posts on the lock-free lane and posts through the lock (those carrying ports), from
 * several threads: each sender's order holds across the two ways in (a post through the
 * lock goes after what its sender left on the lane), and every message arrives exactly
 * once; first with the owner's dispatch alone, after the posts, then while the posts race
 * the dispatch and another thread's receive(), which shuts the lane when it finds nothing
 * (the dispatch opens it again). */
static void
test_order_lane_and_lock (Fixture       *f,
                          gconstpointer  data)
{
  Pair pair;

  pair_init (&pair);
  mp_message_port_start (pair.port2);
  lane_round (&pair, f->context, FALSE);
  lane_round (&pair, f->context, TRUE);
  pair_finish (&pair, f->context);
}

typedef struct
{
  MpMessagePort *peer;
  gboolean nested_done;
} NestedIteration;

static void
on_message_iterate_nested (Collector     *collector,
                           MpMessagePort *port,
                           MpMessage     *message)
{
  NestedIteration *nested = collector->hook_data;

  if (message_get_int (message) != 1)
    return;

  /* Like a modal dialog: the peer posts while the handler runs a nested loop. */
  post_int (nested->peer, 2);
  post_int (nested->peer, 3);
  spin_context (mp_message_port_get_context (port), 20);
  nested->nested_done = TRUE;
}

/* A handler that iterates the context (nested main loop) causes neither
 * duplicates, loss, reordering nor a deadlock. */
static void
test_order_nested_iteration_in_handler (Fixture       *f,
                                        gconstpointer  data)
{
  Pair pair;
  Collector c2;
  NestedIteration nested = { NULL, FALSE };

  pair_init (&pair);
  nested.peer = pair.port1;
  collector_init (&c2, pair.port2);
  c2.hook = on_message_iterate_nested;
  c2.hook_data = &nested;
  mp_message_port_start (pair.port2);

  post_int (pair.port1, 1);
  WAIT_FOR (f->context, collector_count (&c2) == 3);
  spin_context (f->context, QUIET_MSEC);
  g_assert_true (nested.nested_done);
  collector_assert_events (&c2, "1 2 3");

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Scheduling: coalescing and the per-dispatch budget                       */
/* ------------------------------------------------------------------------ */

/* A burst posted from another thread while the owner is not iterating is
 * delivered by a single dispatch (one wake-up, not one per post). */
static void
test_scheduling_burst_one_dispatch (Fixture       *f,
                                    gconstpointer  data)
{
  Pair pair;
  Collector c2;
  SenderArgs args = { NULL, 0, 1000 };
  GThread *sender;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.record_events = FALSE;
  mp_message_port_start (pair.port2);
  spin_context (f->context, 5);

  args.port = pair.port1;
  sender = g_thread_new ("burst", sender_thread_main, &args);
  g_thread_join (sender);
  g_assert_cmpint (collector_count (&c2), ==, 0);

  g_assert_true (g_main_context_iteration (f->context, FALSE));
  g_assert_cmpint (collector_count (&c2), ==, 1000);
  collector_assert_sequence (&c2, 0, 1000);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpint (collector_count (&c2), ==, 1000);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

/* The wake-up of a GMainContext is an eventfd on Linux; its counter (visible
 * without consuming it in /proc/self/fdinfo) is the number of wake-ups since
 * the context last acknowledged them. */
static GArray *
list_eventfds (void)
{
  GArray *fds = g_array_new (FALSE, FALSE, sizeof (int));
  GDir *dir = g_dir_open ("/proc/self/fd", 0, NULL);
  const char *name;

  if (dir == NULL)
    return fds;
  while ((name = g_dir_read_name (dir)) != NULL)
    {
      char *path = g_build_filename ("/proc/self/fd", name, NULL);
      char *target = g_file_read_link (path, NULL);

      /* An eventfd, or the read end of a pipe (mpport's waker when built with
       * -Dwaker=pipe). */
      if (target != NULL &&
          (strcmp (target, "anon_inode:[eventfd]") == 0 ||
           (g_str_has_prefix (target, "pipe:") &&
            (fcntl ((int) g_ascii_strtoll (name, NULL, 10), F_GETFL) & O_ACCMODE) == O_RDONLY)))
        {
          int fd = (int) g_ascii_strtoll (name, NULL, 10);

          g_array_append_val (fds, fd);
        }
      g_free (target);
      g_free (path);
    }
  g_dir_close (dir);
  return fds;
}

/* Wake-ups written to @fd and not yet acknowledged: an eventfd's counter, or the bytes
 * waiting in a pipe (one per wake-up). */
static gint64
eventfd_count (int fd)
{
  char *path = g_strdup_printf ("/proc/self/fdinfo/%d", fd);
  char *contents = NULL;
  gint64 count = -1;
  struct stat st;

  if (fstat (fd, &st) == 0 && S_ISFIFO (st.st_mode))
    {
      int unread = 0;

      g_free (path);
      return ioctl (fd, FIONREAD, &unread) == 0 ? unread : -1;
    }

  if (g_file_get_contents (path, &contents, NULL, NULL))
    {
      const char *line = strstr (contents, "eventfd-count:");

      if (line != NULL)
        count = (gint64) g_ascii_strtoull (line + strlen ("eventfd-count:"), NULL, 16);
    }
  g_free (contents);
  g_free (path);
  return count;
}

/* Creates a context and finds its wake-up eventfd; -1 if it cannot be told. */
static GMainContext *
context_new_with_wakeup_fd (int *wakeup_fd)
{
  GArray *before = list_eventfds ();
  GMainContext *ctx = g_main_context_new ();
  GArray *after = list_eventfds ();
  guint i, j;

  *wakeup_fd = -1;
  for (i = 0; i < after->len; i++)
    {
      int fd = g_array_index (after, int, i);
      gboolean known = FALSE;

      for (j = 0; j < before->len; j++)
        known = known || g_array_index (before, int, j) == fd;
      if (known)
        continue;
      if (*wakeup_fd != -1)
        {
          *wakeup_fd = -1;   /* ambiguous */
          break;
        }
      *wakeup_fd = fd;
    }
  if (*wakeup_fd != -1 && eventfd_count (*wakeup_fd) < 0)
    *wakeup_fd = -1;
  g_array_unref (before);
  g_array_unref (after);
  return ctx;
}

/* A burst of posts from another thread costs exactly one wake-up of the
 * owning context, not one per post. */
static void
test_scheduling_burst_one_wakeup (void)
{
  GMainContext *ctx;
  int wakeup_fd;
  int mp_fd = -1;
  Pair pair;
  Collector c2;
  guint burst;

  ctx = context_new_with_wakeup_fd (&wakeup_fd);
  if (wakeup_fd < 0)
    {
      g_main_context_unref (ctx);
      g_test_skip ("cannot observe the main context's wake-up eventfd");
      return;
    }
  g_main_context_push_thread_default (ctx);

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.record_events = FALSE;
  {
    /* mpport may wake the context through an eventfd of its own, made at the first start()
     * on a context: count the writes on both. */
    GArray *before = list_eventfds ();
    GArray *after;

    mp_message_port_start (pair.port2);
    after = list_eventfds ();
    for (guint i = 0; i < after->len; i++)
      {
        int fd = g_array_index (after, int, i);
        gboolean known = FALSE;

        for (guint j = 0; j < before->len; j++)
          known = known || g_array_index (before, int, j) == fd;
        if (!known)
          mp_fd = fd;
      }
    g_array_unref (before);
    g_array_unref (after);
  }

  for (burst = 0; burst < 3; burst++)
    {
      SenderArgs args = { NULL, 0, 1000 };
      GThread *sender;
      gint64 base, mp_base;

      spin_context (ctx, 5);
      base = eventfd_count (wakeup_fd);
      mp_base = mp_fd >= 0 ? eventfd_count (mp_fd) : 0;
      args.port = pair.port1;
      args.first = (gint32) (burst * 1000);
      sender = g_thread_new ("burst", sender_thread_main, &args);
      g_thread_join (sender);
      g_assert_cmpint (eventfd_count (wakeup_fd) - base +
                       (mp_fd >= 0 ? eventfd_count (mp_fd) - mp_base : 0), ==, 1);

      g_assert_true (g_main_context_iteration (ctx, FALSE));
      g_assert_cmpint (collector_count (&c2), ==, (gint) (burst + 1) * 1000);
    }
  collector_assert_sequence (&c2, 0, 3000);

  collector_clear (&c2);
  pair_finish (&pair, ctx);
  g_main_context_pop_thread_default (ctx);
  g_main_context_unref (ctx);
}

/* One dispatch delivers at most the budget, then returns to the loop. */
static void
test_scheduling_dispatch_budget (Fixture       *f,
                                 gconstpointer  data)
{
  const gint n = 3 * DISPATCH_BUDGET - 72;
  Pair pair;
  Collector c2;
  gint i;
  guint productive = 0;
  gint64 deadline;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.record_events = FALSE;
  for (i = 0; i < n; i++)
    post_int (pair.port1, i);
  mp_message_port_start (pair.port2);

  deadline = g_get_monotonic_time () + WAIT_TIMEOUT_USEC;
  while (collector_count (&c2) < n)
    {
      gint before = collector_count (&c2);
      gint delta;

      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (f->context, FALSE);
      delta = collector_count (&c2) - before;
      g_assert_cmpint (delta, <=, DISPATCH_BUDGET);
      if (delta > 0)
        productive++;
    }
  g_assert_cmpuint (productive, >=, 3);
  collector_assert_sequence (&c2, 0, (guint) n);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

#define N_TIMER_FIRES 5

typedef struct
{
  MpMessagePort *feeder;      /* posting on it feeds the handled port */
  GMainContext *context;
  gint64 feed_deadline;
  gboolean stop;
  gboolean starved;
  guint handled;
  guint fires;
  guint handled_at_fire[N_TIMER_FIRES];
  gboolean early_fired;
  guint handled_at_early;
} Feeder;

static gboolean
feeder_timer_cb (gpointer data)
{
  Feeder *feeder = data;

  feeder->handled_at_fire[feeder->fires++] = feeder->handled;
  return feeder->fires < N_TIMER_FIRES ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static gboolean
feeder_early_timer_cb (gpointer data)
{
  Feeder *feeder = data;

  feeder->early_fired = TRUE;
  feeder->handled_at_early = feeder->handled;
  return G_SOURCE_REMOVE;
}

static void
feeder_on_message (MpMessagePort *port,
                   MpMessage     *message,
                   gpointer       user_data)
{
  Feeder *feeder = user_data;

  feeder->handled++;
  if (feeder->handled == 1)
    {
      /* A 0 ms timer of the same priority, added inside the first handler. */
      GSource *timer = g_timeout_source_new (0);

      g_source_set_priority (timer, G_PRIORITY_DEFAULT);
      g_source_set_callback (timer, feeder_timer_cb, feeder, NULL);
      g_source_attach (timer, feeder->context);
      g_source_unref (timer);
    }

  if (feeder->stop)
    return;
  if (g_get_monotonic_time () > feeder->feed_deadline)
    {
      /* The loop never got back to the timers: starvation. */
      feeder->starved = TRUE;
      feeder->stop = TRUE;
      return;
    }
  post_int (feeder->feeder, message_get_int (message) + 1);
}

/* A handler that feeds its own port on every message cannot starve timers
 * of the same priority; the feeding continues between timer fires. */
static void
test_scheduling_self_feeding_cannot_starve_timeout (Fixture       *f,
                                                    gconstpointer  data)
{
  Pair pair;
  Feeder feeder;
  GSource *early;
  gulong handler;
  gint64 deadline;
  guint i;

  memset (&feeder, 0, sizeof feeder);
  pair_init (&pair);
  feeder.feeder = pair.port1;
  feeder.context = f->context;
  feeder.feed_deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
  handler = g_signal_connect (pair.port2, "message", G_CALLBACK (feeder_on_message), &feeder);

  early = g_timeout_source_new (10);
  g_source_set_priority (early, G_PRIORITY_DEFAULT);
  g_source_set_callback (early, feeder_early_timer_cb, &feeder, NULL);
  g_source_attach (early, f->context);
  g_source_unref (early);

  mp_message_port_start (pair.port2);
  post_int (pair.port1, 0);

  deadline = g_get_monotonic_time () + WAIT_TIMEOUT_USEC;
  while (!(feeder.fires == N_TIMER_FIRES && feeder.early_fired))
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (f->context, FALSE);
    }
  feeder.stop = TRUE;

  g_assert_false (feeder.starved);
  g_assert_cmpuint (feeder.handled_at_fire[0], >, 0);
  g_assert_cmpuint (feeder.handled_at_fire[0], <, 10000);
  /* The handler kept running between timer fires: several dispatches. A port that spent
   * its budget yields for one iteration, in which this 0 ms timer (ready in every
   * iteration) fires once more: so the port runs between every other fire at least. */
  for (i = 2; i < N_TIMER_FIRES; i++)
    g_assert_cmpuint (feeder.handled_at_fire[i], >, feeder.handled_at_fire[i - 2]);
  g_test_message ("handled %u messages; timer fires at %u %u %u %u %u, early at %u",
                  feeder.handled, feeder.handled_at_fire[0], feeder.handled_at_fire[1],
                  feeder.handled_at_fire[2], feeder.handled_at_fire[3],
                  feeder.handled_at_fire[4], feeder.handled_at_early);

  spin_context (f->context, 5);
  g_signal_handler_disconnect (pair.port2, handler);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Priority                                                                 */
/* ------------------------------------------------------------------------ */

static void
test_priority_higher_dispatches_first (Fixture       *f,
                                       gconstpointer  data)
{
  Pair x, y;
  Collector cx, cy;
  GString *order = g_string_new (NULL);
  GMutex order_mutex;

  g_mutex_init (&order_mutex);
  pair_init (&x);
  pair_init (&y);
  collector_init (&cx, x.port2);
  collector_init (&cy, y.port2);
  cx.name = "x";
  cy.name = "y";
  cx.shared = cy.shared = order;
  cx.shared_mutex = cy.shared_mutex = &order_mutex;

  /* y: default priority, started and posted to first. x: set before start. */
  mp_message_port_start (y.port2);
  mp_message_port_set_priority (x.port2, G_PRIORITY_HIGH);
  mp_message_port_start (x.port2);
  post_int (y.port1, 1);
  post_int (y.port1, 2);
  post_int (y.port1, 3);
  post_int (x.port1, 1);
  post_int (x.port1, 2);
  post_int (x.port1, 3);
  WAIT_FOR (f->context, collector_count (&cx) == 3 && collector_count (&cy) == 3);
  g_assert_cmpstr (order->str, ==, "x1 x2 x3 y1 y2 y3");

  /* Set after start: it applies to the already attached source. */
  g_string_truncate (order, 0);
  mp_message_port_set_priority (y.port2, G_PRIORITY_HIGH - 10);
  g_assert_cmpint (mp_message_port_get_priority (y.port2), ==, G_PRIORITY_HIGH - 10);
  post_int (x.port1, 4);
  post_int (x.port1, 5);
  post_int (y.port1, 4);
  post_int (y.port1, 5);
  WAIT_FOR (f->context, collector_count (&cx) == 5 && collector_count (&cy) == 5);
  g_assert_cmpstr (order->str, ==, "y4 y5 x4 x5");

  collector_clear (&cx);
  collector_clear (&cy);
  pair_finish (&x, f->context);
  pair_finish (&y, f->context);
  g_string_free (order, TRUE);
  g_mutex_clear (&order_mutex);
}

/* ------------------------------------------------------------------------ */
/* receive()                                                                */
/* ------------------------------------------------------------------------ */

static void
test_receive_fifo_and_null_when_empty (void)
{
  Pair pair;
  MpMessage *message;
  GError *error = NULL;

  pair_init (&pair);
  assert_receive_null (pair.port2);

  post_int (pair.port1, 1);
  g_assert_true (mp_message_port_post_message (pair.port1, NULL, NULL, 0, &error));
  g_assert_no_error (error);
  post_int (pair.port1, 0);
  post_int (pair.port1, 2);

  g_assert_cmpint (receive_int (pair.port2), ==, 1);
  /* A NULL payload is a message, distinct from "nothing queued". */
  message = mp_message_port_receive (pair.port2);
  g_assert_nonnull (message);
  g_assert_null (mp_message_get_data (message));
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);
  mp_message_unref (message);
  g_assert_cmpint (receive_int (pair.port2), ==, 0);
  g_assert_cmpint (receive_int (pair.port2), ==, 2);
  assert_receive_null (pair.port2);
  assert_receive_null (pair.port2);
  g_assert_false (mp_message_port_is_closed (pair.port2));

  /* Still usable afterwards. */
  post_int (pair.port1, 3);
  g_assert_cmpint (receive_int (pair.port2), ==, 3);

  pair_finish (&pair, NULL);
}

static void
test_receive_works_unstarted (Fixture       *f,
                              gconstpointer  data)
{
  Pair pair;
  Collector c2;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  post_int (pair.port1, 10);
  post_int (pair.port1, 11);
  g_assert_null (mp_message_port_get_context (pair.port2));
  g_assert_cmpint (receive_int (pair.port2), ==, 10);
  g_assert_cmpint (receive_int (pair.port2), ==, 11);
  assert_receive_null (pair.port2);
  g_assert_null (mp_message_port_get_context (pair.port2));
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "");

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

static void
test_receive_emits_nothing (Fixture       *f,
                            gconstpointer  data)
{
  Pair pair;
  Collector c2;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.forbidden = &in_call;
  mp_message_port_start (pair.port2);

  post_int (pair.port1, 1);
  post_int (pair.port1, 2);
  g_atomic_int_set (&in_call, 1);
  g_assert_cmpint (receive_int (pair.port2), ==, 1);
  g_atomic_int_set (&in_call, 0);
  WAIT_FOR (f->context, collector_count (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "2");

  /* Taken before the dispatch ran: never emitted. */
  post_int (pair.port1, 3);
  g_assert_cmpint (receive_int (pair.port2), ==, 3);
  assert_receive_null (pair.port2);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "2");

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

static void
test_receive_null_when_closed (Fixture       *f,
                               gconstpointer  data)
{
  Pair pair;
  gint freed = 0;

  pair_init (&pair);
  post_int (pair.port1, 1);
  post_value (pair.port1, counted_variant_new (&freed, 4096));
  mp_message_port_close (pair.port2);
  assert_receive_null (pair.port2);
  assert_receive_null (pair.port2);
  /* The queued messages were dropped, not kept. */
  g_assert_cmpint (g_atomic_int_get (&freed), ==, 1);

  pair_finish (&pair, f->context);
}

static void
on_message_receive_one (Collector     *collector,
                        MpMessagePort *port,
                        MpMessage     *message)
{
  MpMessage *next = mp_message_port_receive (port);
  char *token;

  if (next == NULL)
    {
      collector_note (collector, "r-none");
      return;
    }
  token = g_strdup_printf ("r%d", message_get_int (next));
  collector_note (collector, token);
  g_free (token);
  mp_message_unref (next);
}

static void
test_receive_interleaves_same_thread (Fixture       *f,
                                      gconstpointer  data)
{
  Pair pair;
  Collector c2;
  gint32 i;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.hook = on_message_receive_one;
  for (i = 1; i <= 6; i++)
    post_int (pair.port1, i);
  mp_message_port_start (pair.port2);

  /* receive() before the first dispatch ran. */
  g_assert_cmpint (receive_int (pair.port2), ==, 1);

  WAIT_FOR (f->context, collector_count (&c2) == 3);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "2 r3 4 r5 6 r-none");

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

typedef struct
{
  MpMessagePort *port;
  gint stop;
  gint taken;
  GArray *values;
} Receiver;

static gpointer
receiver_thread_main (gpointer data)
{
  Receiver *receiver = data;

  while (!g_atomic_int_get (&receiver->stop))
    {
      MpMessage *message = mp_message_port_receive (receiver->port);

      if (message == NULL)
        {
          g_thread_yield ();
          continue;
        }
      {
        gint32 value = message_get_int (message);

        g_array_append_val (receiver->values, value);
      }
      mp_message_unref (message);
      g_atomic_int_inc (&receiver->taken);
    }
  return NULL;
}

/* One thread calls receive() in a loop while the owner dispatches signals and
 * a third thread posts: every message reaches exactly one of them, and each
 * consumer sees its share in order. */
static void
test_receive_interleaves_cross_thread (Fixture       *f,
                                       gconstpointer  data)
{
  const guint n = 100000;
  Pair pair;
  Collector c2;
  Receiver receiver;
  SenderArgs args;
  GThread *receiver_thread, *sender_thread;
  guint8 *seen;
  guint i;
  gint32 last;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.record_events = FALSE;
  mp_message_port_start (pair.port2);

  memset (&receiver, 0, sizeof receiver);
  receiver.port = pair.port2;
  receiver.values = g_array_new (FALSE, FALSE, sizeof (gint32));
  args.port = pair.port1;
  args.first = 0;
  args.n = n;

  receiver_thread = g_thread_new ("receiver", receiver_thread_main, &receiver);
  sender_thread = g_thread_new ("sender", sender_thread_main, &args);
  WAIT_FOR (f->context,
            collector_count (&c2) + g_atomic_int_get (&receiver.taken) == (gint) n);
  g_thread_join (sender_thread);
  g_atomic_int_set (&receiver.stop, 1);
  g_thread_join (receiver_thread);
  spin_context (f->context, QUIET_MSEC);

  g_test_message ("signals: %d, receive(): %d", collector_count (&c2), receiver.taken);
  g_assert_cmpint (collector_count (&c2) + receiver.taken, ==, (gint) n);

  seen = g_new0 (guint8, n);
  last = -1;
  for (i = 0; i < receiver.values->len; i++)
    {
      gint32 value = g_array_index (receiver.values, gint32, i);

      g_assert_cmpint (value, >, last);
      g_assert_cmpint (value, <, (gint32) n);
      last = value;
      seen[value]++;
    }
  g_mutex_lock (&c2.mutex);
  last = -1;
  for (i = 0; i < c2.values->len; i++)
    {
      gint32 value = g_array_index (c2.values, gint32, i);

      g_assert_cmpint (value, >, last);
      g_assert_cmpint (value, <, (gint32) n);
      last = value;
      seen[value]++;
    }
  g_mutex_unlock (&c2.mutex);
  for (i = 0; i < n; i++)
    if (seen[i] != 1)
      g_assert_cmpuint (seen[i], ==, 1);
  g_free (seen);
  g_array_unref (receiver.values);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Transfer                                                                 */
/* ------------------------------------------------------------------------ */

static void
test_transfer_new_ports_in_list_order (Fixture       *f,
                                       gconstpointer  data)
{
  Pair pair, c[3];
  MpMessagePort *list[3];
  MpMessagePort *received[3];
  MpMessage *message;
  GPtrArray *ports;
  GError *error = NULL;
  guint i;

  pair_init (&pair);
  for (i = 0; i < 3; i++)
    pair_init (&c[i]);
  /* Neither creation nor address order: c[2], c[0], c[1]. */
  list[0] = c[2].port1;
  list[1] = c[0].port1;
  list[2] = c[1].port1;

  g_assert_true (mp_message_port_post_message (pair.port1, g_variant_new_string ("three"),
                                               list, 3, &error));
  g_assert_no_error (error);

  message = mp_message_port_receive (pair.port2);
  g_assert_nonnull (message);
  g_assert_cmpstr (g_variant_get_string (mp_message_get_data (message), NULL), ==, "three");
  ports = mp_message_get_ports (message);
  g_assert_nonnull (ports);
  g_assert_cmpuint (ports->len, ==, 3);
  for (i = 0; i < 3; i++)
    {
      received[i] = g_object_ref (g_ptr_array_index (ports, i));
      g_assert_true (MP_IS_MESSAGE_PORT (received[i]));
      /* New objects, unstarted, open; the originals are detached. */
      g_assert_true (received[i] != list[i]);
      g_assert_null (mp_message_port_get_context (received[i]));
      g_assert_false (mp_message_port_is_closed (received[i]));
      g_assert_true (mp_message_port_is_closed (list[i]));
    }
  mp_message_unref (message);

  /* Distinct values through each far side identify each new port:
   * received[0] is c[2]'s, received[1] c[0]'s, received[2] c[1]'s. */
  for (i = 0; i < 3; i++)
    post_int (c[i].port2, 100 + (gint32) i);
  g_assert_cmpint (receive_int (received[0]), ==, 102);
  g_assert_cmpint (receive_int (received[1]), ==, 100);
  g_assert_cmpint (receive_int (received[2]), ==, 101);
  for (i = 0; i < 3; i++)
    assert_receive_null (received[i]);
  for (i = 0; i < 3; i++)
    post_int (received[i], 200 + (gint32) i);
  g_assert_cmpint (receive_int (c[2].port2), ==, 200);
  g_assert_cmpint (receive_int (c[0].port2), ==, 201);
  g_assert_cmpint (receive_int (c[1].port2), ==, 202);

  for (i = 0; i < 3; i++)
    {
      mp_message_port_close (received[i]);
      g_assert_finalize_object (received[i]);
      pair_finish (&c[i], f->context);
    }
  pair_finish (&pair, f->context);
}

/* A message without transfer list carries no ports (ports travel only in it). */
static void
test_transfer_only_in_transfer_list (void)
{
  Pair pair, c;
  MpMessage *message;
  GError *error = NULL;
  MpMessagePort *empty[1] = { NULL };

  pair_init (&pair);
  pair_init (&c);

  /* A non-NULL list with n_transfer 0 transfers nothing. */
  g_assert_true (mp_message_port_post_message (pair.port1, g_variant_new_int32 (1),
                                               empty, 0, &error));
  g_assert_no_error (error);
  message = mp_message_port_receive (pair.port2);
  g_assert_nonnull (message);
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);
  mp_message_unref (message);

  g_assert_false (mp_message_port_is_closed (c.port1));
  post_int (c.port1, 5);
  g_assert_cmpint (receive_int (c.port2), ==, 5);

  pair_finish (&c, NULL);
  pair_finish (&pair, NULL);
}

/* The sender-side object of a transferred port is detached: posting fails,
 * is_closed() is TRUE, get_context() NULL, and it emits nothing more. */
static void
test_transfer_sender_side_detached (Fixture       *f,
                                    gconstpointer  data)
{
  Pair pair;
  Collector old_c;
  MpMessagePort *moved;
  MpMessagePort *old;
  GError *error = NULL;

  pair_init (&pair);
  old = pair.port2;
  collector_init (&old_c, old);
  mp_message_port_start (old);
  post_int (pair.port1, 1);
  WAIT_FOR (f->context, collector_count (&old_c) == 1);

  moved = transfer_port (old);

  g_assert_true (mp_message_port_is_closed (old));
  g_assert_null (mp_message_port_get_context (old));
  g_assert_false (mp_message_port_post_message (old, g_variant_new_int32 (9), NULL, 0, &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_clear_error (&error);
  assert_receive_null (old);

  /* The peer's messages now go to the new object, never to the old one. */
  post_int (pair.port1, 2);
  spin_context (f->context, QUIET_MSEC);
  mp_message_port_start (old);
  g_assert_null (mp_message_port_get_context (old));
  mp_message_port_close (old);     /* no effect on the moved side */
  post_int (pair.port1, 3);
  g_assert_false (mp_message_port_is_closed (moved));
  g_assert_cmpint (receive_int (moved), ==, 2);
  g_assert_cmpint (receive_int (moved), ==, 3);
  post_int (moved, 4);
  g_assert_cmpint (receive_int (pair.port1), ==, 4);

  /* It cannot be transferred again. */
  {
    Pair carrier;

    pair_init (&carrier);
    assert_post_fails (carrier.port1, &old, 1, MP_ERROR_DATA_CLONE);
    assert_receive_null (carrier.port2);
    pair_finish (&carrier, NULL);
  }

  /* Even the close of the other side does not reach the old object. */
  mp_message_port_close (pair.port1);
  assert_receive_null (moved);
  g_assert_true (mp_message_port_is_closed (moved));
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&old_c, "1");

  collector_clear (&old_c);
  g_assert_finalize_object (moved);
  /* No longer kept alive by a source. */
  pair_finish (&pair, f->context);
}

static void
assert_post_fails (MpMessagePort        *port,
                   MpMessagePort *const *transfer,
                   guint                 n_transfer,
                   gint                  code)
{
  GError *error = NULL;
  gint freed = 0;
  gboolean ok;

  ok = mp_message_port_post_message (port, counted_variant_new (&freed, 256),
                                     transfer, n_transfer, &error);
  g_assert_false (ok);
  g_assert_error (error, MP_ERROR, code);
  g_assert_nonnull (error->message);
  g_assert_cmpstr (error->message, !=, "");
  g_clear_error (&error);
  /* The floating payload was sunk and released. */
  g_assert_cmpint (g_atomic_int_get (&freed), ==, 1);
}

/* Both directions of a pair still work. */
static void
assert_pair_usable (MpMessagePort *a,
                    MpMessagePort *b,
                    gint32         value)
{
  g_assert_false (mp_message_port_is_closed (a));
  g_assert_false (mp_message_port_is_closed (b));
  post_int (a, value);
  g_assert_cmpint (receive_int (b), ==, value);
  post_int (b, value + 1);
  g_assert_cmpint (receive_int (a), ==, value + 1);
}

/* self, peer, duplicate, NULL, closed, detached and non-port entries are
 * refused atomically with DATA_CLONE; every listed port stays usable. */
static void
test_transfer_invalid_entries_data_clone (Fixture       *f,
                                          gconstpointer  data)
{
  Pair pair, c, d, closed, detached, q;
  MpMessagePort *moved_detached, *moved_q;
  GObject *bogus;
  MpMessagePort *list[3];

  pair_init (&pair);
  pair_init (&c);
  pair_init (&d);
  pair_init (&closed);
  pair_init (&detached);
  pair_init (&q);
  bogus = g_object_new (G_TYPE_OBJECT, NULL);
  mp_message_port_close (closed.port1);
  moved_detached = transfer_port (detached.port1);

  /* The source port itself. */
  list[0] = pair.port1;
  assert_post_fails (pair.port1, list, 1, MP_ERROR_DATA_CLONE);
  list[0] = c.port1; list[1] = pair.port1; list[2] = d.port1;
  assert_post_fails (pair.port1, list, 3, MP_ERROR_DATA_CLONE);

  /* The entangled peer, from either side. */
  list[0] = pair.port2;
  assert_post_fails (pair.port1, list, 1, MP_ERROR_DATA_CLONE);
  list[0] = pair.port1;
  assert_post_fails (pair.port2, list, 1, MP_ERROR_DATA_CLONE);
  list[0] = c.port1; list[1] = pair.port2; list[2] = d.port1;
  assert_post_fails (pair.port1, list, 3, MP_ERROR_DATA_CLONE);

  /* A duplicate. */
  list[0] = c.port1; list[1] = d.port1; list[2] = c.port1;
  assert_post_fails (pair.port1, list, 3, MP_ERROR_DATA_CLONE);

  /* NULL. */
  list[0] = c.port1; list[1] = NULL; list[2] = d.port1;
  assert_post_fails (pair.port1, list, 3, MP_ERROR_DATA_CLONE);

  /* A closed port. */
  list[0] = c.port1; list[1] = closed.port1; list[2] = d.port1;
  assert_post_fails (pair.port1, list, 3, MP_ERROR_DATA_CLONE);

  /* A detached (transferred-away) object. */
  list[0] = c.port1; list[1] = detached.port1; list[2] = d.port1;
  assert_post_fails (pair.port1, list, 3, MP_ERROR_DATA_CLONE);

  /* Something that is not a port at all. */
  list[0] = c.port1; list[1] = (MpMessagePort *) bogus; list[2] = d.port1;
  assert_post_fails (pair.port1, list, 3, MP_ERROR_DATA_CLONE);

  /* The peer is whatever object currently owns the other side. */
  moved_q = transfer_port (q.port2);
  list[0] = moved_q;
  assert_post_fails (q.port1, list, 1, MP_ERROR_DATA_CLONE);
  list[0] = q.port1;
  assert_post_fails (moved_q, list, 1, MP_ERROR_DATA_CLONE);

  /* Nothing was posted and nothing changed. */
  assert_receive_null (pair.port2);
  assert_receive_null (pair.port1);
  assert_pair_usable (pair.port1, pair.port2, 10);
  assert_pair_usable (c.port1, c.port2, 20);
  assert_pair_usable (d.port1, d.port2, 30);
  assert_pair_usable (moved_detached, detached.port2, 40);
  assert_pair_usable (q.port1, moved_q, 50);
  g_assert_null (mp_message_port_get_context (c.port1));

  /* And the valid list goes through, in order. */
  list[0] = c.port1; list[1] = d.port1;
  post_int_with_ports (pair.port1, 60, list, 2);
  {
    g_autoptr(MpMessage) message = mp_message_port_receive (pair.port2);

    g_assert_nonnull (message);
    g_assert_cmpint (message_get_int (message), ==, 60);
    g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 2);
    post_int (c.port2, 61);
    post_int (d.port2, 62);
    g_assert_cmpint (receive_int (g_ptr_array_index (mp_message_get_ports (message), 0)), ==, 61);
    g_assert_cmpint (receive_int (g_ptr_array_index (mp_message_get_ports (message), 1)), ==, 62);
  }

  /* The library kept no reference on the bogus entry. */
  g_assert_finalize_object (bogus);
  mp_message_port_close (moved_detached);
  g_assert_finalize_object (moved_detached);
  mp_message_port_close (moved_q);
  g_assert_finalize_object (moved_q);
  pair_finish (&pair, f->context);
  pair_finish (&c, f->context);
  pair_finish (&d, f->context);
  pair_finish (&closed, f->context);
  pair_finish (&detached, f->context);
  pair_finish (&q, f->context);
}

/* A port that was itself closed or transferred away fails with INVALID_STATE,
 * whatever its transfer list holds (checked first). */
static void
test_transfer_invalid_state_before_transfer_list (Fixture       *f,
                                                  gconstpointer  data)
{
  Pair pair, c, d, detached;
  GObject *bogus;
  MpMessagePort *moved;
  MpMessagePort *list[3];

  pair_init (&pair);
  pair_init (&c);
  pair_init (&d);
  pair_init (&detached);
  bogus = g_object_new (G_TYPE_OBJECT, NULL);
  moved = transfer_port (detached.port1);
  mp_message_port_close (pair.port1);

  list[0] = c.port1; list[1] = NULL; list[2] = d.port1;
  assert_post_fails (pair.port1, list, 3, MP_ERROR_INVALID_STATE);
  list[0] = pair.port1;
  assert_post_fails (pair.port1, list, 1, MP_ERROR_INVALID_STATE);
  list[0] = c.port1; list[1] = (MpMessagePort *) bogus; list[2] = c.port1;
  assert_post_fails (pair.port1, list, 3, MP_ERROR_INVALID_STATE);
  assert_post_fails (pair.port1, NULL, 0, MP_ERROR_INVALID_STATE);

  list[0] = c.port1; list[1] = detached.port1; list[2] = NULL;
  assert_post_fails (detached.port1, list, 3, MP_ERROR_INVALID_STATE);
  assert_post_fails (detached.port1, NULL, 0, MP_ERROR_INVALID_STATE);

  assert_pair_usable (c.port1, c.port2, 1);
  assert_pair_usable (d.port1, d.port2, 3);
  assert_pair_usable (moved, detached.port2, 5);

  g_assert_finalize_object (bogus);
  mp_message_port_close (moved);
  g_assert_finalize_object (moved);
  pair_finish (&pair, f->context);
  pair_finish (&c, f->context);
  pair_finish (&d, f->context);
  pair_finish (&detached, f->context);
}

/* Messages queued at a port before its transfer, and posted after it, all
 * reach the new object, in order. */
static void
test_transfer_queue_follows_port (Fixture       *f,
                                  gconstpointer  data)
{
  Pair pair, cd;
  Collector cn;
  MpMessagePort *moved;

  pair_init (&pair);
  pair_init (&cd);
  post_int (cd.port2, 1);
  post_int (cd.port2, 2);
  post_int_with_ports (pair.port1, 0, &cd.port1, 1);
  post_int (cd.port2, 3);
  moved = receive_port (pair.port2);
  post_int (cd.port2, 4);

  g_assert_cmpint (receive_int (moved), ==, 1);

  /* The rest by signal, after start() on the new object. */
  collector_init (&cn, moved);
  mp_message_port_start (moved);
  g_assert_true (mp_message_port_get_context (moved) == f->context);
  post_int (cd.port2, 5);
  WAIT_FOR (f->context, collector_count (&cn) == 4);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&cn, "2 3 4 5");

  /* And back the other way. */
  post_int (moved, 6);
  g_assert_cmpint (receive_int (cd.port2), ==, 6);

  collector_clear (&cn);
  mp_message_port_close (moved);
  assert_finalized_eventually (f->context, moved);
  pair_finish (&cd, f->context);
  pair_finish (&pair, f->context);
}

/* A started port with a queued, not yet dispatched message: the message goes
 * with the port, the old object never emits it. */
static void
test_transfer_started_queue_follows_port (Fixture       *f,
                                          gconstpointer  data)
{
  Pair cd;
  Collector old_c;
  MpMessagePort *moved;

  pair_init (&cd);
  collector_init (&old_c, cd.port1);
  mp_message_port_start (cd.port1);
  post_int (cd.port2, 1);
  post_int (cd.port2, 2);

  moved = transfer_port (cd.port1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&old_c, "");
  g_assert_cmpint (receive_int (moved), ==, 1);
  g_assert_cmpint (receive_int (moved), ==, 2);
  assert_receive_null (moved);

  collector_clear (&old_c);
  mp_message_port_close (moved);
  g_assert_finalize_object (moved);
  pair_finish (&cd, f->context);
}

typedef struct
{
  MpMessagePort *moved;
} TransferInHandler;

static void
on_message_transfer_self (Collector     *collector,
                          MpMessagePort *port,
                          MpMessage     *message)
{
  TransferInHandler *state = collector->hook_data;

  if (message_get_int (message) == 1)
    state->moved = transfer_port (port);
}

/* Transferred from inside its own handler: the rest of the batch goes along. */
static void
test_transfer_from_inside_handler_takes_rest (Fixture       *f,
                                              gconstpointer  data)
{
  Pair pair;
  Collector old_c, new_c;
  TransferInHandler state = { NULL };

  pair_init (&pair);
  collector_init (&old_c, pair.port2);
  old_c.hook = on_message_transfer_self;
  old_c.hook_data = &state;
  post_int (pair.port1, 1);
  post_int (pair.port1, 2);
  post_int (pair.port1, 3);
  mp_message_port_start (pair.port2);

  WAIT_FOR (f->context, state.moved != NULL);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&old_c, "1");
  g_assert_true (mp_message_port_is_closed (pair.port2));

  collector_init (&new_c, state.moved);
  g_assert_null (mp_message_port_get_context (state.moved));
  mp_message_port_start (state.moved);
  WAIT_FOR (f->context, collector_count (&new_c) == 2);
  post_int (pair.port1, 4);
  WAIT_FOR (f->context, collector_count (&new_c) == 3);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&new_c, "2 3 4");
  collector_assert_events (&old_c, "1");

  mp_message_port_close (pair.port1);
  WAIT_FOR (f->context, collector_closes (&new_c) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&new_c, "2 3 4 N C");
  collector_assert_events (&old_c, "1");

  collector_clear (&old_c);
  collector_clear (&new_c);
  assert_finalized_eventually (f->context, state.moved);
  pair_finish (&pair, f->context);
}

/* A received port is unstarted; it binds at its start(), on that thread. */
static void
test_transfer_received_port_unstarted (Fixture       *f,
                                       gconstpointer  data)
{
  Pair pair, cd;
  Collector cn;
  Worker *worker;
  MpMessagePort *moved;

  worker = worker_new ("received");
  pair_init (&pair);
  pair_init (&cd);
  mp_message_port_start (cd.port1);   /* started before the transfer */
  post_int_with_ports (pair.port1, 0, &cd.port1, 1);
  moved = receive_port (pair.port2);
  g_assert_null (mp_message_port_get_context (moved));

  collector_init (&cn, moved);
  cn.owner = worker->thread;
  post_int (cd.port2, 1);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpint (collector_count (&cn), ==, 0);

  worker_run_sync (worker, start_port_cb, moved);
  g_assert_true (mp_message_port_get_context (moved) == worker->context);
  post_int (cd.port2, 2);
  WAIT_FOR (NULL, collector_count (&cn) == 2);
  mp_message_port_close (cd.port2);
  WAIT_FOR (NULL, collector_closes (&cn) == 1);
  collector_assert_events (&cn, "1 2 N C");

  collector_clear (&cn);
  assert_finalized_eventually (NULL, moved);
  pair_finish (&cd, f->context);
  pair_finish (&pair, f->context);
  worker_free (worker);
}

/* A port forwarded through several hops still reaches its final owner. */
static void
test_transfer_chained_hops (Fixture       *f,
                            gconstpointer  data)
{
  Pair cd;
  MpMessagePort *hop1, *hop2, *hop3;
  GError *error = NULL;

  pair_init (&cd);
  post_int (cd.port2, 1);
  hop1 = transfer_port (cd.port1);
  post_int (cd.port2, 2);
  hop2 = transfer_port (hop1);
  post_int (cd.port2, 3);
  hop3 = transfer_port (hop2);

  g_assert_true (mp_message_port_is_closed (hop1));
  g_assert_true (mp_message_port_is_closed (hop2));
  g_assert_false (mp_message_port_post_message (hop1, NULL, NULL, 0, &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_clear_error (&error);

  g_assert_cmpint (receive_int (hop3), ==, 1);
  g_assert_cmpint (receive_int (hop3), ==, 2);
  g_assert_cmpint (receive_int (hop3), ==, 3);
  post_int (hop3, 4);
  g_assert_cmpint (receive_int (cd.port2), ==, 4);

  g_assert_finalize_object (hop1);
  g_assert_finalize_object (hop2);
  mp_message_port_close (hop3);
  g_assert_finalize_object (hop3);
  pair_finish (&cd, f->context);
}

/* ------------------------------------------------------------------------ */
/* Close                                                                    */
/* ------------------------------------------------------------------------ */

static void
test_close_idempotent (Fixture       *f,
                       gconstpointer  data)
{
  Pair pair;
  Collector c1, c2;

  pair_init_collected (&pair, &c1, &c2, TRUE);

  mp_message_port_close (pair.port1);
  g_assert_true (mp_message_port_is_closed (pair.port1));
  mp_message_port_close (pair.port1);
  mp_message_port_close (pair.port1);
  WAIT_FOR (f->context, collector_closes (&c1) == 1 && collector_closes (&c2) == 1);

  /* Closing the survivor after it heard the close, and again the closer. */
  mp_message_port_close (pair.port2);
  mp_message_port_close (pair.port2);
  mp_message_port_close (pair.port1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c1, "N C");
  collector_assert_events (&c2, "N C");

  /* Both sides closing at once: still exactly once each. */
  {
    Pair both;
    Collector b1, b2;

    pair_init_collected (&both, &b1, &b2, TRUE);
    mp_message_port_close (both.port1);
    mp_message_port_close (both.port2);
    mp_message_port_close (both.port1);
    WAIT_FOR (f->context, collector_closes (&b1) == 1 && collector_closes (&b2) == 1);
    spin_context (f->context, QUIET_MSEC);
    collector_assert_events (&b1, "N C");
    collector_assert_events (&b2, "N C");
    pair_finish_collected (&both, &b1, &b2, f->context);
  }

  pair_finish_collected (&pair, &c1, &c2, f->context);
}

/* "close" comes later, from the owning context's dispatch, on both sides. */
static void
test_close_asynchronous (Fixture       *f,
                         gconstpointer  data)
{
  Pair pair;
  Collector c1, c2;

  pair_init_collected (&pair, &c1, &c2, FALSE);
  c1.forbidden = c2.forbidden = &in_call;
  mp_message_port_start (pair.port1);
  mp_message_port_start (pair.port2);

  g_atomic_int_set (&in_call, 1);
  mp_message_port_close (pair.port1);
  g_atomic_int_set (&in_call, 0);
  g_assert_true (mp_message_port_is_closed (pair.port1));
  g_assert_cmpint (collector_closes (&c1), ==, 0);
  g_assert_cmpint (collector_closes (&c2), ==, 0);
  g_assert_cmpint (g_atomic_int_get (&c1.n_notify_closed), ==, 0);

  WAIT_FOR (f->context, collector_closes (&c1) == 1 && collector_closes (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c1, "N C");
  collector_assert_events (&c2, "N C");

  pair_finish_collected (&pair, &c1, &c2, f->context);
}

/* The survivor gets "close" only after the data its peer posted before
 * closing; "notify::closed" right before "close". */
static void
test_close_survivor_after_posted_data (Fixture       *f,
                                       gconstpointer  data)
{
  Pair pair;
  Collector c1, c2;

  pair_init_collected (&pair, &c1, &c2, TRUE);

  post_int (pair.port1, 1);
  post_int (pair.port1, 2);
  post_int (pair.port1, 3);
  mp_message_port_close (pair.port1);
  /* The survivor's posts still succeed (and are dropped). */
  post_int (pair.port2, 99);
  g_assert_false (mp_message_port_is_closed (pair.port2));

  WAIT_FOR (f->context, collector_closes (&c1) == 1 && collector_closes (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "1 2 3 N C");
  collector_assert_events (&c1, "N C");
  g_assert_true (mp_message_port_is_closed (pair.port2));

  pair_finish_collected (&pair, &c1, &c2, f->context);
}

static gpointer
post_two_and_close_main (gpointer data)
{
  MpMessagePort *port = data;

  post_int (port, 1);
  post_int (port, 2);
  mp_message_port_close (port);
  return NULL;
}

/* Cross-thread: a thread posts first/last then closes; the survivor always
 * gets both, in order, before "close" (Node #22762). */
static void
test_close_survivor_after_data_cross_thread (Fixture       *f,
                                             gconstpointer  data)
{
  guint iteration;

  for (iteration = 0; iteration < 200; iteration++)
    {
      Pair pair;
      Collector c2;
      GThread *thread;

      pair_init (&pair);
      collector_init (&c2, pair.port2);
      mp_message_port_start (pair.port2);
      thread = g_thread_new ("closer", post_two_and_close_main, pair.port1);
      WAIT_FOR (f->context, collector_closes (&c2) == 1);
      g_thread_join (thread);
      collector_assert_events (&c2, "1 2 N C");
      collector_clear (&c2);
      pair_finish (&pair, f->context);
    }
}

static void
on_message_close_self (Collector     *collector,
                       MpMessagePort *port,
                       MpMessage     *message)
{
  if (message_get_int (message) == 1)
    {
      mp_message_port_close (port);
      g_assert_true (mp_message_port_is_closed (port));
    }
}

/* close() inside a handler with more queued: no further "message". */
static void
test_close_no_message_after_close_in_handler (Fixture       *f,
                                              gconstpointer  data)
{
  Pair pair;
  Collector c1, c2;

  pair_init_collected (&pair, &c1, &c2, FALSE);
  c2.hook = on_message_close_self;
  mp_message_port_start (pair.port1);
  post_int (pair.port1, 1);
  post_int (pair.port1, 2);
  post_int (pair.port1, 3);
  mp_message_port_start (pair.port2);

  WAIT_FOR (f->context, collector_closes (&c1) == 1 && collector_closes (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "1 N C");
  collector_assert_events (&c1, "N C");

  pair_finish_collected (&pair, &c1, &c2, f->context);
}

/* close() outside dispatch with messages queued at the closing port: they are
 * dropped (released at once), never delivered. */
static void
test_close_drops_queued_at_closing_port (Fixture       *f,
                                         gconstpointer  data)
{
  Pair pair;
  Collector c2;
  gint freed = 0;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  mp_message_port_start (pair.port2);
  post_int (pair.port1, 1);
  post_value (pair.port1, counted_variant_new (&freed, 4096));
  post_value (pair.port1, counted_variant_new (&freed, 4096));
  mp_message_port_close (pair.port2);
  g_assert_cmpint (g_atomic_int_get (&freed), ==, 2);

  WAIT_FOR (f->context, collector_closes (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "N C");

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

/* How far a Streamer may run ahead of its receiver. */
#define STREAMER_WINDOW 256

typedef struct
{
  MpMessagePort *port;
  Collector *receiver;
  gint stop;
  guint posted;
} Streamer;

static gpointer
streamer_main (gpointer data)
{
  Streamer *streamer = data;

  /* Once the survivor has seen the close, posting may fail: stop there.
   * The window keeps the stream flowing without flooding the queue: where
   * threads run one at a time (valgrind) an unbounded producer queued
   * millions of messages before the receiver got a turn. */
  while (!g_atomic_int_get (&streamer->stop))
    {
      if (streamer->posted - (guint) collector_count (streamer->receiver) >= STREAMER_WINDOW)
        {
          g_usleep (50);
          continue;
        }
      if (!mp_message_port_post_message (streamer->port,
                                         g_variant_new_int32 ((gint32) streamer->posted++),
                                         NULL, 0, NULL))
        break;
    }
  return NULL;
}

/* close() from a thread that does not own the port, while it is receiving a
 * stream: at most the message already in the handler's hands is emitted
 * after close() returns; both sides hear "close" on their own context. */
static void
test_close_from_other_thread (Fixture       *f,
                              gconstpointer  data)
{
  Pair pair;
  Collector c1, c2;
  Worker *worker;
  Streamer streamer;
  GThread *thread;
  gint at_close;

  worker = worker_new ("owner");
  pair_init_collected (&pair, &c1, &c2, FALSE);
  c2.owner = worker->thread;
  c2.record_events = FALSE;
  c2.tolerate_in_flight = TRUE;
  mp_message_port_start (pair.port1);
  worker_run_sync (worker, start_port_cb, pair.port2);

  memset (&streamer, 0, sizeof streamer);
  streamer.port = pair.port1;
  streamer.receiver = &c2;
  thread = g_thread_new ("streamer", streamer_main, &streamer);
  WAIT_FOR (NULL, collector_count (&c2) >= 1000);

  mp_message_port_close (pair.port2);
  at_close = collector_count (&c2);
  g_assert_true (mp_message_port_is_closed (pair.port2));

  WAIT_FOR (f->context, collector_closes (&c1) == 1 && collector_closes (&c2) == 1);
  g_atomic_int_set (&streamer.stop, 1);
  g_thread_join (thread);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpint (collector_count (&c2), <=, at_close + 1);
  collector_assert_sequence (&c2, 0, (guint) collector_count (&c2));
  collector_assert_events (&c1, "N C");

  pair_finish_collected (&pair, &c1, &c2, f->context);
  worker_free (worker);
}

/* is_closed(): TRUE right after one's own close(), for a transferred-away
 * object, and for the survivor only once it reached the close marker. */
static void
test_close_is_closed_states (Fixture       *f,
                             gconstpointer  data)
{
  Pair pair, started, moved_pair;
  Collector c1, cs;
  MpMessagePort *moved;

  /* Unstarted survivor, reaching the marker through receive(). */
  pair_init (&pair);
  collector_init (&c1, pair.port1);
  post_int (pair.port2, 1);
  mp_message_port_close (pair.port2);
  g_assert_true (mp_message_port_is_closed (pair.port2));
  g_assert_false (mp_message_port_is_closed (pair.port1));
  post_int (pair.port1, 7);   /* succeeds, dropped */
  g_assert_cmpint (receive_int (pair.port1), ==, 1);
  g_assert_false (mp_message_port_is_closed (pair.port1));
  assert_receive_null (pair.port1);
  g_assert_true (mp_message_port_is_closed (pair.port1));
  assert_receive_null (pair.port1);
  /* An unstarted port has no context and emits neither signal. */
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c1, "");

  /* Started survivor, reaching it through dispatch. */
  pair_init (&started);
  collector_init (&cs, started.port1);
  mp_message_port_start (started.port1);
  post_int (started.port2, 1);
  mp_message_port_close (started.port2);
  g_assert_false (mp_message_port_is_closed (started.port1));
  WAIT_FOR (f->context, collector_closes (&cs) == 1);
  g_assert_true (mp_message_port_is_closed (started.port1));
  collector_assert_events (&cs, "1 N C");

  /* Transferred-away object. */
  pair_init (&moved_pair);
  moved = transfer_port (moved_pair.port1);
  g_assert_true (mp_message_port_is_closed (moved_pair.port1));
  g_assert_false (mp_message_port_is_closed (moved));
  g_assert_false (mp_message_port_is_closed (moved_pair.port2));

  collector_clear (&c1);
  collector_clear (&cs);
  mp_message_port_close (moved);
  g_assert_finalize_object (moved);
  pair_finish (&pair, f->context);
  pair_finish (&started, f->context);
  pair_finish (&moved_pair, f->context);
}

/* A started survivor whose receive() reaches the marker gets NULL, is closed,
 * and then emits "notify::closed" and "close" on its context. */
static void
test_close_receive_reaches_marker (Fixture       *f,
                                   gconstpointer  data)
{
  Pair pair;
  Collector c2;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.forbidden = &in_call;
  mp_message_port_start (pair.port2);
  post_int (pair.port1, 1);
  mp_message_port_close (pair.port1);

  g_atomic_int_set (&in_call, 1);
  g_assert_cmpint (receive_int (pair.port2), ==, 1);
  g_assert_false (mp_message_port_is_closed (pair.port2));
  assert_receive_null (pair.port2);
  g_atomic_int_set (&in_call, 0);
  g_assert_true (mp_message_port_is_closed (pair.port2));

  WAIT_FOR (f->context, collector_closes (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "N C");

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

static void
test_close_post_on_closed_invalid_state (Fixture       *f,
                                         gconstpointer  data)
{
  Pair pair;
  Collector c2;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  mp_message_port_start (pair.port2);
  mp_message_port_close (pair.port1);
  assert_post_fails (pair.port1, NULL, 0, MP_ERROR_INVALID_STATE);
  {
    GError *error = NULL;

    g_assert_false (mp_message_port_post_message (pair.port1, NULL, NULL, 0, &error));
    g_assert_error (error, MP_ERROR, MP_ERROR_INVALID_STATE);
    g_clear_error (&error);
  }

  WAIT_FOR (f->context, collector_closes (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "N C");

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

/* Posting while the peer is closed succeeds and the message is dropped (and
 * released at once). */
static void
test_close_post_to_closed_peer_dropped (Fixture       *f,
                                        gconstpointer  data)
{
  Pair pair;
  Collector c1, c2;
  gint freed = 0;
  GError *error = NULL;
  gboolean ok;

  pair_init_collected (&pair, &c1, &c2, TRUE);
  mp_message_port_close (pair.port2);

  g_assert_true (mp_message_port_post_message (pair.port1, counted_variant_new (&freed, 4096),
                                               NULL, 0, &error));
  g_assert_no_error (error);
  g_assert_cmpint (g_atomic_int_get (&freed), ==, 1);
  post_int (pair.port1, 1);

  WAIT_FOR (f->context, collector_closes (&c1) == 1 && collector_closes (&c2) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "N C");
  collector_assert_events (&c1, "N C");

  /* Once the survivor is closed too (it reached its peer's close), a post
   * still succeeds and drops: its own code did nothing wrong. */
  g_assert_true (mp_message_port_is_closed (pair.port1));
  ok = mp_message_port_post_message (pair.port1, counted_variant_new (&freed, 4096),
                                     NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_true (ok);
  g_assert_cmpint (g_atomic_int_get (&freed), ==, 2);

  /* Until its own code closes it: then posting is misuse. */
  mp_message_port_close (pair.port1);
  ok = mp_message_port_post_message (pair.port1, counted_variant_new (&freed, 4096),
                                     NULL, 0, &error);
  g_assert_error (error, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_assert_false (ok);
  g_clear_error (&error);
  g_assert_cmpint (g_atomic_int_get (&freed), ==, 3);

  pair_finish_collected (&pair, &c1, &c2, f->context);
}

/* 10 000 posts of 64 KiB to a closed peer: each payload is released by the
 * time post_message() returns, so nothing accumulates. */
static void
test_close_no_memory_growth_to_closed_peer (void)
{
  const guint n = 10000;
  Pair pair;
  gint freed = 0;
  guint i;

  pair_init (&pair);
  mp_message_port_close (pair.port2);
  for (i = 0; i < n; i++)
    {
      GError *error = NULL;
      gboolean ok;

      ok = mp_message_port_post_message (pair.port1, counted_variant_new (&freed, 64 * 1024),
                                         NULL, 0, &error);
      g_assert_no_error (error);
      g_assert_true (ok);
      if ((guint) g_atomic_int_get (&freed) != i + 1)
        g_assert_cmpint (g_atomic_int_get (&freed), ==, (gint) i + 1);
    }
  g_assert_false (mp_message_port_is_closed (pair.port1));
  assert_receive_null (pair.port1);
  g_assert_cmpint (g_atomic_int_get (&freed), ==, (gint) n);

  pair_finish (&pair, NULL);
}

/* ------------------------------------------------------------------------ */
/* Lifetime                                                                 */
/* ------------------------------------------------------------------------ */

/* A started port the caller holds no reference on keeps receiving, and is
 * finalized once its peer closes. */
static void
test_lifetime_started_port_keeps_itself_alive (Fixture       *f,
                                               gconstpointer  data)
{
  MpMessageChannel *channel;
  MpMessagePort *port1, *port2;
  Collector c2;
  GWeakRef weak;

  channel = mp_message_channel_new ();
  port1 = g_object_ref (mp_message_channel_get_port1 (channel));
  port2 = mp_message_channel_get_port2 (channel);   /* not referenced */
  collector_init (&c2, port2);
  mp_message_port_start (port2);
  g_weak_ref_init (&weak, port2);
  g_assert_finalize_object (channel);
  port2 = NULL;

  g_assert_false (weak_ref_is_empty (&weak));
  post_int (port1, 1);
  post_int (port1, 2);
  post_int (port1, 3);
  WAIT_FOR (f->context, collector_count (&c2) == 3);
  spin_context (f->context, QUIET_MSEC);
  g_assert_false (weak_ref_is_empty (&weak));
  post_int (port1, 4);
  WAIT_FOR (f->context, collector_count (&c2) == 4);

  mp_message_port_close (port1);
  WAIT_FOR (f->context, collector_closes (&c2) == 1 && weak_ref_is_empty (&weak));
  collector_assert_events (&c2, "1 2 3 4 N C");

  collector_clear (&c2);
  g_weak_ref_clear (&weak);
  g_assert_finalize_object (port1);
}

/* A self-kept port that closes itself from its handler is finalized. */
static void
test_lifetime_self_kept_port_closing_itself (Fixture       *f,
                                             gconstpointer  data)
{
  MpMessageChannel *channel;
  MpMessagePort *port1, *port2;
  Collector c1, c2;
  GWeakRef weak;

  channel = mp_message_channel_new ();
  port1 = g_object_ref (mp_message_channel_get_port1 (channel));
  port2 = mp_message_channel_get_port2 (channel);
  collector_init (&c1, port1);
  collector_init (&c2, port2);
  c2.hook = on_message_close_self;
  mp_message_port_start (port2);
  mp_message_port_start (port1);
  g_weak_ref_init (&weak, port2);
  g_assert_finalize_object (channel);
  port2 = NULL;

  post_int (port1, 1);
  post_int (port1, 2);
  WAIT_FOR (f->context, collector_closes (&c1) == 1 && weak_ref_is_empty (&weak));
  collector_assert_events (&c2, "1 N C");
  collector_assert_events (&c1, "N C");

  collector_clear (&c1);
  collector_clear (&c2);
  g_weak_ref_clear (&weak);
  assert_finalized_eventually (f->context, port1);
}

/* Finalizing an unstarted port closes its side: the peer gets "close". */
static void
test_lifetime_finalize_unstarted_closes_side (Fixture       *f,
                                              gconstpointer  data)
{
  MpMessageChannel *channel;
  MpMessagePort *port1;
  Collector c1;
  GWeakRef weak;

  channel = mp_message_channel_new ();
  port1 = g_object_ref (mp_message_channel_get_port1 (channel));
  g_weak_ref_init (&weak, mp_message_channel_get_port2 (channel));
  collector_init (&c1, port1);
  mp_message_port_start (port1);
  post_int (port1, 1);   /* queued at the unstarted port, dropped with it */

  g_assert_finalize_object (channel);
  g_assert_true (weak_ref_is_empty (&weak));

  WAIT_FOR (f->context, collector_closes (&c1) == 1);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c1, "N C");
  g_assert_true (mp_message_port_is_closed (port1));

  collector_clear (&c1);
  g_weak_ref_clear (&weak);
  assert_finalized_eventually (f->context, port1);
}

/* Messages dropped undelivered close the ports they carry: the carried
 * ports' peers get "close". Three ways to drop: close of the receiving port,
 * posting to a closed peer, finalizing the unstarted receiving port. */
static void
test_lifetime_dropped_messages_close_carried_ports (Fixture       *f,
                                                    gconstpointer  data)
{
  Pair carrier, c;
  Collector cc;
  MpMessageChannel *channel;
  MpMessagePort *port1;

  /* 1. Close of the port where it is queued. */
  pair_init (&carrier);
  pair_init (&c);
  collector_init (&cc, c.port2);
  mp_message_port_start (c.port2);
  post_int_with_ports (carrier.port1, 1, &c.port1, 1);
  spin_context (f->context, 10);
  g_assert_cmpint (collector_closes (&cc), ==, 0);
  mp_message_port_close (carrier.port2);
  WAIT_FOR (f->context, collector_closes (&cc) == 1);
  collector_assert_events (&cc, "N C");
  collector_clear (&cc);
  pair_finish (&c, f->context);
  pair_finish (&carrier, f->context);

  /* 2. Posted to a closed peer. */
  pair_init (&carrier);
  pair_init (&c);
  collector_init (&cc, c.port2);
  mp_message_port_start (c.port2);
  mp_message_port_close (carrier.port2);
  post_int_with_ports (carrier.port1, 1, &c.port1, 1);
  g_assert_true (mp_message_port_is_closed (c.port1));
  WAIT_FOR (f->context, collector_closes (&cc) == 1);
  collector_assert_events (&cc, "N C");
  collector_clear (&cc);
  pair_finish (&c, f->context);
  pair_finish (&carrier, f->context);

  /* 3. The unstarted receiving port is finalized. */
  channel = mp_message_channel_new ();
  port1 = g_object_ref (mp_message_channel_get_port1 (channel));
  pair_init (&c);
  collector_init (&cc, c.port2);
  mp_message_port_start (c.port2);
  post_int_with_ports (port1, 1, &c.port1, 1);
  g_assert_finalize_object (channel);
  WAIT_FOR (f->context, collector_closes (&cc) == 1);
  collector_assert_events (&cc, "N C");
  collector_clear (&cc);
  pair_finish (&c, f->context);
  g_assert_finalize_object (port1);
}

typedef struct
{
  MpMessageChannel **channels;
  MpMessagePort **outer;     /* port1 of each channel: the peer of the carried side */
  guint n;
} Nesting;

/* channel k's port2 is carried in a message queued at channel k+1's port2. */
static void
nesting_build (Nesting *nesting,
               guint    n)
{
  guint k;

  nesting->n = n;
  nesting->channels = g_new0 (MpMessageChannel *, n);
  nesting->outer = g_new0 (MpMessagePort *, n);
  for (k = 0; k < n; k++)
    {
      nesting->channels[k] = mp_message_channel_new ();
      nesting->outer[k] = mp_message_channel_get_port1 (nesting->channels[k]);
      if (k > 0)
        {
          MpMessagePort *inner = mp_message_channel_get_port2 (nesting->channels[k - 1]);

          post_int_with_ports (nesting->outer[k], (gint32) k, &inner, 1);
        }
    }
}

/* Every side was closed: each outer port reaches its peer's close marker. */
static void
nesting_check_and_free (Nesting *nesting,
                        guint    first)
{
  guint k;

  for (k = first; k < nesting->n; k++)
    {
      MpMessage *message = mp_message_port_receive (nesting->outer[k]);

      if (message != NULL)
        g_error ("level %u: unexpected message", k);
      if (!mp_message_port_is_closed (nesting->outer[k]))
        g_error ("level %u: carried side was not closed", k);
    }
  for (k = 0; k < nesting->n; k++)
    if (nesting->channels[k] != NULL)
      g_assert_finalize_object (nesting->channels[k]);
  g_free (nesting->channels);
  g_free (nesting->outer);
}

static void
run_on_small_stack (void *(*func) (void *),
                    void  *data)
{
  pthread_attr_t attr;
  pthread_t thread;

  g_assert_cmpint (pthread_attr_init (&attr), ==, 0);
  g_assert_cmpint (pthread_attr_setstacksize (&attr, SMALL_STACK_SIZE), ==, 0);
  g_assert_cmpint (pthread_create (&thread, &attr, func, data), ==, 0);
  g_assert_cmpint (pthread_join (thread, NULL), ==, 0);
  pthread_attr_destroy (&attr);
}

static void *
close_port_thread (void *data)
{
  mp_message_port_close (data);
  return NULL;
}

static void *
unref_object_thread (void *data)
{
  g_object_unref (data);
  return NULL;
}

/* 20 000 nested levels dropped by close(): no recursion (done on a thread
 * with a small stack), every carried side closed. */
static void
test_lifetime_deep_nesting_close (Fixture       *f,
                                  gconstpointer  data)
{
  Nesting nesting;
  Collector c0;
  MpMessagePort *head;

  nesting_build (&nesting, DEEP_NESTING_LEVELS);
  /* The innermost peer listens, to see its "close" as a signal too. */
  collector_init (&c0, nesting.outer[0]);
  mp_message_port_start (nesting.outer[0]);

  head = mp_message_channel_get_port2 (nesting.channels[nesting.n - 1]);
  run_on_small_stack (close_port_thread, head);
  g_assert_true (mp_message_port_is_closed (head));

  WAIT_FOR (f->context, collector_closes (&c0) == 1);
  collector_assert_events (&c0, "N C");
  collector_clear (&c0);
  nesting_check_and_free (&nesting, 0);
}

/* Same, dropped by finalizing the unstarted head port. */
static void
test_lifetime_deep_nesting_finalize (Fixture       *f,
                                     gconstpointer  data)
{
  Nesting nesting;
  MpMessageChannel *head_channel;

  nesting_build (&nesting, DEEP_NESTING_LEVELS);
  head_channel = g_steal_pointer (&nesting.channels[nesting.n - 1]);
  nesting.n--;   /* outer[n - 1] goes with its channel */
  run_on_small_stack (unref_object_thread, head_channel);
  nesting_check_and_free (&nesting, 0);
}

typedef struct
{
  MpMessagePort *port;   /* a reference the thread drops */
  gint32 handled;
} ContextOwner;

static void
on_message_count (MpMessagePort *port,
                  MpMessage     *message,
                  gpointer       user_data)
{
  gint *count = user_data;

  g_atomic_int_inc (count);
}

static gpointer
context_owner_main (gpointer data)
{
  ContextOwner *owner = data;
  GMainContext *ctx = g_main_context_new ();

  g_main_context_push_thread_default (ctx);
  g_signal_connect (owner->port, "message", G_CALLBACK (on_message_count), &owner->handled);
  mp_message_port_start (owner->port);
  g_assert_true (mp_message_port_get_context (owner->port) == ctx);
  g_object_unref (g_steal_pointer (&owner->port));   /* kept by its source only */
  /* Deliver what is there, then quit without closing anything. */
  while (g_main_context_iteration (ctx, FALSE))
    ;
  g_main_context_pop_thread_default (ctx);
  g_main_context_unref (ctx);
  return NULL;
}

/* A thread that started a port and then drops its last reference on its
 * context: the port closes (the peer gets "close") and is finalized. */
static void
test_lifetime_context_finalized_closes_ports (Fixture       *f,
                                              gconstpointer  data)
{
  MpMessageChannel *channel;
  MpMessagePort *port1;
  Collector c1;
  ContextOwner owner = { NULL, 0 };
  GWeakRef weak;
  GThread *thread;

  channel = mp_message_channel_new ();
  port1 = g_object_ref (mp_message_channel_get_port1 (channel));
  owner.port = g_object_ref (mp_message_channel_get_port2 (channel));
  g_weak_ref_init (&weak, owner.port);
  g_assert_finalize_object (channel);
  collector_init (&c1, port1);
  mp_message_port_start (port1);
  post_int (port1, 1);

  thread = g_thread_new ("context-owner", context_owner_main, &owner);
  g_thread_join (thread);

  WAIT_FOR (f->context, collector_closes (&c1) == 1 && weak_ref_is_empty (&weak));
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c1, "N C");
  g_assert_true (mp_message_port_is_closed (port1));
  g_assert_cmpint (g_atomic_int_get (&owner.handled), ==, 1);

  collector_clear (&c1);
  g_weak_ref_clear (&weak);
  assert_finalized_eventually (f->context, port1);
}

/* Same with queued, undelivered messages carrying a port: that port's peer
 * also hears "close". */
static gpointer
context_owner_no_iterate_main (gpointer data)
{
  ContextOwner *owner = data;
  GMainContext *ctx = g_main_context_new ();

  g_main_context_push_thread_default (ctx);
  mp_message_port_start (owner->port);
  g_object_unref (g_steal_pointer (&owner->port));
  g_main_context_pop_thread_default (ctx);
  g_main_context_unref (ctx);
  return NULL;
}

static void
test_lifetime_context_finalized_drops_queue (Fixture       *f,
                                             gconstpointer  data)
{
  Pair pair, c;
  Collector c1, cc;
  ContextOwner owner = { NULL, 0 };
  GWeakRef weak;
  GThread *thread;

  pair_init (&pair);
  pair_init (&c);
  collector_init (&c1, pair.port1);
  collector_init (&cc, c.port2);
  mp_message_port_start (pair.port1);
  mp_message_port_start (c.port2);
  post_int_with_ports (pair.port1, 1, &c.port1, 1);

  owner.port = g_steal_pointer (&pair.port2);
  g_weak_ref_init (&weak, owner.port);
  g_assert_finalize_object (g_steal_pointer (&pair.channel));
  thread = g_thread_new ("context-owner", context_owner_no_iterate_main, &owner);
  g_thread_join (thread);

  WAIT_FOR (f->context, collector_closes (&c1) == 1 && collector_closes (&cc) == 1 &&
                        weak_ref_is_empty (&weak));
  collector_assert_events (&c1, "N C");
  collector_assert_events (&cc, "N C");

  collector_clear (&c1);
  collector_clear (&cc);
  g_weak_ref_clear (&weak);
  assert_finalized_eventually (f->context, g_steal_pointer (&pair.port1));
  pair_finish (&c, f->context);
}

/* ------------------------------------------------------------------------ */
/* Messages from another process that could not be decoded                  */
/* ------------------------------------------------------------------------ */

/* What the reader of a cross-process port queues for a message it could not decode: an
 * error entry, sent from @from to its peer like a post, in order with the posts. */
static void
inject_error_entry (MpMessagePort *from,
                    GError        *error)
{
  g_assert_true (mp_pipe_side_send (mp_message_port_get_side (from),
                                    mp_message_new_error (error)));
}

static void
inject_invalid_data (MpMessagePort *from,
                     const char    *text)
{
  inject_error_entry (from, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_INVALID_DATA, text));
}

static gint
collector_message_errors (Collector *collector)
{
  return g_atomic_int_get (&collector->n_message_errors);
}

/* An error domain whose errors count their frees (an extended GError domain), to see an
 * error entry released without valgrind. */
typedef struct
{
  int unused;
} CountedErrorPrivate;

static gint counted_errors_freed;

static GQuark counted_error_quark (void);

static void
counted_error_private_init (CountedErrorPrivate *priv)
{
}

static void
counted_error_private_copy (const CountedErrorPrivate *src,
                            CountedErrorPrivate       *dest)
{
}

static void
counted_error_private_clear (CountedErrorPrivate *priv)
{
  g_atomic_int_inc (&counted_errors_freed);
}

G_DEFINE_EXTENDED_ERROR (CountedError, counted_error)

/* receive_async() outcomes, logged in the order the callbacks ran: "1 !bad 2" (a
 * G_IO_ERROR_INVALID_DATA logs "!<text>", any other error "?<domain>:<code>"); the errors
 * are kept for the test to assert. */
typedef struct
{
  GString *log;
  GPtrArray *errors;   /* (element-type GError) */
  guint n_done;
} ReceiveLog;

static void
receive_log_init (ReceiveLog *log)
{
  log->log = g_string_new (NULL);
  log->errors = g_ptr_array_new_with_free_func ((GDestroyNotify) g_error_free);
  log->n_done = 0;
}

static void
receive_log_clear (ReceiveLog *log)
{
  g_string_free (log->log, TRUE);
  g_ptr_array_unref (log->errors);
}

static void
on_receive_logged (GObject      *source,
                   GAsyncResult *result,
                   gpointer      user_data)
{
  ReceiveLog *log = user_data;
  GError *error = NULL;
  g_autoptr(MpMessage) message = NULL;

  message = mp_message_port_receive_finish (MP_MESSAGE_PORT (source), result, &error);
  g_assert_true ((message != NULL) != (error != NULL));

  if (log->log->len > 0)
    g_string_append_c (log->log, ' ');
  if (message != NULL)
    g_string_append_printf (log->log, "%d", message_get_int (message));
  else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA))
    g_string_append_printf (log->log, "!%s", error->message);
  else
    g_string_append_printf (log->log, "?%s:%d",
                            g_quark_to_string (error->domain), error->code);
  if (error != NULL)
    g_ptr_array_add (log->errors, error);
  log->n_done++;
}

/* A started port emits "message-error" in the entry's place, between the messages around
 * it, on its own context, and goes on delivering. */
static void
test_message_error_signal_in_order (Fixture       *f,
                                    gconstpointer  data)
{
  Pair pair;
  Collector c1, c2;

  pair_init_collected (&pair, &c1, &c2, TRUE);
  post_int (pair.port1, 1);
  inject_invalid_data (pair.port1, "bad");
  post_int (pair.port1, 2);
  inject_invalid_data (pair.port1, "worse");
  inject_invalid_data (pair.port1, "worst");
  post_int (pair.port1, 3);

  WAIT_FOR (f->context, collector_count (&c2) == 3);
  spin_context (f->context, QUIET_MSEC);
  collector_assert_events (&c2, "1 E:bad 2 E:worse E:worst 3");
  g_assert_cmpint (collector_count (&c2), ==, 3);
  g_assert_cmpint (collector_message_errors (&c2), ==, 3);
  collector_assert_sequence (&c2, 1, 3);
  g_assert_false (mp_message_port_is_closed (pair.port2));

  /* Still a working channel, both ways. */
  post_int (pair.port1, 4);
  post_int (pair.port2, 5);
  WAIT_FOR (f->context, collector_count (&c2) == 4 && collector_count (&c1) == 1);
  collector_assert_events (&c2, "1 E:bad 2 E:worse E:worst 3 4");
  collector_assert_events (&c1, "5");
  g_assert_cmpint (collector_message_errors (&c1), ==, 0);

  pair_finish_collected (&pair, &c1, &c2, f->context);
}

/* An error entry is one delivery of the dispatch budget, like the message it replaces. */
static void
test_message_error_counts_against_budget (Fixture       *f,
                                          gconstpointer  data)
{
  Pair pair;
  Collector c2;
  gint delivered = 0;
  gint64 deadline;

  pair_init (&pair);
  collector_init (&c2, pair.port2);
  c2.record_events = FALSE;
  for (gint i = 0; i < DISPATCH_BUDGET - 2; i++)
    post_int (pair.port1, i);
  inject_invalid_data (pair.port1, "bad");
  post_int (pair.port1, DISPATCH_BUDGET - 2);
  post_int (pair.port1, DISPATCH_BUDGET - 1);
  mp_message_port_start (pair.port2);

  /* Everything was queued before start(): the first dispatch delivers exactly the budget,
   * DISPATCH_BUDGET - 1 messages and the error; the last message waits for the next. */
  deadline = g_get_monotonic_time () + WAIT_TIMEOUT_USEC;
  while (delivered == 0)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (f->context, FALSE);
      delivered = collector_count (&c2) + collector_message_errors (&c2);
    }
  g_assert_cmpint (delivered, ==, DISPATCH_BUDGET);
  g_assert_cmpint (collector_message_errors (&c2), ==, 1);
  g_assert_cmpint (collector_count (&c2), ==, DISPATCH_BUDGET - 1);

  WAIT_FOR (f->context, collector_count (&c2) == DISPATCH_BUDGET);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpint (collector_message_errors (&c2), ==, 1);
  collector_assert_sequence (&c2, 0, DISPATCH_BUDGET);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
}

/* Receives that find the entry queued: the one that takes it fails with a copy of its
 * error, and the next one goes on with the next message. */
static void
test_message_error_receive_async_in_order (Fixture       *f,
                                           gconstpointer  data)
{
  Pair pair;
  ReceiveLog log;
  const GError *error;

  receive_log_init (&log);
  pair_init (&pair);
  post_int (pair.port1, 1);
  inject_invalid_data (pair.port1, "bad");
  post_int (pair.port1, 2);

  for (guint i = 0; i < 3; i++)
    mp_message_port_receive_async (pair.port2, NULL, on_receive_logged, &log);
  WAIT_FOR (f->context, log.n_done == 3);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (log.n_done, ==, 3);
  g_assert_cmpstr (log.log->str, ==, "1 !bad 2");
  g_assert_cmpuint (log.errors->len, ==, 1);
  error = g_ptr_array_index (log.errors, 0);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_assert_cmpstr (error->message, ==, "bad");

  assert_receive_null (pair.port2);
  g_assert_false (mp_message_port_is_closed (pair.port2));

  pair_finish (&pair, f->context);
  receive_log_clear (&log);
}

/* Receives already waiting when the entry arrives: the oldest is handed the error, not the
 * signal of the started port, and the next waits on for the next message. */
static void
test_message_error_receive_async_pending (Fixture       *f,
                                          gconstpointer  data)
{
  Pair pair;
  Collector c2;
  ReceiveLog log;
  gint freed_before = g_atomic_int_get (&counted_errors_freed);
  const GError *error;
  g_autofree char *expected = NULL;

  receive_log_init (&log);
  pair_init (&pair);
  collector_init (&c2, pair.port2);
  mp_message_port_start (pair.port2);

  mp_message_port_receive_async (pair.port2, NULL, on_receive_logged, &log);
  mp_message_port_receive_async (pair.port2, NULL, on_receive_logged, &log);
  mp_message_port_receive_async (pair.port2, NULL, on_receive_logged, &log);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (log.n_done, ==, 0);

  inject_invalid_data (pair.port1, "bad");
  inject_error_entry (pair.port1, g_error_new_literal (counted_error_quark (), 7, "counted"));
  /* The receive was handed a copy: the entry and its own error went in the post. */
  g_assert_cmpint (g_atomic_int_get (&counted_errors_freed) - freed_before, ==, 1);
  WAIT_FOR (f->context, log.n_done == 2);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (log.n_done, ==, 2);
  g_assert_cmpuint (log.errors->len, ==, 2);
  error = g_ptr_array_index (log.errors, 0);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_assert_cmpstr (error->message, ==, "bad");
  error = g_ptr_array_index (log.errors, 1);
  g_assert_error (error, counted_error_quark (), 7);

  post_int (pair.port1, 3);
  WAIT_FOR (f->context, log.n_done == 3);
  spin_context (f->context, QUIET_MSEC);
  expected = g_strdup_printf ("!bad ?%s:7 3", g_quark_to_string (counted_error_quark ()));
  g_assert_cmpstr (log.log->str, ==, expected);
  g_assert_cmpint (collector_count (&c2), ==, 0);
  g_assert_cmpint (collector_message_errors (&c2), ==, 0);

  collector_clear (&c2);
  pair_finish (&pair, f->context);
  receive_log_clear (&log);
}

/* A blocking receive that waits when the entry arrives fails with its error. */
typedef struct
{
  MpMessagePort *port;
  MpMessage *message[2];
  GError *error[2];
} BlockingReceiver;

static gpointer
blocking_receiver_main (gpointer data)
{
  BlockingReceiver *receiver = data;

  for (guint i = 0; i < G_N_ELEMENTS (receiver->message); i++)
    receiver->message[i] = mp_message_port_receive_timeout (receiver->port, WAIT_TIMEOUT_USEC,
                                                            NULL, &receiver->error[i]);
  return NULL;
}

static gboolean
port_has_waiting_receive (MpMessagePort *port)
{
  MpPipeSide *side = mp_message_port_get_side (port);
  gboolean waiting;

  g_mutex_lock (&side->mutex);
  waiting = mp_pipe_side_has_waiters (side);
  g_mutex_unlock (&side->mutex);

  return waiting;
}

static void
test_message_error_receive_timeout_waiting (Fixture       *f,
                                            gconstpointer  data)
{
  Pair pair;
  BlockingReceiver receiver = { NULL, { NULL, NULL }, { NULL, NULL } };
  GThread *thread;
  gint freed_before = g_atomic_int_get (&counted_errors_freed);

  pair_init (&pair);
  receiver.port = pair.port2;
  thread = g_thread_new ("blocking-receiver", blocking_receiver_main, &receiver);

  /* Handed to the waiting receive, not queued. */
  WAIT_FOR (NULL, port_has_waiting_receive (pair.port2));
  inject_error_entry (pair.port1, g_error_new_literal (counted_error_quark (), 7, "counted"));
  post_int (pair.port1, 2);
  g_thread_join (thread);

  g_assert_null (receiver.message[0]);
  g_assert_error (receiver.error[0], counted_error_quark (), 7);
  g_assert_cmpstr (receiver.error[0]->message, ==, "counted");
  g_assert_no_error (receiver.error[1]);
  g_assert_cmpint (message_get_int (receiver.message[1]), ==, 2);
  /* The entry went with the post that handed its error over; the copy is ours. */
  g_assert_cmpint (g_atomic_int_get (&counted_errors_freed) - freed_before, ==, 1);
  g_clear_error (&receiver.error[0]);
  g_assert_cmpint (g_atomic_int_get (&counted_errors_freed) - freed_before, ==, 2);
  mp_message_unref (receiver.message[1]);

  assert_receive_null (pair.port2);
  pair_finish (&pair, f->context);
}

/* A receive_timeout() that does not wait is the way to see the entry without a main loop. */
static void
test_message_error_receive_timeout_zero (Fixture       *f,
                                         gconstpointer  data)
{
  Pair pair;
  GError *error = NULL;
  MpMessage *message;

  pair_init (&pair);
  post_int (pair.port1, 1);
  inject_invalid_data (pair.port1, "bad");
  post_int (pair.port1, 2);

  message = mp_message_port_receive_timeout (pair.port2, 0, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (message_get_int (message), ==, 1);
  mp_message_unref (message);

  message = mp_message_port_receive_timeout (pair.port2, 0, NULL, &error);
  g_assert_null (message);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_assert_cmpstr (error->message, ==, "bad");
  g_clear_error (&error);

  message = mp_message_port_receive_timeout (pair.port2, 0, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (message_get_int (message), ==, 2);
  mp_message_unref (message);

  /* Nothing left: a timeout, not an error. */
  g_assert_null (mp_message_port_receive_timeout (pair.port2, 0, NULL, &error));
  g_assert_no_error (error);
  g_assert_false (mp_message_port_is_closed (pair.port2));

  pair_finish (&pair, f->context);
}

/* receive() has no GError: it drops the entries it meets and returns the next message. */
static void
test_message_error_receive_skips (Fixture       *f,
                                  gconstpointer  data)
{
  Pair pair;
  GError *error = NULL;
  gint freed_before = g_atomic_int_get (&counted_errors_freed);

  pair_init (&pair);
  post_int (pair.port1, 1);
  inject_error_entry (pair.port1, g_error_new_literal (counted_error_quark (), 1, "a"));
  inject_error_entry (pair.port1, g_error_new_literal (counted_error_quark (), 2, "b"));
  post_int (pair.port1, 2);

  g_assert_cmpint (receive_int (pair.port2), ==, 1);
  g_assert_cmpint (g_atomic_int_get (&counted_errors_freed) - freed_before, ==, 0);
  g_assert_cmpint (receive_int (pair.port2), ==, 2);
  g_assert_cmpint (g_atomic_int_get (&counted_errors_freed) - freed_before, ==, 2);
  assert_receive_null (pair.port2);

  /* An entry alone: NULL, and it is gone for the other receives too. */
  inject_error_entry (pair.port1, g_error_new_literal (counted_error_quark (), 3, "c"));
  assert_receive_null (pair.port2);
  g_assert_cmpint (g_atomic_int_get (&counted_errors_freed) - freed_before, ==, 3);
  g_assert_null (mp_message_port_receive_timeout (pair.port2, 0, NULL, &error));
  g_assert_no_error (error);

  /* Past an entry, the peer's close is still reached. */
  inject_error_entry (pair.port1, g_error_new_literal (counted_error_quark (), 4, "d"));
  mp_message_port_close (pair.port1);
  g_assert_false (mp_message_port_is_closed (pair.port2));
  assert_receive_null (pair.port2);
  g_assert_true (mp_message_port_is_closed (pair.port2));
  g_assert_cmpint (g_atomic_int_get (&counted_errors_freed) - freed_before, ==, 4);

  pair_finish (&pair, f->context);
}

/* Entries are part of the queue: a transferred port's new owner meets them in order. */
static void
test_message_error_queue_follows_port (Fixture       *f,
                                       gconstpointer  data)
{
  Pair pair;
  MpMessagePort *moved;
  GError *error = NULL;

  pair_init (&pair);
  inject_invalid_data (pair.port1, "bad");
  post_int (pair.port1, 1);
  moved = transfer_port (pair.port2);

  g_assert_null (mp_message_port_receive_timeout (moved, 0, NULL, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_clear_error (&error);
  g_assert_cmpint (receive_int (moved), ==, 1);

  mp_message_port_close (moved);
  g_object_unref (moved);
  pair_finish (&pair, f->context);
}

/* Entries still queued when their port closes, or is finalized unstarted, are released
 * with the rest of its queue. */
static void
test_message_error_dropped_at_close (Fixture       *f,
                                     gconstpointer  data)
{
  Pair pair;
  MpMessageChannel *channel;
  MpMessagePort *port1, *port2;
  gint freed_before = g_atomic_int_get (&counted_errors_freed);

  pair_init (&pair);
  inject_error_entry (pair.port1, g_error_new_literal (counted_error_quark (), 1, "a"));
  post_int (pair.port1, 1);
  inject_error_entry (pair.port1, g_error_new_literal (counted_error_quark (), 2, "b"));
  mp_message_port_close (pair.port2);
  g_assert_cmpint (g_atomic_int_get (&counted_errors_freed) - freed_before, ==, 2);
  /* Sent to a closed port: dropped at once, as a post would be. */
  inject_error_entry (pair.port1, g_error_new_literal (counted_error_quark (), 3, "c"));
  g_assert_cmpint (g_atomic_int_get (&counted_errors_freed) - freed_before, ==, 3);
  pair_finish (&pair, f->context);

  channel = mp_message_channel_new ();
  port1 = g_object_ref (mp_message_channel_get_port1 (channel));
  port2 = g_object_ref (mp_message_channel_get_port2 (channel));
  g_assert_finalize_object (channel);
  inject_error_entry (port1, g_error_new_literal (counted_error_quark (), 4, "d"));
  g_assert_finalize_object (port2);
  g_assert_cmpint (g_atomic_int_get (&counted_errors_freed) - freed_before, ==, 4);
  g_assert_true (mp_message_port_is_peer_closed (port1));
  g_assert_finalize_object (port1);
}

/* ------------------------------------------------------------------------ */
/* Errors and bad input                                                     */
/* ------------------------------------------------------------------------ */

static void
test_errors_domain (void)
{
  GEnumClass *enum_class;
  GError *error = NULL;
  Pair pair;

  g_assert_cmpuint (MP_ERROR, !=, 0);
  g_assert_cmpstr (g_quark_to_string (MP_ERROR), !=, "");

  enum_class = g_type_class_ref (mp_error_get_type ());
  g_assert_nonnull (g_enum_get_value (enum_class, MP_ERROR_DATA_CLONE));
  g_assert_nonnull (g_enum_get_value (enum_class, MP_ERROR_INVALID_STATE));
  g_type_class_unref (enum_class);

  /* Recoverable misuse: a GError with a message, no critical. */
  pair_init (&pair);
  mp_message_port_close (pair.port1);
  g_assert_false (mp_message_port_post_message (pair.port1, NULL, NULL, 0, &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_assert_cmpuint (strlen (error->message), >, 0);
  g_clear_error (&error);
  /* error may be NULL. */
  g_assert_false (mp_message_port_post_message (pair.port1, NULL, NULL, 0, NULL));
  pair_finish (&pair, NULL);
}

static void
test_errors_null_self (void)
{
  GError *error = NULL;

  EXPECT_CRITICAL (g_assert_null (mp_message_channel_get_port1 (NULL)));
  EXPECT_CRITICAL (g_assert_null (mp_message_channel_get_port2 (NULL)));
  EXPECT_CRITICAL (g_assert_false (mp_message_port_post_message (NULL, NULL, NULL, 0, &error)));
  g_assert_no_error (error);
  EXPECT_CRITICAL (mp_message_port_start (NULL));
  EXPECT_CRITICAL (mp_message_port_close (NULL));
  EXPECT_CRITICAL (g_assert_null (mp_message_port_receive (NULL)));
  EXPECT_CRITICAL (g_assert_null (mp_message_port_get_context (NULL)));
  EXPECT_CRITICAL ((void) mp_message_port_is_closed (NULL));
  EXPECT_CRITICAL (g_assert_cmpint (mp_message_port_get_priority (NULL), ==, G_PRIORITY_DEFAULT));
  EXPECT_CRITICAL (mp_message_port_set_priority (NULL, G_PRIORITY_HIGH));
  EXPECT_CRITICAL (g_assert_null (mp_message_ref (NULL)));
  EXPECT_CRITICAL (mp_message_unref (NULL));
  EXPECT_CRITICAL (g_assert_null (mp_message_get_data (NULL)));
  EXPECT_CRITICAL (g_assert_null (mp_message_get_ports (NULL)));
}

static void
test_errors_wrong_type_self (void)
{
  GObject *bogus = g_object_new (G_TYPE_OBJECT, NULL);
  MpMessageChannel *channel = mp_message_channel_new ();
  MpMessagePort *not_port = (MpMessagePort *) bogus;
  MpMessageChannel *not_channel = (MpMessageChannel *) bogus;
  MpMessagePort *channel_as_port = (MpMessagePort *) channel;
  MpMessageChannel *port_as_channel = (MpMessageChannel *) mp_message_channel_get_port1 (channel);
  GError *error = NULL;

  EXPECT_CRITICAL (g_assert_null (mp_message_channel_get_port1 (not_channel)));
  EXPECT_CRITICAL (g_assert_null (mp_message_channel_get_port2 (port_as_channel)));
  EXPECT_CRITICAL (g_assert_false (mp_message_port_post_message (not_port, NULL, NULL, 0, &error)));
  g_assert_no_error (error);
  EXPECT_CRITICAL (g_assert_false (mp_message_port_post_message (channel_as_port, NULL,
                                                                 NULL, 0, &error)));
  g_assert_no_error (error);
  EXPECT_CRITICAL (mp_message_port_start (not_port));
  EXPECT_CRITICAL (mp_message_port_close (channel_as_port));
  EXPECT_CRITICAL (g_assert_null (mp_message_port_receive (not_port)));
  EXPECT_CRITICAL (g_assert_null (mp_message_port_get_context (channel_as_port)));
  EXPECT_CRITICAL ((void) mp_message_port_is_closed (not_port));
  EXPECT_CRITICAL (g_assert_cmpint (mp_message_port_get_priority (not_port), ==, G_PRIORITY_DEFAULT));
  EXPECT_CRITICAL (mp_message_port_set_priority (channel_as_port, G_PRIORITY_HIGH));

  /* Nothing happened to the real objects. */
  g_assert_false (mp_message_port_is_closed (mp_message_channel_get_port1 (channel)));
  g_assert_cmpint (mp_message_port_get_priority (mp_message_channel_get_port1 (channel)), ==,
                   G_PRIORITY_DEFAULT);
  g_assert_finalize_object (bogus);
  g_assert_finalize_object (channel);
}

/* transfer == NULL with n_transfer > 0 is a programmer error. */
static void
test_errors_transfer_null_array (void)
{
  Pair pair;
  GError *error = NULL;
  gint freed = 0;

  pair_init (&pair);
  EXPECT_CRITICAL (g_assert_false (mp_message_port_post_message (pair.port1, NULL, NULL, 2, &error)));
  g_assert_no_error (error);
  assert_receive_null (pair.port2);
  g_assert_false (mp_message_port_is_closed (pair.port1));
  post_int (pair.port1, 1);
  g_assert_cmpint (receive_int (pair.port2), ==, 1);

  /* The caller's (non-floating) payload survives a refused call untouched. */
  {
    GVariant *value = g_variant_ref_sink (counted_variant_new (&freed, 256));

    EXPECT_CRITICAL (g_assert_false (mp_message_port_post_message (pair.port1, value, NULL, 1, &error)));
    g_assert_no_error (error);
    g_assert_cmpint (g_atomic_int_get (&freed), ==, 0);
    g_variant_unref (value);
    g_assert_cmpint (g_atomic_int_get (&freed), ==, 1);
  }
  pair_finish (&pair, NULL);
}

/* ------------------------------------------------------------------------ */

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  /* basics */
  g_test_add_func ("/mpport/channel/ports", test_channel_ports);
  g_test_add_func ("/mpport/message/boxed-refcounted", test_message_boxed);
  ADD_TEST ("/mpport/port/basics/round-trip", test_basics_round_trip);
  ADD_TEST ("/mpport/port/basics/echo", test_basics_echo);
  ADD_TEST ("/mpport/port/basics/null-payload", test_basics_null_payload);
  ADD_TEST ("/mpport/port/basics/floating-payload-sunk", test_basics_floating_payload);
  g_test_add_func ("/mpport/port/basics/payload-reference-kept", test_basics_payload_reference_kept);
  ADD_TEST ("/mpport/port/priority/property-default-and-notify", test_basics_properties);

  /* Threads and contexts */
  ADD_TEST ("/mpport/port/threads/no-emission-inside-calls", test_threads_no_emission_inside_calls);
  ADD_TEST ("/mpport/port/threads/calls-from-any-thread", test_threads_calls_from_any_thread);
  ADD_TEST ("/mpport/port/threads/signals-on-owning-context", test_threads_signals_on_owning_context);
  ADD_TEST ("/mpport/port/start/binds-thread-default-context", test_start_binds_thread_default_context);
  g_test_add_func ("/mpport/port/start/default-context-when-none-pushed",
                   test_start_default_context_when_none_pushed);
  ADD_TEST ("/mpport/port/start/nothing-delivered-without-start", test_start_nothing_delivered_without_start);
  ADD_TEST ("/mpport/port/start/queued-before-start-delivered", test_start_queued_before_start_delivered);
  ADD_TEST ("/mpport/port/start/queue-unbounded-before-start", test_start_queue_unbounded_before_start);
  ADD_TEST ("/mpport/port/start/twice-no-duplicates", test_start_twice_no_duplicates);
  ADD_TEST ("/mpport/port/start/closed-port-noop", test_start_closed_port_noop);
  ADD_TEST ("/mpport/port/order/fifo-100000", test_order_fifo_100000);
  ADD_TEST ("/mpport/port/order/recycled-nodes", test_order_recycled_nodes);
  ADD_TEST ("/mpport/port/order/multi-sender-threads", test_order_multi_sender_threads);
  ADD_TEST ("/mpport/port/order/lane-and-lock", test_order_lane_and_lock);
  ADD_TEST ("/mpport/port/order/nested-iteration-in-handler", test_order_nested_iteration_in_handler);
  ADD_TEST ("/mpport/port/scheduling/burst-one-dispatch", test_scheduling_burst_one_dispatch);
  g_test_add_func ("/mpport/port/scheduling/burst-one-wakeup", test_scheduling_burst_one_wakeup);
  ADD_TEST ("/mpport/port/scheduling/dispatch-budget", test_scheduling_dispatch_budget);
  ADD_TEST ("/mpport/port/scheduling/self-feeding-cannot-starve-timeout",
            test_scheduling_self_feeding_cannot_starve_timeout);
  ADD_TEST ("/mpport/port/priority/higher-dispatches-first", test_priority_higher_dispatches_first);
  g_test_add_func ("/mpport/port/receive/fifo-and-null-when-empty", test_receive_fifo_and_null_when_empty);
  ADD_TEST ("/mpport/port/receive/works-unstarted", test_receive_works_unstarted);
  ADD_TEST ("/mpport/port/receive/emits-nothing", test_receive_emits_nothing);
  ADD_TEST ("/mpport/port/receive/null-when-closed", test_receive_null_when_closed);
  ADD_TEST ("/mpport/port/receive/interleaves-same-thread", test_receive_interleaves_same_thread);
  ADD_TEST ("/mpport/port/receive/interleaves-cross-thread", test_receive_interleaves_cross_thread);

  /* Transfer */
  ADD_TEST ("/mpport/port/transfer/new-ports-in-list-order", test_transfer_new_ports_in_list_order);
  g_test_add_func ("/mpport/port/transfer/only-in-transfer-list", test_transfer_only_in_transfer_list);
  ADD_TEST ("/mpport/port/transfer/sender-side-detached", test_transfer_sender_side_detached);
  ADD_TEST ("/mpport/port/transfer/invalid-entries-data-clone", test_transfer_invalid_entries_data_clone);
  ADD_TEST ("/mpport/port/transfer/invalid-state-before-transfer-list",
            test_transfer_invalid_state_before_transfer_list);
  ADD_TEST ("/mpport/port/transfer/queue-follows-port", test_transfer_queue_follows_port);
  ADD_TEST ("/mpport/port/transfer/started-queue-follows-port", test_transfer_started_queue_follows_port);
  ADD_TEST ("/mpport/port/transfer/from-inside-handler-takes-rest",
            test_transfer_from_inside_handler_takes_rest);
  ADD_TEST ("/mpport/port/transfer/received-port-unstarted", test_transfer_received_port_unstarted);
  ADD_TEST ("/mpport/port/transfer/chained-hops", test_transfer_chained_hops);

  /* Close and lifetime */
  ADD_TEST ("/mpport/port/close/idempotent", test_close_idempotent);
  ADD_TEST ("/mpport/port/close/asynchronous", test_close_asynchronous);
  ADD_TEST ("/mpport/port/close/survivor-after-posted-data", test_close_survivor_after_posted_data);
  ADD_TEST ("/mpport/port/close/survivor-after-data-cross-thread",
            test_close_survivor_after_data_cross_thread);
  ADD_TEST ("/mpport/port/close/no-message-after-close-in-handler",
            test_close_no_message_after_close_in_handler);
  ADD_TEST ("/mpport/port/close/drops-queued-at-closing-port", test_close_drops_queued_at_closing_port);
  ADD_TEST ("/mpport/port/close/from-other-thread", test_close_from_other_thread);
  ADD_TEST ("/mpport/port/close/is-closed-states", test_close_is_closed_states);
  ADD_TEST ("/mpport/port/close/receive-reaches-marker", test_close_receive_reaches_marker);
  ADD_TEST ("/mpport/port/close/post-on-closed-invalid-state", test_close_post_on_closed_invalid_state);
  ADD_TEST ("/mpport/port/close/post-to-closed-peer-dropped", test_close_post_to_closed_peer_dropped);
  g_test_add_func ("/mpport/port/close/no-memory-growth-to-closed-peer",
                   test_close_no_memory_growth_to_closed_peer);
  ADD_TEST ("/mpport/port/lifetime/started-port-keeps-itself-alive",
            test_lifetime_started_port_keeps_itself_alive);
  ADD_TEST ("/mpport/port/lifetime/self-kept-port-closing-itself",
            test_lifetime_self_kept_port_closing_itself);
  ADD_TEST ("/mpport/port/lifetime/finalize-unstarted-closes-side",
            test_lifetime_finalize_unstarted_closes_side);
  ADD_TEST ("/mpport/port/lifetime/dropped-messages-close-carried-ports",
            test_lifetime_dropped_messages_close_carried_ports);
  ADD_TEST ("/mpport/port/lifetime/deep-nesting-close", test_lifetime_deep_nesting_close);
  ADD_TEST ("/mpport/port/lifetime/deep-nesting-finalize", test_lifetime_deep_nesting_finalize);
  ADD_TEST ("/mpport/port/lifetime/context-finalized-closes-ports",
            test_lifetime_context_finalized_closes_ports);
  ADD_TEST ("/mpport/port/lifetime/context-finalized-drops-queue",
            test_lifetime_context_finalized_drops_queue);

  /* Messages from another process that could not be decoded */
  ADD_TEST ("/mpport/port/message-error/signal-in-order", test_message_error_signal_in_order);
  ADD_TEST ("/mpport/port/message-error/counts-against-budget",
            test_message_error_counts_against_budget);
  ADD_TEST ("/mpport/port/message-error/receive-async-in-order",
            test_message_error_receive_async_in_order);
  ADD_TEST ("/mpport/port/message-error/receive-async-pending",
            test_message_error_receive_async_pending);
  ADD_TEST ("/mpport/port/message-error/receive-timeout-waiting",
            test_message_error_receive_timeout_waiting);
  ADD_TEST ("/mpport/port/message-error/receive-timeout-zero", test_message_error_receive_timeout_zero);
  ADD_TEST ("/mpport/port/message-error/receive-skips", test_message_error_receive_skips);
  ADD_TEST ("/mpport/port/message-error/queue-follows-port", test_message_error_queue_follows_port);
  ADD_TEST ("/mpport/port/message-error/dropped-at-close", test_message_error_dropped_at_close);

  /* Errors and bad input */
  g_test_add_func ("/mpport/errors/domain", test_errors_domain);
  g_test_add_func ("/mpport/errors/null-self", test_errors_null_self);
  g_test_add_func ("/mpport/errors/wrong-type-self", test_errors_wrong_type_self);
  g_test_add_func ("/mpport/errors/transfer-null-array", test_errors_transfer_null_array);

  return g_test_run ();
}
