/* scenario-flow.c: mp-bench's flow:* scenarios (issue 17): a producer thread paced by the
 * receiving port's high-water mark, against a consumer doing fixed work per message
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * One producer thread posts COUNT int32 messages to a channel's port1; port2 is started on
 * the main thread's context, whose "message" handler does the same fixed work for every
 * message (FLOW_WORK_ROUNDS dependent multiply-adds, about 2 µs on the run of record's
 * machine) and then checks the order (deliver_int). The consumer is the slower side, so a
 * port without a mark queues what the producer is ahead by. The variants, one scenario each
 * (mp-bench runs a group's variants interleaved, run 1 of each, then run 2 ...):
 *
 *   flow:0      post_message_async(), no mark: every post is queued at once and completes
 *               on the next iteration of the producer's context (the reference)
 *   flow:64     the same, port2's high-water mark 64: posts wait for room
 *   flow:1024   ... mark 1024 (issue 17's goal: >= 0.9x flow:0)
 *   flow:sync   post_message() in a loop, no mark: the producer as fast as it can be
 *
 * The producer keeps FLOW_WINDOW async posts in flight: it issues that many, and each
 * callback issues the next one. That is how a GIO producer is written (the callback of a
 * write_async() issues the next write), widened from one to a window: with one post in
 * flight every message would cost the producer a full turn of its main loop, and with a
 * mark every admitted post a wake-up of the producer thread, which measures the producer's
 * main loop rather than the flow control; an unbounded number in flight (posting everything
 * at once) would just move the unbounded queue from the port into the waiting posts. With a
 * window the memory held is at most mark + window messages, and one wake-up of the producer
 * completes as many posts as were admitted meanwhile. MP_BENCH_FLOW_WINDOW=N overrides the
 * window (1: the strict one-at-a-time chain).
 *
 * Reported per sample: msg/s from the producer's go to the handler having the last message
 * (value); the peak of mp_message_port_get_n_queued() on port2, sampled in the handler every
 * FLOW_SAMPLE_EVERY messages (p50: mp-bench.c prints it as "peak queued"); the peak RSS
 * growth of the process over the run, VmHWM (reset through /proc/self/clear_refs) minus VmRSS
 * before the channel was made, in bytes (p99: "peak RSS growth"). With a mark and async posts
 * only, the documented bound is n_queued <= mark: a sample above it fails the run.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gio/gio.h>
#include <mpport/mpport.h>

#include "scenarios.h"

/* Posts in flight in the async variants (see above). */
#define FLOW_WINDOW           32
/* Rounds of the consumer's fixed work per message. */
#define FLOW_WORK_ROUNDS      2000
/* The handler samples n_queued once per this many messages (it takes port2's lock, which
 * the producer contends for). */
#define FLOW_SAMPLE_EVERY     64

typedef struct
{
  MpMessagePort *tx;       /* port1, used by the producer thread only */
  GMainContext *context;   /* the producer's thread-default, while it runs */
  Latch *gate;
  gboolean async;
  guint window;
  guint64 count;
  guint64 issued;          /* producer thread only */
  guint64 completed;       /* producer thread only */
} FlowProducer;

typedef struct
{
  Counter counter;
  MpMessagePort *rx;
  guint mark;
  gboolean async;
  guint64 until_sample;
  guint work_rounds;
  guint peak_queued;
} FlowConsumer;

/* ------------------------------------------------------------------------------------------ */
/* Memory: VmRSS and VmHWM of this process                                                    */
/* ------------------------------------------------------------------------------------------ */

/* The value in bytes of a "Name:   123 kB" line of /proc/self/status, or 0. */
static guint64
status_bytes (const char *name)
{
  g_autofree char *status = NULL;
  g_autofree char *key = g_strdup_printf ("\n%s:", name);
  const char *line;

  if (!g_file_get_contents ("/proc/self/status", &status, NULL, NULL) ||
      (line = strstr (status, key)) == NULL)
    return 0;

  return g_ascii_strtoull (line + strlen (key), NULL, 10) * 1024;
}

/* Makes VmHWM start again from the current RSS (Linux >= 4.0). The process is a fresh
 * child per sample anyway; this keeps --in-process runs and the set-up out of the peak. */
static void
reset_peak_rss (void)
{
  FILE *file = fopen ("/proc/self/clear_refs", "w");

  if (file == NULL)
    {
      g_warning ("flow: cannot reset the peak RSS: %s", g_strerror (errno));
      return;
    }
  fputs ("5", file);
  fclose (file);
}

/* ------------------------------------------------------------------------------------------ */
/* The producer                                                                               */
/* ------------------------------------------------------------------------------------------ */

static void flow_post_next (FlowProducer *producer);

static void
flow_posted (GObject      *source,
             GAsyncResult *result,
             gpointer      user_data)
{
  FlowProducer *producer = user_data;
  g_autoptr(GError) error = NULL;

  if (!mp_message_port_post_message_finish (MP_MESSAGE_PORT (source), result, &error))
    g_error ("flow: post %" G_GUINT64_FORMAT " failed: %s", producer->completed, error->message);
  producer->completed++;
  if (producer->issued < producer->count)
    flow_post_next (producer);
}

static void
flow_post_next (FlowProducer *producer)
{
  guint64 i = producer->issued++;

  /* Producer 0: the payload is the sequence number, as deliver_int() checks it. */
  mp_message_port_post_message_async (producer->tx, g_variant_new_int32 ((gint32) (i & 0xffffff)),
                                      NULL, 0, NULL, flow_posted, producer);
}

