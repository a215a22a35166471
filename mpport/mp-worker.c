/* mp-worker.c: mpport's own thread, for what must not depend on the application's
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include "mp-worker-private.h"

static GMainContext *worker_context;

static gpointer
worker_main (gpointer data)
{
  GMainContext *context = data;
  GMainLoop *loop = g_main_loop_new (context, FALSE);

  g_main_context_push_thread_default (context);
  g_main_loop_run (loop);   /* for the life of the process */
  g_main_context_pop_thread_default (context);
  g_main_loop_unref (loop);

  return NULL;
}

GMainContext *
mp_worker_context (void)
{
  static gsize started = 0;

  if (g_once_init_enter (&started))
    {
      worker_context = g_main_context_new ();
      g_thread_unref (g_thread_new ("mpport-worker", worker_main, worker_context));
      g_once_init_leave (&started, 1);
    }

  return worker_context;
}
