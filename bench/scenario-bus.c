/* scenario-bus.c: mp-bench's bus: bus channels across processes on a private dbus-daemon,
 * against (d) one raw GDBus signal per message
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#define _GNU_SOURCE   /* alarm() under -std=c11 */

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <mpport/mpport.h>

#include "scenarios.h"

#define N_BUS_RECEIVERS       2         /* processes, besides the sender's */
#define BUS_RTT_WARMUP        200
#define BUS_RTT_PER_POSTS     20        /* measured round trips: posts / 20 (5 000) */
#define BUS_CHANNEL_NAME      "bench/mp-bench/bus"
#define BUS_SIGNAL_PATH       "/org/gnome/Mpport/Bench"
#define BUS_SIGNAL_INTERFACE  "org.gnome.Mpport.Bench"
#define BUS_SIGNAL_MEMBER     "Message"

/* ------------------------------------------------------------------------------------------ */
/* bus: one sender process, two receiver processes on a private dbus-daemon                  */
/*                                                                                            */
/* The sample's process starts a dbus-daemon of its own (a session-bus configuration with    */
/* the limits of Debian's session.conf, written to a temporary directory that also holds the */
/* socket), connects to it, and spawns the two receivers: this program again, with the       */
/* hidden --child-bus-receiver option. Each receiver says READY on its stdout once it is     */
/* subscribed, and when it has the last post of the first phase:                              */
/*   throughput  the sender posts N int32 (0 .. N-1) as fast as it can; each receiver checks  */
/*               the order and reports when it had the last one (CLOCK_MONOTONIC, which all  */
/*               processes share): deliveries/s = 2N / (first post .. later of the two).     */
/*   round trip  the sender posts N, N+1 ... one at a time; the first receiver answers each   */
/*               with its complement (~v < 0) on the same name, and the sender posts the next */
/*               from its handler (the second receiver gets pings and answers, and counts    */
/*               only the pings): p50 and p99 of the round trips after a warm-up.            */
/* mpport: a bus channel (mp_broadcast_channel_new_for_bus) in every process; its posts are   */
/* carried in bursts (mpport/mp-bus.c). (d) signal: one g_dbus_connection_emit_signal() per  */
/* post, the same GVariant in a "(v)" body; receivers g_dbus_connection_signal_subscribe(),   */
/* whose callback hands the GVariant to a BenchSink signal, as the other baselines do. The   */
/* (d) sender subscribes only for the round trip (it needs the answers then), while mpport's */
/* sender is a bus channel throughout, so in the throughput phase the bus also sends mpport's */
/* posts back to their sender, which drops them: a cost only mpport's column pays.            */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  Impl impl;
  GDBusConnection *connection;
  MpBroadcastChannel *channel;   /* mpport: the bus channel */
  guint subscription;            /* (d): 0 while not subscribed */
  BenchReceiver rx;
} BusEnd;

/* Connects to the bus at @address; mpport also makes its bus channel (subscribed once this
 * returns). On the thread whose thread-default context receives. */
static void
bus_end_open (BusEnd      *end,
              Impl         impl,
              const char  *address,
              DeliverFunc  deliver,
              gpointer     deliver_data)
{
  g_autoptr(GError) error = NULL;

  *end = (BusEnd) { .impl = impl, .rx = { .deliver = deliver, .deliver_data = deliver_data } };
  end->connection =
    g_dbus_connection_new_for_address_sync (address,
                                            G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                            G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                            NULL, NULL, &error);
  if (end->connection == NULL)
    g_error ("bus: cannot connect to %s: %s", address, error->message);

  if (impl == IMPL_MPPORT)
    {
      end->channel = mp_broadcast_channel_new_for_bus (BUS_CHANNEL_NAME, end->connection, NULL, &error);
      if (end->channel == NULL)
        g_error ("bus: mp_broadcast_channel_new_for_bus: %s", error->message);
      g_signal_connect (end->channel, "message", G_CALLBACK (bench_receiver_on_mp_message),
                        &end->rx);
    }
  else
    {
      end->rx.sink = g_object_new (BENCH_TYPE_SINK, NULL);
      g_signal_connect (end->rx.sink, "message", G_CALLBACK (bench_receiver_on_sink_message),
                        &end->rx);
    }
}

