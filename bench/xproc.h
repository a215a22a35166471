/* xproc.h: the cross-process port scenarios of mp-bench (xproc-tput, xproc-pingpong)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include "mp-bench.h"

G_BEGIN_DECLS

/* Implementations that apply: mpport (a port whose peer is in the child process),
 * (d) a raw GDBus signal per message peer-to-peer, (e) serialized GVariants on a socketpair. */
#define XPROC_IMPLS ((1u << IMPL_MPPORT) | (1u << IMPL_SIGNAL) | (1u << IMPL_SOCKET))

void xproc_scenario_tput     (const Scenario *scenario,
                              Impl            impl,
                              Sample         *out);
void xproc_scenario_pingpong (const Scenario *scenario,
                              Impl            impl,
                              Sample         *out);

/* mp-bench --child-xproc tput|pingpong --child-xproc-fd FD --child-xproc-count N --impls IMPL:
 * the child's side of one sample. Returns the exit status. */
int  xproc_child_main        (const char *scenario,
                              Impl        impl,
                              int         fd,
                              guint64     count);

G_END_DECLS
