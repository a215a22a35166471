/* mp-pipe.c: the two-sided pipe behind a message channel
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include "mp-error.h"
#include "mp-i18n-private.h"
#include "mp-pipe-private.h"

/* A pipe is what a channel really is: two sides, each a locked inbox plus a state word. The
 * port objects are views of a side; transferring a port hands its side to a new object. There
 * is no registry of pipes or ports anywhere: a post touches only the two sides involved. */

MpPipe *
mp_pipe_new (void)
{
  MpPipe *self = g_new0 (MpPipe, 1);

  g_atomic_ref_count_init (&self->ref_count);

  for (guint i = 0; i < G_N_ELEMENTS (self->sides); i++)
    {
      MpPipeSide *side = &self->sides[i];

      g_mutex_init (&side->mutex);
      g_queue_init (&side->inbox);
      side->lane = MP_LANE_SHUT;
      side->state = i == 1 ? MP_SIDE_SECOND : 0;
    }

  return self;
}

MpPipe *
mp_pipe_ref (MpPipe *self)
{
  g_atomic_ref_count_inc (&self->ref_count);

  return self;
}

/* Frees a stack of bare recycled message nodes (see mp_pipe_side_keep_spare_locked()),
 * linked through link.next from @top. */
static void
spares_free (MpMessage *top)
{
  for (GList *l = top != NULL ? &top->link : NULL, *next; l != NULL; l = next)
    {
      next = l->next;
      g_free (l->data);
    }
}

/* Takes @n recycled nodes off the count of @side's stack (see
 * mp_pipe_side_keep_spare_locked()). The count lives in bits 16-23 of the state word rather
 * than in a field of its own (an idle channel would be 16 bytes larger: its pipe would take
 * the next malloc size). It never leaves 0..MP_PIPE_SIDE_SPARES_MAX, so adding and
 * subtracting never carries into or borrows from the flags: the dispatch counts a node
 * before it pushes it (and only while the count is below the maximum: one dispatching
 * thread at a time, under the lock), and a poster or a close uncounts only nodes it took
 * off the stack, which were all counted already. */
static void
spares_uncount (MpPipeSide *side,
                guint       n)
{
  if (n > 0)
    g_atomic_int_add (&side->state, -(int) (n << MP_SIDE_SPARES_SHIFT));
}

void
mp_pipe_unref (MpPipe *self)
{
  if (!g_atomic_ref_count_dec (&self->ref_count))
    return;

  for (guint i = 0; i < G_N_ELEMENTS (self->sides); i++)
    {
      MpPipeSide *side = &self->sides[i];

      /* Every port object is gone, and the last owner closed its side on finalization. */
      g_assert (side->source == NULL);
      g_assert (side->inbox.length == 0);
      g_assert (side->lane == NULL || side->lane == MP_LANE_SHUT);
      g_assert (side->waiters == NULL || (side->waiters->waiting.length == 0 &&
                                          side->waiters->completed.length == 0 &&
                                          side->waiters->to_wake.length == 0 &&
                                          side->waiters->posting.length == 0 &&
                                          side->waiters->post_waiters.length == 0));
      g_assert (side->n_carrying == 0);
      g_assert (side->transit_at == NULL);
      spares_free (side->spares);
      g_free (side->waiters);
      g_mutex_clear (&side->mutex);
    }

  g_free (self);
}

/* The side of every port object that was made directly (g_object_new (MP_TYPE_MESSAGE_PORT)
 * rather than by a channel or a transfer): both sides closed by their owner and never
 * reopened, so such a port is inert: posting on it fails with MP_ERROR_INVALID_STATE, it
 * receives nothing and starting it does nothing. Made once, never freed; the ports on it hold
 * no reference. */
static MpPipe *inert_pipe;

MpPipeSide *
mp_pipe_get_inert_side (void)
{
  static gsize made = 0;

  if (g_once_init_enter (&made))
    {
      MpPipe *pipe = mp_pipe_new ();

      for (guint i = 0; i < G_N_ELEMENTS (pipe->sides); i++)
        mp_pipe_side_set_locked (&pipe->sides[i], MP_SIDE_CLOSED | MP_SIDE_CLOSED_HERE |
                                                  MP_SIDE_PEER_CLOSED);
      g_atomic_pointer_set (&inert_pipe, pipe);
      g_once_init_leave (&made, 1);
    }

  return &inert_pipe->sides[0];
}

/* Any thread; atomic because it may run while another thread makes the inert pipe. */
gboolean
mp_pipe_side_is_inert (MpPipeSide *side)
{
  return mp_pipe_side_get_pipe (side) == g_atomic_pointer_get (&inert_pipe);
}

/* The transit graph. A transferred port travels as a new owner object inside its message;
 * while that message is queued at side Y, the travelling side X has the edge
 * X->transit_at == Y. Only Y's owner can ever take the message out, so if Y's owner in turn
 * travels in a message queued at X (directly or along more edges), nobody can: the ports,
 * their queues and every message posted to them would be unreachable for good. A post that
 * transfers ports therefore walks the edges from its destination, and refuses itself if the
 * walk reaches one of the sides it transfers (see mp_pipe_side_transit_add_locked()); the
 * graph stays a forest, so every walk ends.
 *
 * The edges are guarded by one process-wide lock, taken only when a message that carries
 * ports enters or leaves an inbox, never on the plain message path; it is always the
 * innermost lock (taken under side locks, no lock taken under it). An edge X -> Y exists
 * exactly while the message is in Y's inbox: it is removed under Y's lock in the same critical
 * section that takes the message out. A side cannot be freed while its inbox holds a message
 * (mp_pipe_unref()), so every side a walk reaches is alive while the lock is held. */
static GMutex transit_lock;

static gboolean
message_carries_ports (MpMessage *message)
{
  /* A queued message has one reference, the queue's: nobody installs ports under us. */
  return message->ports != NULL && message->ports->len > 0;
}

/* Removes the edges of @message, which just left the inbox of @side; @side's lock held and
 * the transit lock held. */
