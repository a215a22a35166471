/* test-bus.c: bus channels across processes, on a private message bus per case
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Each case starts its own dbus-daemon (GTestDBus, which points DBUS_SESSION_BUS_ADDRESS at
 * it: channels made with a NULL connection and the peers this case spawns use it) and talks
 * to real processes: tests/bus-peer (MP_BUS_PEER), driven over stdin/stdout lines (its header
 * describes them). What each channel received is compared, as report lines, with what it
 * must have received: counts, per-sender order and senders exactly. Every wait is bounded: a
 * lost message fails the case, it never hangs it.
 */

#include <mpport/mpport.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "bus-peer-protocol.h"
#include "mp-test-util.h"

#ifdef __has_include
# if __has_include(<valgrind/valgrind.h>)
#  include <valgrind/valgrind.h>
# endif
#endif
#ifndef RUNNING_ON_VALGRIND
# define RUNNING_ON_VALGRIND 0
#endif

/* The bound of the waits on other processes and on the bus: many thousand messages go
 * through a dbus-daemon (MP_WAIT_TIMEOUT raises it further under valgrind). */
#define BUS_TIMEOUT_SECONDS 60

/* This process's number in the (process, channel, seq) payloads; the peers are 0, 1, 2. */
#define TEST_PROC 9

#define WIRE_INTERFACE "org.gnome.Mpport.BroadcastChannel1"
#define WIRE_MEMBER "Message"
#define WIRE_PATH_PREFIX "/org/gnome/Mpport/BroadcastChannel1/"

#define MAX_PAYLOAD (8 * 1024 * 1024)

static const char *peer_path;

/* The dbus-daemon of the running case. GTestDBus's daemon inherits our stdout and stderr
 * and, with GLib 2.74, the pipe GTestDBus's watcher process waits on to clean up after us:
 * if this process dies of a failed assertion, the daemon lives on and the harness waits on
 * its copy of our output until its own timeout. So a fatal signal kills it first; the peers
 * exit by themselves when their stdin closes. */
static volatile pid_t case_daemon_pid;

static void
on_fatal_signal (int signum)
{
  if (case_daemon_pid > 0)
    kill (case_daemon_pid, SIGKILL);
  /* Die of the signal as we would have. */
  signal (signum, SIG_DFL);
  raise (signum);
}

static void
kill_daemon_on_fatal_signals (void)
{
  static const int signals[] = { SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTERM };
  struct sigaction action = { .sa_handler = on_fatal_signal };

  sigemptyset (&action.sa_mask);
  for (guint i = 0; i < G_N_ELEMENTS (signals); i++)
    g_assert_cmpint (sigaction (signals[i], &action, NULL), ==, 0);
}

static gint64
bus_timeout (void)
{
  return MAX (mp_test_wait_timeout (), BUS_TIMEOUT_SECONDS * G_TIME_SPAN_SECOND);
}

static gboolean
wait_tick (gpointer user_data)
{
  return G_SOURCE_CONTINUE;
}

/* Like WAIT_FOR(), bounded by bus_timeout(), and blocking in @ctx (which this thread owns)
 * between checks instead of spinning: the other processes get the CPU. */
