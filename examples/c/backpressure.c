/* backpressure.c: a fast producer thread paced by a slow consumer
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The main thread is the consumer: it starts its end of a MpMessageChannel on
 * the default main context with a "high-water-mark", and its "message"
 * handler is deliberately slow. The producer is a worker thread with a
 * GMainContext of its own. It posts with mp_message_port_post_message_async()
 * and posts the next message only from the callback of the previous one, the
 * way one writes with g_output_stream_write_async(): while the consumer's
 * queue holds as many messages as its mark, the post waits, and so does the
 * producer. The consumer's queue therefore never holds more than the mark,
 * however far the producer would like to run ahead.
 *
 * After its last post completed the producer closes its port; the consumer
 * gets "close" after the last message and quits. A 10 ms timeout on the
 * consumer's context measures how long the slow handler kept the main loop
 * busy at a stretch.
 *
 *   backpressure [--messages N] [--mark M] [--work-us US] [--quiet]
 *
 * With --mark 0 (no mark) the producer runs ahead unchecked: compare the peak.
 * Exits 0 if every message arrived once, in order, and (with a mark) the
 * consumer's queue never held more than the mark.
 */

#include <stdio.h>
#include <stdlib.h>

#include <mpport/mpport.h>

#define TICK_MS 10

/* ---- the producer thread ------------------------------------------------ */

/* Touched only on the producer's thread until main() joins it. */
typedef struct
{
  MpMessagePort *port;        /* owned: the producer's end, never started */
  GMainLoop     *loop;        /* on the producer's own context */
  guint          n_messages;
  guint          n_posted;    /* posts that completed: queued at the consumer */
  GError        *error;       /* why the producer stopped early, or NULL */
} Producer;

static void post_next (Producer *producer);

/* Runs on the producer's thread (its thread-default context), never inside
 * post_message_async(): once the message is queued at the consumer. */
static void
on_posted (GObject      *source,
           GAsyncResult *result,
           gpointer      user_data)
{
  Producer *producer = user_data;

  /* MP_ERROR_CLOSED: the consumer closed (while this post waited for room, or
   * before it was made). */
  if (!mp_message_port_post_message_finish (MP_MESSAGE_PORT (source), result,
                                            &producer->error))
    {
      g_main_loop_quit (producer->loop);
      return;
    }

  if (++producer->n_posted == producer->n_messages)
    g_main_loop_quit (producer->loop);
  else
    post_next (producer);
}

static void
post_next (Producer *producer)
{
  /* Only one post in flight: when the consumer is full it waits, and the
   * producer with it. */
  mp_message_port_post_message_async (producer->port,
                                      g_variant_new_uint32 (producer->n_posted),
                                      NULL, 0, NULL, on_posted, producer);
}

static gpointer
producer_thread (gpointer data)
{
  Producer *producer = data;
  g_autoptr(GMainContext) context = g_main_context_new ();

  /* The post callbacks run on the thread-default context of the thread that
   * posts: this one. */
  g_main_context_push_thread_default (context);
  producer->loop = g_main_loop_new (context, FALSE);

  post_next (producer);
  g_main_loop_run (producer->loop);

  /* The consumer gets "close" after the last message. */
  mp_message_port_close (producer->port);
  g_clear_object (&producer->port);
  g_clear_pointer (&producer->loop, g_main_loop_unref);
  g_main_context_pop_thread_default (context);

  return NULL;
}

/* ---- the consumer: the main thread --------------------------------------- */

typedef struct
{
  GMainLoop *loop;
  guint      work_us;     /* the slow part of handling one message */
  guint      n_received;
  gboolean   in_order;
  guint      peak_queued; /* the most messages ever queued at our port */
  gint64     last_tick;   /* monotonic time of the last TICK_MS timeout */
  gint64     longest_gap; /* the longest time between two ticks, in µs */
} Consumer;

/* Busy for @us microseconds: the consumer's real work would be here. */
static void
do_slow_work (guint us)
{
  gint64 until = g_get_monotonic_time () + us;

  while (g_get_monotonic_time () < until)
    ;
}

static void
on_message (MpMessagePort *port,
            MpMessage     *message,
            gpointer       user_data)
{
  Consumer *consumer = user_data;
  guint32 index = g_variant_get_uint32 (mp_message_get_data (message));

  if (index != consumer->n_received)
    consumer->in_order = FALSE;
  consumer->n_received++;

  /* The message being handled is no longer queued: this is what waits. */
  consumer->peak_queued = MAX (consumer->peak_queued, mp_message_port_get_n_queued (port));

  do_slow_work (consumer->work_us);   /* slower than the producer */
}

