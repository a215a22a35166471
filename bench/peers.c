/* peers.c: mp-bench's peers (--peers): Node and Bun, each sample one runtime process running
 * bench/peers/scenarios.mjs, which prints a RESULT line as mp-bench --raw does
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include <gio/gio.h>

#include "peers.h"

/* The peers' runtimes (--node, --bun) and what they said to --version; NULL for the others. */
static const char *peer_runtimes[N_IMPLS];
char *peer_versions[N_IMPLS];

/* "Node v20.19.2, Bun 1.2.3": the peers of @mask that have a version (were selected). */
char *
peer_versions_text (guint mask)
{
  GString *text = g_string_new (NULL);

  for (Impl impl = 0; impl < N_IMPLS; impl++)
    if ((mask & (1u << impl)) && peer_versions[impl] != NULL)
      g_string_append_printf (text, "%s%s %s", text->len ? ", " : "", impl_labels[impl],
                              peer_versions[impl]);

  return g_string_free (text, FALSE);
}

/* Node, Bun: one sample is one runtime process running bench/peers/scenarios.mjs with the
 * count this run gives mpport (already scaled); the JavaScript times its own measured region
 * and prints a RESULT line. Whatever --in-process says: a runtime is a process of its own. */
void
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
gboolean
peers_check (guint       impls,
             const char *node,
             const char *bun)
{
  peer_runtimes[IMPL_NODE] = node != NULL ? node : "node";
  peer_runtimes[IMPL_BUN] = bun != NULL ? bun : "bun";

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
