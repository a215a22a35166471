/* mp-lane-private.h: a lock-free lane of queue nodes, for a queue that one lock holder drains
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* A lane is an atomic pointer beside a GQueue guarded by a lock: producers push their nodes
 * (GList links, each in its element, link->data the element) on it with one
 * compare-and-swap, without the lock; the lock holder takes the whole lane with one exchange
 * and appends it to the queue in the order it was pushed. Nobody pops a single node, so
 * there is no ABA. MP_LANE_SHUT makes pushes fail: only the lock holder opens and shuts a
 * lane. Used by a pipe side's inbox (mp-pipe.c, "The posts' lane") and a broadcast inbox
 * (mp-broadcast-channel.c). */

/* A shut lane's value (never a node's address). */
#define MP_LANE_SHUT ((gpointer) 1)

/* Pushes @link (its next is overwritten) on @lane, if it is not shut; *first: the lane was
 * empty. Any thread, no lock. */
static inline gboolean
mp_lane_push (gpointer *lane,
              GList    *link,
              gboolean *first)
{
  gpointer top = g_atomic_pointer_get (lane);

  do
    {
      if (top == MP_LANE_SHUT)
        {
          link->next = NULL;   /* from a try that lost */
          return FALSE;
        }
      link->next = top;
    }
  while (!g_atomic_pointer_compare_and_exchange_full (lane, top, link, &top));

  *first = top == NULL;
  return TRUE;
}

/* Whether @lane holds nodes (neither empty nor shut). Any thread. */
static inline gboolean
mp_lane_is_busy (gpointer *lane)
{
  gpointer top = g_atomic_pointer_get (lane);

  return top != NULL && top != MP_LANE_SHUT;
}

/* Takes every node off @lane (which must not be shut) and leaves it empty, or shut if
 * @shut, and appends them to @queue, oldest first. With the lock of @queue held. */
static inline void
mp_lane_take (gpointer *lane,
              GQueue   *queue,
              gboolean  shut)
{
  GList *newest = g_atomic_pointer_exchange (lane, shut ? MP_LANE_SHUT : NULL);
  GList *newer = NULL;
  guint n = 0;

  g_assert (newest != MP_LANE_SHUT);
  if (newest == NULL)
    return;

  /* Reverses the chain (linked newest first through next) in place. */
  for (GList *l = newest, *older; l != NULL; l = older)
    {
      older = l->next;
      l->next = newer;
      if (newer != NULL)
        newer->prev = l;
      newer = l;
      n++;
    }

  /* newer is the oldest now. */
  newer->prev = queue->tail;
  if (queue->tail != NULL)
    queue->tail->next = newer;
  else
    queue->head = newer;
  queue->tail = newest;
  queue->length += n;
}

G_END_DECLS
