/* mp-pipe-private.h: the two-sided pipe behind a message channel
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <gio/gio.h>

#include "mp-lane-private.h"
#include "mp-message-private.h"
#include "mp-waker-private.h"

G_BEGIN_DECLS

/* Bits of MpPipeSide.state. Written only with the side's mutex held (atomically, so that
 * lock-free readers such as is_closed() see whole values); read anywhere. Bits 16 to 23 are
 * not flags but a count, MP_SIDE_SPARES_COUNT() (see mp-pipe.c). */
typedef enum {
  /* The side is closed: its inbox was dropped and whatever is posted to it is dropped. */
  MP_SIDE_CLOSED        = 1 << 0,
  /* The attached source was woken and its dispatch has not yet found the inbox empty:
   * posts made meanwhile need not wake it again. Read without the lock by a post that
   * pushed on the empty lane (see mp_pipe_side_disarm_locked()). */
  MP_SIDE_ARMED         = 1 << 1,
  /* A started port's source is attached: side->source is set. */
  MP_SIDE_ATTACHED      = 1 << 2,
  /* The side closed while attached; its dispatch must still emit "close". */
  MP_SIDE_CLOSE_PENDING = 1 << 3,
  /* The peer's close marker is queued (or was consumed): nothing more can arrive. */
  MP_SIDE_PEER_CLOSED   = 1 << 4,
  /* Closed by its owner (close(), or its context's end), not only by reaching the peer's
   * close marker: posting on it is misuse (MP_ERROR_INVALID_STATE). A survivor closed by its
   * peer never is: its posts succeed and are dropped. */
  MP_SIDE_CLOSED_HERE   = 1 << 5,
  /* Owned by a stream's relay (mp-stream.c): what is posted to this side goes to another
   * process, so a post towards it is checked and encoded when it is made, and a post that
   * could not travel fails there (MP_ERROR_DATA_CLONE). Set once, before the relay starts. */
  MP_SIDE_REMOTE        = 1 << 6,
  /* waiters->feed is set: what receivers take out of this side is reported to it. */
  MP_SIDE_FED           = 1 << 7,
  /* The side is its pipe's sides[1] (set by mp_pipe_new(), never changed): the pipe and
   * the peer are found from it, rather than kept in two pointers per side. */
  MP_SIDE_SECOND        = 1 << 8,
  /* Posts wait for room in waiters->posting (it is not empty). A hint for posters, read
   * without the lock: a post that sees it makes its waiter first (see
   * mp_message_port_post_message_async()); what the post becomes is decided under the lock. */
  MP_SIDE_POSTS_WAIT    = 1 << 9,
} MpSideState;

/* How many recycled nodes MpPipeSide.spares holds: bits 16-23 of the state word. */
#define MP_SIDE_SPARES_SHIFT 16
#define MP_SIDE_SPARES_COUNT(state) ((((guint) (state)) >> MP_SIDE_SPARES_SHIFT) & 0xff)

typedef struct _MpPipeWaiters MpPipeWaiters;
typedef struct _MpPostWaiter  MpPostWaiter;
typedef struct _MpPipeFeed    MpPipeFeed;
typedef struct _MpPipeSink    MpPipeSink;

/* Takes a message the side's owner would emit as "message" (borrowed, as a handler's). */
typedef void (*MpPipeDeliverFunc) (MpMessage *message,
                                   gpointer   data);

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
   * foreign call made under it is the eventfd write of mp_wakeable_source_wake() (a close,
   * a transfer; a post writes its wake-up after unlocking). Plain posts to a started port
   * do not take it: see lane. */
  GMutex mutex;

  /* MpMessage links posted by the peer, oldest first. Guarded by mutex. */
  GQueue inbox;

  /* The pending receives (receive_async(), receive_timeout()) and the async ones served but
   * not yet delivered, or NULL if there never was one (allocated on first use, freed with
   * the pipe). Guarded by mutex. See MpPipeWaiters. */
  MpPipeWaiters *waiters;

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

  /* Bare message nodes that this side's dispatch delivered and released, for the peer's
   * posters to reuse: a lock-free stack through link.next, pushed one at a time by the
   * dispatch (under mutex) and taken whole by a poster (an atomic exchange, so no ABA),
   * until the side closes. Counted in state (MP_SIDE_SPARES_COUNT()). See mp-pipe.c. */
  MpMessage *spares;

  /* The posts' lock-free lane: while open, a post of a message without ports pushes it
   * here with one compare-and-swap instead of taking mutex (newest first, through
   * link.next), and the lock holder moves them into inbox, oldest first, before it looks
   * at inbox. MP_LANE_SHUT while the side needs each post under its lock (not
   * attached, closing, receives or posts waiting, a high-water mark, another process):
   * only the lock holder opens or shuts it. See "The posts' lane" in mp-pipe.c. */
  gpointer lane;

  /* The pipe and the peer: mp_pipe_side_get_pipe(), mp_pipe_side_get_peer(). */
};

