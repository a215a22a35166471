/* test-process.c: ports entangled with ports of a child process
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The child cases spawn tests/process-peer (found through MP_PROCESS_PEER, or next to this
 * binary) with mp_message_port_new_for_launcher () and drive it with the commands its header
 * lists: echoes, bursts, closes from either side, ports that cross the boundary both ways (and
 * back, and inside each other), and a child killed with SIGKILL mid-stream. Between two mpport
 * processes the data takes the direct path (frames on a socket the parent offers in its Hello);
 * MPPORT_STREAM_SIGNALS_ONLY keeps a process on D-Bus signals, and mpport reads it once per
 * process. So the same cases run twice, in two runs of this binary (tests/meson.build):
 *
 *   test-process          /mpport/process/direct/…: both processes on the direct path;
 *   test-process-signals  /mpport/process/signals/…: MPPORT_STREAM_SIGNALS_ONLY=1 in our
 *                         environment, and so in the child's: both on D-Bus signals.
 *
 * Each run adds /…/path, which checks that the stream took the path the run names, and one
 * case with the child on the other setting (/mpport/process/mixed/…): a side that does not
 * take part keeps the stream on signals.
 *
 * The /mpport/process/protocol/ cases (in the first run) need no child: the test is the other
 * process. It opens one end of a socketpair with mp_message_port_new_for_stream () as the
 * server and speaks to it as a raw GDBus client on the other end, crafting the protocol's
 * signals (docs/wire.md, mpport/mp-stream-private.h) — valid ones, posts that do not decode
 * (each must become exactly one "message-error", in order), protocol violations (the stream
 * must close, with its warning) — or writing bytes that are not D-Bus at all onto the socket.
 * The /mpport/process/protocol/direct/ cases ask for the direct path in their Hello, take the
 * socket mpport offers in its own, and write frames on it by hand (mpport/mp-frames-private.h):
 * the same posts and violations as frames, frames that break the framing, signals where frames
 * belong, the end of the socket; and offers declined, which leave the stream on signals.
 *
 * Every case counts exactly and checks order; every wait is bounded (WAIT_FOR), so a lost
 * message or a hung child fails the case instead of hanging it.
 */

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>
#include <glib-unix.h>
#include <mpport/mpport.h>

#include "mp-test-util.h"

#ifdef __has_include
# if __has_include(<valgrind/valgrind.h>)
#  include <valgrind/valgrind.h>
# endif
#endif
#ifndef RUNNING_ON_VALGRIND
# define RUNNING_ON_VALGRIND 0
#endif

/* The child's end of the stream. */
#define PEER_FD 3

/* The protocol, spelled out here rather than taken from the library's private header: the
 * protocol cases play an independent implementation of docs/wire.md. */
#define STREAM_PATH        "/org/gnome/Mpport/Port1"
#define STREAM_INTERFACE   "org.gnome.Mpport.Port1"
#define STREAM_POST_TYPE   "(atauasauayauat)"
#define STREAM_CLOSE_TYPE  "(at)"
#define STREAM_CREDIT_TYPE "(a(tt))"
#define STREAM_ROOM_TYPE   "(a(tuu))"
/* The cost of a post besides its payload's bytes (flow control). */
#define STREAM_COST_OVERHEAD 64u

/* The direct path: the option of Hello that offers a socket (the server's, a handle of the
 * message's file descriptors) or asks for one (the client's, a boolean); on that socket a
 * frame is a little-endian uint32 length L (1 .. FRAMES_MAX_LENGTH), a kind byte and the
 * body, L - 1 bytes: the serialization, in normal form and little-endian, of the body the
 * signal of that kind would carry. */
#define STREAM_OPTION_DIRECT "direct"
#define FRAME_POST           1
#define FRAME_CLOSE          2
#define FRAME_CREDIT         3
#define FRAME_ROOM           4
#define FRAMES_MAX_LENGTH    (32u * 1024 * 1024)

/* Set (to anything), it keeps mpport's streams in this process on D-Bus signals. */
#define SIGNALS_ONLY_ENV "MPPORT_STREAM_SIGNALS_ONLY"

/* The big counts, smaller where every message costs much more — under valgrind (one thread
 * at a time) and ThreadSanitizer (~20x slower): still exact. */
static guint32
scaled (guint32 n)
{
#if defined(__SANITIZE_THREAD__)
  return n / 10;
#else
  return RUNNING_ON_VALGRIND ? n / 20 : n;
#endif
}

/* ------------------------------------------------------------------------------------------
 * What a port received
 */

typedef struct
{
  MpMessagePort *port;     /* strong */
  GPtrArray *received;     /* MpMessage, in arrival order */
  gboolean closed;
  guint received_at_close; /* received->len when "close" came */
} Recorder;

static void
on_recorder_message (MpMessagePort *port,
                     MpMessage     *message,
                     gpointer       data)
{
  Recorder *rec = data;

  g_assert_false (rec->closed);
  g_ptr_array_add (rec->received, mp_message_ref (message));
}

static void
on_recorder_message_error (MpMessagePort *port,
                           GError        *error,
                           gpointer       data)
{
  /* A child built from this tree only sends what decodes. */
  g_error ("unexpected message-error: %s", error->message);
}

static void
on_recorder_close (MpMessagePort *port,
                   gpointer       data)
{
  Recorder *rec = data;

  g_assert_false (rec->closed);
  rec->closed = TRUE;
  rec->received_at_close = rec->received->len;
}

/* Records what @port (not started; a reference is taken) receives once started. */
static void
recorder_init (Recorder      *rec,
               MpMessagePort *port)
{
  rec->port = g_object_ref (port);
  rec->received = g_ptr_array_new_with_free_func ((GDestroyNotify) mp_message_unref);
  rec->closed = FALSE;
  rec->received_at_close = 0;
  g_signal_connect (port, "message", G_CALLBACK (on_recorder_message), rec);
  g_signal_connect (port, "message-error", G_CALLBACK (on_recorder_message_error), rec);
  g_signal_connect (port, "close", G_CALLBACK (on_recorder_close), rec);
}

static void
recorder_clear (Recorder *rec)
{
  if (rec->port == NULL)
    return;
  g_signal_handlers_disconnect_by_data (rec->port, rec);
  mp_message_port_close (rec->port);
  g_clear_object (&rec->port);
  g_clear_pointer (&rec->received, g_ptr_array_unref);
}

/* The (sv) messages process-peer exchanges: (@name, <u seq>). */
static GVariant *
seq_new (const char *name,
         guint32     seq)
{
  return g_variant_new ("(sv)", name, g_variant_new_uint32 (seq));
}

static guint32
message_seq (MpMessage  *message,
             const char *name)
{
  GVariant *data = mp_message_get_data (message);
  const char *got;
  g_autoptr(GVariant) arg = NULL;

  g_assert_nonnull (data);
  g_assert_cmpstr (g_variant_get_type_string (data), ==, "(sv)");
  g_variant_get (data, "(&sv)", &got, &arg);
  g_assert_cmpstr (got, ==, name);
  g_assert_true (g_variant_is_of_type (arg, G_VARIANT_TYPE_UINT32));

  return g_variant_get_uint32 (arg);
}

/* received[first .. first + n) are (@name, 0) .. (@name, n - 1), without ports. */
static void
assert_seqs (Recorder   *rec,
             guint       first,
             const char *name,
             guint32     n)
{
  g_assert_cmpuint (rec->received->len, >=, first + n);
  for (guint32 i = 0; i < n; i++)
    {
      MpMessage *message = g_ptr_array_index (rec->received, first + i);

      g_assert_cmpuint (message_seq (message, name), ==, i);
      g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);
    }
}

static void
post_seqs (MpMessagePort *port,
           const char    *name,
           guint32        first,
           guint32        end)
{
  for (guint32 i = first; i < end; i++)
    {
      g_autoptr(GError) error = NULL;

      g_assert_true (mp_message_port_post (port, seq_new (name, i), &error));
      g_assert_no_error (error);
    }
}

static void
post_with_port (MpMessagePort *port,
                GVariant      *data,
                MpMessagePort *transfer)
{
  g_autoptr(GError) error = NULL;

  g_assert_true (mp_message_port_post_message (port, data, &transfer, 1, &error));
  g_assert_no_error (error);
}

/* ------------------------------------------------------------------------------------------
 * A child process
 */

/* The path a child case's stream takes. Ours is set for the whole run (main()); the child's
 * environment is set here, case by case. */
typedef struct
{
  gboolean child_signals_only;   /* the child runs with MPPORT_STREAM_SIGNALS_ONLY=1 */
  /* The sockets the child holds once the stream is up: its end of the stream, and on the
   * direct path the socket we offered in our Hello. */
  int child_sockets;
} Mode;

/* The runs' modes: both processes on the direct path, or both on signals. */
static const Mode direct_mode = { FALSE, 2 };
static const Mode signals_mode = { TRUE, 1 };
/* One side only takes part in the direct path: the stream stays on signals. */
static const Mode child_on_signals_mode = { TRUE, 1 };
static const Mode parent_on_signals_mode = { FALSE, 1 };

typedef struct
{
  GMainContext *context;
  GSubprocess *child;
  Recorder rec;          /* of the stream's first port */
} Fixture;

static void
fixture_setup (Fixture       *f,
               gconstpointer  data)
{
  const Mode *mode = data;
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);
  g_autoptr(MpMessagePort) port = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *fd = g_strdup_printf ("%d", PEER_FD);
  g_autofree char *peer = NULL;

  f->context = context_push_new ();

  peer = g_strdup (g_getenv ("MP_PROCESS_PEER"));
  if (peer == NULL)
    peer = g_test_build_filename (G_TEST_BUILT, "process-peer", NULL);

  if (mode->child_signals_only)
    g_subprocess_launcher_setenv (launcher, SIGNALS_ONLY_ENV, "1", TRUE);
  else
    g_subprocess_launcher_unsetenv (launcher, SIGNALS_ONLY_ENV);

  port = mp_message_port_new_for_launcher (launcher, PEER_FD, &error);
  g_assert_no_error (error);
  g_assert_nonnull (port);
  f->child = g_subprocess_launcher_spawn (launcher, &error, peer, fd, NULL);
  g_assert_no_error (error);

  recorder_init (&f->rec, port);
}

static void
on_child_exited (GObject      *source,
                 GAsyncResult *result,
                 gpointer      data)
{
  gboolean *exited = data;
  g_autoptr(GError) error = NULL;

  g_assert_true (g_subprocess_wait_finish (G_SUBPROCESS (source), result, &error));
  g_assert_no_error (error);
  *exited = TRUE;
}

/* Waits, bounded, for the child to end. */
static void
wait_child (Fixture *f)
{
  gboolean exited = FALSE;

  g_subprocess_wait_async (f->child, NULL, on_child_exited, &exited);
  WAIT_FOR (f->context, exited);
}

/* Waits for the child to end by itself with status 0. */
static void
wait_child_success (Fixture *f)
{
  wait_child (f);
  g_assert_true (g_subprocess_get_if_exited (f->child));
  g_assert_cmpint (g_subprocess_get_exit_status (f->child), ==, 0);
}

static void
fixture_teardown (Fixture       *f,
                  gconstpointer  data)
{
  /* Our close makes the child exit, if the case left it running. */
  recorder_clear (&f->rec);
  if (f->child != NULL)
    {
      wait_child (f);
      g_clear_object (&f->child);
    }
  context_pop_free (f->context);
}

static void
post_command (Fixture    *f,
              const char *name,
              GVariant   *arg)
{
  g_autoptr(GError) error = NULL;

  g_assert_true (mp_message_port_post (f->rec.port, g_variant_new ("(sv)", name, arg), &error));
  g_assert_no_error (error);
}

/* Waits until the child has its end of the stream up: one echo on the still unstarted port.
 * The transfer cases start with it, so that the first ports they send never race with the
 * child's set-up of its connection: that race has its own case,
 * /mpport/process/protocol/transfer-at-start. */
