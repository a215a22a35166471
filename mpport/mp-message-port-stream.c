/* mp-message-port-stream.c: the constructors of ports entangled with another process
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mp-error.h"
#include "mp-i18n-private.h"
#include "mp-message-port-private.h"
#include "mp-stream-private.h"

/* The public face of mp-stream.c: GLib's sync, async and subprocess conventions over
 * mp_stream_open(), which always connects in the background on mpport's worker thread. */

typedef struct
{
  GMutex lock;
  GCond cond;
  gboolean done;
  GError *error;
} SyncOpen;

static void
sync_ready (MpMessagePort *port,
            const GError  *error,
            gpointer       data)
{
  SyncOpen *op = data;

  g_mutex_lock (&op->lock);
  op->error = error != NULL ? g_error_copy (error) : NULL;
  op->done = TRUE;
  g_cond_signal (&op->cond);
  g_mutex_unlock (&op->lock);
}

static MpMessagePort *
open_sync (GIOStream            *stream,
           GDBusConnectionFlags  flags,
           GCancellable         *cancellable,
           GError              **error)
{
  SyncOpen op = { .done = FALSE };
  MpMessagePort *port;

  g_mutex_init (&op.lock);
  g_cond_init (&op.cond);

  port = mp_stream_open (stream, flags, cancellable, sync_ready, &op);

  g_mutex_lock (&op.lock);
  while (!op.done)
    g_cond_wait (&op.cond, &op.lock);
  g_mutex_unlock (&op.lock);

  g_mutex_clear (&op.lock);
  g_cond_clear (&op.cond);

  if (op.error != NULL)
    {
      g_propagate_error (error, op.error);
      g_object_unref (port);
      return NULL;
    }

  return port;
}

static void
async_ready (MpMessagePort *port,
             const GError  *error,
             gpointer       data)
{
  GTask *task = data;

  /* Called on the worker thread: GTask completes on the caller's context. */
  if (error != NULL)
    g_task_return_error (task, g_error_copy (error));
  else
    g_task_return_pointer (task, g_object_ref (port), g_object_unref);
  g_object_unref (task);
}

static void
open_async (GIOStream            *stream,
            GDBusConnectionFlags  flags,
            GCancellable         *cancellable,
            GAsyncReadyCallback   callback,
            gpointer              user_data,
            gpointer              source_tag)
{
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);
  MpMessagePort *port;

  g_task_set_source_tag (task, source_tag);
  /* The stream keeps the port for async_ready(); the task owns it from there. */
  port = mp_stream_open (stream, flags, cancellable, async_ready, task);
  g_object_unref (port);
}

/**
 * mp_message_port_new_for_stream_sync:
 * @stream: a connected byte stream to another process (a [class@Gio.SocketConnection]
 *   from `socketpair()` or TCP, or a [class@Gio.SimpleIOStream] over a subprocess's pipes)
 * @flags: which end of the connection this is, and how it authenticates
 * @cancellable: (nullable): a [class@Gio.Cancellable]
 * @error: return location for a #GError
 *
 * Makes a port entangled with a port in the process at the other end of @stream: the
 * first port of a stream, made by the same call (or [ctor@Mp.MessagePort.new_for_fd_sync])
 * there. It is an unstarted port like any other: start it or receive from it; posts,
 * transfers and closes cross the process boundary with the guarantees of a local port.
 *
 * The stream carries a D-Bus peer-to-peer connection ([class@Gio.DBusConnection]; one end
 * sets %MP_STREAM_FLAGS_SERVER, the other not) and speaks mpport's protocol over it
 * (`docs/wire.md`). This call blocks until the connection is authenticated; mpport's own
 * thread runs the connection from then on, whatever the calling thread does. Ports
 * transferred across the stream are carried by it too: one stream, any number of ports.
 * When the other process closes the stream, exits or crashes, every port it held an end of
 * closes here ("close" on its context), after the messages that arrived before.
 *
 * Errors are GDBus's: %G_IO_ERROR_CANCELLED when @cancellable is cancelled, and those of
 * [ctor@Gio.DBusConnection.new_sync] when the connection cannot be made or authenticated
 * (such as %G_IO_ERROR_FAILED when the other end closes the stream first); this call sets
 * no %MP_ERROR code.
 *
 * Callable from any thread.
 *
 * Returns: (transfer full): the port, or %NULL with @error set
 *
 * Since: 1.0
 */
