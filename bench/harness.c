/* harness.c: what mp-bench's scenarios measure with (mp-bench.h): the clock, a latch, heap
 * allocations and the measured region, a receiving context with counters, the baselines'
 * sink, and the receiving end and child set-up shared by the scenarios across processes
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#define _GNU_SOURCE   /* clock_gettime(), prctl() under -std=c11 */

#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

#include <gio/gio.h>
#include <mpport/mpport.h>

#include "mp-bench.h"

#ifdef HAVE_CALLGRIND_H
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_DUMP_STATS_AT(name) ((void) (name))
#endif

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

gint64
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (gint64) ts.tv_sec * G_GINT64_CONSTANT (1000000000) + ts.tv_nsec;
}

/* Latch is in mp-bench.h. */

void
latch_init (Latch *latch)
{
  g_mutex_init (&latch->mutex);
  g_cond_init (&latch->cond);
  latch->count = 0;
}

void
latch_clear (Latch *latch)
{
  g_mutex_clear (&latch->mutex);
  g_cond_clear (&latch->cond);
}

void
latch_add (Latch *latch)
{
  g_mutex_lock (&latch->mutex);
  latch->count++;
  g_cond_broadcast (&latch->cond);
  g_mutex_unlock (&latch->mutex);
}

void
latch_wait (Latch *latch,
            guint  target)
{
  gint64 deadline = g_get_monotonic_time () + TIMEOUT_SECONDS * G_TIME_SPAN_SECOND;

  g_mutex_lock (&latch->mutex);
  while (latch->count < target)
    if (!g_cond_wait_until (&latch->cond, &latch->mutex, deadline))
      g_error ("mp-bench: timed out after %d s waiting for %u of %u", TIMEOUT_SECONDS,
               latch->count, target);
  g_mutex_unlock (&latch->mutex);
}

int
compare_double (gconstpointer a,
                gconstpointer b)
{
  double x = *(const double *) a;
  double y = *(const double *) b;

  return (x > y) - (x < y);
}

guint64
scaled (guint64 count)
{
  double n = (double) count * opt_scale;

  return n < 1 ? 1 : (guint64) n;
}

/* ------------------------------------------------------------------------------------------ */
/* Heap allocations                                                                           */
/*                                                                                            */
/* malloc(), calloc() and realloc() are defined here, counted, and forwarded to glibc's      */
/* __libc_* entry points. GLib and libmpport reach them through the PLT, so each of their    */
/* calls is counted. Not seen: calls made inside libc itself (strdup, stdio) and GLib 2.74's */
/* g_slice magazines (GVariant instances, GList nodes), which take memory in chunks. Every   */
/* thread counts in its own cache line with a plain load and store (no locked instruction,   */
/* nothing shared), so counting costs every implementation the same few instructions per    */
/* call; threads past the last slot share one with an atomic add. Left out under ASan and    */
/* TSan, which interpose the allocator themselves.                                            */
/* ------------------------------------------------------------------------------------------ */

#if COUNT_ALLOCS
#define ALLOC_SLOTS  256

typedef struct
{
  alignas (64) atomic_uint_fast64_t count;
} AllocSlot;

static AllocSlot alloc_slots[ALLOC_SLOTS + 1];   /* the last is shared by any thread beyond */
static atomic_uint alloc_threads;
static _Thread_local AllocSlot *alloc_slot;

void *__libc_malloc (size_t size);
void *__libc_calloc (size_t n_members, size_t size);
void *__libc_realloc (void *ptr, size_t size);

static inline void
alloc_count (void)
{
  AllocSlot *slot = alloc_slot;

  if (G_UNLIKELY (slot == NULL))
    {
      unsigned n = atomic_fetch_add_explicit (&alloc_threads, 1, memory_order_relaxed);

      slot = alloc_slot = &alloc_slots[MIN (n, ALLOC_SLOTS)];
    }
  if (G_LIKELY (slot != &alloc_slots[ALLOC_SLOTS]))
    atomic_store_explicit (&slot->count, atomic_load_explicit (&slot->count, memory_order_relaxed) + 1,
                           memory_order_relaxed);
  else
    atomic_fetch_add_explicit (&slot->count, 1, memory_order_relaxed);
}

void *
malloc (size_t size)
{
  alloc_count ();
  return __libc_malloc (size);
}

void *
calloc (size_t n_members,
        size_t size)
{
  alloc_count ();
  return __libc_calloc (n_members, size);
}

void *
realloc (void   *ptr,
         size_t  size)
{
  alloc_count ();
  return __libc_realloc (ptr, size);
}

static guint64
alloc_total (void)
{
  guint64 total = 0;

  for (guint i = 0; i <= ALLOC_SLOTS; i++)
    total += atomic_load_explicit (&alloc_slots[i].count, memory_order_relaxed);

  return total;
}
#else
static guint64
alloc_total (void)
{
  return 0;
}
#endif

/* The measured region: under callgrind (--callgrind) only this is counted; the heap
 * allocations made in it, by every thread, are kept in measured_allocs. Main thread only. */
static guint64 allocs_at_begin;
guint64 measured_allocs;

void
measure_begin (void)
{
  allocs_at_begin = alloc_total ();
  if (opt_callgrind)
    CALLGRIND_ZERO_STATS;
}

void
measure_end (void)
{
  if (opt_callgrind)
    CALLGRIND_DUMP_STATS_AT ("measured");
  measured_allocs = alloc_total () - allocs_at_begin;
}

