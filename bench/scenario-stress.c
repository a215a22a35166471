/* scenario-stress.c: mp-bench's stress: the seed stress shape of tests/test-stress.c, timed
 * (mpport only)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include <gio/gio.h>
#include <mpport/mpport.h>

#include "scenarios.h"

#define STRESS_THREADS        6         /* plus the main thread */
#define STRESS_ITERATIONS     400
#define STRESS_CHANNELS       8

/* ------------------------------------------------------------------------------------------ */
/* stress: the seed stress shape (tests/test-stress.c /mpport/stress/seed), timed             */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  Latch *gate;
  guint iterations;
  guint count;
} StressThread;

static guint
stress_hammer (guint iterations)
{
  guint count = 0;

  for (guint i = 0; i < iterations; i++)
    {
      MpMessageChannel *outer[STRESS_CHANNELS];
      MpMessageChannel *inner[STRESS_CHANNELS];

      for (guint j = 0; j < STRESS_CHANNELS; j++)
        {
          MpMessagePort *p1, *p2, *inner_p1;
          MpMessage *message;

          outer[j] = mp_message_channel_new ();
          inner[j] = mp_message_channel_new ();
          p1 = mp_message_channel_get_port1 (outer[j]);
          p2 = mp_message_channel_get_port2 (outer[j]);
          inner_p1 = mp_message_channel_get_port1 (inner[j]);

          if (!mp_message_port_post_message (p1, g_variant_new_int32 ((gint32) j), &inner_p1, 1, NULL) ||
              !mp_message_port_post_message (p1, g_variant_new_string ("plain"), NULL, 0, NULL))
            g_error ("stress: post failed");

          while ((message = mp_message_port_receive (p2)) != NULL)
            {
              GPtrArray *ports = mp_message_get_ports (message);

              for (guint k = 0; k < ports->len; k++)
                mp_message_port_close (g_ptr_array_index (ports, k));
              count++;
              mp_message_unref (message);
            }
        }

      for (guint j = 0; j < STRESS_CHANNELS; j++)
        {
          mp_message_port_close (mp_message_channel_get_port1 (outer[j]));
          mp_message_port_close (mp_message_channel_get_port2 (outer[j]));
          mp_message_port_close (mp_message_channel_get_port2 (inner[j]));
          g_object_unref (outer[j]);
          g_object_unref (inner[j]);
        }
    }

  return count;
}

static gpointer
stress_thread (gpointer data)
{
  StressThread *self = data;

  latch_wait (self->gate, 1);
  self->count = stress_hammer (self->iterations);

  return NULL;
}

void
scenario_stress (const Scenario *scenario,
                 Impl            impl,
                 Sample         *out)
{
  guint iterations = (guint) scaled (STRESS_ITERATIONS);
  guint expected = iterations * STRESS_CHANNELS * 2;
  StressThread threads[STRESS_THREADS];
  GThread *handles[STRESS_THREADS];
  Latch gate;
  gint64 start;
  guint main_count;

  latch_init (&gate);
  for (guint t = 0; t < STRESS_THREADS; t++)
    {
      threads[t] = (StressThread) { .gate = &gate, .iterations = iterations };
      handles[t] = g_thread_new ("mp-bench stress", stress_thread, &threads[t]);
    }

  measure_begin ();
  start = now_ns ();
  latch_add (&gate);
  main_count = stress_hammer (iterations);
  for (guint t = 0; t < STRESS_THREADS; t++)
    {
      g_thread_join (handles[t]);
      if (threads[t].count != expected)
        g_error ("stress: thread %u counted %u, expected %u", t, threads[t].count, expected);
    }
  out->seconds = (now_ns () - start) / 1e9;
  measure_end ();
  if (main_count != expected)
    g_error ("stress: main thread counted %u, expected %u", main_count, expected);
  latch_clear (&gate);

  out->messages = (guint64) expected * (STRESS_THREADS + 1);
  out->value = out->seconds * 1000.0;
}