MpMessagePort *
mp_message_port_new_for_stream_sync (GIOStream      *stream,
                                     MpStreamFlags   flags,
                                     GCancellable   *cancellable,
                                     GError        **error)
{
  g_return_val_if_fail (G_IS_IO_STREAM (stream), NULL);
  g_return_val_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  return open_sync (stream, mp_stream_connection_flags (flags), cancellable, error);
}

/**
 * mp_message_port_new_for_stream:
 * @stream: a connected byte stream to another process
 * @flags: which end of the connection this is, and how it authenticates
 * @cancellable: (nullable): a [class@Gio.Cancellable]
 * @callback: (scope async): called on the thread-default main context of the calling
 *   thread once the connection is authenticated, or has failed
 * @user_data: data for @callback
 *
 * The asynchronous form of [ctor@Mp.MessagePort.new_for_stream_sync]; finish it with
 * [ctor@Mp.MessagePort.new_for_stream_finish]. Callable from any thread.
 *
 * Since: 1.0
 */
void
mp_message_port_new_for_stream (GIOStream           *stream,
                                MpStreamFlags        flags,
                                GCancellable        *cancellable,
                                GAsyncReadyCallback  callback,
                                gpointer             user_data)
{
  g_return_if_fail (G_IS_IO_STREAM (stream));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  open_async (stream, mp_stream_connection_flags (flags), cancellable, callback, user_data,
              mp_message_port_new_for_stream);
}

/**
 * mp_message_port_new_for_stream_finish:
 * @result: the result given to the callback
 * @error: return location for a #GError
 *
 * Finishes [func@Mp.MessagePort.new_for_stream]. Call it on the thread of the callback.
 * The errors are those of [ctor@Mp.MessagePort.new_for_stream_sync]: GDBus's, such as
 * %G_IO_ERROR_CANCELLED.
 *
 * Returns: (transfer full): the port, or %NULL with @error set
 *
 * Since: 1.0
 */
MpMessagePort *
mp_message_port_new_for_stream_finish (GAsyncResult  *result,
                                       GError       **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}

/**
 * mp_message_port_new_for_launcher:
 * @launcher: the launcher that will spawn the other process
 * @child_fd: the file descriptor number the child will find its end at (3 or more)
 * @error: return location for a #GError
 *
 * Makes a port entangled with a port of a child process that @launcher will spawn: a
 * `socketpair()` whose one end goes to @launcher with
 * [method@Gio.SubprocessLauncher.take_fd] as @child_fd. Put that number on the child's
 * command line or in its environment; the child picks its end up with
 * [ctor@Mp.MessagePort.new_for_fd_sync] and that number.
 *
 * Nothing is read or written yet, so this never blocks: the port is returned at once and
 * can be posted on (and started) right away; posts wait until the child connects. Spawn with
 * @launcher once, then drop it: the launcher holds this process's copy of the child's end
 * until it is finalized, and as long as that copy is open, the child's exit is not seen here.
 * If the child never connects (it exits, or is never spawned and the launcher is
 * finalized), the port closes.
 *
 * This end authenticates as the server ([flags@Mp.StreamFlags.SERVER]) and accepts only
 * a child running as the same user. It fails only if `socketpair()` does, with the
 * matching [error@Gio.IOErrorEnum] (such as %G_IO_ERROR_TOO_MANY_OPEN_FILES). Callable from
 * any thread.
 *
 * Returns: (transfer full): the port, or %NULL with @error set
 *
 * Since: 1.0
 */
MpMessagePort *
mp_message_port_new_for_launcher (GSubprocessLauncher  *launcher,
                                  int                   child_fd,
                                  GError              **error)
{
  g_autoptr(GSocket) socket = NULL;
  g_autoptr(GSocketConnection) connection = NULL;
  int fds[2];

  g_return_val_if_fail (G_IS_SUBPROCESS_LAUNCHER (launcher), NULL);
  g_return_val_if_fail (child_fd > 2, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    {
      int saved = errno;

      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
                   _("Could not make a socket pair for a child process: %s"),
                   g_strerror (saved));
      return NULL;
    }

  socket = g_socket_new_from_fd (fds[0], error);
  if (socket == NULL)
    {
      close (fds[0]);
      close (fds[1]);
      return NULL;
    }
  g_subprocess_launcher_take_fd (launcher, fds[1], child_fd);

  connection = g_socket_connection_factory_create_connection (socket);

  return mp_stream_open (G_IO_STREAM (connection),
                         mp_stream_connection_flags (MP_STREAM_FLAGS_SERVER), NULL, NULL, NULL);
}