struct _MpPipe
{
  MpPipeSide sides[2];
  /* Each port object holds one reference, whether it owns its side or was detached. */
  gatomicrefcount ref_count;
};

/* Any thread: MP_SIDE_SECOND never changes. */
static inline MpPipe *
mp_pipe_side_get_pipe (MpPipeSide *side)
{
  guint index = (g_atomic_int_get (&side->state) & MP_SIDE_SECOND) != 0;

  return (MpPipe *) (gpointer) ((char *) (side - index) - G_STRUCT_OFFSET (MpPipe, sides));
}

static inline MpPipeSide *
mp_pipe_side_get_peer (MpPipeSide *side)
{
  guint index = (g_atomic_int_get (&side->state) & MP_SIDE_SECOND) != 0;

  return &mp_pipe_side_get_pipe (side)->sides[1 - index];
}

/* A pending receive: an mp_message_port_receive_async() (async) or a blocking
 * mp_message_port_receive_timeout() (sync, on the waiting thread's stack). It gets its result
 * (a message or an error) under its side's lock, in the order the side hands messages out;
 * async results are then delivered by idles on the caller's context, in that same order. */
typedef struct _MpReceiveWaiter MpReceiveWaiter;

struct _MpReceiveWaiter
{
  /* In MpPipeWaiters.waiting while queued; then, for an async waiter, in
   * MpPipeWaiters.completed until delivered. Guarded by side->mutex. link.data == self. */
  GList link;
  MpPipeSide *side;          /* immutable; alive as long as the waiter (via its port) */
  gboolean queued;           /* in waiting; guarded by side->mutex */
  gboolean completed;        /* in completed; guarded by side->mutex */
  gboolean sync;             /* immutable */

  /* The result, set once under side->mutex as the waiter leaves the queue (or is served at
   * once); exactly one is set. Owned. */
  MpMessage *message;
  GError *error;

  /* Sync: signalled (with side->mutex held) when the result is set. */
  GCond *cond;

  /* Async. task: strong, made without callback or cancellable (the delivery idle calls
   * callback itself, in order; GTask would defer a cancelled task by one more idle).
   * context: the task's. idle: strong until attached, owns the waiter. */
  GTask *task;
  GAsyncReadyCallback callback;
  gpointer user_data;
  GMainContext *context;
  GSource *idle;
  GList schedule_link;       /* in MpPipeDeferred.scheduled; schedule_link.data == self */

  /* Either kind: the cancellable (strong) and the handler connected to it, or 0. */
  GCancellable *cancellable;
  gulong cancelled_id;
};

/* A hook on a side whose inbox is fed by someone who needs to know what was taken out of it
 * (a stream's flow control, mp-stream.c). Set with mp_pipe_side_set_feed_locked(). */
struct _MpPipeFeed
{
  /* Called with the side's lock held, for every message that a receiver takes out of the
   * side's inbox or is handed by a post (a dispatch, receive(), a pending receive), not for
   * the close marker nor for what a close drops. It must not block nor take a lock. */
  void (*consumed) (MpPipeFeed *feed,
                    MpMessage  *message);
  /* Called with the side's lock held when the side's high-water mark changed to @mark. The
   * same rules. */
  void (*mark_changed) (MpPipeFeed *feed,
                        guint       mark);
};

/* A hook on a MP_SIDE_REMOTE side through which a post can leave at once, in the poster's
 * thread, instead of waiting in the inbox for the side's dispatch (a stream's relay sends
 * it to the other process, mp-stream.c). Set with mp_pipe_side_set_sink_locked(). */
