/* test-process.c: ports entangled with ports of a child process
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The /mpport/process/ cases spawn tests/process-peer (found through MP_PROCESS_PEER, or next
 * to this binary) with mp_message_port_new_for_launcher () and drive it with the commands its
 * header lists: echoes, bursts, closes from either side, ports that cross the boundary both
 * ways (and back, and inside each other), and a child killed with SIGKILL mid-stream.
 *
 * The /mpport/process/protocol/ cases need no child: the test is the other process. It opens
 * one end of a socketpair with mp_message_port_new_for_stream () as the server and speaks
 * to it as a raw GDBus client on the other end, crafting the protocol's signals
 * (docs/wire.md, mpport/mp-stream-private.h) — valid ones, posts that do not decode (each
 * must become exactly one "message-error", in order), protocol violations (the stream must
 * close, with its warning) — or writing bytes that are not D-Bus at all onto the socket.
 *
 * Every case counts exactly and checks order; every wait is bounded (WAIT_FOR), so a lost
 * message or a hung child fails the case instead of hanging it.
 */

#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
#define STREAM_PATH      "/org/gnome/Mpport/Port1"
#define STREAM_INTERFACE "org.gnome.Mpport.Port1"

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
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);
  g_autoptr(MpMessagePort) port = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *fd = g_strdup_printf ("%d", PEER_FD);
  g_autofree char *peer = NULL;

  f->context = context_push_new ();

  peer = g_strdup (g_getenv ("MP_PROCESS_PEER"));
  if (peer == NULL)
    peer = g_test_build_filename (G_TEST_BUILT, "process-peer", NULL);

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

/* 100 000 messages each way: the child echoes every one; all come back once, in order. Our
 * close then reaches the child, which exits with 0. */
