/* mp-frames.c: length-prefixed frames over a socket, on mpport's worker thread
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib-unix.h>

#include "mp-frames-private.h"
#include "mp-i18n-private.h"

/* The direct path of a stream (docs/wire.md): once two mpport processes agree on it, their
 * posts, closes and credits travel as frames on a socket of their own (passed as a file
 * descriptor over the D-Bus connection), which costs a copy per burst instead of GDBus's
 * marshalling and its thread. Reading runs on one thread (the context's). Writing may come
 * from any thread, under out_lock: the stream writes a lone post from the thread that made
 * it (mp-stream.c), and keeps the order of frames itself. */

#define READ_CHUNK (64 * 1024)

/* How long the context's thread leaves the reading to another before it looks again. */
#define MP_FRAMES_DEFER_MSEC 1

struct _MpFrames
{
  gatomicrefcount ref_count;
  int fd;
  GMainContext *context;    /* strong */
  MpFramesFunc func;
  gpointer user_data;

  /* Reading: the bytes read and not yet handed over, and the source watching for more. */
  GByteArray *in;
  GSource *in_source;
  gboolean ended;           /* func was called with kind 0 */
  /* Reading may also come from another thread (mp_frames_try_read()): everything above
   * and what follows is guarded by in_lock, held while func runs. The context's source
   * asks defer before it reads; if told to, it stops watching for resume_source's time. */
  GMutex in_lock;
  MpFramesDeferFunc defer;
  GSource *resume_source;
  gboolean closed;          /* mp_frames_close() ran */

  /* Writing: the bytes queued, from out_offset on, and the source waiting for room, all
   * guarded by out_lock. */
  GMutex out_lock;
  GByteArray *out;
  gsize out_offset;
  GSource *out_source;
  gboolean failed;
};

static void
end (MpFrames     *self,
     const GError *error)
{
  if (self->ended)
    return;
  self->ended = TRUE;
  if (self->in_source != NULL)
    {
      g_source_destroy (self->in_source);
      g_clear_pointer (&self->in_source, g_source_unref);
    }
  self->func (0, NULL, error, self->user_data);
}

static void
end_with_errno (MpFrames *self,
                int       saved)
{
  g_autoptr(GError) error = g_error_new (G_IO_ERROR, g_io_error_from_errno (saved),
                                         _("Could not read from the other process: %s"),
                                         g_strerror (saved));

  end (self, error);
}

static void
end_inside_frame (MpFrames *self)
{
  g_autoptr(GError) error = g_error_new_literal (G_IO_ERROR, G_IO_ERROR_PARTIAL_INPUT,
                                                 _("The stream from the other process ended inside a frame"));

  end (self, error);
}

/* Hands over the complete frames at the start of self->in. FALSE once it ended. */
static gboolean
parse (MpFrames *self)
{
  gsize offset = 0;

  while (!self->ended && self->in->len - offset >= 4)
    {
      const guint8 *p = self->in->data + offset;
      guint32 length = (guint32) p[0] | (guint32) p[1] << 8 | (guint32) p[2] << 16 |
                       (guint32) p[3] << 24;

      if (length == 0 || length > MP_FRAMES_MAX_LENGTH)
        {
          g_autoptr(GError) error =
            g_error_new (G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                         _("The other process sent a frame of %u bytes; the limit is %u"), length,
                         (guint) MP_FRAMES_MAX_LENGTH);

          end (self, error);
          return FALSE;
        }
      if (self->in->len - offset - 4 < length)
        break;

      {
        /* Copied out: the body needs 8-byte alignment (GVariant), and the buffer moves. */
        g_autoptr(GBytes) body = g_bytes_new (p + 5, length - 1);
        guint8 kind = p[4];

        offset += 4 + length;
        if (kind == 0)
          {
            g_autoptr(GError) error = g_error_new_literal (G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                                           _("The other process sent a frame of kind 0"));

            end (self, error);
            return FALSE;
          }
        self->func (kind, body, NULL, self->user_data);
      }
    }

  g_byte_array_remove_range (self->in, 0, offset);

  return !self->ended;
}