/* (d): subscribes, and returns once the bus has the match rule (GDBus sends AddMatch
 * without waiting; the bus answers a later call only after it). mpport: nothing to do, its
 * channel is subscribed from the start. */
static void
bus_end_subscribe (BusEnd *end)
{
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GError) error = NULL;

  if (end->impl == IMPL_MPPORT || end->subscription != 0)
    return;

  end->subscription =
    g_dbus_connection_signal_subscribe (end->connection, NULL, BUS_SIGNAL_INTERFACE,
                                        BUS_SIGNAL_MEMBER, BUS_SIGNAL_PATH, NULL,
                                        G_DBUS_SIGNAL_FLAGS_NONE, bench_receiver_on_signal, &end->rx, NULL);
  reply = g_dbus_connection_call_sync (end->connection, "org.freedesktop.DBus",
                                       "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId",
                                       NULL, G_VARIANT_TYPE ("(s)"), G_DBUS_CALL_FLAGS_NONE, -1,
                                       NULL, &error);
  if (reply == NULL)
    g_error ("bus: GetId: %s", error->message);
}

/* Posts @data (floating, consumed). */
static void
bus_end_post (BusEnd   *end,
              GVariant *data)
{
  g_autoptr(GError) error = NULL;
  gboolean ok;

  if (end->impl == IMPL_MPPORT)
    ok = mp_broadcast_channel_post_message (end->channel, data, &error);
  else
    ok = g_dbus_connection_emit_signal (end->connection, NULL, BUS_SIGNAL_PATH,
                                        BUS_SIGNAL_INTERFACE, BUS_SIGNAL_MEMBER,
                                        g_variant_new ("(v)", data), &error);
  if (!ok)
    g_error ("bus: post: %s", error->message);
}

/* Writes out what was posted, then disconnects. */
static void
bus_end_close (BusEnd *end)
{
  if (end->channel != NULL)
    {
      /* Closing a bus channel that posted waits until its posts are written. */
      mp_broadcast_channel_close (end->channel);
      g_clear_object (&end->channel);
    }
  if (end->subscription != 0)
    g_dbus_connection_signal_unsubscribe (end->connection, end->subscription);
  g_clear_object (&end->rx.sink);
  g_dbus_connection_flush_sync (end->connection, NULL, NULL);
  g_dbus_connection_close_sync (end->connection, NULL, NULL);
  g_clear_object (&end->connection);
}

static gboolean
bus_timed_out (gpointer data)
{
  g_error ("bus: %s: timed out after %d s", (const char *) data, TIMEOUT_SECONDS);
  return G_SOURCE_REMOVE;
}

static GSource *
bus_timeout_attach (Loop       *loop,
                    const char *who)
{
  GSource *source = g_timeout_source_new_seconds (TIMEOUT_SECONDS);

  g_source_set_callback (source, bus_timed_out, (gpointer) who, NULL);
  g_source_set_static_name (source, "mp-bench bus timeout");
  g_source_attach (source, loop->context);

  return source;
}

/* ---- The receivers (child processes) ---- */

typedef struct
{
  BusEnd end;
  Loop *loop;
  gboolean echo;      /* answer the pings */
  guint64 n;          /* posts of the throughput phase */
  guint64 total;      /* and the pings after them */
  guint64 next;       /* the value expected next from the sender */
  gboolean done;
} BusReceiver;

