/* test-receive-async.c: mp_message_port_receive_async() and _finish()
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The contract (the doc comment of mp_message_port_receive_async()): a receive
 * completes with the next message, FIFO with every other consumer (receive()
 * and the "message" signal); pending receives are served before the signal,
 * oldest first; the callback runs on the caller's thread-default context and
 * never inside the call; the end of the stream (the peer's close reached, or
 * the port closed while the receive waits) fails it with MP_ERROR_CLOSED; a
 * receive made on a port its own code closed, or on a transferred-away port,
 * fails with MP_ERROR_INVALID_STATE; a cancelled one fails with
 * G_IO_ERROR_CANCELLED and takes no message. Callbacks run in the order their
 * messages were taken. Unstarted and started ports alike.
 *
 * Every callback checks that it does not run inside receive_async() itself.
 * Every wait is bounded, so a bug shows up as a failed assertion, not a hang.
 */

#include <string.h>

#include <mpport/mpport.h>

#include "mp-test-util.h"

#define N_FIFO_MESSAGES 20000
#define N_CANCEL_RACES  1000

/* ------------------------------------------------------------------------ */
/* One receive_async() call and what its callback saw                       */
/* ------------------------------------------------------------------------ */

typedef struct
{
  const char    *name;      /* appended to log on completion */
  GString       *log;       /* shared completion log, or NULL */
  MpMessagePort *port;      /* the port it was called on (not owned) */
  gboolean       in_call;   /* TRUE while receive_async() runs */
  int            done;      /* atomic: callbacks run so far (must end at 1) */
  MpMessage     *message;   /* owned result, or NULL */
  GError        *error;     /* owned error, or NULL */
  GThread       *thread;    /* the thread that ran the callback */
  GMainContext  *context;   /* owned: the context that dispatched the callback */
} Receive;

#define RECEIVE_INIT(name_, log_) { (name_), (log_), NULL, FALSE, 0, NULL, NULL, NULL, NULL }

static void
on_received (GObject      *source,
             GAsyncResult *result,
             gpointer      user_data)
{
  Receive *r = user_data;
  GSource *current = g_main_current_source ();

  /* Never synchronously inside receive_async(). */
  g_assert_false (r->in_call);
  g_assert_true (source == (GObject *) r->port);
  g_assert_cmpint (g_atomic_int_get (&r->done), ==, 0);

  g_assert_nonnull (current);
  r->context = g_main_context_ref (g_source_get_context (current));
  r->thread = g_thread_self ();
  r->message = mp_message_port_receive_finish (MP_MESSAGE_PORT (source), result, &r->error);
  g_assert_true ((r->message != NULL) != (r->error != NULL));
  if (r->log != NULL)
    g_string_append_printf (r->log, "%s ", r->name);

  g_atomic_int_set (&r->done, 1);
}

static void
receive_start (Receive       *r,
               MpMessagePort *port,
               GCancellable  *cancellable)
{
  r->port = port;
  r->in_call = TRUE;
  mp_message_port_receive_async (port, cancellable, on_received, r);
  r->in_call = FALSE;
}

static gboolean
receive_done (Receive *r)
{
  return g_atomic_int_get (&r->done) != 0;
}

static void
receive_clear (Receive *r)
{
  g_clear_pointer (&r->message, mp_message_unref);
  g_clear_error (&r->error);
  g_clear_pointer (&r->context, g_main_context_unref);
}

static void
assert_received_int (Receive *r,
                     gint32   value)
{
  g_assert_true (receive_done (r));
  g_assert_no_error (r->error);
  g_assert_cmpint (message_get_int (r->message), ==, value);
  g_assert_cmpuint (mp_message_get_ports (r->message)->len, ==, 0);
}

static void
assert_receive_failed (Receive *r,
                       GQuark   domain,
                       int      code)
{
  g_assert_true (receive_done (r));
  g_assert_null (r->message);
  g_assert_error (r->error, domain, code);
}

/* ------------------------------------------------------------------------ */
/* A channel whose port2 records its signals                                */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpMessageChannel *channel;
  MpMessagePort    *port1;     /* owned */
  MpMessagePort    *port2;     /* owned; started if the test variant says so */
  gboolean          started;
  GArray           *signalled; /* gint32 payloads emitted by port2's "message" */
  guint             n_close;   /* port2's "close" emissions */
  GThread          *owner;     /* the thread that started port2 */
} Pair;

static void
on_pair_message (MpMessagePort *port,
                 MpMessage     *message,
                 gpointer       user_data)
{
  Pair *pair = user_data;
  gint32 value = message_get_int (message);

  g_assert_true (g_thread_self () == pair->owner);
  g_array_append_val (pair->signalled, value);
}

static void
on_pair_close (MpMessagePort *port,
               gpointer       user_data)
{
  Pair *pair = user_data;

  g_assert_true (g_thread_self () == pair->owner);
  pair->n_close++;
}

static void
pair_init (Pair     *pair,
           gboolean  started)
{
  pair->channel = mp_message_channel_new ();
  pair->port1 = g_object_ref (mp_message_channel_get_port1 (pair->channel));
  pair->port2 = g_object_ref (mp_message_channel_get_port2 (pair->channel));
  pair->started = started;
  pair->signalled = g_array_new (FALSE, FALSE, sizeof (gint32));
  pair->n_close = 0;
  pair->owner = g_thread_self ();

  g_signal_connect (pair->port2, "message", G_CALLBACK (on_pair_message), pair);
  g_signal_connect (pair->port2, "close", G_CALLBACK (on_pair_close), pair);
  if (started)
    mp_message_port_start (pair->port2);
}

static void
assert_signalled (Pair         *pair,
                  const gint32 *values,
                  guint         n_values)
{
  g_assert_cmpmem (pair->signalled->data, pair->signalled->len * sizeof (gint32),
                   values, n_values * sizeof (gint32));
}

static void
pair_finish (Pair         *pair,
             GMainContext *ctx)
{
  mp_message_port_close (pair->port1);
  mp_message_port_close (pair->port2);
  g_clear_object (&pair->channel);
  assert_finalized_eventually (ctx, g_steal_pointer (&pair->port1));
  assert_finalized_eventually (ctx, g_steal_pointer (&pair->port2));
  /* A started port2 said "close" exactly once; an unstarted one never did. */
  g_assert_cmpuint (pair->n_close, ==, pair->started ? 1 : 0);
  g_array_unref (pair->signalled);
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpMessagePort *port;   /* not owned */
  gint32         first;
  guint          count;
  gboolean       close_after;
} Poster;

static gpointer
poster_thread (gpointer data)
{
  Poster *poster = data;

  for (guint i = 0; i < poster->count; i++)
    post_int (poster->port, poster->first + (gint32) i);
  if (poster->close_after)
    mp_message_port_close (poster->port);
  return NULL;
}

static void
post_from_thread (MpMessagePort *port,
                  gint32         first,
                  guint          count)
{
  Poster poster = { port, first, count, FALSE };

  g_thread_join (g_thread_new ("poster", poster_thread, &poster));
}

static gpointer
close_thread (gpointer data)
{
  mp_message_port_close (data);
  return NULL;
}