/* ------------------------------------------------------------------------------------------ */
/* A receiving context with counters                                                          */
/*                                                                                            */
/* Each receiving thread iterates a fresh GMainContext pushed as its thread-default. A        */
/* sentinel source (highest priority, never ready) counts the iterations through its         */
/* prepare(); a poll function counts the polls that were allowed to block (timeout != 0):    */
/* the wake-ups the receiver needed. Messages / iterations is the batch size.                 */
/* ------------------------------------------------------------------------------------------ */

/* Loop is in mp-bench.h. */
typedef struct
{
  GSource parent;
  Loop *loop;
} SentinelSource;

_Thread_local Loop *thread_loop;

static gint
counting_poll (GPollFD *fds,
               guint    n_fds,
               gint     timeout)
{
  if (timeout != 0 && thread_loop != NULL)
    thread_loop->sleeps++;

  return g_poll (fds, n_fds, timeout);
}

static gboolean
sentinel_prepare (GSource *source,
                  gint    *timeout)
{
  ((SentinelSource *) source)->loop->iterations++;
  *timeout = -1;
  return FALSE;
}

static gboolean
sentinel_dispatch (GSource     *source,
                   GSourceFunc  callback,
                   gpointer     user_data)
{
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs sentinel_funcs = {
  .prepare = sentinel_prepare,
  .dispatch = sentinel_dispatch,
};

Loop *
loop_new (void)
{
  Loop *loop = g_new0 (Loop, 1);

  loop->context = g_main_context_new ();
  g_main_context_push_thread_default (loop->context);
  g_main_context_set_poll_func (loop->context, counting_poll);

  loop->sentinel = g_source_new (&sentinel_funcs, sizeof (SentinelSource));
  ((SentinelSource *) loop->sentinel)->loop = loop;
  g_source_set_priority (loop->sentinel, G_PRIORITY_HIGH);
  g_source_set_static_name (loop->sentinel, "mp-bench sentinel");
  g_source_attach (loop->sentinel, loop->context);

  thread_loop = loop;

  return loop;
}

void
loop_reset (Loop *loop)
{
  loop->iterations = 0;
  loop->sleeps = 0;
}

void
loop_run_until (Loop           *loop,
                const gboolean *done)
{
  while (!*done)
    g_main_context_iteration (loop->context, TRUE);
}

/* Iterates without blocking until nothing is ready (lets closing sources retire). */
void
loop_flush (Loop *loop)
{
  while (g_main_context_iteration (loop->context, FALSE))
    ;
}

void
loop_free (Loop *loop)
{
  loop_flush (loop);
  g_source_destroy (loop->sentinel);
  g_source_unref (loop->sentinel);
  thread_loop = NULL;
  g_main_context_pop_thread_default (loop->context);
  g_main_context_unref (loop->context);
  g_free (loop);
}

/* ------------------------------------------------------------------------------------------ */
/* The baselines' receiving object: a GObject with a "message" (GVariant) signal, emitted    */
/* once per message like mpport's, with GLib's stock marshallers.                             */
/* ------------------------------------------------------------------------------------------ */

/* Declared in mp-bench.h. */
struct _BenchSink
{
  GObject parent_instance;
};

G_DEFINE_FINAL_TYPE (BenchSink, bench_sink, G_TYPE_OBJECT)

guint sink_message_signal;

static void
bench_sink_class_init (BenchSinkClass *klass)
{
  sink_message_signal =
    g_signal_new ("message", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                  g_cclosure_marshal_VOID__VARIANT, G_TYPE_NONE, 1, G_TYPE_VARIANT);
  g_signal_set_va_marshaller (sink_message_signal, G_TYPE_FROM_CLASS (klass),
                              g_cclosure_marshal_VOID__VARIANTv);
}

static void
bench_sink_init (BenchSink *self)
{
}

/* ------------------------------------------------------------------------------------------ */
/* Across processes (bus, xproc-*): the receiving end, and the helper processes' set-up       */
/* ------------------------------------------------------------------------------------------ */

/* BenchReceiver is in mp-bench.h. */

void
bench_receiver_on_mp_message (gpointer   instance,
                              MpMessage *message,
                              gpointer   user_data)
{
  BenchReceiver *receiver = user_data;

  receiver->deliver (mp_message_get_data (message), receiver->deliver_data);
}

void
bench_receiver_on_sink_message (BenchSink *sink,
                                GVariant  *data,
                                gpointer   user_data)
{
  BenchReceiver *receiver = user_data;

  receiver->deliver (data, receiver->deliver_data);
}

void
bench_receiver_on_signal (GDBusConnection *connection,
                          const char      *sender_name,
                          const char      *object_path,
                          const char      *interface_name,
                          const char      *signal_name,
                          GVariant        *parameters,
                          gpointer         user_data)
{
  BenchReceiver *receiver = user_data;
  g_autoptr(GVariant) data = NULL;

  if (!g_variant_is_of_type (parameters, G_VARIANT_TYPE ("(v)")))
    g_error ("a signal of type %s", g_variant_get_type_string (parameters));
  g_variant_get (parameters, "(v)", &data);
  g_signal_emit (receiver->sink, sink_message_signal, 0, data);
}

/* A helper process (dbus-daemon, a receiver) dies with the sample's process, however that
 * ends; its main thread, which spawns them, lives as long as the process. */
void
die_with_parent (gpointer data)
{
  prctl (PR_SET_PDEATHSIG, SIGTERM);
}