static void
bus_receiver_deliver (GVariant *data,
                      gpointer  user_data)
{
  BusReceiver *r = user_data;
  gint32 value = g_variant_get_int32 (data);

  /* An answer of the echoing receiver (the other one gets them too, and so does the (d)
   * echoing receiver, subscribed to its own signals): not a post of the sender. */
  if (value < 0)
    return;
  if (G_UNLIKELY ((guint64) value != r->next))
    g_error ("bus: receiver got %d, expected %" G_GUINT64_FORMAT, value, r->next);

  if (++r->next == r->n)
    {
      gint64 end_ns = now_ns ();

      measure_end ();
      printf ("TPUT\t%" G_GINT64_FORMAT "\t%" G_GUINT64_FORMAT "\t%" G_GUINT64_FORMAT "\t%"
              G_GUINT64_FORMAT "\n", end_ns, r->loop->iterations, r->loop->sleeps, measured_allocs);
      fflush (stdout);
    }
  else if (r->next > r->n && r->echo)
    bus_end_post (&r->end, g_variant_new_int32 (~value));

  if (r->next == r->total)
    r->done = TRUE;
}

/* --child-bus-receiver ADDRESS: one receiver, for the implementation given by --impls. */
int
child_bus_receiver (const char *address,
                    Impl        impl,
                    guint64     n,
                    guint64     pings,
                    gboolean    echo)
{
  BusReceiver r = { .echo = echo, .n = n, .total = n + pings };
  GSource *timeout;

  r.loop = loop_new ();
  bus_end_open (&r.end, impl, address, bus_receiver_deliver, &r);
  bus_end_subscribe (&r.end);
  timeout = bus_timeout_attach (r.loop, "receiver");

  g_main_context_acquire (r.loop->context);
  loop_flush (r.loop);
  loop_reset (r.loop);
  measure_begin ();
  printf ("READY\n");
  fflush (stdout);
  loop_run_until (r.loop, &r.done);

  g_source_destroy (timeout);
  g_source_unref (timeout);
  bus_end_close (&r.end);
  g_main_context_release (r.loop->context);
  loop_free (r.loop);

  return EXIT_SUCCESS;
}

/* ---- The sender (the sample's process) ---- */

typedef struct
{
  GSubprocess *process;
  char *dir;        /* temporary: the configuration and the socket */
  char *address;
} BusDaemon;

static void
bus_daemon_start (BusDaemon *daemon)
{
  g_autoptr(GSubprocessLauncher) launcher = NULL;
  g_autoptr(GDataInputStream) out = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *config = NULL;
  g_autofree char *config_path = NULL;
  g_autofree char *log_path = NULL;
  g_autofree char *line = NULL;

  daemon->dir = g_dir_make_tmp ("mp-bench-bus-XXXXXX", &error);
  if (daemon->dir == NULL)
    g_error ("bus: %s", error->message);
  config_path = g_build_filename (daemon->dir, "bus.conf", NULL);
  log_path = g_build_filename (daemon->dir, "dbus-daemon.log", NULL);
  config = g_markup_printf_escaped (
    "<busconfig>\n"
    "  <type>session</type>\n"
    "  <listen>unix:dir=%s</listen>\n"
    "  <auth>EXTERNAL</auth>\n"
    "  <policy context=\"default\">\n"
    "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
    "    <allow eavesdrop=\"true\"/>\n"
    "    <allow own=\"*\"/>\n"
    "  </policy>\n"
    "  <limit name=\"max_incoming_bytes\">1000000000</limit>\n"
    "  <limit name=\"max_outgoing_bytes\">1000000000</limit>\n"
    "  <limit name=\"max_message_size\">1000000000</limit>\n"
    "  <limit name=\"max_match_rules_per_connection\">50000</limit>\n"
    "  <limit name=\"max_replies_per_connection\">50000</limit>\n"
    "</busconfig>\n", daemon->dir);
  if (!g_file_set_contents (config_path, config, -1, &error))
    g_error ("bus: %s", error->message);

  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE);
  g_subprocess_launcher_set_child_setup (launcher, die_with_parent, NULL, NULL);
  /* Its warnings (as root: "Failed to set fd limit") are noise in the table; shown if it
   * fails to start. */
  g_subprocess_launcher_set_stderr_file_path (launcher, log_path);
  daemon->process = g_subprocess_launcher_spawn (launcher, &error, "dbus-daemon", "--nofork",
                                                 "--nopidfile", "--print-address",
                                                 "--config-file", config_path, NULL);
  if (daemon->process == NULL)
    g_error ("bus: cannot start dbus-daemon (scripts/bench installs it): %s", error->message);

  out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (daemon->process));
  line = g_data_input_stream_read_line (out, NULL, NULL, &error);
  if (line == NULL || *g_strstrip (line) == '\0')
    {
      g_autofree char *log = NULL;

      g_file_get_contents (log_path, &log, NULL, NULL);
      g_error ("bus: dbus-daemon printed no address%s%s\n%s", error != NULL ? ": " : "",
               error != NULL ? error->message : "", log != NULL ? log : "");
    }
  daemon->address = g_steal_pointer (&line);
}

