/* test-dispatch-yield.c: a flooded port or broadcast inbox yields to lower-priority sources
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * One dispatch delivers at most a budget of messages. When it stops with work left, the
 * next main-loop iteration belongs to the ready sources of lower priority (a GTK redraw at
 * G_PRIORITY_HIGH_IDLE + 20), and the one after that to the flood again, with no wake-up.
 * The cases count what each g_main_context_iteration() delivered and how often an
 * always-ready idle ran; nothing is measured in time. Every wait is bounded only so that a
 * bug fails the test instead of hanging it.
 */

#include <mpport/mpport.h>

#include "mp-message-port-private.h"
#include "mp-waker-private.h"

#include "mp-test-util.h"

/* The budget of a port's dispatch; mp-broadcast-channel.c keeps its own,
 * MP_BROADCAST_DISPATCH_BUDGET, private and of the same value (one post is one unit). */
#define BUDGET 1024
G_STATIC_ASSERT (MP_MESSAGE_PORT_DISPATCH_BUDGET == BUDGET);

/* Where GTK's frame clock redraws. */
#define LOWER_PRIORITY (G_PRIORITY_HIGH_IDLE + 20)

/* Not a multiple of BUDGET: the last dispatch is a partial one that empties the queue. */
#define FLOOD 10000

/* The threaded variants: how much a producer posts, how far it may run ahead of the
 * deliveries, and how far ahead the main thread waits for it to be before each iteration
 * (two budgets: every dispatch but the last few then stops with work left). */
#define PRODUCED (2 * FLOOD)
#define PRODUCER_WINDOW (8 * BUDGET)
#define PRODUCER_AHEAD (2 * BUDGET)

/* ------------------------------------------------------------------------ */
/* Tally: what each main-loop iteration delivered, and what it must have    */
/* ------------------------------------------------------------------------ */

typedef struct
{
  GThread *thread;          /* the one iterating the context */
  gint32 next;              /* the payload the next delivery must carry */

  /* The current iteration. */
  guint queued;             /* a lower bound of the messages queued when it began */
  guint delivered;
  guint idle_runs;

  /* Totals. */
  guint iterations;
  guint dispatches;         /* iterations that delivered something */
  guint full_dispatches;    /* ... a whole budget */
  guint total_idle_runs;

  /* The last dispatch ran out of budget with work left: the idle must run before the
   * next dispatch. */
  gboolean owes_idle;
  /* The last iteration delivered nothing although messages were queued (it was the
   * yield's): this one must deliver. */
  gboolean owes_dispatch;
} Tally;

static void
tally_init (Tally *tally)
{
  *tally = (Tally) { .thread = g_thread_self () };
}

/* The "message" handler of a port and of a broadcast channel alike. */
static void
on_message_tally (GObject   *emitter,
                  MpMessage *message,
                  gpointer   user_data)
{
  Tally *tally = user_data;

  g_assert_true (g_thread_self () == tally->thread);
  /* In order and exactly once. */
  g_assert_cmpint (message_get_int (message), ==, tally->next);
  tally->next++;
  tally->delivered++;
}

static gboolean
on_idle_tally (gpointer user_data)
{
  Tally *tally = user_data;

  tally->idle_runs++;
  return G_SOURCE_CONTINUE;
}

/* An always-ready idle at LOWER_PRIORITY on @ctx, counted in @tally. The caller destroys
 * it. */
static GSource *
idle_attach (GMainContext *ctx,
             Tally        *tally)
{
  GSource *idle = g_idle_source_new ();

  g_source_set_priority (idle, LOWER_PRIORITY);
  g_source_set_callback (idle, on_idle_tally, tally, NULL);
  g_source_attach (idle, ctx);
  return idle;
}

static void
idle_remove (GSource *idle)
{
  g_source_destroy (idle);
  g_source_unref (idle);
}

static void
tally_begin_iteration (Tally *tally,
                       guint  queued)
{
  tally->queued = queued;
  tally->delivered = 0;
  tally->idle_runs = 0;
}