struct _MpPipeSink
{
  /* Called with the side's lock held, for a post without transfers made while the inbox is
   * empty and the side is not ARMED (no message of the side is being dispatched), so that
   * taking it keeps the order: @data is the post's payload, already checked and in the
   * normal form it travels in (mp_wire_encode_payload()), or NULL. Returns TRUE if it took
   * the post; FALSE to have it queued as usual. It may take locks that are never held
   * while a side's lock is taken, and must not block. */
  gboolean (*post) (MpPipeSink *sink,
                    GVariant   *data);
};

struct _MpPipeWaiters
{
  /* MpReceiveWaiter links, oldest first. Non-empty only while the inbox is empty: a post
   * hands its message to the oldest waiter instead of queueing it. */
  GQueue waiting;
  /* Async MpReceiveWaiter links that have their result, in the order they got it, until an
   * idle on their context takes them out to deliver them. */
  GQueue completed;
  /* The side's feed hook, or NULL; set while MP_SIDE_FED is. (Here, with the other rarely
   * used parts, so that a channel costs no more memory.) */
  MpPipeFeed *feed;
  /* The side's sink hook, or NULL (only on a MP_SIDE_REMOTE side). */
  MpPipeSink *sink;
  /* What the owner's dispatch hands its messages to instead of emitting "message"
   * (mp_message_port_set_sink(): a stream's relay), or NULL. */
  MpPipeDeliverFunc deliver;
  gpointer deliver_data;
  /* Flow control (mp_pipe_side_set_high_water_mark_locked()): the mark, or 0 for none, and
   * the posts that wait for room, oldest first: MpMessage links of async posts (each with its
   * MpPostWaiter in post_waiters, in the same order) and of sync posts made behind them.
   * posting is non-empty only while the inbox holds at least high_water_mark messages: what
   * takes a message out of the inbox, or raises the mark, moves posts in
   * (mp_pipe_side_admit_locked()). */
  guint high_water_mark;
  GQueue posting;
  GQueue post_waiters;
  /* On a MP_SIDE_REMOTE side, whose messages go to a port of another process: that port's
   * mark is high_water_mark, and what counts against it is the inbox plus what left it and
   * that the other process's application has not taken yet: remote_sent (how many messages
   * left the inbox, or went to the sink) minus remote_taken (how many the other side says
   * it took, mp_pipe_side_set_remote_room_locked()). Both count modulo 2^32. */
  guint remote_sent;
  guint remote_taken;
  /* The waiters of the posts that the side's dispatch let in
   * (mp_pipe_side_pop_for_dispatch_locked()), not told yet (MpPostWaiter links, by
   * wake_deferred): told when the dispatch ends, or before anything else takes a message
   * out, waits to, or closes the side (mp_pipe_side_wake_deferred_locked()); a producer is
   * woken once per dispatch, not once per message it took. */
  GQueue to_wake;
};

/* An async post waiting for room at a side (mp_message_port_post_message_async()). The pipe
 * sees only this head; the port's code embeds it. */
struct _MpPostWaiter
{
  /* In waiters->post_waiters while queued. link.data == self. */
  GList link;
  /* The post: in waiters->posting while queued (the queue's), then no longer the waiter's
   * business. */
  MpMessage *message;
  /* Written under the side's mutex, atomically: the waiter's own source reads it without
   * the lock (a waiter is woken only once it is out of the queue, so its dispatch, and its
   * destroy-notify after that, need no lock). */
  int queued;
  /* Out of the queue, its post in the inbox, but its wake put off until the receiving
   * side's dispatch ends: in waiters->to_wake. Guarded by the side's mutex. */
  gboolean wake_deferred;
  /* Set once, under the side's mutex, as the waiter leaves the queue, before its source is
   * woken: NULL if the post went into the inbox, else why it did not (owned). Atomic. */
  GError *error;
  /* An MpWakeableSource on the poster's context, woken once the waiter left the queue; its
   * destroy-notify takes the waiter out of the queue (under the side's mutex) if it is still
   * there, so it is alive while the waiter is queued. */
  GSource *source;
};

/* What a locked section leaves for the caller to do once every lock is released: messages to
 * drop (user data may be freed) and the delivery idles of async waiters to attach. */
typedef struct
{
  GQueue messages;    /* MpMessage links, dropped */
  GQueue scheduled;   /* MpReceiveWaiter.schedule_link links: idles to attach */
  MpMessage *spares;  /* bare recycled nodes of a side that closed, freed */
  MpWaker *wake;      /* a wake-up to write (mp_wakeable_source_wake_begin()), first */
} MpPipeDeferred;

