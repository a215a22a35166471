/* xproc.c: mp-bench's cross-process port scenarios, xproc-tput and xproc-pingpong
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The sample's process (the parent) makes a connected pair of Unix sockets and spawns a
 * child (this program again, with the hidden --child-xproc option) that gets one end as its
 * fd 3; the parent keeps the other. Over it, for each implementation:
 *
 *   mpport      mp_message_port_new_for_launcher() in the parent (the D-Bus peer-to-peer
 *               server; it makes the socketpair itself), mp_message_port_new_for_fd_sync() in
 *               the child; then ordinary ports: post(), "message", posts carried in bursts
 *   (d) signal  a GDBusConnection on each end (the parent the server, with a fresh GUID; the
 *               child the client), one g_dbus_connection_emit_signal() per message with the
 *               GVariant in a "(v)" body, received with g_dbus_connection_signal_subscribe()
 *               (sender NULL: there is no bus) and handed to a BenchSink signal
 *   (e) socket  the bound: each GVariant serialized (g_variant_store(); the type is known to
 *               both ends) behind a 32-bit length on the bare socketpair. The writer
 *               coalesces frames in a 64 KiB buffer and writes it when it is full, when the
 *               stream ends and when it waits for an answer (after each dispatch); the
 *               reader is one GSource on the receiving context that reads 64 KiB at a time,
 *               parses every complete frame (the 1 024-message budget of (c) and mpport per
 *               dispatch), copies each into a GBytes and emits a BenchSink signal per message
 *
 * Every implementation hands each message to one GObject signal emission and a C handler,
 * as mp-bench's other scenarios do.
 *
 * Beside the socket, the processes talk through the child's stdin and stdout, the same for
 * every implementation: the child says READY once its end is connected (and subscribed, and
 * started); the parent says GO (xproc-tput) to start the stream and DONE when it has what it
 * measured; the child answers DONE with STATS: its CLOCK_MONOTONIC time before its first post
 * (shared by all processes) and its heap allocations in its part of the measured region.
 *
 *   xproc-tput      the child posts N int32 (0 .. N-1) as fast as it can, without iterating
 *                   its main loop (a bus channel's sender does the same in bus); the parent
 *                   checks the order in its handler on its main context. msg/s = N / (the
 *                   child's time before its first post .. the parent's handler has the last).
 *   xproc-pingpong  one message in flight: the parent posts i, the child's handler posts i
 *                   back, the parent's handler posts i + 1. 1 000 warm-up round trips (not
 *                   scaled), then N measured; µs per round trip, mean, p50, p99, as pingpong.
 *
 * Heap allocations: the parent's in its measured region plus the child's in its own (tput:
 * from its first post to DONE; pingpong: from the first measured ping to DONE).
 */

#define _GNU_SOURCE

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib-unix.h>
#include <mpport/mpport.h>

#include "mp-bench.h"
#include "xproc.h"

#define XPROC_CHILD_FD          3          /* the child's end of the socketpair, in the child */
#define XPROC_SOCKET_BUFFER     65536      /* (e): bytes per read, and the write buffer */
#define XPROC_SIGNAL_PATH       "/org/gnome/Mpport/Bench"
#define XPROC_SIGNAL_INTERFACE  "org.gnome.Mpport.Bench"
#define XPROC_SIGNAL_MEMBER     "Message"

/* ------------------------------------------------------------------------------------------ */
/* (e) socket: length-prefixed serialized GVariants, buffered both ways                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  int fd;                      /* owned; non-blocking */
  const GVariantType *type;    /* of every message, known to both ends */
  BenchSink *sink;             /* emits each received message */
  GSource *source;             /* the reader, on the receiving context */
  gpointer fd_tag;             /* NULL once the peer has closed */
  gboolean rearmed;            /* ready time 0 after a spent budget */

  guint8 *rbuf;                /* [rpos, rend): received, not yet parsed */
  gsize rsize, rpos, rend;

  gsize wlen;                  /* bytes in wbuf, not yet written */
  guint8 wbuf[XPROC_SOCKET_BUFFER];
} XprocSocket;

