/* mp-bench.c: mpport throughput, latency, churn and memory, against in-run baselines
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Every scenario runs mpport and, where they apply, three baselines written here, moving
 * the same GVariants to the same kind of handler (a GObject signal per message):
 *
 *   (a) invoke  one g_main_context_invoke_full() per message
 *   (b) queue   mutex + GQueue + one persistent GSource, woken once per burst
 *               (g_source_set_ready_time() by the poster that arms it; the dispatch
 *               steals the whole queue under the lock and emits with no lock held)
 *   (c) ring    a lock-free single-producer/single-consumer ring and an eventfd: the
 *               producer writes the eventfd only when the consumer said it went idle
 *               (the bound: no lock, no allocation besides the GVariant)
 *
 * and, across processes (the bus scenario, on a private dbus-daemon; the xproc-* scenarios,
 * a port whose peer is a child process, in xproc.c), against
 *
 *   (d) signal  one GDBus signal per message (g_dbus_connection_emit_signal(), received
 *               with g_dbus_connection_signal_subscribe()): through the bus in bus,
 *               peer-to-peer on a socketpair in xproc-*
 *   (e) socket  xproc-* only: the same GVariants serialized, length-prefixed, on a bare
 *               socketpair, buffered both ways (the bound)
 *
 * and, with --peers, against JavaScript runtimes doing the same work with their own
 * worker_threads MessageChannel/MessagePort and BroadcastChannel (bench/peers/scenarios.mjs,
 * one runtime process per sample): Node and Bun.
 *
 * Runs are interleaved (run 1 of every implementation, then run 2 ...) so that drift on a
 * shared machine hits every column alike, each in a fresh child process (so that no
 * implementation inherits another's heap); the table shows medians. See bench/README.md.
 *
 *   mp-bench [OPTION...] [SCENARIO...]     (mp-bench --help)
 */

#define _GNU_SOURCE   /* getloadavg(), eventfd */

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <mpport/mpport.h>

#include "mp-bench.h"
#include "xproc.h"

#ifdef HAVE_CALLGRIND_H
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_DUMP_STATS_AT(name) ((void) (name))
#endif

/* GCC says which sanitizer is on with __SANITIZE_*__, clang with __has_feature (nested: GCC
 * before 14 cannot even parse __has_feature (x) in an #if). */
#if defined(__SANITIZE_THREAD__)
#define BENCH_TSAN 1
#elif defined(__has_feature)
#if __has_feature (thread_sanitizer)
#define BENCH_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define BENCH_ASAN 1
#elif defined(__has_feature)
#if __has_feature (address_sanitizer)
#define BENCH_ASAN 1
#endif
#endif

/* ------------------------------------------------------------------------------------------ */
/* Parameters                                                                                 */
/* ------------------------------------------------------------------------------------------ */

#define DEFAULT_RUNS          5
#define N_FANIN_PRODUCERS     4
#define N_BCAST_RECEIVERS     4
#define MAX_PRODUCERS         8
#define RING_SIZE             16384u    /* slots of the (c) ring; a power of two */
#define STRESS_THREADS        6         /* plus the main thread */
#define STRESS_ITERATIONS     400
#define STRESS_CHANNELS       8
#define BCAST_NAME            "bench/mp-bench"
#define N_BUS_RECEIVERS       2         /* processes, besides the sender's */
#define BUS_RTT_WARMUP        200
#define BUS_RTT_PER_POSTS     20        /* measured round trips: posts / 20 (5 000) */
#define BUS_CHANNEL_NAME      "bench/mp-bench/bus"
#define BUS_SIGNAL_PATH       "/org/gnome/Mpport/Bench"
#define BUS_SIGNAL_INTERFACE  "org.gnome.Mpport.Bench"
#define BUS_SIGNAL_MEMBER     "Message"

/* 64 bytes, without the terminating NUL. */
static const char payload64[] = "mpport-bench-payload-0123456789abcdefghijklmnopqrstuvwxyzABCDEF.";
G_STATIC_ASSERT (sizeof (payload64) == 65);

/* Impl is in mp-bench.h. */
const char *const impl_names[N_IMPLS] = { "mpport", "invoke", "queue", "ring", "signal", "socket", "node", "bun" };
static const char *const impl_labels[N_IMPLS] = { "mpport", "(a) invoke", "(b) queue", "(c) ring", "(d) signal",
                                                  "(e) socket", "Node", "Bun" };
/* In the ratio columns: mp/(a) ... mp/Node */
static const char *const impl_tags[N_IMPLS] = { "mp", "(a)", "(b)", "(c)", "(d)", "(e)", "Node", "Bun" };

#define ALL_IMPLS       ((1u << N_IMPLS) - 1)
/* Node and Bun run only when asked for (--peers, or named in --impls): Bun is installed
 * into a cache by scripts/bench --peers, and neither is a project dependency. */
#define PEER_IMPLS      ((1u << IMPL_NODE) | (1u << IMPL_BUN))
#define IS_PEER(impl)   ((PEER_IMPLS & (1u << (impl))) != 0)
#define THREAD_IMPLS    ((1u << IMPL_MPPORT) | (1u << IMPL_INVOKE) | (1u << IMPL_QUEUE) | (1u << IMPL_RING))
#define BUS_IMPLS       ((1u << IMPL_MPPORT) | (1u << IMPL_SIGNAL))
#define MPPORT_ONLY     (1u << IMPL_MPPORT)

/* Sample and Scenario are in mp-bench.h. */

/* Options. */
static int opt_runs = DEFAULT_RUNS;
static double opt_scale = 1.0;
static char *opt_impls;
static char *opt_json;
static char *opt_plot;
static char *opt_versus;
static gboolean opt_callgrind;
static gboolean opt_raw;
static gboolean opt_quiet;
static gint64 opt_child_idle = -1;
static gboolean opt_list;
static gboolean opt_in_process;
static char *opt_child_bus_receiver;
static gint64 opt_child_bus_posts = -1;
static gint64 opt_child_bus_pings = -1;
static gboolean opt_child_bus_echo;
static char *opt_child_xproc;
static gint64 opt_child_xproc_fd = -1;
static gint64 opt_child_xproc_count = -1;
static gboolean opt_peers;
static char *opt_node;
static char *opt_bun;

/* The peers' runtimes (--node, --bun) and what they said to --version; NULL for the others. */
static const char *peer_runtimes[N_IMPLS];
static char *peer_versions[N_IMPLS];

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

/* A latch: count up, wait for a target. Also used as a one-shot gate (target 1). */
typedef struct
{
  GMutex mutex;
  GCond cond;
  guint count;
} Latch;

static void
latch_init (Latch *latch)
{
  g_mutex_init (&latch->mutex);
  g_cond_init (&latch->cond);
  latch->count = 0;
}

static void
latch_clear (Latch *latch)
{
  g_mutex_clear (&latch->mutex);
  g_cond_clear (&latch->cond);
}

static void
latch_add (Latch *latch)
{
  g_mutex_lock (&latch->mutex);
  latch->count++;
  g_cond_broadcast (&latch->cond);
  g_mutex_unlock (&latch->mutex);
}

static void
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

#if defined(__GLIBC__) && !defined(BENCH_ASAN) && !defined(BENCH_TSAN)
#define COUNT_ALLOCS 1
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
#define COUNT_ALLOCS 0

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

static _Thread_local Loop *thread_loop;

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
/* A link: one direction, from producer threads to one receiving context, for each           */
/* implementation. link_start() binds it on the receiving thread; link_send() is called from */
/* the producer (one producer per link for (c)); the handler gets the GVariant.              */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  /* Producer side. */
  alignas (64) atomic_size_t tail;
  size_t cached_head;
  guint64 wakes;
  /* Consumer side. */
  alignas (64) atomic_size_t head;
  /* Shared: 1 while the consumer has declared itself idle and wants an eventfd write. */
  alignas (64) atomic_int need_wake;
  int efd;
  alignas (64) GVariant *slots[RING_SIZE];
} Ring;

typedef struct _Link Link;

struct _Link
{
  Impl impl;
  DeliverFunc deliver;
  gpointer deliver_data;
  GMainContext *context;      /* the receiving context, strong, from link_start() */

  MpMessageChannel *channel;  /* mpport: port1 sends, port2 receives */
  MpMessagePort *tx;
  BenchSink *sink;            /* baselines: the signal emitter */
  GSource *source;            /* (b), (c) */
  Ring *ring;                 /* (c) */

  /* (b): guarded by mutex. */
  alignas (64) GMutex mutex;
  GQueue queue;
  gboolean armed;
  guint64 wakes;
};

typedef struct
{
  GSource parent;
  Link *link;
  gpointer fd_tag;
  gboolean rearmed;
} LinkSource;

typedef struct
{
  Link *link;
  GVariant *data;
} InvokeItem;

static void
on_port_message (MpMessagePort *port,
                 MpMessage     *message,
                 gpointer       user_data)
{
  Link *link = user_data;

  link->deliver (mp_message_get_data (message), link->deliver_data);
}

static void
on_sink_message (BenchSink *sink,
                 GVariant  *data,
                 gpointer   user_data)
{
  Link *link = user_data;

  link->deliver (data, link->deliver_data);
}

static void
emit_and_release (Link     *link,
                  GVariant *data)
{
  g_signal_emit (link->sink, sink_message_signal, 0, data);
  g_variant_unref (data);
}

/* (a) */
static gboolean
invoke_dispatch (gpointer user_data)
{
  InvokeItem *item = user_data;

  g_signal_emit (item->link->sink, sink_message_signal, 0, item->data);
  return G_SOURCE_REMOVE;
}

static void
invoke_item_free (gpointer user_data)
{
  InvokeItem *item = user_data;

  g_variant_unref (item->data);
  g_free (item);
}

/* (b): the DESIGN.md §3 strategy C. Reset the ready time, clear armed, steal the batch. */
static gboolean
queue_source_dispatch (GSource     *source,
                       GSourceFunc  callback,
                       gpointer     user_data)
{
  Link *link = ((LinkSource *) source)->link;
  GQueue batch;
  GList *node;

  g_source_set_ready_time (source, -1);

  g_mutex_lock (&link->mutex);
  link->armed = FALSE;
  batch = link->queue;
  g_queue_init (&link->queue);
  g_mutex_unlock (&link->mutex);

  while ((node = g_queue_pop_head_link (&batch)) != NULL)
    {
      GVariant *data = node->data;

      g_list_free_1 (node);
      emit_and_release (link, data);
    }

  return G_SOURCE_CONTINUE;
}

static GSourceFuncs queue_source_funcs = {
  .dispatch = queue_source_dispatch,
};

/* (c) */
static Ring *
ring_new (void)
{
  Ring *ring = g_aligned_alloc0 (1, sizeof (Ring), 64);

  atomic_init (&ring->tail, 0);
  atomic_init (&ring->head, 0);
  atomic_init (&ring->need_wake, 1);
  ring->efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ring->efd < 0)
    g_error ("eventfd: %s", g_strerror (errno));

  return ring;
}

static void
ring_free (Ring *ring)
{
  close (ring->efd);
  g_aligned_free (ring);
}

/* The wake-up handshake is a store-buffering (Dekker) pair: the producer stores tail then
 * loads need_wake, the consumer stores need_wake then loads tail; at least one of them must
 * see the other's store. Natively a seq_cst fence between store and load orders them.
 * ThreadSanitizer does not model fences (GCC warns with -Wtsan): there the four accesses
 * are seq_cst operations instead, which gives the same guarantee by their single total order. */
#ifdef BENCH_TSAN
#define ring_fence()          ((void) 0)
#define RING_SB_ORDER(order)  memory_order_seq_cst
#else
#define ring_fence()          atomic_thread_fence (memory_order_seq_cst)
#define RING_SB_ORDER(order)  (order)
#endif

static void
ring_push (Ring     *ring,
           GVariant *data)
{
  size_t tail = atomic_load_explicit (&ring->tail, memory_order_relaxed);

  while (tail - ring->cached_head >= RING_SIZE)
    {
      ring->cached_head = atomic_load_explicit (&ring->head, memory_order_acquire);
      if (tail - ring->cached_head >= RING_SIZE)
        sched_yield ();
    }
  ring->slots[tail & (RING_SIZE - 1)] = data;
  atomic_store_explicit (&ring->tail, tail + 1, RING_SB_ORDER (memory_order_release));

  /* Pairs with the consumer's store of need_wake then load of tail. */
  ring_fence ();
  if (atomic_load_explicit (&ring->need_wake, RING_SB_ORDER (memory_order_relaxed)) &&
      atomic_exchange_explicit (&ring->need_wake, 0, memory_order_acq_rel))
    {
      if (eventfd_write (ring->efd, 1) < 0)
        g_error ("eventfd_write: %s", g_strerror (errno));
      ring->wakes++;
    }
}

static gboolean
ring_source_dispatch (GSource     *source,
                      GSourceFunc  callback,
                      gpointer     user_data)
{
  LinkSource *self = (LinkSource *) source;
  Link *link = self->link;
  Ring *ring = link->ring;
  guint budget = BASELINE_BUDGET;
  size_t head = atomic_load_explicit (&ring->head, memory_order_relaxed);

  if (g_source_query_unix_fd (source, self->fd_tag) & G_IO_IN)
    {
      eventfd_t value;

      (void) eventfd_read (ring->efd, &value);
    }
  if (self->rearmed)
    {
      g_source_set_ready_time (source, -1);
      self->rearmed = FALSE;
    }

  for (;;)
    {
      size_t tail = atomic_load_explicit (&ring->tail, memory_order_acquire);

      while (head != tail && budget > 0)
        {
          GVariant *data = ring->slots[head & (RING_SIZE - 1)];

          head++;
          atomic_store_explicit (&ring->head, head, memory_order_release);
          budget--;
          emit_and_release (link, data);
        }

      if (budget == 0)
        {
          /* Yield to the main loop; come back at once. */
          g_source_set_ready_time (source, 0);
          self->rearmed = TRUE;
          break;
        }

      /* Empty: declare idle, then look again (a push after this look writes the eventfd). */
      atomic_store_explicit (&ring->need_wake, 1, memory_order_seq_cst);
      ring_fence ();
      if (atomic_load_explicit (&ring->tail, RING_SB_ORDER (memory_order_acquire)) == head)
        break;
      /* More came: stay awake. A producer that already took need_wake woke us once more. */
      atomic_store_explicit (&ring->need_wake, 0, memory_order_relaxed);
    }

  return G_SOURCE_CONTINUE;
}