#define WAIT_UNTIL(ctx, cond) \
  G_STMT_START { \
    gint64 wait_deadline_ = g_get_monotonic_time () + bus_timeout (); \
    GSource *wait_tick_ = g_timeout_source_new (10); \
    g_source_set_callback (wait_tick_, wait_tick, NULL, NULL); \
    g_source_attach (wait_tick_, (ctx)); \
    while (!(cond)) \
      { \
        if (g_get_monotonic_time () > wait_deadline_) \
          { \
            g_assertion_message (G_LOG_DOMAIN, __FILE__, __LINE__, G_STRFUNC, \
                                 "timed out waiting for: " #cond); \
            break; \
          } \
        g_main_context_iteration ((ctx), TRUE); \
      } \
    g_source_destroy (wait_tick_); \
    g_source_unref (wait_tick_); \
  } G_STMT_END

/* How long "nothing more arrives" is observed when other processes are involved. */
#define QUIET_BUS_MSEC 200

/* The interval of a peer's steady stream: one post a millisecond, or fewer when this process
 * runs under valgrind and could not keep up. A receiver that falls behind a stream for good
 * would see the replies of its own bus calls (AddMatch) wait behind the backlog. */
static guint
stream_interval_msec (void)
{
  return RUNNING_ON_VALGRIND ? 10 : 1;
}

/* ------------------------------------------------------------------ */
/* The fixture: a context and a bus per case                            */
/* ------------------------------------------------------------------ */

typedef struct
{
  GMainContext *context;
  GTestDBus *bus;
  /* A bus channel of mpport's session connection, open from set-up on: it makes that
   * connection exist, and its "closed" notification tells the tear-down that mpport has
   * seen the bus go, so that the next case's channels connect to the next bus. */
  MpBroadcastChannel *sentinel;
  guint sentinel_closed;
  /* Our own connection to the bus, never given to mpport: it asks the bus about the others. */
  GDBusConnection *control;
} Fixture;

static void
on_sentinel_closed (GObject    *object,
                    GParamSpec *pspec,
                    gpointer    user_data)
{
  Fixture *f = user_data;

  g_assert_true (g_main_context_is_owner (f->context));
  f->sentinel_closed++;
}

static GDBusConnection *
connection_new_to_bus (Fixture *f)
{
  GError *error = NULL;
  GDBusConnection *connection;

  connection = g_dbus_connection_new_for_address_sync (g_test_dbus_get_bus_address (f->bus),
                                                       G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                       G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                                       NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_false (g_dbus_connection_get_exit_on_close (connection));

  return connection;
}

static guint32
bus_daemon_pid (Fixture *f)
{
  g_autoptr(GVariant) reply = NULL;
  GError *error = NULL;
  guint32 pid = 0;

  reply = g_dbus_connection_call_sync (f->control, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                       "org.freedesktop.DBus", "GetConnectionUnixProcessID",
                                       g_variant_new ("(s)", "org.freedesktop.DBus"),
                                       G_VARIANT_TYPE ("(u)"), G_DBUS_CALL_FLAGS_NONE, -1, NULL,
                                       &error);
  g_assert_no_error (error);
  g_variant_get (reply, "(u)", &pid);
  g_assert_cmpuint (pid, >, 1);

  return pid;
}

static void
fixture_set_up (Fixture       *f,
                gconstpointer  data)
{
  GError *error = NULL;

  f->context = context_push_new ();
  f->bus = g_test_dbus_new (G_TEST_DBUS_NONE);
  g_test_dbus_up (f->bus);
  g_assert_cmpstr (g_getenv ("DBUS_SESSION_BUS_ADDRESS"), ==,
                   g_test_dbus_get_bus_address (f->bus));

  f->sentinel = mp_broadcast_channel_new_for_bus ("org.gnome.Mpport.Test.sentinel", NULL, NULL,
                                                  &error);
  g_assert_no_error (error);
  g_signal_connect (f->sentinel, "notify::closed", G_CALLBACK (on_sentinel_closed), f);

  f->control = connection_new_to_bus (f);
  case_daemon_pid = bus_daemon_pid (f);
}

static void
fixture_tear_down (Fixture       *f,
                   gconstpointer  data)
{
  g_dbus_connection_close_sync (f->control, NULL, NULL);
  g_clear_object (&f->control);

  g_test_dbus_down (f->bus);
  case_daemon_pid = 0;
  WAIT_UNTIL (f->context, f->sentinel_closed == 1);
  g_assert_true (mp_broadcast_channel_is_closed (f->sentinel));
  g_assert_finalize_object (f->sentinel);
  g_assert_finalize_object (f->bus);

  context_pop_free (f->context);
}

/* The unique bus name of mpport's session connection in this process. */
static const char *
session_unique_name (Fixture *f)
{
  return g_dbus_connection_get_unique_name (mp_broadcast_channel_get_connection (f->sentinel));
}

/* How many match rules the bus holds for the connection @unique_name (the bus's statistics
 * interface, which dbus-daemon offers to connections of its own user). */
static guint
bus_match_rules (Fixture    *f,
                 const char *unique_name)
{
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) stats = NULL;
  GError *error = NULL;
  guint32 rules = 0;

  reply = g_dbus_connection_call_sync (f->control, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                       "org.freedesktop.DBus.Debug.Stats", "GetConnectionStats",
                                       g_variant_new ("(s)", unique_name), G_VARIANT_TYPE ("(a{sv})"),
                                       G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
  g_assert_no_error (error);
  stats = g_variant_get_child_value (reply, 0);
  g_assert_true (g_variant_lookup (stats, "MatchRules", "u", &rules));

  return rules;
}

/* ------------------------------------------------------------------ */
/* Names                                                                */
/* ------------------------------------------------------------------ */

/* The object path a name's posts travel on (docs/wire.md), computed here independently. */
static char *
wire_path (const char *name)
{
  g_autoptr(GChecksum) checksum = g_checksum_new (G_CHECKSUM_SHA256);

  g_checksum_update (checksum, (const guchar *) name, strlen (name));
  return g_strconcat (WIRE_PATH_PREFIX, g_checksum_get_string (checksum), NULL);
}

/* ------------------------------------------------------------------ */
/* Peers: other processes on the bus                                    */
/* ------------------------------------------------------------------ */

typedef struct
{
  guint id;
  GMainContext *context;         /* the caller's, where its output is read */
  GSubprocess *process;
  GOutputStream *commands;       /* its stdin */
  GDataInputStream *answers;     /* its stdout */
  GCancellable *cancellable;
  GQueue lines;                  /* answers read and not taken yet */
  gboolean reading;              /* a read is in flight */
  gboolean eof;
  gboolean exited;
  char *unique_name;             /* of its bus connection, "-" if none */
} Peer;

static void
peer_on_line (GObject      *object,
              GAsyncResult *result,
              gpointer      user_data)
{
  Peer *peer = user_data;
  GError *error = NULL;
  char *line;

  line = g_data_input_stream_read_line_finish_utf8 (G_DATA_INPUT_STREAM (object), result, NULL,
                                                    &error);
  if (line != NULL)
    {
      g_queue_push_tail (&peer->lines, line);
      g_data_input_stream_read_line_async (peer->answers, G_PRIORITY_DEFAULT, peer->cancellable,
                                           peer_on_line, peer);
      return;
    }

  peer->reading = FALSE;
  if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    peer->eof = TRUE;
  g_clear_error (&error);
}

/* The next line the peer printed; fails the test if it ends its output first. */
static char *
peer_read_line (Peer *peer)
{
  WAIT_UNTIL (peer->context, peer->lines.length > 0 || peer->eof);
  if (peer->lines.length == 0)
    g_error ("peer %u ended its output (exited or crashed)", peer->id);

  return g_queue_pop_head (&peer->lines);
}

static void
peer_send (Peer       *peer,
           const char *format,
           ...) G_GNUC_PRINTF (2, 3);

static void
peer_send (Peer       *peer,
           const char *format,
           ...)
{
  g_autofree char *command = NULL;
  g_autofree char *line = NULL;
  GError *error = NULL;
  va_list args;

  va_start (args, format);
  command = g_strdup_vprintf (format, args);
  va_end (args);
  line = g_strconcat (command, "\n", NULL);

  g_output_stream_write_all (peer->commands, line, strlen (line), NULL, NULL, &error);
  g_assert_no_error (error);
}

static void
peer_expect (Peer       *peer,
             const char *expected)
{
  g_autofree char *line = peer_read_line (peer);

  g_assert_cmpstr (line, ==, expected);
}

static int
strcmp_indirect (gconstpointer a,
                 gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* Reads @n_expected lines, in any order, and checks they are @expected. */
static void
peer_expect_unordered (Peer              *peer,
                       const char *const *expected,
                       guint              n_expected)
{
  g_autoptr(GPtrArray) got = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GPtrArray) want = g_ptr_array_new ();
  g_autofree char *got_text = NULL;
  g_autofree char *want_text = NULL;

  for (guint i = 0; i < n_expected; i++)
    {
      g_ptr_array_add (got, peer_read_line (peer));
      g_ptr_array_add (want, (gpointer) expected[i]);
    }
  g_ptr_array_sort (got, strcmp_indirect);
  g_ptr_array_sort (want, strcmp_indirect);
  g_ptr_array_add (got, NULL);
  g_ptr_array_add (want, NULL);

  got_text = g_strjoinv ("\n", (char **) got->pdata);
  want_text = g_strjoinv ("\n", (char **) want->pdata);
  g_assert_cmpstr (got_text, ==, want_text);
}

/* Spawns a peer with the channels of @specs (NULL-terminated) and waits until it is ready:
 * its bus channels are subscribed. */
static Peer *
peer_spawn (guint              id,
            const char *const *specs)
{
  g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *ready = NULL;
  Peer *peer = g_new0 (Peer, 1);
  GError *error = NULL;

  g_ptr_array_add (argv, g_strdup (peer_path));
  g_ptr_array_add (argv, g_strdup_printf ("%u", id));
  for (guint i = 0; specs[i] != NULL; i++)
    g_ptr_array_add (argv, g_strdup (specs[i]));
  g_ptr_array_add (argv, NULL);

  peer->id = id;
  peer->context = g_main_context_ref_thread_default ();
  g_queue_init (&peer->lines);
  /* The environment is inherited: DBUS_SESSION_BUS_ADDRESS names this case's bus. */
  peer->process = g_subprocess_newv ((const char *const *) argv->pdata,
                                     G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE,
                                     &error);
  g_assert_no_error (error);
  peer->commands = g_object_ref (g_subprocess_get_stdin_pipe (peer->process));
  peer->answers = g_data_input_stream_new (g_subprocess_get_stdout_pipe (peer->process));
  peer->cancellable = g_cancellable_new ();
  peer->reading = TRUE;
  g_data_input_stream_read_line_async (peer->answers, G_PRIORITY_DEFAULT, peer->cancellable,
                                       peer_on_line, peer);

  ready = peer_read_line (peer);
  g_assert_true (g_str_has_prefix (ready, "ready "));
  peer->unique_name = g_strdup (ready + strlen ("ready "));

  return peer;
}

/* Spawns a peer with one bus channel of @name. */
static Peer *
peer_spawn_bus (guint       id,
                const char *name)
{
  g_autofree char *spec = bus_peer_spec_new ("bus", name);
  const char *specs[] = { spec, NULL };

  return peer_spawn (id, specs);
}

static void
peer_on_exited (GObject      *object,
                GAsyncResult *result,
                gpointer      user_data)
{
  Peer *peer = user_data;
  GError *error = NULL;

  g_subprocess_wait_finish (G_SUBPROCESS (object), result, &error);
  g_assert_no_error (error);
  peer->exited = TRUE;
}

static void
peer_wait_exit (Peer *peer)
{
  g_subprocess_wait_async (peer->process, NULL, peer_on_exited, peer);
  WAIT_UNTIL (peer->context, peer->exited);
}

static void
peer_free (Peer *peer)
{
  if (!peer->exited)
    {
      g_subprocess_force_exit (peer->process);
      peer_wait_exit (peer);
    }
  g_cancellable_cancel (peer->cancellable);
  WAIT_UNTIL (peer->context, !peer->reading);

  g_queue_clear_full (&peer->lines, g_free);
  g_object_unref (peer->cancellable);
  g_object_unref (peer->answers);
  g_object_unref (peer->commands);
  g_object_unref (peer->process);
  g_main_context_unref (peer->context);
  g_free (peer->unique_name);
  g_free (peer);
}

/* Asks the peer to quit, and checks that it did, with status 0 and nothing left unread. */
static void
peer_quit (Peer *peer)
{
  peer_send (peer, "quit");
  g_output_stream_close (peer->commands, NULL, NULL);
  WAIT_UNTIL (peer->context, peer->eof);
  g_assert_cmpuint (peer->lines.length, ==, 0);
  peer_wait_exit (peer);
  g_assert_true (g_subprocess_get_if_exited (peer->process));
  g_assert_cmpint (g_subprocess_get_exit_status (peer->process), ==, 0);
  peer_free (peer);
}

/* SIGKILL, and the wait for it to take effect. */
static void
peer_kill (Peer *peer)
{
  g_subprocess_force_exit (peer->process);
  peer_wait_exit (peer);
  g_assert_true (g_subprocess_get_if_signaled (peer->process));
  g_assert_cmpint (g_subprocess_get_term_sig (peer->process), ==, SIGKILL);
}

/* The peer's report: its lines, each ending in "\n", without the final "end". */
static char *
peer_report (Peer *peer)
{
  GString *report = g_string_new (NULL);

  peer_send (peer, "report");
  for (;;)
    {
      g_autofree char *line = peer_read_line (peer);

      if (strcmp (line, "end") == 0)
        break;
      g_string_append_printf (report, "%s\n", line);
    }

  return g_string_free (report, FALSE);
}

/* Blocks until the peer's channel @rx got @count messages from channel @channel of process
 * @proc. */
static void
peer_wait_for (Peer  *peer,
               guint  rx,
               guint  proc,
               guint  channel,
               guint  count)
{
  peer_send (peer, "wait %u %u %u %u", rx, proc, channel, count);
  peer_expect (peer, "reached");
}

/* The COUNT, BAD and SENDER of the "got RX P C" line of @report, FALSE if it has none. */
static gboolean
report_find_got (const char  *report,
                 guint        rx,
                 guint        proc,
                 guint        channel,
                 guint       *count,
                 guint       *bad,
                 char       **sender)
{
  g_auto(GStrv) lines = g_strsplit (report, "\n", -1);
  g_autofree char *prefix = g_strdup_printf ("got %u %u %u ", rx, proc, channel);

  for (guint i = 0; lines[i] != NULL; i++)
    if (g_str_has_prefix (lines[i], prefix))
      {
        g_auto(GStrv) fields = g_strsplit (lines[i] + strlen (prefix), " ", -1);

        g_assert_cmpuint (g_strv_length (fields), ==, 3);
        *count = atoi (fields[0]);
        *bad = atoi (fields[1]);
        *sender = g_strdup (fields[2]);
        return TRUE;
      }

  return FALSE;
}

static guint
report_n_lines (const char *report)
{
  guint n = 0;

  for (const char *p = report; *p != '\0'; p++)
    if (*p == '\n')
      n++;

  return n;
}

static void
expect_got (GString    *expected,
            guint       rx,
            guint       proc,
            guint       channel,
            guint       count,
            const char *sender)
{
  g_string_append_printf (expected, "got %u %u %u %u 0 %s\n", rx, proc, channel, count,
                          sender != NULL ? sender : "-");
}

/* ------------------------------------------------------------------ */
/* Probes: what this process's channels receive                         */
/* ------------------------------------------------------------------ */

typedef struct
{
  guint index;                 /* RX in reports */
  MpBroadcastChannel *channel;
  GMainContext *context;       /* the channel's: every emission happens there */
  BusReceipts receipts;        /* kept as the peer keeps its own */
  GString *log;                /* every emission in order, if not NULL */
} Probe;

static BusSource *
probe_source (Probe *probe,
              guint  proc,
              guint  channel)
{
  return bus_receipts_source (&probe->receipts, proc, channel);
}

static guint
probe_count (Probe *probe,
             guint  proc,
             guint  channel)
{
  return probe_source (probe, proc, channel)->count;
}

/* Waits (bounded) until @probe got @count messages from channel @channel of process @proc;
 * the failure says how many came. */
static void
probe_wait_count (Probe *probe,
                  guint  proc,
                  guint  channel,
                  guint  count)
{
  gint64 deadline = g_get_monotonic_time () + bus_timeout ();

  while (probe_count (probe, proc, channel) < count)
    {
      if (g_get_monotonic_time () > deadline)
        g_error ("channel %u got %u messages of %u from channel %u of process %u",
                 probe->index, probe_count (probe, proc, channel), count, channel, proc);
      WAIT_UNTIL (probe->context, probe_count (probe, proc, channel) >= count ||
                  g_get_monotonic_time () > deadline);
    }
}

static void
probe_check_emission (Probe              *probe,
                      MpBroadcastChannel *channel)
{
  g_assert_true (channel == probe->channel);
  g_assert_true (g_main_context_is_owner (probe->context));
}

static void
probe_on_message (MpBroadcastChannel *channel,
                  MpMessage          *message,
                  gpointer            user_data)
{
  Probe *probe = user_data;
  GVariant *data = mp_message_get_data (message);

  probe_check_emission (probe, channel);
  g_assert_false (mp_broadcast_channel_is_closed (channel));
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);

  if (probe->log != NULL)
    {
      g_autofree char *printed = data != NULL ? g_variant_print (data, TRUE) : g_strdup ("NULL");

      g_string_append_printf (probe->log, "%s|", printed);
    }

  bus_receipts_add_message (&probe->receipts, message);
}

static void
probe_on_message_error (MpBroadcastChannel *channel,
                        GError             *error,
                        gpointer            user_data)
{
  Probe *probe = user_data;

  probe_check_emission (probe, channel);
  g_assert_nonnull (error);
  g_assert_nonnull (error->message);
  g_assert_cmpstr (error->message, !=, "");
  if (probe->log != NULL)
    g_string_append (probe->log, "error|");
  bus_receipts_add_error (&probe->receipts, error);
}

static void
probe_on_notify_closed (GObject    *object,
                        GParamSpec *pspec,
                        gpointer    user_data)
{
  Probe *probe = user_data;

  probe_check_emission (probe, MP_BROADCAST_CHANNEL (object));
  g_assert_true (mp_broadcast_channel_is_closed (probe->channel));
  if (probe->log != NULL)
    g_string_append (probe->log, "closed|");
  probe->receipts.closed++;
}

/* Watches @channel (borrowed) as channel @index of this process, on the calling thread's
 * context, where its signals must be emitted. */
static void
probe_init (Probe              *probe,
            guint               index,
            MpBroadcastChannel *channel)
{
  *probe = (Probe) {
    .index = index,
    .channel = channel,
    .context = g_main_context_ref_thread_default (),
  };
  bus_receipts_init (&probe->receipts);

  g_assert_true (mp_broadcast_channel_get_context (channel) == probe->context);
  g_signal_connect (channel, "message", G_CALLBACK (probe_on_message), probe);
  g_signal_connect (channel, "message-error", G_CALLBACK (probe_on_message_error), probe);
  g_signal_connect (channel, "notify::closed", G_CALLBACK (probe_on_notify_closed), probe);
}

static void
probe_clear (Probe *probe)
{
  g_signal_handlers_disconnect_by_data (probe->channel, probe);
  bus_receipts_clear (&probe->receipts);
  if (probe->log != NULL)
    g_string_free (probe->log, TRUE);
  g_main_context_unref (probe->context);
}

/* The report of @probes, in bus-peer's format. */
static char *
probes_report (Probe *const *probes,
               guint         n_probes)
{
  GString *report = g_string_new (NULL);

  for (guint i = 0; i < n_probes; i++)
    bus_receipts_append_report (&probes[i]->receipts, probes[i]->index, report);

  return g_string_free (report, FALSE);
}

static void
assert_probes_report (Probe *const *probes,
                      guint         n_probes,
                      const char   *expected)
{
  g_autofree char *report = probes_report (probes, n_probes);

  g_assert_cmpstr (report, ==, expected);
}

static MpBroadcastChannel *
bus_channel_new (const char      *name,
                 GDBusConnection *connection)
{
  GError *error = NULL;
  MpBroadcastChannel *channel;

  channel = mp_broadcast_channel_new_for_bus (name, connection, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (MP_IS_BROADCAST_CHANNEL (channel));
  g_assert_cmpstr (mp_broadcast_channel_get_name (channel), ==, name);
  g_assert_false (mp_broadcast_channel_is_closed (channel));
  g_assert_nonnull (mp_broadcast_channel_get_connection (channel));
  if (connection != NULL)
    g_assert_true (mp_broadcast_channel_get_connection (channel) == connection);

  return channel;
}

/* Posts (TEST_PROC, @channel_index, @seq); it must succeed. */
static void
post_triple (MpBroadcastChannel *channel,
             guint               channel_index,
             guint               seq)
{
  GError *error = NULL;
  gboolean ok;

  ok = mp_broadcast_channel_post_message (channel,
                                          bus_payload_new (TEST_PROC, channel_index, seq),
                                          &error);
  g_assert_no_error (error);
  g_assert_true (ok);
}

static void
post_expect_error (MpBroadcastChannel *channel,
                   GVariant           *data,
                   GQuark              domain,
                   int                 code)
{
  GError *error = NULL;

  g_assert_false (mp_broadcast_channel_post_message (channel, data, &error));
  g_assert_error (error, domain, code);
  g_clear_error (&error);
}

/* Closes @channel and, once the deliveries that still name it have run, checks the
 * caller's reference was the last. */
static void
close_and_finalize (GMainContext       *context,
                    MpBroadcastChannel *channel)
{
  mp_broadcast_channel_close (channel);
  g_assert_true (mp_broadcast_channel_is_closed (channel));
  assert_finalized_eventually (context, channel);
}

/* ------------------------------------------------------------------ */
/* Fan-out between processes                                            */
/* ------------------------------------------------------------------ */

#define FANOUT_PROCS 3
#define FANOUT_BUS_POSTS 5000     /* from each of the two bus channels: 10 000 a process */
#define FANOUT_PLAIN_POSTS 100
#define FANOUT_OTHER_POSTS 1000   /* on the second name */

/* What peer @p of the fan-out must have got; channels 0 and 1 are bus channels of one name,
 * 2 a plain channel of that name, 3 a bus channel of another name. */
static char *
fan_out_expected (Peer *const *peers,
                  guint        p)
{
  GString *expected = g_string_new (NULL);

  for (guint rx = 0; rx < 4; rx++)
    for (guint q = 0; q < FANOUT_PROCS; q++)
      {
        const char *sender = peers[q]->unique_name;

        if (q == p)
          {
            /* Local: every other channel of the name, plain ones too, sender NULL. */
            if (rx <= 2)
              for (guint c = 0; c <= 2; c++)
                if (c != rx)
                  expect_got (expected, rx, q, c,
                              c == 2 ? FANOUT_PLAIN_POSTS : FANOUT_BUS_POSTS, NULL);
          }
        else if (rx <= 1)
          {
            /* Remote: the bus channels of the name, never a plain one. */
            expect_got (expected, rx, q, 0, FANOUT_BUS_POSTS, sender);
            expect_got (expected, rx, q, 1, FANOUT_BUS_POSTS, sender);
          }
        else if (rx == 3)
          expect_got (expected, rx, q, 3, FANOUT_OTHER_POSTS, sender);
      }

  return g_string_free (expected, FALSE);
}

/* Three processes, each with two bus channels of one name, a plain channel of it and a bus
 * channel of another name, all posting at once: each bus post reaches the five other bus
 * channels of its name and the plain one of its process exactly once, the sender never, a
 * plain channel of another process never, the other name never; each sender's posts in
 * order; mp_message_get_sender() NULL for local posts and the sender's unique name for the
 * others. */
static void
test_fan_out_three_processes (Fixture       *f,
                              gconstpointer  data)
{
  const char *name = "org.gnome.Mpport.Test.fan-out";
  const char *other_name = "org.gnome.Mpport.Test.fan-out.other";
  g_autofree char *bus_spec = bus_peer_spec_new ("bus", name);
  g_autofree char *plain_spec = bus_peer_spec_new ("plain", name);
  g_autofree char *other_spec = bus_peer_spec_new ("bus", other_name);
  const char *specs[] = { bus_spec, bus_spec, plain_spec, other_spec, NULL };
  g_autofree char *posted_0 = g_strdup_printf ("posted 0 %u", FANOUT_BUS_POSTS);
  g_autofree char *posted_1 = g_strdup_printf ("posted 1 %u", FANOUT_BUS_POSTS);
  g_autofree char *posted_2 = g_strdup_printf ("posted 2 %u", FANOUT_PLAIN_POSTS);
  g_autofree char *posted_3 = g_strdup_printf ("posted 3 %u", FANOUT_OTHER_POSTS);
  const char *posted[] = { posted_0, posted_1, posted_2, posted_3 };
  Peer *peers[FANOUT_PROCS];

  for (guint p = 0; p < FANOUT_PROCS; p++)
    {
      peers[p] = peer_spawn (p, specs);
      g_assert_true (g_dbus_is_unique_name (peers[p]->unique_name));
    }

  /* Everyone posts at once; each peer receives while it posts. */
  for (guint p = 0; p < FANOUT_PROCS; p++)
    {
      peer_send (peers[p], "post 0 %u", FANOUT_BUS_POSTS);
      peer_send (peers[p], "post 1 %u", FANOUT_BUS_POSTS);
      peer_send (peers[p], "post 2 %u", FANOUT_PLAIN_POSTS);
      peer_send (peers[p], "post 3 %u", FANOUT_OTHER_POSTS);
    }
  for (guint p = 0; p < FANOUT_PROCS; p++)
    peer_expect_unordered (peers[p], posted, G_N_ELEMENTS (posted));

  /* Wait for the last post of each sender at each receiver, then give strays a chance. */
  for (guint p = 0; p < FANOUT_PROCS; p++)
    for (guint q = 0; q < FANOUT_PROCS; q++)
      {
        if (q == p)
          continue;
        peer_wait_for (peers[p], 0, q, 1, FANOUT_BUS_POSTS);
        peer_wait_for (peers[p], 1, q, 0, FANOUT_BUS_POSTS);
        peer_wait_for (peers[p], 3, q, 3, FANOUT_OTHER_POSTS);
      }
  spin_context (f->context, QUIET_BUS_MSEC);

  for (guint p = 0; p < FANOUT_PROCS; p++)
    {
      g_autofree char *expected = fan_out_expected (peers, p);
      g_autofree char *report = peer_report (peers[p]);

      g_test_message ("peer %u (%s) got:\n%s", p, peers[p]->unique_name, report);
      g_assert_cmpstr (report, ==, expected);
    }

  for (guint p = 0; p < FANOUT_PROCS; p++)
    peer_quit (peers[p]);
}

/* Two bus channels of one name in one process on two connections (mpport's session
 * connection and one of the application's): each gets the other's posts once, locally, not
 * a second time as the bus's echo; a post from another process reaches each once. */
static void
test_fan_out_own_connections_once (Fixture       *f,
                                   gconstpointer  data)
{
  const char *name = "org.gnome.Mpport.Test.echo";
  g_autoptr(GDBusConnection) connection = connection_new_to_bus (f);
  MpBroadcastChannel *a = bus_channel_new (name, NULL);
  MpBroadcastChannel *b = bus_channel_new (name, connection);
  MpBroadcastChannel *p = mp_broadcast_channel_new (name);
  const char *session = g_dbus_connection_get_unique_name (mp_broadcast_channel_get_connection (a));
  const char *own = g_dbus_connection_get_unique_name (connection);
  g_autoptr(GString) expected = g_string_new (NULL);
  g_autoptr(GString) expected_peer = g_string_new (NULL);
  g_autofree char *report = NULL;
  Probe probe_a, probe_b, probe_p;
  Probe *probes[] = { &probe_a, &probe_b, &probe_p };
  Peer *peer = peer_spawn_bus (0, name);

  g_assert_cmpstr (session, ==, session_unique_name (f));
  g_assert_cmpstr (session, !=, own);
  probe_init (&probe_a, 0, a);
  probe_init (&probe_b, 1, b);
  probe_init (&probe_p, 2, p);

  post_triple (a, 0, 0);
  post_triple (b, 1, 0);
  peer_send (peer, "post 0 1");
  peer_expect (peer, "posted 0 1");

  WAIT_UNTIL (f->context, probe_count (&probe_a, 0, 0) == 1 && probe_count (&probe_b, 0, 0) == 1);
  peer_wait_for (peer, 0, TEST_PROC, 0, 1);
  peer_wait_for (peer, 0, TEST_PROC, 1, 1);
  spin_context (f->context, QUIET_BUS_MSEC);

  expect_got (expected, 0, 0, 0, 1, peer->unique_name);
  expect_got (expected, 0, TEST_PROC, 1, 1, NULL);
  expect_got (expected, 1, 0, 0, 1, peer->unique_name);
  expect_got (expected, 1, TEST_PROC, 0, 1, NULL);
  expect_got (expected, 2, TEST_PROC, 0, 1, NULL);
  expect_got (expected, 2, TEST_PROC, 1, 1, NULL);
  assert_probes_report (probes, G_N_ELEMENTS (probes), expected->str);

  expect_got (expected_peer, 0, TEST_PROC, 0, 1, session);
  expect_got (expected_peer, 0, TEST_PROC, 1, 1, own);
  report = peer_report (peer);
  g_assert_cmpstr (report, ==, expected_peer->str);
  peer_quit (peer);

  for (guint i = 0; i < G_N_ELEMENTS (probes); i++)
    {
      probe_clear (probes[i]);
      close_and_finalize (f->context, probes[i]->channel);
    }
}

/* ------------------------------------------------------------------ */
/* Names                                                                */
/* ------------------------------------------------------------------ */

#define NAMES_POSTS 10

/* Names with what could break an object path or a match rule, names that are prefixes of one
 * another, an empty one and long ones: every name gets its own posts, and only those. */
static void
test_names_unusual (Fixture       *f,
                    gconstpointer  data)
{
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GPtrArray) specs = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GPtrArray) channels = g_ptr_array_new ();
  g_autoptr(GString) expected = g_string_new (NULL);
  g_autoptr(GString) expected_peer = g_string_new (NULL);
  g_autoptr(GString) long_name = g_string_new (NULL);
  g_autofree char *report = NULL;
  const char *session = session_unique_name (f);
  Probe *probes;
  Probe **probe_ptrs;
  Peer *peer;

  g_ptr_array_add (names, g_strdup ("it's"));
  g_ptr_array_add (names, g_strdup ("',path='/org/freedesktop/DBus"));   /* a rule injection */
  g_ptr_array_add (names, g_strdup ("a/b/../c"));
  g_ptr_array_add (names, g_strdup ("/"));
  g_ptr_array_add (names, g_strdup ("\\ back\\slash \"quoted\"\nand a new line"));
  g_ptr_array_add (names, g_strdup ("héllo wörld ✓ 日本語 🎉"));
  g_ptr_array_add (names, g_strdup (""));
  g_ptr_array_add (names, g_strdup ("pre"));
  g_ptr_array_add (names, g_strdup ("prefix"));
  g_ptr_array_add (names, g_strdup ("prefix/child"));
  /* 10 000 bytes of UTF-8 with quotes and slashes in it, and the same with one more byte. */
  while (long_name->len < 10000)
    g_string_append (long_name, "ä/'");
  g_assert_cmpuint (long_name->len, ==, 10000);
  g_assert_true (g_utf8_validate (long_name->str, -1, NULL));
  g_ptr_array_add (names, g_strdup (long_name->str));
  g_ptr_array_add (names, g_strconcat (long_name->str, "!", NULL));

  probes = g_new0 (Probe, names->len);
  probe_ptrs = g_new0 (Probe *, names->len);
  for (guint i = 0; i < names->len; i++)
    {
      const char *name = g_ptr_array_index (names, i);
      MpBroadcastChannel *channel = bus_channel_new (name, NULL);

      g_ptr_array_add (channels, channel);
      probe_init (&probes[i], i, channel);
      probe_ptrs[i] = &probes[i];
      g_ptr_array_add (specs, bus_peer_spec_new ("bus", name));
    }
  g_ptr_array_add (specs, NULL);
  peer = peer_spawn (0, (const char *const *) specs->pdata);

  for (guint i = 0; i < names->len; i++)
    {
      g_autofree char *posted = g_strdup_printf ("posted %u %u", i, NAMES_POSTS);

      peer_send (peer, "post %u %u", i, NAMES_POSTS);
      peer_expect (peer, posted);
      for (guint seq = 0; seq < NAMES_POSTS; seq++)
        post_triple (g_ptr_array_index (channels, i), i, seq);
    }

  for (guint i = 0; i < names->len; i++)
    {
      WAIT_UNTIL (f->context, probe_count (&probes[i], 0, i) == NAMES_POSTS);
      peer_wait_for (peer, i, TEST_PROC, i, NAMES_POSTS);
      expect_got (expected, i, 0, i, NAMES_POSTS, peer->unique_name);
      expect_got (expected_peer, i, TEST_PROC, i, NAMES_POSTS, session);
    }
  spin_context (f->context, QUIET_BUS_MSEC);

  assert_probes_report (probe_ptrs, names->len, expected->str);
  report = peer_report (peer);
  g_assert_cmpstr (report, ==, expected_peer->str);
  peer_quit (peer);

  for (guint i = 0; i < names->len; i++)
    {
      probe_clear (&probes[i]);
      close_and_finalize (f->context, g_ptr_array_index (channels, i));
    }
  g_free (probe_ptrs);
  g_free (probes);
}

