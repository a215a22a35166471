/* scenarios.h: mp-bench's scenarios, by file (the cross-process xproc-* are in xproc.h); the
 * table in mp-bench.c gives each its counts and implementations
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include "mp-bench.h"

G_BEGIN_DECLS

#define MAX_PRODUCERS         8

/* scenario-tput.c: tput, tput-str, fanin. */
void scenario_tput      (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out);
void scenario_tput_str  (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out);
void scenario_fanin     (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out);

/* Also from scenario-tput.c, for bcast's receivers too: the receiving end of int32 streams,
 * which checks FIFO order per producer and notes when it has all it expects. */
typedef struct
{
  guint64 expected;
  guint64 received;
  gint64 end_ns;
  gboolean done;
  guint32 next[MAX_PRODUCERS];   /* FIFO check, per producer */
} Counter;

void counter_init       (Counter        *counter,
                         guint64         expected);
/* A DeliverFunc; @user_data is the Counter. */
void deliver_int        (GVariant       *data,
                         gpointer        user_data);

/* scenario-pingpong.c */
void scenario_pingpong  (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out);

/* scenario-bcast.c */
void scenario_bcast     (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out);

/* scenario-churn.c */
void scenario_churn     (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out);

/* scenario-stress.c */
void scenario_stress    (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out);

/* scenario-idle.c; mp-bench --child-idle N: the fresh process that holds N idle channels and
 * prints what they cost (it does not return). */
void scenario_idle      (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out);
int  child_idle         (gint64          n);

/* scenario-bus.c; mp-bench --child-bus-receiver ADDRESS ...: one receiver process. Returns
 * the exit status. */
void scenario_bus       (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out);
int  child_bus_receiver (const char     *address,
                         Impl            impl,
                         guint64         n,
                         guint64         pings,
                         gboolean        echo);

/* scenario-flow.c: flow:0, flow:64, flow:1024, flow:sync (the variant is the part of the
 * scenario's name after the colon: the high-water mark, or sync). Besides msg/s (value),
 * a sample carries the peak n_queued in p50 and the peak RSS growth in bytes in p99. */
void scenario_flow      (const Scenario *scenario,
                         Impl            impl,
                         Sample         *out);

G_END_DECLS