static void
wait_stream_up (Fixture *f)
{
  g_autoptr(MpMessage) message = NULL;
  g_autoptr(GError) error = NULL;

  post_command (f, "echo", g_variant_new_uint32 (G_MAXUINT32));
  message = mp_message_port_receive_timeout (f->rec.port, WAIT_TIMEOUT_USEC, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (message);
  g_assert_cmpuint (message_seq (message, "echo"), ==, G_MAXUINT32);
}

/* The one message the child sent back on the stream's port with one port: that port. */
static MpMessagePort *
received_port (Recorder *rec,
               guint     index)
{
  GPtrArray *ports;

  g_assert_cmpuint (rec->received->len, >, index);
  ports = mp_message_get_ports (g_ptr_array_index (rec->received, index));
  g_assert_cmpuint (ports->len, ==, 1);

  return g_ptr_array_index (ports, 0);
}

/* Starts the stream's port, posts @n echo commands, checks that the child's @n echoes came
 * back once, in order, then closes: the child ends with 0 and nothing more arrives. */
static void
echo_and_close (Fixture *f,
                guint32  n)
{
  mp_message_port_start (f->rec.port);
  post_seqs (f->rec.port, "echo", 0, n);

  WAIT_FOR (f->context, f->rec.received->len == n);
  assert_seqs (&f->rec, 0, "echo", n);

  mp_message_port_close (f->rec.port);
  wait_child_success (f);
  g_assert_cmpuint (f->rec.received->len, ==, n);
}

/* 100 000 messages each way: the child echoes every one; all come back once, in order. Our
 * close then reaches the child, which exits with 0. */
static void
test_echo (Fixture       *f,
           gconstpointer  data)
{
  echo_and_close (f, scaled (100000));
}

/* 100 000 messages posted by the child in one go arrive once, in order. */
static void
test_burst (Fixture       *f,
            gconstpointer  data)
{
  const guint32 n = scaled (100000);

  mp_message_port_start (f->rec.port);
  post_command (f, "burst", g_variant_new_uint32 (n));

  WAIT_FOR (f->context, f->rec.received->len == n);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (f->rec.received->len, ==, n);
  assert_seqs (&f->rec, 0, "seq", n);
  g_assert_false (f->rec.closed);
}

/* The high-water mark holds across the process boundary: with a mark of 8 on our port, the
 * child's async posts wait once 8 are queued here (it learns the mark and what we took
 * through Room messages); raising the mark lets exactly that many more in, removing it lets
 * all of them in; then every one arrives once, in order. */
static void
test_paced (Fixture       *f,
            gconstpointer  data)
{
  const guint32 n = 200;
  const guint mark = 8;

  mp_message_port_set_high_water_mark (f->rec.port, mark);
  /* The Room that tells the child goes out from the worker thread: let it leave before the
   * command (which a lone post may write at once). */
  spin_context (f->context, 200);
  post_command (f, "paced", g_variant_new_uint32 (n));

  WAIT_FOR (f->context, mp_message_port_get_n_queued (f->rec.port) >= mark);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (mp_message_port_get_n_queued (f->rec.port), ==, mark);

  mp_message_port_set_high_water_mark (f->rec.port, 2 * mark);
  WAIT_FOR (f->context, mp_message_port_get_n_queued (f->rec.port) >= 2 * mark);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (mp_message_port_get_n_queued (f->rec.port), ==, 2 * mark);

  mp_message_port_set_high_water_mark (f->rec.port, 0);
  WAIT_FOR (f->context, mp_message_port_get_n_queued (f->rec.port) == n);

  mp_message_port_start (f->rec.port);
  WAIT_FOR (f->context, f->rec.received->len == n);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (f->rec.received->len, ==, n);
  assert_seqs (&f->rec, 0, "seq", n);
  g_assert_cmpuint (mp_message_port_get_n_queued (f->rec.port), ==, 0);
}

/* The same, with our application taking messages while the child posts: it is paced by
 * what we take, and nothing is lost or reordered. */
static void
test_paced_consumed (Fixture       *f,
                     gconstpointer  data)
{
  const guint32 n = scaled (20000);

  mp_message_port_set_high_water_mark (f->rec.port, 4);
  spin_context (f->context, 200);
  mp_message_port_start (f->rec.port);
  post_command (f, "paced", g_variant_new_uint32 (n));

  WAIT_FOR (f->context, f->rec.received->len == n);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (f->rec.received->len, ==, n);
  assert_seqs (&f->rec, 0, "seq", n);
}

/* We close right after posting: our "close" comes (not inside the close call), nothing is
 * delivered after it, and the child — which got the posts, then the close, and echoed into
 * a port whose peer is gone — exits with 0. */
static void
test_close_by_parent (Fixture       *f,
                      gconstpointer  data)
{
  mp_message_port_start (f->rec.port);
  post_seqs (f->rec.port, "echo", 0, 1000);
  mp_message_port_close (f->rec.port);
  g_assert_false (f->rec.closed);

  wait_child_success (f);
  WAIT_FOR (f->context, f->rec.closed);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (f->rec.received->len, ==, 0);
  g_assert_cmpuint (f->rec.received_at_close, ==, 0);
}

/* The child bursts, then closes its port: every message arrives, then "close"; the child
 * exits with 0. */
static void
test_close_by_child (Fixture       *f,
                     gconstpointer  data)
{
  const guint32 n = scaled (100000);

  mp_message_port_start (f->rec.port);
  post_command (f, "burst", g_variant_new_uint32 (n));
  post_command (f, "close", g_variant_new_uint32 (0));

  WAIT_FOR (f->context, f->rec.closed);
  g_assert_cmpuint (f->rec.received_at_close, ==, n);
  assert_seqs (&f->rec, 0, "seq", n);
  g_assert_true (mp_message_port_is_peer_closed (f->rec.port));
  g_assert_true (mp_message_port_is_closed (f->rec.port));
  wait_child_success (f);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (f->rec.received->len, ==, n);
}

/* The child bursts, then calls exit (3) without closing anything: what it posted is still
 * sent (its atexit handler flushes the stream), then the connection ends and the port
 * closes after every message; the child's status is 3. */
static void
test_close_by_exit (Fixture       *f,
                    gconstpointer  data)
{
  const guint32 n = scaled (100000);

  mp_message_port_start (f->rec.port);
  post_command (f, "burst", g_variant_new_uint32 (n));
  post_command (f, "exit", g_variant_new_int32 (3));

  WAIT_FOR (f->context, f->rec.closed);
  g_assert_cmpuint (f->rec.received_at_close, ==, n);
  assert_seqs (&f->rec, 0, "seq", n);
  wait_child (f);
  g_assert_true (g_subprocess_get_if_exited (f->child));
  g_assert_cmpint (g_subprocess_get_exit_status (f->child), ==, 3);
}

typedef struct
{
  guint32 next;      /* the seq the next message must carry */
  GError *end;       /* how the loop ended */
  gboolean done;
} ReceiveLoop;

static void
on_received_seq (GObject      *source,
                 GAsyncResult *result,
                 gpointer      data)
{
  ReceiveLoop *loop = data;
  MpMessagePort *port = MP_MESSAGE_PORT (source);
  g_autoptr(MpMessage) message = NULL;

  message = mp_message_port_receive_finish (port, result, &loop->end);
  if (message == NULL)
    {
      g_assert_nonnull (loop->end);
      loop->done = TRUE;
      return;
    }
  g_assert_cmpuint (message_seq (message, "seq"), ==, loop->next);
  loop->next++;
  mp_message_port_receive_async (port, NULL, on_received_seq, loop);
}

/* receive_async on the unstarted port takes the child's burst one message at a time, in
 * order, then fails with MP_ERROR_CLOSED once the child closed its end. */
static void
test_receive_async (Fixture       *f,
                    gconstpointer  data)
{
  const guint32 n = scaled (20000);
  ReceiveLoop loop = { 0, NULL, FALSE };

  post_command (f, "burst", g_variant_new_uint32 (n));
  post_command (f, "close", g_variant_new_uint32 (0));
  mp_message_port_receive_async (f->rec.port, NULL, on_received_seq, &loop);

  WAIT_FOR (f->context, loop.done);
  g_assert_error (loop.end, MP_ERROR, MP_ERROR_CLOSED);
  g_assert_cmpuint (loop.next, ==, n);
  g_clear_error (&loop.end);
  wait_child_success (f);
  g_assert_cmpuint (f->rec.received->len, ==, 0);
}

/* A port sent to the child: the 1 000 messages posted on the kept end — half before the
 * transfer (they wait in the travelling port's inbox and follow it), half after — are echoed
 * by the child on that port and all come back once, in order. Closing the kept end ends the
 * child's copy; the stream's port saw nothing. */
static void
test_transfer_to_child (Fixture       *f,
                        gconstpointer  data)
{
  const guint32 n = 1000;
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  Recorder kept;

  recorder_init (&kept, mp_message_channel_get_port1 (channel));
  wait_stream_up (f);
  mp_message_port_start (f->rec.port);
  mp_message_port_start (kept.port);

  post_seqs (kept.port, "echo", 0, n / 2);
  post_with_port (f->rec.port, g_variant_new ("(sv)", "serve", g_variant_new_uint32 (0)),
                  mp_message_channel_get_port2 (channel));
  post_seqs (kept.port, "echo", n / 2, n);

  WAIT_FOR (f->context, kept.received->len == n);
  assert_seqs (&kept, 0, "echo", n);

  mp_message_port_close (kept.port);
  WAIT_FOR (f->context, kept.closed);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (kept.received->len, ==, n);
  g_assert_cmpuint (f->rec.received->len, ==, 0);
  recorder_clear (&kept);

  mp_message_port_close (f->rec.port);
  wait_child_success (f);
}

/* A port made by the child: the posts it made before sending it (queued in its inbox) and
 * after arrive once, in order, then "close" (the child closed its end). */
static void
test_transfer_from_child (Fixture       *f,
                          gconstpointer  data)
{
  const guint32 n = 1000;
  Recorder made;

  mp_message_port_start (f->rec.port);
  post_command (f, "make", g_variant_new_uint32 (n));

  WAIT_FOR (f->context, f->rec.received->len == 1);
  g_assert_cmpuint (message_seq (g_ptr_array_index (f->rec.received, 0), "made"), ==, n);
  recorder_init (&made, received_port (&f->rec, 0));
  mp_message_port_start (made.port);

  WAIT_FOR (f->context, made.closed);
  g_assert_cmpuint (made.received_at_close, ==, n);
  assert_seqs (&made, 0, "seq", n);
  recorder_clear (&made);

  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (f->rec.received->len, ==, 1);
  mp_message_port_close (f->rec.port);
  wait_child_success (f);
}

/* A port that goes to the child and comes back in the echo of the message that carried it
 * works both ways: what was posted on the kept end before it left (queued in its inbox, it
 * travels there and back) and after it came back arrives once in order, and so does what is
 * posted on the returned port; closing the kept end closes the returned one. */
static void
test_transfer_round_trip (Fixture       *f,
                          gconstpointer  data)
{
  const guint32 n = 500;
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  Recorder kept;
  Recorder back;

  recorder_init (&kept, mp_message_channel_get_port1 (channel));
  wait_stream_up (f);
  mp_message_port_start (f->rec.port);
  mp_message_port_start (kept.port);

  post_seqs (kept.port, "there", 0, n);
  post_with_port (f->rec.port, seq_new ("echo", 7), mp_message_channel_get_port2 (channel));

  WAIT_FOR (f->context, f->rec.received->len == 1);
  g_assert_cmpuint (message_seq (g_ptr_array_index (f->rec.received, 0), "echo"), ==, 7);
  recorder_init (&back, received_port (&f->rec, 0));
  g_assert_true (back.port != mp_message_channel_get_port2 (channel));

  /* Posted on the kept end while the returned port is not started yet: they queue behind
   * the first n. */
  post_seqs (kept.port, "there", n, 2 * n);
  mp_message_port_start (back.port);
  WAIT_FOR (f->context, back.received->len == 2 * n);
  assert_seqs (&back, 0, "there", 2 * n);

  post_seqs (back.port, "back", 0, n);
  WAIT_FOR (f->context, kept.received->len == n);
  assert_seqs (&kept, 0, "back", n);

  mp_message_port_close (kept.port);
  WAIT_FOR (f->context, back.closed && kept.closed);
  g_assert_cmpuint (back.received_at_close, ==, 2 * n);
  g_assert_cmpuint (kept.received_at_close, ==, n);
  recorder_clear (&back);
  recorder_clear (&kept);

  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (f->rec.received->len, ==, 1);
  mp_message_port_close (f->rec.port);
  wait_child_success (f);
}

/* A port carrying a port: a message posted on a port that lives in the child (served: the
 * child echoes what arrives on it with its ports) transfers the end of a second channel,
 * with messages queued in its inbox. It comes back (parent -> child -> parent through the
 * first port) and works both ways, in order. */
static void
test_transfer_nested (Fixture       *f,
                      gconstpointer  data)
{
  const guint32 n = 500;
  g_autoptr(MpMessageChannel) outer = mp_message_channel_new ();
  g_autoptr(MpMessageChannel) inner = mp_message_channel_new ();
  Recorder outer_kept;
  Recorder inner_kept;
  Recorder inner_back;

  recorder_init (&outer_kept, mp_message_channel_get_port1 (outer));
  recorder_init (&inner_kept, mp_message_channel_get_port1 (inner));
  wait_stream_up (f);
  mp_message_port_start (f->rec.port);
  mp_message_port_start (outer_kept.port);
  mp_message_port_start (inner_kept.port);

  post_with_port (f->rec.port, g_variant_new ("(sv)", "serve", g_variant_new_uint32 (0)),
                  mp_message_channel_get_port2 (outer));
  post_seqs (inner_kept.port, "inner", 0, n);
  post_with_port (outer_kept.port, seq_new ("carrier", 1), mp_message_channel_get_port2 (inner));

  WAIT_FOR (f->context, outer_kept.received->len == 1);
  g_assert_cmpuint (message_seq (g_ptr_array_index (outer_kept.received, 0), "carrier"), ==, 1);
  recorder_init (&inner_back, received_port (&outer_kept, 0));

  post_seqs (inner_kept.port, "inner", n, 2 * n);
  mp_message_port_start (inner_back.port);
  WAIT_FOR (f->context, inner_back.received->len == 2 * n);
  assert_seqs (&inner_back, 0, "inner", 2 * n);

  post_seqs (inner_back.port, "back", 0, n);
  WAIT_FOR (f->context, inner_kept.received->len == n);
  assert_seqs (&inner_kept, 0, "back", n);

  mp_message_port_close (inner_kept.port);
  WAIT_FOR (f->context, inner_back.closed);
  g_assert_cmpuint (inner_back.received_at_close, ==, 2 * n);
  mp_message_port_close (outer_kept.port);
  WAIT_FOR (f->context, outer_kept.closed && inner_kept.closed);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (outer_kept.received->len, ==, 1);
  g_assert_cmpuint (inner_kept.received->len, ==, n);
  recorder_clear (&inner_back);
  recorder_clear (&inner_kept);
  recorder_clear (&outer_kept);

  g_assert_cmpuint (f->rec.received->len, ==, 0);
  mp_message_port_close (f->rec.port);
  wait_child_success (f);
}

/* The other way: the child sends a port whose inbox holds a message carrying another port,
 * and then posts on that other port and closes both. Everything arrives, in order, through
 * the nested port; both close. */
static void
test_transfer_nested_from_child (Fixture       *f,
                                 gconstpointer  data)
{
  const guint32 n = 1000;
  Recorder outer;
  Recorder inner;

  mp_message_port_start (f->rec.port);
  post_command (f, "nest", g_variant_new_uint32 (n));

  WAIT_FOR (f->context, f->rec.received->len == 1);
  g_assert_cmpuint (message_seq (g_ptr_array_index (f->rec.received, 0), "nested"), ==, n);
  recorder_init (&outer, received_port (&f->rec, 0));
  mp_message_port_start (outer.port);

  WAIT_FOR (f->context, outer.closed);
  g_assert_cmpuint (outer.received_at_close, ==, 1);
  g_assert_cmpuint (message_seq (g_ptr_array_index (outer.received, 0), "carrier"), ==, n);
  recorder_init (&inner, received_port (&outer, 0));
  mp_message_port_start (inner.port);

  WAIT_FOR (f->context, inner.closed);
  g_assert_cmpuint (inner.received_at_close, ==, n);
  assert_seqs (&inner, 0, "seq", n);
  recorder_clear (&inner);
  recorder_clear (&outer);

  mp_message_port_close (f->rec.port);
  wait_child_success (f);
}

/* The child dies of SIGKILL in the middle of a burst of 1 000 000: the stream's port and the
 * two ports we sent the child close here ("close", after what arrived, which is an in-order
 * prefix of the burst), without a hang; nothing is delivered after. */
static void expect_warning (const char *pattern);
static void forget_expected_warnings (void);

static void
test_kill (Fixture       *f,
           gconstpointer  data)
{
  const guint32 n = 1000000;
  g_autoptr(MpMessageChannel) channel1 = mp_message_channel_new ();
  g_autoptr(MpMessageChannel) channel2 = mp_message_channel_new ();
  Recorder kept1;
  Recorder kept2;

  recorder_init (&kept1, mp_message_channel_get_port1 (channel1));
  recorder_init (&kept2, mp_message_channel_get_port1 (channel2));
  wait_stream_up (f);
  mp_message_port_start (f->rec.port);
  mp_message_port_start (kept1.port);
  mp_message_port_start (kept2.port);

  /* Both served, and the child's copies proven alive by one echo each. */
  post_with_port (f->rec.port, g_variant_new ("(sv)", "serve", g_variant_new_uint32 (0)),
                  mp_message_channel_get_port2 (channel1));
  post_with_port (f->rec.port, g_variant_new ("(sv)", "serve", g_variant_new_uint32 (0)),
                  mp_message_channel_get_port2 (channel2));
  post_seqs (kept1.port, "echo", 0, 1);
  post_seqs (kept2.port, "echo", 0, 1);
  WAIT_FOR (f->context, kept1.received->len == 1 && kept2.received->len == 1);

  post_command (f, "burst", g_variant_new_uint32 (n));
  WAIT_FOR (f->context, f->rec.received->len >= 1000);
  /* Killed while it writes, the child may leave half a frame on the direct path, which
   * reads as a broken stream (a warning): it may come, or not. */
  expect_warning ("*broke the protocol: its direct path failed: *ended inside a frame*");
  g_subprocess_force_exit (f->child);

  WAIT_FOR (f->context, f->rec.closed && kept1.closed && kept2.closed);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (f->rec.received->len, ==, f->rec.received_at_close);
  g_assert_cmpuint (f->rec.received->len, <, n);
  assert_seqs (&f->rec, 0, "seq", f->rec.received->len);
  g_assert_cmpuint (kept1.received->len, ==, 1);
  g_assert_cmpuint (kept2.received->len, ==, 1);
  g_assert_true (mp_message_port_is_peer_closed (kept1.port));
  g_assert_true (mp_message_port_is_peer_closed (kept2.port));

  wait_child (f);
  g_assert_true (g_subprocess_get_if_signaled (f->child));
  g_assert_cmpint (g_subprocess_get_term_sig (f->child), ==, SIGKILL);
  forget_expected_warnings ();

  recorder_clear (&kept2);
  recorder_clear (&kept1);
}

/* The sockets among the open file descriptors of process @pid (its /proc/PID/fd). */
static int
count_sockets (const char *pid)
{
  g_autofree char *fd_dir = g_build_filename ("/proc", pid, "fd", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(GDir) dir = g_dir_open (fd_dir, 0, &error);
  const char *name;
  int n = 0;

  g_assert_no_error (error);
  while ((name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *fd_path = g_build_filename (fd_dir, name, NULL);
      g_autofree char *target = g_file_read_link (fd_path, NULL);

      /* NULL for a descriptor closed meanwhile. */
      if (target != NULL && g_str_has_prefix (target, "socket:"))
        n++;
    }

  return n;
}

/* The stream takes the path of the mode: on the direct path the child holds the socket we
 * offered besides its end of the stream, on signals only that end (a socket it was offered and
 * did not take is closed). Then 1 000 echoes come back once, in order, and our close ends the
 * child. */
static void
test_path (Fixture       *f,
           gconstpointer  data)
{
  const Mode *mode = data;
  const guint32 n = 1000;
  const char *pid;

  if (!g_file_test ("/proc/self/fd", G_FILE_TEST_IS_DIR))
    {
      g_test_skip ("no /proc/PID/fd to count the child's sockets");
      return;
    }

  wait_stream_up (f);
  pid = g_subprocess_get_identifier (f->child);
  g_assert_nonnull (pid);
  /* The message that brought our Hello may still hold its copy of the socket for a moment. */
  WAIT_FOR (f->context, count_sockets (pid) == mode->child_sockets);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpint (count_sockets (pid), ==, mode->child_sockets);

  echo_and_close (f, n);
}

/* ------------------------------------------------------------------------------------------
 * The protocol, spoken by the test itself
 */

/* mpport warns through the structured log API (G_LOG_USE_STRUCTURED), which
 * g_test_expect_message () does not see: its expected warnings are taken out by this log
 * writer instead, in the order expected. Anything else goes to GLib's default writer (fatal,
 * under G_DEBUG=fatal-warnings). The warnings come from GDBus's worker thread. */
static GMutex expected_lock;
static GQueue expected_warnings = G_QUEUE_INIT;   /* patterns; guarded by expected_lock */

static GLogWriterOutput
expecting_writer (GLogLevelFlags   log_level,
                  const GLogField *fields,
                  gsize            n_fields,
                  gpointer         user_data)
{
  const char *domain = NULL;
  g_autofree char *message = NULL;
  gboolean taken = FALSE;

  for (gsize i = 0; i < n_fields; i++)
    {
      if (g_str_equal (fields[i].key, "GLIB_DOMAIN"))
        domain = fields[i].value;
      else if (g_str_equal (fields[i].key, "MESSAGE"))
        message = fields[i].length < 0 ? g_strdup (fields[i].value)
                                       : g_strndup (fields[i].value, fields[i].length);
    }

  if ((log_level & G_LOG_LEVEL_WARNING) && g_strcmp0 (domain, MP_LOG_DOMAIN) == 0 &&
      message != NULL)
    {
      g_mutex_lock (&expected_lock);
      if (!g_queue_is_empty (&expected_warnings) &&
          g_pattern_match_simple (g_queue_peek_head (&expected_warnings), message))
        {
          g_queue_pop_head (&expected_warnings);
          taken = TRUE;
        }
      g_mutex_unlock (&expected_lock);
    }
  if (taken)
    return G_LOG_WRITER_HANDLED;

  return g_log_writer_default (log_level, fields, n_fields, user_data);
}

static void
expect_warning (const char *pattern)
{
  g_mutex_lock (&expected_lock);
  g_queue_push_tail (&expected_warnings, (gpointer) pattern);
  g_mutex_unlock (&expected_lock);
}

static void
assert_expected_warnings (void)
{
  guint left;

  g_mutex_lock (&expected_lock);
  left = g_queue_get_length (&expected_warnings);
  g_queue_clear (&expected_warnings);
  g_mutex_unlock (&expected_lock);
  g_assert_cmpuint (left, ==, 0);
}

/* Drops the warnings still expected: they were allowed, not required. */
static void
forget_expected_warnings (void)
{
  g_mutex_lock (&expected_lock);
  g_queue_clear (&expected_warnings);
  g_mutex_unlock (&expected_lock);
}

static void
expect_broken_protocol (void)
{
  expect_warning ("mpport: closing a stream to another process, which broke the protocol: *");
}

typedef struct
{
  GMainContext *context;
  GIOStream *client_io;
  int client_fd;               /* client_io's socket, for raw writes */
  GDBusConnection *client;
  MpMessagePort *port;
  /* Set before raw_setup(): the body of a Post sent with Hello as soon as our side is
   * authenticated, before mpport's side is known to be ready. */
  const char *early_post;
  /* Set before raw_setup() (raw_setup_direct()): our Hello asks for the direct path. */
  gboolean direct;
  /* What the port got, in order: a uint32 message as its value, a NULL one as "N", a
   * "message-error" as "E", then "close". */
  GString *log;

  /* mpport's Hello, and the socket it offered in it (-1 if none; ours to close until taken),
   * as our filter saw them in GDBus's worker thread. Guarded by hello_lock. */
  GMutex hello_lock;
  GVariant *server_hello;
  int offered_fd;
  guint filter_id;

  /* Once our Hello asked for the direct path: the socket mpport offered, on which our Posts,
   * Closes and Credits go as frames (raw_send_data()), and a reader of what mpport writes on
   * it, on our context. -1 before. */
  int frames_fd;
  GSource *frames_source;
  GByteArray *frames_in;       /* read, not a whole frame yet */
  gboolean frames_ended;       /* mpport closed its end */

  /* What mpport sent us of its data: "P<port id> " for each post of a Post, "C<port id> " for
   * each id of a Close (its Hello and Credits are left out); as signals and as frames. */
  GString *sent_signals;
  GString *sent_frames;
  guint subscription;
} Raw;

static void
on_raw_message (MpMessagePort *port,
                MpMessage     *message,
                gpointer       data)
{
  Raw *raw = data;
  GVariant *value = mp_message_get_data (message);

  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);
  if (value == NULL)
    g_string_append (raw->log, "N ");
  else
    g_string_append_printf (raw->log, "%u ", g_variant_get_uint32 (value));
}

static void
on_raw_message_error (MpMessagePort *port,
                      GError        *error,
                      gpointer       data)
{
  Raw *raw = data;

  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_string_append (raw->log, "E ");
}

static void
on_raw_close (MpMessagePort *port,
              gpointer       data)
{
  Raw *raw = data;

  g_string_append (raw->log, "close");
}

static void
on_raw_opened (GObject      *source,
               GAsyncResult *result,
               gpointer      data)
{
  Raw *raw = data;
  g_autoptr(GError) error = NULL;

  raw->port = mp_message_port_new_for_stream_finish (result, &error);
  g_assert_no_error (error);
  g_assert_nonnull (raw->port);
}

/* The kind of the frame that carries what the signal @member carries, or 0 for a member
 * that has none. */
static guint8
frame_kind (const char *member)
{
  if (g_str_equal (member, "Post"))
    return FRAME_POST;
  if (g_str_equal (member, "Close"))
    return FRAME_CLOSE;
  if (g_str_equal (member, "Credit"))
    return FRAME_CREDIT;
  if (g_str_equal (member, "Room"))
    return FRAME_ROOM;
  return 0;
}

/* A frame of @kind whose body is @body (floating or not; NULL: an empty body) serialized in
 * normal form, little-endian. */
static GBytes *
frame_new (guint8    kind,
           GVariant *body)
{
  g_autoptr(GByteArray) frame = g_byte_array_new ();
  g_autoptr(GVariant) normal = NULL;
  gsize size = 0;
  guint32 length;

  if (body != NULL)
    {
      g_autoptr(GVariant) sunk = g_variant_ref_sink (body);

      normal = g_variant_get_normal_form (sunk);
#if G_BYTE_ORDER == G_BIG_ENDIAN
      {
        GVariant *swapped = g_variant_byteswap (normal);

        g_variant_unref (normal);
        normal = swapped;
      }
#endif
      size = g_variant_get_size (normal);
    }

  length = GUINT32_TO_LE ((guint32) size + 1);
  g_byte_array_append (frame, (const guint8 *) &length, sizeof length);
  g_byte_array_append (frame, &kind, 1);
  if (size > 0)
    g_byte_array_append (frame, g_variant_get_data (normal), size);

  return g_byte_array_free_to_bytes (g_steal_pointer (&frame));
}

/* Writes @n bytes of @data on the socket @fd, whole. FALSE if the other end is closed. */
static gboolean
fd_write_all (int         fd,
              const void *data,
              gsize       n)
{
  const guint8 *p = data;

  while (n > 0)
    {
      gssize done = send (fd, p, n, MSG_NOSIGNAL);

      if (done < 0 && errno == EINTR)
        continue;
      if (done < 0 && (errno == EPIPE || errno == ECONNRESET))
        return FALSE;
      g_assert_cmpint (done, >, 0);
      p += done;
      n -= (gsize) done;
    }

  return TRUE;
}

/* Writes @n bytes of @data on our end of the direct path, past any framing. FALSE if mpport
 * closed its end already. */
static gboolean
raw_frames_write (Raw        *raw,
                  const void *data,
                  gsize       n)
{
  g_assert_cmpint (raw->frames_fd, >=, 0);

  return fd_write_all (raw->frames_fd, data, n);
}

/* Sends the signal @member with @body (floating; NULL for no body) — or, for a Post, Close or
 * Credit once our Hello asked for the direct path, the frame that carries the same body.
 * FALSE if the stream is closed already (the connection, or mpport's end of the socket). */
static gboolean
raw_send_data (Raw        *raw,
               const char *member,
               GVariant   *body)
{
  g_autoptr(GError) error = NULL;

  if (raw->frames_fd >= 0 && frame_kind (member) != 0)
    {
      g_autoptr(GBytes) frame = frame_new (frame_kind (member), body);

      return raw_frames_write (raw, g_bytes_get_data (frame, NULL), g_bytes_get_size (frame));
    }

  g_dbus_connection_emit_signal (raw->client, NULL, STREAM_PATH, STREAM_INTERFACE, member, body,
                                 &error);
  if (error != NULL)
    {
      g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CLOSED);
      return FALSE;
    }

  return TRUE;
}

/* Sends @member with @body (GVariant text format, or NULL for no body) as raw_send_data()
 * does; the stream must be up. */
static void
raw_emit (Raw        *raw,
          const char *member,
          const char *body)
{
  g_assert_true (raw_send_data (raw, member, body != NULL ? g_variant_new_parsed (body) : NULL));
}

/* Sends the signal @member with @body (GVariant text format) as a signal, whatever the path. */
static void
raw_emit_signal (Raw        *raw,
                 const char *member,
                 const char *body)
{
  g_autoptr(GError) error = NULL;

  g_dbus_connection_emit_signal (raw->client, NULL, STREAM_PATH, STREAM_INTERFACE, member,
                                 g_variant_new_parsed (body), &error);
  g_assert_no_error (error);
}

/* Logs what mpport sent of its data, in @log: "P<port id> " for each post of a Post,
 * "C<port id> " for each id of a Close. */
static void
log_sent_data (GString    *log,
               const char *member,
               GVariant   *body)
{
  g_autoptr(GVariant) ids_v = NULL;
  const guint64 *ids;
  gsize n_ids;

  if (g_str_equal (member, "Post"))
    g_assert_cmpstr (g_variant_get_type_string (body), ==, STREAM_POST_TYPE);
  else if (g_str_equal (member, "Close"))
    g_assert_cmpstr (g_variant_get_type_string (body), ==, STREAM_CLOSE_TYPE);
  else
    return;

  ids_v = g_variant_get_child_value (body, 0);
  ids = g_variant_get_fixed_array (ids_v, &n_ids, sizeof (guint64));
  for (gsize i = 0; i < n_ids; i++)
    g_string_append_printf (log, "%c%" G_GUINT64_FORMAT " ", member[0], ids[i]);
}

static void
on_raw_signal (GDBusConnection *connection,
               const char      *sender,
               const char      *path,
               const char      *interface,
               const char      *member,
               GVariant        *body,
               gpointer         data)
{
  Raw *raw = data;

  log_sent_data (raw->sent_signals, member, body);
}

/* A frame that mpport wrote: a Post, Close or Credit whose body is in normal form. */
static void
raw_take_frame (Raw          *raw,
                guint8        kind,
                const guint8 *data,
                gsize         size)
{
  static const char *const members[] = { NULL, "Post", "Close", "Credit", "Room" };
  static const char *const types[] = { NULL, STREAM_POST_TYPE, STREAM_CLOSE_TYPE,
                                       STREAM_CREDIT_TYPE, STREAM_ROOM_TYPE };
  g_autoptr(GBytes) bytes = g_bytes_new (data, size);
  g_autoptr(GVariant) body = NULL;

  g_assert_cmpuint (kind, >=, FRAME_POST);
  g_assert_cmpuint (kind, <=, FRAME_ROOM);
  body = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (types[kind]), bytes,
                                                       FALSE));
  g_assert_true (g_variant_is_normal_form (body));