static void
transit_forget (MpPipeSide *side,
                MpMessage  *message)
{
  side->n_carrying--;

  for (guint i = 0; i < message->ports->len; i++)
    {
      MpPipeSide *travelling = mp_message_get_port_side (message, i);

      g_assert (travelling->transit_at == side);
      travelling->transit_at = NULL;
    }
}

/* Adds the edges for a message carrying the owners of @sides that is about to be queued in
 * @to's inbox, unless it would close a cycle: then returns FALSE and changes nothing. The
 * caller holds the locks of @to and of every side of @sides, so the message is certainly
 * queued once this returns TRUE. @sides are distinct and do not include @to. */
gboolean
mp_pipe_side_transit_add_locked (MpPipeSide        *to,
                                 MpPipeSide *const *sides,
                                 guint              n_sides)
{
  g_mutex_lock (&transit_lock);

  /* Where does @to's owner travel, and that side's owner, and so on? If the walk reaches
   * a side the message carries, the message would travel inside its own cargo. */
  for (MpPipeSide *at = to->transit_at; at != NULL; at = at->transit_at)
    for (guint i = 0; i < n_sides; i++)
      if (sides[i] == at)
        {
          g_mutex_unlock (&transit_lock);
          return FALSE;
        }

  for (guint i = 0; i < n_sides; i++)
    {
      g_assert (sides[i]->transit_at == NULL);
      sides[i]->transit_at = to;
    }

  g_mutex_unlock (&transit_lock);

  return TRUE;
}

/* The posts' lane. A post takes its destination's lock only when it must: a plain message
 * (no ports) posted to a started, open port with no receive and no post waiting and no
 * high-water mark is pushed on the side's lane with one compare-and-swap, newest first, and
 * the lock is left to the receiving thread, which takes it for itself alone. Whoever holds
 * the lock and looks at the inbox (the dispatch, receive(), a count, a post that goes
 * through the lock) first moves the lane's messages to the inbox's tail, oldest first,
 * with one exchange: everything in the inbox was posted before anything on the lane, so
 * each sender's order holds. Only the lock holder shuts the lane (exchanging in
 * MP_LANE_SHUT, which moves what it held into the inbox) or opens it again: a post that
 * finds it shut goes through the lock, where everything it checks is exact.
 *
 * Wake-ups: the post that pushes on an empty lane is the first of a burst, and it wakes the
 * side unless it finds ARMED (a dispatch is draining); the dispatch clears ARMED when it
 * finds nothing, then looks at the lane once more and goes on if a post came meanwhile
 * (mp_pipe_side_disarm_locked()). Both sides write, then read the other's word, all
 * sequentially consistent: at least one of them sees the other, so no post is left asleep.
 * tests/model/pipe.pml checks this. */

/* Shuts @side's lane (its lock held): posts take the lock from now on. What it held goes to
 * the inbox. */
static void
lane_shut_locked (MpPipeSide *side)
{
  if (g_atomic_pointer_get (&side->lane) != MP_LANE_SHUT)
    mp_lane_take (&side->lane, &side->inbox, TRUE);
}

/* Whether a post to @side (its lock held) may skip the lock: the side is a started port's,
 * open, in this process, and nothing a post must check or serve under the lock is there. */
static gboolean
lane_may_open (MpPipeSide *side)
{
  MpPipeWaiters *waiters = side->waiters;

  if ((g_atomic_int_get (&side->state) & MP_SIDE_LANE_BITS) != MP_SIDE_ATTACHED)
    return FALSE;

  return waiters == NULL || (waiters->waiting.length == 0 && waiters->posting.length == 0 &&
                             waiters->high_water_mark == 0);
}

/* Opens or shuts @side's lane (its lock held) as its state now asks. */
void
mp_pipe_side_update_lane_locked (MpPipeSide *side)
{
  gboolean shut = g_atomic_pointer_get (&side->lane) == MP_LANE_SHUT;

  if (!lane_may_open (side))
    lane_shut_locked (side);
  else if (shut)
    g_atomic_pointer_set (&side->lane, NULL);
}

/* The side's dispatch found the inbox empty (its lock held, the lane flushed): it clears
 * ARMED, so that the next post wakes it. Returns FALSE, ARMED set again, if a post came on
 * the lane meanwhile, whose poster may have seen ARMED and left the wake-up to us. */
gboolean
mp_pipe_side_disarm_locked (MpPipeSide *side)
{
  mp_pipe_side_clear_locked (side, MP_SIDE_ARMED);
  if (!mp_lane_is_busy (&side->lane))
    return TRUE;

  mp_pipe_side_set_locked (side, MP_SIDE_ARMED);
  return FALSE;
}

static void admit_locked (MpPipeSide *side,
                          gboolean    defer);

static MpMessage *
pop_locked (MpPipeSide *side,
            gboolean    defer)
{
  GList *link;
  MpMessage *message;

  if (side->inbox.head == NULL)
    {
      /* What the lane holds is next. A receive that finds nothing may queue itself to wait,
       * which needs every post under the lock: it shuts the lane, and the side's dispatch
       * opens it again once the inbox is empty. */
      if (defer)
        {
          mp_pipe_side_flush_lane_locked (side);
          if (side->inbox.head == NULL && g_atomic_pointer_get (&side->lane) == MP_LANE_SHUT)
            mp_pipe_side_update_lane_locked (side);
        }
      else
        lane_shut_locked (side);
    }

  link = g_queue_pop_head_link (&side->inbox);
  if (link == NULL)
    return NULL;

  message = link->data;
  if (message_carries_ports (message))
    {
      g_mutex_lock (&transit_lock);
      transit_forget (side, message);
      g_mutex_unlock (&transit_lock);
    }
  if (!mp_message_is_close_marker (message))
    {
      mp_pipe_side_consumed_locked (side, message);
      /* Towards another process: it still counts against that port's mark. */
      if (G_UNLIKELY (mp_pipe_side_test (side, MP_SIDE_REMOTE) && side->waiters != NULL))
        side->waiters->remote_sent++;
      /* Room for a post that waits. */
      if (G_UNLIKELY (side->waiters != NULL && side->waiters->posting.length > 0))
        admit_locked (side, defer);
    }

  return message;
}