static GIOStream *
stream_for_fd (int      fd,
               GError **error)
{
  GSocket *socket = g_socket_new_from_fd (fd, error);
  GSocketConnection *connection;

  if (socket == NULL)
    return NULL;

  connection = g_socket_connection_factory_create_connection (socket);
  g_object_unref (socket);

  return G_IO_STREAM (connection);
}

/**
 * mp_message_port_new_for_fd_sync:
 * @fd: a connected socket (transfer full: it is closed with the port's stream), typically
 *   the end a parent passed with [ctor@Mp.MessagePort.new_for_launcher]
 * @cancellable: (nullable): a [class@Gio.Cancellable]
 * @error: return location for a #GError
 *
 * Makes the port entangled with the parent's port of [ctor@Mp.MessagePort.new_for_launcher],
 * in the child: @fd is the number the parent chose. This end authenticates as the client.
 * Blocks until the connection is authenticated; see
 * [ctor@Mp.MessagePort.new_for_stream_sync] for what the port does then. It fails with
 * %G_IO_ERROR_INVALID_ARGUMENT (or another [error@Gio.IOErrorEnum]) if @fd is not a socket,
 * and with GDBus's errors (such as %G_IO_ERROR_CANCELLED) if the connection cannot be made;
 * @fd is closed then too. Callable from any thread.
 *
 * Returns: (transfer full): the port, or %NULL with @error set
 *
 * Since: 1.0
 */
MpMessagePort *
mp_message_port_new_for_fd_sync (int            fd,
                                 GCancellable  *cancellable,
                                 GError       **error)
{
  g_autoptr(GIOStream) stream = NULL;

  g_return_val_if_fail (fd >= 0, NULL);
  g_return_val_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  stream = stream_for_fd (fd, error);
  if (stream == NULL)
    {
      close (fd);
      return NULL;
    }

  return open_sync (stream, mp_stream_connection_flags (MP_STREAM_FLAGS_NONE), cancellable,
                    error);
}

/**
 * mp_message_port_new_for_fd:
 * @fd: a connected socket (transfer full)
 * @cancellable: (nullable): a [class@Gio.Cancellable]
 * @callback: (scope async): called on the thread-default main context of the calling
 *   thread once the connection is authenticated, or has failed
 * @user_data: data for @callback
 *
 * The asynchronous form of [ctor@Mp.MessagePort.new_for_fd_sync]; finish it with
 * [ctor@Mp.MessagePort.new_for_fd_finish]. Callable from any thread.
 *
 * Since: 1.0
 */
void
mp_message_port_new_for_fd (int                  fd,
                            GCancellable        *cancellable,
                            GAsyncReadyCallback  callback,
                            gpointer             user_data)
{
  g_autoptr(GIOStream) stream = NULL;
  GError *error = NULL;

  g_return_if_fail (fd >= 0);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  stream = stream_for_fd (fd, &error);
  if (stream == NULL)
    {
      GTask *task = g_task_new (NULL, cancellable, callback, user_data);

      close (fd);
      g_task_set_source_tag (task, mp_message_port_new_for_fd);
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }

  open_async (stream, mp_stream_connection_flags (MP_STREAM_FLAGS_NONE), cancellable, callback,
              user_data, mp_message_port_new_for_fd);
}

/**
 * mp_message_port_new_for_fd_finish:
 * @result: the result given to the callback
 * @error: return location for a #GError
 *
 * Finishes [func@Mp.MessagePort.new_for_fd]. Call it on the thread of the callback. The
 * errors are those of [ctor@Mp.MessagePort.new_for_fd_sync]: %G_IO_ERROR_INVALID_ARGUMENT
 * if the fd is not a socket, GDBus's otherwise.
 *
 * Returns: (transfer full): the port, or %NULL with @error set
 *
 * Since: 1.0
 */
MpMessagePort *
mp_message_port_new_for_fd_finish (GAsyncResult  *result,
                                   GError       **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}
