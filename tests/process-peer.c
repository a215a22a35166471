/* process-peer.c: the child process of tests/test-process.c
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Usage: process-peer FD. Picks its end of the stream up from FD, starts the port and obeys
 * the commands that arrive on it, each a (sv) message:
 *   ("echo", v)          posts the same message back, with the ports it carried
 *   ("burst", <u n>)     posts ("seq", <u i>) for i = 0 .. n-1
 *   ("serve", v)         the message carries ports: each is started and echoes whatever
 *                        arrives on it (with its ports), until it closes
 *   ("make", <u n>)      makes a channel, posts ("seq", i) for i < n/2 on its first port,
 *                        sends its second port back in ("made", <u n>), posts the rest, and
 *                        closes the first port
 *   ("nest", <u n>)      makes two channels X and Y, posts ("carrier", <u n>) on X's first
 *                        port carrying Y's second port (so it waits in the inbox of X's
 *                        second port), sends X's second port back in ("nested", <u n>), then
 *                        posts ("seq", i) for i < n on Y's first port and closes the first
 *                        ports of X and Y
 *   ("paced", <u n>)     posts ("seq", <u i>) for i = 0 .. n-1 with post_message_async(),
 *                        each once the one before it was queued (so it waits for room while
 *                        the parent's port is at its high-water mark)
 *   ("close", v)         closes the stream's port
 *   ("exit", <i code>)   calls exit () with that code at once, closing nothing (what it
 *                        posted is still sent: mpport flushes its streams at exit)
 * It exits with 0 once the stream's port is closed (by either side), 2 on a setup failure.
 */

#include <stdlib.h>

#include <mpport/mpport.h>

static GMainLoop *loop;

static void
post_or_die (MpMessagePort        *port,
             GVariant             *data,
             MpMessagePort *const *ports,
             guint                 n_ports)
{
  g_autoptr(GError) error = NULL;

  if (!mp_message_port_post_message (port, data, ports, n_ports, &error))
    g_error ("process-peer: post failed: %s", error->message);
}

typedef struct
{
  MpMessagePort *port;   /* strong */
  guint32 next;
  guint32 n;
} Paced;

static void paced_post (Paced *paced);

static void
on_paced (GObject      *object,
          GAsyncResult *result,
          gpointer      data)
{
  Paced *paced = data;
  g_autoptr(GError) error = NULL;

  if (!mp_message_port_post_message_finish (MP_MESSAGE_PORT (object), result, &error))
    g_error ("process-peer: paced post %u failed: %s", paced->next, error->message);
  if (++paced->next < paced->n)
    {
      paced_post (paced);
      return;
    }
  g_object_unref (paced->port);
  g_free (paced);
}

static void
paced_post (Paced *paced)
{
  mp_message_port_post_message_async (paced->port,
                                      g_variant_new ("(sv)", "seq",
                                                     g_variant_new_uint32 (paced->next)),
                                      NULL, 0, NULL, on_paced, paced);
}

static void on_served_message (MpMessagePort *port,
                               MpMessage     *message,
                               gpointer       data);

static void
on_served_close (MpMessagePort *port,
                 gpointer       data)
{
  g_object_unref (port);
}

static void
serve (MpMessagePort *port)
{
  g_object_ref (port);
  g_signal_connect (port, "message", G_CALLBACK (on_served_message), NULL);
  g_signal_connect (port, "close", G_CALLBACK (on_served_close), NULL);
  mp_message_port_start (port);
}

static void
echo (MpMessagePort *port,
      MpMessage     *message)
{
  GPtrArray *ports = mp_message_get_ports (message);

  post_or_die (port, mp_message_get_data (message), (MpMessagePort *const *) ports->pdata,
               ports->len);
}

static void
on_served_message (MpMessagePort *port,
                   MpMessage     *message,
                   gpointer       data)
{
  echo (port, message);
}