/* Takes the oldest message out of @side's inbox (its lock held), or returns NULL. A post that
 * this lets in is told at once, and so is every one that the side's dispatch let in and has
 * not told yet: whoever takes messages other than through the dispatch (receive() from a
 * handler, say) may be waiting for a producer that waits for that word. */
MpMessage *
mp_pipe_side_pop_locked (MpPipeSide *side)
{
  if (G_UNLIKELY (side->waiters != NULL && side->waiters->to_wake.length > 0))
    mp_pipe_side_wake_deferred_locked (side);

  return pop_locked (side, FALSE);
}

/* The same for the side's own dispatch: a post that this lets in is told when the dispatch
 * ends (mp_pipe_side_wake_deferred_locked()), with the others it let in, so that a producer
 * is woken once per dispatch of its consumer rather than once per message. */
MpMessage *
mp_pipe_side_pop_for_dispatch_locked (MpPipeSide *side)
{
  return pop_locked (side, TRUE);
}

/* Flow control. A side with a high-water mark makes async posts wait while its inbox holds
 * at least that many messages; such a post (MpPostWaiter) waits in the side's posting queue
 * with its message, which is already committed (its transfer list detached, its transit
 * edges added, see above) but not yet in the inbox. A sync post never waits: it goes to the
 * inbox, or, while posts wait, behind them in the posting queue, which keeps each sender's
 * order across sync and async posts. Every step that takes a message out of the inbox (under
 * the side's lock) moves waiting posts in while the inbox is below the mark, oldest first,
 * and wakes their waiters; so room is handed out in the order the posts began to wait, by
 * the thread that made it, and no waiter is left sleeping while there is room. */

/* Keeps MP_SIDE_POSTS_WAIT in step with @side's posting queue, after a change to it. */
static void
posting_changed (MpPipeSide *side)
{
  if (side->waiters->posting.length > 0)
    mp_pipe_side_set_locked (side, MP_SIDE_POSTS_WAIT);
  else
    mp_pipe_side_clear_locked (side, MP_SIDE_POSTS_WAIT);
}

/* Sets the result of @waiter, which was just taken out of the queue, and wakes its source. */
static void
post_waiter_resolve_locked (MpPostWaiter *waiter,
                            GError       *error)
{
  g_assert (!waiter->queued && waiter->error == NULL);

  /* Read by the waiter's dispatch without the lock: the wake orders it, and the dispatch
   * may free the source at once. */
  g_atomic_pointer_set (&waiter->error, error);
  mp_wakeable_source_wake_last (waiter->source);
}

/* The waiter of @message if it is the oldest waiting post's, taken out of its queue. */
static MpPostWaiter *
post_waiter_pop_for_locked (MpPipeWaiters *waiters,
                            MpMessage     *message)
{
  MpPostWaiter *waiter = waiters->post_waiters.head != NULL ? waiters->post_waiters.head->data
                                                            : NULL;

  if (waiter == NULL || waiter->message != message)
    return NULL;

  g_queue_unlink (&waiters->post_waiters, &waiter->link);
  g_atomic_int_set (&waiter->queued, FALSE);

  return waiter;
}

static gboolean
has_room (MpPipeSide *side)
{
  MpPipeWaiters *waiters = side->waiters;
  guint mark = waiters->high_water_mark;
  guint queued = side->inbox.length;

  if (mark == 0)
    return TRUE;
  if (mp_pipe_side_test (side, MP_SIDE_REMOTE))
    queued += waiters->remote_sent - waiters->remote_taken;

  return queued < mark;
}

/* Moves waiting posts into the inbox of @side (its lock held) while there is room; their
 * waiters are told at once, or, with @defer, put in to_wake. */
static void
admit_locked (MpPipeSide *side,
              gboolean    defer)
{
  MpPipeWaiters *waiters = side->waiters;
  gboolean moved = FALSE;

  if (waiters == NULL)
    return;

  while (waiters->posting.length > 0 && has_room (side))
    {
      MpMessage *message = waiters->posting.head->data;
      MpPostWaiter *waiter;

      g_queue_unlink (&waiters->posting, &message->link);
      waiter = post_waiter_pop_for_locked (waiters, message);
      /* Nobody waits to receive: the inbox is not empty while posts wait (above). The
       * transit edges and n_carrying already count the message. */
      g_assert (!mp_pipe_side_has_waiters (side));
      g_queue_push_tail_link (&side->inbox, &message->link);
      moved = TRUE;
      if (waiter != NULL && defer)
        {
          /* Posted; told when the dispatch that let it in ends, or when anything else
           * takes a message out or waits to. */
          waiter->wake_deferred = TRUE;
          g_queue_push_tail_link (&waiters->to_wake, &waiter->link);
        }
      else if (waiter != NULL)
        post_waiter_resolve_locked (waiter, NULL);
    }

  if (moved)
    {
      posting_changed (side);
      mp_pipe_side_wake_locked (side);
    }
}

/* Moves waiting posts into the inbox of @side (its lock held) while there is room, telling
 * their waiters at once (and those the dispatch has not told yet). */
void
mp_pipe_side_admit_locked (MpPipeSide *side)
{
  if (side->waiters == NULL)
    return;

  mp_pipe_side_wake_deferred_locked (side);
  admit_locked (side, FALSE);
}

void
mp_pipe_side_set_high_water_mark_locked (MpPipeSide *side,
                                         guint       mark)
{
  if (side->waiters == NULL)
    {
      if (mark == 0)
        return;
      side->waiters = g_new0 (MpPipeWaiters, 1);
    }
  side->waiters->high_water_mark = mark;
  /* Raised (or removed): what waits may go in now. */
  mp_pipe_side_admit_locked (side);
  /* Posts must count against a mark under the lock; without one (and nothing waiting any
   * more) they need not. */
  mp_pipe_side_update_lane_locked (side);
  /* Fed from another process: the sender there must know. */
  if (mp_pipe_side_test (side, MP_SIDE_FED) && side->waiters->feed->mark_changed != NULL)
    side->waiters->feed->mark_changed (side->waiters->feed, mark);
}