/* One match rule per name and connection, however many channels of the name; none for a
 * plain channel; gone with the name's last channel. */
static void
test_names_one_rule_per_name (Fixture       *f,
                              gconstpointer  data)
{
  const char *session = session_unique_name (f);
  guint base = bus_match_rules (f, session);
  MpBroadcastChannel *a, *b, *c, *plain;

  a = bus_channel_new ("org.gnome.Mpport.Test.rules", NULL);
  g_assert_cmpuint (bus_match_rules (f, session), ==, base + 1);
  b = bus_channel_new ("org.gnome.Mpport.Test.rules", NULL);
  g_assert_cmpuint (bus_match_rules (f, session), ==, base + 1);
  c = bus_channel_new ("org.gnome.Mpport.Test.rules.longer", NULL);
  g_assert_cmpuint (bus_match_rules (f, session), ==, base + 2);
  plain = mp_broadcast_channel_new ("org.gnome.Mpport.Test.rules.plain");
  g_assert_cmpuint (bus_match_rules (f, session), ==, base + 2);

  close_and_finalize (f->context, a);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (bus_match_rules (f, session), ==, base + 2);
  close_and_finalize (f->context, b);
  WAIT_UNTIL (f->context, bus_match_rules (f, session) == base + 1);
  close_and_finalize (f->context, c);
  WAIT_UNTIL (f->context, bus_match_rules (f, session) == base);
  close_and_finalize (f->context, plain);
}