typedef struct
{
  GSource parent;
  XprocSocket *socket;
} XprocSocketSource;

static void
xproc_write_all (int           fd,
                 const guint8 *data,
                 gsize         size)
{
  while (size > 0)
    {
      gssize n = send (fd, data, size, MSG_NOSIGNAL);

      if (n < 0)
        {
          struct pollfd pfd = { .fd = fd, .events = POLLOUT };

          if (errno == EINTR)
            continue;
          if (errno != EAGAIN && errno != EWOULDBLOCK)
            g_error ("xproc: socket: send: %s", g_strerror (errno));
          /* The peer's receive buffer is full: wait for it to read. */
          if (poll (&pfd, 1, TIMEOUT_SECONDS * 1000) == 0)
            g_error ("xproc: socket: the peer read nothing for %d s", TIMEOUT_SECONDS);
          continue;
        }
      data += n;
      size -= (gsize) n;
    }
}

static void
xproc_socket_flush (XprocSocket *self)
{
  xproc_write_all (self->fd, self->wbuf, self->wlen);
  self->wlen = 0;
}

/* Takes @data (floating or not). */
static void
xproc_socket_post (XprocSocket *self,
                   GVariant    *data)
{
  GVariant *value = g_variant_ref_sink (data);
  gsize size = g_variant_get_size (value);
  guint32 header = (guint32) size;

  g_assert (size <= G_MAXUINT32 - sizeof header);

  if (self->wlen + sizeof header + size > sizeof (self->wbuf))
    xproc_socket_flush (self);

  if (sizeof header + size > sizeof (self->wbuf))
    {
      /* Larger than the buffer (never, with int32 messages): straight out. */
      g_autofree guint8 *frame = g_malloc (sizeof header + size);

      memcpy (frame, &header, sizeof header);
      g_variant_store (value, frame + sizeof header);
      xproc_write_all (self->fd, frame, sizeof header + size);
    }
  else
    {
      memcpy (self->wbuf + self->wlen, &header, sizeof header);
      g_variant_store (value, self->wbuf + self->wlen + sizeof header);
      self->wlen += sizeof header + size;
    }

  g_variant_unref (value);
}

static gboolean
xproc_socket_has_frame (const XprocSocket *self)
{
  guint32 size;

  if (self->rend - self->rpos < sizeof size)
    return FALSE;
  memcpy (&size, self->rbuf + self->rpos, sizeof size);

  return self->rend - self->rpos - sizeof size >= size;
}

/* One read: moves the partial frame left over to the front, grows the buffer for a frame
 * larger than it, and reads as much as fits. */
static void
xproc_socket_fill (XprocSocket *self)
{
  gssize n;

  if (self->rpos > 0)
    {
      memmove (self->rbuf, self->rbuf + self->rpos, self->rend - self->rpos);
      self->rend -= self->rpos;
      self->rpos = 0;
    }
  if (self->rend >= sizeof (guint32))
    {
      guint32 size;

      memcpy (&size, self->rbuf, sizeof size);
      if (sizeof size + size > self->rsize)
        {
          self->rsize = sizeof size + size;
          self->rbuf = g_realloc (self->rbuf, self->rsize);
        }
    }

  do
    n = read (self->fd, self->rbuf + self->rend, self->rsize - self->rend);
  while (n < 0 && errno == EINTR);

  if (n > 0)
    self->rend += (gsize) n;
  else if (n == 0)
    {
      /* The peer closed: stop polling the fd (the sample is over). */
      g_source_remove_unix_fd (self->source, self->fd_tag);
      self->fd_tag = NULL;
    }
  else if (errno != EAGAIN && errno != EWOULDBLOCK)
    g_error ("xproc: socket: read: %s", g_strerror (errno));
}

