/* bcast-fanout.c: MpBroadcastChannel fan-out throughput
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * One sender (the main thread) posts N messages on one name; four receiver threads, each
 * iterating its own GMainContext with one channel of that name, receive all of them. The
 * clock runs from the first post until the last receiver got its last message. Every
 * receiver checks that it got 0 .. N-1 in order.
 *
 *   bcast-fanout [N]     N posts per run (default 100000); 5 runs, median reported
 */

#include <stdio.h>
#include <stdlib.h>

#include <mpport/mpport.h>

#define N_RECEIVERS      4
#define N_RUNS           5
#define DEFAULT_POSTS    100000
#define TIMEOUT_SECONDS  120
#define CHANNEL_NAME     "bench/bcast-fanout"

/* A count-up latch. */
typedef struct
{
  GMutex mutex;
  GCond cond;
  guint count;   /* guarded by mutex */
} Latch;

typedef struct
{
  guint n_posts;
  Latch *ready;
  Latch *finished;
  GMainLoop *loop;
  guint received;
  gint64 finished_at;   /* monotonic µs when the last message arrived */
} Receiver;

static void
latch_init (Latch *latch)
{
  g_mutex_init (&latch->mutex);
  g_cond_init (&latch->cond);
  latch->count = 0;
}

static void
latch_clear (Latch *latch)
{
  g_mutex_clear (&latch->mutex);
  g_cond_clear (&latch->cond);
}

static void
latch_add (Latch *latch)
{
  g_mutex_lock (&latch->mutex);
  latch->count++;
  g_cond_broadcast (&latch->cond);
  g_mutex_unlock (&latch->mutex);
}

static void
latch_wait (Latch *latch,
            guint  target)
{
  gint64 deadline = g_get_monotonic_time () + TIMEOUT_SECONDS * G_TIME_SPAN_SECOND;

  g_mutex_lock (&latch->mutex);
  while (latch->count < target)
    {
      if (!g_cond_wait_until (&latch->cond, &latch->mutex, deadline))
        g_error ("timed out after %d s (%u of %u)", TIMEOUT_SECONDS, latch->count, target);
    }
  g_mutex_unlock (&latch->mutex);
}

static void
on_message (MpBroadcastChannel *channel,
            MpMessage          *message,
            gpointer            user_data)
{
  Receiver *receiver = user_data;
  guint32 value = g_variant_get_uint32 (mp_message_get_data (message));

  if (value != receiver->received)
    g_error ("receiver got message %u, expected %u", value, receiver->received);

  if (++receiver->received == receiver->n_posts)
    {
      receiver->finished_at = g_get_monotonic_time ();
      latch_add (receiver->finished);
      g_main_loop_quit (receiver->loop);
    }
}

static gpointer
receiver_thread (gpointer data)
{
  Receiver *receiver = data;
  GMainContext *context = g_main_context_new ();
  MpBroadcastChannel *channel;

  g_main_context_push_thread_default (context);
  receiver->loop = g_main_loop_new (context, FALSE);
  channel = mp_broadcast_channel_new (CHANNEL_NAME);
  g_signal_connect (channel, "message", G_CALLBACK (on_message), receiver);

  latch_add (receiver->ready);
  g_main_loop_run (receiver->loop);

  mp_broadcast_channel_close (channel);
  g_object_unref (channel);
  g_main_context_pop_thread_default (context);
  g_main_loop_unref (receiver->loop);
  g_main_context_unref (context);

  return NULL;
}

/* One run: fresh receivers, N posts. Returns the wall time in µs. */
static gint64
run_once (guint n_posts)
{
  Receiver receivers[N_RECEIVERS];
  GThread *threads[N_RECEIVERS];
  MpBroadcastChannel *sender;
  Latch ready, finished;
  gint64 start, end = 0;

  latch_init (&ready);
  latch_init (&finished);

  for (guint r = 0; r < N_RECEIVERS; r++)
    {
      receivers[r] = (Receiver) { .n_posts = n_posts, .ready = &ready, .finished = &finished };
      threads[r] = g_thread_new ("receiver", receiver_thread, &receivers[r]);
    }
  latch_wait (&ready, N_RECEIVERS);

  sender = mp_broadcast_channel_new (CHANNEL_NAME);
  start = g_get_monotonic_time ();
  for (guint i = 0; i < n_posts; i++)
    mp_broadcast_channel_post_message (sender, g_variant_new_uint32 (i), NULL);
  latch_wait (&finished, N_RECEIVERS);

  for (guint r = 0; r < N_RECEIVERS; r++)
    {
      g_thread_join (threads[r]);
      end = MAX (end, receivers[r].finished_at);
    }

  mp_broadcast_channel_close (sender);
  g_object_unref (sender);
  latch_clear (&ready);
  latch_clear (&finished);

  return MAX (end - start, 1);
}

static int
compare_gint64 (gconstpointer a,
                gconstpointer b)
{
  gint64 x = *(const gint64 *) a;
  gint64 y = *(const gint64 *) b;

  return (x > y) - (x < y);
}

int
main (int   argc,
      char *argv[])
{
  guint64 n_posts = DEFAULT_POSTS;
  gint64 times[N_RUNS];
  gint64 median;
  GError *error = NULL;

  if (argc > 2 ||
      (argc == 2 && !g_ascii_string_to_unsigned (argv[1], 10, 1, G_MAXUINT32, &n_posts, &error)))
    {
      fprintf (stderr, "usage: %s [N]   (N posts per run, default %d)%s%s\n", argv[0],
               DEFAULT_POSTS, error != NULL ? ": " : "", error != NULL ? error->message : "");
      g_clear_error (&error);
      return EXIT_FAILURE;
    }

  printf ("bcast-fanout: 1 sender -> %d receiver threads (own GMainContext each), "
          "%" G_GUINT64_FORMAT " posts, %d runs\n", N_RECEIVERS, n_posts, N_RUNS);

  for (guint run = 0; run < N_RUNS; run++)
    {
      times[run] = run_once ((guint) n_posts);
      printf ("  run %u: %8.1f ms  %12.0f deliveries/s\n", run + 1, times[run] / 1000.0,
              (double) n_posts * N_RECEIVERS * G_USEC_PER_SEC / times[run]);
    }

  qsort (times, N_RUNS, sizeof (times[0]), compare_gint64);
  median = times[N_RUNS / 2];
  printf ("median: %.1f ms wall, %.0f deliveries/s (%.0f posts/s, %.1f ns per delivery)\n",
          median / 1000.0,
          (double) n_posts * N_RECEIVERS * G_USEC_PER_SEC / median,
          (double) n_posts * G_USEC_PER_SEC / median,
          (double) median * 1000.0 / ((double) n_posts * N_RECEIVERS));

  return EXIT_SUCCESS;
}