static GSourceFuncs ring_source_funcs = {
  .dispatch = ring_source_dispatch,
};

static Link *
link_new (Impl impl)
{
  Link *link = g_aligned_alloc0 (1, sizeof (Link), 64);

  link->impl = impl;
  switch (impl)
    {
    case IMPL_MPPORT:
      link->channel = mp_message_channel_new ();
      link->tx = mp_message_channel_get_port1 (link->channel);
      break;
    case IMPL_QUEUE:
      g_mutex_init (&link->mutex);
      g_queue_init (&link->queue);
      G_GNUC_FALLTHROUGH;
    case IMPL_INVOKE:
    case IMPL_RING:
      link->sink = g_object_new (BENCH_TYPE_SINK, NULL);
      g_signal_connect (link->sink, "message", G_CALLBACK (on_sink_message), link);
      if (impl == IMPL_RING)
        link->ring = ring_new ();
      break;
    case N_IMPLS:
    default:
      g_assert_not_reached ();
    }

  return link;
}

/* On the receiving thread, with its Loop pushed. */
static void
link_start (Link        *link,
            DeliverFunc  deliver,
            gpointer     deliver_data)
{
  LinkSource *source;

  link->deliver = deliver;
  link->deliver_data = deliver_data;
  link->context = g_main_context_ref_thread_default ();

  switch (link->impl)
    {
    case IMPL_MPPORT:
      {
        MpMessagePort *rx = mp_message_channel_get_port2 (link->channel);

        g_signal_connect (rx, "message", G_CALLBACK (on_port_message), link);
        mp_message_port_start (rx);
      }
      break;
    case IMPL_QUEUE:
      source = (LinkSource *) g_source_new (&queue_source_funcs, sizeof (LinkSource));
      source->link = link;
      link->source = (GSource *) source;
      g_source_set_static_name (link->source, "mp-bench queue");
      g_source_attach (link->source, link->context);
      break;
    case IMPL_RING:
      source = (LinkSource *) g_source_new (&ring_source_funcs, sizeof (LinkSource));
      source->link = link;
      source->fd_tag = g_source_add_unix_fd (&source->parent, link->ring->efd, G_IO_IN);
      link->source = (GSource *) source;
      g_source_set_static_name (link->source, "mp-bench ring");
      g_source_attach (link->source, link->context);
      break;
    case IMPL_INVOKE:
      break;
    case N_IMPLS:
    default:
      g_assert_not_reached ();
    }
}

/* Sends @data, whose reference (floating or not) is taken. For mpport a floating reference
 * goes straight to post_message(), as an application would write it. */
static void
link_send (Link     *link,
           GVariant *data)
{
  switch (link->impl)
    {
    case IMPL_MPPORT:
      if (g_variant_is_floating (data))
        mp_message_port_post_message (link->tx, data, NULL, 0, NULL);
      else
        {
          mp_message_port_post_message (link->tx, data, NULL, 0, NULL);
          g_variant_unref (data);
        }
      break;
    case IMPL_INVOKE:
      {
        InvokeItem *item = g_new (InvokeItem, 1);

        item->link = link;
        item->data = g_variant_ref_sink (data);
        g_main_context_invoke_full (link->context, G_PRIORITY_DEFAULT, invoke_dispatch, item,
                                    invoke_item_free);
      }
      break;
    case IMPL_QUEUE:
      {
        gboolean wake;

        data = g_variant_ref_sink (data);
        g_mutex_lock (&link->mutex);
        g_queue_push_tail (&link->queue, data);
        wake = !link->armed;
        link->armed = TRUE;
        if (wake)
          link->wakes++;
        g_mutex_unlock (&link->mutex);
        /* The source outlives every producer: no lock needed around it here. */
        if (wake)
          g_source_set_ready_time (link->source, 0);
      }
      break;
    case IMPL_RING:
      ring_push (link->ring, g_variant_ref_sink (data));
      break;
    case N_IMPLS:
    default:
      g_assert_not_reached ();
    }
}

static guint64
link_wakes (Link *link)
{
  switch (link->impl)
    {
    case IMPL_QUEUE:
      return link->wakes;
    case IMPL_RING:
      return link->ring->wakes;
    case IMPL_MPPORT:
    case IMPL_INVOKE:
    case N_IMPLS:
    default:
      return 0;
    }
}

/* On the receiving thread, once every producer is done. */
static void
link_free (Link *link)
{
  switch (link->impl)
    {
    case IMPL_MPPORT:
      mp_message_port_close (link->tx);
      mp_message_port_close (mp_message_channel_get_port2 (link->channel));
      g_object_unref (link->channel);
      break;
    case IMPL_QUEUE:
    case IMPL_RING:
      g_source_destroy (link->source);
      g_source_unref (link->source);
      if (link->impl == IMPL_QUEUE)
        {
          g_queue_clear_full (&link->queue, (GDestroyNotify) g_variant_unref);
          g_mutex_clear (&link->mutex);
        }
      else
        ring_free (link->ring);
      g_object_unref (link->sink);
      break;
    case IMPL_INVOKE:
      g_object_unref (link->sink);
      break;
    case N_IMPLS:
    default:
      g_assert_not_reached ();
    }

  g_clear_pointer (&link->context, g_main_context_unref);
  g_aligned_free (link);
}

/* ------------------------------------------------------------------------------------------ */
/* tput, tput-str, fanin: producers -> links -> one receiving context (the main thread's)    */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  guint64 expected;
  guint64 received;
  gint64 end_ns;
  gboolean done;
  guint32 next[MAX_PRODUCERS];   /* FIFO check, per producer */
} Counter;

static void
counter_init (Counter *counter,
              guint64  expected)
{
  memset (counter, 0, sizeof (*counter));
  counter->expected = expected;
}

static void
counter_tick (Counter *counter)
{
  if (++counter->received == counter->expected)
    {
      counter->end_ns = now_ns ();
      counter->done = TRUE;
    }
}

/* int32 payloads carry (producer << 24) | sequence. */
static void
deliver_int (GVariant *data,
             gpointer  user_data)
{
  Counter *counter = user_data;
  guint32 value = (guint32) g_variant_get_int32 (data);
  guint producer = value >> 24;

  if (G_UNLIKELY (producer >= MAX_PRODUCERS || (value & 0xffffff) != (counter->next[producer] & 0xffffff)))
    g_error ("out of order: got %u:%u, expected %u", producer, value & 0xffffff,
             producer < MAX_PRODUCERS ? counter->next[producer] : 0);
  counter->next[producer]++;
  counter_tick (counter);
}

static void
deliver_string (GVariant *data,
                gpointer  user_data)
{
  gsize length;

  g_variant_get_string (data, &length);
  if (G_UNLIKELY (length != sizeof (payload64) - 1))
    g_error ("bad payload of %" G_GSIZE_FORMAT " bytes", length);
  counter_tick (user_data);
}

typedef struct
{
  Link *link;
  Latch *gate;
  guint id;
  guint64 count;
  gboolean string;
} Producer;

static gpointer
producer_thread (gpointer data)
{
  Producer *producer = data;

  latch_wait (producer->gate, 1);
  if (producer->string)
    for (guint64 i = 0; i < producer->count; i++)
      link_send (producer->link, g_variant_new_string (payload64));
  else
    for (guint64 i = 0; i < producer->count; i++)
      link_send (producer->link,
                 g_variant_new_int32 ((gint32) ((producer->id << 24) | (i & 0xffffff))));

  return NULL;
}

static void
run_producers (Impl     impl,
               guint    n_producers,
               guint64  total,
               gboolean string,
               Sample  *out)
{
  Loop *loop = loop_new ();
  Link *links[MAX_PRODUCERS];
  Producer producers[MAX_PRODUCERS];
  GThread *threads[MAX_PRODUCERS];
  Counter counter;
  Latch gate;
  gint64 start;

  g_assert (n_producers <= MAX_PRODUCERS);
  latch_init (&gate);
  counter_init (&counter, total);

  for (guint p = 0; p < n_producers; p++)
    {
      links[p] = link_new (impl);
      link_start (links[p], string ? deliver_string : deliver_int, &counter);
      producers[p] = (Producer) {
        .link = links[p],
        .gate = &gate,
        .id = p,
        .count = total / n_producers + (p < total % n_producers ? 1 : 0),
        .string = string,
      };
      threads[p] = g_thread_new ("mp-bench producer", producer_thread, &producers[p]);
    }

  /* The receiving thread owns its context throughout: invoke never runs inline. */
  g_main_context_acquire (loop->context);
  loop_flush (loop);
  loop_reset (loop);
  measure_begin ();
  start = now_ns ();
  latch_add (&gate);
  loop_run_until (loop, &counter.done);
  measure_end ();

  out->seconds = (counter.end_ns - start) / 1e9;
  out->messages = total;
  out->value = total / out->seconds;
  out->iterations = loop->iterations;
  out->sleeps = loop->sleeps;

  for (guint p = 0; p < n_producers; p++)
    {
      g_thread_join (threads[p]);
      out->wakes += link_wakes (links[p]);
      link_free (links[p]);
    }
  g_main_context_release (loop->context);
  loop_free (loop);
  latch_clear (&gate);
}

static void
scenario_tput (const Scenario *scenario,
               Impl            impl,
               Sample         *out)
{
  run_producers (impl, 1, scaled (scenario->count), FALSE, out);
}

static void
scenario_tput_str (const Scenario *scenario,
                   Impl            impl,
                   Sample         *out)
{
  run_producers (impl, 1, scaled (scenario->count), TRUE, out);
}

static void
scenario_fanin (const Scenario *scenario,
                Impl            impl,
                Sample         *out)
{
  run_producers (impl, N_FANIN_PRODUCERS, scaled (scenario->count), FALSE, out);
}

/* ------------------------------------------------------------------------------------------ */
/* pingpong: one message in flight between the main thread and an echo thread               */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  Link *ping;       /* main -> echo; received by the echo thread */
  Link *pong;       /* echo -> main */
  Latch ready;
  Latch sends_done; /* the main thread returned from its last send: the echo side may go */
  gboolean echo_done;
  guint64 ping_wakes;   /* the ping link's producer wake-ups, read before the echo side frees it */

  guint64 n, rounds;
  gint32 sent;
  gint64 t0;
  double *rtt;      /* ns per measured round trip */
  gboolean done;
} PingPong;

static void
deliver_echo (GVariant *data,
              gpointer  user_data)
{
  PingPong *pp = user_data;
  gint32 value = g_variant_get_int32 (data);

  if (value < 0)
    pp->echo_done = TRUE;
  else
    link_send (pp->pong, g_variant_new_int32 (value));
}

static void
deliver_pong (GVariant *data,
              gpointer  user_data)
{
  PingPong *pp = user_data;
  gint64 t = now_ns ();

  if (G_UNLIKELY (g_variant_get_int32 (data) != pp->sent))
    g_error ("pingpong: got %d, expected %d", g_variant_get_int32 (data), pp->sent);

  if (pp->rounds == PINGPONG_WARMUP)
    {
      /* Warm-up over: the measured region starts with the next ping. */
      loop_reset (thread_loop);
      measure_begin ();
    }
  else if (pp->rounds > PINGPONG_WARMUP)
    pp->rtt[pp->rounds - PINGPONG_WARMUP - 1] = (double) (t - pp->t0);

  if (++pp->rounds == pp->n + PINGPONG_WARMUP + 1)
    {
      measure_end ();
      pp->done = TRUE;
      return;
    }

  pp->sent = (pp->sent + 1) & 0x3fffffff;
  pp->t0 = now_ns ();
  link_send (pp->ping, g_variant_new_int32 (pp->sent));
}

static gpointer
echo_thread (gpointer data)
{
  PingPong *pp = data;
  Loop *loop = loop_new ();

  link_start (pp->ping, deliver_echo, pp);
  g_main_context_acquire (loop->context);
  latch_add (&pp->ready);
  loop_run_until (loop, &pp->echo_done);
  /* The stop message may be received before its sender returned from sending it. */
  latch_wait (&pp->sends_done, 1);
  pp->ping_wakes = link_wakes (pp->ping);
  link_free (pp->ping);
  g_main_context_release (loop->context);
  loop_free (loop);

  return NULL;
}

static void
scenario_pingpong (const Scenario *scenario,
                   Impl            impl,
                   Sample         *out)
{
  PingPong pp = { 0 };
  Loop *loop = loop_new ();
  GThread *thread;
  double sum = 0;

  pp.n = scaled (scenario->count);
  pp.rtt = g_new (double, pp.n);
  latch_init (&pp.ready);
  latch_init (&pp.sends_done);
  pp.ping = link_new (impl);
  pp.pong = link_new (impl);
  link_start (pp.pong, deliver_pong, &pp);
  thread = g_thread_new ("mp-bench echo", echo_thread, &pp);
  latch_wait (&pp.ready, 1);

  g_main_context_acquire (loop->context);
  pp.t0 = now_ns ();
  link_send (pp.ping, g_variant_new_int32 (0));
  loop_run_until (loop, &pp.done);

  out->iterations = loop->iterations;
  out->sleeps = loop->sleeps;

  link_send (pp.ping, g_variant_new_int32 (-1));
  latch_add (&pp.sends_done);
  g_thread_join (thread);
  out->wakes = pp.ping_wakes + link_wakes (pp.pong);
  link_free (pp.pong);
  g_main_context_release (loop->context);
  loop_free (loop);
  latch_clear (&pp.ready);
  latch_clear (&pp.sends_done);

  for (guint64 i = 0; i < pp.n; i++)
    sum += pp.rtt[i];
  qsort (pp.rtt, pp.n, sizeof (double), compare_double);
  out->messages = pp.n;
  out->seconds = sum / 1e9;
  out->value = sum / pp.n / 1000.0;
  out->p50 = pp.rtt[pp.n / 2] / 1000.0;
  out->p99 = pp.rtt[MIN (pp.n - 1, pp.n * 99 / 100)] / 1000.0;
  g_free (pp.rtt);
}

