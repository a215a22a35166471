/* mp-bench.c: mpport throughput, latency, churn and memory, against in-run baselines
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Every scenario runs mpport and, where they apply, three baselines (baselines.c), moving
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
 * and, across processes (the bus scenario, on a private dbus-daemon, in scenario-bus.c; the
 * xproc-* scenarios, a port whose peer is a child process, in xproc.c), against
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
 *
 * The files:
 *
 *   mp-bench.c           main(): the options, the scenario table and the targets, the runs
 *                        (interleaved, each in a child process; --versus), the tables, --json
 *                        and --plot
 *   mp-bench.h           what they all share; harness.c defines most of it: the clock, a
 *                        latch, heap-allocation counting and the measured region, the
 *                        counting main loop (Loop), the baselines' sink (BenchSink)
 *   baselines.{c,h}      a Link between threads: mpport's port, (a) invoke, (b) queue, (c) ring
 *   scenarios.h          the entry points of:
 *   scenario-tput.c        tput, tput-str, fanin
 *   scenario-pingpong.c    pingpong
 *   scenario-bcast.c       bcast
 *   scenario-churn.c       churn
 *   scenario-stress.c      stress
 *   scenario-idle.c        idle (and its process, --child-idle)
 *   scenario-bus.c         bus (and its receiver processes, --child-bus-*)
 *   scenario-flow.c        flow:0, flow:64, flow:1024, flow:sync (a group: "flow" runs them all)
 *   xproc.{c,h}          xproc-tput, xproc-pingpong (and the child process, --child-xproc*)
 *   peers.{c,h}          --peers: Node and Bun, running peers/scenarios.mjs
 */

#define _GNU_SOURCE   /* getloadavg() */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <mpport/mpport.h>

#include "mp-bench.h"
#include "peers.h"
#include "scenarios.h"
#include "xproc.h"

/* ------------------------------------------------------------------------------------------ */
/* Parameters                                                                                 */
/* ------------------------------------------------------------------------------------------ */

#define DEFAULT_RUNS          5

/* Impl is in mp-bench.h. */
const char *const impl_names[N_IMPLS] = { "mpport", "invoke", "queue", "ring", "signal", "socket", "node", "bun" };
const char *const impl_labels[N_IMPLS] = { "mpport", "(a) invoke", "(b) queue", "(c) ring", "(d) signal",
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

/* Options (opt_scale and opt_callgrind are read by the harness too: mp-bench.h). */
static int opt_runs = DEFAULT_RUNS;
double opt_scale = 1.0;
static char *opt_impls;
static char *opt_json;
static char *opt_plot;
static char *opt_versus;
gboolean opt_callgrind;
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

/* This program (mp-bench.h). */
char *self_exe;

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
  /* A group: "flow" on the command line selects every flow:*, and their runs are
   * interleaved with each other (see run_all ()). */
  { "flow:0", "msg/s", TRUE, MPPORT_ONLY, scenario_flow, 1000000,
    "producer thread, post_message_async(), 32 in flight, no mark; consumer: 2 us of work/msg" },
  { "flow:64", "msg/s", TRUE, MPPORT_ONLY, scenario_flow, 1000000,
    "as flow:0, the receiving port's high-water mark 64" },
  { "flow:1024", "msg/s", TRUE, MPPORT_ONLY, scenario_flow, 1000000,
    "as flow:0, the receiving port's high-water mark 1024" },
  { "flow:sync", "msg/s", TRUE, MPPORT_ONLY, scenario_flow, 1000000,
    "as flow:0 with post_message() in a loop (no mark)" },
};

#define N_SCENARIOS G_N_ELEMENTS (scenarios)

/* Targets, from the issue; reported, never asserted. */
typedef enum { TARGET_NONE, TARGET_MIN_RATIO, TARGET_MAX_RATIO, TARGET_MIN_VALUE, TARGET_MAX_VALUE,
               TARGET_MIN_SCENARIO_RATIO } TargetKind;

typedef struct
{
  const char *scenario;
  const char *metric;    /* "value", "p50", "p99" */
  TargetKind kind;
  Impl against;          /* for ratios */
  double bound;
  const char *text;
  const char *against_scenario;   /* TARGET_MIN_SCENARIO_RATIO: mpport's in this one */
} Target;

