/* mp-receive-waiter.c: pending receives of a pipe side, and their delivery in order
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <string.h>

#include "mp-error.h"
#include "mp-i18n-private.h"
#include "mp-pipe-private.h"

/* A receive gets its result under its side's lock, at the moment the side hands the message
 * out (or fails it), so the results are ordered like the messages. A blocking receive is
 * woken there and then. An async one must run its callback later, on its own context: its
 * result joins the side's completed queue, and an idle on its context delivers, oldest
 * first, every completed result of that context. Whichever idle runs first delivers them all;
 * the others find nothing. So callbacks run in the order the messages were taken, even when
 * the threads that served them attach their idles in another order, or a receive is
 * cancelled after it was served.
 *
 * Each async waiter is owned by its idle (created with it, attached once it has a result):
 * the idle's destroy notify frees it, whichever idle delivered it. */

GError *
mp_receive_cancelled_error (void)
{
  return g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, _("The receive was cancelled"));
}

GError *
mp_receive_closed_error (gboolean by_owner)
{
  return g_error_new_literal (MP_ERROR, MP_ERROR_CLOSED,
                              by_owner ? _("The port was closed")
                                       : _("The other port of the channel was closed"));
}

/* Runs the callback of @self, which was just taken out of the completed queue, on its context
 * (thread-default during the callback, as GTask does). */
static void
waiter_deliver (MpReceiveWaiter *self)
{
  /* @self may be freed by a main loop iterated inside the callback. */
  g_autoptr(GTask) task = g_object_ref (self->task);
  GAsyncReadyCallback callback = self->callback;
  gpointer user_data = self->user_data;

  if (self->message != NULL)
    g_task_return_pointer (task, g_steal_pointer (&self->message),
                           (GDestroyNotify) mp_message_unref);
  else
    g_task_return_error (task, g_steal_pointer (&self->error));

  if (callback != NULL)
    {
      GMainContext *context = g_task_get_context (task);

      g_main_context_push_thread_default (context);
      callback (g_task_get_source_object (task), G_ASYNC_RESULT (task), user_data);
      g_main_context_pop_thread_default (context);
    }
}

/* The oldest completed waiter of @context on @side, taken out of the queue, or NULL; NULL
 * too once @until was taken out (it is then delivered or being delivered). */
static MpReceiveWaiter *
take_completed (MpPipeSide      *side,
                GMainContext    *context,
                MpReceiveWaiter *until)
{
  MpReceiveWaiter *found = NULL;

  g_mutex_lock (&side->mutex);
  for (GList *l = until->completed ? side->waiters->completed.head : NULL; l != NULL; l = l->next)
    {
      MpReceiveWaiter *waiter = l->data;

      if (waiter->context == context)
        {
          g_queue_unlink (&side->waiters->completed, l);
          waiter->completed = FALSE;
          found = waiter;
          break;
        }
    }
  g_mutex_unlock (&side->mutex);

  return found;
}

/* Delivers the completed results of this context that are older than this waiter's, then
 * its own; newer ones wait for their own idles, so that a callback that receives again
 * cannot keep one dispatch going (other sources of the context get their turn). Nothing
 * if an older waiter's idle delivered this one already. */
static gboolean
waiter_idle_dispatch (gpointer data)
{
  MpReceiveWaiter *self = data;
  MpReceiveWaiter *next;

  /* One at a time, never holding a list across a callback: a callback may iterate the
   * context, run another waiter's idle and so free that waiter (never this one: its idle
   * is the one running). */
  do
    {
      next = take_completed (self->side, self->context, self);
      if (next != NULL)
        waiter_deliver (next);
    }
  while (next != NULL && next != self);

  return G_SOURCE_REMOVE;
}

/* The idle's destroy notify: after its dispatch, or if its context is finalized first (then
 * the result is dropped like an undelivered message). */
static void
waiter_free (gpointer data)
{
  MpReceiveWaiter *self = data;
  MpPipeSide *side = self->side;

  g_mutex_lock (&side->mutex);
  if (self->completed)
    {
      g_queue_unlink (&side->waiters->completed, &self->link);
      self->completed = FALSE;
    }
  g_mutex_unlock (&side->mutex);

  /* Never inside a handler of this cancellable on this thread (we run from an idle), so
   * this cannot deadlock; it waits out a handler running on another thread. */
  if (self->cancelled_id != 0)
    g_cancellable_disconnect (self->cancellable, self->cancelled_id);
  g_clear_object (&self->cancellable);
  if (self->message != NULL)
    mp_message_drop (g_steal_pointer (&self->message));
  g_clear_error (&self->error);
  g_clear_object (&self->task);   /* may finalize the port, and so the side */
  g_free (self);
}