/* ------------------------------------------------------------------------------------------ */
/* bcast: one sender (the main thread), four receiver threads                                 */
/* mpport: one BroadcastChannel name. Baselines: the sender sends each post to four links.   */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  Impl impl;
  Link *link;            /* baselines */
  Counter counter;
  Latch *ready;
  Latch *sends_done;     /* the sender returned from its last post: links may go */
  guint64 iterations, sleeps, wakes;
} BcastReceiver;

static void
on_broadcast_message (MpBroadcastChannel *channel,
                      MpMessage          *message,
                      gpointer            user_data)
{
  deliver_int (mp_message_get_data (message), user_data);
}

static gpointer
bcast_receiver_thread (gpointer data)
{
  BcastReceiver *receiver = data;
  Loop *loop = loop_new ();
  MpBroadcastChannel *channel = NULL;

  if (receiver->impl == IMPL_MPPORT)
    {
      channel = mp_broadcast_channel_new (BCAST_NAME);
      g_signal_connect (channel, "message", G_CALLBACK (on_broadcast_message), &receiver->counter);
    }
  else
    link_start (receiver->link, deliver_int, &receiver->counter);

  g_main_context_acquire (loop->context);
  loop_flush (loop);
  loop_reset (loop);
  latch_add (receiver->ready);
  loop_run_until (loop, &receiver->counter.done);
  /* The last message may be received before its sender returned from sending it. */
  latch_wait (receiver->sends_done, 1);

  if (channel != NULL)
    {
      mp_broadcast_channel_close (channel);
      g_object_unref (channel);
    }
  else
    {
      receiver->wakes = link_wakes (receiver->link);
      link_free (receiver->link);
    }
  g_main_context_release (loop->context);
  receiver->iterations = loop->iterations;
  receiver->sleeps = loop->sleeps;
  loop_free (loop);

  return NULL;
}

static void
scenario_bcast (const Scenario *scenario,
                Impl            impl,
                Sample         *out)
{
  guint64 n = scaled (scenario->count);
  BcastReceiver receivers[N_BCAST_RECEIVERS];
  GThread *threads[N_BCAST_RECEIVERS];
  MpBroadcastChannel *sender = NULL;
  Latch ready, sends_done;
  gint64 start, end = 0;

  latch_init (&ready);
  latch_init (&sends_done);
  for (guint r = 0; r < N_BCAST_RECEIVERS; r++)
    {
      receivers[r] = (BcastReceiver) { .impl = impl, .ready = &ready, .sends_done = &sends_done };
      counter_init (&receivers[r].counter, n);
      if (impl != IMPL_MPPORT)
        receivers[r].link = link_new (impl);
      threads[r] = g_thread_new ("mp-bench receiver", bcast_receiver_thread, &receivers[r]);
    }
  latch_wait (&ready, N_BCAST_RECEIVERS);

  if (impl == IMPL_MPPORT)
    sender = mp_broadcast_channel_new (BCAST_NAME);

  measure_begin ();
  start = now_ns ();
  if (impl == IMPL_MPPORT)
    for (guint64 i = 0; i < n; i++)
      mp_broadcast_channel_post_message (sender, g_variant_new_int32 ((gint32) (i & 0xffffff)), NULL);
  else
    for (guint64 i = 0; i < n; i++)
      {
        GVariant *data = g_variant_ref_sink (g_variant_new_int32 ((gint32) (i & 0xffffff)));

        for (guint r = 0; r < N_BCAST_RECEIVERS; r++)
          link_send (receivers[r].link, g_variant_ref (data));
        g_variant_unref (data);
      }
  latch_add (&sends_done);

  for (guint r = 0; r < N_BCAST_RECEIVERS; r++)
    {
      g_thread_join (threads[r]);
      end = MAX (end, receivers[r].counter.end_ns);
      out->iterations += receivers[r].iterations;
      out->sleeps += receivers[r].sleeps;
      out->wakes += receivers[r].wakes;
    }
  measure_end ();

  if (sender != NULL)
    {
      mp_broadcast_channel_close (sender);
      g_object_unref (sender);
    }
  latch_clear (&ready);
  latch_clear (&sends_done);

  out->messages = n * N_BCAST_RECEIVERS;
  out->seconds = (end - start) / 1e9;
  out->value = out->messages / out->seconds;
}

/* ------------------------------------------------------------------------------------------ */
/* churn: new channel, post one, receive it, close both                                       */
/* ------------------------------------------------------------------------------------------ */

static void
scenario_churn (const Scenario *scenario,
                Impl            impl,
                Sample         *out)
{
  guint64 n = scaled (scenario->count);
  gint64 start;

  measure_begin ();
  start = now_ns ();
  for (guint64 i = 0; i < n; i++)
    {
      MpMessageChannel *channel = mp_message_channel_new ();
      MpMessagePort *p1 = mp_message_channel_get_port1 (channel);
      MpMessagePort *p2 = mp_message_channel_get_port2 (channel);
      MpMessage *message;

      mp_message_port_post_message (p1, g_variant_new_int32 ((gint32) i), NULL, 0, NULL);
      message = mp_message_port_receive (p2);
      if (G_UNLIKELY (message == NULL || g_variant_get_int32 (mp_message_get_data (message)) != (gint32) i))
        g_error ("churn: lost message %" G_GUINT64_FORMAT, i);
      mp_message_unref (message);
      mp_message_port_close (p1);
      mp_message_port_close (p2);
      g_object_unref (channel);
    }
  out->seconds = (now_ns () - start) / 1e9;
  measure_end ();

  out->messages = n;
  out->value = n / out->seconds;
}

/* ------------------------------------------------------------------------------------------ */
/* stress: the seed stress shape (tests/test-stress.c /mpport/stress/seed), timed             */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  Latch *gate;
  guint iterations;
  guint count;
} StressThread;

static guint
stress_hammer (guint iterations)
{
  guint count = 0;

  for (guint i = 0; i < iterations; i++)
    {
      MpMessageChannel *outer[STRESS_CHANNELS];
      MpMessageChannel *inner[STRESS_CHANNELS];

      for (guint j = 0; j < STRESS_CHANNELS; j++)
        {
          MpMessagePort *p1, *p2, *inner_p1;
          MpMessage *message;

          outer[j] = mp_message_channel_new ();
          inner[j] = mp_message_channel_new ();
          p1 = mp_message_channel_get_port1 (outer[j]);
          p2 = mp_message_channel_get_port2 (outer[j]);
          inner_p1 = mp_message_channel_get_port1 (inner[j]);

          if (!mp_message_port_post_message (p1, g_variant_new_int32 ((gint32) j), &inner_p1, 1, NULL) ||
              !mp_message_port_post_message (p1, g_variant_new_string ("plain"), NULL, 0, NULL))
            g_error ("stress: post failed");

          while ((message = mp_message_port_receive (p2)) != NULL)
            {
              GPtrArray *ports = mp_message_get_ports (message);

              for (guint k = 0; k < ports->len; k++)
                mp_message_port_close (g_ptr_array_index (ports, k));
              count++;
              mp_message_unref (message);
            }
        }

      for (guint j = 0; j < STRESS_CHANNELS; j++)
        {
          mp_message_port_close (mp_message_channel_get_port1 (outer[j]));
          mp_message_port_close (mp_message_channel_get_port2 (outer[j]));
          mp_message_port_close (mp_message_channel_get_port2 (inner[j]));
          g_object_unref (outer[j]);
          g_object_unref (inner[j]);
        }
    }

  return count;
}

static gpointer
stress_thread (gpointer data)
{
  StressThread *self = data;

  latch_wait (self->gate, 1);
  self->count = stress_hammer (self->iterations);

  return NULL;
}

static void
scenario_stress (const Scenario *scenario,
                 Impl            impl,
                 Sample         *out)
{
  guint iterations = (guint) scaled (STRESS_ITERATIONS);
  guint expected = iterations * STRESS_CHANNELS * 2;
  StressThread threads[STRESS_THREADS];
  GThread *handles[STRESS_THREADS];
  Latch gate;
  gint64 start;
  guint main_count;

  latch_init (&gate);
  for (guint t = 0; t < STRESS_THREADS; t++)
    {
      threads[t] = (StressThread) { .gate = &gate, .iterations = iterations };
      handles[t] = g_thread_new ("mp-bench stress", stress_thread, &threads[t]);
    }

  measure_begin ();
  start = now_ns ();
  latch_add (&gate);
  main_count = stress_hammer (iterations);
  for (guint t = 0; t < STRESS_THREADS; t++)
    {
      g_thread_join (handles[t]);
      if (threads[t].count != expected)
        g_error ("stress: thread %u counted %u, expected %u", t, threads[t].count, expected);
    }
  out->seconds = (now_ns () - start) / 1e9;
  measure_end ();
  if (main_count != expected)
    g_error ("stress: main thread counted %u, expected %u", main_count, expected);
  latch_clear (&gate);

  out->messages = (guint64) expected * (STRESS_THREADS + 1);
  out->value = out->seconds * 1000.0;
}

/* ------------------------------------------------------------------------------------------ */
/* idle: N idle channels in a fresh process; bytes per channel from the RSS growth           */
/* ------------------------------------------------------------------------------------------ */

static gint64
rss_bytes (void)
{
  g_autofree char *contents = NULL;
  long long size = 0, resident = 0;

  if (!g_file_get_contents ("/proc/self/statm", &contents, NULL, NULL) ||
      sscanf (contents, "%lld %lld", &size, &resident) != 2)
    g_error ("cannot read /proc/self/statm");

  return (gint64) resident * sysconf (_SC_PAGESIZE);
}

static int
child_idle (gint64 n)
{
  MpMessageChannel **channels = g_new (MpMessageChannel *, n);
  gint64 before, after, start;
  double seconds;

  /* Touch the array, and register the types, before the first reading. */
  memset (channels, 0, n * sizeof (*channels));
  for (guint i = 0; i < 1000; i++)
    g_object_unref (mp_message_channel_new ());

  before = rss_bytes ();
  start = now_ns ();
  for (gint64 i = 0; i < n; i++)
    channels[i] = mp_message_channel_new ();
  seconds = (now_ns () - start) / 1e9;
  after = rss_bytes ();

  printf ("IDLE\t%.2f\t%.6f\n", (double) (after - before) / n, seconds);
  fflush (stdout);
  /* Exit without releasing: the process is gone anyway. */
  _exit (EXIT_SUCCESS);
}

char *self_exe;

static void
scenario_idle (const Scenario *scenario,
               Impl            impl,
               Sample         *out)
{
  g_autofree char *count = g_strdup_printf ("%" G_GUINT64_FORMAT, scaled (scenario->count));
  const char *argv[] = { self_exe, "--child-idle", count, NULL };
  g_autofree char *output = NULL;
  g_autoptr(GError) error = NULL;
  int status;
  double bytes = 0, seconds = 0;

  if (!g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &output, NULL,
                     &status, &error) ||
      !g_spawn_check_wait_status (status, &error))
    g_error ("idle: %s", error->message);
  if (sscanf (output, "IDLE\t%lf\t%lf", &bytes, &seconds) != 2)
    g_error ("idle: unexpected output: %s", output);

  out->value = bytes;
  out->seconds = seconds;
  out->messages = scaled (scenario->count);
}

/* ------------------------------------------------------------------------------------------ */
/* bus: one sender process, two receiver processes on a private dbus-daemon                  */
/*                                                                                            */
/* The sample's process starts a dbus-daemon of its own (a session-bus configuration with    */
/* the limits of Debian's session.conf, written to a temporary directory that also holds the */
/* socket), connects to it, and spawns the two receivers: this program again, with the       */
/* hidden --child-bus-receiver option. Each receiver says READY on its stdout once it is     */
/* subscribed, and when it has the last post of the first phase:                              */
/*   throughput  the sender posts N int32 (0 .. N-1) as fast as it can; each receiver checks  */
/*               the order and reports when it had the last one (CLOCK_MONOTONIC, which all  */
/*               processes share): deliveries/s = 2N / (first post .. later of the two).     */
/*   round trip  the sender posts N, N+1 ... one at a time; the first receiver answers each   */
/*               with its complement (~v < 0) on the same name, and the sender posts the next */
/*               from its handler (the second receiver gets pings and answers, and counts    */
/*               only the pings): p50 and p99 of the round trips after a warm-up.            */
/* mpport: a bus channel (mp_broadcast_channel_new_for_bus) in every process; its posts are   */
/* carried in bursts (mpport/mp-bus.c). (d) signal: one g_dbus_connection_emit_signal() per  */
/* post, the same GVariant in a "(v)" body; receivers g_dbus_connection_signal_subscribe(),   */
/* whose callback hands the GVariant to a BenchSink signal, as the other baselines do. The   */
/* (d) sender subscribes only for the round trip (it needs the answers then), while mpport's */
/* sender is a bus channel throughout, so in the throughput phase the bus also sends mpport's */
/* posts back to their sender, which drops them: a cost only mpport's column pays.            */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  Impl impl;
  GDBusConnection *connection;
  MpBroadcastChannel *channel;   /* mpport: the bus channel */
  guint subscription;            /* (d): 0 while not subscribed */
  BenchReceiver rx;
} BusEnd;

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