static gboolean
xproc_socket_dispatch (GSource     *source,
                       GSourceFunc  callback,
                       gpointer     user_data)
{
  XprocSocket *self = ((XprocSocketSource *) source)->socket;
  guint budget = BASELINE_BUDGET;

  if (self->rearmed)
    {
      g_source_set_ready_time (source, -1);
      self->rearmed = FALSE;
    }

  /* Read only when every complete frame has been handled: big reads, no copy of a backlog. */
  if (!xproc_socket_has_frame (self) && self->fd_tag != NULL &&
      (g_source_query_unix_fd (source, self->fd_tag) & (G_IO_IN | G_IO_HUP | G_IO_ERR)))
    xproc_socket_fill (self);

  while (budget > 0 && xproc_socket_has_frame (self))
    {
      guint32 size;
      GBytes *bytes;
      GVariant *data;

      memcpy (&size, self->rbuf + self->rpos, sizeof size);
      bytes = g_bytes_new (self->rbuf + self->rpos + sizeof size, size);
      data = g_variant_ref_sink (g_variant_new_from_bytes (self->type, bytes, FALSE));
      g_bytes_unref (bytes);
      self->rpos += sizeof size + size;
      budget--;
      g_signal_emit (self->sink, sink_message_signal, 0, data);
      g_variant_unref (data);
    }

  if (xproc_socket_has_frame (self))
    {
      /* Yield to the main loop; come back at once. */
      g_source_set_ready_time (source, 0);
      self->rearmed = TRUE;
    }

  /* What the handlers posted goes out now: this end waits for an answer next. */
  if (self->wlen > 0)
    xproc_socket_flush (self);

  return G_SOURCE_CONTINUE;
}

static GSourceFuncs xproc_socket_source_funcs = {
  .dispatch = xproc_socket_dispatch,
};

/* Takes @fd; reads on the thread-default context. */
static XprocSocket *
xproc_socket_new (int                 fd,
                  const GVariantType *type,
                  BenchSink          *sink)
{
  XprocSocket *self = g_new0 (XprocSocket, 1);
  g_autoptr(GMainContext) context = g_main_context_ref_thread_default ();
  g_autoptr(GError) error = NULL;

  if (!g_unix_set_fd_nonblocking (fd, TRUE, &error))
    g_error ("xproc: socket: %s", error->message);

  self->fd = fd;
  self->type = type;
  self->sink = sink;
  self->rsize = XPROC_SOCKET_BUFFER;
  self->rbuf = g_malloc (self->rsize);

  self->source = g_source_new (&xproc_socket_source_funcs, sizeof (XprocSocketSource));
  ((XprocSocketSource *) self->source)->socket = self;
  self->fd_tag = g_source_add_unix_fd (self->source, fd, G_IO_IN);
  /* GLib blocks a source while it dispatches unless it may recurse, and blocking one with an
   * fd removes the fd from the context and adds it back, each signalling the context's
   * wake-up eventfd: two writes per dispatch and often an extra poll. The handlers never
   * iterate the context, and mpport's waker (an fd source that is never dispatched) does
   * not pay this either: the bound does not. */
  g_source_set_can_recurse (self->source, TRUE);
  g_source_set_static_name (self->source, "mp-bench xproc socket");
  g_source_attach (self->source, context);

  return self;
}

static void
xproc_socket_free (XprocSocket *self)
{
  g_source_destroy (self->source);
  g_source_unref (self->source);
  close (self->fd);
  g_free (self->rbuf);
  g_free (self);
}

/* ------------------------------------------------------------------------------------------ */
/* One process's end, for each implementation                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  Impl impl;
  int fd;                         /* (d), (e), the child's mpport: this process's end, until connected */
  MpMessagePort *port;            /* mpport */
  GDBusConnection *connection;    /* (d) */
  guint subscription;             /* (d) */
  XprocSocket *socket;            /* (e) */
  BenchReceiver rx;
} XprocEnd;

