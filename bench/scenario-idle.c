/* scenario-idle.c: mp-bench's idle: what an idle channel costs in memory, measured in a
 * fresh process (mp-bench --child-idle N) (mpport only)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#define _GNU_SOURCE   /* sysconf(), _exit() under -std=c11 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gio/gio.h>
#include <mpport/mpport.h>

#include "scenarios.h"

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

int
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

void
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