/* Connects to the bus at @address; mpport also makes its bus channel (subscribed once this
 * returns). On the thread whose thread-default context receives. */
static void
bus_end_open (BusEnd      *end,
              Impl         impl,
              const char  *address,
              DeliverFunc  deliver,
              gpointer     deliver_data)
{
  g_autoptr(GError) error = NULL;

  *end = (BusEnd) { .impl = impl, .rx = { .deliver = deliver, .deliver_data = deliver_data } };
  end->connection =
    g_dbus_connection_new_for_address_sync (address,
                                            G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                            G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                                            NULL, NULL, &error);
  if (end->connection == NULL)
    g_error ("bus: cannot connect to %s: %s", address, error->message);

  if (impl == IMPL_MPPORT)
    {
      end->channel = mp_broadcast_channel_new_for_bus (BUS_CHANNEL_NAME, end->connection, NULL, &error);
      if (end->channel == NULL)
        g_error ("bus: mp_broadcast_channel_new_for_bus: %s", error->message);
      g_signal_connect (end->channel, "message", G_CALLBACK (bench_receiver_on_mp_message),
                        &end->rx);
    }
  else
    {
      end->rx.sink = g_object_new (BENCH_TYPE_SINK, NULL);
      g_signal_connect (end->rx.sink, "message", G_CALLBACK (bench_receiver_on_sink_message),
                        &end->rx);
    }
}

/* (d): subscribes, and returns once the bus has the match rule (GDBus sends AddMatch
 * without waiting; the bus answers a later call only after it). mpport: nothing to do, its
 * channel is subscribed from the start. */
static void
bus_end_subscribe (BusEnd *end)
{
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GError) error = NULL;

  if (end->impl == IMPL_MPPORT || end->subscription != 0)
    return;

  end->subscription =
    g_dbus_connection_signal_subscribe (end->connection, NULL, BUS_SIGNAL_INTERFACE,
                                        BUS_SIGNAL_MEMBER, BUS_SIGNAL_PATH, NULL,
                                        G_DBUS_SIGNAL_FLAGS_NONE, bench_receiver_on_signal, &end->rx, NULL);
  reply = g_dbus_connection_call_sync (end->connection, "org.freedesktop.DBus",
                                       "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId",
                                       NULL, G_VARIANT_TYPE ("(s)"), G_DBUS_CALL_FLAGS_NONE, -1,
                                       NULL, &error);
  if (reply == NULL)
    g_error ("bus: GetId: %s", error->message);
}

/* Posts @data (floating, consumed). */
static void
bus_end_post (BusEnd   *end,
              GVariant *data)
{
  g_autoptr(GError) error = NULL;
  gboolean ok;

  if (end->impl == IMPL_MPPORT)
    ok = mp_broadcast_channel_post_message (end->channel, data, &error);
  else
    ok = g_dbus_connection_emit_signal (end->connection, NULL, BUS_SIGNAL_PATH,
                                        BUS_SIGNAL_INTERFACE, BUS_SIGNAL_MEMBER,
                                        g_variant_new ("(v)", data), &error);
  if (!ok)
    g_error ("bus: post: %s", error->message);
}

/* Writes out what was posted, then disconnects. */
static void
bus_end_close (BusEnd *end)
{
  if (end->channel != NULL)
    {
      /* Closing a bus channel that posted waits until its posts are written. */
      mp_broadcast_channel_close (end->channel);
      g_clear_object (&end->channel);
    }
  if (end->subscription != 0)
    g_dbus_connection_signal_unsubscribe (end->connection, end->subscription);
  g_clear_object (&end->rx.sink);
  g_dbus_connection_flush_sync (end->connection, NULL, NULL);
  g_dbus_connection_close_sync (end->connection, NULL, NULL);
  g_clear_object (&end->connection);
}

static gboolean
bus_timed_out (gpointer data)
{
  g_error ("bus: %s: timed out after %d s", (const char *) data, TIMEOUT_SECONDS);
  return G_SOURCE_REMOVE;
}

static GSource *
bus_timeout_attach (Loop       *loop,
                    const char *who)
{
  GSource *source = g_timeout_source_new_seconds (TIMEOUT_SECONDS);

  g_source_set_callback (source, bus_timed_out, (gpointer) who, NULL);
  g_source_set_static_name (source, "mp-bench bus timeout");
  g_source_attach (source, loop->context);

  return source;
}

/* A helper process (dbus-daemon, a receiver) dies with the sample's process, however that
 * ends; its main thread, which spawns them, lives as long as the process. */
void
die_with_parent (gpointer data)
{
  prctl (PR_SET_PDEATHSIG, SIGTERM);
}

/* ---- The receivers (child processes) ---- */

typedef struct
{
  BusEnd end;
  Loop *loop;
  gboolean echo;      /* answer the pings */
  guint64 n;          /* posts of the throughput phase */
  guint64 total;      /* and the pings after them */
  guint64 next;       /* the value expected next from the sender */
  gboolean done;
} BusReceiver;

static void
bus_receiver_deliver (GVariant *data,
                      gpointer  user_data)
{
  BusReceiver *r = user_data;
  gint32 value = g_variant_get_int32 (data);

  /* An answer of the echoing receiver (the other one gets them too, and so does the (d)
   * echoing receiver, subscribed to its own signals): not a post of the sender. */
  if (value < 0)
    return;
  if (G_UNLIKELY ((guint64) value != r->next))
    g_error ("bus: receiver got %d, expected %" G_GUINT64_FORMAT, value, r->next);

  if (++r->next == r->n)
    {
      gint64 end_ns = now_ns ();

      measure_end ();
      printf ("TPUT\t%" G_GINT64_FORMAT "\t%" G_GUINT64_FORMAT "\t%" G_GUINT64_FORMAT "\t%"
              G_GUINT64_FORMAT "\n", end_ns, r->loop->iterations, r->loop->sleeps, measured_allocs);
      fflush (stdout);
    }
  else if (r->next > r->n && r->echo)
    bus_end_post (&r->end, g_variant_new_int32 (~value));

  if (r->next == r->total)
    r->done = TRUE;
}

/* --child-bus-receiver ADDRESS: one receiver, for the implementation given by --impls. */
static int
child_bus_receiver (const char *address,
                    Impl        impl,
                    guint64     n,
                    guint64     pings,
                    gboolean    echo)
{
  BusReceiver r = { .echo = echo, .n = n, .total = n + pings };
  GSource *timeout;

  r.loop = loop_new ();
  bus_end_open (&r.end, impl, address, bus_receiver_deliver, &r);
  bus_end_subscribe (&r.end);
  timeout = bus_timeout_attach (r.loop, "receiver");

  g_main_context_acquire (r.loop->context);
  loop_flush (r.loop);
  loop_reset (r.loop);
  measure_begin ();
  printf ("READY\n");
  fflush (stdout);
  loop_run_until (r.loop, &r.done);

  g_source_destroy (timeout);
  g_source_unref (timeout);
  bus_end_close (&r.end);
  g_main_context_release (r.loop->context);
  loop_free (r.loop);

  return EXIT_SUCCESS;
}

/* ---- The sender (the sample's process) ---- */

typedef struct
{
  GSubprocess *process;
  char *dir;        /* temporary: the configuration and the socket */
  char *address;
} BusDaemon;

static void
bus_daemon_start (BusDaemon *daemon)
{
  g_autoptr(GSubprocessLauncher) launcher = NULL;
  g_autoptr(GDataInputStream) out = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *config = NULL;
  g_autofree char *config_path = NULL;
  g_autofree char *log_path = NULL;
  g_autofree char *line = NULL;

  daemon->dir = g_dir_make_tmp ("mp-bench-bus-XXXXXX", &error);
  if (daemon->dir == NULL)
    g_error ("bus: %s", error->message);
  config_path = g_build_filename (daemon->dir, "bus.conf", NULL);
  log_path = g_build_filename (daemon->dir, "dbus-daemon.log", NULL);
  config = g_markup_printf_escaped (
    "<busconfig>\n"
    "  <type>session</type>\n"
    "  <listen>unix:dir=%s</listen>\n"
    "  <auth>EXTERNAL</auth>\n"
    "  <policy context=\"default\">\n"
    "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
    "    <allow eavesdrop=\"true\"/>\n"
    "    <allow own=\"*\"/>\n"
    "  </policy>\n"
    "  <limit name=\"max_incoming_bytes\">1000000000</limit>\n"
    "  <limit name=\"max_outgoing_bytes\">1000000000</limit>\n"
    "  <limit name=\"max_message_size\">1000000000</limit>\n"
    "  <limit name=\"max_match_rules_per_connection\">50000</limit>\n"
    "  <limit name=\"max_replies_per_connection\">50000</limit>\n"
    "</busconfig>\n", daemon->dir);
  if (!g_file_set_contents (config_path, config, -1, &error))
    g_error ("bus: %s", error->message);

  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE);
  g_subprocess_launcher_set_child_setup (launcher, die_with_parent, NULL, NULL);
  /* Its warnings (as root: "Failed to set fd limit") are noise in the table; shown if it
   * fails to start. */
  g_subprocess_launcher_set_stderr_file_path (launcher, log_path);
  daemon->process = g_subprocess_launcher_spawn (launcher, &error, "dbus-daemon", "--nofork",
                                                 "--nopidfile", "--print-address",
                                                 "--config-file", config_path, NULL);
  if (daemon->process == NULL)
    g_error ("bus: cannot start dbus-daemon (scripts/bench installs it): %s", error->message);

  out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (daemon->process));
  line = g_data_input_stream_read_line (out, NULL, NULL, &error);
  if (line == NULL || *g_strstrip (line) == '\0')
    {
      g_autofree char *log = NULL;

      g_file_get_contents (log_path, &log, NULL, NULL);
      g_error ("bus: dbus-daemon printed no address%s%s\n%s", error != NULL ? ": " : "",
               error != NULL ? error->message : "", log != NULL ? log : "");
    }
  daemon->address = g_steal_pointer (&line);
}

static void
bus_daemon_stop (BusDaemon *daemon)
{
  g_autoptr(GDir) dir = NULL;
  const char *name;

  g_subprocess_send_signal (daemon->process, SIGTERM);
  g_subprocess_wait (daemon->process, NULL, NULL);
  g_clear_object (&daemon->process);

  dir = g_dir_open (daemon->dir, 0, NULL);
  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *path = g_build_filename (daemon->dir, name, NULL);

      g_unlink (path);
    }
  g_rmdir (daemon->dir);
  g_clear_pointer (&daemon->dir, g_free);
  g_clear_pointer (&daemon->address, g_free);
}

typedef struct
{
  GSubprocess *process;
  GDataInputStream *out;
} BusPeer;

static void
bus_peer_spawn (BusPeer    *peer,
                const char *address,
                Impl        impl,
                guint64     n,
                guint64     pings,
                gboolean    echo)
{
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE);
  g_autoptr(GError) error = NULL;
  g_autofree char *posts = g_strdup_printf ("%" G_GUINT64_FORMAT, n);
  g_autofree char *n_pings = g_strdup_printf ("%" G_GUINT64_FORMAT, pings);
  const char *argv[] = { self_exe, "--child-bus-receiver", address, "--child-bus-posts", posts,
                         "--child-bus-pings", n_pings, "--impls", impl_names[impl],
                         echo ? "--child-bus-echo" : NULL, NULL };

  g_subprocess_launcher_set_child_setup (launcher, die_with_parent, NULL, NULL);
  peer->process = g_subprocess_launcher_spawnv (launcher, argv, &error);
  if (peer->process == NULL)
    g_error ("bus: cannot start a receiver: %s", error->message);
  peer->out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (peer->process));
}

/* The next line of @peer, split at tabs; it must start with @what. */
static char **
bus_peer_expect (BusPeer    *peer,
                 const char *what)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *line = g_data_input_stream_read_line (peer->out, NULL, NULL, &error);
  char **fields;

  if (line == NULL)
    g_error ("bus: a receiver ended before saying %s%s%s", what, error != NULL ? ": " : "",
             error != NULL ? error->message : "");
  fields = g_strsplit (line, "\t", -1);
  if (!g_str_equal (fields[0], what))
    g_error ("bus: a receiver said '%s', expected %s", line, what);

  return fields;
}

static void
bus_peer_finish (BusPeer *peer)
{
  g_autoptr(GError) error = NULL;

  if (!g_subprocess_wait_check (peer->process, NULL, &error))
    g_error ("bus: a receiver failed: %s", error->message);
  g_clear_object (&peer->out);
  g_clear_object (&peer->process);
}

typedef struct
{
  guint64 n;          /* measured round trips, after BUS_RTT_WARMUP */
  guint64 rounds;     /* answers received */
  gint32 sent;
  gint64 t0;
  double *rtt;        /* ns per measured round trip */
  BusEnd *end;
  gboolean done;
} BusRtt;

static void
bus_sender_deliver (GVariant *data,
                    gpointer  user_data)
{
  BusRtt *rtt = user_data;
  gint64 t = now_ns ();
  gint32 value = g_variant_get_int32 (data);

  /* (d): its own ping, sent back by the bus (mpport drops those before any handler). */
  if (value >= 0)
    return;
  if (G_UNLIKELY (value != ~rtt->sent))
    g_error ("bus: answer %d, expected %d", value, ~rtt->sent);

  if (++rtt->rounds > BUS_RTT_WARMUP)
    rtt->rtt[rtt->rounds - BUS_RTT_WARMUP - 1] = (double) (t - rtt->t0);
  if (rtt->rounds == BUS_RTT_WARMUP + rtt->n)
    {
      rtt->done = TRUE;
      return;
    }

  rtt->sent++;
  rtt->t0 = now_ns ();
  bus_end_post (rtt->end, g_variant_new_int32 (rtt->sent));
}

