/* bus-peer.c: another process on the test bus, driven by tests/test-bus.c
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Usage: bus-peer ID SPEC...
 *
 * ID is this process's number in the payloads it posts. Each SPEC opens one channel, numbered
 * from 0 in the order given: "bus:HEX" a bus channel (on the session bus of the environment,
 * which the test points at its own dbus-daemon), "plain:HEX" a channel of this process only.
 * HEX is the name's bytes in hexadecimal, so that any name (quotes, slashes, newlines, 10 000
 * bytes) passes through argv unharmed.
 *
 * The specs, the payloads and the report lines are made and read in tests/bus-peer-protocol.c,
 * which test-bus links too: its own channels keep the same records and report them alike.
 *
 * Once every channel exists (a bus channel's constructor returns only after the bus
 * acknowledged its subscription) it prints "ready UNIQUE", UNIQUE being the unique bus name
 * of its connection ("-" without bus channels), then reads commands on stdin, one a line,
 * and answers on stdout, one line each:
 *
 *   post C N             posts N messages (ID, C, seq) of type (uuu) on channel C, seq
 *                        counting up from where C's last post left it, from idles (so that
 *                        receiving goes on meanwhile), then "posted C N"
 *   stream C MS          posts on C one message every MS milliseconds until "stop C", which
 *                        answers "stopped C N", N the posts made in all
 *   bytes C N            posts one "ay" of N bytes on C: "posted C 1"
 *   post-close-exit C N  posts N messages on C, closes C and _exit()s at once: nothing
 *                        but the close flushes what was posted
 *   wait RX P C N        "reached" once channel RX got N messages from channel C of process P
 *   report               what each channel got, then "end":
 *                          got RX P C COUNT BAD SENDER
 *                          other RX COUNT BYTES SENDER   (payloads that are not (uuu))
 *                          errors RX N                   ("message-error" emissions)
 *                          closed RX N                   ("notify::closed" emissions)
 *                        BAD counts messages whose seq was not the next one expected;
 *                        SENDER is mp_message_get_sender() ("-" for NULL, "mixed" if it
 *                        changed). Lines are sorted; zero counts are left out.
 *   quit, or end of input   closes every channel and exits with 0
 *
 * A failed post answers "post-error C DOMAIN CODE" instead and stops that job. When a channel
 * is closed by the library (its bus went away), "closed RX" is printed as it happens.
 *
 * It aborts on any unexpected state (G_DEBUG=fatal-warnings comes from the test's
 * environment): the test then sees its output end.
 */

#include <mpport/mpport.h>

#include <gio/gunixinputstream.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bus-peer-protocol.h"

#define POSTS_PER_IDLE 64

typedef struct
{
  guint index;
  MpBroadcastChannel *channel;
  BusReceipts receipts;
  guint32 next_seq;     /* of this channel's own posts */
} Channel;

typedef struct
{
  Channel *channel;
  guint remaining;
  guint posted;
  gboolean stream;
  guint source_id;
} PostJob;

typedef struct
{
  guint rx;
  guint proc;
  guint channel;
  guint count;
} Wait;

static guint peer_id;
static GPtrArray *channels;      /* Channel */
static GPtrArray *waits;         /* Wait, answered and removed as they are reached */
static GHashTable *streams;      /* channel index -> PostJob, while streaming */
static GMainLoop *loop;
static GDataInputStream *input;

static void
say (const char *format,
     ...) G_GNUC_PRINTF (1, 2);

static void
say (const char *format,
     ...)
{
  va_list args;

  va_start (args, format);
  vprintf (format, args);
  va_end (args);
  putchar ('\n');
  fflush (stdout);
}

static void
check_waits (void)
{
  for (guint i = 0; i < waits->len;)
    {
      Wait *wait = g_ptr_array_index (waits, i);
      Channel *ch = g_ptr_array_index (channels, wait->rx);

      if (bus_receipts_source (&ch->receipts, wait->proc, wait->channel)->count >= wait->count)
        {
          say ("reached");
          g_ptr_array_remove_index (waits, i);
        }
      else
        i++;
    }
}

static void
on_message (MpBroadcastChannel *channel,
            MpMessage          *message,
            gpointer            user_data)
{
  Channel *ch = user_data;

  if (bus_receipts_add_message (&ch->receipts, message) != NULL && waits->len > 0)
    check_waits ();
}

static void
on_message_error (MpBroadcastChannel *channel,
                  GError             *error,
                  gpointer            user_data)
{
  Channel *ch = user_data;

  g_assert_nonnull (error);
  bus_receipts_add_error (&ch->receipts, error);
}

