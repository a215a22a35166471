/* mp-transit-chain.c: what the transfer-cycle check costs a post, by chain depth
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A post whose transfer list is not empty walks the destination's transit chain (the port
 * that owns the destination travels in a message queued at another port, whose owner
 * travels in a message queued at a third, ...) under the process-wide transit lock, to
 * refuse a message that would travel inside its own cargo (docs/internals.md). This builds
 * chains of the depths given on the command line and times posts that each carry one fresh
 * port to the head of the chain: the median of 7 rounds of posts, per post.
 *
 *   build/bench/mp-transit-chain 0 100 1000 10000 100000
 */

#include <stdlib.h>

#include <mpport/mpport.h>

#define N_ROUNDS 7

static int
compare_doubles (const void *a,
                 const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

/* Microseconds per post at @depth: the median of N_ROUNDS rounds. */
static double
measure (guint depth)
{
  g_autoptr(GPtrArray) channels = g_ptr_array_new_with_free_func (g_object_unref);
  MpMessagePort *head;
  double rounds[N_ROUNDS];
  guint posts = depth >= 10000 ? 50 : 2000;

  for (guint i = 0; i <= depth; i++)
    g_ptr_array_add (channels, mp_message_channel_new ());

  /* Channel i's port2 travels in a message queued at channel i + 1's port2: the chain. */
  for (guint i = 0; i < depth; i++)
    {
      MpMessagePort *travelling = mp_message_channel_get_port2 (channels->pdata[i]);

      if (!mp_message_port_post_message (mp_message_channel_get_port1 (channels->pdata[i + 1]),
                                         NULL, &travelling, 1, NULL))
        g_error ("could not build the chain at %u", i);
    }
  head = mp_message_channel_get_port1 (channels->pdata[0]);

  for (guint r = 0; r < N_ROUNDS; r++)
    {
      g_autoptr(GPtrArray) cargo = g_ptr_array_new_with_free_func (g_object_unref);
      gint64 start, end;

      /* The cargo's channels are made outside the timed loop. */
      for (guint i = 0; i < posts; i++)
        g_ptr_array_add (cargo, mp_message_channel_new ());

      start = g_get_monotonic_time ();
      for (guint i = 0; i < posts; i++)
        {
          MpMessagePort *port = mp_message_channel_get_port1 (cargo->pdata[i]);

          if (!mp_message_port_post_message (head, NULL, &port, 1, NULL))
            g_error ("post refused at depth %u", depth);
        }
      end = g_get_monotonic_time ();
      rounds[r] = (double) (end - start) / posts;
    }

  qsort (rounds, N_ROUNDS, sizeof rounds[0], compare_doubles);
  return rounds[N_ROUNDS / 2];
}

int
main (int   argc,
      char *argv[])
{
  if (argc < 2)
    {
      g_printerr ("usage: %s DEPTH...\n", argv[0]);
      return 2;
    }

  g_print ("%10s %14s %14s\n", "depth", "us/post", "ns/level");
  for (int i = 1; i < argc; i++)
    {
      guint depth = (guint) strtoul (argv[i], NULL, 10);
      double us = measure (depth);

      g_print ("%10u %14.2f %14.1f\n", depth, us, depth > 0 ? us * 1000 / depth : 0.0);
    }

  return 0;
}