static void
scenario_bus (const Scenario *scenario,
              Impl            impl,
              Sample         *out)
{
  guint64 n = scaled (scenario->count);
  BusRtt rtt = { .n = MAX (n / BUS_RTT_PER_POSTS, 1) };
  guint64 pings = BUS_RTT_WARMUP + rtt.n;
  BusDaemon daemon = { 0 };
  BusPeer peers[N_BUS_RECEIVERS];
  guint64 peer_allocs = 0;
  BusEnd sender;
  Loop *loop;
  GSource *timeout;
  gint64 start, end = 0;

  if (n + pings > G_MAXINT32)
    g_error ("bus: --scale too large for int32 sequence numbers");

  /* The receivers time out on their own, but a blocking read or wait here would not: past
   * this, SIGALRM ends the process, and the daemon and the receivers with it. */
  alarm (3 * TIMEOUT_SECONDS);
  bus_daemon_start (&daemon);
  for (guint r = 0; r < N_BUS_RECEIVERS; r++)
    bus_peer_spawn (&peers[r], daemon.address, impl, n, pings, r == 0);
  for (guint r = 0; r < N_BUS_RECEIVERS; r++)
    g_strfreev (bus_peer_expect (&peers[r], "READY"));

  loop = loop_new ();
  rtt.end = &sender;
  rtt.rtt = g_new (double, rtt.n);
  bus_end_open (&sender, impl, daemon.address, bus_sender_deliver, &rtt);
  g_main_context_acquire (loop->context);
  loop_flush (loop);

  /* Throughput: the sender's main loop is not iterated (nothing of this phase reaches a
   * handler of the sender); it waits for the receivers' reports. */
  measure_begin ();
  start = now_ns ();
  for (guint64 i = 0; i < n; i++)
    bus_end_post (&sender, g_variant_new_int32 ((gint32) i));
  for (guint r = 0; r < N_BUS_RECEIVERS; r++)
    {
      g_auto(GStrv) f = bus_peer_expect (&peers[r], "TPUT");

      if (g_strv_length (f) < 5)
        g_error ("bus: a short TPUT line");
      end = MAX (end, g_ascii_strtoll (f[1], NULL, 10));
      out->iterations += g_ascii_strtoull (f[2], NULL, 10);
      out->sleeps += g_ascii_strtoull (f[3], NULL, 10);
      peer_allocs += g_ascii_strtoull (f[4], NULL, 10);
    }
  measure_end ();
  measured_allocs += peer_allocs;

  /* Round trip. */
  bus_end_subscribe (&sender);
  timeout = bus_timeout_attach (loop, "sender");
  loop_flush (loop);
  rtt.t0 = now_ns ();
  rtt.sent = (gint32) n;
  bus_end_post (&sender, g_variant_new_int32 (rtt.sent));
  loop_run_until (loop, &rtt.done);
  g_source_destroy (timeout);
  g_source_unref (timeout);

  for (guint r = 0; r < N_BUS_RECEIVERS; r++)
    bus_peer_finish (&peers[r]);
  bus_end_close (&sender);
  g_main_context_release (loop->context);
  loop_free (loop);
  bus_daemon_stop (&daemon);
  alarm (0);

  qsort (rtt.rtt, rtt.n, sizeof (double), compare_double);
  out->p50 = rtt.rtt[rtt.n / 2] / 1000.0;
  out->p99 = rtt.rtt[MIN (rtt.n - 1, rtt.n * 99 / 100)] / 1000.0;
  g_free (rtt.rtt);

  out->messages = n * N_BUS_RECEIVERS;
  out->seconds = (end - start) / 1e9;
  out->value = out->messages / out->seconds;
}

/* ------------------------------------------------------------------------------------------ */
/* The scenario table                                                                         */
/* ------------------------------------------------------------------------------------------ */

static const Scenario scenarios[] = {
  { "tput", "msg/s", TRUE, THREAD_IMPLS | PEER_IMPLS, scenario_tput, 1000000,
    "1 producer thread -> 1 started port on the main thread's context, int32 messages" },
  { "tput-str", "msg/s", TRUE, THREAD_IMPLS | PEER_IMPLS, scenario_tput_str, 1000000,
    "as tput, with a 64-byte string per message" },
  { "fanin", "msg/s", TRUE, THREAD_IMPLS | PEER_IMPLS, scenario_fanin, 1000000,
    "4 producer threads -> 4 ports received on one context (total messages)" },
  { "pingpong", "us/rtt", FALSE, THREAD_IMPLS | PEER_IMPLS, scenario_pingpong, 100000,
    "one message in flight between two threads; round trips (mean, p50, p99)" },
  { "bcast", "deliv/s", TRUE, THREAD_IMPLS | PEER_IMPLS, scenario_bcast, 100000,
    "1 sender, 4 receiver threads (mpport: one BroadcastChannel name); posts" },
  { "churn", "ops/s", TRUE, MPPORT_ONLY | PEER_IMPLS, scenario_churn, 100000,
    "new channel, post one, receive() it, close both" },
  { "stress", "ms", FALSE, MPPORT_ONLY, scenario_stress, 1,
    "seed stress shape: 6 threads + main x 400 iterations x 8 channels with transfer" },
  { "idle", "B/chan", FALSE, MPPORT_ONLY, scenario_idle, 1000000,
    "idle channels held; RSS growth per channel (fresh process)" },
  { "bus", "deliv/s", TRUE, BUS_IMPLS, scenario_bus, 100000,
    "1 sender, 2 receiver processes, private dbus-daemon: posts, then posts/20 round trips" },
  { "xproc-tput", "msg/s", TRUE, XPROC_IMPLS, xproc_scenario_tput, 1000000,
    "child process -> a port in this one (socketpair), int32 messages, from the child's first post" },
  { "xproc-pingpong", "us/rtt", FALSE, XPROC_IMPLS, xproc_scenario_pingpong, 100000,
    "one message in flight between this process and a child; round trips (mean, p50, p99)" },
};

#define N_SCENARIOS G_N_ELEMENTS (scenarios)

/* Targets, from the issue; reported, never asserted. */
typedef enum { TARGET_NONE, TARGET_MIN_RATIO, TARGET_MAX_RATIO, TARGET_MIN_VALUE, TARGET_MAX_VALUE } TargetKind;

typedef struct
{
  const char *scenario;
  const char *metric;    /* "value", "p50", "p99" */
  TargetKind kind;
  Impl against;          /* for ratios */
  double bound;
  const char *text;
} Target;

static const Target targets[] = {
  { "tput", "value", TARGET_MIN_RATIO, IMPL_RING, 0.8, ">= 0.8x (c) ring" },
  { "tput", "value", TARGET_MIN_RATIO, IMPL_INVOKE, 9.0, ">= 9x (a) invoke" },
  { "tput-str", "value", TARGET_MIN_RATIO, IMPL_RING, 0.8, ">= 0.8x (c) ring" },
  { "tput-str", "value", TARGET_MIN_RATIO, IMPL_INVOKE, 9.0, ">= 9x (a) invoke" },
  { "fanin", "value", TARGET_MIN_RATIO, IMPL_RING, 0.8, ">= 0.8x (c) ring" },
  { "fanin", "value", TARGET_MIN_RATIO, IMPL_INVOKE, 9.0, ">= 9x (a) invoke" },
  { "pingpong", "value", TARGET_MAX_RATIO, IMPL_RING, 1.1, "mean <= 1.1x (c) ring" },
  { "churn", "value", TARGET_MIN_VALUE, IMPL_MPPORT, 960000, ">= 960 k ops/s (3x Bun's 320 k)" },
  /* Issue 13, against the peers; shown only when they ran. */
  { "tput", "value", TARGET_MIN_RATIO, IMPL_NODE, 1.5, ">= 1.5x Node" },
  { "tput", "value", TARGET_MIN_RATIO, IMPL_BUN, 1.5, ">= 1.5x Bun" },
  { "tput-str", "value", TARGET_MIN_RATIO, IMPL_NODE, 1.5, ">= 1.5x Node" },
  { "tput-str", "value", TARGET_MIN_RATIO, IMPL_BUN, 1.5, ">= 1.5x Bun" },
  { "fanin", "value", TARGET_MIN_RATIO, IMPL_NODE, 1.5, ">= 1.5x Node" },
  { "fanin", "value", TARGET_MIN_RATIO, IMPL_BUN, 1.5, ">= 1.5x Bun" },
  { "bcast", "value", TARGET_MIN_RATIO, IMPL_NODE, 2.0, ">= 2x Node" },
  { "bcast", "value", TARGET_MIN_RATIO, IMPL_BUN, 2.0, ">= 2x Bun" },
  { "churn", "value", TARGET_MIN_RATIO, IMPL_BUN, 4.0, ">= 4x Bun" },
  { "idle", "value", TARGET_MAX_VALUE, IMPL_MPPORT, 512, "<= 512 B/channel" },
  { "bus", "value", TARGET_MIN_RATIO, IMPL_SIGNAL, 3.0, ">= 3x (d) signal" },
  { "bus", "p50", TARGET_MAX_RATIO, IMPL_SIGNAL, 1.1, "p50 <= 1.1x (d) signal" },
  { "xproc-tput", "value", TARGET_MIN_RATIO, IMPL_SOCKET, 0.5, ">= 0.5x (e) socket" },
  { "xproc-tput", "value", TARGET_MIN_RATIO, IMPL_SIGNAL, 10.0, ">= 10x (d) signal" },
  { "xproc-pingpong", "value", TARGET_MAX_RATIO, IMPL_SOCKET, 1.2, "mean <= 1.2x (e) socket" },
};

/* ------------------------------------------------------------------------------------------ */
/* Results                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  const Scenario *scenario;
  Impl impl;
  GArray *samples;   /* Sample */
} Series;

static GPtrArray *all_series;   /* Series */

static Series *
series_get (const Scenario *scenario,
            Impl            impl)
{
  Series *series;

  for (guint i = 0; i < all_series->len; i++)
    {
      series = g_ptr_array_index (all_series, i);
      if (series->scenario == scenario && series->impl == impl)
        return series;
    }

  series = g_new0 (Series, 1);
  series->scenario = scenario;
  series->impl = impl;
  series->samples = g_array_new (FALSE, TRUE, sizeof (Sample));
  g_ptr_array_add (all_series, series);

  return series;
}

static Series *
series_find (const char *scenario_name,
             Impl        impl)
{
  for (guint i = 0; i < all_series->len; i++)
    {
      Series *series = g_ptr_array_index (all_series, i);

      if (series->impl == impl && g_str_equal (series->scenario->name, scenario_name))
        return series;
    }

  return NULL;
}