static void
bus_daemon_stop (BusDaemon *daemon)
{
  g_autoptr(GDir) dir = NULL;
  const char *name;

  g_subprocess_send_signal (daemon->process, SIGTERM);
  g_subprocess_wait (daemon->process, NULL, NULL);
  g_clear_object (&daemon->process);

  dir = g_dir_open (daemon->dir, 0, NULL);
  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *path = g_build_filename (daemon->dir, name, NULL);

      g_unlink (path);
    }
  g_rmdir (daemon->dir);
  g_clear_pointer (&daemon->dir, g_free);
  g_clear_pointer (&daemon->address, g_free);
}

typedef struct
{
  GSubprocess *process;
  GDataInputStream *out;
} BusPeer;

static void
bus_peer_spawn (BusPeer    *peer,
                const char *address,
                Impl        impl,
                guint64     n,
                guint64     pings,
                gboolean    echo)
{
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE);
  g_autoptr(GError) error = NULL;
  g_autofree char *posts = g_strdup_printf ("%" G_GUINT64_FORMAT, n);
  g_autofree char *n_pings = g_strdup_printf ("%" G_GUINT64_FORMAT, pings);
  const char *argv[] = { self_exe, "--child-bus-receiver", address, "--child-bus-posts", posts,
                         "--child-bus-pings", n_pings, "--impls", impl_names[impl],
                         echo ? "--child-bus-echo" : NULL, NULL };

  g_subprocess_launcher_set_child_setup (launcher, die_with_parent, NULL, NULL);
  peer->process = g_subprocess_launcher_spawnv (launcher, argv, &error);
  if (peer->process == NULL)
    g_error ("bus: cannot start a receiver: %s", error->message);
  peer->out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (peer->process));
}

/* The next line of @peer, split at tabs; it must start with @what. */
static char **
bus_peer_expect (BusPeer    *peer,
                 const char *what)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *line = g_data_input_stream_read_line (peer->out, NULL, NULL, &error);
  char **fields;

  if (line == NULL)
    g_error ("bus: a receiver ended before saying %s%s%s", what, error != NULL ? ": " : "",
             error != NULL ? error->message : "");
  fields = g_strsplit (line, "\t", -1);
  if (!g_str_equal (fields[0], what))
    g_error ("bus: a receiver said '%s', expected %s", line, what);

  return fields;
}

static void
bus_peer_finish (BusPeer *peer)
{
  g_autoptr(GError) error = NULL;

  if (!g_subprocess_wait_check (peer->process, NULL, &error))
    g_error ("bus: a receiver failed: %s", error->message);
  g_clear_object (&peer->out);
  g_clear_object (&peer->process);
}

typedef struct
{
  guint64 n;          /* measured round trips, after BUS_RTT_WARMUP */
  guint64 rounds;     /* answers received */
  gint32 sent;
  gint64 t0;
  double *rtt;        /* ns per measured round trip */
  BusEnd *end;
  gboolean done;
} BusRtt;

static void
bus_sender_deliver (GVariant *data,
                    gpointer  user_data)
{
  BusRtt *rtt = user_data;
  gint64 t = now_ns ();
  gint32 value = g_variant_get_int32 (data);

  /* (d): its own ping, sent back by the bus (mpport drops those before any handler). */
  if (value >= 0)
    return;
  if (G_UNLIKELY (value != ~rtt->sent))
    g_error ("bus: answer %d, expected %d", value, ~rtt->sent);

  if (++rtt->rounds > BUS_RTT_WARMUP)
    rtt->rtt[rtt->rounds - BUS_RTT_WARMUP - 1] = (double) (t - rtt->t0);
  if (rtt->rounds == BUS_RTT_WARMUP + rtt->n)
    {
      rtt->done = TRUE;
      return;
    }

  rtt->sent++;
  rtt->t0 = now_ns ();
  bus_end_post (rtt->end, g_variant_new_int32 (rtt->sent));
}

