/* scenario-pingpong.c: mp-bench's pingpong: one message in flight between two threads,
 * round trips timed one by one
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include <stdlib.h>

#include <gio/gio.h>

#include "baselines.h"
#include "scenarios.h"

/* ------------------------------------------------------------------------------------------ */
/* pingpong: one message in flight between the main thread and an echo thread               */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  Link *ping;       /* main -> echo; received by the echo thread */
  Link *pong;       /* echo -> main */
  Latch ready;
  Latch sends_done; /* the main thread returned from its last send: the echo side may go */
  gboolean echo_done;
  guint64 ping_wakes;   /* the ping link's producer wake-ups, read before the echo side frees it */

  guint64 n, rounds;
  gint32 sent;
  gint64 t0;
  double *rtt;      /* ns per measured round trip */
  gboolean done;
} PingPong;

static void
deliver_echo (GVariant *data,
              gpointer  user_data)
{
  PingPong *pp = user_data;
  gint32 value = g_variant_get_int32 (data);

  if (value < 0)
    pp->echo_done = TRUE;
  else
    link_send (pp->pong, g_variant_new_int32 (value));
}

static void
deliver_pong (GVariant *data,
              gpointer  user_data)
{
  PingPong *pp = user_data;
  gint64 t = now_ns ();

  if (G_UNLIKELY (g_variant_get_int32 (data) != pp->sent))
    g_error ("pingpong: got %d, expected %d", g_variant_get_int32 (data), pp->sent);

  if (pp->rounds == PINGPONG_WARMUP)
    {
      /* Warm-up over: the measured region starts with the next ping. */
      loop_reset (thread_loop);
      measure_begin ();
    }
  else if (pp->rounds > PINGPONG_WARMUP)
    pp->rtt[pp->rounds - PINGPONG_WARMUP - 1] = (double) (t - pp->t0);

  if (++pp->rounds == pp->n + PINGPONG_WARMUP + 1)
    {
      measure_end ();
      pp->done = TRUE;
      return;
    }

  pp->sent = (pp->sent + 1) & 0x3fffffff;
  pp->t0 = now_ns ();
  link_send (pp->ping, g_variant_new_int32 (pp->sent));
}

static gpointer
echo_thread (gpointer data)
{
  PingPong *pp = data;
  Loop *loop = loop_new ();

  link_start (pp->ping, deliver_echo, pp);
  g_main_context_acquire (loop->context);
  latch_add (&pp->ready);
  loop_run_until (loop, &pp->echo_done);
  /* The stop message may be received before its sender returned from sending it. */
  latch_wait (&pp->sends_done, 1);
  pp->ping_wakes = link_wakes (pp->ping);
  link_free (pp->ping);
  g_main_context_release (loop->context);
  loop_free (loop);

  return NULL;
}

void
scenario_pingpong (const Scenario *scenario,
                   Impl            impl,
                   Sample         *out)
{
  PingPong pp = { 0 };
  Loop *loop = loop_new ();
  GThread *thread;
  double sum = 0;

  pp.n = scaled (scenario->count);
  pp.rtt = g_new (double, pp.n);
  latch_init (&pp.ready);
  latch_init (&pp.sends_done);
  pp.ping = link_new (impl);
  pp.pong = link_new (impl);
  link_start (pp.pong, deliver_pong, &pp);
  thread = g_thread_new ("mp-bench echo", echo_thread, &pp);
  latch_wait (&pp.ready, 1);

  g_main_context_acquire (loop->context);
  pp.t0 = now_ns ();
  link_send (pp.ping, g_variant_new_int32 (0));
  loop_run_until (loop, &pp.done);

  out->iterations = loop->iterations;
  out->sleeps = loop->sleeps;

  link_send (pp.ping, g_variant_new_int32 (-1));
  latch_add (&pp.sends_done);
  g_thread_join (thread);
  out->wakes = pp.ping_wakes + link_wakes (pp.pong);
  link_free (pp.pong);
  g_main_context_release (loop->context);
  loop_free (loop);
  latch_clear (&pp.ready);
  latch_clear (&pp.sends_done);

  for (guint64 i = 0; i < pp.n; i++)
    sum += pp.rtt[i];
  qsort (pp.rtt, pp.n, sizeof (double), compare_double);
  out->messages = pp.n;
  out->seconds = sum / 1e9;
  out->value = sum / pp.n / 1000.0;
  out->p50 = pp.rtt[pp.n / 2] / 1000.0;
  out->p99 = pp.rtt[MIN (pp.n - 1, pp.n * 99 / 100)] / 1000.0;
  g_free (pp.rtt);
}
