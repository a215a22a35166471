/* mp-waker.c: one lock-free wake-up per GMainContext
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <errno.h>
#include <unistd.h>

/* MP_WAKER_EVENTFD (config.h, the meson option "waker") picks the wake-up: an eventfd where
 * there is one (Linux), else a pipe, which every Unix has. Both are non-blocking and
 * close-on-exec, and both are polled by the same never-dispatched source. */
#if MP_WAKER_EVENTFD
#include <sys/eventfd.h>
#else
#include <glib-unix.h>
#include <fcntl.h>
#endif

#include "mp-waker-private.h"

struct _MpWaker
{
  gatomicrefcount ref_count;
  /* Immutable; both closed with the last reference, so no wake ever writes a closed fd
   * (a waker holds a reference while it writes). The eventfd is both; a pipe's read end is
   * polled and drained by the waker source, its write end written by mp_waker_wake(). */
  int read_fd;
  int write_fd;
  /* How many sources of the context are yielding (see mp_wakeable_source_yield()): the
   * context's resume source is ready while it is not zero. Touched only by the thread
   * dispatching the context, so no lock and no atomics. */
  int n_yielding;
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

  if (self->write_fd != self->read_fd)
    close (self->write_fd);
  close (self->read_fd);
  g_free (self);
}

void
mp_waker_wake (MpWaker *self)
{
#if MP_WAKER_EVENTFD
  /* EAGAIN means the counter is saturated: the poll returns anyway. */
  while (eventfd_write (self->write_fd, 1) < 0 && errno == EINTR)
    ;
#else
  static const char byte = 0;

  /* EAGAIN means the pipe is full: it is readable, so the poll returns anyway. */
  while (write (self->write_fd, &byte, 1) < 0 && errno == EINTR)
    ;
#endif
}