#if G_BYTE_ORDER == G_BIG_ENDIAN
  {
    GVariant *swapped = g_variant_byteswap (body);

    g_variant_unref (body);
    body = swapped;
  }
#endif

  log_sent_data (raw->sent_frames, members[kind], body);
}

/* What mpport writes on the direct path, on our context: whole frames are taken in order;
 * the end of the socket sets frames_ended. */
static gboolean
on_raw_frames_readable (int           fd,
                        GIOCondition  condition,
                        gpointer      data)
{
  Raw *raw = data;
  guint8 buffer[4096];
  gssize got = recv (fd, buffer, sizeof buffer, MSG_DONTWAIT);
  gsize offset = 0;

  if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
    return G_SOURCE_CONTINUE;
  if (got <= 0)
    {
      /* The end, or a reset: mpport closed its end with what we wrote unread. */
      g_assert_true (got == 0 || errno == ECONNRESET);
      raw->frames_ended = TRUE;
      return G_SOURCE_REMOVE;
    }

  g_byte_array_append (raw->frames_in, buffer, (guint) got);
  while (raw->frames_in->len - offset >= 4)
    {
      const guint8 *p = raw->frames_in->data + offset;
      guint32 length = (guint32) p[0] | (guint32) p[1] << 8 | (guint32) p[2] << 16 |
                       (guint32) p[3] << 24;

      g_assert_cmpuint (length, >=, 1);
      g_assert_cmpuint (length, <=, FRAMES_MAX_LENGTH);
      if (raw->frames_in->len - offset - 4 < length)
        break;
      raw_take_frame (raw, p[4], p + 5, length - 1);
      offset += 4 + length;
    }
  g_byte_array_remove_range (raw->frames_in, 0, (guint) offset);

  return G_SOURCE_CONTINUE;
}