static void
xproc_end_init (XprocEnd    *end,
                Impl         impl,
                DeliverFunc  deliver,
                gpointer     deliver_data)
{
  *end = (XprocEnd) { .impl = impl, .fd = -1,
                      .rx = { .deliver = deliver, .deliver_data = deliver_data } };

  if (impl != IMPL_MPPORT)
    {
      end->rx.sink = g_object_new (BENCH_TYPE_SINK, NULL);
      g_signal_connect (end->rx.sink, "message", G_CALLBACK (bench_receiver_on_sink_message),
                        &end->rx);
    }
}

static void
xproc_end_start_port (XprocEnd *end)
{
  g_signal_connect (end->port, "message", G_CALLBACK (bench_receiver_on_mp_message), &end->rx);
  mp_message_port_start (end->port);
}

/* Parent, before spawning: gives the child's end of a new socketpair to @launcher as
 * XPROC_CHILD_FD. mpport's port is made (and started) here: it connects in the background. */
static void
xproc_end_give_child (XprocEnd            *end,
                      GSubprocessLauncher *launcher)
{
  g_autoptr(GError) error = NULL;
  int fds[2];

  if (end->impl == IMPL_MPPORT)
    {
      end->port = mp_message_port_new_for_launcher (launcher, XPROC_CHILD_FD, &error);
      if (end->port == NULL)
        g_error ("xproc: mp_message_port_new_for_launcher: %s", error->message);
      xproc_end_start_port (end);
      return;
    }

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
    g_error ("xproc: socketpair: %s", g_strerror (errno));
  end->fd = fds[0];
  g_subprocess_launcher_take_fd (launcher, fds[1], XPROC_CHILD_FD);
}

static GDBusConnection *
xproc_dbus_connect (int      fd,
                    gboolean server)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocket) socket = g_socket_new_from_fd (fd, &error);
  g_autoptr(GSocketConnection) stream = NULL;
  g_autofree char *guid = NULL;
  GDBusConnection *connection;

  if (socket == NULL)
    g_error ("xproc: g_socket_new_from_fd: %s", error->message);
  stream = g_socket_connection_factory_create_connection (socket);
  if (server)
    guid = g_dbus_generate_guid ();
  connection = g_dbus_connection_new_sync (G_IO_STREAM (stream), guid,
                                           server ? G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_SERVER
                                                  : G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT,
                                           NULL, NULL, &error);
  if (connection == NULL)
    g_error ("xproc: peer-to-peer D-Bus %s: %s", server ? "server" : "client", error->message);

  return connection;
}

/* Connects this process's end (the parent's after spawning: (d) blocks until the child has
 * authenticated), on the thread whose thread-default context receives. */
static void
xproc_end_connect (XprocEnd *end,
                   gboolean  server)
{
  g_autoptr(GError) error = NULL;

  switch (end->impl)
    {
    case IMPL_MPPORT:
      if (server)
        return;   /* xproc_end_give_child() made it */
      end->port = mp_message_port_new_for_fd_sync (end->fd, NULL, &error);
      if (end->port == NULL)
        g_error ("xproc: mp_message_port_new_for_fd_sync: %s", error->message);
      end->fd = -1;
      xproc_end_start_port (end);
      break;
    case IMPL_SIGNAL:
      end->connection = xproc_dbus_connect (end->fd, server);
      end->fd = -1;
      /* On a peer-to-peer connection this only adds a local filter: no AddMatch to wait for. */
      end->subscription =
        g_dbus_connection_signal_subscribe (end->connection, NULL, XPROC_SIGNAL_INTERFACE,
                                            XPROC_SIGNAL_MEMBER, XPROC_SIGNAL_PATH, NULL,
                                            G_DBUS_SIGNAL_FLAGS_NONE, bench_receiver_on_signal, &end->rx, NULL);
      break;
    case IMPL_SOCKET:
      end->socket = xproc_socket_new (end->fd, G_VARIANT_TYPE_INT32, end->rx.sink);
      end->fd = -1;
      break;
    case IMPL_INVOKE:
    case IMPL_QUEUE:
    case IMPL_RING:
    case N_IMPLS:
    default:
      g_assert_not_reached ();
    }
}