static void
on_notify_closed (GObject    *object,
                  GParamSpec *pspec,
                  gpointer    user_data)
{
  Channel *ch = user_data;

  g_assert_true (mp_broadcast_channel_is_closed (ch->channel));
  ch->receipts.closed++;
  say ("closed %u", ch->index);
}

static Channel *
channel_open (const char *spec)
{
  gboolean on_bus;
  g_autofree char *name = bus_peer_spec_parse (spec, &on_bus);
  Channel *ch = g_new0 (Channel, 1);
  GError *error = NULL;

  if (on_bus)
    {
      ch->channel = mp_broadcast_channel_new_for_bus (name, NULL, NULL, &error);
      if (ch->channel == NULL)
        g_error ("bus channel: %s", error->message);
      g_assert_nonnull (mp_broadcast_channel_get_connection (ch->channel));
    }
  else
    {
      ch->channel = mp_broadcast_channel_new (name);
      g_assert_null (mp_broadcast_channel_get_connection (ch->channel));
    }

  ch->index = channels->len;
  bus_receipts_init (&ch->receipts);
  g_signal_connect (ch->channel, "message", G_CALLBACK (on_message), ch);
  g_signal_connect (ch->channel, "message-error", G_CALLBACK (on_message_error), ch);
  g_signal_connect (ch->channel, "notify::closed", G_CALLBACK (on_notify_closed), ch);
  g_ptr_array_add (channels, ch);

  return ch;
}

static void
channel_free (gpointer data)
{
  Channel *ch = data;

  g_signal_handlers_disconnect_by_data (ch->channel, ch);
  mp_broadcast_channel_close (ch->channel);
  g_object_unref (ch->channel);
  bus_receipts_clear (&ch->receipts);
  g_free (ch);
}

static Channel *
channel_get (guint index)
{
  if (index >= channels->len)
    g_error ("no channel %u", index);
  return g_ptr_array_index (channels, index);
}

/* Posts the next (ID, C, seq) of @ch; FALSE (and the error said) if the post failed. */
static gboolean
post_next (Channel *ch)
{
  GError *error = NULL;

  if (!mp_broadcast_channel_post_message (ch->channel,
                                          bus_payload_new (peer_id, ch->index, ch->next_seq),
                                          &error))
    {
      say ("post-error %u %s %d", ch->index, g_quark_to_string (error->domain), error->code);
      g_error_free (error);
      return FALSE;
    }
  ch->next_seq++;

  return TRUE;
}

static gboolean
post_job_run (gpointer data)
{
  PostJob *job = data;
  guint n = job->stream ? 1 : MIN (job->remaining, POSTS_PER_IDLE);

  for (guint i = 0; i < n; i++)
    {
      if (!post_next (job->channel))
        {
          if (job->stream)
            g_hash_table_remove (streams, GUINT_TO_POINTER (job->channel->index));
          return G_SOURCE_REMOVE;
        }
      job->posted++;
    }

  if (job->stream)
    return G_SOURCE_CONTINUE;

  job->remaining -= n;
  if (job->remaining > 0)
    return G_SOURCE_CONTINUE;

  say ("posted %u %u", job->channel->index, job->posted);
  return G_SOURCE_REMOVE;
}

static void
post_job_free (gpointer data)
{
  g_free (data);
}

static void
stream_job_stop (gpointer data)
{
  PostJob *job = data;

  g_source_remove (job->source_id);
}

static void
report (void)
{
  g_autoptr(GString) lines = g_string_new (NULL);

  for (guint i = 0; i < channels->len; i++)
    {
      Channel *ch = g_ptr_array_index (channels, i);

      bus_receipts_append_report (&ch->receipts, ch->index, lines);
    }
  fputs (lines->str, stdout);
  say ("end");
}

