/* mp-pipe-private.h: the two-sided pipe behind a message channel
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <gio/gio.h>

#include "mp-message-private.h"
#include "mp-waker-private.h"

G_BEGIN_DECLS

/* Bits of MpPipeSide.state. Written only with the side's mutex held (atomically, so that
 * lock-free readers such as is_closed() see whole values); read anywhere. */
typedef enum {
  /* The side is closed: its inbox was dropped and whatever is posted to it is dropped. */
  MP_SIDE_CLOSED        = 1 << 0,
  /* The attached source was woken and its dispatch has not yet found the inbox empty:
   * posts made meanwhile need not wake it again. */
  MP_SIDE_ARMED         = 1 << 1,
  /* A started port's source is attached: side->source is set. */
  MP_SIDE_ATTACHED      = 1 << 2,
  /* The side closed while attached; its dispatch must still emit "close". */
  MP_SIDE_CLOSE_PENDING = 1 << 3,
  /* The peer's close marker is queued (or was consumed): nothing more can arrive. */
  MP_SIDE_PEER_CLOSED   = 1 << 4,
} MpSideState;

typedef struct _MpPipe     MpPipe;
typedef struct _MpPipeSide MpPipeSide;

/* One direction's endpoint: the inbox of messages posted by the peer side, and how to wake
 * whoever owns it. Not padded to a cache line: a channel costs memory even when idle (a
 * million idle channels is a use case), and g_new0() never gave the pipe more than 16-byte
 * alignment anyway, so the padding never kept the two sides apart. Rarely used parts (the
 * receive_async() waiters) are allocated on first use. */
struct _MpPipeSide
{
  /* Guards inbox, source and the state bits. Never held while user code runs; the only
   * foreign call made under it is the eventfd write of mp_wakeable_source_wake(). */
  GMutex mutex;

  /* MpMessage links posted by the peer, oldest first. Guarded by mutex. */
  GQueue inbox;

  /* MpReceiveWaiter links: receive_async() calls waiting for a message, oldest first, or
   * NULL if there never was one (allocated on first use, freed with the pipe). Guarded by
   * mutex. Non-empty only while the inbox is empty: a post hands its message to the oldest
   * waiter instead of queueing it. */
  GQueue *waiters;

  /* The owning port's source (an MpWakeableSource) while MP_SIDE_ATTACHED, else NULL; the
   * port holds the reference. Guarded by mutex: wake-ups (mp_wakeable_source_wake()) use it
   * with the lock held, detaching clears it under the lock, and the source's destroy-notify
   * takes the lock. */
  GSource *source;

  /* MpSideState bits; see above. */
  int state;

  /* How many messages of inbox carry ports (and so edges of the transit graph, see
   * mp-pipe.c). Guarded by mutex. */
  guint n_carrying;

  /* While this side's owner travels in a message queued at another side's inbox: that
   * side, else NULL. An edge of the transit graph, guarded by the transit lock. */
  MpPipeSide *transit_at;

  /* Immutable after mp_pipe_new(). */
  MpPipeSide *peer;
  MpPipe *pipe;
};

struct _MpPipe
{
  MpPipeSide sides[2];
  /* Each port object holds one reference, whether it owns its side or was detached. */
  gatomicrefcount ref_count;
};

/* A pending mp_message_port_receive_async(). Owned by the side's waiters queue while
 * queued, then by its completion. */
typedef struct
{
  GList link;              /* in MpPipeSide.waiters; link.data == self */
  GTask *task;             /* strong; its source object is the port */
  gulong cancelled_id;     /* handler on the task's cancellable, or 0 */
  MpPipeSide *side;        /* the side it waits on; alive as long as the task's port */
  gboolean queued;         /* in side->waiters; guarded by side->mutex */
} MpReceiveWaiter;

/* Completes @waiter later, from an idle on its task's context (never inside the caller),
 * with @message (transfer full) or else @error (transfer full). Implemented with the port. */
void        mp_receive_waiter_complete (MpReceiveWaiter *waiter,
                                        MpMessage       *message,
                                        GError          *error);

/* What a side gives up when it closes or changes hands; released with no lock held. */
typedef struct
{
  GQueue messages;   /* MpMessage links, dropped */
  GQueue waiters;    /* MpReceiveWaiter links, failed with MP_ERROR_INVALID_STATE */
} MpPipeDropped;

#define MP_PIPE_DROPPED_INIT { G_QUEUE_INIT, G_QUEUE_INIT }

void        mp_pipe_dropped_release (MpPipeDropped *dropped,
                                     const char    *waiter_message);

MpPipe     *mp_pipe_new   (void);
MpPipe     *mp_pipe_ref   (MpPipe *self);
void        mp_pipe_unref (MpPipe *self);

/* With the side's mutex held. */
static inline gboolean
mp_pipe_side_has_waiters (MpPipeSide *side)
{
  return side->waiters != NULL && side->waiters->length > 0;
}

static inline gboolean
mp_pipe_side_test (MpPipeSide *side,
                   MpSideState bits)
{
  return (g_atomic_int_get (&side->state) & bits) != 0;
}

static inline void
mp_pipe_side_set_locked (MpPipeSide *side,
                         MpSideState bits)
{
  g_atomic_int_or (&side->state, bits);
}

static inline void
mp_pipe_side_clear_locked (MpPipeSide *side,
                           MpSideState bits)
{
  g_atomic_int_and (&side->state, ~bits);
}

void        mp_pipe_side_wake_locked         (MpPipeSide *side);
gboolean    mp_pipe_side_close_locked        (MpPipeSide    *side,
                                              MpPipeDropped *dropped);
void        mp_pipe_side_steal_waiters_locked (MpPipeSide    *side,
                                               MpPipeDropped *dropped);
void        mp_pipe_side_notify_peer_closed  (MpPipeSide *side);
typedef enum {
  MP_SEND_QUEUED,
  MP_SEND_DROPPED,
  MP_SEND_REFUSED,
} MpSendResult;

MpMessage  *mp_pipe_side_pop_locked         (MpPipeSide *side);
gboolean    mp_pipe_side_transit_add_locked  (MpPipeSide        *to,
                                              MpPipeSide *const *sides,
                                              guint              n_sides);

MpSendResult mp_pipe_side_send_locked        (MpPipeSide       *to,
                                              MpMessage        *message,
                                              MpReceiveWaiter **waiter);
gboolean    mp_pipe_send_complete            (MpSendResult      result,
                                              MpMessage        *message,
                                              MpReceiveWaiter  *waiter);
gboolean    mp_pipe_side_send                (MpPipeSide       *from,
                                              MpMessage        *message);

G_END_DECLS