/* Consumes every wake-up written so far, so that the next poll blocks until a new one. */
static void
mp_waker_drain (MpWaker *self)
{
#if MP_WAKER_EVENTFD
  eventfd_t value;

  /* One read takes the whole counter back to zero. */
  (void) eventfd_read (self->read_fd, &value);
#else
  char buffer[64];

  /* A pipe holds one byte per wake-up since the last drain: read until it is empty
   * (EAGAIN). A byte written after the last read makes the next poll return. */
  for (;;)
    {
      ssize_t n = read (self->read_fd, buffer, sizeof buffer);

      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
    }
#endif
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
    mp_waker_drain (self->waker);

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

/* The resume source: at the lowest priority, ready while a source of the context yields.
 * Its dispatch does nothing but make the iteration count: an iteration in which a yielded
 * source was the only work left still dispatches something, so that
 * `while (g_main_context_iteration (ctx, FALSE));` and g_main_context_pending() go on seeing
 * the work as they always did. Any other ready source is of better priority and runs first.
 * It reads n_yielding on the dispatching thread: no GLib lock, no wake-up. */
static gboolean
mp_waker_resume_prepare (GSource *source,
                         gint    *timeout)
{
  *timeout = -1;
  return ((MpWakerSource *) source)->waker->n_yielding > 0;
}

static gboolean
mp_waker_resume_check (GSource *source)
{
  return ((MpWakerSource *) source)->waker->n_yielding > 0;
}

static gboolean
mp_waker_resume_dispatch (GSource     *source,
                          GSourceFunc  callback,
                          gpointer     user_data)
{
  return G_SOURCE_CONTINUE;
}

static void
mp_waker_resume_finalize (GSource *source)
{
  mp_waker_unref (((MpWakerSource *) source)->waker);
}

static GSourceFuncs mp_waker_resume_funcs = {
  .prepare = mp_waker_resume_prepare,
  .check = mp_waker_resume_check,
  .dispatch = mp_waker_resume_dispatch,
  .finalize = mp_waker_resume_finalize,
};

static GSourceFuncs mp_waker_source_funcs = {
  .prepare = mp_waker_source_prepare,
  .check = mp_waker_source_check,
  .dispatch = mp_waker_source_dispatch,
  .finalize = mp_waker_source_finalize,
};

/* Like a failed allocation, running out of fds here is not something a caller of start()
 * could handle: abort with the reason. Non-blocking, because wakers must never sleep in
 * write() (a full pipe is already readable) and the drain reads until EAGAIN; close-on-exec,
 * so that a child spawned by the application does not inherit it. */
static void
mp_waker_open (MpWaker *self)
{
#if MP_WAKER_EVENTFD
  self->read_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (self->read_fd < 0)
    g_error ("mpport: cannot create an eventfd: %s", g_strerror (errno));
  self->write_fd = self->read_fd;
#else
  g_autoptr(GError) error = NULL;
  int fds[2];

  /* GLib 2.74's g_unix_open_pipe() takes FD_CLOEXEC only: O_NONBLOCK is set after. */
  if (!g_unix_open_pipe (fds, FD_CLOEXEC, &error) ||
      !g_unix_set_fd_nonblocking (fds[0], TRUE, &error) ||
      !g_unix_set_fd_nonblocking (fds[1], TRUE, &error))
    g_error ("mpport: cannot create the waker's pipe: %s", error->message);
  self->read_fd = fds[0];
  self->write_fd = fds[1];
#endif
}

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
  mp_waker_open (self);

  source = g_source_new (&mp_waker_source_funcs, sizeof (MpWakerSource));
  ((MpWakerSource *) source)->waker = mp_waker_ref (self);
  ((MpWakerSource *) source)->context = context;
  ((MpWakerSource *) source)->pollfd.fd = self->read_fd;
  ((MpWakerSource *) source)->pollfd.events = G_IO_IN;
  g_source_add_poll (source, &((MpWakerSource *) source)->pollfd);
  g_source_set_static_name (source, "MpWaker");
  /* Before every other source, so that its check always runs and runs first. */
  g_source_set_priority (source, G_MININT);
  g_hash_table_insert (wakers, context, self);
  g_mutex_unlock (&wakers_lock);

  /* The context owns the source from now on; it goes with the context. Waking it before
   * this is harmless: the fd is polled from the first iteration after. */
  g_source_attach (source, context);
  g_source_unref (source);

  source = g_source_new (&mp_waker_resume_funcs, sizeof (MpWakerSource));
  ((MpWakerSource *) source)->waker = mp_waker_ref (self);
  ((MpWakerSource *) source)->context = context;
  g_source_set_static_name (source, "MpWaker resume");
  g_source_set_priority (source, G_MAXINT);
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

/* A yield spans the rest of the iteration that dispatched the source and one more, in which
 * the source reports itself unready to prepare and check. GLib dispatches, in an iteration,
 * only the sources of the best priority that prepare or check found ready, so that second
 * iteration is the one where lower-priority sources (a GTK frame clock at
 * G_PRIORITY_HIGH_IDLE + 20) run; its check ends the yield and sets pending, so the next
 * prepare reports ready again with no eventfd write. GLib skips prepare and check of
 * sources of worse priority than one already found ready: then the yield just lasts until
 * an iteration that does reach this source's check, and each of those prepares asks for a
 * zero poll timeout, so the context never sleeps while a yielded source has work left.
 * Nothing on another thread ends a yield early, and nothing needs to: the port or inbox
 * stays armed through it, so posts do not wake it, and a wake-up that does land (a close,
 * a transfer) sets pending, which the check that ends the yield sets anyway. */
void
mp_wakeable_source_yield (GSource *source)
{
  MpWakeableSource *self = (MpWakeableSource *) source;

  /* Only a dispatch yields, and a yielded source is not dispatched before its check. */
  g_assert (!self->yielding);
  self->yielding = TRUE;
  self->waker->n_yielding++;
}

gboolean
mp_wakeable_source_prepare (GSource *source,
                            gint    *timeout)
{
  MpWakeableSource *self = (MpWakeableSource *) source;

  if (self->yielding)
    {
      /* Unready, but not asleep: the check that ends the yield runs after this poll. */
      *timeout = 0;
      return FALSE;
    }

  *timeout = -1;
  return g_atomic_int_get (&self->pending) != 0;
}

gboolean
mp_wakeable_source_check (GSource *source)
{
  MpWakeableSource *self = (MpWakeableSource *) source;

  if (self->yielding)
    {
      /* Unready in this iteration whatever pending says (a cross-thread wake may have set
       * it): being ready here would stop GLib's check at our priority again. Pending is
       * set atomically because wakers compare-and-exchange it. */
      self->yielding = FALSE;
      self->waker->n_yielding--;
      g_atomic_int_set (&self->pending, 1);
      return FALSE;
    }

  return g_atomic_int_get (&self->pending) != 0;
}

void
mp_wakeable_source_finalize (GSource *source)
{
  MpWakeableSource *self = (MpWakeableSource *) source;

  /* Only its context's finalization ends a source in the middle of a yield. */
  if (self->yielding)
    self->waker->n_yielding--;
  g_clear_pointer (&self->waker, mp_waker_unref);
}

void
mp_wakeable_source_wake (GSource *source)
{
  MpWakeableSource *self = (MpWakeableSource *) source;

  if (g_atomic_int_compare_and_exchange (&self->pending, 0, 1))
    mp_waker_wake (self->waker);
}

MpWaker *
mp_wakeable_source_wake_begin (GSource *source)
{
  MpWakeableSource *self = (MpWakeableSource *) source;

  if (!g_atomic_int_compare_and_exchange (&self->pending, 0, 1))
    return NULL;

  return mp_waker_ref (self->waker);
}

void
mp_waker_wake_end (MpWaker *waker)
{
  mp_waker_wake (waker);
  mp_waker_unref (waker);
}

void
mp_wakeable_source_wake_last (GSource *source)
{
  MpWakeableSource *self = (MpWakeableSource *) source;
  /* Taken while the source is surely alive: once the flag is set, its dispatch may run,
   * return and free it before the write. */
  MpWaker *waker = mp_waker_ref (self->waker);

  if (g_atomic_int_compare_and_exchange (&self->pending, 0, 1))
    mp_waker_wake (waker);
  mp_waker_unref (waker);
}