static void
tally_end_iteration (Tally *tally)
{
  tally->iterations++;

  /* GLib dispatches, per iteration, only sources of the best ready priority. */
  g_assert_false (tally->delivered > 0 && tally->idle_runs > 0);

  if (tally->owes_dispatch)
    g_assert_cmpuint (tally->delivered, >, 0);

  if (tally->delivered > 0)
    {
      g_assert_cmpuint (tally->delivered, <=, BUDGET);
      /* A budget-exhausting dispatch with work left is followed by a turn of the
       * lower-priority idle before the next dispatch. */
      g_assert_false (tally->owes_idle);
      tally->dispatches++;
      if (tally->delivered == BUDGET)
        tally->full_dispatches++;
      /* A dispatch that began with exactly BUDGET queued may have emptied the queue (and
       * then owes nothing); with more it stopped with work left. */
      tally->owes_idle = tally->delivered == BUDGET && tally->queued > BUDGET;
    }

  if (tally->idle_runs > 0)
    tally->owes_idle = FALSE;
  tally->total_idle_runs += tally->idle_runs;

  /* Not starved by the idle: with messages queued, an iteration without a delivery is
   * followed by one with. */
  tally->owes_dispatch = tally->delivered == 0 && tally->queued > 0;
}

/* ------------------------------------------------------------------------ */
/* A producer thread that keeps the flooded port or inbox ready             */
/* ------------------------------------------------------------------------ */

typedef void (*PostIntFunc) (gpointer target,
                             gint32   value);

typedef struct
{
  PostIntFunc post;
  gpointer target;          /* the port or channel posted on; immutable */
  guint total;              /* immutable */
  gint64 timeout;           /* immutable */

  GMutex mutex;
  GCond cond;
  guint posted;             /* guarded by mutex: posts that returned */
  guint consumed;           /* guarded by mutex: deliveries counted by the main thread */
  GThread *thread;
} Producer;

static gpointer
producer_main (gpointer data)
{
  Producer *producer = data;
  gint64 deadline = g_get_monotonic_time () + producer->timeout;

  for (guint i = 0; i < producer->total; i++)
    {
      g_mutex_lock (&producer->mutex);
      while (producer->posted - producer->consumed >= PRODUCER_WINDOW)
        if (!g_cond_wait_until (&producer->cond, &producer->mutex, deadline))
          g_error ("producer: %u posted, %u consumed: the consumer stopped",
                   producer->posted, producer->consumed);
      g_mutex_unlock (&producer->mutex);

      producer->post (producer->target, (gint32) i);

      g_mutex_lock (&producer->mutex);
      producer->posted++;
      g_cond_broadcast (&producer->cond);
      g_mutex_unlock (&producer->mutex);
    }

  return NULL;
}

static void
producer_start (Producer    *producer,
                PostIntFunc  post,
                gpointer     target,
                guint        total)
{
  *producer = (Producer) {
    .post = post,
    .target = target,
    .total = total,
    .timeout = mp_test_wait_timeout (),
  };
  g_mutex_init (&producer->mutex);
  g_cond_init (&producer->cond);
  producer->thread = g_thread_new ("producer", producer_main, producer);
}

/* Tells @producer that @consumed messages were delivered, then waits until it posted
 * PRODUCER_AHEAD more (or all). Returns how many of its posts are not delivered yet. */
static guint
producer_wait_ahead (Producer *producer,
                     guint     consumed)
{
  gint64 deadline = g_get_monotonic_time () + producer->timeout;
  guint queued;

  g_mutex_lock (&producer->mutex);
  producer->consumed = consumed;
  g_cond_broadcast (&producer->cond);
  while (producer->posted < producer->total &&
         producer->posted - producer->consumed < PRODUCER_AHEAD)
    if (!g_cond_wait_until (&producer->cond, &producer->mutex, deadline))
      g_error ("consumer: %u posted, %u consumed: the producer stopped",
               producer->posted, producer->consumed);
  queued = producer->posted - producer->consumed;
  g_mutex_unlock (&producer->mutex);

  return queued;
}

static void
producer_join (Producer *producer)
{
  g_thread_join (producer->thread);
  g_assert_cmpuint (producer->posted, ==, producer->total);
  g_mutex_clear (&producer->mutex);
  g_cond_clear (&producer->cond);
}

/* ------------------------------------------------------------------------ */
/* Running a flood                                                          */
/* ------------------------------------------------------------------------ */

/* Iterates @ctx without blocking until @total messages were delivered, checking every
 * iteration. With @producer, waits before each iteration until it is PRODUCER_AHEAD ahead;
 * without, all @total were posted before. */