/* ------------------------------------------------------------------ */
/* Untrusted input: signals forged by a connection of our own           */
/* ------------------------------------------------------------------ */

/* A "(say)" item of @n bytes. */
static GVariant *
item_new (const char *type_string,
          const void *bytes,
          gsize       n)
{
  return g_variant_new ("(s@ay)", type_string,
                        g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, bytes, n, 1));
}

/* A "(sa(say))" body for @name of the NULL-terminated @items (floating, consumed). */
static GVariant *
body_new (const char *name,
          ...)
{
  GVariantBuilder items;
  GVariant *item;
  va_list args;

  g_variant_builder_init (&items, G_VARIANT_TYPE ("a(say)"));
  va_start (args, name);
  while ((item = va_arg (args, GVariant *)) != NULL)
    g_variant_builder_add_value (&items, item);
  va_end (args);

  return g_variant_new ("(s@a(say))", name, g_variant_builder_end (&items));
}

static void
emit (GDBusConnection *connection,
      const char      *path,
      GVariant        *body)
{
  GError *error = NULL;

  g_dbus_connection_emit_signal (connection, NULL, path, WIRE_INTERFACE, WIRE_MEMBER, body,
                                 &error);
  g_assert_no_error (error);
}

/* Bodies forged by hand per docs/wire.md (little-endian GVariant normal form) from a plain
 * GDBusConnection of this process, which is not mpport's, so that its signals are not taken
 * for our own echo: each malformed post gives one "message-error" with a GError, on every
 * bus channel of the name, in order with the valid posts around it, which all arrive; a
 * plain channel sees nothing; no crash. A peer process sees the same. */