static void
on_close (MpMessagePort *port,
          gpointer       user_data)
{
  Consumer *consumer = user_data;

  g_main_loop_quit (consumer->loop);
}

static gboolean
on_tick (gpointer user_data)
{
  Consumer *consumer = user_data;
  gint64 now = g_get_monotonic_time ();

  consumer->longest_gap = MAX (consumer->longest_gap, now - consumer->last_tick);
  consumer->last_tick = now;
  return G_SOURCE_CONTINUE;
}

int
main (int    argc,
      char **argv)
{
  g_autoptr(GOptionContext) option_context = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(MpMessageChannel) channel = NULL;
  g_autoptr(GTimer) timer = NULL;
  MpMessagePort *port;
  int n_messages = 20000;
  int mark = 64;
  int work_us = 20;
  gboolean quiet = FALSE;
  const GOptionEntry entries[] = {
    { "messages", 'n', 0, G_OPTION_ARG_INT, &n_messages,
      "How many messages the producer posts (default 20000)", "N" },
    { "mark", 'm', 0, G_OPTION_ARG_INT, &mark,
      "The consumer's high-water mark, 0 for none (default 64)", "M" },
    { "work-us", 'w', 0, G_OPTION_ARG_INT, &work_us,
      "Microseconds of work per message in the consumer (default 20)", "US" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "Print only problems", NULL },
    { NULL }
  };
  Producer producer = { 0, };
  Consumer consumer = { 0, };
  GThread *thread;
  guint tick_id;
  gboolean ok;

  option_context = g_option_context_new ("- a producer thread paced by a slow consumer");
  g_option_context_add_main_entries (option_context, entries, NULL);
  if (!g_option_context_parse (option_context, &argc, &argv, &error))
    {
      g_printerr ("%s\n", error->message);
      return EXIT_FAILURE;
    }
  if (n_messages < 1 || mark < 0 || work_us < 0)
    {
      g_printerr ("invalid option value\n");
      return EXIT_FAILURE;
    }

  channel = mp_message_channel_new ();
  port = mp_message_channel_get_port1 (channel);

  /* The mark belongs to the receiving port: it limits posts towards it. */
  mp_message_port_set_high_water_mark (port, (guint) mark);

  consumer.loop = g_main_loop_new (NULL, FALSE);
  consumer.work_us = (guint) work_us;
  consumer.in_order = TRUE;
  g_signal_connect (port, "message", G_CALLBACK (on_message), &consumer);
  g_signal_connect (port, "close", G_CALLBACK (on_close), &consumer);
  mp_message_port_start (port);   /* no context pushed: the default one */

  consumer.last_tick = g_get_monotonic_time ();
  tick_id = g_timeout_add (TICK_MS, on_tick, &consumer);

  producer.port = g_object_ref (mp_message_channel_get_port2 (channel));
  producer.n_messages = (guint) n_messages;

  timer = g_timer_new ();
  thread = g_thread_new ("producer", producer_thread, &producer);
  g_main_loop_run (consumer.loop);
  g_thread_join (thread);

  g_source_remove (tick_id);
  g_signal_handlers_disconnect_by_data (port, &consumer);
  g_main_loop_unref (consumer.loop);

  if (producer.error != NULL)
    g_printerr ("producer: %s\n", producer.error->message);

  ok = producer.error == NULL && producer.n_posted == (guint) n_messages &&
       consumer.n_received == (guint) n_messages && consumer.in_order &&
       (mark == 0 || consumer.peak_queued <= (guint) mark);

  if (!quiet || !ok)
    {
      printf ("%u of %d messages%s in %.3f s\n", consumer.n_received, n_messages,
              consumer.in_order ? ", in order," : ", OUT OF ORDER,", g_timer_elapsed (timer, NULL));
      if (mark > 0)
        printf ("queue at the consumer peaked at %u (high-water mark %d)\n",
                consumer.peak_queued, mark);
      else
        printf ("queue at the consumer peaked at %u (no mark)\n", consumer.peak_queued);
      printf ("longest the main loop was busy at a stretch: %.1f ms\n",
              consumer.longest_gap / 1000.0);
    }
  g_clear_error (&producer.error);

  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