static void
iterate_until_delivered (GMainContext *ctx,
                         Tally        *tally,
                         Producer     *producer,
                         guint         total)
{
  gint64 deadline = g_get_monotonic_time () + mp_test_wait_timeout ();

  while ((guint) tally->next < total)
    {
      guint queued;

      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      if (producer != NULL)
        queued = producer_wait_ahead (producer, (guint) tally->next);
      else
        queued = total - (guint) tally->next;

      tally_begin_iteration (tally, queued);
      g_main_context_iteration (ctx, FALSE);
      tally_end_iteration (tally);
    }
  if (producer != NULL)
    producer_wait_ahead (producer, (guint) tally->next);

  /* Exactly once: nothing more comes. */
  for (guint i = 0; i < 3; i++)
    {
      tally_begin_iteration (tally, 0);
      g_main_context_iteration (ctx, FALSE);
      tally_end_iteration (tally);
      g_assert_cmpuint (tally->delivered, ==, 0);
    }
  g_assert_cmpint (tally->next, ==, (gint32) total);
}

/* FLOOD messages, all posted before the first iteration (BUDGET * 9 + 784). */
static void
assert_flood_tally (const Tally *tally)
{
  const guint dispatches = (FLOOD + BUDGET - 1) / BUDGET;

  g_assert_cmpuint (tally->dispatches, ==, dispatches);
  g_assert_cmpuint (tally->full_dispatches, ==, FLOOD / BUDGET);
  g_assert_cmpuint (tally->total_idle_runs, >=, FLOOD / BUDGET);
  /* Each dispatch but the last is followed by one iteration of the idle, the last by the
   * three after the loop: none is lost waiting for a wake-up. */
  g_assert_cmpuint (tally->iterations, ==, 2 * dispatches - 1 + 3);
}

/* PRODUCED messages from a producer kept PRODUCER_AHEAD ahead: every dispatch that began
 * with that much queued delivered a whole budget. */
static void
assert_produced_tally (const Tally *tally)
{
  g_assert_cmpuint (tally->full_dispatches, >=, (PRODUCED - PRODUCER_AHEAD) / BUDGET);
  g_assert_cmpuint (tally->total_idle_runs, >=, tally->full_dispatches - 1);
}

/* With nothing else on @ctx, blocking iterations deliver FLOOD messages (all posted before)
 * as whole budgets alternating with the yields' iterations, in which nothing is dispatched
 * and nothing sleeps in poll either (a watchdog fails a hang): the flood comes back by
 * itself, with no wake-up. */
static void
iterate_blocking_until_delivered (GMainContext *ctx,
                                  Tally        *tally)
{
  Watchdog *dog = watchdog_new ("blocking iterations of a flood", mp_test_wait_timeout ());
  guint iterations = 0;

  while (tally->next < FLOOD)
    {
      guint before = (guint) tally->next;

      g_main_context_iteration (ctx, TRUE);
      if (iterations % 2 == 0)
        g_assert_cmpuint ((guint) tally->next - before, ==, MIN (BUDGET, FLOOD - before));
      else
        g_assert_cmpuint ((guint) tally->next - before, ==, 0);
      iterations++;
    }
  g_assert_cmpuint (iterations, ==, 2 * ((FLOOD + BUDGET - 1) / BUDGET) - 1);

  watchdog_free (dog);
}

/* ------------------------------------------------------------------------ */
/* Ports                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpMessageChannel *channel;
  MpMessagePort *sender;      /* port1 */
  MpMessagePort *receiver;    /* port2, started on the test's context */
} PortFlood;

static void
port_flood_init (PortFlood *flood,
                 Tally     *tally)
{
  flood->channel = mp_message_channel_new ();
  flood->sender = g_object_ref (mp_message_channel_get_port1 (flood->channel));
  flood->receiver = g_object_ref (mp_message_channel_get_port2 (flood->channel));
  g_signal_connect (flood->receiver, "message", G_CALLBACK (on_message_tally), tally);
  mp_message_port_start (flood->receiver);
}

static void
port_flood_finish (PortFlood    *flood,
                   GMainContext *ctx)
{
  mp_message_port_close (flood->sender);
  mp_message_port_close (flood->receiver);
  g_assert_finalize_object (flood->channel);
  assert_finalized_eventually (ctx, g_steal_pointer (&flood->sender));
  assert_finalized_eventually (ctx, g_steal_pointer (&flood->receiver));
}

static void
post_port_int (gpointer target,
               gint32   value)
{
  post_int (target, value);
}

/* A port flooded before the loop runs: between two dispatches that used up the budget the
 * idle at G_PRIORITY_HIGH_IDLE + 20 runs, and the idle never holds the port back for more
 * than one iteration. */