/* Our filter, in GDBus's worker thread: keeps mpport's Hello and the socket it offers. A
 * "direct" option must be a handle of a file descriptor that the message carries; without one
 * the message carries none. */
static GDBusMessage *
raw_filter (GDBusConnection *connection,
            GDBusMessage    *message,
            gboolean         incoming,
            gpointer         data)
{
  Raw *raw = data;
  GUnixFDList *fds = g_dbus_message_get_unix_fd_list (message);
  GVariant *body = g_dbus_message_get_body (message);
  g_autoptr(GVariant) options = NULL;
  g_autoptr(GVariant) direct = NULL;
  int fd = -1;

  if (!incoming || g_strcmp0 (g_dbus_message_get_interface (message), STREAM_INTERFACE) != 0 ||
      g_strcmp0 (g_dbus_message_get_member (message), "Hello") != 0)
    return message;

  g_assert_nonnull (body);
  g_assert_cmpstr (g_variant_get_type_string (body), ==, "(ua{sv})");
  options = g_variant_get_child_value (body, 1);
  direct = g_variant_lookup_value (options, STREAM_OPTION_DIRECT, NULL);
  if (direct != NULL)
    {
      g_autoptr(GError) error = NULL;

      g_assert_cmpstr (g_variant_get_type_string (direct), ==, "h");
      g_assert_nonnull (fds);
      fd = g_unix_fd_list_get (fds, g_variant_get_handle (direct), &error);
      g_assert_no_error (error);
    }
  else
    g_assert_null (fds);

  g_mutex_lock (&raw->hello_lock);
  g_assert_null (raw->server_hello);
  raw->server_hello = g_variant_ref (body);
  raw->offered_fd = fd;
  g_mutex_unlock (&raw->hello_lock);

  return message;
}

static gboolean
raw_hello_came (Raw *raw)
{
  gboolean came;

  g_mutex_lock (&raw->hello_lock);
  came = raw->server_hello != NULL;
  g_mutex_unlock (&raw->hello_lock);

  return came;
}

/* Waits for mpport's Hello, of version 1, and returns the socket it offered (transfer full),
 * or -1 if it offered none. */
static int
raw_wait_offer (Raw *raw)
{
  guint32 version;
  int fd;

  WAIT_FOR (raw->context, raw_hello_came (raw));
  g_mutex_lock (&raw->hello_lock);
  g_variant_get_child (raw->server_hello, 0, "u", &version);
  fd = raw->offered_fd;
  raw->offered_fd = -1;
  g_mutex_unlock (&raw->hello_lock);
  g_assert_cmpuint (version, ==, 1);

  return fd;
}

/* Our Hello; with raw->direct it asks for the direct path, which mpport's Hello must have
 * offered: from then on our data goes as frames on that socket, and what mpport writes there
 * is read. */
static void
raw_hello (Raw *raw)
{
  if (!raw->direct)
    {
      raw_emit (raw, "Hello", "(uint32 1, @a{sv} {})");
      return;
    }

  raw_emit (raw, "Hello", "(uint32 1, {'" STREAM_OPTION_DIRECT "': <true>})");
  raw->frames_fd = raw_wait_offer (raw);
  g_assert_cmpint (raw->frames_fd, >=, 0);
  raw->frames_source = g_unix_fd_source_new (raw->frames_fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
  g_source_set_callback (raw->frames_source, G_SOURCE_FUNC (on_raw_frames_readable), raw, NULL);
  g_source_attach (raw->frames_source, raw->context);
}

static GIOStream *
stream_for_fd (int fd)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocket) socket = g_socket_new_from_fd (fd, &error);

  g_assert_no_error (error);

  return G_IO_STREAM (g_socket_connection_factory_create_connection (socket));
}

/* A socketpair: mpport's end opened asynchronously as the server, ours a GDBus client that
 * has authenticated. Nothing of the protocol has been sent from our side yet; the port is
 * not started. */
static void
raw_setup (Raw           *raw,
           gconstpointer  data)
{
  g_autoptr(GIOStream) server_io = NULL;
  g_autoptr(GError) error = NULL;
  int fds[2];

  raw->context = context_push_new ();
  raw->log = g_string_new (NULL);
  raw->sent_signals = g_string_new (NULL);
  raw->sent_frames = g_string_new (NULL);
  raw->frames_in = g_byte_array_new ();
  raw->offered_fd = -1;
  raw->frames_fd = -1;
  g_mutex_init (&raw->hello_lock);

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  server_io = stream_for_fd (fds[0]);
  raw->client_io = stream_for_fd (fds[1]);
  raw->client_fd = fds[1];

  mp_message_port_new_for_stream (server_io, MP_STREAM_FLAGS_SERVER, NULL, on_raw_opened, raw);
  /* Blocks until both sides authenticated: mpport's side runs on its own thread. Nothing is
   * read before our filter and our subscription are in place (mpport sends its Hello at once). */
  raw->client = g_dbus_connection_new_sync (raw->client_io, NULL,
                                            G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                            G_DBUS_CONNECTION_FLAGS_DELAY_MESSAGE_PROCESSING,
                                            NULL, NULL, &error);
  g_assert_no_error (error);
  /* The socket is a Unix one: mpport can offer the direct path. */
  g_assert_true (g_dbus_connection_get_capabilities (raw->client) &
                 G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING);
  raw->filter_id = g_dbus_connection_add_filter (raw->client, raw_filter, raw, NULL);
  raw->subscription = g_dbus_connection_signal_subscribe (raw->client, NULL, STREAM_INTERFACE,
                                                          NULL, STREAM_PATH, NULL,
                                                          G_DBUS_SIGNAL_FLAGS_NONE,
                                                          on_raw_signal, raw, NULL);
  g_dbus_connection_start_message_processing (raw->client);
  if (raw->early_post != NULL)
    {
      raw_hello (raw);
      raw_emit (raw, "Post", raw->early_post);
    }
  WAIT_FOR (raw->context, raw->port != NULL);

  g_signal_connect (raw->port, "message", G_CALLBACK (on_raw_message), raw);
  g_signal_connect (raw->port, "message-error", G_CALLBACK (on_raw_message_error), raw);
  g_signal_connect (raw->port, "close", G_CALLBACK (on_raw_close), raw);
}

