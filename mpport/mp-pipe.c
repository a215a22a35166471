/* mp-pipe.c: the two-sided pipe behind a message channel
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

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
      side->peer = &self->sides[1 - i];
      side->pipe = self;
    }

  return self;
}

MpPipe *
mp_pipe_ref (MpPipe *self)
{
  g_atomic_ref_count_inc (&self->ref_count);

  return self;
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
      g_mutex_clear (&side->mutex);
    }

  g_free (self);
}

/* Asks the attached source for a dispatch. Only the call that finds the side unarmed wakes
 * the context: a burst of posts costs one cross-thread wake-up. The dispatch resets the ready
 * time before it clears ARMED, and clears ARMED before it looks at the inbox, so a post that
 * lands after that look always wakes it again. */
void
mp_pipe_side_wake_locked (MpPipeSide *side)
{
  if ((g_atomic_int_get (&side->state) & (MP_SIDE_ATTACHED | MP_SIDE_ARMED)) != MP_SIDE_ATTACHED)
    return;

  mp_pipe_side_set_locked (side, MP_SIDE_ARMED);
  g_source_set_ready_time (side->source, 0);
}

/* Closes @side: marks it closed and moves its inbox to @dropped, for the caller to release
 * with mp_message_queue_drop() once unlocked. An attached side is told to emit "close" from
 * its dispatch. The caller then calls mp_pipe_side_notify_peer_closed(), unlocked.
 * Returns FALSE if the side was already closed. */
gboolean
mp_pipe_side_close_locked (MpPipeSide *side,
                           GQueue     *dropped)
{
  if (mp_pipe_side_test (side, MP_SIDE_CLOSED))
    return FALSE;

  mp_pipe_side_set_locked (side, MP_SIDE_CLOSED);
  *dropped = side->inbox;
  g_queue_init (&side->inbox);

  if (mp_pipe_side_test (side, MP_SIDE_ATTACHED))
    {
      mp_pipe_side_set_locked (side, MP_SIDE_CLOSE_PENDING);
      mp_pipe_side_wake_locked (side);
    }

  return TRUE;
}

/* Appends the close marker to the peer's inbox, after everything @side posted before it
 * closed. Called without any lock held, after mp_pipe_side_close_locked(). */
void
mp_pipe_side_notify_peer_closed (MpPipeSide *side)
{
  MpPipeSide *peer = side->peer;
  MpMessage *marker = mp_message_new_close_marker ();

  g_mutex_lock (&peer->mutex);
  if (mp_pipe_side_test (peer, MP_SIDE_CLOSED | MP_SIDE_PEER_CLOSED))
    {
      g_mutex_unlock (&peer->mutex);
      mp_message_drop (marker);
      return;
    }
  mp_pipe_side_set_locked (peer, MP_SIDE_PEER_CLOSED);
  g_queue_push_tail_link (&peer->inbox, &marker->link);
  mp_pipe_side_wake_locked (peer);
  g_mutex_unlock (&peer->mutex);
}

/* Queues @message (transfer full) at the peer of @from. A closed peer drops it and that is
 * success. Returns FALSE, dropping the message, only if @from itself closed concurrently and
 * its close marker is already queued: the message could no longer come before it. */
gboolean
mp_pipe_side_send (MpPipeSide *from,
                   MpMessage  *message)
{
  MpPipeSide *to = from->peer;
  int state;

  g_mutex_lock (&to->mutex);
  state = g_atomic_int_get (&to->state);
  if (state & (MP_SIDE_CLOSED | MP_SIDE_PEER_CLOSED))
    {
      g_mutex_unlock (&to->mutex);
      mp_message_drop (message);
      return (state & MP_SIDE_CLOSED) != 0;
    }
  g_queue_push_tail_link (&to->inbox, &message->link);
  mp_pipe_side_wake_locked (to);
  g_mutex_unlock (&to->mutex);

  return TRUE;
}