static void
test_port_yields_to_lower_priority (void)
{
  GMainContext *ctx = context_push_new ();
  PortFlood flood;
  Tally tally;
  GSource *idle;

  tally_init (&tally);
  port_flood_init (&flood, &tally);
  for (gint32 i = 0; i < FLOOD; i++)
    post_int (flood.sender, i);
  idle = idle_attach (ctx, &tally);

  iterate_until_delivered (ctx, &tally, NULL, FLOOD);
  assert_flood_tally (&tally);

  idle_remove (idle);
  port_flood_finish (&flood, ctx);
  context_pop_free (ctx);
}

/* The same with a producer thread that keeps the port's queue at least two budgets deep
 * while it runs: its posts land while the port yields. */
static void
test_port_yields_to_lower_priority_threaded (void)
{
  GMainContext *ctx = context_push_new ();
  PortFlood flood;
  Producer producer;
  Tally tally;
  GSource *idle;

  tally_init (&tally);
  port_flood_init (&flood, &tally);
  idle = idle_attach (ctx, &tally);
  producer_start (&producer, post_port_int, flood.sender, PRODUCED);

  iterate_until_delivered (ctx, &tally, &producer, PRODUCED);
  producer_join (&producer);
  assert_produced_tally (&tally);

  idle_remove (idle);
  port_flood_finish (&flood, ctx);
  context_pop_free (ctx);
}

/* With nothing else on the context, a yielded port comes back by itself, and a blocking
 * iteration does not sleep in poll while it yields. */
static void
test_port_yield_never_blocks (void)
{
  GMainContext *ctx = context_push_new ();
  PortFlood flood;
  Tally tally;

  tally_init (&tally);
  port_flood_init (&flood, &tally);
  for (gint32 i = 0; i < FLOOD; i++)
    post_int (flood.sender, i);

  iterate_blocking_until_delivered (ctx, &tally);

  port_flood_finish (&flood, ctx);
  context_pop_free (ctx);
}

/* ------------------------------------------------------------------------ */
/* Broadcast channels                                                       */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpBroadcastChannel *sender;
  MpBroadcastChannel *listener;
} BroadcastFlood;

/* Both on the test's context: a channel does not receive its own posts, so the listener
 * gets each exactly once, through the context's one inbox of @name. */
static void
broadcast_flood_init (BroadcastFlood *flood,
                      const char     *name,
                      Tally          *tally)
{
  flood->sender = mp_broadcast_channel_new (name);
  flood->listener = mp_broadcast_channel_new (name);
  g_signal_connect (flood->listener, "message", G_CALLBACK (on_message_tally), tally);
}

static void
broadcast_flood_finish (BroadcastFlood *flood,
                        GMainContext   *ctx)
{
  mp_broadcast_channel_close (flood->sender);
  mp_broadcast_channel_close (flood->listener);
  assert_finalized_eventually (ctx, g_steal_pointer (&flood->sender));
  assert_finalized_eventually (ctx, g_steal_pointer (&flood->listener));
}

static void
post_broadcast_int (gpointer target,
                    gint32   value)
{
  GError *error = NULL;
  gboolean ok;

  ok = mp_broadcast_channel_post_message (target, g_variant_new_int32 (value), &error);
  g_assert_no_error (error);
  g_assert_true (ok);
}

static void
test_broadcast_yields_to_lower_priority (void)
{
  GMainContext *ctx = context_push_new ();
  BroadcastFlood flood;
  Tally tally;
  GSource *idle;

  tally_init (&tally);
  broadcast_flood_init (&flood, "dispatch-yield/flood", &tally);
  for (gint32 i = 0; i < FLOOD; i++)
    post_broadcast_int (flood.sender, i);
  idle = idle_attach (ctx, &tally);

  iterate_until_delivered (ctx, &tally, NULL, FLOOD);
  assert_flood_tally (&tally);

  idle_remove (idle);
  broadcast_flood_finish (&flood, ctx);
  context_pop_free (ctx);
}

static void
test_broadcast_yields_to_lower_priority_threaded (void)
{
  GMainContext *ctx = context_push_new ();
  BroadcastFlood flood;
  Producer producer;
  Tally tally;
  GSource *idle;

  tally_init (&tally);
  broadcast_flood_init (&flood, "dispatch-yield/produced", &tally);
  idle = idle_attach (ctx, &tally);
  producer_start (&producer, post_broadcast_int, flood.sender, PRODUCED);

  iterate_until_delivered (ctx, &tally, &producer, PRODUCED);
  producer_join (&producer);
  assert_produced_tally (&tally);

  idle_remove (idle);
  broadcast_flood_finish (&flood, ctx);
  context_pop_free (ctx);
}