static double
median_of (double *values,
           guint   n)
{
  if (n == 0)
    return NAN;
  qsort (values, n, sizeof (double), compare_double);
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

/* Median of one field of the samples: a double (is_double) or a guint64 at @offset. */
static double
series_median (const Series *series,
               gsize         offset,
               gboolean      is_double)
{
  guint n = series != NULL ? series->samples->len : 0;
  g_autofree double *values = g_new (double, MAX (n, 1));

  for (guint i = 0; i < n; i++)
    {
      const char *sample = (const char *) &g_array_index (series->samples, Sample, i);

      values[i] = is_double ? *(const double *) (sample + offset)
                            : (double) *(const guint64 *) (sample + offset);
    }

  return median_of (values, n);
}

#define MEDIAN_D(series, field) series_median ((series), G_STRUCT_OFFSET (Sample, field), TRUE)
#define MEDIAN_U(series, field) series_median ((series), G_STRUCT_OFFSET (Sample, field), FALSE)

static double
median_metric (const Series *series,
               const char   *metric)
{
  if (g_str_equal (metric, "p50"))
    return MEDIAN_D (series, p50);
  if (g_str_equal (metric, "p99"))
    return MEDIAN_D (series, p99);
  return MEDIAN_D (series, value);
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void
format_value (char       *buf,
              gsize       size,
              double      value,
              const char *unit)
{
  if (isnan (value))
    g_strlcpy (buf, "-", size);
  else if (value >= 1e6)
    g_snprintf (buf, size, "%.3f M", value / 1e6);
  else if (value >= 1e4)
    g_snprintf (buf, size, "%.1f k", value / 1e3);
  else if (value >= 100)
    g_snprintf (buf, size, "%.0f", value);
  else
    g_snprintf (buf, size, "%.2f", value);
}

static gboolean
target_met (const Target *target,
            double       *measured)
{
  Series *mine = series_find (target->scenario, IMPL_MPPORT);
  double value = median_metric (mine, target->metric);

  switch (target->kind)
    {
    case TARGET_MIN_RATIO:
    case TARGET_MAX_RATIO:
      {
        double other = median_metric (series_find (target->scenario, target->against), target->metric);

        *measured = value / other;
        return target->kind == TARGET_MIN_RATIO ? *measured >= target->bound : *measured <= target->bound;
      }
    case TARGET_MIN_VALUE:
      *measured = value;
      return value >= target->bound;
    case TARGET_MAX_VALUE:
      *measured = value;
      return value <= target->bound;
    case TARGET_NONE:
    default:
      *measured = NAN;
      return FALSE;
    }
}

/* The implementations of @mask with at least one series in this invocation, in table order:
 * the tables have a column for each of them only. Returns how many. */
static guint
shown_impls (Impl  shown[N_IMPLS],
             guint mask)
{
  guint n = 0;

  for (Impl impl = 0; impl < N_IMPLS; impl++)
    for (guint i = 0; (mask & (1u << impl)) && i < all_series->len; i++)
      if (((Series *) g_ptr_array_index (all_series, i))->impl == impl)
        {
          shown[n++] = impl;
          break;
        }

  return n;
}

static gboolean
scenario_has_series (const Scenario *scenario)
{
  for (Impl impl = 0; impl < N_IMPLS; impl++)
    if (series_find (scenario->name, impl) != NULL)
      return TRUE;

  return FALSE;
}

static void
print_row (const Scenario *scenario,
           const char     *label,
           const char     *unit,
           const char     *metric,
           const Impl     *shown,
           guint           n_shown)
{
  double values[N_IMPLS];
  double mine = median_metric (series_find (scenario->name, IMPL_MPPORT), metric);
  GString *targets_text = g_string_new (NULL);

  for (guint t = 0; t < G_N_ELEMENTS (targets); t++)
    {
      double measured;
      gboolean met;

      if (!g_str_equal (targets[t].scenario, scenario->name) || !g_str_equal (targets[t].metric, metric))
        continue;
      met = target_met (&targets[t], &measured);
      if (isnan (measured))
        continue;
      g_string_append_printf (targets_text, "%s%s: %s", targets_text->len ? "; " : "",
                              targets[t].text, met ? "met" : "NOT MET");
    }

  printf ("%-16s %-8s", label, unit);
  for (guint i = 0; i < n_shown; i++)
    {
      char buf[32];

      values[i] = median_metric (series_find (scenario->name, shown[i]), metric);
      format_value (buf, sizeof (buf), values[i], unit);
      printf (" %11s", buf);
    }
  for (guint i = 0; i < n_shown; i++)
    {
      double ratio = mine / values[i];

      if (shown[i] == IMPL_MPPORT)
        continue;
      if (isnan (ratio))
        printf (" %7s", "-");
      else
        printf (" %6.2fx", ratio);
    }
  printf ("  %s\n", targets_text->str);
  g_string_free (targets_text, TRUE);
}

/* Third table: heap allocations per message (per round trip, delivery, operation). */
static void
print_allocs_table (const Impl *shown,
                    guint       n_shown)
{
  if (!COUNT_ALLOCS)
    {
      printf ("\nHeap allocations: not counted in this build (ASan and TSan interpose the allocator)\n");
      return;
    }

  printf ("\nHeap allocations per message, medians per run: malloc/calloc/realloc calls by every "
          "thread in the measured region\n(pingpong, xproc-pingpong: per round trip; bcast, bus: per delivery, "
          "bus counting the sender's and both receivers' processes,\nxproc-* both processes; "
          "churn: per operation). (b) and (c) "
          "show the GVariant's own (its data); GLib 2.74's g_slice (GVariant and\nGBytes headers, "
          "GList nodes) is not seen\n");
  printf ("%-16s", "scenario");
  for (guint i = 0; i < n_shown; i++)
    printf (" %11s", impl_labels[shown[i]]);
  printf ("\n");
  for (guint s = 0; s < N_SCENARIOS; s++)
    {
      const Scenario *scenario = &scenarios[s];

      if (scenario->run == scenario_idle || !scenario_has_series (scenario))
        continue;
      printf ("%-16s", scenario->name);
      for (guint i = 0; i < n_shown; i++)
        {
          Series *series = series_find (scenario->name, shown[i]);
          char cell[32];

          if (series == NULL)
            g_strlcpy (cell, "-", sizeof (cell));
          else
            g_snprintf (cell, sizeof (cell), "%.2f",
                        MEDIAN_U (series, allocs) / MAX (MEDIAN_U (series, messages), 1));
          printf (" %11s", cell);
        }
      printf ("\n");
    }
}

/* "Node v20.19.2, Bun 1.2.3": the peers of @mask that have a version (were selected). */
static char *
peer_versions_text (guint mask)
{
  GString *text = g_string_new (NULL);

  for (Impl impl = 0; impl < N_IMPLS; impl++)
    if ((mask & (1u << impl)) && peer_versions[impl] != NULL)
      g_string_append_printf (text, "%s%s %s", text->len ? ", " : "", impl_labels[impl],
                              peer_versions[impl]);

  return g_string_free (text, FALSE);
}

static void
print_table (void)
{
  Impl shown[N_IMPLS];
  guint n_shown = shown_impls (shown, ALL_IMPLS);
  guint shown_mask = 0;

  for (guint i = 0; i < n_shown; i++)
    shown_mask |= 1u << shown[i];

  printf ("\n%-16s %-8s", "scenario", "unit");
  for (guint i = 0; i < n_shown; i++)
    printf (" %11s", impl_labels[shown[i]]);
  for (guint i = 0; i < n_shown; i++)
    if (shown[i] != IMPL_MPPORT)
      {
        char tag[16];

        g_snprintf (tag, sizeof (tag), "mp/%s", impl_tags[shown[i]]);
        printf (" %7s", tag);
      }
  printf ("  %s\n", "targets");
  for (guint s = 0; s < N_SCENARIOS; s++)
    {
      const Scenario *scenario = &scenarios[s];

      if (!scenario_has_series (scenario))
        continue;
      if (scenario->run == scenario_pingpong)
        {
          print_row (scenario, "pingpong mean", scenario->unit, "value", shown, n_shown);
          print_row (scenario, "pingpong p50", scenario->unit, "p50", shown, n_shown);
          print_row (scenario, "pingpong p99", scenario->unit, "p99", shown, n_shown);
        }
      else if (scenario->run == xproc_scenario_pingpong)
        {
          print_row (scenario, "xproc-rtt mean", scenario->unit, "value", shown, n_shown);
          print_row (scenario, "xproc-rtt p50", scenario->unit, "p50", shown, n_shown);
          print_row (scenario, "xproc-rtt p99", scenario->unit, "p99", shown, n_shown);
        }
      else if (scenario->run == scenario_bus)
        {
          print_row (scenario, "bus", scenario->unit, "value", shown, n_shown);
          print_row (scenario, "bus rtt p50", "us/rtt", "p50", shown, n_shown);
          print_row (scenario, "bus rtt p99", "us/rtt", "p99", shown, n_shown);
        }
      else
        print_row (scenario, scenario->name, scenario->unit, "value", shown, n_shown);
    }
  if (shown_mask & PEER_IMPLS)
    {
      g_autofree char *versions = peer_versions_text (shown_mask);

      printf ("(%s: bench/peers/scenarios.mjs, the same work on worker_threads MessagePort and "
              "BroadcastChannel, a runtime process per run)\n", versions);
    }

  printf ("\nReceiving side, medians per run: messages per main-loop iteration "
          "(batch) / blocking polls (wake-ups needed) / producer wake-ups signalled\n");
  for (guint s = 0; s < N_SCENARIOS; s++)
    if (scenarios[s].run == scenario_bus && scenario_has_series (&scenarios[s]))
      printf ("(bus: deliveries, both receiver processes' loops, in the throughput phase)\n");
  for (guint s = 0; s < N_SCENARIOS; s++)
    if (scenarios[s].run == xproc_scenario_tput && scenario_has_series (&scenarios[s]))
      printf ("(xproc-*: the parent process's loop, which receives the stream and the answers)\n");
  /* The peers' loops and allocator are not seen from here: the last two tables are the C
   * implementations' only. */
  n_shown = shown_impls (shown, ALL_IMPLS & ~PEER_IMPLS);
  printf ("%-16s", "scenario");
  for (guint i = 0; i < n_shown; i++)
    printf (" %28s", impl_labels[shown[i]]);
  printf ("\n");
  for (guint s = 0; s < N_SCENARIOS; s++)
    {
      const Scenario *scenario = &scenarios[s];

      if ((scenario->impls & ~PEER_IMPLS) == MPPORT_ONLY || !scenario_has_series (scenario))
        continue;
      printf ("%-16s", scenario->name);
      for (guint i = 0; i < n_shown; i++)
        {
          Impl impl = shown[i];
          Series *series = series_find (scenario->name, impl);
          char cell[64];

          if (series == NULL)
            g_strlcpy (cell, "-", sizeof (cell));
          else
            {
              double iterations = MEDIAN_U (series, iterations);
              double messages = MEDIAN_U (series, messages);
              char wakes[24] = "-";

              if (impl == IMPL_QUEUE || impl == IMPL_RING)
                g_snprintf (wakes, sizeof (wakes), "%.0f", MEDIAN_U (series, wakes));
              g_snprintf (cell, sizeof (cell), "%.1f / %.0f / %s",
                          iterations > 0 ? messages / iterations : 0, MEDIAN_U (series, sleeps), wakes);
            }
          printf (" %28s", cell);
        }
      printf ("\n");
    }

  print_allocs_table (shown, n_shown);
}

static void
machine_info (GString *json)
{
  g_autofree char *cpuinfo = NULL;
  char model[256] = "unknown";
  struct utsname uts;
  double load[3] = { 0 };

  if (g_file_get_contents ("/proc/cpuinfo", &cpuinfo, NULL, NULL))
    {
      const char *line = strstr (cpuinfo, "model name");
      const char *colon = line != NULL ? strchr (line, ':') : NULL;

      if (colon != NULL)
        {
          const char *end = strchr (colon, '\n');
          gsize len = end != NULL ? (gsize) (end - colon - 2) : strlen (colon + 2);

          g_strlcpy (model, colon + 2, MIN (len + 1, sizeof (model)));
        }
    }
  uname (&uts);
  getloadavg (load, 3);

  g_string_append_printf (json,
                          "\"machine\": {\"cpu\": \"%s\", \"online_cpus\": %ld, \"kernel\": \"%s %s\", "
                          "\"glib\": \"%u.%u.%u\", \"mpport\": \"%s\"",
                          model, sysconf (_SC_NPROCESSORS_ONLN), uts.sysname, uts.release,
                          glib_major_version, glib_minor_version, glib_micro_version, MP_VERSION_S);
  /* The peers' versions ("node": "v20.19.2"), null when they did not run. */
  for (Impl impl = IMPL_NODE; impl <= IMPL_BUN; impl++)
    if (peer_versions[impl] != NULL)
      g_string_append_printf (json, ", \"%s\": \"%s\"", impl_names[impl], peer_versions[impl]);
    else
      g_string_append_printf (json, ", \"%s\": null", impl_names[impl]);
  g_string_append_printf (json, "}, \"loadavg_at_end\": [%.2f, %.2f, %.2f]", load[0], load[1], load[2]);
}

static void
write_json (const char *path)
{
  GString *json = g_string_new ("{");
  g_autoptr(GError) error = NULL;

  machine_info (json);
  g_string_append_printf (json, ", \"runs_per_series\": %d, \"scale\": %g, \"series\": [", opt_runs, opt_scale);
  for (guint i = 0; i < all_series->len; i++)
    {
      Series *series = g_ptr_array_index (all_series, i);

      g_string_append_printf (json, "%s\n  {\"scenario\": \"%s\", \"unit\": \"%s\", \"impl\": \"%s\", \"runs\": [",
                              i ? "," : "", series->scenario->name, series->scenario->unit,
                              impl_names[series->impl]);
      for (guint r = 0; r < series->samples->len; r++)
        {
          Sample *s = &g_array_index (series->samples, Sample, r);

          g_string_append_printf (json,
                                  "%s{\"value\": %.6g, \"p50\": %.6g, \"p99\": %.6g, \"seconds\": %.6f, "
                                  "\"messages\": %" G_GUINT64_FORMAT,
                                  r ? ", " : "", s->value, s->p50, s->p99, s->seconds, s->messages);
          /* Nothing counts the peers' loops and allocations. */
          if (IS_PEER (series->impl))
            g_string_append (json, ", \"iterations\": null, \"blocking_polls\": null, \"producer_wakes\": null");
          else
            g_string_append_printf (json,
                                    ", \"iterations\": %" G_GUINT64_FORMAT ", \"blocking_polls\": %" G_GUINT64_FORMAT
                                    ", \"producer_wakes\": %" G_GUINT64_FORMAT,
                                    s->iterations, s->sleeps, s->wakes);
          if (COUNT_ALLOCS && series->scenario->run != scenario_idle && !IS_PEER (series->impl))
            g_string_append_printf (json, ", \"allocations\": %" G_GUINT64_FORMAT "}", s->allocs);
          else
            g_string_append (json, ", \"allocations\": null}");
        }
      g_string_append_printf (json, "], \"median\": %.6g}", MEDIAN_D (series, value));
    }
  g_string_append (json, "\n]}\n");

  if (!g_file_set_contents (path, json->str, json->len, &error))
    g_printerr ("mp-bench: %s\n", error->message);
  g_string_free (json, TRUE);
}

/* Writes @text to a new temporary file named after @tmpl; returns its path, or NULL. */
static char *
write_temp_file (const char *tmpl,
                 GString    *text)
{
  g_autoptr(GError) error = NULL;
  char *path = NULL;
  int fd = g_file_open_tmp (tmpl, &path, &error);

  if (fd < 0)
    {
      g_printerr ("mp-bench: %s\n", error->message);
      return NULL;
    }
  close (fd);
  if (!g_file_set_contents (path, text->str, text->len, &error))
    {
      g_printerr ("mp-bench: %s\n", error->message);
      g_unlink (path);
      g_free (path);
      return NULL;
    }

  return path;
}

/* A grouped bar chart with gnuplot: per scenario, each implementation's speed relative to
 * the (c) ring bound (higher is better; latency inverted), on a log scale. When Node or Bun
 * ran, a second chart below it gives mpport's speed relative to each of them, for every
 * scenario they ran (churn too, which has no ring to be relative to). */
static void
write_plot (const char *path)
{
  static const char *const peer_colours[N_IMPLS] = { [IMPL_NODE] = "#75507b", [IMPL_BUN] = "#c4a000" };
  g_autofree char *data_path = NULL;
  g_autofree char *peers_path = NULL;
  g_autofree char *script_path = NULL;
  g_autoptr(GError) error = NULL;
  GString *data = g_string_new (NULL);
  GString *peers = g_string_new (NULL);
  GString *script = g_string_new (NULL);
  const char *argv[] = { "gnuplot", NULL, NULL };
  guint n_ring_rows = 0, n_peer_rows = 0;
  guint peers_shown = 0;
  gboolean both;
  int status;

  for (guint s = 0; s < N_SCENARIOS; s++)
    {
      const Scenario *scenario = &scenarios[s];
      double ring = median_metric (series_find (scenario->name, IMPL_RING), "value");
      double mine = median_metric (series_find (scenario->name, IMPL_MPPORT), "value");
      g_autoptr(GString) row = g_string_new (scenario->name);
      gboolean has_peer = FALSE;

      if (!isnan (ring))
        {
          g_string_append_printf (data, "%s", scenario->name);
          for (Impl impl = 0; impl < N_IMPLS; impl++)
            {
              double value = median_metric (series_find (scenario->name, impl), "value");
              double relative = scenario->higher_is_better ? value / ring : ring / value;

              if (isnan (relative))
                g_string_append (data, " -");
              else
                g_string_append_printf (data, " %.4f", relative);
            }
          g_string_append_c (data, '\n');
          n_ring_rows++;
        }

      /* Columns: scenario, mpport / Node, mpport / Bun. */
      for (Impl impl = IMPL_NODE; impl <= IMPL_BUN; impl++)
        {
          double value = median_metric (series_find (scenario->name, impl), "value");
          double relative = scenario->higher_is_better ? mine / value : value / mine;

          if (isnan (relative))
            g_string_append (row, " -");
          else
            {
              g_string_append_printf (row, " %.4f", relative);
              peers_shown |= 1u << impl;
              has_peer = TRUE;
            }
        }
      if (has_peer)
        {
          g_string_append_printf (peers, "%s\n", row->str);
          n_peer_rows++;
        }
    }

  if (n_ring_rows == 0 && n_peer_rows == 0)
    {
      g_printerr ("mp-bench: --plot: nothing to draw (it needs (c) ring, Node or Bun in the run)\n");
      goto out;
    }
  both = n_ring_rows > 0 && n_peer_rows > 0;
  data_path = write_temp_file ("mp-bench-XXXXXX.dat", data);
  peers_path = write_temp_file ("mp-bench-peers-XXXXXX.dat", peers);
  if (data_path == NULL || peers_path == NULL)
    goto out;

  g_string_append_printf (script,
                          "set terminal %s\n"
                          "set output '%s'\n"
                          "set datafile missing '-'\n"
                          "set style data histograms\n"
                          "set style histogram clustered gap 1\n"
                          "set style fill solid 0.85 border -1\n"
                          "set logscale y 2\n"
                          "set grid ytics\n"
                          "set key outside bottom center horizontal\n",
                          g_str_has_suffix (path, ".png")
                            ? (both ? "pngcairo size 960,1000 font 'sans,11'" : "pngcairo size 960,540 font 'sans,11'")
                            : (both ? "svg size 960,1000 dynamic enhanced font 'sans,12' background rgb 'white'"
                                    : "svg size 960,540 dynamic enhanced font 'sans,12' background rgb 'white'"),
                          path);
  if (both)
    g_string_append (script, "set multiplot layout 2,1\n");

  if (n_ring_rows > 0)
    {
      g_string_append_printf (script,
                              "set title 'mpport vs in-run baselines: speed relative to the (c) lock-free ring "
                              "(higher is better; pingpong = 1/latency)'\n"
                              "set yrange [0.01:4]\n"
                              "set ytics ('1/64' 0.015625, '1/16' 0.0625, '1/4' 0.25, '0.5' 0.5, '0.8' 0.8, '1' 1, '2' 2, '4' 4)\n"
                              "set arrow 1 from graph 0, first 0.8 to graph 1, first 0.8 nohead dt 2 lc rgb 'red'\n"
                              "plot '%s' using 2:xtic(1) title 'mpport' lc rgb '#3465a4', "
                              "'' using 3 title '(a) invoke per message' lc rgb '#cc0000', "
                              "'' using 4 title '(b) mutex + GQueue + GSource' lc rgb '#f57900', "
                              "'' using 5 title '(c) lock-free ring + eventfd' lc rgb '#73d216'",
                              data_path);
      /* The peers' columns: 2 + their Impl. */
      for (Impl impl = IMPL_NODE; impl <= IMPL_BUN; impl++)
        if (peers_shown & (1u << impl))
          g_string_append_printf (script, ", '' using %d title '%s %s' lc rgb '%s'", 2 + (int) impl,
                                  impl_labels[impl], peer_versions[impl] ? peer_versions[impl] : "",
                                  peer_colours[impl]);
      g_string_append (script, "\nunset arrow 1\n");
    }

  if (n_peer_rows > 0)
    {
      gboolean first = TRUE;

      g_string_append (script,
                       "set title 'mpport against Node and Bun: mpport speed / theirs "
                       "(higher: mpport faster; pingpong = 1/latency)'\n"
                       "set yrange [0.125:32]\n"
                       "set ytics ('1/8' 0.125, '1/4' 0.25, '0.5' 0.5, '1' 1, '1.5' 1.5, '2' 2, '4' 4, '8' 8, "
                       "'16' 16, '32' 32)\n"
                       "set arrow 2 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb 'red'\n"
                       "plot ");
      for (Impl impl = IMPL_NODE; impl <= IMPL_BUN; impl++)
        if (peers_shown & (1u << impl))
          {
            g_string_append_printf (script, "%s'%s' using %d:xtic(1) title 'mpport / %s %s' lc rgb '%s'",
                                    first ? "" : ", ", first ? peers_path : "", 2 + (int) (impl - IMPL_NODE),
                                    impl_labels[impl], peer_versions[impl] ? peer_versions[impl] : "",
                                    peer_colours[impl]);
            first = FALSE;
          }
      g_string_append (script, "\n");
    }
  if (both)
    g_string_append (script, "unset multiplot\n");

  script_path = write_temp_file ("mp-bench-XXXXXX.gp", script);
  if (script_path == NULL)
    goto out;
  argv[1] = script_path;

  if (!g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                     &status, &error) ||
      !g_spawn_check_wait_status (status, &error))
    g_printerr ("mp-bench: --plot needs gnuplot (scripts/bench --plot installs it): %s\n", error->message);
  else
    printf ("plot written to %s\n", path);

out:
  if (script_path != NULL)
    g_unlink (script_path);
  if (data_path != NULL)
    g_unlink (data_path);
  if (peers_path != NULL)
    g_unlink (peers_path);
  g_string_free (data, TRUE);
  g_string_free (peers, TRUE);
  g_string_free (script, TRUE);
}

/* ------------------------------------------------------------------------------------------ */
/* Progress                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static gint64 progress_start;
static gboolean progress_tty;
static const char *last_scenario;
static int last_run;

static void
progress (guint       step,
          guint       n_steps,
          const char *scenario,
          int         run,
          const char *impl)
{
  double elapsed = (g_get_monotonic_time () - progress_start) / 1e6;

  if (opt_quiet)
    return;

  if (progress_tty)
    fprintf (stderr, "\r\033[K[%3u%%] %3.0f s  %s  run %d/%d  %s", step * 100 / MAX (n_steps, 1),
             elapsed, scenario, run, opt_runs, impl);
  else if (g_strcmp0 (scenario, last_scenario) != 0 || run != last_run)
    {
      /* Not a terminal (a log): one line per scenario and run. */
      fprintf (stderr, "[%3u%%] %3.0f s  %s  run %d/%d\n", step * 100 / MAX (n_steps, 1),
               elapsed, scenario, run, opt_runs);
      last_scenario = scenario;
      last_run = run;
    }
}

