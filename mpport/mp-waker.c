/* mp-waker.c: one lock-free wake-up per GMainContext
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "mp-waker-private.h"

struct _MpWaker
{
  gatomicrefcount ref_count;
  int fd;   /* eventfd, non-blocking; closed with the last reference */
};

typedef struct
{
  GSource parent;
  MpWaker *waker;          /* strong */
  GMainContext *context;   /* weak: the table key, removed in finalize */
  /* Added with g_source_add_poll(), not g_source_add_unix_fd(): GLib makes a source with a
   * unix fd that polled readable ready whatever its check says, and this one must never be
   * dispatched (at its priority it would hold back every other source for an iteration). */
  GPollFD pollfd;
} MpWakerSource;

/* context -> MpWaker, weak: an entry lives exactly as long as the context's waker source,
 * which holds a reference on the waker and removes the entry in its finalize. Touched only
 * when a source is attached (start()) and when a context is finalized. */
static GMutex wakers_lock;
static GHashTable *wakers;

MpWaker *
mp_waker_ref (MpWaker *self)
{
  g_atomic_ref_count_inc (&self->ref_count);
  return self;
}

void
mp_waker_unref (MpWaker *self)
{
  if (!g_atomic_ref_count_dec (&self->ref_count))
    return;

  close (self->fd);
  g_free (self);
}

void
mp_waker_wake (MpWaker *self)
{
  /* EAGAIN means the counter is saturated: the poll returns anyway. */
  while (eventfd_write (self->fd, 1) < 0 && errno == EINTR)
    ;
}

static gboolean
mp_waker_source_prepare (GSource *source,
                         gint    *timeout)
{
  *timeout = -1;
  return FALSE;
}

/* Acknowledges the wake-up here rather than in a dispatch: this source has the highest
 * priority, so its check runs first in every check phase and the sources it woke (checked
 * after it, on their own flags) are dispatched in this same iteration. A wake-up written
 * after this read makes the next poll return. */
static gboolean
mp_waker_source_check (GSource *source)
{
  MpWakerSource *self = (MpWakerSource *) source;

  if (self->pollfd.revents & G_IO_IN)
    {
      eventfd_t value;

      (void) eventfd_read (self->waker->fd, &value);
    }

  return FALSE;
}

static gboolean
mp_waker_source_dispatch (GSource     *source,
                          GSourceFunc  callback,
                          gpointer     user_data)
{
  return G_SOURCE_CONTINUE;
}

/* Runs when the context is finalized: nothing else destroys or releases the source. */
static void
mp_waker_source_finalize (GSource *source)
{
  MpWakerSource *self = (MpWakerSource *) source;

  g_mutex_lock (&wakers_lock);
  if (g_hash_table_lookup (wakers, self->context) == self->waker)
    g_hash_table_remove (wakers, self->context);
  g_mutex_unlock (&wakers_lock);

  mp_waker_unref (self->waker);
}

static GSourceFuncs mp_waker_source_funcs = {
  .prepare = mp_waker_source_prepare,
  .check = mp_waker_source_check,
  .dispatch = mp_waker_source_dispatch,
  .finalize = mp_waker_source_finalize,
};

MpWaker *
mp_waker_ref_for_context (GMainContext *context)
{
  MpWaker *self;
  GSource *source;

  g_mutex_lock (&wakers_lock);
  if (wakers == NULL)
    wakers = g_hash_table_new (NULL, NULL);

  self = g_hash_table_lookup (wakers, context);
  if (self != NULL)
    {
      mp_waker_ref (self);
      g_mutex_unlock (&wakers_lock);
      return self;
    }

  self = g_new0 (MpWaker, 1);
  g_atomic_ref_count_init (&self->ref_count);   /* the caller's */
  self->fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (self->fd < 0)
    g_error ("mpport: cannot create an eventfd: %s", g_strerror (errno));

  source = g_source_new (&mp_waker_source_funcs, sizeof (MpWakerSource));
  ((MpWakerSource *) source)->waker = mp_waker_ref (self);
  ((MpWakerSource *) source)->context = context;
  ((MpWakerSource *) source)->pollfd.fd = self->fd;
  ((MpWakerSource *) source)->pollfd.events = G_IO_IN;
  g_source_add_poll (source, &((MpWakerSource *) source)->pollfd);
  g_source_set_static_name (source, "MpWaker");
  /* Before every other source, so that its check always runs and runs first. */
  g_source_set_priority (source, G_MININT);
  g_hash_table_insert (wakers, context, self);
  g_mutex_unlock (&wakers_lock);

  /* The context owns the source from now on; it goes with the context. Waking it before
   * this is harmless: the eventfd is polled from the first iteration after. */
  g_source_attach (source, context);
  g_source_unref (source);

  return self;
}

GSource *
mp_wakeable_source_new (GSourceFuncs *funcs,
                        gsize         struct_size,
                        GMainContext *context)
{
  GSource *source;

  g_assert (struct_size >= sizeof (MpWakeableSource));
  g_assert (funcs->prepare == mp_wakeable_source_prepare);
  g_assert (funcs->check == mp_wakeable_source_check);

  source = g_source_new (funcs, struct_size);
  ((MpWakeableSource *) source)->waker = mp_waker_ref_for_context (context);

  return source;
}

gboolean
mp_wakeable_source_prepare (GSource *source,
                            gint    *timeout)
{
  *timeout = -1;
  return g_atomic_int_get (&((MpWakeableSource *) source)->pending) != 0;
}

gboolean
mp_wakeable_source_check (GSource *source)
{
  return g_atomic_int_get (&((MpWakeableSource *) source)->pending) != 0;
}

void
mp_wakeable_source_finalize (GSource *source)
{
  g_clear_pointer (&((MpWakeableSource *) source)->waker, mp_waker_unref);
}

void
mp_wakeable_source_wake (GSource *source)
{
  MpWakeableSource *self = (MpWakeableSource *) source;

  if (g_atomic_int_compare_and_exchange (&self->pending, 0, 1))
    mp_waker_wake (self->waker);
}
