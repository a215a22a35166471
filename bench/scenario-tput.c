/* scenario-tput.c: mp-bench's tput, tput-str and fanin: producer threads send int32 (or
 * 64-byte string) messages through links to one receiving context, the main thread's
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include <string.h>

#include <gio/gio.h>

#include "baselines.h"
#include "scenarios.h"

#define N_FANIN_PRODUCERS     4

/* 64 bytes, without the terminating NUL. */
static const char payload64[] = "mpport-bench-payload-0123456789abcdefghijklmnopqrstuvwxyzABCDEF.";
G_STATIC_ASSERT (sizeof (payload64) == 65);

/* ------------------------------------------------------------------------------------------ */
/* tput, tput-str, fanin: producers -> links -> one receiving context (the main thread's)    */
/* ------------------------------------------------------------------------------------------ */

/* Counter is in scenarios.h. */

void
counter_init (Counter *counter,
              guint64  expected)
{
  memset (counter, 0, sizeof (*counter));
  counter->expected = expected;
}

static void
counter_tick (Counter *counter)
{
  if (++counter->received == counter->expected)
    {
      counter->end_ns = now_ns ();
      counter->done = TRUE;
    }
}

/* int32 payloads carry (producer << 24) | sequence. */
void
deliver_int (GVariant *data,
             gpointer  user_data)
{
  Counter *counter = user_data;
  guint32 value = (guint32) g_variant_get_int32 (data);
  guint producer = value >> 24;

  if (G_UNLIKELY (producer >= MAX_PRODUCERS || (value & 0xffffff) != (counter->next[producer] & 0xffffff)))
    g_error ("out of order: got %u:%u, expected %u", producer, value & 0xffffff,
             producer < MAX_PRODUCERS ? counter->next[producer] : 0);
  counter->next[producer]++;
  counter_tick (counter);
}

static void
deliver_string (GVariant *data,
                gpointer  user_data)
{
  gsize length;

  g_variant_get_string (data, &length);
  if (G_UNLIKELY (length != sizeof (payload64) - 1))
    g_error ("bad payload of %" G_GSIZE_FORMAT " bytes", length);
  counter_tick (user_data);
}

typedef struct
{
  Link *link;
  Latch *gate;
  guint id;
  guint64 count;
  gboolean string;
} Producer;

static gpointer
producer_thread (gpointer data)
{
  Producer *producer = data;

  latch_wait (producer->gate, 1);
  if (producer->string)
    for (guint64 i = 0; i < producer->count; i++)
      link_send (producer->link, g_variant_new_string (payload64));
  else
    for (guint64 i = 0; i < producer->count; i++)
      link_send (producer->link,
                 g_variant_new_int32 ((gint32) ((producer->id << 24) | (i & 0xffffff))));

  return NULL;
}

static void
run_producers (Impl     impl,
               guint    n_producers,
               guint64  total,
               gboolean string,
               Sample  *out)
{
  Loop *loop = loop_new ();
  Link *links[MAX_PRODUCERS];
  Producer producers[MAX_PRODUCERS];
  GThread *threads[MAX_PRODUCERS];
  Counter counter;
  Latch gate;
  gint64 start;

  g_assert (n_producers <= MAX_PRODUCERS);
  latch_init (&gate);
  counter_init (&counter, total);

  for (guint p = 0; p < n_producers; p++)
    {
      links[p] = link_new (impl);
      link_start (links[p], string ? deliver_string : deliver_int, &counter);
      producers[p] = (Producer) {
        .link = links[p],
        .gate = &gate,
        .id = p,
        .count = total / n_producers + (p < total % n_producers ? 1 : 0),
        .string = string,
      };
      threads[p] = g_thread_new ("mp-bench producer", producer_thread, &producers[p]);
    }

  /* The receiving thread owns its context throughout: invoke never runs inline. */
  g_main_context_acquire (loop->context);
  loop_flush (loop);
  loop_reset (loop);
  measure_begin ();
  start = now_ns ();
  latch_add (&gate);
  loop_run_until (loop, &counter.done);
  measure_end ();

  out->seconds = (counter.end_ns - start) / 1e9;
  out->messages = total;
  out->value = total / out->seconds;
  out->iterations = loop->iterations;
  out->sleeps = loop->sleeps;

  for (guint p = 0; p < n_producers; p++)
    {
      g_thread_join (threads[p]);
      out->wakes += link_wakes (links[p]);
      link_free (links[p]);
    }
  g_main_context_release (loop->context);
  loop_free (loop);
  latch_clear (&gate);
}

void
scenario_tput (const Scenario *scenario,
               Impl            impl,
               Sample         *out)
{
  run_producers (impl, 1, scaled (scenario->count), FALSE, out);
}

void
scenario_tput_str (const Scenario *scenario,
                   Impl            impl,
                   Sample         *out)
{
  run_producers (impl, 1, scaled (scenario->count), TRUE, out);
}

void
scenario_fanin (const Scenario *scenario,
                Impl            impl,
                Sample         *out)
{
  run_producers (impl, N_FANIN_PRODUCERS, scaled (scenario->count), FALSE, out);
}