static void
progress_done (void)
{
  if (!opt_quiet && progress_tty)
    fprintf (stderr, "\r\033[K");
}

/* ------------------------------------------------------------------------------------------ */
/* Running                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static guint
parse_impls (const char *list)
{
  g_auto(GStrv) names = NULL;
  guint mask = 0;

  if (list == NULL)
    return ALL_IMPLS & ~PEER_IMPLS;

  names = g_strsplit (list, ",", -1);
  for (guint i = 0; names[i] != NULL; i++)
    {
      Impl impl;

      for (impl = 0; impl < N_IMPLS; impl++)
        if (g_str_equal (names[i], impl_names[impl]))
          break;
      if (impl == N_IMPLS)
        {
          g_printerr ("mp-bench: unknown implementation '%s' (mpport, invoke, queue, ring, signal, socket, "
                      "node, bun)\n", names[i]);
          exit (2);
        }
      mask |= 1u << impl;
    }

  return mask;
}

static void
print_raw (const Scenario *scenario,
           Impl            impl,
           const Sample   *s)
{
  printf ("RESULT\t%s\t%s\t%.6g\t%.6g\t%.6g\t%.6f\t%" G_GUINT64_FORMAT "\t%" G_GUINT64_FORMAT
          "\t%" G_GUINT64_FORMAT "\t%" G_GUINT64_FORMAT "\t%" G_GUINT64_FORMAT "\n",
          scenario->name, impl_names[impl], s->value, s->p50, s->p99, s->seconds, s->messages,
          s->iterations, s->sleeps, s->wakes, s->allocs);
  fflush (stdout);
}

/* Spawns @argv (stderr inherited) and reads the RESULT line that print_raw() writes (and
 * bench/peers/scenarios.mjs, in the same form) into @out. */
static void
run_child_sample (const char *const *argv,
                  GSpawnFlags        flags,
                  const Scenario    *scenario,
                  Impl               impl,
                  Sample            *out)
{
  g_autofree char *output = NULL;
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) lines = NULL;
  int status;

  if (!g_spawn_sync (NULL, (char **) argv, NULL, flags, NULL, NULL, &output, NULL, &status, &error) ||
      !g_spawn_check_wait_status (status, &error))
    g_error ("%s %s: %s", scenario->name, impl_names[impl], error->message);

  lines = g_strsplit (output, "\n", -1);
  for (guint l = 0; lines[l] != NULL; l++)
    {
      g_auto(GStrv) f = g_strsplit (lines[l], "\t", -1);

      if (g_strv_length (f) < 12 || !g_str_equal (f[0], "RESULT"))
        continue;
      out->value = g_ascii_strtod (f[3], NULL);
      out->p50 = g_ascii_strtod (f[4], NULL);
      out->p99 = g_ascii_strtod (f[5], NULL);
      out->seconds = g_ascii_strtod (f[6], NULL);
      out->messages = g_ascii_strtoull (f[7], NULL, 10);
      out->iterations = g_ascii_strtoull (f[8], NULL, 10);
      out->sleeps = g_ascii_strtoull (f[9], NULL, 10);
      out->wakes = g_ascii_strtoull (f[10], NULL, 10);
      out->allocs = g_ascii_strtoull (f[11], NULL, 10);
      return;
    }
  g_error ("%s %s: no result from the child: %s", scenario->name, impl_names[impl], output);
}

/* Runs one sample in a fresh process (this program, --raw, one run of one implementation):
 * no implementation inherits the heap another one left (the invoke baseline leaves glibc's
 * arenas holding a million freed idle sources, which slows down the next implementation that
 * allocates per message), nor its threads' caches. */
static void
run_isolated (const Scenario *scenario,
              Impl            impl,
              Sample         *out)
{
  g_autofree char *scale = g_strdup_printf ("%.17g", opt_scale);
  const char *argv[] = { self_exe, "--raw", "--quiet", "--runs", "1", "--scale", scale,
                         "--impls", impl_names[impl], scenario->name, NULL };

  run_child_sample (argv, G_SPAWN_DEFAULT, scenario, impl, out);
}

/* Node, Bun: one sample is one runtime process running bench/peers/scenarios.mjs with the
 * count this run gives mpport (already scaled); the JavaScript times its own measured region
 * and prints a RESULT line. Whatever --in-process says: a runtime is a process of its own. */
static void
run_peer (const Scenario *scenario,
          Impl            impl,
          Sample         *out)
{
  g_autofree char *count = g_strdup_printf ("%" G_GUINT64_FORMAT, scaled (scenario->count));
  const char *argv[] = { peer_runtimes[impl], MP_BENCH_PEERS_SCRIPT, scenario->name, count, NULL };

  run_child_sample (argv, G_SPAWN_SEARCH_PATH, scenario, impl, out);
}

/* Asks each selected peer's runtime its version (recorded in the header and the JSON); FALSE
 * if one does not run. */
static gboolean
peers_check (guint impls)
{
  peer_runtimes[IMPL_NODE] = opt_node != NULL ? opt_node : "node";
  peer_runtimes[IMPL_BUN] = opt_bun != NULL ? opt_bun : "bun";

  for (Impl impl = IMPL_NODE; impl <= IMPL_BUN; impl++)
    {
      const char *argv[] = { peer_runtimes[impl], "--version", NULL };
      g_autofree char *output = NULL;
      g_autoptr(GError) error = NULL;
      int status;

      if (!(impls & (1u << impl)))
        continue;
      if (!g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL,
                         NULL, NULL, &output, NULL, &status, &error) ||
          !g_spawn_check_wait_status (status, &error))
        {
          g_printerr ("mp-bench: %s: cannot run '%s' (%s); scripts/bench --peers installs Bun, "
                      "or give its path with --%s\n", impl_labels[impl], peer_runtimes[impl],
                      error->message, impl_names[impl]);
          return FALSE;
        }
      peer_versions[impl] = g_strstrip (g_steal_pointer (&output));
    }

  return TRUE;
}

static void
run_all (const Scenario **selected,
         guint            n_selected,
         guint            impls)
{
  guint n_steps = 0, step = 0;

  for (guint s = 0; s < n_selected; s++)
    n_steps += opt_runs * (guint) __builtin_popcount (selected[s]->impls & impls);

  for (guint s = 0; s < n_selected; s++)
    {
      const Scenario *scenario = selected[s];

      for (int run = 1; run <= opt_runs; run++)
        for (Impl impl = 0; impl < N_IMPLS; impl++)
          {
            Sample sample = { 0 };

            if (!(scenario->impls & impls & (1u << impl)))
              continue;
            progress (step++, n_steps, scenario->name, run, impl_labels[impl]);
            if (IS_PEER (impl))
              run_peer (scenario, impl, &sample);
            else if (opt_in_process || opt_raw || opt_callgrind)
              {
                measured_allocs = 0;
                scenario->run (scenario, impl, &sample);
                sample.allocs = measured_allocs;
              }
            else
              run_isolated (scenario, impl, &sample);
            g_array_append_val (series_get (scenario, impl)->samples, sample);
            if (opt_raw)
              print_raw (scenario, impl, &sample);
          }
    }
  progress_done ();
}

