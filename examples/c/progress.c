/* progress.c: worker threads report progress to the main thread
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Four worker threads each run their own GMainContext and own one end of a
 * MpMessageChannel; the main thread owns the other end, started on the
 * default main context.  The main thread posts every worker its job over
 * the channel.  The worker posts a small "(uu)" (worker, steps done) message
 * after each step of simulated work, then closes its port.  The main thread
 * draws one progress bar per worker and quits once every one of its ports
 * has emitted "close", which arrives only after every message the worker
 * posted before closing.  Ctrl-C posts "cancel" to the workers, which stop
 * early and close.
 *
 *   progress [--plain] [--steps N]
 */

#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <glib-unix.h>
#include <mpport/mpport.h>

#define N_WORKERS          4
#define DEFAULT_STEPS      20000
#define BAR_WIDTH          32
#define REDRAW_INTERVAL_MS 50

/* Worker side: lives on the worker thread's stack, touched only there. */
typedef struct
{
  guint    id;
  guint    n_steps;
  guint    duration_ms;  /* how long the simulated work takes in total */
  gboolean has_job;
  gboolean cancelled;
  gboolean closed;       /* our port emitted "close" */
} Job;

typedef struct _Demo Demo;

/* Main side: one per worker, touched only on the main thread (the handlers
 * of port run there because port was started there). */
typedef struct
{
  Demo             *demo;
  guint             id;
  guint             n_steps;
  MpMessageChannel *channel;
  MpMessagePort    *port;            /* port1 of channel, started on main */
  GThread          *thread;
  guint             done;            /* last step reported */
  guint             n_messages;
  guint             next_milestone;  /* in percent, for plain output */
  gboolean          in_order;        /* every step arrived once, in order */
  gboolean          closed;
  double            seconds;         /* when "close" arrived */
} Progress;

struct _Demo
{
  Progress    workers[N_WORKERS];
  GMainLoop  *loop;
  GTimer     *timer;
  gboolean    fancy;       /* redraw the bars in place with ANSI escapes */
  gboolean    drawn;       /* the bars are on screen: move up to redraw */
  gboolean    cancelled;
  guint       n_closed;
  guint64     n_messages;
  const char *full;        /* glyphs of the bars */
  const char *empty;
};

/* ---- worker thread ---------------------------------------------------- */

static void
worker_on_message (MpMessagePort *port,
                   MpMessage     *message,
                   gpointer       user_data)
{
  Job *job = user_data;
  GVariant *data = mp_message_get_data (message);

  if (data == NULL)
    return;

  if (g_variant_is_of_type (data, G_VARIANT_TYPE ("(uuu)")))
    {
      g_variant_get (data, "(uuu)", &job->id, &job->n_steps, &job->duration_ms);
      job->has_job = TRUE;
    }
  else if (g_variant_is_of_type (data, G_VARIANT_TYPE_STRING) &&
           g_strcmp0 (g_variant_get_string (data, NULL), "cancel") == 0)
    {
      job->cancelled = TRUE;
    }
}

static void
worker_on_close (MpMessagePort *port,
                 gpointer       user_data)
{
  Job *job = user_data;

  job->closed = TRUE;
}

/* Sleeps until step @step of @job is due, so the run takes about
 * duration_ms whatever the cost of posting; short waits are skipped and
 * made up later. */
static void
simulate_work (const Job *job,
               gint64     start,
               guint      step)
{
  gint64 due = start + (gint64) job->duration_ms * 1000 * step / job->n_steps;
  gint64 now = g_get_monotonic_time ();

  if (due - now > 1000)
    g_usleep ((gulong) (due - now));
}

static gpointer
worker_thread (gpointer data)
{
  g_autoptr(MpMessagePort) port = data;
  g_autoptr(GMainContext) context = g_main_context_new ();
  Job job = { 0, };
  gint64 start;
  guint step;

  /* start() binds the port to this thread's thread-default context: its
   * "message" and "close" handlers run here, inside our iterations. */
  g_main_context_push_thread_default (context);
  g_signal_connect (port, "message", G_CALLBACK (worker_on_message), &job);
  g_signal_connect (port, "close", G_CALLBACK (worker_on_close), &job);
  mp_message_port_start (port);

  while (!job.has_job && !job.closed)
    g_main_context_iteration (context, TRUE);

  start = g_get_monotonic_time ();
  for (step = 1; job.has_job && !job.cancelled && step <= job.n_steps; step++)
    {
      g_autoptr(GError) error = NULL;

      simulate_work (&job, start, step);

      if (!mp_message_port_post_message (port, g_variant_new ("(uu)", job.id, step),
                                         NULL, 0, &error))
        {
          g_printerr ("worker %u: %s\n", job.id, error->message);
          break;
        }

      /* Look for a "cancel" from main now and then, without blocking. */
      if (step % 64 == 0)
        while (g_main_context_iteration (context, FALSE))
          ;
    }

  /* The peer gets "close" after every message posted above; we get ours
   * from our own context. */
  mp_message_port_close (port);
  while (!job.closed)
    g_main_context_iteration (context, TRUE);

  g_signal_handlers_disconnect_by_data (port, &job);
  g_main_context_pop_thread_default (context);

  return NULL;
}

