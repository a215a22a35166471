/* peers.h: the peers (--peers): Node and Bun, running bench/peers/scenarios.mjs, as two more
 * implementations of the scenarios that apply
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include "mp-bench.h"

G_BEGIN_DECLS

/* What each selected peer's runtime said to --version (peers_check ()); NULL otherwise. */
extern char *peer_versions[N_IMPLS];

/* @node, @bun: the runtimes to run (--node, --bun), NULL for node and bun on the PATH. */
gboolean peers_check        (guint           impls,
                             const char     *node,
                             const char     *bun);
void     run_peer           (const Scenario *scenario,
                             Impl            impl,
                             Sample         *out);
char    *peer_versions_text (guint           mask);

G_END_DECLS