/* Marks @side (its lock held) MP_SIDE_REMOTE: what is posted to it goes to a port of another
 * process from now on. A mark it had (a port with a mark transferred to another process)
 * no longer counts: posts to it wait for the room that port's process tells
 * (mp_pipe_side_set_remote_room_locked()); what waited goes in. */
void
mp_pipe_side_make_remote_locked (MpPipeSide *side)
{
  mp_pipe_side_set_locked (side, MP_SIDE_REMOTE);
  if (side->waiters != NULL)
    {
      gboolean had_mark = side->waiters->high_water_mark != 0;

      side->waiters->high_water_mark = 0;
      side->waiters->remote_sent = side->waiters->remote_taken = 0;
      mp_pipe_side_admit_locked (side);
      /* Fed by a stream too (a port that came from a third process and goes on to this
       * one): that one's sender must no longer wait for this mark. */
      if (had_mark && mp_pipe_side_test (side, MP_SIDE_FED) &&
          side->waiters->feed->mark_changed != NULL)
        side->waiters->feed->mark_changed (side->waiters->feed, 0);
    }
}

/* On the MP_SIDE_REMOTE @side (its lock held): a message that left it was dropped before it
 * could reach the other process (it could not travel, or the stream is closing): it no
 * longer counts against that process's mark. */
void
mp_pipe_side_unsend_locked (MpPipeSide *side)
{
  if (side->waiters == NULL)
    return;

  side->waiters->remote_sent--;
  mp_pipe_side_admit_locked (side);
}

/* How many messages are queued at @side (its lock held), the close marker aside, and wait
 * to be. */
guint
mp_pipe_side_count_queued_locked (MpPipeSide *side)
{
  guint n;

  mp_pipe_side_flush_lane_locked (side);
  n = side->inbox.length;

  if (n > 0 && mp_message_is_close_marker (side->inbox.tail->data))
    n--;
  if (side->waiters != NULL)
    n += side->waiters->posting.length;

  return n;
}

/* On the MP_SIDE_REMOTE @side (its lock held): the port of the other process has @mark and
 * its application took @taken messages so far (modulo 2^32). What waits may go in as far as
 * that leaves room. Returns FALSE, changing nothing, if @taken is more than ever left
 * @side (a broken peer). */
gboolean
mp_pipe_side_set_remote_room_locked (MpPipeSide *side,
                                     guint       mark,
                                     guint       taken)
{
  MpPipeWaiters *waiters;

  g_assert (mp_pipe_side_test (side, MP_SIDE_REMOTE));

  if (side->waiters == NULL)
    side->waiters = g_new0 (MpPipeWaiters, 1);
  waiters = side->waiters;
  if (taken - waiters->remote_taken > waiters->remote_sent - waiters->remote_taken)
    return FALSE;

  waiters->remote_taken = taken;
  waiters->high_water_mark = mark;
  mp_pipe_side_admit_locked (side);

  return TRUE;
}

guint
mp_pipe_side_get_high_water_mark_locked (MpPipeSide *side)
{
  return side->waiters != NULL ? side->waiters->high_water_mark : 0;
}

/* Takes @waiter's post back out of @to's posting queue (a cancelled post), with its transit
 * edges, and gives the waiter @error (freed if the waiter is no longer queued): returns the
 * message (transfer full), or NULL if the waiter is no longer queued. */
MpMessage *
mp_pipe_side_withdraw_locked (MpPipeSide   *to,
                              MpPostWaiter *waiter,
                              GError       *error)
{
  MpMessage *message = waiter->message;

  if (!waiter->queued)
    {
      g_error_free (error);
      return NULL;
    }

  g_queue_unlink (&to->waiters->post_waiters, &waiter->link);
  g_atomic_int_set (&waiter->queued, FALSE);
  g_queue_unlink (&to->waiters->posting, &message->link);
  posting_changed (to);
  if (message_carries_ports (message))
    {
      g_mutex_lock (&transit_lock);
      transit_forget (to, message);
      g_mutex_unlock (&transit_lock);
    }
  post_waiter_resolve_locked (waiter, error);

  return message;
}

/* Takes @waiter out of @to's queue, leaving its post there as a sync post's, or out of the
 * wakes put off: its poster's context is gone, with nobody left to tell. */
void
mp_pipe_side_forget_waiter_locked (MpPipeSide   *to,
                                   MpPostWaiter *waiter)
{
  if (waiter->queued)
    {
      g_queue_unlink (&to->waiters->post_waiters, &waiter->link);
      g_atomic_int_set (&waiter->queued, FALSE);
    }
  else if (waiter->wake_deferred)
    {
      g_queue_unlink (&to->waiters->to_wake, &waiter->link);
      waiter->wake_deferred = FALSE;
    }
}

/* Tells (lock held) the posts that the side's dispatch let in and did not tell yet: at the
 * dispatch's end, and before anything else takes a message out or waits to. One wake-up
 * per context for all of them (mp-waker.c). */
void
mp_pipe_side_wake_deferred_locked (MpPipeSide *side)
{
  MpPipeWaiters *waiters = side->waiters;
  GList *link;

  if (waiters == NULL)
    return;

  while ((link = g_queue_pop_head_link (&waiters->to_wake)) != NULL)
    {
      MpPostWaiter *waiter = link->data;

      waiter->wake_deferred = FALSE;
      post_waiter_resolve_locked (waiter, NULL);
    }
}

/* Whether a post to @to (its lock held) would go into the inbox without waiting. */
gboolean
mp_pipe_side_has_room_locked (MpPipeSide *to)
{
  return to->waiters == NULL || (to->waiters->posting.length == 0 && has_room (to));
}

/* Fails every waiting post of @side with a copy of @error (freed), and drops their messages
 * (to @deferred). Sync posts behind them go into the inbox if @keep_sync, else are dropped
 * too. */