#define MP_PIPE_DEFERRED_INIT { G_QUEUE_INIT, G_QUEUE_INIT, NULL, NULL }

void        mp_pipe_deferred_release (MpPipeDeferred *deferred);

/* Gives @waiter (dequeued, or never queued) its result: @message or else @error (both transfer
 * full). A sync waiter is woken; an async one joins the side's completed queue and its
 * delivery idle goes to @deferred. With side->mutex held. */
void        mp_receive_waiter_resolve_locked (MpReceiveWaiter *waiter,
                                              MpMessage       *message,
                                              GError          *error,
                                              MpPipeDeferred  *deferred);

/* An async waiter for a receive on @side by @source_object (a port), with its GTask and its
 * delivery idle, not queued yet; its cancellable is watched from now on. No lock held. */
MpReceiveWaiter *mp_receive_waiter_new_async (MpPipeSide          *side,
                                              gpointer             source_object,
                                              gpointer             source_tag,
                                              GCancellable        *cancellable,
                                              GAsyncReadyCallback  callback,
                                              gpointer             user_data);
/* A blocking waiter on the caller's stack, woken through @cond (used with side->mutex).
 * No lock held; mp_receive_waiter_clear_sync() once it is no longer queued. */
void        mp_receive_waiter_init_sync      (MpReceiveWaiter *self,
                                              MpPipeSide      *side,
                                              GCond           *cond,
                                              GCancellable    *cancellable);
void        mp_receive_waiter_clear_sync     (MpReceiveWaiter *self);
/* With side->mutex held and @self queued: waits until it has a result or the monotonic
 * @end_time passes (-1: no limit); then it is no longer queued, with or without a result. */
void        mp_receive_waiter_wait_locked    (MpReceiveWaiter *self,
                                              gint64           end_time);
/* G_IO_ERROR_CANCELLED, the one error of every cancelled receive. */
GError     *mp_receive_cancelled_error       (void);
/* MP_ERROR_CLOSED, the end of the stream: the port was closed by its owner while the receive
 * waited (@by_owner), or the other port closed and everything it posted was taken. */
GError     *mp_receive_closed_error          (gboolean by_owner);

MpPipe     *mp_pipe_new   (void);
MpPipe     *mp_pipe_ref   (MpPipe *self);
void        mp_pipe_unref (MpPipe *self);

/* With the side's mutex held. */
static inline gboolean
mp_pipe_side_has_waiters (MpPipeSide *side)
{
  return side->waiters != NULL && side->waiters->waiting.length > 0;
}

static inline gboolean
mp_pipe_side_test (MpPipeSide *side,
                   MpSideState bits)
{
  return (g_atomic_int_get (&side->state) & bits) != 0;
}

/* The state bits whose change may open or shut the lane. */
#define MP_SIDE_LANE_BITS (MP_SIDE_ATTACHED | MP_SIDE_CLOSED | MP_SIDE_CLOSE_PENDING | \
                           MP_SIDE_PEER_CLOSED | MP_SIDE_REMOTE)

void        mp_pipe_side_update_lane_locked  (MpPipeSide *side);
gboolean    mp_pipe_side_disarm_locked       (MpPipeSide *side);

/* Moves what was posted on the lane into the inbox (side's mutex held): whoever looks at
 * the inbox, or queues at it under the lock, does this first. */
static inline void
mp_pipe_side_flush_lane_locked (MpPipeSide *side)
{
  if (mp_lane_is_busy (&side->lane))
    mp_lane_take (&side->lane, &side->inbox, FALSE);
}

static inline void
mp_pipe_side_set_locked (MpPipeSide *side,
                         MpSideState bits)
{
  g_atomic_int_or (&side->state, bits);
  if ((bits & MP_SIDE_LANE_BITS) != 0)
    mp_pipe_side_update_lane_locked (side);
}

static inline void
mp_pipe_side_clear_locked (MpPipeSide *side,
                           MpSideState bits)
{
  g_atomic_int_and (&side->state, ~bits);
  if ((bits & MP_SIDE_LANE_BITS) != 0)
    mp_pipe_side_update_lane_locked (side);
}

void        mp_pipe_side_wake_locked         (MpPipeSide *side);
gboolean    mp_pipe_side_close_locked        (MpPipeSide     *side,
                                              gboolean        by_owner,
                                              MpPipeDeferred *deferred);
