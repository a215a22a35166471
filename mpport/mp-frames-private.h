/* mp-frames-private.h: length-prefixed frames over a socket
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* A frame: a 4-byte little-endian length L, then L bytes: one byte of kind (not 0) and the
 * body. L is at least 1 and at most MP_FRAMES_MAX_LENGTH; a longer one is refused before
 * anything is allocated for it. */
#define MP_FRAMES_MAX_LENGTH (32u * 1024 * 1024)

typedef struct _MpFrames MpFrames;

/* Called for each frame read, in order, with the reading lock held (on the context given
 * to mp_frames_new(), or in the thread of mp_frames_try_read()): @kind and
 * its @body (transfer none, 8-byte aligned). At the end of the stream, or when the socket
 * fails or sends a frame that breaks the format, it is called once more with @kind 0, @body
 * %NULL and @error (transfer none; %NULL for a clean end of stream); nothing follows. */
typedef void (*MpFramesFunc) (guint8        kind,
                              GBytes       *body,
                              const GError *error,
                              gpointer      user_data);

/* Reads and writes frames on the connected stream socket @fd (taken: closed by
 * mp_frames_close()), watched on @context (mpport's worker thread's); one reference.
 * @func may close nothing of @self; mp_frames_close() stops it. */
MpFrames *mp_frames_new        (int            fd,
                                GMainContext  *context,
                                MpFramesFunc   func,
                                gpointer       user_data);
/* Stops reading (after a read in progress on another thread), drops what was not written,
 * closes the socket, and drops the caller's reference. The context's thread. */
void      mp_frames_close      (MpFrames      *self);
MpFrames *mp_frames_ref        (MpFrames      *self);
/* Frees what mp_frames_close() left, at the last reference. Any thread. */
void      mp_frames_unref      (MpFrames      *self);

/* Asked by the context's thread when the socket is readable: TRUE if another thread is
 * about to read it (mp_frames_try_read()), and the context's thread should let it, and ask
 * again a millisecond later if the socket is still readable. */
typedef gboolean (*MpFramesDeferFunc) (gpointer user_data);

void      mp_frames_set_defer  (MpFrames          *self,
                                MpFramesDeferFunc  defer);
/* Reads and hands over what the socket has, on the calling thread, unless a read is in
 * progress elsewhere (then FALSE). Any thread, outside @func. */
gboolean  mp_frames_try_read   (MpFrames      *self);
/* The socket, to watch for reading on another context. */
int       mp_frames_get_fd     (MpFrames      *self);

/* Queues a frame of @kind with @body and writes what it can without blocking; the rest is
 * written as the socket takes it. Any thread; the caller keeps the frames in order. */
void      mp_frames_send       (MpFrames      *self,
                                guint8         kind,
                                GBytes        *body);
/* Whether everything queued was written. Any thread. */
gboolean  mp_frames_is_flushed (MpFrames      *self);
/* Writes what is queued, blocking until it is written, the socket fails, or the monotonic
 * @end_time. Any thread. */
void      mp_frames_flush_sync (MpFrames      *self,
                                gint64         end_time);
/* Reads and hands over every frame already received, without blocking (then the end of the
 * stream, if it came). The context's thread, outside @func. */
void      mp_frames_read_now   (MpFrames      *self);

G_END_DECLS