static void
posting_end_locked (MpPipeSide     *side,
                    GError         *error,
                    gboolean        keep_sync,
                    MpPipeDeferred *deferred)
{
  MpPipeWaiters *waiters = side->waiters;
  GList *link;

  while ((link = g_queue_pop_head_link (&waiters->posting)) != NULL)
    {
      MpMessage *message = link->data;
      MpPostWaiter *waiter = post_waiter_pop_for_locked (waiters, message);

      if (waiter == NULL && keep_sync)
        {
          g_queue_push_tail_link (&side->inbox, link);
          continue;
        }
      if (message_carries_ports (message))
        {
          g_mutex_lock (&transit_lock);
          transit_forget (side, message);
          g_mutex_unlock (&transit_lock);
        }
      g_queue_push_tail_link (&deferred->messages, link);
      if (waiter != NULL)
        post_waiter_resolve_locked (waiter, g_error_copy (error));
    }

  g_assert (waiters->post_waiters.length == 0);
  posting_changed (side);
  g_error_free (error);
}

void
mp_pipe_side_set_feed_locked (MpPipeSide *side,
                              MpPipeFeed *feed)
{
  if (feed != NULL)
    {
      if (side->waiters == NULL)
        side->waiters = g_new0 (MpPipeWaiters, 1);
      side->waiters->feed = feed;
      mp_pipe_side_set_locked (side, MP_SIDE_FED);
    }
  else if (side->waiters != NULL)
    {
      mp_pipe_side_clear_locked (side, MP_SIDE_FED);
      side->waiters->feed = NULL;
    }
}

void
mp_pipe_side_set_sink_locked (MpPipeSide *side,
                              MpPipeSink *sink)
{
  g_assert (sink == NULL || mp_pipe_side_test (side, MP_SIDE_REMOTE));

  if (side->waiters == NULL && sink != NULL)
    side->waiters = g_new0 (MpPipeWaiters, 1);
  if (side->waiters != NULL)
    side->waiters->sink = sink;
}

/* Turns @entry (transfer full), which a receive just took out of the inbox or was handed by a
 * post, into that receive's result: *message is the entry itself, or, for an error entry,
 * *error is a copy of its error (G_IO_ERROR_INVALID_DATA) and the entry goes to @deferred to
 * be dropped, so that the receive fails in the entry's place and the next one goes on with
 * the next entry (@deferred then no longer suits mp_pipe_side_close_locked(), which moves
 * the inbox into an empty deferred->messages). Not for a close marker. */
void
mp_pipe_entry_take_result (MpMessage       *entry,
                           MpMessage      **message,
                           GError         **error,
                           MpPipeDeferred  *deferred)
{
  g_assert (!mp_message_is_close_marker (entry));

  if (G_UNLIKELY (mp_message_is_error (entry)))
    {
      *error = g_error_copy (entry->error);
      g_queue_push_tail_link (&deferred->messages, &entry->link);
    }
  else
    *message = entry;
}

/* Asks the attached source for a dispatch. Only the call that finds the side unarmed wakes
 * the context: a burst of posts costs one cross-thread wake-up, and posts made while a
 * dispatch is draining cost none, because the dispatch clears ARMED only when it finds the
 * inbox empty, under the lock: a post that lands after that look always wakes it again.
 * The wake-up takes no GLib lock: g_source_set_ready_time() would hold the context's lock
 * across its eventfd write, so the woken thread would often sleep again on that lock, and
 * g_main_context_wakeup() is a critical once the context's last reference is gone (a race
 * with a thread that drops its context). See mp-waker-private.h. */
void
mp_pipe_side_wake_locked (MpPipeSide *side)
{
  if ((g_atomic_int_get (&side->state) & (MP_SIDE_ATTACHED | MP_SIDE_ARMED)) != MP_SIDE_ATTACHED)
    return;

  mp_pipe_side_set_locked (side, MP_SIDE_ARMED);
  mp_wakeable_source_wake (side->source);
}

/* mp_pipe_side_wake_locked() for a post: the flag is set now, under the lock, and the
 * eventfd written by the caller once it unlocked (mp_pipe_deferred_release()). Written under
 * the lock, the wake-up let the woken thread run at once into the lock still held by the
 * poster, and sleep on it: a futex wait and wake for nearly every round trip of a ping-pong.
 * No wake-up is lost: the write always follows a flag this call set, and the waker outlives
 * the source. */
static void
wake_after_unlock_locked (MpPipeSide     *side,
                          MpPipeDeferred *deferred)
{
  MpWaker *waker;

  if ((g_atomic_int_get (&side->state) & (MP_SIDE_ATTACHED | MP_SIDE_ARMED)) != MP_SIDE_ATTACHED)
    return;

  mp_pipe_side_set_locked (side, MP_SIDE_ARMED);
  waker = mp_wakeable_source_wake_begin (side->source);
  if (waker == NULL)
    return;
  if (deferred->wake == NULL)
    deferred->wake = waker;
  else if (deferred->wake == waker)
    mp_waker_unref (waker);      /* the same context: one write wakes both */
  else
    mp_waker_wake_end (waker);   /* a second context in one section: at once */
}

static void
queue_move (GQueue *dest,
            GQueue *src)
{
  g_assert (dest->length == 0);
  *dest = *src;
  g_queue_init (src);
}

/* Fails every pending receive of @side with a copy of @error (transfer full, freed). */
void
mp_pipe_side_fail_waiters_locked (MpPipeSide     *side,
                                  GError         *error,
                                  MpPipeDeferred *deferred)
{
  GList *link;

  if (side->waiters != NULL)
    while ((link = g_queue_pop_head_link (&side->waiters->waiting)) != NULL)
      {
        MpReceiveWaiter *waiter = link->data;

        waiter->queued = FALSE;
        mp_receive_waiter_resolve_locked (waiter, NULL, g_error_copy (error), deferred);
      }

  g_error_free (error);
}

/* Queues @waiter (not queued, no result) as the newest pending receive of @side, whose inbox
 * is empty. */