void
scenario_bus (const Scenario *scenario,
              Impl            impl,
              Sample         *out)
{
  guint64 n = scaled (scenario->count);
  BusRtt rtt = { .n = MAX (n / BUS_RTT_PER_POSTS, 1) };
  guint64 pings = BUS_RTT_WARMUP + rtt.n;
  BusDaemon daemon = { 0 };
  BusPeer peers[N_BUS_RECEIVERS];
  guint64 peer_allocs = 0;
  BusEnd sender;
  Loop *loop;
  GSource *timeout;
  gint64 start, end = 0;

  if (n + pings > G_MAXINT32)
    g_error ("bus: --scale too large for int32 sequence numbers");

  /* The receivers time out on their own, but a blocking read or wait here would not: past
   * this, SIGALRM ends the process, and the daemon and the receivers with it. */
  alarm (3 * TIMEOUT_SECONDS);
  bus_daemon_start (&daemon);
  for (guint r = 0; r < N_BUS_RECEIVERS; r++)
    bus_peer_spawn (&peers[r], daemon.address, impl, n, pings, r == 0);
  for (guint r = 0; r < N_BUS_RECEIVERS; r++)
    g_strfreev (bus_peer_expect (&peers[r], "READY"));

  loop = loop_new ();
  rtt.end = &sender;
  rtt.rtt = g_new (double, rtt.n);
  bus_end_open (&sender, impl, daemon.address, bus_sender_deliver, &rtt);
  g_main_context_acquire (loop->context);
  loop_flush (loop);

  /* Throughput: the sender's main loop is not iterated (nothing of this phase reaches a
   * handler of the sender); it waits for the receivers' reports. */
  measure_begin ();
  start = now_ns ();
  for (guint64 i = 0; i < n; i++)
    bus_end_post (&sender, g_variant_new_int32 ((gint32) i));
  for (guint r = 0; r < N_BUS_RECEIVERS; r++)
    {
      g_auto(GStrv) f = bus_peer_expect (&peers[r], "TPUT");

      if (g_strv_length (f) < 5)
        g_error ("bus: a short TPUT line");
      end = MAX (end, g_ascii_strtoll (f[1], NULL, 10));
      out->iterations += g_ascii_strtoull (f[2], NULL, 10);
      out->sleeps += g_ascii_strtoull (f[3], NULL, 10);
      peer_allocs += g_ascii_strtoull (f[4], NULL, 10);
    }
  measure_end ();
  measured_allocs += peer_allocs;

  /* Round trip. */
  bus_end_subscribe (&sender);
  timeout = bus_timeout_attach (loop, "sender");
  loop_flush (loop);
  rtt.t0 = now_ns ();
  rtt.sent = (gint32) n;
  bus_end_post (&sender, g_variant_new_int32 (rtt.sent));
  loop_run_until (loop, &rtt.done);
  g_source_destroy (timeout);
  g_source_unref (timeout);

  for (guint r = 0; r < N_BUS_RECEIVERS; r++)
    bus_peer_finish (&peers[r]);
  bus_end_close (&sender);
  g_main_context_release (loop->context);
  loop_free (loop);
  bus_daemon_stop (&daemon);
  alarm (0);

  qsort (rtt.rtt, rtt.n, sizeof (double), compare_double);
  out->p50 = rtt.rtt[rtt.n / 2] / 1000.0;
  out->p99 = rtt.rtt[MIN (rtt.n - 1, rtt.n * 99 / 100)] / 1000.0;
  g_free (rtt.rtt);

  out->messages = n * N_BUS_RECEIVERS;
  out->seconds = (end - start) / 1e9;
  out->value = out->messages / out->seconds;
}