/* Posts @data (floating, consumed). */
static void
xproc_end_post (XprocEnd *end,
                GVariant *data)
{
  g_autoptr(GError) error = NULL;

  switch (end->impl)
    {
    case IMPL_MPPORT:
      if (!mp_message_port_post (end->port, data, &error))
        g_error ("xproc: mp_message_port_post: %s", error->message);
      break;
    case IMPL_SIGNAL:
      if (!g_dbus_connection_emit_signal (end->connection, NULL, XPROC_SIGNAL_PATH,
                                          XPROC_SIGNAL_INTERFACE, XPROC_SIGNAL_MEMBER,
                                          g_variant_new ("(v)", data), &error))
        g_error ("xproc: g_dbus_connection_emit_signal: %s", error->message);
      break;
    case IMPL_SOCKET:
      xproc_socket_post (end->socket, data);
      break;
    case IMPL_INVOKE:
    case IMPL_QUEUE:
    case IMPL_RING:
    case N_IMPLS:
    default:
      g_assert_not_reached ();
    }
}

/* (e) writes what it buffered; mpport and (d) write on their own. Outside a dispatch of the
 * (e) reader, which writes after its handlers. */
static void
xproc_end_flush (XprocEnd *end)
{
  if (end->socket != NULL)
    xproc_socket_flush (end->socket);
}

static void
xproc_end_close (XprocEnd *end)
{
  if (end->port != NULL)
    {
      mp_message_port_close (end->port);
      g_clear_object (&end->port);
    }
  if (end->connection != NULL)
    {
      if (end->subscription != 0)
        g_dbus_connection_signal_unsubscribe (end->connection, end->subscription);
      /* The peer may have closed first: not an error here. */
      g_dbus_connection_close_sync (end->connection, NULL, NULL);
      g_clear_object (&end->connection);
    }
  g_clear_pointer (&end->socket, xproc_socket_free);
  if (end->fd >= 0)
    close (end->fd);
  end->fd = -1;
  g_clear_object (&end->rx.sink);
}

/* ------------------------------------------------------------------------------------------ */
/* The child                                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  XprocEnd end;
  Loop *loop;
  GString *input;       /* from the parent, on stdin, not yet a whole line */
  guint64 warmup;       /* pingpong: the first measured ping */
  gboolean go;          /* tput: start posting */
  gboolean done;
} XprocChild;

static gboolean
xproc_child_on_stdin (gint         fd,
                      GIOCondition condition,
                      gpointer     user_data)
{
  XprocChild *child = user_data;
  char buffer[256];
  gssize n = read (fd, buffer, sizeof (buffer));
  char *newline;

  if (n < 0 && (errno == EINTR || errno == EAGAIN))
    return G_SOURCE_CONTINUE;
  if (n <= 0)
    {
      g_printerr ("mp-bench: xproc child: the parent went away\n");
      _exit (EXIT_FAILURE);
    }

  g_string_append_len (child->input, buffer, n);
  while ((newline = strchr (child->input->str, '\n')) != NULL)
    {
      *newline = '\0';
      if (g_str_equal (child->input->str, "GO"))
        child->go = TRUE;
      else if (g_str_equal (child->input->str, "DONE"))
        child->done = TRUE;
      else
        g_error ("xproc child: the parent said '%s'", child->input->str);
      g_string_erase (child->input, 0, newline - child->input->str + 1);
    }

  return G_SOURCE_CONTINUE;
}