static void
test_message_error_injected (Fixture       *f,
                             gconstpointer  data)
{
  const char *name = "org.gnome.Mpport.Test.injected";
  g_autofree char *path = wire_path (name);
  g_autofree char *other_path = wire_path ("org.gnome.Mpport.Test.injected.nobody");
  g_autoptr(GDBusConnection) raw = connection_new_to_bus (f);
  const char *raw_name = g_dbus_connection_get_unique_name (raw);
  MpBroadcastChannel *b0 = bus_channel_new (name, NULL);
  MpBroadcastChannel *b1 = bus_channel_new (name, NULL);
  MpBroadcastChannel *p = mp_broadcast_channel_new (name);
  Probe probe_b0, probe_b1, probe_p;
  Probe *probes[] = { &probe_b0, &probe_b1, &probe_p };
  Peer *peer = peer_spawn_bus (0, name);
  g_autoptr(GString) expected = g_string_new (NULL);
  g_autoptr(GString) expected_log = g_string_new (NULL);
  g_autofree char *expected_peer = NULL;
  g_autofree char *report = NULL;
  g_autofree char *long_type = NULL;
  g_autofree guint8 *long_bytes = g_malloc0 (300);
  guint n_errors = 0;
  static const guint8 u1[] = { 1, 0, 0, 0 };
  static const guint8 u2[] = { 2, 0, 0, 0 };
  static const guint8 u3[] = { 3, 0, 0, 0 };
  static const guint8 u_short[] = { 1, 0 };
  /* ("hi", 7): "hi\0", a byte of padding, 7, then the end of the string as a framing offset */
  static const guint8 su[] = { 'h', 'i', 0, 0, 7, 0, 0, 0, 3 };
  /* ["a", "bc"]: the strings, then the end of each as a framing offset */
  static const guint8 as[] = { 'a', 0, 'b', 'c', 0, 2, 5 };
  static const guint8 uuu[] = { 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
  static const guint8 bool_two[] = { 2 };
  static const guint8 no_nul[] = { 'a', 'b' };
  static const guint8 handle[] = { 0, 0, 0, 0 };
  static const guint8 hello[] = { 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x00 };
  static const guint8 boxed_handle[] = { 0x03, 0x00, 0x00, 0x00, 0x00, 0x68 };

  g_assert_cmpstr (raw_name, !=, session_unique_name (f));
  probe_init (&probe_b0, 0, b0);
  probe_init (&probe_b1, 1, b1);
  probe_init (&probe_p, 2, p);
  for (guint i = 0; i < G_N_ELEMENTS (probes); i++)
    probes[i]->log = g_string_new (NULL);

#define GOOD(printed) g_string_append (expected_log, printed "|")
#define BAD() (g_string_append (expected_log, "error|"), n_errors++)

  emit (raw, path, body_new (name, item_new ("u", u1, sizeof u1), NULL));
  GOOD ("uint32 1");
  /* The wrong signature: a body that is not (sa(say)), and no body at all. */
  emit (raw, path, g_variant_new ("(s)", name));
  BAD ();
  emit (raw, path, NULL);
  BAD ();
  /* A body for another name on this name's path. */
  emit (raw, path, body_new ("org.gnome.Mpport.Test.injected.other", item_new ("u", u1, sizeof u1),
                             NULL));
  BAD ();
  /* Invalid type strings. */
  emit (raw, path, body_new (name, item_new ("(u", u1, sizeof u1), NULL));
  BAD ();
  emit (raw, path, body_new (name, item_new ("z", u1, sizeof u1), NULL));
  BAD ();
  /* Indefinite type strings. */
  emit (raw, path, body_new (name, item_new ("a*", NULL, 0), NULL));
  BAD ();
  emit (raw, path, body_new (name, item_new ("r", NULL, 0), NULL));
  BAD ();
  /* Bytes that are not in normal form. */
  emit (raw, path, body_new (name, item_new ("b", bool_two, sizeof bool_two), NULL));
  BAD ();
  emit (raw, path, body_new (name, item_new ("s", no_nul, sizeof no_nul), NULL));
  BAD ();
  /* Truncated data. */
  emit (raw, path, body_new (name, item_new ("u", u_short, sizeof u_short), NULL));
  BAD ();
  emit (raw, path, body_new (name, item_new ("(su)", su, sizeof su - 4), NULL));
  BAD ();
  /* Data without a type, a handle, a type string over the limit. */
  emit (raw, path, body_new (name, item_new ("", u1, 1), NULL));
  BAD ();
  emit (raw, path, body_new (name, item_new ("h", handle, sizeof handle), NULL));
  BAD ();
  long_type = g_strnfill (302, 'y');
  long_type[0] = '(';
  long_type[301] = ')';
  emit (raw, path, body_new (name, item_new (long_type, long_bytes, 300), NULL));
  BAD ();
  /* Several posts in one body: the bad one in the middle does not take the others along. */
  emit (raw, path, body_new (name, item_new ("u", u2, sizeof u2), item_new ("(u", NULL, 0),
                             item_new ("(su)", su, sizeof su), NULL));
  GOOD ("uint32 2");
  BAD ();
  GOOD ("('hi', uint32 7)");
  /* Signals on a path nobody subscribed to, even with this name inside: nothing. */
  emit (raw, other_path, body_new (name, item_new ("u", u1, sizeof u1), NULL));
  emit (raw, other_path, g_variant_new ("(s)", name));
  /* A NULL post, an array of strings, a body without posts (nothing). */
  emit (raw, path, body_new (name, item_new ("", NULL, 0), NULL));
  GOOD ("NULL");
  emit (raw, path, body_new (name, item_new ("as", as, sizeof as), NULL));
  GOOD ("['a', 'bc']");
  /* Three of the examples of docs/wire.md, in one body. */
  emit (raw, path, body_new (name, item_new ("s", hello, sizeof hello),
                             item_new ("mi", NULL, 0),
                             item_new ("v", boxed_handle, sizeof boxed_handle), NULL));
  GOOD ("'hello'");
  GOOD ("@mi nothing");
  GOOD ("<handle 3>");
  emit (raw, path, body_new (name, NULL));
  emit (raw, path, body_new (name, item_new ("u", u3, sizeof u3), NULL));
  GOOD ("uint32 3");
  /* The last one in the peer's own payload type, so that it can tell us it got here. */
  emit (raw, path, body_new (name, item_new (BUS_PAYLOAD_TYPE, uuu, sizeof uuu), NULL));
  GOOD ("(uint32 7, uint32 0, uint32 0)");

#undef GOOD
#undef BAD

  WAIT_UNTIL (f->context, probe_count (&probe_b0, 7, 0) == 1 && probe_count (&probe_b1, 7, 0) == 1);
  peer_wait_for (peer, 0, 7, 0, 1);
  spin_context (f->context, QUIET_BUS_MSEC);

  g_assert_cmpstr (probe_b0.log->str, ==, expected_log->str);
  g_assert_cmpstr (probe_b1.log->str, ==, expected_log->str);
  g_assert_cmpstr (probe_p.log->str, ==, "");
  for (guint i = 0; i < 2; i++)
    for (guint j = 0; j < probes[i]->receipts.errors->len; j++)
      {
        GError *error = g_ptr_array_index (probes[i]->receipts.errors, j);

        g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
        if (i == 0)
          g_test_message ("message-error %u: %s", j, error->message);
      }

  /* Every valid post came from the raw connection: its signals were not taken for ours. */
  expect_got (expected, 0, 7, 0, 1, raw_name);
  g_string_append_printf (expected, "other 0 9 40 %s\n", raw_name);
  g_string_append_printf (expected, "errors 0 %u\n", n_errors);
  expect_got (expected, 1, 7, 0, 1, raw_name);
  g_string_append_printf (expected, "other 1 9 40 %s\n", raw_name);
  g_string_append_printf (expected, "errors 1 %u\n", n_errors);
  assert_probes_report (probes, G_N_ELEMENTS (probes), expected->str);

  expected_peer = g_strdup_printf ("got 0 7 0 1 0 %s\nother 0 9 40 %s\nerrors 0 %u\n",
                                   raw_name, raw_name, n_errors);
  report = peer_report (peer);
  g_assert_cmpstr (report, ==, expected_peer);

  /* Still working, both ways. */
  post_triple (b0, 0, 0);
  peer_wait_for (peer, 0, TEST_PROC, 0, 1);
  peer_send (peer, "post 0 1");
  peer_expect (peer, "posted 0 1");
  WAIT_UNTIL (f->context, probe_count (&probe_b1, 0, 0) == 1);
  peer_quit (peer);

  for (guint i = 0; i < G_N_ELEMENTS (probes); i++)
    {
      probe_clear (probes[i]);
      close_and_finalize (f->context, probes[i]->channel);
    }
}

/* ------------------------------------------------------------------ */
/* Processes and buses that go away                                     */
/* ------------------------------------------------------------------ */

#define KILL_BEFORE 200   /* messages of the victim's stream seen before it is killed */
#define KILL_AFTER 200    /* messages of the survivor's stream seen after */

/* A peer killed with SIGKILL in the middle of its stream: the others go on, the survivor's
 * stream arrives whole and in order, the victim's a prefix of its posts in order. */
static void
test_peer_killed_others_go_on (Fixture       *f,
                               gconstpointer  data)
{
  const char *name = "org.gnome.Mpport.Test.killed";
  MpBroadcastChannel *channel = bus_channel_new (name, NULL);
  Peer *victim = peer_spawn_bus (0, name);
  Peer *survivor = peer_spawn_bus (1, name);
  Peer *witness = peer_spawn_bus (2, name);
  g_autofree char *report = NULL;
  g_autofree char *survivor_report = NULL;
  g_autofree char *stopped = NULL;
  g_autofree char *sender = NULL;
  guint count, bad, at_kill, posted;
  Probe probe;
  Probe *probes[] = { &probe };

  probe_init (&probe, 0, channel);

  peer_send (victim, "stream 0 %u", stream_interval_msec ());
  peer_send (survivor, "stream 0 %u", stream_interval_msec ());
  peer_wait_for (witness, 0, 0, 0, KILL_BEFORE);
  WAIT_UNTIL (f->context, probe_count (&probe, 0, 0) >= KILL_BEFORE);

  peer_kill (victim);

  /* The survivor's stream goes on reaching the others. */
  at_kill = probe_count (&probe, 1, 0);
  WAIT_UNTIL (f->context, probe_count (&probe, 1, 0) >= at_kill + KILL_AFTER);
  report = peer_report (witness);
  g_assert_true (report_find_got (report, 0, 1, 0, &count, &bad, &sender));
  peer_wait_for (witness, 0, 1, 0, count + KILL_AFTER);
  g_clear_pointer (&report, g_free);
  g_clear_pointer (&sender, g_free);

  peer_send (survivor, "stop 0");
  stopped = peer_read_line (survivor);
  g_assert_true (g_str_has_prefix (stopped, "stopped 0 "));
  posted = atoi (stopped + strlen ("stopped 0 "));
  peer_wait_for (witness, 0, 1, 0, posted);
  WAIT_UNTIL (f->context, probe_count (&probe, 1, 0) == posted);
  spin_context (f->context, QUIET_BUS_MSEC);

  /* At the witness and here: the survivor's posts all, the victim's a prefix, in order. */
  report = peer_report (witness);
  g_test_message ("witness got:\n%s", report);
  g_assert_cmpuint (report_n_lines (report), ==, 2);
  g_assert_true (report_find_got (report, 0, 0, 0, &count, &bad, &sender));
  g_assert_cmpuint (count, >=, KILL_BEFORE);
  g_assert_cmpuint (bad, ==, 0);
  g_assert_cmpstr (sender, ==, victim->unique_name);
  g_clear_pointer (&sender, g_free);
  g_assert_true (report_find_got (report, 0, 1, 0, &count, &bad, &sender));
  g_assert_cmpuint (count, ==, posted);
  g_assert_cmpuint (bad, ==, 0);
  g_assert_cmpstr (sender, ==, survivor->unique_name);
  g_clear_pointer (&sender, g_free);

  g_clear_pointer (&report, g_free);
  report = probes_report (probes, 1);
  g_assert_cmpuint (report_n_lines (report), ==, 2);
  g_assert_true (report_find_got (report, 0, 0, 0, &count, &bad, &sender));
  g_assert_cmpuint (count, >=, KILL_BEFORE);
  g_assert_cmpuint (bad, ==, 0);
  g_assert_cmpstr (sender, ==, victim->unique_name);
  g_clear_pointer (&sender, g_free);
  g_assert_true (report_find_got (report, 0, 1, 0, &count, &bad, &sender));
  g_assert_cmpuint (count, ==, posted);
  g_assert_cmpuint (bad, ==, 0);
  g_assert_cmpstr (sender, ==, survivor->unique_name);
  g_clear_pointer (&sender, g_free);

  /* The survivor got the victim's prefix in order, and nothing of its own. */
  survivor_report = peer_report (survivor);
  g_assert_cmpuint (report_n_lines (survivor_report), ==, 1);
  g_assert_true (report_find_got (survivor_report, 0, 0, 0, &count, &bad, &sender));
  g_assert_cmpuint (bad, ==, 0);
  g_assert_cmpstr (sender, ==, victim->unique_name);

  peer_free (victim);
  peer_quit (survivor);
  peer_quit (witness);
  probe_clear (&probe);
  close_and_finalize (f->context, channel);
}

/* The bus goes away (@data: "stop", GTestDBus's SIGTERM, or "kill", SIGKILL): every bus
 * channel of every process closes, with "notify::closed" on its context; posts on them fail
 * with MP_ERROR_CLOSED; plain channels go on; no process exits. */
static void
test_bus_lost_channels_close (Fixture       *f,
                              gconstpointer  data)
{
  const char *how = data;
  const char *name = "org.gnome.Mpport.Test.lost";
  g_autoptr(GDBusConnection) connection = connection_new_to_bus (f);
  MpBroadcastChannel *b0 = bus_channel_new (name, NULL);
  MpBroadcastChannel *b1 = bus_channel_new (name, NULL);
  MpBroadcastChannel *b2 = bus_channel_new (name, connection);
  MpBroadcastChannel *p0 = mp_broadcast_channel_new (name);
  MpBroadcastChannel *p1 = mp_broadcast_channel_new (name);
  MpBroadcastChannel *late;
  Probe probe_b0, probe_b1, probe_b2, probe_p1;
  Probe *bus_probes[] = { &probe_b0, &probe_b1, &probe_b2 };
  Peer *peer = peer_spawn_bus (0, name);
  g_autofree char *post_error = g_strdup_printf ("post-error 0 %s %d",
                                                 g_quark_to_string (MP_ERROR), MP_ERROR_CLOSED);
  GError *error = NULL;

  probe_init (&probe_b0, 0, b0);
  probe_init (&probe_b1, 1, b1);
  probe_init (&probe_b2, 2, b2);
  probe_init (&probe_p1, 3, p1);

  /* It works before. */
  peer_send (peer, "post 0 1");
  peer_expect (peer, "posted 0 1");
  WAIT_UNTIL (f->context, probe_count (&probe_b0, 0, 0) == 1 && probe_count (&probe_b1, 0, 0) == 1 &&
                          probe_count (&probe_b2, 0, 0) == 1);

  if (g_strcmp0 (how, "kill") == 0)
    {
      g_assert_cmpint (kill (case_daemon_pid, SIGKILL), ==, 0);
      case_daemon_pid = 0;
    }
  else
    g_test_dbus_stop (f->bus);

  /* Each bus channel closes once, on its context; the plain one does not. */
  WAIT_UNTIL (f->context, probe_b0.receipts.closed == 1 && probe_b1.receipts.closed == 1 &&
                          probe_b2.receipts.closed == 1 && f->sentinel_closed == 1);
  spin_context (f->context, QUIET_MSEC);
  for (guint i = 0; i < G_N_ELEMENTS (bus_probes); i++)
    {
      MpBroadcastChannel *channel = bus_probes[i]->channel;

      g_assert_cmpuint (bus_probes[i]->receipts.closed, ==, 1);
      g_assert_true (mp_broadcast_channel_is_closed (channel));
      g_assert_null (mp_broadcast_channel_get_context (channel));
      post_expect_error (channel, g_variant_new_string ("after"), MP_ERROR, MP_ERROR_CLOSED);
      post_expect_error (channel, NULL, MP_ERROR, MP_ERROR_CLOSED);
    }
  g_assert_cmpuint (probe_p1.receipts.closed, ==, 0);
  g_assert_false (mp_broadcast_channel_is_closed (p0));

  /* Plain channels still talk to each other. */
  post_triple (p0, 4, 0);
  WAIT_UNTIL (f->context, probe_count (&probe_p1, TEST_PROC, 4) == 1);

  /* A new bus channel on the dead bus is refused, with an error and no crash. */
  late = mp_broadcast_channel_new_for_bus (name, connection, NULL, &error);
  g_assert_null (late);
  g_assert_nonnull (error);
  g_test_message ("on the closed connection: %s", error->message);
  g_clear_error (&error);
  late = mp_broadcast_channel_new_for_bus (name, NULL, NULL, &error);
  g_assert_null (late);
  g_assert_nonnull (error);
  g_test_message ("on the session bus, gone: %s", error->message);
  g_clear_error (&error);

  /* The peer's channel closed too; the peer lives on, its posts fail with MP_ERROR_CLOSED. */
  peer_expect (peer, "closed 0");
  peer_send (peer, "post 0 1");
  peer_expect (peer, post_error);
  peer_quit (peer);

  for (guint i = 0; i < G_N_ELEMENTS (bus_probes); i++)
    {
      probe_clear (bus_probes[i]);
      assert_finalized_eventually (f->context, bus_probes[i]->channel);
    }
  probe_clear (&probe_p1);
  close_and_finalize (f->context, p0);
  close_and_finalize (f->context, p1);
}

#define FLUSH_POSTS 1000
#define FLUSH_ROUNDS 3

/* A process that posts, closes its channel and exits at once (_exit(), nothing else
 * flushed) is heard: close() writes out what the channel posted. */
static void
test_close_flushes_before_exit (Fixture       *f,
                                gconstpointer  data)
{
  const char *name = "org.gnome.Mpport.Test.flush";
  MpBroadcastChannel *channel = bus_channel_new (name, NULL);

  for (guint round = 0; round < FLUSH_ROUNDS; round++)
    {
      Peer *peer = peer_spawn_bus (round, name);
      g_autoptr(GString) expected = g_string_new (NULL);
      Probe probe;
      Probe *probes[] = { &probe };

      probe_init (&probe, 0, channel);
      peer_send (peer, "post-close-exit 0 %u", FLUSH_POSTS);
      peer_wait_exit (peer);
      g_assert_true (g_subprocess_get_if_exited (peer->process));
      g_assert_cmpint (g_subprocess_get_exit_status (peer->process), ==, 0);

      probe_wait_count (&probe, round, 0, FLUSH_POSTS);
      spin_context (f->context, QUIET_MSEC);
      expect_got (expected, 0, round, 0, FLUSH_POSTS, peer->unique_name);
      assert_probes_report (probes, 1, expected->str);

      probe_clear (&probe);
      peer_free (peer);
    }

  close_and_finalize (f->context, channel);
}

/* ------------------------------------------------------------------ */
/* The asynchronous constructor                                         */
/* ------------------------------------------------------------------ */

typedef struct
{
  GMainContext *context;    /* where the callback must run */
  GAsyncResult *result;
} AsyncCall;

static void
on_new_for_bus_done (GObject      *source_object,
                     GAsyncResult *result,
                     gpointer      user_data)
{
  AsyncCall *call = user_data;

  g_assert_null (source_object);
  g_assert_true (g_main_context_is_owner (call->context));
  g_assert_null (call->result);
  call->result = g_object_ref (result);
}

/* Starts new_for_bus_async() on the calling thread; the callback has not run on return. */
static void
async_call_start (AsyncCall    *call,
                  const char   *name,
                  GCancellable *cancellable)
{
  *call = (AsyncCall) { .context = g_main_context_ref_thread_default () };
  mp_broadcast_channel_new_for_bus_async (name, NULL, cancellable, on_new_for_bus_done, call);
  g_assert_null (call->result);
}

/* Waits for the callback and finishes: the channel, or NULL with @error. */
static MpBroadcastChannel *
async_call_finish (AsyncCall  *call,
                   GError    **error)
{
  MpBroadcastChannel *channel;

  WAIT_UNTIL (call->context, call->result != NULL);
  channel = mp_broadcast_channel_new_for_bus_finish (call->result, error);
  g_clear_object (&call->result);
  g_main_context_unref (call->context);

  return channel;
}

typedef struct
{
  const char *name;
  Peer *peer;       /* posts when told to, from the main thread */
  gint go;          /* the channel is made: the main thread tells the peer to post */
  gint done;
} AsyncThread;

static gpointer
async_thread_main (gpointer data)
{
  AsyncThread *t = data;
  GMainContext *context = context_push_new ();
  MpBroadcastChannel *channel;
  GError *error = NULL;
  AsyncCall call;
  Probe probe;

  async_call_start (&call, t->name, NULL);
  channel = async_call_finish (&call, &error);
  g_assert_no_error (error);
  g_assert_nonnull (channel);
  g_assert_true (mp_broadcast_channel_get_context (channel) == context);
  probe_init (&probe, 1, channel);
  probe.receipts.from_start = FALSE;   /* the peer's seqs go on from its earlier posts */

  g_atomic_int_set (&t->go, 1);
  WAIT_UNTIL (context, probe_count (&probe, 0, 0) == 3);
  g_assert_cmpuint (probe_source (&probe, 0, 0)->bad, ==, 0);
  g_assert_cmpstr (probe_source (&probe, 0, 0)->sender, ==, t->peer->unique_name);

  probe_clear (&probe);
  close_and_finalize (context, channel);
  context_pop_free (context);
  g_atomic_int_set (&t->done, 1);

  return NULL;
}

/* The asynchronous constructor calls back on the thread-default context of the caller, not
 * before returning; the channel it gives is bound to that context and subscribed: a post
 * another process makes right after is received. From the main thread and from another. */
static void
test_async_ready_then_receives (Fixture       *f,
                                gconstpointer  data)
{
  const char *name = "org.gnome.Mpport.Test.async";
  Peer *peer = peer_spawn_bus (0, name);
  MpBroadcastChannel *channel;
  GError *error = NULL;
  AsyncCall call;
  AsyncThread t = { .name = name, .peer = peer };
  GThread *thread;
  Probe probe;

  async_call_start (&call, name, NULL);
  channel = async_call_finish (&call, &error);
  g_assert_no_error (error);
  g_assert_true (MP_IS_BROADCAST_CHANNEL (channel));
  g_assert_cmpstr (mp_broadcast_channel_get_name (channel), ==, name);
  g_assert_true (mp_broadcast_channel_get_context (channel) == f->context);
  g_assert_true (mp_broadcast_channel_get_connection (channel) ==
                 mp_broadcast_channel_get_connection (f->sentinel));
  probe_init (&probe, 0, channel);

  peer_send (peer, "post 0 3");
  peer_expect (peer, "posted 0 3");
  WAIT_UNTIL (f->context, probe_count (&probe, 0, 0) == 3);
  post_triple (channel, 0, 0);
  peer_wait_for (peer, 0, TEST_PROC, 0, 1);

  /* From a thread of its own, with its own context. */
  thread = g_thread_new ("async-ctor", async_thread_main, &t);
  WAIT_UNTIL (f->context, g_atomic_int_get (&t.go));
  peer_send (peer, "post 0 3");
  peer_expect (peer, "posted 0 3");
  WAIT_UNTIL (f->context, g_atomic_int_get (&t.done));
  g_thread_join (thread);

  WAIT_UNTIL (f->context, probe_count (&probe, 0, 0) == 6);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (probe_count (&probe, 0, 0), ==, 6);
  g_assert_cmpuint (probe_source (&probe, 0, 0)->bad, ==, 0);

  peer_quit (peer);
  probe_clear (&probe);
  close_and_finalize (f->context, channel);
}

#define CANCEL_ROUNDS 40

/* Cancelled before it was called, right after, a moment later (the thread may be done, or
 * half-way), or after the callback may have run: the callback runs once, on our context; the
 * finish gives G_IO_ERROR_CANCELLED; calls not cancelled give channels. Nothing stays
 * subscribed, nothing leaks (valgrind), and the name works afterwards. */
static void
test_async_cancelled (Fixture       *f,
                      gconstpointer  data)
{
  const char *name = "org.gnome.Mpport.Test.async-cancelled";
  const char *session = session_unique_name (f);
  guint base = bus_match_rules (f, session);
  guint n_cancelled = 0;
  guint n_made = 0;
  MpBroadcastChannel *channel;
  Peer *peer;
  Probe probe;

  for (guint round = 0; round < CANCEL_ROUNDS; round++)
    {
      g_autoptr(GCancellable) cancellable = g_cancellable_new ();
      GError *error = NULL;
      AsyncCall call;

      if (round == 0)
        g_cancellable_cancel (cancellable);
      async_call_start (&call, name, cancellable);
      if (round % 4 == 1)
        g_cancellable_cancel (cancellable);
      else if (round % 4 == 2)
        {
          g_usleep (round * 50);
          g_cancellable_cancel (cancellable);
        }
      else if (round % 4 == 3)
        {
          g_main_context_iteration (f->context, FALSE);
          g_cancellable_cancel (cancellable);
        }

      /* Cancelled before the finish, whether or not the thread was done: cancelled (GIO's
       * rule), and what the thread subscribed is undone. */
      channel = async_call_finish (&call, &error);
      if (round == 0 || round % 4 != 0)
        {
          g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
          g_assert_null (channel);
          g_clear_error (&error);
          n_cancelled++;
        }
      else
        {
          g_assert_no_error (error);
          g_assert_true (MP_IS_BROADCAST_CHANNEL (channel));
          n_made++;
          close_and_finalize (f->context, channel);
        }
    }
  g_assert_cmpuint (n_cancelled, ==, CANCEL_ROUNDS - CANCEL_ROUNDS / 4 + 1);
  g_assert_cmpuint (n_made, ==, CANCEL_ROUNDS / 4 - 1);

  /* Every subscription a cancelled call made is undone, in its own time. */
  WAIT_UNTIL (f->context, bus_match_rules (f, session) == base);

  /* The name works. */
  peer = peer_spawn_bus (0, name);
  channel = bus_channel_new (name, NULL);
  probe_init (&probe, 0, channel);
  peer_send (peer, "post 0 5");
  peer_expect (peer, "posted 0 5");
  WAIT_UNTIL (f->context, probe_count (&probe, 0, 0) == 5);
  g_assert_cmpuint (probe_source (&probe, 0, 0)->bad, ==, 0);
  peer_quit (peer);
  probe_clear (&probe);
  close_and_finalize (f->context, channel);
  WAIT_UNTIL (f->context, bus_match_rules (f, session) == base);
}

#define CHURN_ROUNDS 200

/* Bus channels created (with either constructor) and closed over and over while another
 * process streams on their name, first alone on it (each one subscribes and unsubscribes),
 * then beside a channel that stays: each sees a contiguous, ordered run of the stream; the
 * one that stays sees all of it; no subscription is left behind. */
static void
test_churn_create_close_while_receiving (Fixture       *f,
                                         gconstpointer  data)
{
  const char *name = "org.gnome.Mpport.Test.churn";
  const char *session = session_unique_name (f);
  guint base = bus_match_rules (f, session);
  Peer *peer = peer_spawn_bus (0, name);
  MpBroadcastChannel *keeper = NULL;
  g_autofree char *stopped = NULL;
  guint received = 0;
  guint posted;
  Probe keeper_probe;

  peer_send (peer, "stream 0 %u", stream_interval_msec ());

  for (guint round = 0; round < CHURN_ROUNDS; round++)
    {
      MpBroadcastChannel *channel;
      GError *error = NULL;
      Probe probe;

      if (round == CHURN_ROUNDS / 2)
        {
          keeper = bus_channel_new (name, NULL);
          probe_init (&keeper_probe, 1, keeper);
          keeper_probe.receipts.from_start = FALSE;
        }

      if (round % 2 == 0)
        channel = bus_channel_new (name, NULL);
      else
        {
          AsyncCall call;

          async_call_start (&call, name, NULL);
          channel = async_call_finish (&call, &error);
          g_assert_no_error (error);
        }
      probe_init (&probe, 0, channel);
      probe.receipts.from_start = FALSE;

      /* Let a few messages in, sometimes none. */
      spin_context (f->context, round % 3);

      received += probe_count (&probe, 0, 0);
      g_assert_cmpuint (probe.receipts.sources->len, ==, 1);
      g_assert_cmpuint (probe_source (&probe, 0, 0)->bad, ==, 0);
      probe_clear (&probe);
      close_and_finalize (f->context, channel);
    }
  g_test_message ("the churning channels got %u messages", received);

  peer_send (peer, "stop 0");
  stopped = peer_read_line (peer);
  g_assert_true (g_str_has_prefix (stopped, "stopped 0 "));
  posted = atoi (stopped + strlen ("stopped 0 "));

  /* The keeper saw the stream from where it joined to its end, in order. */
  WAIT_UNTIL (f->context, probe_count (&keeper_probe, 0, 0) > 0 &&
                          probe_source (&keeper_probe, 0, 0)->last == posted - 1);
  spin_context (f->context, QUIET_BUS_MSEC);
  g_assert_cmpuint (probe_source (&keeper_probe, 0, 0)->bad, ==, 0);
  g_assert_cmpuint (probe_count (&keeper_probe, 0, 0), ==,
                    posted - probe_source (&keeper_probe, 0, 0)->first);
  g_assert_cmpstr (probe_source (&keeper_probe, 0, 0)->sender, ==, peer->unique_name);

  peer_quit (peer);
  probe_clear (&keeper_probe);
  close_and_finalize (f->context, keeper);
  WAIT_UNTIL (f->context, bus_match_rules (f, session) == base);
}

/* ------------------------------------------------------------------ */
/* What cannot cross the bus                                            */
/* ------------------------------------------------------------------ */

static GVariant *
bytes_new (gsize size)
{
  guint8 *bytes = g_malloc0 (size);

  return g_variant_new_from_data (G_VARIANT_TYPE_BYTESTRING, bytes, size, TRUE, g_free, bytes);
}

/* Channels 0 and 1 bus, 2 plain, of one name here; channel 0 of a peer. Each refused post
 * must leave all of them without a delivery: the marker posted after it is the first thing
 * anyone gets. */
typedef struct
{
  MpBroadcastChannel *channels[3];
  Probe probes[3];
  Peer *peer;
} RefusalSetup;

static void
refusal_set_up (RefusalSetup *s,
                const char   *name)
{
  s->channels[0] = bus_channel_new (name, NULL);
  s->channels[1] = bus_channel_new (name, NULL);
  s->channels[2] = mp_broadcast_channel_new (name);
  for (guint i = 0; i < 3; i++)
    probe_init (&s->probes[i], i, s->channels[i]);
  s->peer = peer_spawn_bus (0, name);
}

/* Posts a marker on channel 0 and checks it is all that anyone got. */
static void
refusal_check (Fixture      *f,
               RefusalSetup *s)
{
  const char *session = session_unique_name (f);
  g_autoptr(GString) expected = g_string_new (NULL);
  g_autoptr(GString) expected_peer = g_string_new (NULL);
  g_autofree char *report = NULL;
  Probe *probes[] = { &s->probes[0], &s->probes[1], &s->probes[2] };

  post_triple (s->channels[0], 0, 0);
  WAIT_UNTIL (f->context, probe_count (&s->probes[1], TEST_PROC, 0) == 1 &&
                          probe_count (&s->probes[2], TEST_PROC, 0) == 1);
  peer_wait_for (s->peer, 0, TEST_PROC, 0, 1);
  spin_context (f->context, QUIET_BUS_MSEC);

  expect_got (expected, 1, TEST_PROC, 0, 1, NULL);
  expect_got (expected, 2, TEST_PROC, 0, 1, NULL);
  assert_probes_report (probes, G_N_ELEMENTS (probes), expected->str);

  expect_got (expected_peer, 0, TEST_PROC, 0, 1, session);
  report = peer_report (s->peer);
  g_assert_cmpstr (report, ==, expected_peer->str);
}

static void
refusal_tear_down (Fixture      *f,
                   RefusalSetup *s)
{
  peer_quit (s->peer);
  for (guint i = 0; i < 3; i++)
    {
      probe_clear (&s->probes[i]);
      close_and_finalize (f->context, s->channels[i]);
    }
}

/* A payload over 8 MiB serialized is refused by a bus channel with MP_ERROR_DATA_CLONE and
 * sent nowhere, not even to the channels of this process; a plain channel still takes it.
 * Exactly 8 MiB goes through, both ways. */
static void
test_post_over_8_mib_refused (Fixture       *f,
                              gconstpointer  data)
{
  const char *name = "org.gnome.Mpport.Test.large";
  g_autofree char *refused = g_strdup_printf ("post-error 0 %s %d", g_quark_to_string (MP_ERROR),
                                              MP_ERROR_DATA_CLONE);
  g_autofree char *expected = NULL;
  g_autofree char *report = NULL;
  MpBroadcastChannel *plain, *plain_peer;
  RefusalSetup s;

  refusal_set_up (&s, name);

  post_expect_error (s.channels[0], bytes_new (MAX_PAYLOAD + 1), MP_ERROR, MP_ERROR_DATA_CLONE);
  post_expect_error (s.channels[0],
                     g_variant_new ("(s@ay)", "and a little more", bytes_new (MAX_PAYLOAD)),
                     MP_ERROR, MP_ERROR_DATA_CLONE);
  refusal_check (f, &s);

  /* Exactly the limit goes through, from here and from the peer; the peer's too large post is
   * refused there as well. */
  g_assert_true (mp_broadcast_channel_post_message (s.channels[0], bytes_new (MAX_PAYLOAD), NULL));
  post_triple (s.channels[0], 0, 1);
  peer_wait_for (s.peer, 0, TEST_PROC, 0, 2);
  WAIT_UNTIL (f->context, probe_count (&s.probes[1], TEST_PROC, 0) == 2);
  g_assert_cmpuint (s.probes[1].receipts.other_count, ==, 1);
  g_assert_cmpuint (s.probes[1].receipts.other_bytes, ==, MAX_PAYLOAD);
  report = peer_report (s.peer);
  expected = g_strdup_printf ("got 0 %u 0 2 0 %s\nother 0 1 %u %s\n", TEST_PROC,
                              session_unique_name (f), MAX_PAYLOAD, session_unique_name (f));
  g_assert_cmpstr (report, ==, expected);

  peer_send (s.peer, "bytes 0 %u", MAX_PAYLOAD + 1);
  peer_expect (s.peer, refused);
  peer_send (s.peer, "bytes 0 %u", MAX_PAYLOAD);
  peer_expect (s.peer, "posted 0 1");
  WAIT_UNTIL (f->context, s.probes[0].receipts.other_count == 1 &&
                          s.probes[1].receipts.other_count == 2);
  g_assert_cmpuint (s.probes[0].receipts.other_bytes, ==, MAX_PAYLOAD);
  g_assert_cmpstr (s.probes[0].receipts.other_sender, ==, s.peer->unique_name);
  g_assert_true (s.probes[1].receipts.other_mixed);   /* one local post, one from the peer */
  g_assert_cmpuint (s.probes[2].receipts.other_count, ==, 1);   /* the local one only */

  refusal_tear_down (f, &s);

  /* A plain channel never goes to the bus: no limit there. */
  plain = mp_broadcast_channel_new ("org.gnome.Mpport.Test.large.plain");
  plain_peer = mp_broadcast_channel_new ("org.gnome.Mpport.Test.large.plain");
  {
    Probe probe;

    probe_init (&probe, 0, plain_peer);
    g_assert_true (mp_broadcast_channel_post_message (plain, bytes_new (MAX_PAYLOAD + 1), NULL));
    WAIT_UNTIL (f->context, probe.receipts.other_count == 1);
    g_assert_cmpuint (probe.receipts.other_bytes, ==, MAX_PAYLOAD + 1);
    probe_clear (&probe);
  }
  close_and_finalize (f->context, plain);
  close_and_finalize (f->context, plain_peer);
}

/* A payload holding a D-Bus handle (type 'h'), which means nothing in another process, is
 * refused by a bus channel with MP_ERROR_DATA_CLONE and sent nowhere. */
static void
test_post_handle_refused (Fixture       *f,
                          gconstpointer  data)
{
  RefusalSetup s;
  GVariant *refused[] = {
    g_variant_new_handle (0),
    g_variant_new ("(ih)", 1, 0),
    g_variant_new ("ah", NULL),
    g_variant_new_maybe (G_VARIANT_TYPE_HANDLE, NULL),
  };

  refusal_set_up (&s, "org.gnome.Mpport.Test.handle");

  for (guint i = 0; i < G_N_ELEMENTS (refused); i++)
    post_expect_error (s.channels[0], refused[i], MP_ERROR, MP_ERROR_DATA_CLONE);
  refusal_check (f, &s);

  refusal_tear_down (f, &s);
}

/* docs/wire.md: "A handle inside a variant (v) is not looked for: it travels as the int32 it
 * is". The type string decides, so such a payload is posted and arrives as it was sent, here
 * and in another process. */
static void
test_post_handle_in_variant_travels (Fixture       *f,
                                     gconstpointer  data)
{
  const char *name = "org.gnome.Mpport.Test.handle-in-variant";
  MpBroadcastChannel *sender = bus_channel_new (name, NULL);
  MpBroadcastChannel *channel = bus_channel_new (name, NULL);
  g_autoptr(GVariant) boxed = g_variant_ref_sink (g_variant_new_variant (g_variant_new_handle (3)));
  g_autoptr(GVariant) dict = g_variant_ref_sink (g_variant_new_parsed ("{'fd': <handle 4>}"));
  g_autofree char *expected = NULL;
  g_autofree char *report = NULL;
  Peer *peer = peer_spawn_bus (0, name);
  Probe probe;

  probe_init (&probe, 0, channel);
  probe.log = g_string_new (NULL);

  g_assert_true (mp_broadcast_channel_post_message (sender, boxed, NULL));
  g_assert_true (mp_broadcast_channel_post_message (sender, dict, NULL));
  post_triple (sender, 0, 0);
  WAIT_UNTIL (f->context, probe_count (&probe, TEST_PROC, 0) == 1);
  g_assert_cmpstr (probe.log->str, ==,
                   "<handle 3>|{'fd': <handle 4>}|(uint32 9, uint32 0, uint32 0)|");

  peer_wait_for (peer, 0, TEST_PROC, 0, 1);
  report = peer_report (peer);
  expected = g_strdup_printf ("got 0 %u 0 1 0 %s\nother 0 2 %" G_GSIZE_FORMAT " %s\n", TEST_PROC,
                              session_unique_name (f),
                              g_variant_get_size (boxed) + g_variant_get_size (dict),
                              session_unique_name (f));
  g_assert_cmpstr (report, ==, expected);
  peer_quit (peer);

  probe_clear (&probe);
  close_and_finalize (f->context, sender);
  close_and_finalize (f->context, channel);
}

/* Values no receiver could read back are refused by a bus channel, with MP_ERROR_DATA_CLONE
 * and nothing sent (docs/wire.md, "Limits"): a type string over 255 bytes, nesting 128 levels
 * deep or more. Nesting well under that travels. */
static void
test_post_unreadable_refused (Fixture       *f,
                              gconstpointer  data)
{
  g_autoptr(GVariantBuilder) wide = g_variant_builder_new (G_VARIANT_TYPE_TUPLE);
  g_autofree char *expected = NULL;
  g_autofree char *report = NULL;
  GVariant *deep = g_variant_new_int32 (1);
  GVariant *shallow = g_variant_new_int32 (1);
  gsize shallow_size;
  RefusalSetup s;

  for (guint i = 0; i < 300; i++)
    g_variant_builder_add (wide, "y", 0);
  for (guint i = 0; i < 200; i++)
    deep = g_variant_new_variant (deep);
  for (guint i = 0; i < 32; i++)
    shallow = g_variant_new_variant (shallow);
  shallow = g_variant_ref_sink (shallow);
  shallow_size = g_variant_get_size (shallow);

  refusal_set_up (&s, "org.gnome.Mpport.Test.unreadable");

  post_expect_error (s.channels[0], g_variant_builder_end (wide), MP_ERROR, MP_ERROR_DATA_CLONE);
  post_expect_error (s.channels[0], deep, MP_ERROR, MP_ERROR_DATA_CLONE);
  refusal_check (f, &s);

  g_assert_true (mp_broadcast_channel_post_message (s.channels[0], shallow, NULL));
  g_variant_unref (shallow);
  post_triple (s.channels[0], 0, 1);
  peer_wait_for (s.peer, 0, TEST_PROC, 0, 2);
  report = peer_report (s.peer);
  expected = g_strdup_printf ("got 0 %u 0 2 0 %s\nother 0 1 %" G_GSIZE_FORMAT " %s\n", TEST_PROC,
                              session_unique_name (f), shallow_size, session_unique_name (f));
  g_assert_cmpstr (report, ==, expected);

  refusal_tear_down (f, &s);
}

int
main (int   argc,
      char *argv[])
{
  /* A peer that died with its stdin open must fail the case, not kill this process. */
  signal (SIGPIPE, SIG_IGN);
  kill_daemon_on_fatal_signals ();

  g_test_init (&argc, &argv, NULL);
  /* Never the user's session bus: each case starts its own. */
  g_test_dbus_unset ();

  peer_path = g_getenv ("MP_BUS_PEER");
  if (peer_path == NULL)
    peer_path = g_test_get_filename (G_TEST_BUILT, "bus-peer", NULL);

#define ADD(path, func, data) \
  g_test_add (path, Fixture, data, fixture_set_up, func, fixture_tear_down)

  ADD ("/mpport/bus/fan-out/three-processes", test_fan_out_three_processes, NULL);
  ADD ("/mpport/bus/fan-out/own-connections-once", test_fan_out_own_connections_once, NULL);
  ADD ("/mpport/bus/names/unusual", test_names_unusual, NULL);
  ADD ("/mpport/bus/names/one-rule-per-name", test_names_one_rule_per_name, NULL);
  ADD ("/mpport/bus/message-error/injected-signals", test_message_error_injected, NULL);
  ADD ("/mpport/bus/peer-killed/others-go-on", test_peer_killed_others_go_on, NULL);
  ADD ("/mpport/bus/bus-lost/daemon-stopped", test_bus_lost_channels_close, "stop");
  ADD ("/mpport/bus/bus-lost/daemon-killed", test_bus_lost_channels_close, "kill");
  ADD ("/mpport/bus/close/flushes-before-exit", test_close_flushes_before_exit, NULL);
  ADD ("/mpport/bus/async/ready-then-receives", test_async_ready_then_receives, NULL);
  ADD ("/mpport/bus/async/cancelled", test_async_cancelled, NULL);
  ADD ("/mpport/bus/churn/create-close-while-receiving",
       test_churn_create_close_while_receiving, NULL);
  ADD ("/mpport/bus/post/over-8-mib-refused", test_post_over_8_mib_refused, NULL);
  ADD ("/mpport/bus/post/handle-refused", test_post_handle_refused, NULL);
  ADD ("/mpport/bus/post/handle-in-variant-travels", test_post_handle_in_variant_travels, NULL);
  ADD ("/mpport/bus/post/unreadable-refused", test_post_unreadable_refused, NULL);

#undef ADD

  return g_test_run ();
}