void
mp_pipe_side_enqueue_waiter_locked (MpPipeSide      *side,
                                    MpReceiveWaiter *waiter)
{
  g_assert (side->inbox.length == 0);

  if (side->waiters == NULL)
    side->waiters = g_new0 (MpPipeWaiters, 1);
  /* A receive that waits may wait for a post whose poster waits for word of its last. */
  mp_pipe_side_wake_deferred_locked (side);
  waiter->queued = TRUE;
  g_queue_push_tail_link (&side->waiters->waiting, &waiter->link);
  /* Shut already: the receive found nothing (mp_pipe_side_pop_locked()). */
  mp_pipe_side_update_lane_locked (side);
  g_assert (side->inbox.length == 0);
}

/* Drops the messages and attaches the delivery idles that a locked section left. No lock
 * held. */
void
mp_pipe_deferred_release (MpPipeDeferred *deferred)
{
  GList *link;

  if (deferred->wake != NULL)
    mp_waker_wake_end (g_steal_pointer (&deferred->wake));

  while ((link = g_queue_pop_head_link (&deferred->scheduled)) != NULL)
    {
      MpReceiveWaiter *waiter = link->data;
      GSource *idle = g_steal_pointer (&waiter->idle);

      /* Once attached, the idle may run (on another thread) and free the waiter: it is not
       * touched after this. The task keeps the context alive until then. */
      g_source_attach (idle, waiter->context);
      g_source_unref (idle);
    }

  mp_message_queue_drop (&deferred->messages);
  spares_free (g_steal_pointer (&deferred->spares));
}

/* Closes @side: marks it closed and moves its inbox to @deferred, for the caller to release
 * with mp_pipe_deferred_release() once unlocked, and fails its pending receives with
 * MP_ERROR_CLOSED. @by_owner: its owner closed it (close(), its context's end), so posting on
 * it is misuse from now on (even if it had already reached its peer's close); otherwise it
 * reached its peer's close. An attached side is told to emit "close" from its dispatch. The
 * caller then calls mp_pipe_side_notify_peer_closed(), unlocked. Returns FALSE if the side
 * was already closed. */
gboolean
mp_pipe_side_close_locked (MpPipeSide     *side,
                           gboolean        by_owner,
                           MpPipeDeferred *deferred)
{
  if (by_owner)
    mp_pipe_side_set_locked (side, MP_SIDE_CLOSED_HERE);

  if (mp_pipe_side_test (side, MP_SIDE_CLOSED))
    return FALSE;

  mp_pipe_side_set_locked (side, MP_SIDE_CLOSED);
  mp_pipe_side_wake_deferred_locked (side);
  queue_move (&deferred->messages, &side->inbox);
  /* Posts to a closed side are dropped: its recycled nodes have no more use (what posters
   * took into their threads' caches stays there, for their next posts anywhere). */
  if (g_atomic_pointer_get (&side->spares) != NULL)
    {
      MpMessage *top = g_atomic_pointer_exchange (&side->spares, NULL);
      MpMessage *last = top;
      guint n = top != NULL ? 1 : 0;

      while (last != NULL && last->link.next != NULL)
        {
          last = last->link.next->data;
          n++;
        }
      spares_uncount (side, n);
      if (last != NULL)
        {
          last->link.next = deferred->spares != NULL ? &deferred->spares->link : NULL;
          deferred->spares = top;
        }
    }
  if (side->n_carrying > 0)
    {
      g_mutex_lock (&transit_lock);
      for (GList *l = deferred->messages.head; l != NULL && side->n_carrying > 0; l = l->next)
        if (message_carries_ports (l->data))
          transit_forget (side, l->data);
      g_mutex_unlock (&transit_lock);
    }
  /* Room will never come: waiting posts fail (MP_ERROR_CLOSED), and every post is dropped. */
  if (G_UNLIKELY (side->waiters != NULL && side->waiters->posting.length > 0))
    posting_end_locked (side,
                        g_error_new_literal (MP_ERROR, MP_ERROR_CLOSED,
                                             _("The other port of the channel was closed")),
                        FALSE, deferred);
  if (mp_pipe_side_has_waiters (side))
    mp_pipe_side_fail_waiters_locked (side, mp_receive_closed_error (by_owner), deferred);

  if (mp_pipe_side_test (side, MP_SIDE_ATTACHED))
    {
      mp_pipe_side_set_locked (side, MP_SIDE_CLOSE_PENDING);
      mp_pipe_side_wake_locked (side);
    }

  return TRUE;
}

/* @side took its peer's close @marker (transfer full) out of its inbox, or had it handed over
 * while receives waited: everything the peer posted before closing was taken, so @side closes
 * (not by its owner). */
void
mp_pipe_side_reach_peer_close_locked (MpPipeSide     *side,
                                      MpMessage      *marker,
                                      MpPipeDeferred *deferred)
{
  g_assert (mp_message_is_close_marker (marker));

  mp_pipe_side_close_locked (side, FALSE, deferred);
  g_queue_push_tail_link (&deferred->messages, &marker->link);
}

/* Appends the close marker to the peer's inbox, after everything @side posted before it
 * closed. Called without any lock held, after mp_pipe_side_close_locked(). */
void
mp_pipe_side_notify_peer_closed (MpPipeSide *side)
{
  MpPipeSide *peer = mp_pipe_side_get_peer (side);
  MpMessage *marker;
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;

  /* CLOSED and PEER_CLOSED are never cleared: a peer that has either needs no marker, and
   * the second close() of a channel then allocates and drops none. */
  if (mp_pipe_side_test (peer, MP_SIDE_CLOSED | MP_SIDE_PEER_CLOSED))
    return;

  marker = mp_message_new_close_marker ();
  g_mutex_lock (&peer->mutex);
  if (mp_pipe_side_test (peer, MP_SIDE_CLOSED | MP_SIDE_PEER_CLOSED))
    {
      g_mutex_unlock (&peer->mutex);
      mp_message_drop (marker);
      return;
    }
  mp_pipe_side_set_locked (peer, MP_SIDE_PEER_CLOSED);
  /* @side's own code closed it (a side that reached our close never gets here): its async
   * posts that wait fail (MP_ERROR_INVALID_STATE) and are dropped; its sync posts behind
   * them were accepted, and go before the marker. */
  if (G_UNLIKELY (peer->waiters != NULL && peer->waiters->posting.length > 0))
    posting_end_locked (peer,
                        g_error_new_literal (MP_ERROR, MP_ERROR_INVALID_STATE,
                                             _("The port is closed")),
                        TRUE, &deferred);
  if (mp_pipe_side_has_waiters (peer))
    {
      /* A waiting receive_async() means the inbox is empty: the marker is reached now. */
      g_assert (peer->inbox.length == 0);
      mp_pipe_side_reach_peer_close_locked (peer, marker, &deferred);
    }
  else
    {
      g_queue_push_tail_link (&peer->inbox, &marker->link);
      mp_pipe_side_wake_locked (peer);
    }
  g_mutex_unlock (&peer->mutex);

  mp_pipe_deferred_release (&deferred);
}