static void
test_broadcast_yield_never_blocks (void)
{
  GMainContext *ctx = context_push_new ();
  BroadcastFlood flood;
  Tally tally;

  tally_init (&tally);
  broadcast_flood_init (&flood, "dispatch-yield/blocking", &tally);
  for (gint32 i = 0; i < FLOOD; i++)
    post_broadcast_int (flood.sender, i);

  iterate_blocking_until_delivered (ctx, &tally);

  broadcast_flood_finish (&flood, ctx);
  context_pop_free (ctx);
}

/* ------------------------------------------------------------------------ */
/* The wakeable source itself (mp-waker-private.h)                          */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpWakeableSource parent;
  guint dispatches;
  gboolean yield_next;      /* the next dispatch yields, as one out of budget does */
} ProbeSource;

static gboolean
probe_source_dispatch (GSource     *source,
                       GSourceFunc  callback,
                       gpointer     user_data)
{
  ProbeSource *self = (ProbeSource *) source;

  mp_wakeable_source_set_pending (source, FALSE);
  self->dispatches++;
  if (self->yield_next)
    {
      self->yield_next = FALSE;
      mp_wakeable_source_yield (source);
    }
  return G_SOURCE_CONTINUE;
}

static void
probe_source_finalize (GSource *source)
{
  mp_wakeable_source_finalize (source);
}

static GSourceFuncs probe_source_funcs = {
  .prepare = mp_wakeable_source_prepare,
  .check = mp_wakeable_source_check,
  .dispatch = probe_source_dispatch,
  .finalize = probe_source_finalize,
};

static ProbeSource *
probe_source_attach (GMainContext *ctx)
{
  GSource *source = mp_wakeable_source_new (&probe_source_funcs, sizeof (ProbeSource), ctx);

  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_attach (source, ctx);
  return (ProbeSource *) source;
}

static void
probe_source_remove (ProbeSource *probe)
{
  g_source_destroy ((GSource *) probe);
  g_source_unref ((GSource *) probe);
}

static gpointer
wake_thread_main (gpointer data)
{
  mp_wakeable_source_wake (data);
  return NULL;
}

/* Runs one non-blocking iteration and checks the totals after it. */
static void
iterate_expecting (GMainContext *ctx,
                   ProbeSource  *probe,
                   Tally        *tally,
                   guint         dispatches,
                   guint         idle_runs)
{
  g_main_context_iteration (ctx, FALSE);
  g_assert_cmpuint (probe->dispatches, ==, dispatches);
  g_assert_cmpuint (tally->idle_runs, ==, idle_runs);
}

/* A wake from another thread that lands while the source yields does not make it ready in
 * the yield's iteration: the lower-priority idle still gets its turn. */
static void
test_waker_wake_during_yield (void)
{
  GMainContext *ctx = context_push_new ();
  ProbeSource *probe = probe_source_attach (ctx);
  Tally tally;
  GSource *idle;

  tally_init (&tally);
  idle = idle_attach (ctx, &tally);

  probe->yield_next = TRUE;
  mp_wakeable_source_wake ((GSource *) probe);
  iterate_expecting (ctx, probe, &tally, 1, 0);

  g_thread_join (g_thread_new ("waker", wake_thread_main, probe));
  iterate_expecting (ctx, probe, &tally, 1, 1);   /* the yield's */
  iterate_expecting (ctx, probe, &tally, 2, 1);   /* ready again */
  iterate_expecting (ctx, probe, &tally, 2, 2);   /* nothing pending */
  iterate_expecting (ctx, probe, &tally, 2, 3);

  idle_remove (idle);
  probe_source_remove (probe);
  context_pop_free (ctx);
}