/* The same, asking for the direct path in our Hello. */
static void
raw_setup_direct (Raw           *raw,
                  gconstpointer  data)
{
  raw->direct = TRUE;
  raw_setup (raw, data);
}

static void
raw_teardown (Raw           *raw,
              gconstpointer  data)
{
  g_signal_handlers_disconnect_by_data (raw->port, raw);
  mp_message_port_close (raw->port);
  assert_finalized_eventually (raw->context, g_steal_pointer (&raw->port));
  /* With port 0, its last, closed mpport sends our side its Close and waits for us to end
   * the connection, as docs/wire.md asks of a peer; then it closes its end of the direct
   * path (we read to the end, so that we never close our end with its frames unread:
   * /mpport/process/protocol/direct/reset/unread-frame does). */
  WAIT_FOR (raw->context, g_dbus_connection_is_closed (raw->client) ||
                          strstr (raw->sent_signals->str, "C0 ") != NULL ||
                          strstr (raw->sent_frames->str, "C0 ") != NULL);
  /* Our end of the socket, shut for writing: mpport reads the end of the stream and closes
   * the connection. (Not g_dbus_connection_close(): on an open connection, GLib 2.74's
   * cancellable source races with GDBus's worker thread, as ThreadSanitizer shows.) */
  shutdown (raw->client_fd, SHUT_WR);
  WAIT_FOR (raw->context, g_dbus_connection_is_closed (raw->client) &&
                          (raw->frames_source == NULL || raw->frames_ended));
  /* Once closed, GDBus reads nothing more: the filter is done with raw. */
  g_dbus_connection_signal_unsubscribe (raw->client, raw->subscription);
  g_dbus_connection_close_sync (raw->client, NULL, NULL);
  g_dbus_connection_remove_filter (raw->client, raw->filter_id);
  g_clear_object (&raw->client);
  g_clear_object (&raw->client_io);
  if (raw->frames_source != NULL)
    {
      g_source_destroy (raw->frames_source);
      g_clear_pointer (&raw->frames_source, g_source_unref);
    }
  if (raw->frames_fd >= 0)
    close (raw->frames_fd);
  if (raw->offered_fd >= 0)
    close (raw->offered_fd);
  g_clear_pointer (&raw->server_hello, g_variant_unref);
  g_mutex_clear (&raw->hello_lock);
  /* After the context's last iterations: a signal may still be dispatched there. */
  context_pop_free (raw->context);
  g_byte_array_unref (raw->frames_in);
  g_string_free (raw->sent_frames, TRUE);
  g_string_free (raw->sent_signals, TRUE);
  g_string_free (raw->log, TRUE);
}

/* Our side closed its end of port 0: the port gets "close" after what came before. */
static void
raw_close_port0 (Raw *raw)
{
  raw_emit (raw, "Close", "([uint64 0],)");
}

/* The stream went away (a protocol violation or a broken connection): the port closes, and
 * so does our connection. Every warning expected meanwhile was given. */
static void
raw_assert_stream_closed (Raw *raw)
{
  WAIT_FOR (raw->context, g_str_has_suffix (raw->log->str, "close") &&
                          g_dbus_connection_is_closed (raw->client));
  g_test_assert_expected_messages ();
  assert_expected_warnings ();
  g_assert_true (mp_message_port_is_closed (raw->port));
}

/* GDBus's own warning when the fixed header of what it reads does not parse. */
static void
expect_gdbus_read_error (void)
{
  g_test_expect_message ("GLib-GIO", G_LOG_LEVEL_WARNING,
                         "*error determining bytes needed*");
}

/* One post of a Post signal, as this side means it. */
typedef struct
{
  guint64 port;
  const char *type;          /* "" for a NULL post */
  const char *bytes;         /* the serialized payload, n_bytes long */
  gsize n_bytes;
  guint n_transfers;
  guint64 transfers[2];
} RawPost;

/* The body of a Post carrying @posts: columns of basic types (mpport/mp-stream-private.h,
 * MP_STREAM_POST_TYPE): port ids, indexes into a table of type strings, the end of each
 * payload in the bytes of all of them, those bytes, how many ids each transfers, the ids. */
static GVariant *
raw_post_body (const RawPost *posts,
               guint          n_posts)
{
  g_autoptr(GArray) ports = g_array_new (FALSE, FALSE, sizeof (guint64));
  g_autoptr(GArray) types = g_array_new (FALSE, FALSE, sizeof (guint32));
  g_autoptr(GPtrArray) table = g_ptr_array_new ();
  g_autoptr(GArray) ends = g_array_new (FALSE, FALSE, sizeof (guint32));
  g_autoptr(GByteArray) payloads = g_byte_array_new ();
  g_autoptr(GArray) counts = g_array_new (FALSE, FALSE, sizeof (guint32));
  g_autoptr(GArray) transfers = g_array_new (FALSE, FALSE, sizeof (guint64));

  for (guint i = 0; i < n_posts; i++)
    {
      const RawPost *post = &posts[i];
      guint type_index;
      guint32 end, count = post->n_transfers;

      if (!g_ptr_array_find_with_equal_func (table, post->type, g_str_equal, &type_index))
        {
          type_index = table->len;
          g_ptr_array_add (table, (gpointer) post->type);
        }
      g_byte_array_append (payloads, (const guint8 *) post->bytes, post->n_bytes);
      end = payloads->len;
      g_array_append_val (ports, post->port);
      g_array_append_val (types, type_index);
      g_array_append_val (ends, end);
      g_array_append_val (counts, count);
      g_array_append_vals (transfers, post->transfers, post->n_transfers);
    }

  g_ptr_array_add (table, NULL);

  return g_variant_new ("(@at@au^as@au@ay@au@at)",
                        g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, ports->data,
                                                   ports->len, sizeof (guint64)),
                        g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32, types->data,
                                                   types->len, sizeof (guint32)),
                        (const char *const *) table->pdata,
                        g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32, ends->data,
                                                   ends->len, sizeof (guint32)),
                        g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, payloads->data,
                                                   payloads->len, 1),
                        g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32, counts->data,
                                                   counts->len, sizeof (guint32)),
                        g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, transfers->data,
                                                   transfers->len, sizeof (guint64)));
}

/* A Post of @posts, as a signal or, on the direct path, as a frame. */
static void
raw_post (Raw           *raw,
          const RawPost *posts,
          guint          n_posts)
{
  g_assert_true (raw_send_data (raw, "Post", raw_post_body (posts, n_posts)));
}

/* A uint32 post to port 0: its little-endian bytes. */
#define U32(b) { 0, "u", (const char[]) { b, 0, 0, 0 }, 4, 0, { 0 } }

/* One Post to port 0, valid and invalid posts interleaved; then a second Post; then the close
 * of port 0. */
static const RawPost interleaved[] = {
  U32 (0),
  /* "s" whose bytes lack the NUL: not in normal form */
  { 0, "s", "abc", 3, 0, { 0 } },
  U32 (1),
  /* "(ss)" whose framing offset points past the end */
  { 0, "(ss)", "a\0b\0\x09", 5, 0, { 0 } },
  U32 (2),
  /* not a type string */
  { 0, "(", "", 0, 0, { 0 } },
  /* a NULL post, valid */
  { 0, "", "", 0, 0, { 0 } },
  /* a type that is not definite */
  { 0, "a*", "", 0, 0, { 0 } },
  /* data without a type */
  { 0, "", "\x01", 1, 0, { 0 } },
  /* a handle */
  { 0, "h", "\0\0\0\0", 4, 0, { 0 } },
  /* a uint32 of 3 bytes */
  { 0, "u", "\x03\0\0", 3, 0, { 0 } },
  U32 (3),
};
static const RawPost interleaved_last[] = { U32 (4) };
#define INTERLEAVED_LOG "0 E 1 E 2 E N E E E E 3 "

static void
raw_post_interleaved (Raw *raw)
{
  raw_hello (raw);
  raw_post (raw, interleaved, G_N_ELEMENTS (interleaved));
  raw_post (raw, interleaved_last, G_N_ELEMENTS (interleaved_last));
  raw_close_port0 (raw);
}

/* Each post that does not decode becomes exactly one "message-error" (G_IO_ERROR_INVALID_DATA)
 * in its place; the valid ones around it arrive, and the stream stays up: the close of port
 * 0 arrives last, as a plain close without a warning. */
static void
test_protocol_message_error (Raw           *raw,
                             gconstpointer  data)
{
  mp_message_port_start (raw->port);
  raw_post_interleaved (raw);

  WAIT_FOR (raw->context, g_str_has_suffix (raw->log->str, "close"));
  g_assert_cmpstr (raw->log->str, ==, INTERLEAVED_LOG "4 close");
  /* Every port of the stream is closed: mpport shuts the connection. */
  WAIT_FOR (raw->context, g_dbus_connection_is_closed (raw->client));
}

typedef struct
{
  GString *log;
  gboolean done;
} RawReceive;

static void
on_raw_received (GObject      *source,
                 GAsyncResult *result,
                 gpointer      data)
{
  RawReceive *receive = data;
  MpMessagePort *port = MP_MESSAGE_PORT (source);
  g_autoptr(MpMessage) message = NULL;
  g_autoptr(GError) error = NULL;

  message = mp_message_port_receive_finish (port, result, &error);
  if (message != NULL)
    {
      GVariant *value = mp_message_get_data (message);

      g_assert_no_error (error);
      if (value == NULL)
        g_string_append (receive->log, "N ");
      else
        g_string_append_printf (receive->log, "%u ", g_variant_get_uint32 (value));
    }
  else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA))
    g_string_append (receive->log, "E ");
  else
    {
      g_assert_error (error, MP_ERROR, MP_ERROR_CLOSED);
      g_string_append (receive->log, "closed");
      receive->done = TRUE;
      return;
    }
  mp_message_port_receive_async (port, NULL, on_raw_received, receive);
}

/* The same through receive_async on the unstarted port: each bad post fails one receive
 * with G_IO_ERROR_INVALID_DATA, the next receive goes on; MP_ERROR_CLOSED at the end. */
static void
test_protocol_message_error_receive (Raw           *raw,
                                     gconstpointer  data)
{
  RawReceive receive = { g_string_new (NULL), FALSE };

  raw_post_interleaved (raw);
  mp_message_port_receive_async (raw->port, NULL, on_raw_received, &receive);

  WAIT_FOR (raw->context, receive.done);
  g_assert_cmpstr (receive.log->str, ==, INTERLEAVED_LOG "4 closed");
  g_string_free (receive.log, TRUE);
  g_assert_cmpstr (raw->log->str, ==, "");
}

/* The violations: each a sequence of signals (or one method call) that must close the
 * stream with the warning, after what was valid before it. */
typedef struct
{
  const char *member;
  const char *body;          /* GVariant text, or NULL for no body */
  gboolean method_call;      /* not a signal */
} RawSend;

typedef struct
{
  const char *name;
  const char *log;           /* what the port gets before its "close" */
  RawSend sends[4];
} Violation;

/* A Post of one uint32 post to port @port (a literal), whose low byte is @value, that
 * transfers the ids @transfers (a GVariant text array of uint64). */
#define POST_U32(port, value, n_transfers, transfers) \
  "([uint64 " #port "], [uint32 0], ['u'], [uint32 4], [byte " #value ", 0, 0, 0], " \
  "[uint32 " #n_transfers "], @at " transfers ")"

#define HELLO { "Hello", "(uint32 1, @a{sv} {})", FALSE }
#define POST_7 { "Post", POST_U32 (0, 7, 0, "[]"), FALSE }
#define POST_8_TO(port) { "Post", POST_U32 (port, 8, 0, "[]"), FALSE }