static void
test_echo (Fixture       *f,
           gconstpointer  data)
{
  const guint32 n = scaled (100000);

  mp_message_port_start (f->rec.port);
  post_seqs (f->rec.port, "echo", 0, n);

  WAIT_FOR (f->context, f->rec.received->len == n);
  assert_seqs (&f->rec, 0, "echo", n);

  mp_message_port_close (f->rec.port);
  wait_child_success (f);
  g_assert_cmpuint (f->rec.received->len, ==, n);
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

  recorder_clear (&kept2);
  recorder_clear (&kept1);
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
  /* What the port got, in order: a uint32 message as its value, a NULL one as "N", a
   * "message-error" as "E", then "close". */
  GString *log;
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

/* Sends the signal @member with @body (GVariant text format; a floating body is sunk). */
static void
raw_emit (Raw        *raw,
          const char *member,
          const char *body)
{
  g_autoptr(GError) error = NULL;

  g_dbus_connection_emit_signal (raw->client, NULL, STREAM_PATH, STREAM_INTERFACE, member,
                                 body != NULL ? g_variant_new_parsed (body) : NULL, &error);
  g_assert_no_error (error);
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

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  server_io = stream_for_fd (fds[0]);
  raw->client_io = stream_for_fd (fds[1]);
  raw->client_fd = fds[1];

  mp_message_port_new_for_stream (server_io, MP_STREAM_FLAGS_SERVER, NULL, on_raw_opened, raw);
  /* Blocks until both sides authenticated: mpport's side runs on its own thread. */
  raw->client = g_dbus_connection_new_sync (raw->client_io, NULL,
                                            G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT,
                                            NULL, NULL, &error);
  g_assert_no_error (error);
  if (raw->early_post != NULL)
    {
      raw_emit (raw, "Hello", "(uint32 1, @a{sv} {})");
      raw_emit (raw, "Post", raw->early_post);
    }
  WAIT_FOR (raw->context, raw->port != NULL);

  g_signal_connect (raw->port, "message", G_CALLBACK (on_raw_message), raw);
  g_signal_connect (raw->port, "message-error", G_CALLBACK (on_raw_message_error), raw);
  g_signal_connect (raw->port, "close", G_CALLBACK (on_raw_close), raw);
}

static void
raw_teardown (Raw           *raw,
              gconstpointer  data)
{
  g_signal_handlers_disconnect_by_data (raw->port, raw);
  mp_message_port_close (raw->port);
  assert_finalized_eventually (raw->context, g_steal_pointer (&raw->port));
  /* Closed already unless the case left the stream open: then this closes it. */
  g_dbus_connection_close_sync (raw->client, NULL, NULL);
  g_clear_object (&raw->client);
  g_clear_object (&raw->client_io);
  g_string_free (raw->log, TRUE);
  context_pop_free (raw->context);
}

static void
raw_hello (Raw *raw)
{
  raw_emit (raw, "Hello", "(uint32 1, @a{sv} {})");
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

static void
raw_post (Raw           *raw,
          const RawPost *posts,
          guint          n_posts)
{
  g_autoptr(GError) error = NULL;

  g_dbus_connection_emit_signal (raw->client, NULL, STREAM_PATH, STREAM_INTERFACE, "Post",
                                 raw_post_body (posts, n_posts), &error);
  g_assert_no_error (error);
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


/* Sends @send. Once the violation was read, mpport may have closed the stream already: a
 * later send then fails with G_IO_ERROR_CLOSED, which is fine. */
static void
raw_send (Raw           *raw,
          const RawSend *send)
{
  g_autoptr(GError) error = NULL;

  if (!send->method_call)
    {
      g_dbus_connection_emit_signal (raw->client, NULL, STREAM_PATH, STREAM_INTERFACE,
                                     send->member,
                                     send->body != NULL ? g_variant_new_parsed (send->body) : NULL,
                                     &error);
    }
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
    raw_send (raw, &violation->sends[i]);

  raw_assert_stream_closed (raw);
  g_assert_cmpstr (raw->log->str, ==, expected);
}

/* What mpport sent us, as a log: "P<port id> " for each post of a Post, "C<port id> " for
 * each id of a Close (its Hello and Credits are left out). */
static void
on_raw_signal (GDBusConnection *connection,
               const char      *sender,
               const char      *path,
               const char      *interface,
               const char      *member,
               GVariant        *body,
               gpointer         data)
{
  GString *log = data;
  g_autoptr(GVariant) ids_v = NULL;
  const guint64 *ids;
  gsize n_ids;

  if (g_str_equal (member, "Post"))
    ids_v = g_variant_get_child_value (body, 0);
  else if (g_str_equal (member, "Close"))
    ids_v = g_variant_get_child_value (body, 0);
  else
    return;

  ids = g_variant_get_fixed_array (ids_v, &n_ids, sizeof (guint64));
  for (gsize i = 0; i < n_ids; i++)
    g_string_append_printf (log, "%c%" G_GUINT64_FORMAT " ", member[0], ids[i]);
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
 * can arrive before or after mpport's side finished its set-up. */
static void
test_protocol_transfer_at_start (void)
{
  const guint rounds = scaled (200);

  for (guint round = 0; round < rounds; round++)
    {
      Raw raw = { NULL, };
      ArrivedPort arrived = { NULL };
      g_autoptr(GString) sent = g_string_new (NULL);
      g_autoptr(GError) error = NULL;
      guint subscription;

      /* A NULL post that transfers our port 1. */
      raw.early_post = "([uint64 0], [uint32 0], [''], [uint32 0], @ay [], [uint32 1], [uint64 1])";
      raw_setup (&raw, NULL);
      subscription = g_dbus_connection_signal_subscribe (raw.client, NULL, STREAM_INTERFACE,
                                                         NULL, STREAM_PATH, NULL,
                                                         G_DBUS_SIGNAL_FLAGS_NONE, on_raw_signal,
                                                         sent, NULL);

      g_signal_handlers_disconnect_by_func (raw.port, on_raw_message, &raw);
      g_signal_connect (raw.port, "message", G_CALLBACK (on_port_arrived), &arrived);
      mp_message_port_start (raw.port);
      WAIT_FOR (raw.context, arrived.port != NULL);

      g_assert_true (mp_message_port_post (arrived.port, g_variant_new_uint32 (9), &error));
      g_assert_no_error (error);
      mp_message_port_close (arrived.port);
      WAIT_FOR (raw.context, strstr (sent->str, "C1 ") != NULL);
      g_assert_cmpstr (sent->str, ==, "P1 C1 ");

      g_dbus_connection_signal_unsubscribe (raw.client, subscription);
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

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  g_log_set_writer_func (expecting_writer, NULL, NULL);

  g_test_add ("/mpport/process/echo", Fixture, NULL, fixture_setup, test_echo, fixture_teardown);
  g_test_add ("/mpport/process/burst", Fixture, NULL, fixture_setup, test_burst,
              fixture_teardown);
  g_test_add ("/mpport/process/close/by-parent", Fixture, NULL, fixture_setup,
              test_close_by_parent, fixture_teardown);
  g_test_add ("/mpport/process/close/by-child", Fixture, NULL, fixture_setup,
              test_close_by_child, fixture_teardown);
  g_test_add ("/mpport/process/close/by-exit", Fixture, NULL, fixture_setup,
              test_close_by_exit, fixture_teardown);
  g_test_add ("/mpport/process/receive-async", Fixture, NULL, fixture_setup,
              test_receive_async, fixture_teardown);
  g_test_add ("/mpport/process/transfer/to-child", Fixture, NULL, fixture_setup,
              test_transfer_to_child, fixture_teardown);
  g_test_add ("/mpport/process/transfer/from-child", Fixture, NULL, fixture_setup,
              test_transfer_from_child, fixture_teardown);
  g_test_add ("/mpport/process/transfer/round-trip", Fixture, NULL, fixture_setup,
              test_transfer_round_trip, fixture_teardown);
  g_test_add ("/mpport/process/transfer/nested", Fixture, NULL, fixture_setup,
              test_transfer_nested, fixture_teardown);
  g_test_add ("/mpport/process/transfer/nested-from-child", Fixture, NULL, fixture_setup,
              test_transfer_nested_from_child, fixture_teardown);
  g_test_add ("/mpport/process/kill", Fixture, NULL, fixture_setup, test_kill,
              fixture_teardown);

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
  g_test_add_func ("/mpport/process/protocol/transfer-at-start", test_protocol_transfer_at_start);
  g_test_add ("/mpport/process/protocol/garbage", Raw, NULL, raw_setup, test_protocol_garbage,
              raw_teardown);
  g_test_add ("/mpport/process/protocol/truncated", Raw, NULL, raw_setup,
              test_protocol_truncated, raw_teardown);
  g_test_add ("/mpport/process/protocol/oversized", Raw, NULL, raw_setup,
              test_protocol_oversized, raw_teardown);

  return g_test_run ();
}