/* The implementations of @impls that apply to @scenario, comma-separated for --impls: only
 * those, since an older build knows no newer implementation. */
static char *
scenario_impl_list (const Scenario *scenario,
                    guint           impls)
{
  GString *list = g_string_new (NULL);

  for (Impl impl = 0; impl < N_IMPLS; impl++)
    if (impls & scenario->impls & (1u << impl))
      g_string_append_printf (list, "%s%s", list->len ? "," : "", impl_names[impl]);

  return g_string_free (list, FALSE);
}

/* --versus OTHER: this build is A, OTHER (another build's mp-bench) is B. Each run of each
 * scenario spawns A then B (one run each, same implementations), alternately, so that drift
 * hits both alike; prints medians and B/A. The baselines are the same code in both builds:
 * their B/A ratio shows how noisy the run was. */
typedef struct
{
  const Scenario *scenario;
  Impl impl;
  GArray *values[2];   /* double: A, B */
  GArray *p99[2];
} VersusSeries;

static void
run_versus (const Scenario **selected,
            guint            n_selected,
            guint            impls)
{
  const char *binaries[2] = { self_exe, opt_versus };
  GPtrArray *table = g_ptr_array_new ();
  g_autofree char *scale = g_strdup_printf ("%g", opt_scale);
  guint n_steps = n_selected * opt_runs * 2, step = 0;

  for (guint s = 0; s < n_selected; s++)
    for (int run = 1; run <= opt_runs; run++)
      for (guint side = 0; side < 2; side++)
        {
          g_autofree char *impl_list = scenario_impl_list (selected[s], impls);
          const char *argv[] = { binaries[side], "--raw", "--quiet", "--runs", "1", "--scale", scale,
                                 "--impls", impl_list, selected[s]->name, NULL };
          g_autofree char *output = NULL;
          g_autoptr(GError) error = NULL;
          g_auto(GStrv) lines = NULL;
          int status;

          progress (step++, n_steps, selected[s]->name, run, side == 0 ? "A (this build)" : "B (--versus)");
          if (!g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &output, NULL,
                             &status, &error) ||
              !g_spawn_check_wait_status (status, &error))
            g_error ("%s: %s", binaries[side], error->message);

          lines = g_strsplit (output, "\n", -1);
          for (guint l = 0; lines[l] != NULL; l++)
            {
              g_auto(GStrv) f = g_strsplit (lines[l], "\t", -1);
              VersusSeries *vs = NULL;
              Impl impl;
              double value, p99;

              if (g_strv_length (f) < 6 || !g_str_equal (f[0], "RESULT"))
                continue;
              for (impl = 0; impl < N_IMPLS; impl++)
                if (g_str_equal (f[2], impl_names[impl]))
                  break;
              if (impl == N_IMPLS)
                continue;
              value = g_ascii_strtod (f[3], NULL);
              p99 = g_ascii_strtod (f[5], NULL);
              for (guint i = 0; i < table->len; i++)
                {
                  VersusSeries *candidate = g_ptr_array_index (table, i);

                  if (candidate->scenario == selected[s] && candidate->impl == impl)
                    vs = candidate;
                }
              if (vs == NULL)
                {
                  vs = g_new0 (VersusSeries, 1);
                  vs->scenario = selected[s];
                  vs->impl = impl;
                  for (guint k = 0; k < 2; k++)
                    {
                      vs->values[k] = g_array_new (FALSE, FALSE, sizeof (double));
                      vs->p99[k] = g_array_new (FALSE, FALSE, sizeof (double));
                    }
                  g_ptr_array_add (table, vs);
                }
              g_array_append_val (vs->values[side], value);
              g_array_append_val (vs->p99[side], p99);
            }
        }
  progress_done ();

  printf ("\nA = %s\nB = %s\n%d runs each, interleaved A B A B; medians\n\n", binaries[0], binaries[1], opt_runs);
  printf ("%-14s %-8s %-10s %12s %12s %8s\n", "scenario", "unit", "impl", "A", "B", "B/A");
  for (guint i = 0; i < table->len; i++)
    {
      VersusSeries *vs = g_ptr_array_index (table, i);
      double med[2];
      char buf[2][32];

      for (guint k = 0; k < 2; k++)
        {
          med[k] = median_of ((double *) vs->values[k]->data, vs->values[k]->len);
          format_value (buf[k], sizeof (buf[k]), med[k], vs->scenario->unit);
        }
      printf ("%-14s %-8s %-10s %12s %12s %7.3fx\n", vs->scenario->name, vs->scenario->unit,
              impl_names[vs->impl], buf[0], buf[1], med[1] / med[0]);
    }
}

int
main (int   argc,
      char *argv[])
{
  GOptionEntry entries[] = {
    { "runs", 'n', 0, G_OPTION_ARG_INT, &opt_runs, "Runs per implementation (default 5)", "N" },
    { "scale", 's', 0, G_OPTION_ARG_DOUBLE, &opt_scale, "Multiply every message count by F (0.1: quick)", "F" },
    { "impls", 'i', 0, G_OPTION_ARG_STRING, &opt_impls,
      "Comma-separated subset of mpport,invoke,queue,ring,signal,socket,node,bun", "LIST" },
    { "peers", 0, 0, G_OPTION_ARG_NONE, &opt_peers,
      "Also run Node and Bun (bench/peers/scenarios.mjs) where they apply", NULL },
    { "node", 0, 0, G_OPTION_ARG_FILENAME, &opt_node, "Node to run for the peers (default: node)", "PATH" },
    { "bun", 0, 0, G_OPTION_ARG_FILENAME, &opt_bun, "Bun to run for the peers (default: bun)", "PATH" },
    { "json", 'j', 0, G_OPTION_ARG_FILENAME, &opt_json, "Write every run to FILE as JSON", "FILE" },
    { "plot", 'p', 0, G_OPTION_ARG_FILENAME, &opt_plot, "Draw a bar chart to FILE.svg (or .png; needs gnuplot)", "FILE.svg" },
    { "versus", 0, 0, G_OPTION_ARG_FILENAME, &opt_versus,
      "Compare with another build's mp-bench, runs interleaved; prints B/A", "MP-BENCH" },
    { "callgrind", 0, 0, G_OPTION_ARG_NONE, &opt_callgrind,
      "Zero callgrind's counters at the start of the measured region and dump them at its end", NULL },
    { "raw", 0, 0, G_OPTION_ARG_NONE, &opt_raw, "Print one RESULT line per run", NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &opt_quiet, "No progress line", NULL },
    { "in-process", 0, 0, G_OPTION_ARG_NONE, &opt_in_process,
      "Run every sample in this process (default: each in a fresh child process)", NULL },
    { "list", 'l', 0, G_OPTION_ARG_NONE, &opt_list, "List the scenarios", NULL },
    { "child-idle", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT64, &opt_child_idle, NULL, NULL },
    { "child-bus-receiver", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING, &opt_child_bus_receiver, NULL, NULL },
    { "child-bus-posts", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT64, &opt_child_bus_posts, NULL, NULL },
    { "child-bus-pings", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT64, &opt_child_bus_pings, NULL, NULL },
    { "child-bus-echo", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &opt_child_bus_echo, NULL, NULL },
    { "child-xproc", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING, &opt_child_xproc, NULL, NULL },
    { "child-xproc-fd", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT64, &opt_child_xproc_fd, NULL, NULL },
    { "child-xproc-count", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT64, &opt_child_xproc_count, NULL, NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GOptionContext) context = g_option_context_new ("[SCENARIO...] — mpport benchmarks");
  g_autoptr(GError) error = NULL;
  g_autofree const Scenario **selected = g_new0 (const Scenario *, N_SCENARIOS);
  guint n_selected = 0;
  guint impls;
  double load[3] = { 0 };
  gint64 started;

  g_option_context_add_main_entries (context, entries, NULL);
  g_option_context_set_summary (context,
                                "Scenarios: tput tput-str fanin pingpong bcast churn stress idle bus "
                                "xproc-tput xproc-pingpong (default: all).\nImplementations: mpport, "
                                "(a) invoke, (b) queue, (c) ring; bus: mpport, (d) signal; xproc-*: mpport, "
                                "(d) signal (peer-to-peer), (e) socket.\nWith --peers, also Node and Bun "
                                "(JavaScript worker_threads) in tput tput-str fanin pingpong bcast churn.");
  if (!g_option_context_parse (context, &argc, &argv, &error))
    {
      g_printerr ("mp-bench: %s\n", error->message);
      return 2;
    }

  if (opt_child_idle > 0)
    return child_idle (opt_child_idle);

  if (opt_list)
    {
      for (guint s = 0; s < N_SCENARIOS; s++)
        printf ("%-14s %8" G_GUINT64_FORMAT "  %s\n", scenarios[s].name, scenarios[s].count, scenarios[s].what);
      return 0;
    }

  if (opt_runs < 1 || opt_scale <= 0)
    {
      g_printerr ("mp-bench: --runs must be >= 1 and --scale > 0\n");
      return 2;
    }

  self_exe = g_file_read_link ("/proc/self/exe", NULL);
  if (self_exe == NULL)
    self_exe = g_strdup (argv[0]);
  impls = parse_impls (opt_impls);
  if (opt_peers)
    impls |= PEER_IMPLS;
  /* The peers are not this build's code: no B/A, no callgrind. */
  if (opt_versus != NULL || opt_callgrind)
    impls &= ~PEER_IMPLS;
  all_series = g_ptr_array_new ();
  progress_tty = isatty (STDERR_FILENO);
  progress_start = g_get_monotonic_time ();
  started = progress_start;

  for (int a = 1; a < argc; a++)
    {
      guint s;

      for (s = 0; s < N_SCENARIOS; s++)
        if (g_str_equal (argv[a], scenarios[s].name))
          break;
      if (s == N_SCENARIOS)
        {
          g_printerr ("mp-bench: unknown scenario '%s' (try --list)\n", argv[a]);
          return 2;
        }
      selected[n_selected++] = &scenarios[s];
    }
  if (n_selected == 0)
    for (guint s = 0; s < N_SCENARIOS; s++)
      selected[n_selected++] = &scenarios[s];

  /* Register the types before any thread races on them. */
  g_type_ensure (MP_TYPE_MESSAGE_CHANNEL);
  g_type_ensure (MP_TYPE_MESSAGE_PORT);
  g_type_ensure (MP_TYPE_BROADCAST_CHANNEL);
  g_type_ensure (MP_TYPE_MESSAGE);
  g_type_ensure (BENCH_TYPE_SINK);

  if (opt_child_bus_receiver != NULL)
    {
      if (opt_child_bus_posts < 1 || opt_child_bus_pings < 0 ||
          (impls != (1u << IMPL_MPPORT) && impls != (1u << IMPL_SIGNAL)))
        {
          g_printerr ("mp-bench: --child-bus-receiver needs --child-bus-posts, --child-bus-pings and "
                      "--impls mpport or signal\n");
          return 2;
        }
      return child_bus_receiver (opt_child_bus_receiver,
                                 impls == (1u << IMPL_MPPORT) ? IMPL_MPPORT : IMPL_SIGNAL,
                                 opt_child_bus_posts, opt_child_bus_pings, opt_child_bus_echo);
    }

  if (opt_child_xproc != NULL)
    {
      Impl impl;

      for (impl = 0; impl < N_IMPLS; impl++)
        if (impls == (1u << impl))
          break;
      if (impl == N_IMPLS || !(XPROC_IMPLS & (1u << impl)) || opt_child_xproc_fd < 0 ||
          opt_child_xproc_count < 0)
        {
          g_printerr ("mp-bench: --child-xproc needs --child-xproc-fd, --child-xproc-count and "
                      "--impls mpport, signal or socket\n");
          return 2;
        }
      return xproc_child_main (opt_child_xproc, impl, (int) opt_child_xproc_fd,
                               (guint64) opt_child_xproc_count);
    }

  if (opt_versus != NULL)
    {
      run_versus (selected, n_selected, impls);
      return 0;
    }

  if ((impls & PEER_IMPLS) && !peers_check (impls))
    return 2;

  if (!opt_raw)
    {
      getloadavg (load, 3);
      printf ("mp-bench: %d runs per implementation, interleaved; scale %g; load average at start %.2f %.2f %.2f\n",
              opt_runs, opt_scale, load[0], load[1], load[2]);
      if (impls & PEER_IMPLS)
        {
          g_autofree char *versions = peer_versions_text (impls);

          printf ("peers: %s (bench/peers/scenarios.mjs)\n", versions);
        }
      fflush (stdout);
    }

  run_all (selected, n_selected, impls);

  if (opt_raw)
    return 0;

  print_table ();
  getloadavg (load, 3);
  printf ("\nwall time %.0f s; load average at end %.2f %.2f %.2f; %ld online CPUs; GLib %u.%u.%u",
          (g_get_monotonic_time () - started) / 1e6, load[0], load[1], load[2],
          sysconf (_SC_NPROCESSORS_ONLN), glib_major_version, glib_minor_version, glib_micro_version);
  if (impls & PEER_IMPLS)
    {
      g_autofree char *versions = peer_versions_text (impls);

      printf ("; %s", versions);
    }
  printf ("\n");

  if (opt_json != NULL)
    write_json (opt_json);
  if (opt_plot != NULL)
    write_plot (opt_plot);

  return 0;
}