/* ---- main thread ------------------------------------------------------ */

static void
append_bar (Demo     *demo,
            GString  *out,
            Progress *p)
{
  guint percent = p->n_steps ? (guint) ((guint64) p->done * 100 / p->n_steps) : 100;
  guint filled = p->n_steps ? (guint) ((guint64) p->done * BAR_WIDTH / p->n_steps) : BAR_WIDTH;
  guint i;

  g_string_append_printf (out, "worker %u [", p->id);
  for (i = 0; i < BAR_WIDTH; i++)
    g_string_append (out, i < filled ? demo->full : demo->empty);
  g_string_append_printf (out, "] %3u%% %6u/%u", percent, p->done, p->n_steps);
  if (p->closed)
    g_string_append_printf (out, "  %s %.2f s",
                            p->done == p->n_steps ? "done in" : "stopped at",
                            p->seconds);
}

static void
draw_bars (Demo *demo)
{
  g_autoptr(GString) out = g_string_new (NULL);
  guint i;

  /* Back to the first bar, then rewrite each line in place. */
  if (demo->fancy && demo->drawn)
    g_string_append_printf (out, "\033[%uA", N_WORKERS);

  for (i = 0; i < N_WORKERS; i++)
    {
      if (demo->fancy)
        g_string_append (out, "\r\033[2K");
      append_bar (demo, out, &demo->workers[i]);
      g_string_append_c (out, '\n');
    }

  fputs (out->str, stdout);
  fflush (stdout);
  demo->drawn = TRUE;
}

static gboolean
redraw_cb (gpointer user_data)
{
  draw_bars (user_data);

  return G_SOURCE_CONTINUE;
}

static void
on_progress (MpMessagePort *port,
             MpMessage     *message,
             gpointer       user_data)
{
  Progress *p = user_data;
  Demo *demo = p->demo;
  GVariant *data = mp_message_get_data (message);
  guint id, step;

  if (data == NULL || !g_variant_is_of_type (data, G_VARIANT_TYPE ("(uu)")))
    {
      g_printerr ("worker %u: unexpected message\n", p->id);
      p->in_order = FALSE;
      return;
    }

  g_variant_get (data, "(uu)", &id, &step);
  if (id != p->id || step != p->done + 1)
    p->in_order = FALSE;
  p->done = step;
  p->n_messages++;
  demo->n_messages++;

  if (!demo->fancy && p->n_steps > 0)
    {
      guint percent = (guint) ((guint64) step * 100 / p->n_steps);

      if (percent >= p->next_milestone && p->next_milestone < 100)
        {
          printf ("worker %u: %3u%% (%u/%u) at %.2f s\n", p->id, percent,
                  step, p->n_steps, g_timer_elapsed (demo->timer, NULL));
          fflush (stdout);
          p->next_milestone = (percent / 25 + 1) * 25;
        }
    }
}

static void
on_close (MpMessagePort *port,
          gpointer       user_data)
{
  Progress *p = user_data;
  Demo *demo = p->demo;

  p->closed = TRUE;
  p->seconds = g_timer_elapsed (demo->timer, NULL);

  if (!demo->fancy)
    {
      printf ("worker %u: closed after %u messages at %.2f s\n",
              p->id, p->n_messages, p->seconds);
      fflush (stdout);
    }

  if (++demo->n_closed == N_WORKERS)
    g_main_loop_quit (demo->loop);
}

static gboolean
on_sigint (gpointer user_data)
{
  Demo *demo = user_data;
  guint i;

  demo->cancelled = TRUE;
  for (i = 0; i < N_WORKERS; i++)
    if (!demo->workers[i].closed)
      mp_message_port_post_message (demo->workers[i].port,
                                    g_variant_new_string ("cancel"),
                                    NULL, 0, NULL);

  /* A second Ctrl-C kills the process as usual. */
  return G_SOURCE_REMOVE;
}

