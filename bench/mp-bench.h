/* mp-bench.h: what mp-bench's files share: implementations, samples, scenarios, and the
 * harness (harness.c) they measure with: the clock, a latch, the measured region and its
 * heap allocations, the counting main loop, the baselines' sink
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The map of the files is at the top of mp-bench.c.
 */

#pragma once

#include <stdlib.h>   /* __GLIBC__, for COUNT_ALLOCS */

#include <gio/gio.h>
#include <mpport/mpport.h>

G_BEGIN_DECLS

#define BASELINE_BUDGET       1024      /* messages per dispatch, as MP_MESSAGE_PORT_DISPATCH_BUDGET */
#define PINGPONG_WARMUP       1000      /* round trips before the measured ones */
#define TIMEOUT_SECONDS       120

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

/* 1 where harness.c counts heap allocations: glibc's, and not under ASan or TSan, which
 * interpose the allocator themselves (the tables and the JSON say so when it is 0). */
#if defined(__GLIBC__) && !defined(BENCH_ASAN) && !defined(BENCH_TSAN)
#define COUNT_ALLOCS 1
#else
#define COUNT_ALLOCS 0
#endif

typedef enum {
  IMPL_MPPORT,
  IMPL_INVOKE,
  IMPL_QUEUE,
  IMPL_RING,
  IMPL_SIGNAL,     /* (d): over the bus in bus, peer-to-peer in xproc-* */
  IMPL_SOCKET,     /* (e): length-prefixed serialized GVariants on a bare socketpair */
  IMPL_NODE,       /* the peers (--peers): bench/peers/scenarios.mjs on Node's worker_threads */
  IMPL_BUN,        /* ... and on Bun's */
  N_IMPLS
} Impl;

/* In mp-bench.c. Names: --impls, the JSON, the RESULT lines; labels: the tables. */
extern const char *const impl_names[N_IMPLS];
extern const char *const impl_labels[N_IMPLS];

/* One measurement. */
typedef struct
{
  double value;          /* the scenario's metric, in its unit */
  double p50, p99;       /* pingpong, bus, xproc-pingpong: µs per round trip; else 0 */
  double seconds;        /* wall time of the measured region */
  guint64 messages;      /* messages (or operations) in the measured region */
  guint64 iterations;    /* main-loop iterations of the receiving context(s) */
  guint64 sleeps;        /* polls of the receiving context(s) allowed to block */
  guint64 wakes;         /* baselines (b)/(c): wake-ups signalled by the producer(s) */
  guint64 allocs;        /* malloc/calloc/realloc calls in the measured region, all threads */
} Sample;

typedef struct _Scenario Scenario;
typedef void (*ScenarioFunc) (const Scenario *scenario, Impl impl, Sample *out);

struct _Scenario
{
  const char *name;
  const char *unit;
  gboolean higher_is_better;
  guint impls;            /* which implementations apply */
  ScenarioFunc run;
  guint64 count;          /* messages / round trips / operations, before --scale */
  const char *what;       /* one line for --help and the README */
};

/* What a link or a process end hands each received message to. */
typedef void (*DeliverFunc) (GVariant *data,
                             gpointer  user_data);

/* This program, for the child processes. */
extern char *self_exe;

/* The options the harness reads; main() (mp-bench.c) parses them all before any run. */
extern double opt_scale;          /* --scale: see scaled () */
extern gboolean opt_callgrind;    /* --callgrind: see measure_begin () */

gint64   now_ns         (void);
guint64  scaled         (guint64       count);
int      compare_double (gconstpointer a,
                         gconstpointer b);

/* A latch: count up, wait for a target. Also used as a one-shot gate (target 1). */
typedef struct
{
  GMutex mutex;
  GCond cond;
  guint count;
} Latch;

void     latch_init     (Latch         *latch);
void     latch_clear    (Latch         *latch);
void     latch_add      (Latch         *latch);
/* The process fails if @target is not reached within TIMEOUT_SECONDS. */
void     latch_wait     (Latch         *latch,
                         guint          target);

/* The measured region: heap allocations of this process in it (every thread) end up in
 * measured_allocs; under --callgrind only it is counted. Main thread only. */
extern guint64 measured_allocs;
void     measure_begin  (void);
void     measure_end    (void);

/* A receiving context with counters: a fresh GMainContext pushed as the thread-default,
 * iterations counted by a sentinel source, blocking polls by a poll function. */
typedef struct
{
  GMainContext *context;
  GSource *sentinel;
  guint64 iterations;
  guint64 sleeps;
} Loop;

Loop    *loop_new       (void);
void     loop_reset     (Loop           *loop);
void     loop_run_until (Loop           *loop,
                         const gboolean *done);
void     loop_flush     (Loop           *loop);
void     loop_free      (Loop           *loop);

/* The calling thread's Loop, from loop_new () to loop_free (); NULL before and after. */
extern _Thread_local Loop *thread_loop;

/* The baselines' receiving object: a "message" (GVariant) signal, emitted once per message
 * with g_signal_emit (sink, sink_message_signal, 0, data). */
#define BENCH_TYPE_SINK (bench_sink_get_type ())
G_DECLARE_FINAL_TYPE (BenchSink, bench_sink, BENCH, SINK, GObject)

extern guint sink_message_signal;

/* The receiving end shared by the scenarios across processes: what a received message is
 * handed to, and (for the baselines) the sink that emits it. Connect the three handlers
 * below with the receiver as their user data. */
typedef struct
{
  BenchSink *sink;        /* (d), (e): what a received message is emitted on */
  DeliverFunc deliver;
  gpointer deliver_data;
} BenchReceiver;

/* "message" of an MpMessagePort or an MpBroadcastChannel. */
void bench_receiver_on_mp_message (gpointer       instance,
                                   MpMessage     *message,
                                   gpointer       receiver);
/* "message" of the sink. */
void bench_receiver_on_sink_message (BenchSink   *sink,
                                     GVariant    *data,
                                     gpointer     receiver);
/* (d): GDBus calls this on the context that was thread-default when subscribing, through
 * one idle source per signal; the body is (v). */
void bench_receiver_on_signal (GDBusConnection *connection,
                               const char      *sender_name,
                               const char      *object_path,
                               const char      *interface_name,
                               const char      *signal_name,
                               GVariant        *parameters,
                               gpointer         receiver);

/* A GSpawnChildSetupFunc: the child gets SIGTERM when the sample's process dies. */
void     die_with_parent (gpointer data);

/* In mp-bench.c: spawns @argv (stderr inherited) and reads the RESULT line of the sample it
 * ran (mp-bench --raw, or bench/peers/scenarios.mjs) into @out. */
void     run_child_sample (const char *const *argv,
                           GSpawnFlags        flags,
                           const Scenario    *scenario,
                           Impl               impl,
                           Sample            *out);

G_END_DECLS