static gpointer
flow_producer_thread (gpointer data)
{
  FlowProducer *producer = data;

  /* The async posts complete on the thread-default context of the thread that makes them. */
  producer->context = g_main_context_new ();
  g_main_context_push_thread_default (producer->context);

  latch_wait (producer->gate, 1);
  if (!producer->async)
    {
      for (guint64 i = 0; i < producer->count; i++)
        mp_message_port_post_message (producer->tx, g_variant_new_int32 ((gint32) (i & 0xffffff)),
                                      NULL, 0, NULL);
    }
  else
    {
      while (producer->issued < MIN (producer->window, producer->count))
        flow_post_next (producer);
      while (producer->completed < producer->count)
        g_main_context_iteration (producer->context, TRUE);
    }

  g_main_context_pop_thread_default (producer->context);
  g_main_context_unref (producer->context);

  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* The consumer: port2 on the main thread's context                                          */
/* ------------------------------------------------------------------------------------------ */

/* The same for every message and every variant: a chain of dependent multiply-adds (an LCG
 * step). The empty volatile asm claims to change the value each round, so the compiler can
 * neither fold the chain nor drop it although the result is unused. */
static inline guint32
fixed_work (guint32 x,
            guint   rounds)
{
  for (guint i = 0; i < rounds; i++)
    {
      x = x * 1664525u + 1013904223u;
      __asm__ volatile ("" : "+r" (x));
    }

  return x;
}

static void
flow_on_message (MpMessagePort *port,
                 MpMessage     *message,
                 gpointer       user_data)
{
  FlowConsumer *consumer = user_data;
  GVariant *data = mp_message_get_data (message);

  (void) fixed_work ((guint32) g_variant_get_int32 (data), consumer->work_rounds);
  deliver_int (data, &consumer->counter);

  if (--consumer->until_sample == 0)
    {
      guint queued = mp_message_port_get_n_queued (port);

      consumer->until_sample = FLOW_SAMPLE_EVERY;
      consumer->peak_queued = MAX (consumer->peak_queued, queued);
      /* Async posts only: the queue never exceeds the mark (slack 0). */
      if (G_UNLIKELY (consumer->async && consumer->mark > 0 && queued > consumer->mark))
        g_error ("flow: %u messages queued at a port with mark %u", queued, consumer->mark);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* flow:0, flow:64, flow:1024, flow:sync                                                     */
/* ------------------------------------------------------------------------------------------ */

void
scenario_flow (const Scenario *scenario,
               Impl            impl,
               Sample         *out)
{
  const char *variant = strchr (scenario->name, ':');
  const char *window_env = g_getenv ("MP_BENCH_FLOW_WINDOW");
  const char *work_env = g_getenv ("MP_BENCH_FLOW_WORK");
  guint64 total = scaled (scenario->count);
  FlowProducer producer = { 0 };
  FlowConsumer consumer = { 0 };
  MpMessageChannel *channel;
  GThread *thread;
  Latch gate;
  Loop *loop;
  guint64 rss_before;
  gint64 start;

  g_assert (impl == IMPL_MPPORT && variant != NULL);
  variant++;
  consumer.async = !g_str_equal (variant, "sync");
  consumer.mark = consumer.async ? (guint) g_ascii_strtoull (variant, NULL, 10) : 0;
  consumer.until_sample = FLOW_SAMPLE_EVERY;
  consumer.work_rounds = work_env != NULL ? (guint) g_ascii_strtoull (work_env, NULL, 10) : FLOW_WORK_ROUNDS;
  counter_init (&consumer.counter, total);

  reset_peak_rss ();
  rss_before = status_bytes ("VmRSS");

  loop = loop_new ();
  latch_init (&gate);
  channel = mp_message_channel_new ();
  consumer.rx = mp_message_channel_get_port2 (channel);
  mp_message_port_set_high_water_mark (consumer.rx, consumer.mark);
  g_signal_connect (consumer.rx, "message", G_CALLBACK (flow_on_message), &consumer);
  mp_message_port_start (consumer.rx);

  producer.tx = mp_message_channel_get_port1 (channel);
  producer.gate = &gate;
  producer.async = consumer.async;
  producer.window = window_env != NULL ? MAX ((guint) g_ascii_strtoull (window_env, NULL, 10), 1)
                                       : FLOW_WINDOW;
  producer.count = total;
  thread = g_thread_new ("mp-bench flow producer", flow_producer_thread, &producer);

  g_main_context_acquire (loop->context);
  loop_flush (loop);
  loop_reset (loop);
  measure_begin ();
  start = now_ns ();
  latch_add (&gate);
  loop_run_until (loop, &consumer.counter.done);
  measure_end ();
  g_thread_join (thread);

  out->seconds = (consumer.counter.end_ns - start) / 1e9;
  out->messages = total;
  out->value = total / out->seconds;
  out->iterations = loop->iterations;
  out->sleeps = loop->sleeps;
  out->p50 = consumer.peak_queued;
  out->p99 = (double) (status_bytes ("VmHWM") - MIN (rss_before, status_bytes ("VmHWM")));

  mp_message_port_close (consumer.rx);
  g_object_unref (channel);
  g_main_context_release (loop->context);
  loop_free (loop);
  latch_clear (&gate);
}