/* Queues @message at @to, whose lock the caller holds, and says what became of it:
 * QUEUED (owned by @to now, or handed to its oldest pending receive, whose delivery goes to
 * @deferred; an error entry fails that receive and goes to @deferred to be dropped), DROPPED
 * (@to is closed: success, the caller drops it) or REFUSED (@to's peer, the sender, closed
 * and its close marker is queued: the message could no longer come before it; the caller
 * drops it and fails). */
MpSendResult
mp_pipe_side_send_locked (MpPipeSide     *to,
                          MpMessage      *message,
                          MpPipeDeferred *deferred)
{
  return mp_pipe_side_post_locked (to, message, NULL, deferred);
}

/* mp_pipe_side_send_locked() for a post that may wait for room: with @post_waiter (not queued,
 * no result; its message is @message), a post that finds the inbox at @to's high-water mark
 * or other posts waiting is queued with the waiter in the posting queue (WAITING: the message
 * is the queue's). Without one, a sync post goes behind the posts that wait, if any (QUEUED),
 * and never waits for room itself. */
MpSendResult
mp_pipe_side_post_locked (MpPipeSide     *to,
                          MpMessage      *message,
                          MpPostWaiter   *post_waiter,
                          MpPipeDeferred *deferred)
{
  int state = g_atomic_int_get (&to->state);

  /* Whatever was posted on the lane goes first. */
  mp_pipe_side_flush_lane_locked (to);

  if (state & MP_SIDE_CLOSED)
    return MP_SEND_DROPPED;
  if (state & MP_SIDE_PEER_CLOSED)
    return MP_SEND_REFUSED;

  if (G_UNLIKELY (to->waiters != NULL &&
                  (to->waiters->posting.length > 0 || (post_waiter != NULL && !has_room (to)))))
    {
      g_queue_push_tail_link (&to->waiters->posting, &message->link);
      mp_pipe_side_set_locked (to, MP_SIDE_POSTS_WAIT);
      if (message_carries_ports (message))
        to->n_carrying++;   /* the caller added its edges */
      if (post_waiter == NULL)
        return MP_SEND_QUEUED;
      g_assert (post_waiter->message == message && !post_waiter->queued);
      g_atomic_int_set (&post_waiter->queued, TRUE);
      g_queue_push_tail_link (&to->waiters->post_waiters, &post_waiter->link);
      return MP_SEND_WAITING;
    }

  if (mp_pipe_side_has_waiters (to))
    {
      /* Pending receives are served first, oldest first. */
      MpReceiveWaiter *waiter = g_queue_pop_head_link (&to->waiters->waiting)->data;
      MpMessage *taken = NULL;
      GError *error = NULL;

      mp_pipe_side_consumed_locked (to, message);
      waiter->queued = FALSE;
      mp_pipe_entry_take_result (message, &taken, &error, deferred);
      mp_receive_waiter_resolve_locked (waiter, taken, error, deferred);
      /* The last one served: plain posts need the lock no more. */
      mp_pipe_side_update_lane_locked (to);
      return MP_SEND_QUEUED;
    }

  g_queue_push_tail_link (&to->inbox, &message->link);
  if (message_carries_ports (message))
    to->n_carrying++;   /* the caller added its edges */
  wake_after_unlock_locked (to, deferred);

  return MP_SEND_QUEUED;
}

/* Hands @data (a payload in its travelling normal form, or NULL) to the sink of @from's
 * peer (MP_SIDE_REMOTE) if nothing is ahead of it there: no queued message, none being
 * dispatched (not ARMED), no post waiting for room, the side open, and (@needs_room: an
 * async post) the other process's port below its mark. Returns whether the sink took it; if not, the
 * caller posts it as usual. No message is made for a post the sink takes. */
gboolean
mp_pipe_side_send_to_sink (MpPipeSide *from,
                           GVariant   *data,
                           gboolean    needs_room)
{
  MpPipeSide *to = mp_pipe_side_get_peer (from);
  gboolean taken = FALSE;

  g_mutex_lock (&to->mutex);
  if (!mp_pipe_side_test (to, MP_SIDE_ARMED | MP_SIDE_CLOSED | MP_SIDE_PEER_CLOSED) &&
      to->inbox.length == 0 && to->waiters != NULL && to->waiters->sink != NULL &&
      to->waiters->posting.length == 0 && (!needs_room || has_room (to)))
    {
      taken = to->waiters->sink->post (to->waiters->sink, data);
      if (taken)
        to->waiters->remote_sent++;
    }
  g_mutex_unlock (&to->mutex);

  return taken;
}

/* Queues @messages (each transfer full, none carrying ports), in order, at the peer of
 * @from under one lock: a burst that arrived from another process. What a closed peer
 * refuses is dropped, as mp_pipe_side_send() would. */
void
mp_pipe_side_send_all (MpPipeSide  *from,
                       MpMessage  **messages,
                       guint        n_messages)
{
  MpPipeSide *to = mp_pipe_side_get_peer (from);
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;
  guint n_refused = 0;

  g_mutex_lock (&to->mutex);
  for (guint i = 0; i < n_messages; i++)
    {
      g_assert (!message_carries_ports (messages[i]));
      if (mp_pipe_side_send_locked (to, messages[i], &deferred) == MP_SEND_QUEUED)
        messages[i] = NULL;
      else
        n_refused++;
    }
  g_mutex_unlock (&to->mutex);

  mp_pipe_deferred_release (&deferred);
  for (guint i = 0; i < n_messages && n_refused > 0; i++)
    if (messages[i] != NULL)
      {
        mp_message_drop (g_steal_pointer (&messages[i]));
        n_refused--;
      }
}