void        mp_pipe_side_reach_peer_close_locked (MpPipeSide     *side,
                                                  MpMessage      *marker,
                                                  MpPipeDeferred *deferred);
void        mp_pipe_side_fail_waiters_locked (MpPipeSide     *side,
                                              GError         *error,
                                              MpPipeDeferred *deferred);
void        mp_pipe_side_enqueue_waiter_locked (MpPipeSide      *side,
                                                MpReceiveWaiter *waiter);
void        mp_pipe_side_notify_peer_closed  (MpPipeSide *side);
MpPipeSide *mp_pipe_get_inert_side           (void);
gboolean    mp_pipe_side_is_inert            (MpPipeSide *side);

typedef enum {
  MP_SEND_QUEUED,
  MP_SEND_DROPPED,
  MP_SEND_REFUSED,
  MP_SEND_WAITING,
} MpSendResult;

MpMessage  *mp_pipe_side_pop_locked         (MpPipeSide *side);
/* Hooks @feed (or none, with %NULL) on @side, whose lock the caller holds. */
void        mp_pipe_side_set_feed_locked     (MpPipeSide *side,
                                              MpPipeFeed *feed);
/* Hooks @sink (or none, with %NULL) on @side (MP_SIDE_REMOTE), whose lock the caller holds. */
void        mp_pipe_side_set_sink_locked     (MpPipeSide *side,
                                              MpPipeSink *sink);

/* With the side's lock held: a receiver took @message (not a close marker). */
static inline void
mp_pipe_side_consumed_locked (MpPipeSide *side,
                              MpMessage  *message)
{
  if (G_UNLIKELY (mp_pipe_side_test (side, MP_SIDE_FED)))
    side->waiters->feed->consumed (side->waiters->feed, message);
}
void        mp_pipe_entry_take_result        (MpMessage       *entry,
                                              MpMessage      **message,
                                              GError         **error,
                                              MpPipeDeferred  *deferred);
gboolean    mp_pipe_side_transit_add_locked  (MpPipeSide        *to,
                                              MpPipeSide *const *sides,
                                              guint              n_sides);

MpSendResult mp_pipe_side_send_locked        (MpPipeSide     *to,
                                              MpMessage      *message,
                                              MpPipeDeferred *deferred);
MpSendResult mp_pipe_side_post_locked        (MpPipeSide     *to,
                                              MpMessage      *message,
                                              MpPostWaiter   *waiter,
                                              MpPipeDeferred *deferred);
MpMessage  *mp_pipe_side_withdraw_locked     (MpPipeSide     *to,
                                              MpPostWaiter   *waiter,
                                              GError         *error);
void        mp_pipe_side_forget_waiter_locked (MpPipeSide   *to,
                                               MpPostWaiter *waiter);
void        mp_pipe_side_wake_deferred_locked (MpPipeSide *side);
MpMessage  *mp_pipe_side_pop_for_dispatch_locked (MpPipeSide *side);
gboolean    mp_pipe_side_has_room_locked     (MpPipeSide     *to);
void        mp_pipe_side_set_high_water_mark_locked (MpPipeSide *side,
                                                     guint       mark);
guint       mp_pipe_side_get_high_water_mark_locked (MpPipeSide *side);
void        mp_pipe_side_admit_locked        (MpPipeSide     *side);
void        mp_pipe_side_make_remote_locked  (MpPipeSide     *side);
void        mp_pipe_side_unsend_locked       (MpPipeSide     *side);
guint       mp_pipe_side_count_queued_locked (MpPipeSide     *side);
gboolean    mp_pipe_side_set_remote_room_locked (MpPipeSide *side,
                                                 guint       mark,
                                                 guint       taken);
gboolean    mp_pipe_side_send                (MpPipeSide     *from,
                                              MpMessage      *message);
gboolean    mp_pipe_side_send_data           (MpPipeSide     *from,
                                              GVariant       *data);
gboolean    mp_pipe_side_keep_spare_locked   (MpPipeSide     *side,
                                              MpMessage      *node);
gboolean    mp_pipe_side_send_to_sink        (MpPipeSide     *from,
                                              GVariant       *data,
                                              gboolean        needs_room);
void        mp_pipe_side_send_all            (MpPipeSide     *from,
                                              MpMessage     **messages,
                                              guint           n_messages);

G_END_DECLS