/* Reads what the socket has, without blocking, and hands over the frames. */
static void
read_available (MpFrames *self)
{
  while (!self->ended)
    {
      gsize old = self->in->len;
      gssize got;

      g_byte_array_set_size (self->in, old + READ_CHUNK);
      got = recv (self->fd, self->in->data + old, READ_CHUNK, MSG_DONTWAIT);
      g_byte_array_set_size (self->in, old + MAX (got, 0));

      if (got > 0)
        {
          if (!parse (self))
            return;
          continue;
        }
      if (got == 0)
        {
          if (self->in->len > 0)
            {
              end_inside_frame (self);
            }
          else
            end (self, NULL);
          return;
        }
      if (errno == EINTR)
        continue;
      /* The other end closed with frames of ours unread: a Unix socket hands over what was
       * sent to us before it reports the reset, so this is the end of its stream. */
      if (errno == ECONNRESET)
        {
          if (self->in->len > 0)
            {
              end_inside_frame (self);
            }
          else
            end (self, NULL);
          return;
        }
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        end_with_errno (self, errno);
      return;
    }
}

static gboolean on_readable (int           fd,
                             GIOCondition  condition,
                             gpointer      data);

/* With in_lock held. */
static void
watch_readable (MpFrames *self)
{
  self->in_source = g_unix_fd_source_new (self->fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
  g_source_set_static_name (self->in_source, "MpFrames in");
  g_source_set_callback (self->in_source, G_SOURCE_FUNC (on_readable), self, NULL);
  g_source_attach (self->in_source, self->context);
}

static gboolean
on_resume (gpointer data)
{
  MpFrames *self = data;

  g_mutex_lock (&self->in_lock);
  g_clear_pointer (&self->resume_source, g_source_unref);
  if (!self->closed && !self->ended && self->in_source == NULL)
    watch_readable (self);
  g_mutex_unlock (&self->in_lock);

  return G_SOURCE_REMOVE;
}

static gboolean
on_readable (int           fd,
             GIOCondition  condition,
             gpointer      data)
{
  MpFrames *self = data;

  /* Someone else reads for now: stop watching (a level-triggered watch would wake this
   * thread again at once) and look again later. */
  if (self->defer != NULL && self->defer (self->user_data))
    {
      g_mutex_lock (&self->in_lock);
      if (self->in_source != NULL && self->resume_source == NULL)
        {
          g_source_destroy (self->in_source);
          g_clear_pointer (&self->in_source, g_source_unref);
          self->resume_source = g_timeout_source_new (MP_FRAMES_DEFER_MSEC);
          g_source_set_static_name (self->resume_source, "MpFrames resume");
          g_source_set_callback (self->resume_source, on_resume, self, NULL);
          g_source_attach (self->resume_source, self->context);
        }
      g_mutex_unlock (&self->in_lock);
      return G_SOURCE_REMOVE;
    }

  g_mutex_lock (&self->in_lock);
  if (!self->closed)
    read_available (self);
  g_mutex_unlock (&self->in_lock);

  return G_SOURCE_CONTINUE;   /* end() destroys the source */
}

void
mp_frames_read_now (MpFrames *self)
{
  g_mutex_lock (&self->in_lock);
  if (!self->closed)
    read_available (self);
  g_mutex_unlock (&self->in_lock);
}

gboolean
mp_frames_try_read (MpFrames *self)
{
  if (!g_mutex_trylock (&self->in_lock))
    return FALSE;
  if (!self->closed)
    read_available (self);
  g_mutex_unlock (&self->in_lock);

  return TRUE;
}

void
mp_frames_set_defer (MpFrames          *self,
                     MpFramesDeferFunc  defer)
{
  g_mutex_lock (&self->in_lock);
  self->defer = defer;
  g_mutex_unlock (&self->in_lock);
}

int
mp_frames_get_fd (MpFrames *self)
{
  return self->fd;
}

/* Writes what it can without blocking. With out_lock held. */
static void
write_available (MpFrames *self)
{
  while (!self->failed && self->out_offset < self->out->len)
    {
      gssize done = send (self->fd, self->out->data + self->out_offset,
                          self->out->len - self->out_offset, MSG_DONTWAIT | MSG_NOSIGNAL);

      if (done > 0)
        {
          self->out_offset += done;
          continue;
        }
      if (done < 0 && errno == EINTR)
        continue;
      if (done < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
      /* The reader sees the end too (or the connection does): say nothing more here. */
      self->failed = TRUE;
    }

  if (self->out_offset == self->out->len || self->failed)
    {
      g_byte_array_set_size (self->out, 0);
      self->out_offset = 0;
    }
  else if (self->out_offset > READ_CHUNK)
    {
      g_byte_array_remove_range (self->out, 0, self->out_offset);
      self->out_offset = 0;
    }
}

static gboolean
on_writable (int           fd,
             GIOCondition  condition,
             gpointer      data)
{
  MpFrames *self = data;
  gboolean more;

  g_mutex_lock (&self->out_lock);
  write_available (self);
  more = self->out->len > 0;
  if (!more)
    g_clear_pointer (&self->out_source, g_source_unref);
  g_mutex_unlock (&self->out_lock);

  return more ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

/* With out_lock held. */
static void
watch_writable (MpFrames *self)
{
  if (self->out->len == 0 || self->out_source != NULL)
    return;

  self->out_source = g_unix_fd_source_new (self->fd, G_IO_OUT);
  g_source_set_static_name (self->out_source, "MpFrames out");
  g_source_set_callback (self->out_source, G_SOURCE_FUNC (on_writable), self, NULL);
  g_source_attach (self->out_source, self->context);
}

void
mp_frames_send (MpFrames *self,
                guint8    kind,
                GBytes   *body)
{
  gsize size;
  gconstpointer data = g_bytes_get_data (body, &size);
  guint32 length = (guint32) size + 1;
  guint8 header[5] = { length & 0xff, (length >> 8) & 0xff, (length >> 16) & 0xff,
                       (length >> 24) & 0xff, kind };

  g_return_if_fail (kind != 0);
  g_return_if_fail (size < MP_FRAMES_MAX_LENGTH);

  g_mutex_lock (&self->out_lock);
  if (!self->failed)
    {
      g_byte_array_append (self->out, header, sizeof header);
      g_byte_array_append (self->out, data, size);
      if (self->out_source == NULL)
        write_available (self);
      watch_writable (self);
    }
  g_mutex_unlock (&self->out_lock);
}

gboolean
mp_frames_is_flushed (MpFrames *self)
{
  gboolean flushed;

  g_mutex_lock (&self->out_lock);
  flushed = self->failed || self->out->len == 0;
  g_mutex_unlock (&self->out_lock);

  return flushed;
}

void
mp_frames_flush_sync (MpFrames *self,
                      gint64    end_time)
{
  g_mutex_lock (&self->out_lock);
  write_available (self);
  g_mutex_unlock (&self->out_lock);
  while (!mp_frames_is_flushed (self))
    {
      struct pollfd pfd = { .fd = self->fd, .events = POLLOUT };
      gint64 left = end_time - g_get_monotonic_time ();

      if (left <= 0)
        return;
      if (poll (&pfd, 1, (int) MIN (left / 1000 + 1, 1000)) < 0 && errno != EINTR)
        return;
      g_mutex_lock (&self->out_lock);
      write_available (self);
      g_mutex_unlock (&self->out_lock);
    }
}

MpFrames *
mp_frames_new (int           fd,
               GMainContext *context,
               MpFramesFunc  func,
               gpointer      user_data)
{
  MpFrames *self = g_new0 (MpFrames, 1);

  g_atomic_ref_count_init (&self->ref_count);
  self->fd = fd;
  self->context = g_main_context_ref (context);
  self->func = func;
  self->user_data = user_data;
  g_mutex_init (&self->in_lock);
  self->in = g_byte_array_sized_new (READ_CHUNK);
  g_mutex_init (&self->out_lock);
  self->out = g_byte_array_sized_new (READ_CHUNK);

  g_mutex_lock (&self->in_lock);
  watch_readable (self);
  g_mutex_unlock (&self->in_lock);

  return self;
}

MpFrames *
mp_frames_ref (MpFrames *self)
{
  g_atomic_ref_count_inc (&self->ref_count);

  return self;
}

void
mp_frames_unref (MpFrames *self)
{
  if (!g_atomic_ref_count_dec (&self->ref_count))
    return;

  g_assert (self->closed);
  g_byte_array_unref (self->in);
  g_byte_array_unref (self->out);
  g_mutex_clear (&self->in_lock);
  g_mutex_clear (&self->out_lock);
  g_main_context_unref (self->context);
  g_free (self);
}

void
mp_frames_close (MpFrames *self)
{
  /* After a read in progress on another thread, and before any other starts. */
  g_mutex_lock (&self->in_lock);
  self->closed = TRUE;
  if (self->in_source != NULL)
    {
      g_source_destroy (self->in_source);
      g_clear_pointer (&self->in_source, g_source_unref);
    }
  if (self->resume_source != NULL)
    {
      g_source_destroy (self->resume_source);
      g_clear_pointer (&self->resume_source, g_source_unref);
    }
  g_mutex_unlock (&self->in_lock);

  g_mutex_lock (&self->out_lock);
  if (self->out_source != NULL)
    {
      g_source_destroy (self->out_source);
      g_clear_pointer (&self->out_source, g_source_unref);
    }
  self->failed = TRUE;
  close (self->fd);
  self->fd = -1;
  g_mutex_unlock (&self->out_lock);

  mp_frames_unref (self);
}