static const Target targets[] = {
  /* Issue 13 (it replaced the earlier >= 0.8x ring, >= 9x invoke and 960 k ops/s churn). */
  { "tput", "value", TARGET_MIN_RATIO, IMPL_RING, 0.9, ">= 0.9x (c) ring" },
  { "tput-str", "value", TARGET_MIN_RATIO, IMPL_RING, 0.9, ">= 0.9x (c) ring" },
  { "fanin", "value", TARGET_MIN_RATIO, IMPL_RING, 0.9, ">= 0.9x (c) ring" },
  { "pingpong", "value", TARGET_MAX_RATIO, IMPL_RING, 1.05, "mean <= 1.05x (c) ring" },
  { "bcast", "value", TARGET_MIN_RATIO, IMPL_RING, 0.6, ">= 0.6x (c) ring per receiver" },
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
  { "idle", "value", TARGET_MAX_VALUE, IMPL_MPPORT, 384, "<= 384 B/channel" },
  { "bus", "value", TARGET_MIN_RATIO, IMPL_SIGNAL, 3.0, ">= 3x (d) signal" },
  { "bus", "p50", TARGET_MAX_RATIO, IMPL_SIGNAL, 1.1, "p50 <= 1.1x (d) signal" },
  { "xproc-tput", "value", TARGET_MIN_RATIO, IMPL_SOCKET, 0.5, ">= 0.5x (e) socket" },
  { "xproc-tput", "value", TARGET_MIN_RATIO, IMPL_SIGNAL, 10.0, ">= 10x (d) signal" },
  { "xproc-pingpong", "value", TARGET_MAX_RATIO, IMPL_SOCKET, 1.2, "mean <= 1.2x (e) socket" },
  /* Issue 17. */
  { "flow:1024", "value", TARGET_MIN_SCENARIO_RATIO, IMPL_MPPORT, 0.9, ">= 0.9x flow:0", "flow:0" },
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
    case TARGET_MIN_SCENARIO_RATIO:
      *measured = value / median_metric (series_find (target->against_scenario, IMPL_MPPORT), target->metric);
      return *measured >= target->bound;
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

/* The flow:* group (issue 17): each variant against flow:0, and the memory it held. */
static void
print_flow_table (void)
{
  Series *reference = series_find ("flow:0", IMPL_MPPORT);
  gboolean header = FALSE;

  for (guint s = 0; s < N_SCENARIOS; s++)
    {
      const Scenario *scenario = &scenarios[s];
      Series *series = scenario->run == scenario_flow ? series_find (scenario->name, IMPL_MPPORT) : NULL;
      double value, rss;
      char buf[32], ratio[16] = "-", rss_text[32];

      if (series == NULL)
        continue;
      if (!header)
        {
          printf ("\nFlow control, mpport, medians per run: msg/s and its ratio to flow:0 (async posts, no "
                  "mark), the peak n_queued\nat the receiving port (sampled every 64 messages) and the peak "
                  "RSS growth of the sample's process (VmHWM)\n");
          printf ("%-16s %11s %8s %12s %12s\n", "scenario", "msg/s", "/flow:0", "peak queued", "peak RSS +");
          header = TRUE;
        }
      value = MEDIAN_D (series, value);
      rss = MEDIAN_D (series, p99);
      format_value (buf, sizeof (buf), value, scenario->unit);
      if (reference != NULL)
        g_snprintf (ratio, sizeof (ratio), "%.3fx", value / MEDIAN_D (reference, value));
      if (rss >= 1024 * 1024)
        g_snprintf (rss_text, sizeof (rss_text), "%.1f MiB", rss / (1024 * 1024));
      else
        g_snprintf (rss_text, sizeof (rss_text), "%.0f KiB", rss / 1024);
      printf ("%-16s %11s %8s %12.0f %12s\n", scenario->name, buf, ratio, MEDIAN_D (series, p50), rss_text);
    }
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

  print_flow_table ();
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
                              "set ytics ('1/64' 0.015625, '1/16' 0.0625, '1/4' 0.25, '0.5' 0.5, '0.9' 0.9, '1' 1, '2' 2, '4' 4)\n"
                              "set arrow 1 from graph 0, first 0.9 to graph 1, first 0.9 nohead dt 2 lc rgb 'red'\n"
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
void
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

/* Whether @a and @b are variants of one group ("flow:64", "flow:1024"). */
static gboolean
same_group (const Scenario *a,
            const Scenario *b)
{
  const char *colon = strchr (a->name, ':');

  return colon != NULL && strncmp (a->name, b->name, colon - a->name + 1) == 0;
}

static void
run_all (const Scenario **selected,
         guint            n_selected,
         guint            impls)
{
  guint n_steps = 0, step = 0;

  for (guint s = 0; s < n_selected; s++)
    n_steps += opt_runs * (guint) __builtin_popcount (selected[s]->impls & impls);

  /* The variants of a group are compared with each other: their runs are interleaved as
   * implementations are (run 1 of each variant, then run 2 ...). */
  for (guint first = 0, end = 0; first < n_selected; first = end)
    {
      for (end = first + 1; end < n_selected && same_group (selected[first], selected[end]); end++)
        ;
      for (int run = 1; run <= opt_runs; run++)
        for (guint s = first; s < end; s++)
          for (Impl impl = 0; impl < N_IMPLS; impl++)
            {
              const Scenario *scenario = selected[s];
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
                                "xproc-tput xproc-pingpong flow (flow:0 flow:64 flow:1024 flow:sync) "
                                "(default: all).\nImplementations: mpport, "
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
      gsize len = strlen (argv[a]);
      gboolean known = FALSE;

      /* A scenario by its name, or a group ("flow") by the name its variants share before
       * the colon ("flow:64"); each scenario once. */
      for (guint s = 0; s < N_SCENARIOS; s++)
        if (g_str_equal (argv[a], scenarios[s].name) ||
            (strncmp (argv[a], scenarios[s].name, len) == 0 && scenarios[s].name[len] == ':'))
          {
            guint k;

            known = TRUE;
            for (k = 0; k < n_selected && selected[k] != &scenarios[s]; k++)
              ;
            if (k == n_selected)
              selected[n_selected++] = &scenarios[s];
          }
      if (!known)
        {
          g_printerr ("mp-bench: unknown scenario '%s' (try --list)\n", argv[a]);
          return 2;
        }
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

  if ((impls & PEER_IMPLS) && !peers_check (impls, opt_node, opt_bun))
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