void
mp_receive_waiter_resolve_locked (MpReceiveWaiter *waiter,
                                  MpMessage       *message,
                                  GError          *error,
                                  MpPipeDeferred  *deferred)
{
  MpPipeSide *side = waiter->side;

  g_assert (!waiter->queued);
  g_assert (waiter->message == NULL && waiter->error == NULL);
  g_assert ((message != NULL) != (error != NULL));

  waiter->message = message;
  waiter->error = error;

  if (waiter->sync)
    {
      g_cond_signal (waiter->cond);
      return;
    }

  if (side->waiters == NULL)
    side->waiters = g_new0 (MpPipeWaiters, 1);
  waiter->completed = TRUE;
  g_queue_push_tail_link (&side->waiters->completed, &waiter->link);
  g_queue_push_tail_link (&deferred->scheduled, &waiter->schedule_link);
}

/* Runs in the thread that cancels, inside g_cancellable_cancel(), so that once it returns
 * the receive can no longer take a message. A receive still waiting leaves the queue and
 * fails; one already served keeps its message. */
static void
waiter_cancelled (GCancellable *cancellable,
                  gpointer      data)
{
  MpReceiveWaiter *waiter = data;
  MpPipeSide *side = waiter->side;
  MpPipeDeferred deferred = MP_PIPE_DEFERRED_INIT;

  g_mutex_lock (&side->mutex);
  if (waiter->queued)
    {
      g_queue_unlink (&side->waiters->waiting, &waiter->link);
      waiter->queued = FALSE;
      mp_receive_waiter_resolve_locked (waiter, NULL, mp_receive_cancelled_error (), &deferred);
      /* The last one gone: plain posts need the lock no more. */
      mp_pipe_side_update_lane_locked (side);
    }
  g_mutex_unlock (&side->mutex);

  mp_pipe_deferred_release (&deferred);
}

/* Connected before the waiter is queued (a handler run at once finds it unqueued and does
 * nothing), and never under the side lock, which the handler takes. */
static void
waiter_connect_cancellable (MpReceiveWaiter *self,
                            GCancellable    *cancellable)
{
  if (cancellable == NULL)
    return;

  self->cancellable = g_object_ref (cancellable);
  self->cancelled_id = g_cancellable_connect (cancellable, G_CALLBACK (waiter_cancelled),
                                              self, NULL);
}

MpReceiveWaiter *
mp_receive_waiter_new_async (MpPipeSide          *side,
                             gpointer             source_object,
                             gpointer             source_tag,
                             GCancellable        *cancellable,
                             GAsyncReadyCallback  callback,
                             gpointer             user_data)
{
  MpReceiveWaiter *self = g_new0 (MpReceiveWaiter, 1);

  self->link.data = self;
  self->schedule_link.data = self;
  self->side = side;
  /* No callback and no cancellable for GTask: waiter_deliver() runs the callback itself,
   * in order, and the cancellable is ours to watch. */
  self->task = g_task_new (source_object, NULL, NULL, NULL);
  g_task_set_source_tag (self->task, source_tag);
  self->callback = callback;
  self->user_data = user_data;
  self->context = g_task_get_context (self->task);

  self->idle = g_idle_source_new ();
  g_source_set_static_name (self->idle, "MpMessagePort receive");
  /* GTask's default, as before: not behind redraws at G_PRIORITY_DEFAULT_IDLE. */
  g_source_set_priority (self->idle, G_PRIORITY_DEFAULT);
  g_source_set_callback (self->idle, waiter_idle_dispatch, self, waiter_free);

  waiter_connect_cancellable (self, cancellable);

  return self;
}

void
mp_receive_waiter_init_sync (MpReceiveWaiter *self,
                             MpPipeSide      *side,
                             GCond           *cond,
                             GCancellable    *cancellable)
{
  memset (self, 0, sizeof *self);
  self->link.data = self;
  self->side = side;
  self->sync = TRUE;
  self->cond = cond;
  waiter_connect_cancellable (self, cancellable);
}

/* With no lock held. The result, if any, is the caller's. */
void
mp_receive_waiter_clear_sync (MpReceiveWaiter *self)
{
  g_assert (self->sync && !self->queued);

  if (self->cancelled_id != 0)
    g_cancellable_disconnect (self->cancellable, self->cancelled_id);
  g_clear_object (&self->cancellable);
}

void
mp_receive_waiter_wait_locked (MpReceiveWaiter *self,
                               gint64           end_time)
{
  MpPipeSide *side = self->side;

  g_assert (self->sync && self->queued);

  while (self->message == NULL && self->error == NULL)
    {
      if (end_time < 0)
        g_cond_wait (self->cond, &side->mutex);
      else if (!g_cond_wait_until (self->cond, &side->mutex, end_time))
        {
          if (self->message == NULL && self->error == NULL)
            {
              g_queue_unlink (&side->waiters->waiting, &self->link);
              self->queued = FALSE;
              mp_pipe_side_update_lane_locked (side);
            }
          break;
        }
    }
}