static gpointer
cancel_thread (gpointer data)
{
  g_cancellable_cancel (data);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Fixture: each test runs on its own thread-default main context           */
/* ------------------------------------------------------------------------ */

typedef struct
{
  GMainContext *context;
  gboolean      started;   /* the variant: port2 started or not */
} Fixture;

static void
fixture_setup (Fixture       *f,
               gconstpointer  data)
{
  f->context = context_push_new ();
  f->started = GPOINTER_TO_INT (data);
}

static void
fixture_teardown (Fixture       *f,
                  gconstpointer  data)
{
  context_pop_free (f->context);
}

#define ADD_TEST(path, func) \
  g_test_add (path, Fixture, GINT_TO_POINTER (FALSE), fixture_setup, func, fixture_teardown)

/* The same test on an unstarted and on a started port2. */
#define ADD_BOTH(path, func) \
  G_STMT_START { \
    g_test_add (path "/unstarted", Fixture, GINT_TO_POINTER (FALSE), \
                fixture_setup, func, fixture_teardown); \
    g_test_add (path "/started", Fixture, GINT_TO_POINTER (TRUE), \
                fixture_setup, func, fixture_teardown); \
  } G_STMT_END

/* ------------------------------------------------------------------------ */
/* Completion                                                               */
/* ------------------------------------------------------------------------ */

/* A queued message is taken, and handed over later. */
static void
test_completes_with_queued_message (Fixture       *f,
                                    gconstpointer  data)
{
  Pair pair;
  Receive r = RECEIVE_INIT ("A", NULL);

  pair_init (&pair, FALSE);
  post_int (pair.port1, 1);
  post_int (pair.port1, 2);

  receive_start (&r, pair.port2, NULL);
  g_assert_false (receive_done (&r));
  /* Taken in the call: the next consumer gets the next message. */
  g_assert_cmpint (receive_int (pair.port2), ==, 2);
  WAIT_FOR (f->context, receive_done (&r));
  assert_received_int (&r, 1);
  g_assert_true (r.thread == g_thread_self ());
  g_assert_true (r.context == f->context);

  assert_receive_null (pair.port2);
  receive_clear (&r);
  pair_finish (&pair, f->context);
}

/* With nothing queued the receive waits for the next post, from any thread. */
static void
test_completes_with_next_post (Fixture       *f,
                               gconstpointer  data)
{
  Pair pair;
  Receive r = RECEIVE_INIT ("A", NULL);

  pair_init (&pair, f->started);
  receive_start (&r, pair.port2, NULL);
  spin_context (f->context, QUIET_MSEC);
  g_assert_false (receive_done (&r));

  post_from_thread (pair.port1, 7, 1);
  WAIT_FOR (f->context, receive_done (&r));
  assert_received_int (&r, 7);
  g_assert_true (r.thread == g_thread_self ());
  g_assert_true (r.context == f->context);

  /* The receive had it: the signal did not. */
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (pair.signalled->len, ==, 0);
  g_assert_false (mp_message_port_is_closed (pair.port2));

  receive_clear (&r);
  pair_finish (&pair, f->context);
}

/* The message's transferred ports come through, as new working ports. */
static void
test_completes_with_ports (Fixture       *f,
                           gconstpointer  data)
{
  Pair pair;
  g_autoptr(MpMessageChannel) other = mp_message_channel_new ();
  MpMessagePort *carried = mp_message_channel_get_port1 (other);
  Receive r = RECEIVE_INIT ("A", NULL);
  GPtrArray *ports;
  MpMessagePort *received;

  pair_init (&pair, f->started);
  receive_start (&r, pair.port2, NULL);
  post_int_with_ports (pair.port1, 1, &carried, 1);
  g_assert_true (mp_message_port_is_closed (carried));

  WAIT_FOR (f->context, receive_done (&r));
  g_assert_no_error (r.error);
  g_assert_cmpint (message_get_int (r.message), ==, 1);
  ports = mp_message_get_ports (r.message);
  g_assert_cmpuint (ports->len, ==, 1);
  received = g_ptr_array_index (ports, 0);
  g_assert_true (MP_IS_MESSAGE_PORT (received));
  g_assert_true (received != carried);
  g_assert_false (mp_message_port_is_closed (received));
  g_assert_null (mp_message_port_get_context (received));

  post_int (received, 42);
  g_assert_cmpint (receive_int (mp_message_channel_get_port2 (other)), ==, 42);

  receive_clear (&r);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* FIFO with every other consumer                                           */
/* ------------------------------------------------------------------------ */

/* One queue: receive_async(), receive() and the signal each take the next
 * message; a receive takes a queued message before a started port's pending
 * dispatch, and waiting receives take posts before the signal. */
static void
test_fifo_with_receive_and_signal (Fixture       *f,
                                   gconstpointer  data)
{
  static const gint32 signalled_first[] = { 3 };
  static const gint32 signalled_all[] = { 3, 6 };
  Pair pair;
  GString *log = g_string_new (NULL);
  Receive a = RECEIVE_INIT ("A", log);
  Receive b = RECEIVE_INIT ("B", log);
  Receive c = RECEIVE_INIT ("C", log);

  pair_init (&pair, FALSE);
  post_int (pair.port1, 1);
  post_int (pair.port1, 2);
  post_int (pair.port1, 3);

  receive_start (&a, pair.port2, NULL);            /* takes 1 */
  g_assert_cmpint (receive_int (pair.port2), ==, 2);
  mp_message_port_start (pair.port2);              /* 3 goes to the signal */
  pair.started = TRUE;
  WAIT_FOR (f->context, receive_done (&a) && pair.signalled->len == 1);
  assert_received_int (&a, 1);
  assert_signalled (&pair, signalled_first, G_N_ELEMENTS (signalled_first));

  /* Nothing queued: receive() does not wait, B and C do. */
  receive_start (&b, pair.port2, NULL);
  receive_start (&c, pair.port2, NULL);
  assert_receive_null (pair.port2);
  post_int (pair.port1, 4);
  post_int (pair.port1, 5);
  post_int (pair.port1, 6);
  WAIT_FOR (f->context, receive_done (&b) && receive_done (&c) && pair.signalled->len == 2);
  assert_received_int (&b, 4);
  assert_received_int (&c, 5);
  assert_signalled (&pair, signalled_all, G_N_ELEMENTS (signalled_all));
  g_assert_cmpstr (log->str, ==, "A B C ");

  receive_clear (&a);
  receive_clear (&b);
  receive_clear (&c);
  g_string_free (log, TRUE);
  pair_finish (&pair, f->context);
}

/* Receives waiting on a started port are served before the signal, oldest
 * first, and their callbacks run oldest first. */
static void
test_fifo_served_before_signal_oldest_first (Fixture       *f,
                                             gconstpointer  data)
{
  static const gint32 signalled[] = { 4, 5 };
  Pair pair;
  GString *log = g_string_new (NULL);
  Receive a = RECEIVE_INIT ("A", log);
  Receive b = RECEIVE_INIT ("B", log);
  Receive c = RECEIVE_INIT ("C", log);

  pair_init (&pair, TRUE);
  receive_start (&a, pair.port2, NULL);
  receive_start (&b, pair.port2, NULL);
  receive_start (&c, pair.port2, NULL);

  /* A burst from another thread. */
  post_from_thread (pair.port1, 1, 5);
  WAIT_FOR (f->context, receive_done (&c) && pair.signalled->len == 2);
  assert_received_int (&a, 1);
  assert_received_int (&b, 2);
  assert_received_int (&c, 3);
  assert_signalled (&pair, signalled, G_N_ELEMENTS (signalled));
  g_assert_cmpstr (log->str, ==, "A B C ");

  receive_clear (&a);
  receive_clear (&b);
  receive_clear (&c);
  g_string_free (log, TRUE);
  pair_finish (&pair, f->context);
}

/* A receive chain that reissues itself from its own callback. */
typedef struct
{
  MpMessagePort *port;
  GArray        *values;     /* what the chain got, in order */
  GError        *error;      /* how it ended */
  gboolean       in_call;
  gboolean       ended;
} Chain;

static void
chain_next (Chain *chain);

static void
on_chain_received (GObject      *source,
                   GAsyncResult *result,
                   gpointer      user_data)
{
  Chain *chain = user_data;
  g_autoptr(MpMessage) message = NULL;

  g_assert_false (chain->in_call);
  g_assert_false (chain->ended);
  message = mp_message_port_receive_finish (MP_MESSAGE_PORT (source), result, &chain->error);
  if (message == NULL)
    {
      g_assert_nonnull (chain->error);
      chain->ended = TRUE;
      return;
    }

  g_array_append_vals (chain->values, &(gint32) { message_get_int (message) }, 1);
  chain_next (chain);
}

static void
chain_next (Chain *chain)
{
  chain->in_call = TRUE;
  mp_message_port_receive_async (chain->port, NULL, on_chain_received, chain);
  chain->in_call = FALSE;
}

static void
assert_increasing (GArray *values)
{
  for (guint i = 1; i < values->len; i++)
    g_assert_cmpint (g_array_index (values, gint32, i - 1), <, g_array_index (values, gint32, i));
}

/* Three consumers at once — the signal, a chain of async receives and
 * receive() — against a producer thread: each message goes to exactly one of
 * them, and each sees its share in order. */
static void
test_fifo_exactly_once_cross_thread (Fixture       *f,
                                     gconstpointer  data)
{
  Pair pair;
  Chain chain = { NULL, NULL, NULL, FALSE, FALSE };
  GArray *received = g_array_new (FALSE, FALSE, sizeof (gint32));
  Poster poster = { NULL, 0, N_FIFO_MESSAGES, TRUE };
  g_autofree guint8 *seen = g_new0 (guint8, N_FIFO_MESSAGES);
  GThread *thread;
  gint64 deadline = g_get_monotonic_time () + 3 * WAIT_TIMEOUT_USEC;
  guint total;

  pair_init (&pair, TRUE);
  chain.port = pair.port2;
  chain.values = g_array_new (FALSE, FALSE, sizeof (gint32));
  chain_next (&chain);

  poster.port = pair.port1;
  thread = g_thread_new ("producer", poster_thread, &poster);
  while (!(chain.ended && pair.n_close == 1))
    {
      MpMessage *message;

      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (f->context, FALSE);
      message = mp_message_port_receive (pair.port2);
      if (message != NULL)
        {
          g_array_append_vals (received, &(gint32) { message_get_int (message) }, 1);
          mp_message_unref (message);
        }
    }
  g_thread_join (thread);

  g_assert_error (chain.error, MP_ERROR, MP_ERROR_CLOSED);
  g_assert_true (mp_message_port_is_closed (pair.port2));
  assert_increasing (pair.signalled);
  assert_increasing (chain.values);
  assert_increasing (received);

  total = pair.signalled->len + chain.values->len + received->len;
  g_test_message ("signal %u, async %u, receive() %u",
                  pair.signalled->len, chain.values->len, received->len);
  g_assert_cmpuint (total, ==, N_FIFO_MESSAGES);
  g_assert_cmpuint (chain.values->len, >, 0);
  {
    GArray *all[] = { pair.signalled, chain.values, received };

    for (guint k = 0; k < G_N_ELEMENTS (all); k++)
      for (guint i = 0; i < all[k]->len; i++)
        {
          gint32 value = g_array_index (all[k], gint32, i);

          g_assert_cmpint (value, >=, 0);
          g_assert_cmpint (value, <, N_FIFO_MESSAGES);
          g_assert_cmpuint (seen[value], ==, 0);
          seen[value] = 1;
        }
  }

  g_clear_error (&chain.error);
  g_array_unref (chain.values);
  g_array_unref (received);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Never synchronous                                                        */
/* ------------------------------------------------------------------------ */

/* A queued message, an immediate failure and an immediate cancellation all
 * complete from a later dispatch, never inside the call (on_received checks
 * in_call); here also not before the caller returns to the main loop. */
static void
test_never_synchronous_immediate_outcomes (Fixture       *f,
                                           gconstpointer  data)
{
  Pair pair;
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Receive with_message = RECEIVE_INIT ("A", NULL);
  Receive cancelled = RECEIVE_INIT ("B", NULL);
  Receive closed = RECEIVE_INIT ("C", NULL);

  pair_init (&pair, f->started);
  post_int (pair.port1, 1);
  post_int (pair.port1, 2);
  receive_start (&with_message, pair.port2, NULL);
  g_cancellable_cancel (cancellable);
  receive_start (&cancelled, pair.port2, cancellable);
  g_assert_false (receive_done (&with_message));
  g_assert_false (receive_done (&cancelled));

  WAIT_FOR (f->context, receive_done (&with_message) && receive_done (&cancelled));
  assert_received_int (&with_message, 1);
  assert_receive_failed (&cancelled, G_IO_ERROR, G_IO_ERROR_CANCELLED);

  mp_message_port_close (pair.port2);
  receive_start (&closed, pair.port2, NULL);
  g_assert_false (receive_done (&closed));
  WAIT_FOR (f->context, receive_done (&closed));
  assert_receive_failed (&closed, MP_ERROR, MP_ERROR_INVALID_STATE);

  receive_clear (&with_message);
  receive_clear (&cancelled);
  receive_clear (&closed);
  pair_finish (&pair, f->context);
}

typedef struct
{
  Pair    *pair;
  Receive *queued;    /* issued from the handler of message 1: takes 2 */
  Receive *waiting;   /* issued from the handler of message 3: takes the post made there */
} HandlerReceives;

static void
on_message_receive_inside (MpMessagePort *port,
                           MpMessage     *message,
                           gpointer       user_data)
{
  HandlerReceives *hr = user_data;
  gint32 value = message_get_int (message);

  if (value == 1)
    {
      receive_start (hr->queued, port, NULL);
      g_assert_false (receive_done (hr->queued));
    }
  else if (value == 3)
    {
      receive_start (hr->waiting, port, NULL);
      /* Served by a post made on the owning thread, inside the handler. */
      post_int (hr->pair->port1, 4);
      g_assert_false (receive_done (hr->waiting));
    }
}

static void
on_message_after_receive_inside (MpMessagePort *port,
                                 MpMessage     *message,
                                 gpointer       user_data)
{
  HandlerReceives *hr = user_data;

  /* Still inside the same emission: the receives have not completed. */
  if (message_get_int (message) == 1)
    g_assert_false (receive_done (hr->queued));
  else if (message_get_int (message) == 3)
    g_assert_false (receive_done (hr->waiting));
}

/* Inside a "message" handler, on the owning thread, in the port's own
 * dispatch: still never synchronous, and the receive takes the very next
 * message, so the signal goes on with the one after. */
static void
test_never_synchronous_inside_handler (Fixture       *f,
                                       gconstpointer  data)
{
  static const gint32 signalled[] = { 1, 3 };
  Pair pair;
  Receive queued = RECEIVE_INIT ("A", NULL);
  Receive waiting = RECEIVE_INIT ("B", NULL);
  HandlerReceives hr = { &pair, &queued, &waiting };

  pair_init (&pair, FALSE);
  g_signal_connect (pair.port2, "message", G_CALLBACK (on_message_receive_inside), &hr);
  g_signal_connect_after (pair.port2, "message", G_CALLBACK (on_message_after_receive_inside), &hr);
  post_int (pair.port1, 1);
  post_int (pair.port1, 2);
  post_int (pair.port1, 3);
  mp_message_port_start (pair.port2);
  pair.started = TRUE;

  WAIT_FOR (f->context, receive_done (&queued) && receive_done (&waiting));
  spin_context (f->context, QUIET_MSEC);
  assert_received_int (&queued, 2);
  assert_received_int (&waiting, 4);
  assert_signalled (&pair, signalled, G_N_ELEMENTS (signalled));

  g_signal_handlers_disconnect_by_data (pair.port2, &hr);
  receive_clear (&queued);
  receive_clear (&waiting);
  pair_finish (&pair, f->context);
}

typedef struct
{
  MpMessagePort *port;
  MpMessagePort *peer;   /* posts the next message just before each reissue */
  Receive        receives[3];
  guint          n_started;
} Reissue;

static void
on_reissue_received (GObject      *source,
                     GAsyncResult *result,
                     gpointer      user_data);

static void
reissue_next (Reissue *re)
{
  Receive *r = &re->receives[re->n_started++];

  r->port = re->port;
  r->in_call = TRUE;
  mp_message_port_receive_async (re->port, NULL, on_reissue_received, re);
  r->in_call = FALSE;
}

static void
on_reissue_received (GObject      *source,
                     GAsyncResult *result,
                     gpointer      user_data)
{
  Reissue *re = user_data;
  Receive *r = &re->receives[re->n_started - 1];

  on_received (source, result, r);
  if (re->n_started < G_N_ELEMENTS (re->receives))
    {
      /* Queued before the call (and ahead of a started port's dispatch). */
      post_int (re->peer, (gint32) re->n_started + 1);
      reissue_next (re);
      /* Inside a completion callback with the next message queued. */
      g_assert_false (receive_done (&re->receives[re->n_started - 1]));
    }
}

/* A receive issued from the callback of the previous one, with its message
 * already queued, completes later too. */
static void
test_never_synchronous_from_callback (Fixture       *f,
                                      gconstpointer  data)
{
  Pair pair;
  Reissue re = { 0, };

  pair_init (&pair, f->started);
  post_int (pair.port1, 1);
  re.port = pair.port2;
  re.peer = pair.port1;
  reissue_next (&re);

  WAIT_FOR (f->context, receive_done (&re.receives[2]));
  for (guint i = 0; i < G_N_ELEMENTS (re.receives); i++)
    {
      assert_received_int (&re.receives[i], (gint32) i + 1);
      receive_clear (&re.receives[i]);
    }
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (pair.signalled->len, ==, 0);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* MP_ERROR_INVALID_STATE                                                   */
/* ------------------------------------------------------------------------ */

static void
test_invalid_state_closed_before_call (Fixture       *f,
                                       gconstpointer  data)
{
  Pair pair;
  Receive r = RECEIVE_INIT ("A", NULL);

  pair_init (&pair, f->started);
  post_int (pair.port1, 1);
  mp_message_port_close (pair.port2);
  receive_start (&r, pair.port2, NULL);
  WAIT_FOR (f->context, receive_done (&r));
  /* The queued message was dropped by close(), not handed over. */
  assert_receive_failed (&r, MP_ERROR, MP_ERROR_INVALID_STATE);

  receive_clear (&r);
  pair_finish (&pair, f->context);
}

/* The peer posted, then closed: the receives get what it posted, then fail
 * at its close, which closes the port (a started one says "close"). */
static void
test_closed_peer_closed_after_data (Fixture       *f,
                                           gconstpointer  data)
{
  Pair pair;
  Receive a = RECEIVE_INIT ("A", NULL);
  Receive b = RECEIVE_INIT ("B", NULL);
  Receive c = RECEIVE_INIT ("C", NULL);

  pair_init (&pair, f->started);
  post_int (pair.port1, 1);
  mp_message_port_close (pair.port1);
  receive_start (&a, pair.port2, NULL);
  g_assert_false (mp_message_port_is_closed (pair.port2));
  receive_start (&b, pair.port2, NULL);
  /* B reached the close marker. */
  g_assert_true (mp_message_port_is_closed (pair.port2));
  receive_start (&c, pair.port2, NULL);

  WAIT_FOR (f->context, receive_done (&a) && receive_done (&b) && receive_done (&c));
  assert_received_int (&a, 1);
  assert_receive_failed (&b, MP_ERROR, MP_ERROR_CLOSED);
  assert_receive_failed (&c, MP_ERROR, MP_ERROR_CLOSED);
  g_assert_cmpstr (b.error->message, ==, "The other port of the channel was closed");
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (pair.n_close, ==, f->started ? 1 : 0);
  g_assert_cmpuint (pair.signalled->len, ==, 0);

  receive_clear (&a);
  receive_clear (&b);
  receive_clear (&c);
  pair_finish (&pair, f->context);
}

/* Receives waiting when the port closes itself fail, oldest first. */
static void
test_closed_own_close_while_pending (Fixture       *f,
                                            gconstpointer  data)
{
  Pair pair;
  GString *log = g_string_new (NULL);
  Receive a = RECEIVE_INIT ("A", log);
  Receive b = RECEIVE_INIT ("B", log);

  pair_init (&pair, f->started);
  receive_start (&a, pair.port2, NULL);
  receive_start (&b, pair.port2, NULL);
  mp_message_port_close (pair.port2);
  g_assert_false (receive_done (&a));

  WAIT_FOR (f->context, receive_done (&a) && receive_done (&b));
  assert_receive_failed (&a, MP_ERROR, MP_ERROR_CLOSED);
  assert_receive_failed (&b, MP_ERROR, MP_ERROR_CLOSED);
  g_assert_cmpstr (a.error->message, ==, "The port was closed");
  g_assert_cmpstr (log->str, ==, "A B ");
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (pair.n_close, ==, f->started ? 1 : 0);

  /* Posting afterwards goes nowhere. */
  post_int (pair.port1, 1);
  assert_receive_null (pair.port2);

  receive_clear (&a);
  receive_clear (&b);
  g_string_free (log, TRUE);
  pair_finish (&pair, f->context);
}

/* Closed by another thread: the failure still comes on the caller's context. */
static void
test_closed_from_other_thread (Fixture       *f,
                                             gconstpointer  data)
{
  Pair pair;
  Receive r = RECEIVE_INIT ("A", NULL);

  pair_init (&pair, f->started);
  receive_start (&r, pair.port2, NULL);
  g_thread_join (g_thread_new ("closer", close_thread, pair.port2));
  WAIT_FOR (f->context, receive_done (&r));
  assert_receive_failed (&r, MP_ERROR, MP_ERROR_CLOSED);
  g_assert_true (r.thread == g_thread_self ());
  g_assert_true (r.context == f->context);

  receive_clear (&r);
  pair_finish (&pair, f->context);
}

/* The peer closes while receives wait: they fail, the port is closed. */
static void
test_closed_peer_closes_while_pending (Fixture       *f,
                                              gconstpointer  data)
{
  Pair pair;
  GString *log = g_string_new (NULL);
  Receive a = RECEIVE_INIT ("A", log);
  Receive b = RECEIVE_INIT ("B", log);

  pair_init (&pair, f->started);
  receive_start (&a, pair.port2, NULL);
  receive_start (&b, pair.port2, NULL);
  g_thread_join (g_thread_new ("closer", close_thread, pair.port1));

  WAIT_FOR (f->context, receive_done (&a) && receive_done (&b));
  assert_receive_failed (&a, MP_ERROR, MP_ERROR_CLOSED);
  assert_receive_failed (&b, MP_ERROR, MP_ERROR_CLOSED);
  g_assert_cmpstr (log->str, ==, "A B ");
  g_assert_true (mp_message_port_is_closed (pair.port2));
  if (f->started)
    WAIT_FOR (f->context, pair.n_close == 1);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (pair.n_close, ==, f->started ? 1 : 0);

  receive_clear (&a);
  receive_clear (&b);
  g_string_free (log, TRUE);
  pair_finish (&pair, f->context);
}

/* Transferring the port away fails the receives waiting on the old object;
 * the new object starts with none, and gets the messages. */
static void
test_invalid_state_transferred_while_pending (Fixture       *f,
                                              gconstpointer  data)
{
  Pair pair;
  g_autoptr(MpMessageChannel) carrier = mp_message_channel_new ();
  MpMessagePort *carrier1 = mp_message_channel_get_port1 (carrier);
  MpMessagePort *carrier2 = mp_message_channel_get_port2 (carrier);
  Receive pending = RECEIVE_INIT ("A", NULL);
  Receive after = RECEIVE_INIT ("B", NULL);
  g_autoptr(MpMessage) carried = NULL;
  MpMessagePort *heir;

  pair_init (&pair, f->started);
  receive_start (&pending, pair.port2, NULL);
  post_int_with_ports (carrier1, 0, &pair.port2, 1);
  g_assert_true (mp_message_port_is_closed (pair.port2));

  WAIT_FOR (f->context, receive_done (&pending));
  assert_receive_failed (&pending, MP_ERROR, MP_ERROR_INVALID_STATE);

  /* A receive on the transferred-away object fails too. */
  receive_start (&after, pair.port2, NULL);
  WAIT_FOR (f->context, receive_done (&after));
  assert_receive_failed (&after, MP_ERROR, MP_ERROR_INVALID_STATE);

  /* Nothing was taken on the way: the new object gets the next post. */
  carried = mp_message_port_receive (carrier2);
  g_assert_nonnull (carried);
  g_assert_cmpuint (mp_message_get_ports (carried)->len, ==, 1);
  heir = g_ptr_array_index (mp_message_get_ports (carried), 0);
  post_int (pair.port1, 5);
  g_assert_cmpint (receive_int (heir), ==, 5);

  /* The old object emits nothing more; it is detached, not closed. */
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (pair.signalled->len, ==, 0);
  g_assert_cmpuint (pair.n_close, ==, 0);
  pair.started = FALSE;

  receive_clear (&pending);
  receive_clear (&after);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* G_IO_ERROR_CANCELLED                                                     */
/* ------------------------------------------------------------------------ */

/* Cancelled before the call: it fails, the queued message stays. */
static void
test_cancel_before_call (Fixture       *f,
                         gconstpointer  data)
{
  Pair pair;
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Receive r = RECEIVE_INIT ("A", NULL);

  pair_init (&pair, FALSE);
  post_int (pair.port1, 1);
  g_cancellable_cancel (cancellable);
  receive_start (&r, pair.port2, cancellable);
  WAIT_FOR (f->context, receive_done (&r));
  assert_receive_failed (&r, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpint (receive_int (pair.port2), ==, 1);

  receive_clear (&r);
  pair_finish (&pair, f->context);
}

/* Cancelled while waiting: it fails on its own (no post needed), and the next
 * message goes to the next consumer — receive(), a later receive, or the
 * signal. */
static void
test_cancel_while_pending_takes_nothing (Fixture       *f,
                                         gconstpointer  data)
{
  static const gint32 signalled[] = { 3 };
  Pair pair;
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GCancellable) cancellable2 = g_cancellable_new ();
  g_autoptr(GCancellable) cancellable3 = g_cancellable_new ();
  GString *log = g_string_new (NULL);
  Receive a = RECEIVE_INIT ("A", log);
  Receive b = RECEIVE_INIT ("B", log);
  Receive c = RECEIVE_INIT ("C", log);
  Receive d = RECEIVE_INIT ("D", log);

  pair_init (&pair, FALSE);

  /* Next consumer: receive(). */
  receive_start (&a, pair.port2, cancellable);
  spin_context (f->context, QUIET_MSEC);
  g_assert_false (receive_done (&a));
  g_cancellable_cancel (cancellable);
  WAIT_FOR (f->context, receive_done (&a));
  assert_receive_failed (&a, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  post_int (pair.port1, 1);
  g_assert_cmpint (receive_int (pair.port2), ==, 1);

  /* Next consumer: the receive issued after it. */
  receive_start (&b, pair.port2, cancellable2);
  receive_start (&c, pair.port2, NULL);
  g_cancellable_cancel (cancellable2);
  post_int (pair.port1, 2);
  WAIT_FOR (f->context, receive_done (&b) && receive_done (&c));
  assert_receive_failed (&b, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  assert_received_int (&c, 2);

  /* Next consumer: the signal. */
  mp_message_port_start (pair.port2);
  pair.started = TRUE;
  receive_start (&d, pair.port2, cancellable3);
  g_cancellable_cancel (cancellable3);
  post_int (pair.port1, 3);
  WAIT_FOR (f->context, receive_done (&d) && pair.signalled->len == 1);
  assert_receive_failed (&d, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  assert_signalled (&pair, signalled, G_N_ELEMENTS (signalled));
  /* No callback order is promised here: GTask defers the return of a task whose
   * cancellable is cancelled by one more iteration. */
  g_assert_cmpuint (strlen (log->str), ==, strlen ("A B C D "));

  receive_clear (&a);
  receive_clear (&b);
  receive_clear (&c);
  receive_clear (&d);
  g_string_free (log, TRUE);
  pair_finish (&pair, f->context);
}

/* A receive that already took its message keeps it if cancelled before its
 * callback ran: the message is never lost. */
static void
test_cancel_after_served_keeps_message (Fixture       *f,
                                        gconstpointer  data)
{
  Pair pair;
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GCancellable) cancellable2 = g_cancellable_new ();
  Receive queued = RECEIVE_INIT ("A", NULL);
  Receive waited = RECEIVE_INIT ("B", NULL);

  pair_init (&pair, f->started);
  post_int (pair.port1, 1);
  receive_start (&queued, pair.port2, cancellable);
  g_cancellable_cancel (cancellable);

  receive_start (&waited, pair.port2, cancellable2);
  post_int (pair.port1, 2);
  g_cancellable_cancel (cancellable2);

  WAIT_FOR (f->context, receive_done (&queued) && receive_done (&waited));
  assert_received_int (&queued, 1);
  assert_received_int (&waited, 2);
  assert_receive_null (pair.port2);
  g_assert_cmpuint (pair.signalled->len, ==, 0);

  receive_clear (&queued);
  receive_clear (&waited);
  pair_finish (&pair, f->context);
}

/* Cancelled from another thread: the failure comes on the caller's context. */
static void
test_cancel_from_other_thread (Fixture       *f,
                               gconstpointer  data)
{
  Pair pair;
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Receive r = RECEIVE_INIT ("A", NULL);

  pair_init (&pair, f->started);
  receive_start (&r, pair.port2, cancellable);
  g_thread_join (g_thread_new ("canceller", cancel_thread, cancellable));
  WAIT_FOR (f->context, receive_done (&r));
  assert_receive_failed (&r, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_true (r.thread == g_thread_self ());
  g_assert_true (r.context == f->context);

  post_int (pair.port1, 1);
  if (f->started)
    {
      static const gint32 signalled[] = { 1 };

      WAIT_FOR (f->context, pair.signalled->len == 1);
      assert_signalled (&pair, signalled, G_N_ELEMENTS (signalled));
    }
  else
    g_assert_cmpint (receive_int (pair.port2), ==, 1);

  receive_clear (&r);
  pair_finish (&pair, f->context);
}

typedef struct
{
  MpMessagePort *port;
  GCancellable  *cancellable;
  gint32         value;
  int           *go;   /* atomic start line */
} Racer;

static gpointer
race_post_thread (gpointer data)
{
  Racer *racer = data;

  while (!g_atomic_int_get (racer->go))
    ;
  post_int (racer->port, racer->value);
  return NULL;
}

static gpointer
race_cancel_thread (gpointer data)
{
  Racer *racer = data;

  while (!g_atomic_int_get (racer->go))
    ;
  g_cancellable_cancel (racer->cancellable);
  return NULL;
}

/* A post and a cancel race: either the receive gets the message, or it is
 * cancelled and the message is still queued. Never both, never neither. */
static void
test_cancel_races_post (Fixture       *f,
                        gconstpointer  data)
{
  Pair pair;
  guint n_received = 0, n_cancelled = 0;

  pair_init (&pair, f->started);
  for (guint i = 0; i < N_CANCEL_RACES; i++)
    {
      g_autoptr(GCancellable) cancellable = g_cancellable_new ();
      Receive r = RECEIVE_INIT ("A", NULL);
      int go = 0;
      Racer racer = { pair.port1, cancellable, (gint32) i, &go };
      GThread *poster, *canceller;

      receive_start (&r, pair.port2, cancellable);
      poster = g_thread_new ("poster", race_post_thread, &racer);
      canceller = g_thread_new ("canceller", race_cancel_thread, &racer);
      g_atomic_int_set (&go, 1);
      g_thread_join (poster);
      g_thread_join (canceller);

      WAIT_FOR (f->context, receive_done (&r));
      if (r.message != NULL)
        {
          assert_received_int (&r, (gint32) i);
          assert_receive_null (pair.port2);
          n_received++;
        }
      else
        {
          assert_receive_failed (&r, G_IO_ERROR, G_IO_ERROR_CANCELLED);
          if (f->started)
            WAIT_FOR (f->context, pair.signalled->len == n_cancelled + 1);
          else
            g_assert_cmpint (receive_int (pair.port2), ==, (gint32) i);
          n_cancelled++;
        }
      receive_clear (&r);
    }

  g_test_message ("%u received, %u cancelled", n_received, n_cancelled);
  if (f->started)
    {
      g_assert_cmpuint (pair.signalled->len, ==, n_cancelled);
      assert_increasing (pair.signalled);
    }
  else
    g_assert_cmpuint (pair.signalled->len, ==, 0);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* The caller's context                                                     */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpMessagePort *port;
  Receive        receive;
  GMainContext  *context;   /* the worker's own, pushed */
  int            issued;    /* atomic */
  gboolean       finished;
} ContextWorker;

static gpointer
context_worker_thread (gpointer data)
{
  ContextWorker *w = data;
  gint64 deadline = g_get_monotonic_time () + WAIT_TIMEOUT_USEC;

  g_main_context_push_thread_default (w->context);
  receive_start (&w->receive, w->port, NULL);
  g_atomic_int_set (&w->issued, 1);
  while (!receive_done (&w->receive) && g_get_monotonic_time () < deadline)
    {
      if (!g_main_context_iteration (w->context, FALSE))
        g_usleep (100);
    }
  w->finished = receive_done (&w->receive);
  g_main_context_pop_thread_default (w->context);

  return NULL;
}

/* A receive called from another thread completes on that thread's
 * thread-default context — not on the port's, which the main thread runs. */
static void
test_context_callers_thread_default (Fixture       *f,
                                     gconstpointer  data)
{
  Pair pair;
  ContextWorker w = { NULL, RECEIVE_INIT ("A", NULL), NULL, 0, FALSE };
  GThread *thread;

  pair_init (&pair, f->started);
  w.port = pair.port2;
  w.context = g_main_context_new ();
  thread = g_thread_new ("receiver", context_worker_thread, &w);
  WAIT_FOR (NULL, g_atomic_int_get (&w.issued));

  post_int (pair.port1, 5);
  /* Running the port's context does not complete it. */
  spin_context (f->context, QUIET_MSEC);
  g_thread_join (thread);

  g_assert_true (w.finished);
  assert_received_int (&w.receive, 5);
  g_assert_true (w.receive.thread == thread);
  g_assert_true (w.receive.context == w.context);
  g_assert_cmpuint (pair.signalled->len, ==, 0);

  receive_clear (&w.receive);
  g_main_context_unref (w.context);
  pair_finish (&pair, f->context);
}

static gpointer
receive_start_thread (gpointer data)
{
  Receive *r = data;

  receive_start (r, r->port, NULL);
  return NULL;
}

/* A thread with no thread-default context gets its callback on the global
 * default context, like any GTask. */
static void
test_context_global_default_when_none_pushed (Fixture       *f,
                                              gconstpointer  data)
{
  Pair pair;
  Receive r = RECEIVE_INIT ("A", NULL);

  pair_init (&pair, f->started);
  post_int (pair.port1, 3);
  r.port = pair.port2;
  g_thread_join (g_thread_new ("receiver", receive_start_thread, &r));

  spin_context (f->context, QUIET_MSEC);
  g_assert_false (receive_done (&r));
  WAIT_FOR (g_main_context_default (), receive_done (&r));
  assert_received_int (&r, 3);
  g_assert_true (r.context == g_main_context_default ());
  g_assert_true (r.thread == g_thread_self ());

  receive_clear (&r);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Lifetime                                                                 */
/* ------------------------------------------------------------------------ */

/* A pending receive keeps its port alive, and releases it once completed:
 * the port then finalizes (unstarted: its peer sees the close). */
static void
test_lifetime_pending_keeps_port_alive (Fixture       *f,
                                        gconstpointer  data)
{
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *port1 = g_object_ref (mp_message_channel_get_port1 (channel));
  MpMessagePort *port2 = mp_message_channel_get_port2 (channel);
  Receive r = RECEIVE_INIT ("A", NULL);
  GWeakRef weak;

  g_weak_ref_init (&weak, port2);
  receive_start (&r, port2, NULL);
  g_clear_object (&channel);
  spin_context (f->context, QUIET_MSEC);
  g_assert_false (weak_ref_is_empty (&weak));

  post_int (port1, 1);
  WAIT_FOR (f->context, receive_done (&r));
  assert_received_int (&r, 1);
  r.port = NULL;
  WAIT_FOR (f->context, weak_ref_is_empty (&weak));

  /* The unstarted port2 closed on finalization: port1 reaches its close. */
  assert_receive_null (port1);
  g_assert_true (mp_message_port_is_closed (port1));

  receive_clear (&r);
  g_weak_ref_clear (&weak);
  g_assert_finalize_object (port1);
}

/* ------------------------------------------------------------------------ */
/* Programmer errors                                                        */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpMessagePort *other;   /* a port the result does not belong to */
  Receive        receive;
} WrongPort;

static void
on_received_finish_wrong_port (GObject      *source,
                               GAsyncResult *result,
                               gpointer      user_data)
{
  WrongPort *wp = user_data;
  GError *error = NULL;

  EXPECT_CRITICAL (g_assert_null (mp_message_port_receive_finish (wp->other, result, &error)));
  g_assert_no_error (error);
  on_received (source, result, &wp->receive);
}

static void
test_errors_programmer (Fixture       *f,
                        gconstpointer  data)
{
  Pair pair;
  WrongPort wp = { NULL, RECEIVE_INIT ("A", NULL) };
  GError *error = NULL;

  pair_init (&pair, FALSE);
  EXPECT_CRITICAL (mp_message_port_receive_async (NULL, NULL, on_received, &wp.receive));
  EXPECT_CRITICAL (mp_message_port_receive_async ((MpMessagePort *) pair.channel, NULL,
                                                  on_received, &wp.receive));
  EXPECT_CRITICAL (g_assert_null (mp_message_port_receive_finish (NULL, NULL, &error)));
  g_assert_no_error (error);

  /* The result of one port's receive is refused by another port's finish. */
  post_int (pair.port2, 1);
  wp.other = pair.port2;
  wp.receive.port = pair.port1;
  wp.receive.in_call = TRUE;
  mp_message_port_receive_async (pair.port1, NULL, on_received_finish_wrong_port, &wp);
  wp.receive.in_call = FALSE;
  WAIT_FOR (f->context, receive_done (&wp.receive));
  assert_received_int (&wp.receive, 1);

  /* Nothing was called back for the refused calls. */
  spin_context (f->context, QUIET_MSEC);
  assert_receive_null (pair.port1);
  assert_receive_null (pair.port2);

  receive_clear (&wp.receive);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* Callbacks in the order the messages were taken                           */
/* ------------------------------------------------------------------------ */

/* The newcomer's reproducer: #1 (with a cancellable) is served 0, #2 is served 1, then #1's
 * cancellable is cancelled, too late to cancel anything. #1's callback must still run
 * first: GTask used to defer a cancelled task's return by one more idle, so #2 overtook. */
static void
test_order_cancelled_after_served (Fixture       *f,
                                   gconstpointer  data)
{
  Pair pair;
  g_autoptr(GString) log = g_string_new (NULL);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Receive first = RECEIVE_INIT ("1", log);
  Receive second = RECEIVE_INIT ("2", log);

  pair_init (&pair, f->started);
  receive_start (&first, pair.port2, cancellable);
  receive_start (&second, pair.port2, NULL);
  post_int (pair.port1, 0);
  post_int (pair.port1, 1);
  g_cancellable_cancel (cancellable);

  WAIT_FOR (f->context, receive_done (&first) && receive_done (&second));
  g_assert_cmpstr (log->str, ==, "1 2 ");
  assert_received_int (&first, 0);
  assert_received_int (&second, 1);

  receive_clear (&first);
  receive_clear (&second);
  pair_finish (&pair, f->context);
}

#define N_ORDER_SLOTS 3

typedef struct
{
  MpMessagePort *port;
  GMutex lock;
  GCancellable *slots[N_ORDER_SLOTS];   /* guarded by lock: each slot's current receive */
  guint n_messages;
  GArray *taken;                        /* values, in callback order */
  guint n_cancelled;
  gboolean stop;                        /* atomic */
} OrderStress;

static void order_stress_receive (OrderStress *o,
                                  guint        slot);

static void
order_stress_done (GObject      *source,
                   GAsyncResult *result,
                   gpointer      user_data)
{
  OrderStress *o = g_object_get_data (source, "order-stress");
  guint slot = GPOINTER_TO_UINT (user_data);
  g_autoptr(GError) error = NULL;
  g_autoptr(MpMessage) message = mp_message_port_receive_finish (MP_MESSAGE_PORT (source),
                                                                 result, &error);

  if (message != NULL)
    {
      gint32 value = message_get_int (message);

      g_array_append_val (o->taken, value);
    }
  else
    {
      g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
      o->n_cancelled++;
    }

  if (o->taken->len < o->n_messages)
    order_stress_receive (o, slot);
}

static void
order_stress_receive (OrderStress *o,
                      guint        slot)
{
  GCancellable *cancellable = g_cancellable_new ();

  g_mutex_lock (&o->lock);
  g_clear_object (&o->slots[slot]);
  o->slots[slot] = g_object_ref (cancellable);
  g_mutex_unlock (&o->lock);

  mp_message_port_receive_async (o->port, cancellable, order_stress_done,
                                 GUINT_TO_POINTER (slot));
  g_object_unref (cancellable);
}

static gpointer
order_stress_poster (gpointer data)
{
  OrderStress *o = data;

  for (guint i = 0; i < o->n_messages; i++)
    post_int (o->port == NULL ? NULL : g_object_get_data (G_OBJECT (o->port), "peer"),
              (gint32) i);
  return NULL;
}

static gpointer
order_stress_canceller (gpointer data)
{
  OrderStress *o = data;
  guint i = 0;

  while (!g_atomic_int_get (&o->stop))
    {
      GCancellable *victim;

      g_mutex_lock (&o->lock);
      victim = o->slots[i++ % N_ORDER_SLOTS];
      if (victim != NULL)
        g_object_ref (victim);
      g_mutex_unlock (&o->lock);

      if (victim != NULL)
        {
          g_cancellable_cancel (victim);
          g_object_unref (victim);
        }
      g_usleep (20);
    }
  return NULL;
}

/* Three receives always pending, 200 000 messages from a thread, a thread cancelling them
 * at random: every message is taken exactly once and the callbacks see them in order. The
 * newcomer saw 700-1 100 callbacks out of order per run. */
static void
test_order_stress_with_cancels (Fixture       *f,
                                gconstpointer  data)
{
  Pair pair;
  OrderStress o = { 0 };
  GThread *poster, *canceller;
  gint64 deadline;

  pair_init (&pair, f->started);
  o.port = pair.port2;
  o.n_messages = stress_scaled (200000);
  o.taken = g_array_new (FALSE, FALSE, sizeof (gint32));
  g_mutex_init (&o.lock);
  g_object_set_data (G_OBJECT (pair.port2), "order-stress", &o);
  g_object_set_data (G_OBJECT (pair.port2), "peer", pair.port1);

  for (guint slot = 0; slot < N_ORDER_SLOTS; slot++)
    order_stress_receive (&o, slot);
  poster = g_thread_new ("poster", order_stress_poster, &o);
  canceller = g_thread_new ("canceller", order_stress_canceller, &o);

  deadline = stress_deadline ();
  while (o.taken->len < o.n_messages)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (f->context, TRUE);
    }
  g_atomic_int_set (&o.stop, TRUE);
  g_thread_join (poster);
  g_thread_join (canceller);

  for (guint i = 0; i < o.taken->len; i++)
    g_assert_cmpint (g_array_index (o.taken, gint32, i), ==, (gint32) i);
  g_test_message ("%u messages, %u receives cancelled", o.taken->len, o.n_cancelled);

  /* The receives still pending when the last message came: cancel them and let them end. */
  g_mutex_lock (&o.lock);
  for (guint slot = 0; slot < N_ORDER_SLOTS; slot++)
    g_cancellable_cancel (o.slots[slot]);
  g_mutex_unlock (&o.lock);
  spin_context (f->context, QUIET_MSEC);
  for (guint slot = 0; slot < N_ORDER_SLOTS; slot++)
    g_clear_object (&o.slots[slot]);
  g_assert_cmpuint (o.taken->len, ==, o.n_messages);

  pair_finish (&pair, f->context);
  g_array_unref (o.taken);
  g_mutex_clear (&o.lock);
}

typedef struct
{
  MpMessagePort *port;
  guint received;
  guint total;
  gint received_at_idle;   /* -1 until the idle ran */
} ReceiveLoop;

static void
receive_loop_done (GObject      *source,
                   GAsyncResult *result,
                   gpointer      user_data)
{
  ReceiveLoop *loop = user_data;
  g_autoptr(MpMessage) message = mp_message_port_receive_finish (MP_MESSAGE_PORT (source),
                                                                 result, NULL);

  g_assert_nonnull (message);
  g_assert_cmpint (message_get_int (message), ==, (gint32) loop->received);
  if (++loop->received < loop->total)
    mp_message_port_receive_async (loop->port, NULL, receive_loop_done, loop);
}

static gboolean
receive_loop_idle (gpointer data)
{
  ReceiveLoop *loop = data;

  loop->received_at_idle = (gint) loop->received;
  return G_SOURCE_REMOVE;
}

/* The usual receive loop (each callback receives again) over a backlog: each dispatch
 * delivers one result, so another source of the same priority runs long before the backlog
 * is gone. (A drain that also delivered the results completed during it kept one dispatch
 * going through the whole backlog.) */
static void
test_order_receive_loop_does_not_starve (Fixture       *f,
                                         gconstpointer  data)
{
  Pair pair;
  ReceiveLoop loop = { .total = 5000, .received_at_idle = -1 };

  pair_init (&pair, FALSE);
  loop.port = pair.port2;
  for (guint i = 0; i < loop.total; i++)
    post_int (pair.port1, (gint32) i);

  mp_message_port_receive_async (pair.port2, NULL, receive_loop_done, &loop);
  {
    GSource *idle = g_idle_source_new ();

    g_source_set_priority (idle, G_PRIORITY_DEFAULT);
    g_source_set_callback (idle, receive_loop_idle, &loop, NULL);
    g_source_attach (idle, f->context);
    g_source_unref (idle);
  }

  WAIT_FOR (f->context, loop.received == loop.total && loop.received_at_idle >= 0);
  g_assert_cmpint (loop.received_at_idle, <, 10);

  pair_finish (&pair, f->context);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  ADD_TEST ("/mpport/port/receive-async/completes/with-queued-message",
            test_completes_with_queued_message);
  ADD_BOTH ("/mpport/port/receive-async/completes/with-next-post", test_completes_with_next_post);
  ADD_BOTH ("/mpport/port/receive-async/completes/with-ports", test_completes_with_ports);

  ADD_TEST ("/mpport/port/receive-async/fifo/with-receive-and-signal",
            test_fifo_with_receive_and_signal);
  ADD_TEST ("/mpport/port/receive-async/fifo/served-before-signal-oldest-first",
            test_fifo_served_before_signal_oldest_first);
  ADD_TEST ("/mpport/port/receive-async/fifo/exactly-once-cross-thread",
            test_fifo_exactly_once_cross_thread);

  ADD_BOTH ("/mpport/port/receive-async/never-synchronous/immediate-outcomes",
            test_never_synchronous_immediate_outcomes);
  ADD_TEST ("/mpport/port/receive-async/never-synchronous/inside-handler",
            test_never_synchronous_inside_handler);
  ADD_BOTH ("/mpport/port/receive-async/never-synchronous/from-callback",
            test_never_synchronous_from_callback);

  ADD_BOTH ("/mpport/port/receive-async/invalid-state/closed-before-call",
            test_invalid_state_closed_before_call);
  ADD_BOTH ("/mpport/port/receive-async/closed/peer-closed-after-data",
            test_closed_peer_closed_after_data);
  ADD_BOTH ("/mpport/port/receive-async/closed/own-close-while-pending",
            test_closed_own_close_while_pending);
  ADD_BOTH ("/mpport/port/receive-async/closed/from-other-thread",
            test_closed_from_other_thread);
  ADD_BOTH ("/mpport/port/receive-async/closed/peer-closes-while-pending",
            test_closed_peer_closes_while_pending);
  ADD_BOTH ("/mpport/port/receive-async/invalid-state/transferred-while-pending",
            test_invalid_state_transferred_while_pending);

  ADD_TEST ("/mpport/port/receive-async/cancel/before-call", test_cancel_before_call);
  ADD_TEST ("/mpport/port/receive-async/cancel/while-pending-takes-nothing",
            test_cancel_while_pending_takes_nothing);
  ADD_BOTH ("/mpport/port/receive-async/cancel/after-served-keeps-message",
            test_cancel_after_served_keeps_message);
  ADD_BOTH ("/mpport/port/receive-async/cancel/from-other-thread", test_cancel_from_other_thread);
  ADD_BOTH ("/mpport/port/receive-async/cancel/races-post", test_cancel_races_post);

  ADD_BOTH ("/mpport/port/receive-async/context/callers-thread-default",
            test_context_callers_thread_default);
  ADD_BOTH ("/mpport/port/receive-async/context/global-default-when-none-pushed",
            test_context_global_default_when_none_pushed);

  ADD_TEST ("/mpport/port/receive-async/lifetime/pending-keeps-port-alive",
            test_lifetime_pending_keeps_port_alive);

  ADD_TEST ("/mpport/port/receive-async/errors/programmer", test_errors_programmer);

  ADD_TEST ("/mpport/port/receive-async/order/receive-loop-does-not-starve",
            test_order_receive_loop_does_not_starve);
  ADD_BOTH ("/mpport/port/receive-async/order/cancelled-after-served",
            test_order_cancelled_after_served);
  /* Unstarted only: a started port's "message" would take what arrives while no receive
   * is pending (between a cancel and the receive its callback makes again). */
  ADD_TEST ("/mpport/port/receive-async/order/stress-with-cancels",
            test_order_stress_with_cancels);

  return g_test_run ();
}