static void
handle_command (const char *line)
{
  g_auto(GStrv) argv = g_strsplit (line, " ", -1);
  guint argc = g_strv_length (argv);

  if (argc == 3 && strcmp (argv[0], "post") == 0)
    {
      PostJob *job = g_new0 (PostJob, 1);

      job->channel = channel_get (atoi (argv[1]));
      job->remaining = atoi (argv[2]);
      if (job->remaining == 0)
        {
          say ("posted %u 0", job->channel->index);
          g_free (job);
          return;
        }
      job->source_id = g_idle_add_full (G_PRIORITY_DEFAULT_IDLE, post_job_run, job, post_job_free);
    }
  else if (argc == 3 && strcmp (argv[0], "stream") == 0)
    {
      PostJob *job = g_new0 (PostJob, 1);

      job->channel = channel_get (atoi (argv[1]));
      job->stream = TRUE;
      job->source_id = g_timeout_add_full (G_PRIORITY_DEFAULT_IDLE, atoi (argv[2]), post_job_run,
                                           job, post_job_free);
      g_hash_table_insert (streams, GUINT_TO_POINTER (job->channel->index), job);
    }
  else if (argc == 2 && strcmp (argv[0], "stop") == 0)
    {
      guint index = atoi (argv[1]);
      PostJob *job = g_hash_table_lookup (streams, GUINT_TO_POINTER (index));
      guint posted;

      if (job == NULL)
        g_error ("channel %u is not streaming", index);
      posted = job->posted;
      g_hash_table_remove (streams, GUINT_TO_POINTER (index));
      say ("stopped %u %u", index, posted);
    }
  else if (argc == 3 && strcmp (argv[0], "bytes") == 0)
    {
      Channel *ch = channel_get (atoi (argv[1]));
      gsize size = g_ascii_strtoull (argv[2], NULL, 10);
      guint8 *bytes = g_malloc0 (size);
      GError *error = NULL;

      if (mp_broadcast_channel_post_message (ch->channel,
                                             g_variant_new_from_data (G_VARIANT_TYPE_BYTESTRING,
                                                                      bytes, size, TRUE,
                                                                      g_free, bytes),
                                             &error))
        say ("posted %u 1", ch->index);
      else
        {
          say ("post-error %u %s %d", ch->index, g_quark_to_string (error->domain), error->code);
          g_error_free (error);
        }
    }
  else if (argc == 3 && strcmp (argv[0], "post-close-exit") == 0)
    {
      Channel *ch = channel_get (atoi (argv[1]));
      guint n = atoi (argv[2]);

      for (guint i = 0; i < n; i++)
        if (!post_next (ch))
          _exit (2);
      mp_broadcast_channel_close (ch->channel);
      /* No atexit handler, no main loop, no stdio flush: only what close() did counts. */
      _exit (0);
    }
  else if (argc == 5 && strcmp (argv[0], "wait") == 0)
    {
      Wait *wait = g_new0 (Wait, 1);

      wait->rx = atoi (argv[1]);
      wait->proc = atoi (argv[2]);
      wait->channel = atoi (argv[3]);
      wait->count = atoi (argv[4]);
      channel_get (wait->rx);
      g_ptr_array_add (waits, wait);
      check_waits ();
    }
  else if (argc == 1 && strcmp (argv[0], "report") == 0)
    report ();
  else if (argc == 1 && strcmp (argv[0], "quit") == 0)
    g_main_loop_quit (loop);
  else
    g_error ("unknown command: %s", line);
}

static void
on_line (GObject      *object,
         GAsyncResult *result,
         gpointer      user_data)
{
  g_autofree char *line = NULL;
  GError *error = NULL;

  line = g_data_input_stream_read_line_finish_utf8 (input, result, NULL, &error);
  if (line == NULL)
    {
      if (error != NULL)
        g_error ("reading commands: %s", error->message);
      g_main_loop_quit (loop);   /* end of input: the test is done with us */
      return;
    }

  handle_command (line);
  g_data_input_stream_read_line_async (input, G_PRIORITY_DEFAULT, NULL, on_line, NULL);
}

int
main (int   argc,
      char *argv[])
{
  g_autoptr(GInputStream) stdin_stream = NULL;
  const char *unique = "-";

  if (argc < 2)
    {
      fprintf (stderr, "usage: bus-peer ID [bus:HEX|plain:HEX]...\n");
      return 1;
    }
  peer_id = atoi (argv[1]);

  channels = g_ptr_array_new_with_free_func (channel_free);
  waits = g_ptr_array_new_with_free_func (g_free);
  streams = g_hash_table_new_full (NULL, NULL, NULL, stream_job_stop);
  loop = g_main_loop_new (NULL, FALSE);

  for (int i = 2; i < argc; i++)
    {
      Channel *ch = channel_open (argv[i]);
      GDBusConnection *connection = mp_broadcast_channel_get_connection (ch->channel);

      if (connection == NULL)
        continue;
      /* Bus channels made with NULL share mpport's one session connection. */
      if (strcmp (unique, "-") != 0)
        g_assert_cmpstr (g_dbus_connection_get_unique_name (connection), ==, unique);
      unique = g_dbus_connection_get_unique_name (connection);
    }
  say ("ready %s", unique);

  stdin_stream = g_unix_input_stream_new (STDIN_FILENO, FALSE);
  input = g_data_input_stream_new (stdin_stream);
  g_data_input_stream_read_line_async (input, G_PRIORITY_DEFAULT, NULL, on_line, NULL);

  g_main_loop_run (loop);

  g_hash_table_unref (streams);
  g_ptr_array_unref (channels);
  g_ptr_array_unref (waits);
  g_clear_object (&input);
  g_main_loop_unref (loop);

  return 0;
}