static const Violation violations[] = {
  /* 999 has the client's parity (odd) but was never announced. */
  { "unknown-port", "7 ", { HELLO, POST_7, POST_8_TO (999) } },
  /* The same id in a Close and in a Credit. */
  { "close-unknown-port", "7 ", { HELLO, POST_7, { "Close", "([uint64 999],)" } } },
  { "credit-unknown-port", "7 ", { HELLO, POST_7, { "Credit", "([(uint64 999, uint64 64)],)" } } },
  /* A credit must grant something, and at most 2^32 - 1. */
  { "credit-zero", "7 ", { HELLO, POST_7, { "Credit", "([(uint64 0, uint64 0)],)" } } },
  { "credit-huge", "7 ", { HELLO, POST_7, { "Credit", "([(uint64 0, uint64 4294967296)],)" } } },
  /* A Room for a port never announced, and one that says more was taken than was ever
   * sent there (we sent nothing on port 0). */
  { "room-unknown-port", "7 ",
    { HELLO, POST_7, { "Room", "([(uint64 999, uint32 4, uint32 0)],)" } } },
  { "room-taken-unsent", "7 ", { HELLO, POST_7, { "Room", "([(uint64 0, uint32 4, uint32 1)],)" } } },
  { "room-body-type", "7 ", { HELLO, POST_7, { "Room", "([(uint64 0, uint32 4)],)" } } },
  /* Nothing comes before Hello. */
  { "no-hello", "", { POST_7, HELLO, POST_7 } },
  { "version-2", "", { { "Hello", "(uint32 2, @a{sv} {})" }, POST_7 } },
  { "version-0", "", { { "Hello", "(uint32 0, @a{sv} {})" }, POST_7 } },
  /* Bodies of the wrong type. */
  { "hello-body-type", "", { { "Hello", "('1',)" }, POST_7 } },
  { "hello-no-body", "", { { "Hello", NULL }, POST_7 } },
  { "post-body-type", "7 ",
    { HELLO, POST_7, { "Post", "([(uint64 0, ('u', [byte 8, 0, 0, 0]), @at [])],)" } } },
  { "post-no-body", "7 ", { HELLO, POST_7, { "Post", NULL } } },
  { "close-body-type", "7 ", { HELLO, POST_7, { "Close", "([uint32 0],)" } } },
  { "credit-body-type", "7 ", { HELLO, POST_7, { "Credit", "([uint64 0],)" } } },
  /* Other messages of the interface. */
  { "second-hello", "7 ", { HELLO, POST_7, HELLO, POST_7 } },
  { "unknown-member", "7 ", { HELLO, POST_7, { "Ping", "()" }, POST_7 } },
  { "method-call", "7 ", { HELLO, POST_7, { "Post", POST_U32 (0, 8, 0, "[]"), TRUE } } },
  /* Columns that do not fit together. */
  { "columns-differ", "7 ",
    { HELLO, POST_7,
      { "Post", "([uint64 0, 0], [uint32 0], ['u'], [uint32 4], [byte 8, 0, 0, 0], "
                "[uint32 0], @at [])" } } },
  { "type-index", "7 ",
    { HELLO, POST_7,
      { "Post", "([uint64 0], [uint32 1], ['u'], [uint32 4], [byte 8, 0, 0, 0], "
                "[uint32 0], @at [])" } } },
  { "ends-backwards", "7 ",
    { HELLO, POST_7,
      { "Post", "([uint64 0, 0], [uint32 0, 0], ['u'], [uint32 4, 0], [byte 8, 0, 0, 0], "
                "[uint32 0, 0], @at [])" } } },
  { "ends-past-payloads", "7 ",
    { HELLO, POST_7,
      { "Post", "([uint64 0], [uint32 0], ['u'], [uint32 8], [byte 8, 0, 0, 0], "
                "[uint32 0], @at [])" } } },
  { "payloads-left-over", "7 ",
    { HELLO, POST_7,
      { "Post", "([uint64 0], [uint32 0], ['u'], [uint32 4], [byte 8, 0, 0, 0, 9], "
                "[uint32 0], @at [])" } } },
  { "transfers-left-over", "7 ", { HELLO, POST_7, { "Post", POST_U32 (0, 8, 0, "[uint64 3]") } } },
  { "transfers-missing", "7 ", { HELLO, POST_7, { "Post", POST_U32 (0, 8, 1, "@at []") } } },
  /* A transferred port must have a new id of the sender's parity: 2 is the server's. */
  { "transfer-own-parity", "7 ", { HELLO, POST_7, { "Post", POST_U32 (0, 8, 1, "[uint64 2]") } } },
  /* 0 is the stream's first port, never a new one. */
  { "transfer-id-0", "7 ", { HELLO, POST_7, { "Post", POST_U32 (0, 8, 1, "[uint64 0]") } } },
  /* Ids only grow: 3 again after 5 (the first post, a NULL one, carried 3 and 5). */
  { "transfer-id-reused", "7 N ",
    { HELLO, POST_7,
      { "Post", "([uint64 0], [uint32 0], [''], [uint32 0], @ay [], [uint32 2], [uint64 3, 5])" },
      { "Post", POST_U32 (0, 8, 1, "[uint64 3]") } } },
};

/* Whether @send goes as a frame once the direct path is open. */
static gboolean
raw_send_is_frame (const RawSend *send)
{
  return !send->method_call && frame_kind (send->member) != 0;
}

/* Whether the violation plays on the direct path too, with a Hello that asks for it: it starts
 * with a plain Hello (then the socket is ours), and each of its frames has a body of its
 * kind's type. A frame has no type of its own: a body that lacks or has another type is bytes
 * read as the kind's type (/mpport/process/protocol/direct/frame/not-normal-…), and an empty
 * one is the normal form of an empty Post, Close or Credit. */
static gboolean
violation_plays_direct (const Violation *violation)
{
  static const char *const types[] = { NULL, STREAM_POST_TYPE, STREAM_CLOSE_TYPE,
                                       STREAM_CREDIT_TYPE, STREAM_ROOM_TYPE };

  if (!g_str_equal (violation->sends[0].member, "Hello") || violation->sends[0].body == NULL ||
      !g_str_equal (violation->sends[0].body, "(uint32 1, @a{sv} {})"))
    return FALSE;
  for (guint i = 1; i < G_N_ELEMENTS (violation->sends) && violation->sends[i].member != NULL; i++)
    {
      const RawSend *send = &violation->sends[i];
      g_autoptr(GVariant) body = NULL;

      if (!raw_send_is_frame (send))
        continue;
      if (send->body == NULL)
        return FALSE;
      body = g_variant_ref_sink (g_variant_new_parsed (send->body));
      if (!g_str_equal (g_variant_get_type_string (body), types[frame_kind (send->member)]))
        return FALSE;
    }

  return TRUE;
}

/* Sends @send. Once the violation was read, mpport may have closed the stream already: a
 * later send then fails with G_IO_ERROR_CLOSED (or finds mpport's end of the direct path
 * closed), which is fine. */
static void
raw_send (Raw           *raw,
          const RawSend *send)
{
  g_autoptr(GError) error = NULL;

  if (!send->method_call)
    raw_send_data (raw, send->member,
                   send->body != NULL ? g_variant_new_parsed (send->body) : NULL);
  else
    {
      g_autoptr(GDBusMessage) message = g_dbus_message_new_method_call (NULL, STREAM_PATH,
                                                                        STREAM_INTERFACE,
                                                                        send->member);

      g_dbus_message_set_body (message, g_variant_new_parsed (send->body));
      g_dbus_message_set_flags (message, G_DBUS_MESSAGE_FLAGS_NO_REPLY_EXPECTED);
      g_dbus_connection_send_message (raw->client, message, G_DBUS_SEND_MESSAGE_FLAGS_NONE, NULL,
                                      &error);
    }
  if (error != NULL)
    g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CLOSED);
}

static void
on_violation_message (MpMessagePort *port,
                      MpMessage     *message,
                      gpointer       data)
{
  Raw *raw = data;

  /* The transfer-id-reused case's NULL post carries two ports: closed, not used. */
  for (guint i = 0; i < mp_message_get_ports (message)->len; i++)
    mp_message_port_close (g_ptr_array_index (mp_message_get_ports (message), i));
  if (mp_message_get_data (message) == NULL)
    g_string_append (raw->log, "N ");
  else
    g_string_append_printf (raw->log, "%u ", g_variant_get_uint32 (mp_message_get_data (message)));
}

static void
test_protocol_violation (Raw           *raw,
                         gconstpointer  data)
{
  const Violation *violation = data;
  g_autofree char *expected = g_strconcat (violation->log, "close", NULL);

  /* The handler of the ports a message may carry replaces the plain one. */
  g_signal_handlers_disconnect_by_func (raw->port, on_raw_message, raw);
  g_signal_connect (raw->port, "message", G_CALLBACK (on_violation_message), raw);
  mp_message_port_start (raw->port);

  expect_broken_protocol ();
  for (guint i = 0; i < G_N_ELEMENTS (violation->sends) && violation->sends[i].member != NULL; i++)
    {
      const RawSend *send = &violation->sends[i];

      if (raw->direct && i == 0)
        {
          raw_hello (raw);
          continue;
        }
      /* On the direct path a signal and a frame are not ordered (two sockets): the signal goes
       * once the frames before it, the valid part of the violation, were delivered; and the
       * signal is the violation, so the frames after it could still be read before it. */
      if (raw->direct && !raw_send_is_frame (send))
        {
          WAIT_FOR (raw->context, g_str_equal (raw->log->str, violation->log));
          raw_send (raw, send);
          break;
        }
      raw_send (raw, send);
    }

  raw_assert_stream_closed (raw);
  g_assert_cmpstr (raw->log->str, ==, expected);
}

typedef struct
{
  MpMessagePort *port;   /* the port that arrived, or NULL */
} ArrivedPort;

static void
on_port_arrived (MpMessagePort *port,
                 MpMessage     *message,
                 gpointer       data)
{
  ArrivedPort *arrived = data;

  g_assert_null (arrived->port);
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 1);
  arrived->port = g_object_ref (g_ptr_array_index (mp_message_get_ports (message), 0));
}

/* A port that arrives in the first Post, sent the moment the connection is authenticated,
 * while mpport may still be setting the connection up: what its application posts on it
 * goes back once (one post for its id, then its Close). Repeated, because the first Post
 * can arrive before or after mpport's side finished its set-up. @data: on the direct path
 * (our Hello, then the Post as a frame, right after mpport's Hello came): then everything
 * comes back as frames, else as signals. */
static void
test_protocol_transfer_at_start (gconstpointer data)
{
  const gboolean direct = GPOINTER_TO_INT (data);
  const guint rounds = scaled (200);

  for (guint round = 0; round < rounds; round++)
    {
      Raw raw = { NULL, };
      ArrivedPort arrived = { NULL };
      g_autoptr(GError) error = NULL;
      GString *sent;

      /* A NULL post that transfers our port 1. */
      raw.early_post = "([uint64 0], [uint32 0], [''], [uint32 0], @ay [], [uint32 1], [uint64 1])";
      raw.direct = direct;
      raw_setup (&raw, NULL);
      sent = direct ? raw.sent_frames : raw.sent_signals;

      g_signal_handlers_disconnect_by_func (raw.port, on_raw_message, &raw);
      g_signal_connect (raw.port, "message", G_CALLBACK (on_port_arrived), &arrived);
      mp_message_port_start (raw.port);
      WAIT_FOR (raw.context, arrived.port != NULL);

      g_assert_true (mp_message_port_post (arrived.port, g_variant_new_uint32 (9), &error));
      g_assert_no_error (error);
      mp_message_port_close (arrived.port);
      WAIT_FOR (raw.context, strstr (sent->str, "C1 ") != NULL);
      g_assert_cmpstr (sent->str, ==, "P1 C1 ");
      g_assert_cmpstr ((direct ? raw.sent_signals : raw.sent_frames)->str, ==, "");

      g_clear_object (&arrived.port);
      g_signal_handlers_disconnect_by_func (raw.port, on_port_arrived, &arrived);
      raw_teardown (&raw, NULL);
    }
}