static gboolean
on_high_idle (gpointer user_data)
{
  guint *runs_left = user_data;

  return --*runs_left > 0 ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

/* Iterations taken by a higher-priority source skip the yielded source's prepare and
 * check: its yield lasts until an iteration reaches it, so the lower-priority idle still
 * gets its turn, and then it comes back by itself. */
static void
test_waker_yield_outlasts_higher_priority (void)
{
  GMainContext *ctx = context_push_new ();
  ProbeSource *probe = probe_source_attach (ctx);
  guint high_runs_left = 2;
  Tally tally;
  GSource *idle, *high;

  tally_init (&tally);
  idle = idle_attach (ctx, &tally);

  probe->yield_next = TRUE;
  mp_wakeable_source_wake ((GSource *) probe);
  iterate_expecting (ctx, probe, &tally, 1, 0);

  high = g_idle_source_new ();
  g_source_set_priority (high, G_PRIORITY_HIGH);
  g_source_set_callback (high, on_high_idle, &high_runs_left, NULL);
  g_source_attach (high, ctx);
  iterate_expecting (ctx, probe, &tally, 1, 0);
  iterate_expecting (ctx, probe, &tally, 1, 0);
  g_assert_cmpuint (high_runs_left, ==, 0);
  g_assert_true (g_source_is_destroyed (high));
  g_source_unref (high);

  iterate_expecting (ctx, probe, &tally, 1, 1);   /* the yield's */
  iterate_expecting (ctx, probe, &tally, 2, 1);   /* ready again, unwoken */
  iterate_expecting (ctx, probe, &tally, 2, 2);

  idle_remove (idle);
  probe_source_remove (probe);
  context_pop_free (ctx);
}

static void
count_delivery (MpMessagePort *port,
                MpMessage     *message,
                gpointer       user_data)
{
  guint *count = user_data;

  g_assert_cmpint (g_variant_get_int32 (mp_message_get_data (message)), ==, (gint32) *count);
  (*count)++;
}

/* A flush loop (`while (g_main_context_iteration (ctx, FALSE));`, common in test suites)
 * still delivers a whole flood: an iteration whose only work was a yielded port dispatches
 * the context's resume source, so it does not return FALSE, nor g_main_context_pending(). */
static void
test_port_yield_keeps_flush_loops_going (void)
{
  GMainContext *context = context_push_new ();
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *port = mp_message_channel_get_port2 (channel);
  guint count = 0;
  guint iterations = 0;

  g_signal_connect (port, "message", G_CALLBACK (count_delivery), &count);
  mp_message_port_start (port);
  for (gint32 i = 0; i < FLOOD; i++)
    post_int (mp_message_channel_get_port1 (channel), i);

  /* After a full dispatch the port yields, but the context still has work pending. (A
   * pending() runs a check, which ends the yield: it counts as the yield's iteration.) */
  g_assert_true (g_main_context_iteration (context, FALSE));
  g_assert_cmpuint (count, ==, BUDGET);
  iterations++;
  g_assert_true (g_main_context_pending (context));

  while (g_main_context_iteration (context, FALSE))
    iterations++;
  g_assert_cmpuint (count, ==, FLOOD);
  /* Every full dispatch but the first is preceded by a yield iteration, which returned
   * TRUE: 10 dispatches and 9 yields (the first one was pending()'s). */
  g_assert_cmpuint (iterations, ==, FLOOD / BUDGET + 1 + FLOOD / BUDGET - 1);

  mp_message_port_close (port);
  while (g_main_context_iteration (context, FALSE))
    ;
  g_clear_object (&channel);
  context_pop_free (context);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/mpport/port/dispatch/yields-to-lower-priority",
                   test_port_yields_to_lower_priority);
  g_test_add_func ("/mpport/port/dispatch/yields-to-lower-priority-with-producer-thread",
                   test_port_yields_to_lower_priority_threaded);
  g_test_add_func ("/mpport/port/dispatch/yield-keeps-flush-loops-going",
                   test_port_yield_keeps_flush_loops_going);
  g_test_add_func ("/mpport/port/dispatch/yield-resumes-without-blocking",
                   test_port_yield_never_blocks);
  g_test_add_func ("/mpport/broadcast/dispatch/yields-to-lower-priority",
                   test_broadcast_yields_to_lower_priority);
  g_test_add_func ("/mpport/broadcast/dispatch/yields-to-lower-priority-with-producer-thread",
                   test_broadcast_yields_to_lower_priority_threaded);
  g_test_add_func ("/mpport/broadcast/dispatch/yield-resumes-without-blocking",
                   test_broadcast_yield_never_blocks);
  g_test_add_func ("/mpport/waker/yield/wake-during-yield-waits-one-iteration",
                   test_waker_wake_during_yield);
  g_test_add_func ("/mpport/waker/yield/outlasts-higher-priority-iterations",
                   test_waker_yield_outlasts_higher_priority);

  return g_test_run ();
}