static void
on_message (MpMessagePort *port,
            MpMessage     *message,
            gpointer       data)
{
  GVariant *body = mp_message_get_data (message);
  const char *command;
  g_autoptr(GVariant) arg = NULL;

  if (body == NULL || !g_variant_is_of_type (body, G_VARIANT_TYPE ("(sv)")))
    g_error ("process-peer: unexpected message %s",
             body != NULL ? g_variant_print (body, TRUE) : "NULL");
  g_variant_get (body, "(&sv)", &command, &arg);

  if (g_str_equal (command, "echo"))
    echo (port, message);
  else if (g_str_equal (command, "burst"))
    {
      guint32 n = g_variant_get_uint32 (arg);

      for (guint32 i = 0; i < n; i++)
        post_or_die (port, g_variant_new ("(sv)", "seq", g_variant_new_uint32 (i)), NULL, 0);
    }
  else if (g_str_equal (command, "serve"))
    {
      GPtrArray *ports = mp_message_get_ports (message);

      for (guint i = 0; i < ports->len; i++)
        serve (g_ptr_array_index (ports, i));
    }
  else if (g_str_equal (command, "make"))
    {
      guint32 n = g_variant_get_uint32 (arg);
      g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
      MpMessagePort *port1 = mp_message_channel_get_port1 (channel);
      MpMessagePort *port2 = mp_message_channel_get_port2 (channel);

      for (guint32 i = 0; i < n / 2; i++)
        post_or_die (port1, g_variant_new ("(sv)", "seq", g_variant_new_uint32 (i)), NULL, 0);
      post_or_die (port, g_variant_new ("(sv)", "made", g_variant_new_uint32 (n)), &port2, 1);
      for (guint32 i = n / 2; i < n; i++)
        post_or_die (port1, g_variant_new ("(sv)", "seq", g_variant_new_uint32 (i)), NULL, 0);
      mp_message_port_close (port1);
    }
  else if (g_str_equal (command, "nest"))
    {
      guint32 n = g_variant_get_uint32 (arg);
      g_autoptr(MpMessageChannel) x = mp_message_channel_new ();
      g_autoptr(MpMessageChannel) y = mp_message_channel_new ();
      MpMessagePort *x2 = mp_message_channel_get_port2 (x);
      MpMessagePort *y2 = mp_message_channel_get_port2 (y);

      post_or_die (mp_message_channel_get_port1 (x),
                   g_variant_new ("(sv)", "carrier", g_variant_new_uint32 (n)), &y2, 1);
      post_or_die (port, g_variant_new ("(sv)", "nested", g_variant_new_uint32 (n)), &x2, 1);
      for (guint32 i = 0; i < n; i++)
        post_or_die (mp_message_channel_get_port1 (y),
                     g_variant_new ("(sv)", "seq", g_variant_new_uint32 (i)), NULL, 0);
      mp_message_port_close (mp_message_channel_get_port1 (y));
      mp_message_port_close (mp_message_channel_get_port1 (x));
    }
  else if (g_str_equal (command, "paced"))
    {
      Paced *paced = g_new0 (Paced, 1);

      paced->port = g_object_ref (port);
      paced->n = g_variant_get_uint32 (arg);
      if (paced->n > 0)
        paced_post (paced);
    }
  else if (g_str_equal (command, "close"))
    mp_message_port_close (port);
  else if (g_str_equal (command, "exit"))
    exit (g_variant_get_int32 (arg));
  else
    g_error ("process-peer: unknown command %s", command);
}

static void
on_close (MpMessagePort *port,
          gpointer       data)
{
  g_main_loop_quit (loop);
}

int
main (int   argc,
      char *argv[])
{
  g_autoptr(GError) error = NULL;
  g_autoptr(MpMessagePort) port = NULL;

  if (argc != 2)
    {
      g_printerr ("usage: process-peer FD\n");
      return 2;
    }

  port = mp_message_port_new_for_fd_sync (atoi (argv[1]), NULL, &error);
  if (port == NULL)
    {
      g_printerr ("process-peer: %s\n", error->message);
      return 2;
    }

  loop = g_main_loop_new (NULL, FALSE);
  g_signal_connect (port, "message", G_CALLBACK (on_message), NULL);
  g_signal_connect (port, "close", G_CALLBACK (on_close), NULL);
  mp_message_port_start (port);
  g_main_loop_run (loop);
  g_main_loop_unref (loop);

  return 0;
}