/* Recycled message nodes. A side's dispatch keeps the nodes of the messages it delivered
 * and released (mp_message_unref_to_node()) on a lock-free stack, for the peer's posters.
 * A poster takes the whole stack with one exchange into a cache of its thread, from which
 * its next posts take their nodes without any atomic operation; pushes are compare-and-
 * swaps by the one dispatching thread, and nobody pops a single node off the shared stack,
 * so there is no ABA. Each reused node is a malloc() the poster does not make and a free()
 * the receiving thread does not make of a chunk from the poster's arena. About
 * MP_PIPE_SIDE_SPARES_MAX (4 KiB) per side, none on a side that never dispatched, none left
 * once the side closed; and what a thread took into its cache (one side's stack at a time,
 * so about as much) until that thread ends: the nodes are plain memory, good for a post to
 * any side. */
#define MP_PIPE_SIDE_SPARES_MAX 64


typedef struct
{
  MpMessage *top;   /* through link.next */
} NodeCache;

static void
node_cache_free (gpointer data)
{
  NodeCache *cache = data;

  spares_free (cache->top);
  g_free (cache);
}

/* The calling thread's cache of bare nodes, freed when the thread ends. */
static GPrivate node_cache_key = G_PRIVATE_INIT (node_cache_free);

/* Returns FALSE if @side has no use for @node (it holds enough, or it closed): the caller
 * frees it, once unlocked. Only the side's dispatch pushes. */
gboolean
mp_pipe_side_keep_spare_locked (MpPipeSide *side,
                                MpMessage  *node)
{
  int state = g_atomic_int_get (&side->state);
  MpMessage *top;

  if (MP_SIDE_SPARES_COUNT (state) >= MP_PIPE_SIDE_SPARES_MAX || (state & MP_SIDE_CLOSED) != 0)
    return FALSE;

  g_atomic_int_add (&side->state, 1 << MP_SIDE_SPARES_SHIFT);
  top = g_atomic_pointer_get (&side->spares);
  do
    node->link.next = top != NULL ? &top->link : NULL;
  while (!g_atomic_pointer_compare_and_exchange_full (&side->spares, top, node, &top));

  return TRUE;
}

/* A bare node for a post to @to, from the thread's cache or, when that is empty, from what
 * @to's dispatch recycled; NULL if there is none. Any thread, no lock held. */
static MpMessage *
take_node (MpPipeSide *to)
{
  NodeCache *cache = g_private_get (&node_cache_key);
  MpMessage *node;

  if (cache == NULL || cache->top == NULL)
    {
      MpMessage *top;
      guint n = 0;

      if (g_atomic_pointer_get (&to->spares) == NULL)
        return NULL;
      top = g_atomic_pointer_exchange (&to->spares, NULL);
      if (top == NULL)
        return NULL;
      for (GList *l = &top->link; l != NULL; l = l->next)
        n++;
      spares_uncount (to, n);
      if (cache == NULL)
        {
          cache = g_new0 (NodeCache, 1);
          g_private_set (&node_cache_key, cache);
        }
      cache->top = top;
    }

  node = cache->top;
  cache->top = node->link.next != NULL ? node->link.next->data : NULL;

  return node;
}

/* Queues @message (transfer full) at @to through its lock. What a closed @to refuses is
 * dropped. */
static gboolean
send_to (MpPipeSide *to,
         MpMessage  *message)
{
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;
  MpSendResult result;

  g_mutex_lock (&to->mutex);
  result = mp_pipe_side_send_locked (to, message, &deferred);
  g_mutex_unlock (&to->mutex);

  if (deferred.wake != NULL)
    mp_waker_wake_end (g_steal_pointer (&deferred.wake));
  /* Something more to do only when a pending receive was served: its idle, and an error
   * entry, which the receive took as a copy of its error, to drop. */
  if (G_UNLIKELY (deferred.scheduled.head != NULL || deferred.messages.head != NULL))
    mp_pipe_deferred_release (&deferred);
  if (result != MP_SEND_QUEUED)
    mp_message_drop (message);

  return result != MP_SEND_REFUSED;
}

/* Queues @message (transfer full, carrying no ports) at @to on its lane if it is open, else
 * through its lock. */
static gboolean
send_plain (MpPipeSide *to,
            MpMessage  *message)
{
  gboolean first;

  if (!mp_lane_push (&to->lane, &message->link, &first))
    return send_to (to, message);

  /* The first of a burst: unless a dispatch is draining (which looks at the lane once more
   * before it stops), the side is woken, under its lock (the source may be going). */
  if (first && !mp_pipe_side_test (to, MP_SIDE_ARMED))
    {
      MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;

      g_mutex_lock (&to->mutex);
      wake_after_unlock_locked (to, &deferred);
      g_mutex_unlock (&to->mutex);
      if (deferred.wake != NULL)
        mp_waker_wake_end (g_steal_pointer (&deferred.wake));
    }

  return TRUE;
}

/* Queues @data (taken) at the peer of @from, as mp_pipe_side_send() with a message of no
 * ports, in a recycled node when there is one. */
gboolean
mp_pipe_side_send_data (MpPipeSide *from,
                        GVariant   *data)
{
  MpPipeSide *to = mp_pipe_side_get_peer (from);

  return send_plain (to, mp_message_renew_take (take_node (to), data));
}

/* Queues @message (transfer full) at the peer of @from. A closed peer drops it and that is
 * success. Returns FALSE, dropping the message, only if @from itself closed concurrently and
 * its close marker is already queued: the message could no longer come before it. */
gboolean
mp_pipe_side_send (MpPipeSide *from,
                   MpMessage  *message)
{
  MpPipeSide *to = mp_pipe_side_get_peer (from);

  if (message_carries_ports (message))
    return send_to (to, message);

  return send_plain (to, message);
}