static void
xproc_child_unexpected (GVariant *data,
                        gpointer  user_data)
{
  g_error ("xproc child: a message from the parent in xproc-tput");
}

/* pingpong: every ping goes straight back. */
static void
xproc_child_echo (GVariant *data,
                  gpointer  user_data)
{
  XprocChild *child = user_data;
  gint32 value = g_variant_get_int32 (data);

  if ((guint64) value == child->warmup)
    measure_begin ();
  xproc_end_post (&child->end, g_variant_new_int32 (value));
}

static gboolean
xproc_timed_out (gpointer data)
{
  g_error ("xproc: %s: timed out after %d s", (const char *) data, TIMEOUT_SECONDS);
  return G_SOURCE_REMOVE;
}

int
xproc_child_main (const char *scenario,
                  Impl        impl,
                  int         fd,
                  guint64     count)
{
  XprocChild child = { .warmup = count };
  gboolean tput = g_str_equal (scenario, "tput");
  GSource *input, *timeout;
  gint64 t0 = 0;

  if (!tput && !g_str_equal (scenario, "pingpong"))
    {
      g_printerr ("mp-bench: --child-xproc tput or pingpong, not '%s'\n", scenario);
      return 2;
    }
  if (count > G_MAXINT32)
    g_error ("xproc: --scale too large for int32 sequence numbers");

  child.loop = loop_new ();
  child.input = g_string_new (NULL);
  xproc_end_init (&child.end, impl, tput ? xproc_child_unexpected : xproc_child_echo, &child);
  child.end.fd = fd;
  xproc_end_connect (&child.end, FALSE);

  input = g_unix_fd_source_new (STDIN_FILENO, G_IO_IN | G_IO_HUP | G_IO_ERR);
  g_source_set_callback (input, G_SOURCE_FUNC (xproc_child_on_stdin), &child, NULL);
  g_source_set_static_name (input, "mp-bench xproc stdin");
  g_source_attach (input, child.loop->context);
  timeout = g_timeout_source_new_seconds (TIMEOUT_SECONDS);
  g_source_set_callback (timeout, xproc_timed_out, (gpointer) "child", NULL);
  g_source_attach (timeout, child.loop->context);

  g_main_context_acquire (child.loop->context);
  printf ("READY\n");
  fflush (stdout);

  if (tput)
    {
      loop_run_until (child.loop, &child.go);
      measure_begin ();
      t0 = now_ns ();
      for (guint64 i = 0; i < count; i++)
        xproc_end_post (&child.end, g_variant_new_int32 ((gint32) i));
      xproc_end_flush (&child.end);
    }
  loop_run_until (child.loop, &child.done);
  measure_end ();

  printf ("STATS\t%" G_GINT64_FORMAT "\t%" G_GUINT64_FORMAT "\n", t0, measured_allocs);
  fflush (stdout);

  g_source_destroy (timeout);
  g_source_unref (timeout);
  g_source_destroy (input);
  g_source_unref (input);
  xproc_end_close (&child.end);
  g_main_context_release (child.loop->context);
  loop_free (child.loop);
  g_string_free (child.input, TRUE);

  return EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* The parent (the sample's process)                                                          */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  GSubprocess *process;
  GDataInputStream *out;    /* the child's stdout */
  GOutputStream *in;        /* the child's stdin */
} XprocPeer;

/* Spawns the child for @scenario, giving it @end's other side. */
static void
xproc_peer_spawn (XprocPeer  *peer,
                  XprocEnd   *end,
                  const char *scenario,
                  guint64     count)
{
  GSubprocessLauncher *launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDIN_PIPE |
                                                             G_SUBPROCESS_FLAGS_STDOUT_PIPE);
  g_autoptr(GError) error = NULL;
  g_autofree char *fd = g_strdup_printf ("%d", XPROC_CHILD_FD);
  g_autofree char *n = g_strdup_printf ("%" G_GUINT64_FORMAT, count);
  const char *argv[] = { self_exe, "--child-xproc", scenario, "--child-xproc-fd", fd,
                         "--child-xproc-count", n, "--impls", impl_names[end->impl], NULL };

  g_subprocess_launcher_set_child_setup (launcher, die_with_parent, NULL, NULL);
  xproc_end_give_child (end, launcher);
  peer->process = g_subprocess_launcher_spawnv (launcher, argv, &error);
  if (peer->process == NULL)
    g_error ("xproc: cannot start the child: %s", error->message);
  /* Closes this process's copy of the child's end: the child's exit is then seen as EOF. */
  g_object_unref (launcher);

  peer->out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (peer->process));
  peer->in = g_subprocess_get_stdin_pipe (peer->process);
}