int
main (int    argc,
      char **argv)
{
  g_autoptr(GOptionContext) option_context = NULL;
  g_autoptr(GError) error = NULL;
  gboolean plain = FALSE;
  int n_steps = DEFAULT_STEPS;
  const GOptionEntry entries[] = {
    { "plain", 'p', 0, G_OPTION_ARG_NONE, &plain,
      "Print occasional plain lines instead of redrawing bars in place", NULL },
    { "steps", 's', 0, G_OPTION_ARG_INT, &n_steps,
      "Progress messages per worker (default 20000)", "N" },
    { NULL }
  };
  Demo demo = { 0, };
  guint redraw_id = 0;
  guint sigint_id;
  gboolean ok = TRUE;
  double seconds;
  guint i;

  setlocale (LC_ALL, "");

  option_context = g_option_context_new ("- mpport progress demo");
  g_option_context_set_summary (option_context,
                                "Four worker threads, each with its own GMainContext, "
                                "report progress\nthrough MpMessagePorts started on "
                                "the main thread.");
  g_option_context_add_main_entries (option_context, entries, NULL);
  if (!g_option_context_parse (option_context, &argc, &argv, &error))
    {
      g_printerr ("%s\n", error->message);
      return EXIT_FAILURE;
    }
  if (n_steps < 1)
    {
      g_printerr ("--steps must be at least 1\n");
      return EXIT_FAILURE;
    }

  demo.fancy = !plain && isatty (STDOUT_FILENO) &&
               g_strcmp0 (g_getenv ("TERM"), "dumb") != 0;
  if (g_get_charset (NULL))
    {
      demo.full = "\xe2\x96\x88";   /* U+2588 FULL BLOCK */
      demo.empty = "\xe2\x96\x91";  /* U+2591 LIGHT SHADE */
    }
  else
    {
      demo.full = "#";
      demo.empty = "-";
    }
  demo.loop = g_main_loop_new (NULL, FALSE);
  demo.timer = g_timer_new ();

  printf ("mpport progress demo: %u workers, %d progress messages each\n",
          N_WORKERS, n_steps);

  for (i = 0; i < N_WORKERS; i++)
    {
      Progress *p = &demo.workers[i];
      g_autofree char *name = g_strdup_printf ("worker-%u", i);
      guint duration_ms = 1500 + 500 * i;

      p->demo = &demo;
      p->id = i;
      p->n_steps = (guint) n_steps;
      p->next_milestone = 25;
      p->in_order = TRUE;
      p->channel = mp_message_channel_new ();
      p->port = mp_message_channel_get_port1 (p->channel);

      /* No thread-default context is pushed on this thread, so start()
       * binds port1 to the global default context that demo.loop runs. */
      g_signal_connect (p->port, "message", G_CALLBACK (on_progress), p);
      g_signal_connect (p->port, "close", G_CALLBACK (on_close), p);
      mp_message_port_start (p->port);

      /* Queued at port2 until the worker starts it on its own context. */
      if (!mp_message_port_post_message (p->port,
                                         g_variant_new ("(uuu)", i, p->n_steps, duration_ms),
                                         NULL, 0, &error))
        g_error ("posting the job: %s", error->message);

      /* Port objects may be used from any thread: hand port2 over. */
      p->thread = g_thread_new (name, worker_thread,
                                g_object_ref (mp_message_channel_get_port2 (p->channel)));
    }

  if (demo.fancy)
    {
      draw_bars (&demo);
      redraw_id = g_timeout_add (REDRAW_INTERVAL_MS, redraw_cb, &demo);
    }
  sigint_id = g_unix_signal_add (SIGINT, on_sigint, &demo);

  g_main_loop_run (demo.loop);
  seconds = g_timer_elapsed (demo.timer, NULL);

  if (redraw_id != 0)
    g_source_remove (redraw_id);
  if (!demo.cancelled)
    g_source_remove (sigint_id);

  /* Final state of the bars: redrawn in place, or printed once. */
  draw_bars (&demo);

  for (i = 0; i < N_WORKERS; i++)
    {
      Progress *p = &demo.workers[i];

      g_thread_join (p->thread);
      g_signal_handlers_disconnect_by_data (p->port, p);
      g_clear_object (&p->channel);

      if (!p->in_order || (!demo.cancelled && p->done != p->n_steps))
        {
          g_printerr ("worker %u: %u of %u steps, %s\n", p->id, p->done,
                      p->n_steps, p->in_order ? "in order" : "OUT OF ORDER");
          ok = FALSE;
        }
    }

  printf ("%s: %" G_GUINT64_FORMAT " messages in %.2f s, %.0f messages/s\n",
          demo.cancelled ? "cancelled" : "summary",
          demo.n_messages, seconds, seconds > 0 ? demo.n_messages / seconds : 0.0);

  g_timer_destroy (demo.timer);
  g_main_loop_unref (demo.loop);

  if (!ok)
    return EXIT_FAILURE;
  return demo.cancelled ? 128 + SIGINT : EXIT_SUCCESS;
}
