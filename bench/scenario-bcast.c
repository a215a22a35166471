/* scenario-bcast.c: mp-bench's bcast: one sender, four receiver threads; mpport's
 * BroadcastChannel against each baseline sending every post to one link per receiver
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include <gio/gio.h>
#include <mpport/mpport.h>

#include "baselines.h"
#include "scenarios.h"

#define N_BCAST_RECEIVERS     4
#define BCAST_NAME            "bench/mp-bench"

/* ------------------------------------------------------------------------------------------ */
/* bcast: one sender (the main thread), four receiver threads                                 */
/* mpport: one BroadcastChannel name. Baselines: the sender sends each post to four links.   */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  Impl impl;
  Link *link;            /* baselines */
  Counter counter;
  Latch *ready;
  Latch *sends_done;     /* the sender returned from its last post: links may go */
  guint64 iterations, sleeps, wakes;
} BcastReceiver;

static void
on_broadcast_message (MpBroadcastChannel *channel,
                      MpMessage          *message,
                      gpointer            user_data)
{
  deliver_int (mp_message_get_data (message), user_data);
}

static gpointer
bcast_receiver_thread (gpointer data)
{
  BcastReceiver *receiver = data;
  Loop *loop = loop_new ();
  MpBroadcastChannel *channel = NULL;

  if (receiver->impl == IMPL_MPPORT)
    {
      channel = mp_broadcast_channel_new (BCAST_NAME);
      g_signal_connect (channel, "message", G_CALLBACK (on_broadcast_message), &receiver->counter);
    }
  else
    link_start (receiver->link, deliver_int, &receiver->counter);

  g_main_context_acquire (loop->context);
  loop_flush (loop);
  loop_reset (loop);
  latch_add (receiver->ready);
  loop_run_until (loop, &receiver->counter.done);
  /* The last message may be received before its sender returned from sending it. */
  latch_wait (receiver->sends_done, 1);

  if (channel != NULL)
    {
      mp_broadcast_channel_close (channel);
      g_object_unref (channel);
    }
  else
    {
      receiver->wakes = link_wakes (receiver->link);
      link_free (receiver->link);
    }
  g_main_context_release (loop->context);
  receiver->iterations = loop->iterations;
  receiver->sleeps = loop->sleeps;
  loop_free (loop);

  return NULL;
}

void
scenario_bcast (const Scenario *scenario,
                Impl            impl,
                Sample         *out)
{
  guint64 n = scaled (scenario->count);
  BcastReceiver receivers[N_BCAST_RECEIVERS];
  GThread *threads[N_BCAST_RECEIVERS];
  MpBroadcastChannel *sender = NULL;
  Latch ready, sends_done;
  gint64 start, end = 0;

  latch_init (&ready);
  latch_init (&sends_done);
  for (guint r = 0; r < N_BCAST_RECEIVERS; r++)
    {
      receivers[r] = (BcastReceiver) { .impl = impl, .ready = &ready, .sends_done = &sends_done };
      counter_init (&receivers[r].counter, n);
      if (impl != IMPL_MPPORT)
        receivers[r].link = link_new (impl);
      threads[r] = g_thread_new ("mp-bench receiver", bcast_receiver_thread, &receivers[r]);
    }
  latch_wait (&ready, N_BCAST_RECEIVERS);

  if (impl == IMPL_MPPORT)
    sender = mp_broadcast_channel_new (BCAST_NAME);

  measure_begin ();
  start = now_ns ();
  if (impl == IMPL_MPPORT)
    for (guint64 i = 0; i < n; i++)
      mp_broadcast_channel_post_message (sender, g_variant_new_int32 ((gint32) (i & 0xffffff)), NULL);
  else
    for (guint64 i = 0; i < n; i++)
      {
        GVariant *data = g_variant_ref_sink (g_variant_new_int32 ((gint32) (i & 0xffffff)));

        for (guint r = 0; r < N_BCAST_RECEIVERS; r++)
          link_send (receivers[r].link, g_variant_ref (data));
        g_variant_unref (data);
      }
  latch_add (&sends_done);

  for (guint r = 0; r < N_BCAST_RECEIVERS; r++)
    {
      g_thread_join (threads[r]);
      end = MAX (end, receivers[r].counter.end_ns);
      out->iterations += receivers[r].iterations;
      out->sleeps += receivers[r].sleeps;
      out->wakes += receivers[r].wakes;
    }
  measure_end ();

  if (sender != NULL)
    {
      mp_broadcast_channel_close (sender);
      g_object_unref (sender);
    }
  latch_clear (&ready);
  latch_clear (&sends_done);

  out->messages = n * N_BCAST_RECEIVERS;
  out->seconds = (end - start) / 1e9;
  out->value = out->messages / out->seconds;
}