typedef struct
{
  char *line;
  GError *error;
  gboolean done;
} XprocLine;

static void
xproc_on_line (GObject      *source,
               GAsyncResult *result,
               gpointer      user_data)
{
  XprocLine *line = user_data;

  line->line = g_data_input_stream_read_line_finish (G_DATA_INPUT_STREAM (source), result, NULL,
                                                     &line->error);
  line->done = TRUE;
}

/* The child's next line, split at tabs; it must start with @what. Iterates @loop meanwhile:
 * mpport's parent port connects in the background. */
static char **
xproc_peer_expect (XprocPeer  *peer,
                   Loop       *loop,
                   const char *what)
{
  XprocLine line = { 0 };
  char **fields;

  g_data_input_stream_read_line_async (peer->out, G_PRIORITY_DEFAULT, NULL, xproc_on_line, &line);
  loop_run_until (loop, &line.done);
  if (line.line == NULL)
    g_error ("xproc: the child ended before saying %s%s%s", what, line.error != NULL ? ": " : "",
             line.error != NULL ? line.error->message : "");
  fields = g_strsplit (line.line, "\t", -1);
  if (!g_str_equal (fields[0], what))
    g_error ("xproc: the child said '%s', expected %s", line.line, what);
  g_free (line.line);

  return fields;
}

static void
xproc_peer_say (XprocPeer  *peer,
                const char *what)
{
  g_autoptr(GError) error = NULL;

  if (!g_output_stream_write_all (peer->in, what, strlen (what), NULL, NULL, &error))
    g_error ("xproc: cannot write to the child: %s", error->message);
}

/* Says DONE, reads STATS, waits for the child's exit. Returns the child's time before its
 * first post; adds its heap allocations to measured_allocs. */
static gint64
xproc_peer_finish (XprocPeer *peer,
                   Loop      *loop)
{
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) stats = NULL;
  gint64 t0;

  xproc_peer_say (peer, "DONE\n");
  stats = xproc_peer_expect (peer, loop, "STATS");
  if (g_strv_length (stats) < 3)
    g_error ("xproc: a short STATS line");
  t0 = g_ascii_strtoll (stats[1], NULL, 10);
  measured_allocs += g_ascii_strtoull (stats[2], NULL, 10);

  if (!g_subprocess_wait_check (peer->process, NULL, &error))
    g_error ("xproc: the child failed: %s", error->message);
  g_clear_object (&peer->out);
  g_clear_object (&peer->process);

  return t0;
}

/* A blocking read or wait would not time out: past this, SIGALRM ends the sample's process,
 * and the child with it. A dead child is an error, not a SIGPIPE. */
static void
xproc_guard (void)
{
  signal (SIGPIPE, SIG_IGN);
  alarm (3 * TIMEOUT_SECONDS);
}

/* ---- xproc-tput ---- */

typedef struct
{
  guint64 expected;
  guint64 received;
  gint64 end_ns;
  gboolean done;
} XprocCounter;

