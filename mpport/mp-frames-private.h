/* mp-frames-private.h: length-prefixed frames over a socket, on mpport's worker thread
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

/* Called on the context given to mp_frames_new() for each frame read, in order: @kind and
 * its @body (transfer none, 8-byte aligned). At the end of the stream, or when the socket
 * fails or sends a frame that breaks the format, it is called once more with @kind 0, @body
 * %NULL and @error (transfer none; %NULL for a clean end of stream); nothing follows. */
typedef void (*MpFramesFunc) (guint8        kind,
                              GBytes       *body,
                              const GError *error,
                              gpointer      user_data);

/* Reads and writes frames on the connected stream socket @fd (taken: closed with the
 * object), both on @context's thread (mpport's worker thread), which must not be the
 * application's. @func may free nothing of @self; mp_frames_free() stops it. */
MpFrames *mp_frames_new        (int            fd,
                                GMainContext  *context,
                                MpFramesFunc   func,
                                gpointer       user_data);
/* Stops reading, drops what was not written, closes the socket. The context's thread. */
void      mp_frames_free       (MpFrames      *self);

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
