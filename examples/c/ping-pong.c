/* ping-pong.c: two threads play ping-pong over a message channel
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The main thread makes a channel and hands one port to each of two threads,
 * "ping" and "pong". Each thread runs its own GMainContext and starts its
 * port there, so its "message" and "close" handlers run on that thread, in
 * its main loop. Ping serves, pong returns every ball with the count plus
 * one, and after the last round ping closes its port: both threads then get
 * "close" (pong after the last ball) and leave their loops.
 *
 *   ping-pong [--rounds N] [--quiet]
 */

#include <stdio.h>
#include <stdlib.h>

#include <mpport/mpport.h>

typedef struct
{
  const char    *name;
  MpMessagePort *port;          /* owned; started on this player's thread */
  guint          rounds;        /* ping: how many balls to serve */
  gboolean       quiet;
  GThread       *thread;        /* the player's thread, for joining it */
  GThread       *self;          /* the same, as the thread itself saw it first */
  GMainLoop     *loop;          /* on the player's own context */
  guint          n_received;
  gboolean       wrong_thread;  /* a handler ran on another thread */
  gboolean       out_of_order;
} Player;

static void
check_thread (Player *player)
{
  /* start() bound the port to this player's thread-default context: its
   * signals are emitted only while this thread iterates it. */
  if (g_thread_self () != player->self)
    player->wrong_thread = TRUE;
}

static void
on_ball (MpMessagePort *port,
         MpMessage     *message,
         gpointer       user_data)
{
  Player *player = user_data;
  g_autoptr(GError) error = NULL;
  const char *word;
  guint32 count;

  check_thread (player);
  g_variant_get (mp_message_get_data (message), "(&su)", &word, &count);
  player->n_received++;
  if (!player->quiet)
    printf ("%-4s got %s %u\n", player->name, word, count);

  if (g_str_equal (player->name, "pong"))
    {
      if (count != 2 * player->n_received - 1)
        player->out_of_order = TRUE;
      if (!mp_message_port_post_message (port, g_variant_new ("(su)", "pong", count + 1),
                                         NULL, 0, &error))
        g_printerr ("pong: %s\n", error->message);
      return;
    }

  /* ping */
  if (count != 2 * player->n_received)
    player->out_of_order = TRUE;
  if (player->n_received == player->rounds)
    {
      /* Game over: pong gets "close" after the balls in flight, we get ours. */
      mp_message_port_close (port);
      return;
    }
  if (!mp_message_port_post_message (port, g_variant_new ("(su)", "ping", count + 1),
                                     NULL, 0, &error))
    g_printerr ("ping: %s\n", error->message);
}

static void
on_close (MpMessagePort *port,
          gpointer       user_data)
{
  Player *player = user_data;

  check_thread (player);
  if (!player->quiet)
    printf ("%-4s got close\n", player->name);
  g_main_loop_quit (player->loop);
}

static gpointer
player_thread (gpointer data)
{
  Player *player = data;
  g_autoptr(GMainContext) context = g_main_context_new ();

  /* Set here, not from g_thread_new ()'s result: the other player's first ball can come
   * back before the thread that spawned this one has stored it. */
  player->self = g_thread_self ();
  g_main_context_push_thread_default (context);
  player->loop = g_main_loop_new (context, FALSE);

  g_signal_connect (player->port, "message", G_CALLBACK (on_ball), player);
  g_signal_connect (player->port, "close", G_CALLBACK (on_close), player);
  mp_message_port_start (player->port);

  if (g_str_equal (player->name, "ping"))
    mp_message_port_post_message (player->port, g_variant_new ("(su)", "ping", 1),
                                  NULL, 0, NULL);

  g_main_loop_run (player->loop);

  g_signal_handlers_disconnect_by_data (player->port, player);
  g_main_loop_unref (player->loop);
  g_main_context_pop_thread_default (context);

  return NULL;
}

int
main (int    argc,
      char **argv)
{
  g_autoptr(GOptionContext) option_context = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(MpMessageChannel) channel = NULL;
  g_autoptr(GTimer) timer = NULL;
  int rounds = 5;
  gboolean quiet = FALSE;
  const GOptionEntry entries[] = {
    { "rounds", 'r', 0, G_OPTION_ARG_INT, &rounds, "Balls ping serves (default 5)", "N" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "Print only the summary", NULL },
    { NULL }
  };
  Player ping = { "ping", NULL, 0, FALSE, NULL, NULL, 0, FALSE, FALSE };
  Player pong = { "pong", NULL, 0, FALSE, NULL, NULL, 0, FALSE, FALSE };
  double seconds;

  option_context = g_option_context_new ("- ping-pong between two threads over mpport");
  g_option_context_add_main_entries (option_context, entries, NULL);
  if (!g_option_context_parse (option_context, &argc, &argv, &error))
    {
      g_printerr ("%s\n", error->message);
      return EXIT_FAILURE;
    }
  if (rounds < 1)
    {
      g_printerr ("--rounds must be at least 1\n");
      return EXIT_FAILURE;
    }

  channel = mp_message_channel_new ();
  ping.port = g_object_ref (mp_message_channel_get_port1 (channel));
  pong.port = g_object_ref (mp_message_channel_get_port2 (channel));
  ping.rounds = (guint) rounds;
  ping.quiet = pong.quiet = quiet;

  timer = g_timer_new ();
  /* Port objects may be used from any thread: each thread starts its own. */
  pong.thread = g_thread_new ("pong", player_thread, &pong);
  ping.thread = g_thread_new ("ping", player_thread, &ping);
  g_thread_join (ping.thread);
  g_thread_join (pong.thread);
  seconds = g_timer_elapsed (timer, NULL);

  printf ("%u rounds in %.3f s (%.1f us per round trip)\n", ping.n_received, seconds,
          seconds * 1e6 / MAX (ping.n_received, 1));

  g_object_unref (ping.port);
  g_object_unref (pong.port);

  if (ping.n_received != (guint) rounds || pong.n_received != (guint) rounds ||
      ping.wrong_thread || pong.wrong_thread || ping.out_of_order || pong.out_of_order)
    {
      g_printerr ("ping got %u, pong got %u of %d%s%s\n", ping.n_received, pong.n_received,
                  rounds, ping.wrong_thread || pong.wrong_thread ? ", a handler ran on the wrong thread" : "",
                  ping.out_of_order || pong.out_of_order ? ", out of order" : "");
      return EXIT_FAILURE;
    }

  return EXIT_SUCCESS;
}