static void
xproc_deliver_count (GVariant *data,
                     gpointer  user_data)
{
  XprocCounter *counter = user_data;
  gint32 value = g_variant_get_int32 (data);

  if (G_UNLIKELY (value < 0 || (guint64) value != counter->received))
    g_error ("xproc-tput: got %d, expected %" G_GUINT64_FORMAT, value, counter->received);
  if (++counter->received == counter->expected)
    {
      counter->end_ns = now_ns ();
      counter->done = TRUE;
    }
}

void
xproc_scenario_tput (const Scenario *scenario,
                     Impl            impl,
                     Sample         *out)
{
  guint64 n = scaled (scenario->count);
  XprocCounter counter = { .expected = n };
  XprocEnd end;
  XprocPeer peer;
  Loop *loop;
  gint64 t0;

  if (n > G_MAXINT32)
    g_error ("xproc-tput: --scale too large for int32 sequence numbers");

  xproc_guard ();
  loop = loop_new ();
  g_main_context_acquire (loop->context);
  xproc_end_init (&end, impl, xproc_deliver_count, &counter);
  xproc_peer_spawn (&peer, &end, "tput", n);
  xproc_end_connect (&end, TRUE);
  g_strfreev (xproc_peer_expect (&peer, loop, "READY"));
  loop_flush (loop);

  loop_reset (loop);
  measure_begin ();
  xproc_peer_say (&peer, "GO\n");
  loop_run_until (loop, &counter.done);
  measure_end ();
  out->iterations = loop->iterations;
  out->sleeps = loop->sleeps;

  t0 = xproc_peer_finish (&peer, loop);
  xproc_end_close (&end);
  g_main_context_release (loop->context);
  loop_free (loop);
  alarm (0);

  out->messages = n;
  out->seconds = (counter.end_ns - t0) / 1e9;
  out->value = n / out->seconds;
}

/* ---- xproc-pingpong ---- */

typedef struct
{
  XprocEnd *end;
  Loop *loop;
  guint64 n, rounds;
  gint32 sent;
  gint64 t0;
  double *rtt;      /* ns per measured round trip */
  gboolean done;
} XprocPingPong;

static void
xproc_deliver_pong (GVariant *data,
                    gpointer  user_data)
{
  XprocPingPong *pp = user_data;
  gint64 t = now_ns ();

  if (G_UNLIKELY (g_variant_get_int32 (data) != pp->sent))
    g_error ("xproc-pingpong: got %d, expected %d", g_variant_get_int32 (data), pp->sent);

  if (pp->rounds == PINGPONG_WARMUP)
    {
      /* Warm-up over: the measured region starts with the next ping. */
      loop_reset (pp->loop);
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
  xproc_end_post (pp->end, g_variant_new_int32 (pp->sent));
}

void
xproc_scenario_pingpong (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out)
{
  XprocPingPong pp = { 0 };
  XprocEnd end;
  XprocPeer peer;
  double sum = 0;

  pp.n = scaled (scenario->count);
  pp.rtt = g_new (double, pp.n);
  pp.end = &end;

  xproc_guard ();
  pp.loop = loop_new ();
  g_main_context_acquire (pp.loop->context);
  xproc_end_init (&end, impl, xproc_deliver_pong, &pp);
  xproc_peer_spawn (&peer, &end, "pingpong", PINGPONG_WARMUP);
  xproc_end_connect (&end, TRUE);
  g_strfreev (xproc_peer_expect (&peer, pp.loop, "READY"));
  loop_flush (pp.loop);

  pp.t0 = now_ns ();
  xproc_end_post (&end, g_variant_new_int32 (0));
  xproc_end_flush (&end);
  loop_run_until (pp.loop, &pp.done);
  out->iterations = pp.loop->iterations;
  out->sleeps = pp.loop->sleeps;

  xproc_peer_finish (&peer, pp.loop);
  xproc_end_close (&end);
  g_main_context_release (pp.loop->context);
  loop_free (pp.loop);
  alarm (0);

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