/* Writes @n bytes of @data straight onto our socket, past GDBus. */
static void
raw_write (Raw        *raw,
           const void *data,
           gsize       n)
{
  g_autoptr(GError) error = NULL;

  /* What GDBus queued goes first, whole. */
  g_assert_true (g_dbus_connection_flush_sync (raw->client, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpint (write (raw->client_fd, data, n), ==, (gssize) n);
}

/* Bytes that are not a D-Bus message after a valid start: GDBus on mpport's side cannot
 * parse the header ('g' is no byte order), warns, and closes the connection; the port closes
 * after what came before. mpport adds no warning of its own: the peer did not break mpport's
 * protocol, its D-Bus connection broke. */
static void
test_protocol_garbage (Raw           *raw,
                       gconstpointer  data)
{
  static const char garbage[] = "garbage, not a D-Bus message at all";

  mp_message_port_start (raw->port);
  raw_hello (raw);
  raw_emit (raw, "Post", POST_U32 (0, 7, 0, "[]"));
  expect_gdbus_read_error ();
  raw_write (raw, garbage, sizeof garbage);

  raw_assert_stream_closed (raw);
  g_assert_cmpstr (raw->log->str, ==, "7 close");
}

/* The first 10 bytes of a valid Post, then the end of our writes: GDBus on mpport's side
 * sees the stream end inside a message's header and closes the connection; the port closes
 * after the valid post before it, silently. */
static void
test_protocol_truncated (Raw           *raw,
                         gconstpointer  data)
{
  g_autoptr(GDBusMessage) message = g_dbus_message_new_signal (STREAM_PATH, STREAM_INTERFACE,
                                                               "Post");
  g_autoptr(GError) error = NULL;
  g_autofree guchar *blob = NULL;
  gsize size;

  mp_message_port_start (raw->port);
  raw_hello (raw);
  raw_emit (raw, "Post", POST_U32 (0, 7, 0, "[]"));

  g_dbus_message_set_body (message,
                           g_variant_new_parsed (POST_U32 (0, 8, 0, "[]")));
  g_dbus_message_set_serial (message, 1000);
  blob = g_dbus_message_to_blob (message, &size, G_DBUS_CAPABILITY_FLAGS_NONE, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (size, >, 10);
  raw_write (raw, blob, 10);
  g_assert_cmpint (shutdown (raw->client_fd, SHUT_WR), ==, 0);

  raw_assert_stream_closed (raw);
  g_assert_cmpstr (raw->log->str, ==, "7 close");
}

static gsize
resident_bytes (void)
{
  g_autofree char *statm = NULL;
  g_auto(GStrv) fields = NULL;

  g_assert_true (g_file_get_contents ("/proc/self/statm", &statm, NULL, NULL));
  fields = g_strsplit (statm, " ", -1);
  g_assert_cmpuint (g_strv_length (fields), >=, 2);

  return g_ascii_strtoull (fields[1], NULL, 10) * (gsize) sysconf (_SC_PAGESIZE);
}

/* The child posts a burst to a port we do not read: the window (docs/wire.md: 1 MiB of cost
 * per port, granted back as our application takes messages) keeps what reaches this process
 * bounded, whatever the child sends. Unbounded, the burst takes about 80 MB here, and the
 * pause gives the child the time to send most of it; with the window, our resident size grows
 * by a few MiB. Then every message still arrives, once and in order. (Not measured under
 * valgrind, whose resident size means something else.) */
static void
test_flood (Fixture       *f,
            gconstpointer  data)
{
  const guint32 n = scaled (400000);
  gboolean measure = !RUNNING_ON_VALGRIND && g_file_test ("/proc/self/statm", G_FILE_TEST_EXISTS);
  gsize before = measure ? resident_bytes () : 0;

  post_command (f, "burst", g_variant_new_uint32 (n));
  g_usleep (3 * G_USEC_PER_SEC / 2);
  if (measure)
    {
      gsize after = resident_bytes ();

      g_assert_cmpuint (after - MIN (after, before), <, 32 * 1024 * 1024);
    }

  mp_message_port_start (f->rec.port);
  WAIT_FOR (f->context, f->rec.received->len == n);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (f->rec.received->len, ==, n);
  assert_seqs (&f->rec, 0, "seq", n);
}

/* A header claiming a body of 200 MiB, more than D-Bus's 128 MiB limit: GDBus on mpport's
 * side refuses it from the 16 bytes of the fixed header, before allocating anything, warns
 * and closes the connection; the port closes after the valid post before it. The resident size
 * does not grow by the claim. */
static void
test_protocol_oversized (Raw           *raw,
                         gconstpointer  data)
{
  const guint32 body_length = GUINT32_TO_LE (200 * 1024 * 1024);
  const guint32 serial = GUINT32_TO_LE (1000);
  const guint32 fields_length = GUINT32_TO_LE (0);
  guchar header[16] = { 'l', G_DBUS_MESSAGE_TYPE_SIGNAL, 0, 1 };
  gsize before;
  gsize after;

  if (!g_file_test ("/proc/self/statm", G_FILE_TEST_EXISTS))
    {
      g_test_skip ("no /proc/self/statm");
      return;
    }
  memcpy (header + 4, &body_length, 4);
  memcpy (header + 8, &serial, 4);
  memcpy (header + 12, &fields_length, 4);

  mp_message_port_start (raw->port);
  raw_hello (raw);
  raw_emit (raw, "Post", POST_U32 (0, 7, 0, "[]"));
  WAIT_FOR (raw->context, raw->log->len > 0);

  before = resident_bytes ();
  expect_gdbus_read_error ();
  raw_write (raw, header, sizeof header);
  raw_assert_stream_closed (raw);
  after = resident_bytes ();

  g_assert_cmpstr (raw->log->str, ==, "7 close");
  g_test_message ("resident: %" G_GSIZE_FORMAT " KiB before, %" G_GSIZE_FORMAT " KiB after",
                  before / 1024, after / 1024);
  g_assert_cmpuint (after, <, before + 50 * 1024 * 1024);
}

/* ------------------------------------------------------------------------------------------
 * The direct path, spoken by the test itself
 */

static const RawPost post_7[] = { U32 (7) };

/* The port closes after what came before, without a warning (none is expected): the stream
 * ended, it was not broken. mpport then shuts the connection, and its end of the direct
 * path. */
static void
raw_assert_stream_ended (Raw *raw)
{
  WAIT_FOR (raw->context, g_str_has_suffix (raw->log->str, "close") &&
                          g_dbus_connection_is_closed (raw->client) &&
                          (raw->frames_fd < 0 || raw->frames_ended));
  assert_expected_warnings ();
  g_assert_true (mp_message_port_is_closed (raw->port));
}

/* On the direct path the data goes as frames both ways, and never as signals: our Post frame
 * is delivered, the port's own post comes back as a Post frame, our Credit frame for it is
 * taken (it grants exactly what was sent), and our Close frame of port 0 closes the port
 * without a warning; mpport then shuts the connection and its end of the socket. */
static void
test_protocol_direct_post (Raw           *raw,
                           gconstpointer  data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *credit = g_strdup_printf ("([(uint64 0, uint64 %u)],)",
                                             STREAM_COST_OVERHEAD + 4);

  mp_message_port_start (raw->port);
  raw_hello (raw);
  raw_post (raw, post_7, G_N_ELEMENTS (post_7));
  WAIT_FOR (raw->context, g_str_equal (raw->log->str, "7 "));

  g_assert_true (mp_message_port_post (raw->port, g_variant_new_uint32 (9), &error));
  g_assert_no_error (error);
  WAIT_FOR (raw->context, g_str_equal (raw->sent_frames->str, "P0 "));
  raw_emit (raw, "Credit", credit);
  raw_close_port0 (raw);

  raw_assert_stream_ended (raw);
  g_assert_cmpstr (raw->log->str, ==, "7 close");
  g_assert_cmpstr (raw->sent_frames->str, ==, "P0 ");
  g_assert_cmpstr (raw->sent_signals->str, ==, "");
}

/* What breaks the direct path, written on its socket after a valid Post frame of 7. */
typedef struct
{
  const char *name;
  /* The warning (a pattern), or NULL: the stream ends without one. */
  const char *warning;
  const char *bytes;
  gsize n_bytes;
  gboolean shut;             /* then the end of our writes */
  /* The length the frame claims, when it is so large that the resident size must show
   * whether it was allocated (and touched); 0 otherwise. */
  guint64 claimed;
} FrameFault;

#define BROKE "mpport: closing a stream to another process, which broke the protocol: "
#define BYTES(literal) literal, sizeof literal - 1

static const FrameFault frame_faults[] = {
  /* A kind that is not Post, Close or Credit (with a body of 5 bytes). */
  { "unknown-kind", BROKE "*unknown kind 9*", BYTES ("\x06\0\0\0\x09hello"), FALSE },
  { "kind-zero", BROKE "*kind 0*", BYTES ("\x01\0\0\0\0"), FALSE },
  /* The body of a Close is an array of uint64: 3 bytes are not one in normal form; nor are
   * 8 bytes an array of (uint64, uint64), the body of a Credit. */
  { "not-normal-close", BROKE "*Close*normal form*", BYTES ("\x04\0\0\0\x02\x01\x02\x03"),
    FALSE },
  { "not-normal-credit", BROKE "*Credit*normal form*",
    BYTES ("\x09\0\0\0\x03\0\0\0\0\0\0\0\0"), FALSE },
  /* A Post body is not checked for normal form as a whole (docs/wire.md): this one, a post of
   * a uint32 8 to port 0 whose framing offset of the types (the last but one byte) was moved
   * back from 12 to 8, reads as a column of no types beside one port. */
  { "not-normal-post", BROKE "*columns*",
    BYTES ("\x27\0\0\0\x01"
           "\0\0\0\0\0\0\0\0" "\0\0\0\0" "u\0\x02\0" "\x04\0\0\0" "\x08\0\0\0" "\0\0\0\0"
           "\0\0\0\0" "\x1c\x18\x14\x0f\x08\x08"), FALSE },
  { "length-zero", BROKE "*frame of 0 bytes*", BYTES ("\0\0\0\0"), FALSE },
  /* One byte over the limit, and the largest length: refused from the 4 bytes of the length,
   * before anything is read or allocated for them. */
  { "length-over-limit", BROKE "*frame of 33554433 bytes*", BYTES ("\x01\0\0\x02\x01"), FALSE },
  { "length-huge", BROKE "*frame of 4294967295 bytes*", BYTES ("\xff\xff\xff\xff\x01"), FALSE,
    G_MAXUINT32 },
  /* The limit itself is a length like any other: this frame only ends too early. */
  { "length-at-limit", BROKE "*ended inside a frame*", BYTES ("\0\0\0\x02\x01\0\0\0"), TRUE },
  /* Our end of the socket comes inside a frame: in its length, or in its body. */
  { "truncated-length", BROKE "*ended inside a frame*", BYTES ("\x05\0"), TRUE },
  { "truncated-body", BROKE "*ended inside a frame*", BYTES ("\x09\0\0\0\x02\0\0\0"), TRUE },
  /* Our end of the socket between frames: the stream ends after the post, quietly. */
  { "eof", NULL, BYTES (""), TRUE },
};

/* We close our end of the direct path with a frame from mpport unread, as a process does that
 * exits or dies while data is on its way to it: mpport's next read fails with ECONNRESET. That
 * is the end of the stream, as the end of the socket is: the port closes after what came
 * before, without a warning. (A warning is taken here, so that it fails this case only.) */
static void
test_protocol_frame_reset (Raw           *raw,
                           gconstpointer  data)
{
  g_autoptr(GError) error = NULL;
  struct pollfd pfd = { .events = POLLIN };
  guint left;

  mp_message_port_start (raw->port);
  raw_hello (raw);
  raw_post (raw, post_7, G_N_ELEMENTS (post_7));
  WAIT_FOR (raw->context, g_str_equal (raw->log->str, "7 "));

  /* The port's post reaches our socket, and stays there. */
  g_source_destroy (raw->frames_source);
  g_clear_pointer (&raw->frames_source, g_source_unref);
  g_assert_true (mp_message_port_post (raw->port, g_variant_new_uint32 (9), &error));
  g_assert_no_error (error);
  pfd.fd = raw->frames_fd;
  g_assert_cmpint (poll (&pfd, 1, (int) (WAIT_TIMEOUT_USEC / 1000)), ==, 1);

  expect_warning (BROKE "*");
  g_assert_cmpint (close (g_steal_fd (&raw->frames_fd)), ==, 0);
  WAIT_FOR (raw->context, g_str_has_suffix (raw->log->str, "close") &&
                          g_dbus_connection_is_closed (raw->client));
  g_mutex_lock (&expected_lock);
  left = g_queue_get_length (&expected_warnings);
  g_queue_clear (&expected_warnings);
  g_mutex_unlock (&expected_lock);
  if (left == 0)
    g_test_fail_printf ("mpport took the reset of the direct path for a broken protocol");
  g_assert_cmpstr (raw->log->str, ==, "7 close");
}

/* What breaks the framing closes the stream after what was read before it, with the warning
 * that says why; the resident size does not grow by a huge length that is claimed (a
 * sixteenth of it leaves room for the sanitizers' allocators). A clean end of the socket ends
 * the stream after what was read, quietly. Either way mpport shuts the connection and closes
 * its end of the socket. */
static void
test_protocol_frame_fault (Raw           *raw,
                           gconstpointer  data)
{
  const FrameFault *fault = data;
  gboolean measure = fault->claimed > 0 && g_file_test ("/proc/self/statm", G_FILE_TEST_EXISTS);
  gsize before = 0;

  mp_message_port_start (raw->port);
  raw_hello (raw);
  raw_post (raw, post_7, G_N_ELEMENTS (post_7));
  WAIT_FOR (raw->context, raw->log->len > 0);

  if (measure)
    before = resident_bytes ();
  if (fault->warning != NULL)
    expect_warning (fault->warning);
  g_assert_true (raw_frames_write (raw, fault->bytes, fault->n_bytes));
  if (fault->shut)
    g_assert_cmpint (shutdown (raw->frames_fd, SHUT_WR), ==, 0);

  if (fault->warning != NULL)
    raw_assert_stream_closed (raw);
  else
    raw_assert_stream_ended (raw);
  WAIT_FOR (raw->context, raw->frames_ended);
  g_assert_cmpstr (raw->log->str, ==, "7 close");
  g_assert_cmpstr (raw->sent_signals->str, ==, "");
  if (measure)
    {
      gsize after = resident_bytes ();

      g_test_message ("resident: %" G_GSIZE_FORMAT " KiB before, %" G_GSIZE_FORMAT " KiB after",
                      before / 1024, after / 1024);
      g_assert_cmpuint (after, <, before + fault->claimed / 16);
    }
}

/* Once the direct path is open, a Post, Close or Credit signal breaks the protocol, even a
 * valid one: the stream closes after the frames before it, with the warning. */
static const RawSend direct_signals[] = {
  { "Post", POST_U32 (0, 8, 0, "[]"), FALSE },
  { "Close", "([uint64 0],)", FALSE },
  { "Credit", "([(uint64 0, uint64 64)],)", FALSE },
};

static void
test_protocol_direct_signal (Raw           *raw,
                             gconstpointer  data)
{
  const RawSend *send = data;

  mp_message_port_start (raw->port);
  raw_hello (raw);
  raw_post (raw, post_7, G_N_ELEMENTS (post_7));
  /* The frame went on another socket: the signal goes once it was delivered. */
  WAIT_FOR (raw->context, g_str_equal (raw->log->str, "7 "));

  expect_warning (BROKE "*signal on a stream whose data takes the direct path*");
  raw_emit_signal (raw, send->member, send->body);

  raw_assert_stream_closed (raw);
  WAIT_FOR (raw->context, raw->frames_ended);
  g_assert_cmpstr (raw->log->str, ==, "7 close");
}

/* Hellos that do not ask for the direct path, which mpport offered. */
typedef struct
{
  const char *name;
  const char *hello;
} Decline;

static const Decline declines[] = {
  { "no-option", "(uint32 1, @a{sv} {})" },
  { "false", "(uint32 1, {'" STREAM_OPTION_DIRECT "': <false>})" },
  /* A client's option is a boolean: a handle, or a string, is not an answer. */
  { "not-boolean", "(uint32 1, {'" STREAM_OPTION_DIRECT "': <'yes'>})" },
};

/* mpport offers the direct path (the connection passes file descriptors) and we decline it:
 * the data goes as signals both ways, mpport closes its end of the socket it offered, and
 * what we wrote there before our Hello is never read. */
static void
test_protocol_direct_declined (Raw           *raw,
                               gconstpointer  data)
{
  const Decline *decline = data;
  g_autoptr(GBytes) frame = frame_new (FRAME_POST, g_variant_new_parsed (POST_U32 (0, 8, 0, "[]")));
  g_autoptr(GError) error = NULL;
  int fd;
  guint8 byte;

  mp_message_port_start (raw->port);
  fd = raw_wait_offer (raw);
  g_assert_cmpint (fd, >=, 0);
  g_assert_true (fd_write_all (fd, g_bytes_get_data (frame, NULL), g_bytes_get_size (frame)));

  raw_emit (raw, "Hello", decline->hello);
  raw_post (raw, post_7, G_N_ELEMENTS (post_7));
  WAIT_FOR (raw->context, g_str_equal (raw->log->str, "7 "));
  g_assert_true (mp_message_port_post (raw->port, g_variant_new_uint32 (9), &error));
  g_assert_no_error (error);
  WAIT_FOR (raw->context, g_str_equal (raw->sent_signals->str, "P0 "));

  /* The end of the socket (a reset: what we wrote there is unread). */
  WAIT_FOR (raw->context, recv (fd, &byte, 1, MSG_DONTWAIT) == 0 || errno == ECONNRESET);
  g_assert_cmpint (close (fd), ==, 0);

  raw_close_port0 (raw);
  raw_assert_stream_ended (raw);
  g_assert_cmpstr (raw->log->str, ==, "7 close");
  g_assert_cmpstr (raw->sent_signals->str, ==, "P0 ");
}

/* Under MPPORT_STREAM_SIGNALS_ONLY (the test-process-signals run) mpport offers no direct
 * path, not even to a client that asks for one: its Hello has no "direct" option and passes
 * no file descriptor, and the data goes as signals. */
static void
test_protocol_no_offer (Raw           *raw,
                        gconstpointer  data)
{
  g_autoptr(GError) error = NULL;

  mp_message_port_start (raw->port);
  raw_emit (raw, "Hello", "(uint32 1, {'" STREAM_OPTION_DIRECT "': <true>})");
  /* Our filter saw no "direct" option, and no file descriptor. */
  g_assert_cmpint (raw_wait_offer (raw), ==, -1);

  raw_post (raw, post_7, G_N_ELEMENTS (post_7));
  WAIT_FOR (raw->context, g_str_equal (raw->log->str, "7 "));
  g_assert_true (mp_message_port_post (raw->port, g_variant_new_uint32 (9), &error));
  g_assert_no_error (error);
  WAIT_FOR (raw->context, g_str_equal (raw->sent_signals->str, "P0 "));

  raw_close_port0 (raw);
  raw_assert_stream_ended (raw);
  g_assert_cmpstr (raw->log->str, ==, "7 close");
}

typedef void (*ChildTest) (Fixture       *f,
                           gconstpointer  data);

/* Two threads post on the stream's port at once, each its own numbered echoes; every
 * seventh of one thread's carries a port of a new channel. A post without ports leaves from
 * its poster's thread when nothing waits ahead of it at the relay, a post with ports takes
 * the relay (and the posts after it, until it is sent): each thread's echoes come back once,
 * in its order, with its ports where they were. */
typedef struct
{
  MpMessagePort *port;
  guint32 thread;
  guint32 n;
} MixedPoster;

static gpointer
mixed_poster (gpointer data)
{
  MixedPoster *poster = data;

  for (guint32 i = 0; i < poster->n; i++)
    {
      GVariant *echo = g_variant_new ("(sv)", "echo",
                                      g_variant_new ("(uu)", poster->thread, i));

      if (poster->thread == 1 && i % 7 == 0)
        {
          g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();

          post_with_port (poster->port, echo, mp_message_channel_get_port2 (channel));
        }
      else
        {
          g_autoptr(GError) error = NULL;

          g_assert_true (mp_message_port_post (poster->port, echo, &error));
          g_assert_no_error (error);
        }
    }

  return NULL;
}

static void
test_mixed_posters (Fixture       *f,
                    gconstpointer  data)
{
  const guint32 n = scaled (20000);
  MixedPoster posters[2] = { { f->rec.port, 0, n }, { f->rec.port, 1, n } };
  GThread *threads[2];
  guint32 next[2] = { 0, 0 };

  /* Once the stream is up, so that posts can leave from the posters' threads. */
  wait_stream_up (f);
  mp_message_port_start (f->rec.port);
  for (guint t = 0; t < 2; t++)
    threads[t] = g_thread_new ("mixed-poster", mixed_poster, &posters[t]);
  for (guint t = 0; t < 2; t++)
    g_thread_join (threads[t]);

  WAIT_FOR (f->context, f->rec.received->len == 2 * n);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (f->rec.received->len, ==, 2 * n);
  for (guint i = 0; i < f->rec.received->len; i++)
    {
      MpMessage *message = g_ptr_array_index (f->rec.received, i);
      const char *command;
      g_autoptr(GVariant) arg = NULL;
      guint32 thread, seq;

      g_variant_get (mp_message_get_data (message), "(&sv)", &command, &arg);
      g_assert_cmpstr (command, ==, "echo");
      g_variant_get (arg, "(uu)", &thread, &seq);
      g_assert_cmpuint (thread, <, 2);
      g_assert_cmpuint (seq, ==, next[thread]);
      next[thread]++;
      g_assert_cmpuint (mp_message_get_ports (message)->len, ==,
                        thread == 1 && seq % 7 == 0 ? 1 : 0);
    }

  mp_message_port_close (f->rec.port);
  wait_child_success (f);
}

/* The cases with a child, registered under the run's path. */
static const struct
{
  const char *name;
  ChildTest test;
} child_cases[] = {
  { "echo", test_echo },
  { "burst", test_burst },
  { "flood", test_flood },
  { "paced", test_paced },
  { "paced/consumed", test_paced_consumed },
  { "close/by-parent", test_close_by_parent },
  { "close/by-child", test_close_by_child },
  { "close/by-exit", test_close_by_exit },
  { "receive-async", test_receive_async },
  { "mixed-posters", test_mixed_posters },
  { "transfer/to-child", test_transfer_to_child },
  { "transfer/from-child", test_transfer_from_child },
  { "transfer/round-trip", test_transfer_round_trip },
  { "transfer/nested", test_transfer_nested },
  { "transfer/nested-from-child", test_transfer_nested_from_child },
  { "kill", test_kill },
  { "path", test_path },
};

static void
add_child_cases (const char *prefix,
                 const Mode *mode)
{
  for (guint i = 0; i < G_N_ELEMENTS (child_cases); i++)
    {
      g_autofree char *path = g_strconcat (prefix, child_cases[i].name, NULL);

      g_test_add (path, Fixture, mode, fixture_setup, child_cases[i].test, fixture_teardown);
    }
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  g_log_set_writer_func (expecting_writer, NULL, NULL);

  /* mpport reads it once per process: the run is on signals or it is not
   * (tests/meson.build runs this binary both ways). */
  if (g_getenv (SIGNALS_ONLY_ENV) != NULL)
    {
      add_child_cases ("/mpport/process/signals/", &signals_mode);
      g_test_add ("/mpport/process/mixed/parent-on-signals", Fixture, &parent_on_signals_mode,
                  fixture_setup, test_path, fixture_teardown);
      g_test_add ("/mpport/process/protocol/signals-only/no-offer", Raw, NULL, raw_setup,
                  test_protocol_no_offer, raw_teardown);

      return g_test_run ();
    }

  add_child_cases ("/mpport/process/direct/", &direct_mode);
  g_test_add ("/mpport/process/mixed/child-on-signals", Fixture, &child_on_signals_mode,
              fixture_setup, test_path, fixture_teardown);

  g_test_add ("/mpport/process/protocol/message-error", Raw, NULL, raw_setup,
              test_protocol_message_error, raw_teardown);
  g_test_add ("/mpport/process/protocol/message-error-receive", Raw, NULL, raw_setup,
              test_protocol_message_error_receive, raw_teardown);
  for (guint i = 0; i < G_N_ELEMENTS (violations); i++)
    {
      g_autofree char *path = g_strconcat ("/mpport/process/protocol/violation/",
                                           violations[i].name, NULL);

      g_test_add (path, Raw, &violations[i], raw_setup, test_protocol_violation, raw_teardown);
    }
  g_test_add_data_func ("/mpport/process/protocol/transfer-at-start", GINT_TO_POINTER (FALSE),
                        test_protocol_transfer_at_start);
  g_test_add ("/mpport/process/protocol/garbage", Raw, NULL, raw_setup, test_protocol_garbage,
              raw_teardown);
  g_test_add ("/mpport/process/protocol/truncated", Raw, NULL, raw_setup,
              test_protocol_truncated, raw_teardown);
  g_test_add ("/mpport/process/protocol/oversized", Raw, NULL, raw_setup,
              test_protocol_oversized, raw_teardown);

  /* The same data as frames, and what only the direct path has. */
  g_test_add ("/mpport/process/protocol/direct/post", Raw, NULL, raw_setup_direct,
              test_protocol_direct_post, raw_teardown);
  g_test_add ("/mpport/process/protocol/direct/message-error", Raw, NULL, raw_setup_direct,
              test_protocol_message_error, raw_teardown);
  g_test_add ("/mpport/process/protocol/direct/message-error-receive", Raw, NULL,
              raw_setup_direct, test_protocol_message_error_receive, raw_teardown);
  for (guint i = 0; i < G_N_ELEMENTS (violations); i++)
    {
      g_autofree char *path = NULL;

      if (!violation_plays_direct (&violations[i]))
        continue;
      path = g_strconcat ("/mpport/process/protocol/direct/violation/", violations[i].name, NULL);
      g_test_add (path, Raw, &violations[i], raw_setup_direct, test_protocol_violation,
                  raw_teardown);
    }
  g_test_add_data_func ("/mpport/process/protocol/direct/transfer-at-start",
                        GINT_TO_POINTER (TRUE), test_protocol_transfer_at_start);
  for (guint i = 0; i < G_N_ELEMENTS (frame_faults); i++)
    {
      g_autofree char *path = g_strconcat ("/mpport/process/protocol/direct/frame/",
                                           frame_faults[i].name, NULL);

      g_test_add (path, Raw, &frame_faults[i], raw_setup_direct, test_protocol_frame_fault,
                  raw_teardown);
    }
  for (guint i = 0; i < G_N_ELEMENTS (direct_signals); i++)
    {
      g_autofree char *member = g_ascii_strdown (direct_signals[i].member, -1);
      g_autofree char *path = g_strconcat ("/mpport/process/protocol/direct/signal/", member,
                                           NULL);

      g_test_add (path, Raw, &direct_signals[i], raw_setup_direct, test_protocol_direct_signal,
                  raw_teardown);
    }
  for (guint i = 0; i < G_N_ELEMENTS (declines); i++)
    {
      g_autofree char *path = g_strconcat ("/mpport/process/protocol/direct/declined/",
                                           declines[i].name, NULL);

      g_test_add (path, Raw, &declines[i], raw_setup, test_protocol_direct_declined,
                  raw_teardown);
    }
  /* Last: a failure here (g_test_fail()) ends the run. */
  g_test_add ("/mpport/process/protocol/direct/reset/unread-frame", Raw, NULL, raw_setup_direct,
              test_protocol_frame_reset, raw_teardown);

  return g_test_run ();
}
