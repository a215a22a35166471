/* progress-window.c: a GTK 4 window fed by worker threads through MessagePorts
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Four worker threads each own one end of a MpMessageChannel; the window's
 * thread owns the other ends, started on the default main context that GTK
 * runs, so their "message" handlers may touch widgets. A worker is a plain
 * loop with no main loop of its own: it does one step of its job, posts a
 * "(uu)" (step, steps) message, and goes on; the window shows one progress
 * bar per worker, fed by nothing else.
 *
 * Cancelling is closing: the Cancel button, or closing the window, closes
 * the window's ports. Each worker asks mp_message_port_is_peer_closed()
 * before every step (it takes no lock) and stops once the window's end is
 * closed; its posts never fail because of that, those made after the close
 * are dropped. It then says where it stopped on a BroadcastChannel the
 * window listens to. A worker that finishes closes its port itself, after
 * its last progress message; the window then gets "close" after that
 * message.
 *
 *   progress-window [--duration-ms MS] [--cancel-at FRACTION]
 *                   [--screenshot FILE.png] [--timeout SECONDS]
 *
 * --cancel-at and --screenshot drive it without a user: the tests run it
 * under xvfb-run to completion (and once cancelled half way), save a PNG of
 * the window and check the exit status.
 */

#include <stdio.h>
#include <stdlib.h>

#include <gtk/gtk.h>
#include <mpport/mpport.h>

#define N_WORKERS       4
#define N_STEPS         100
#define STATUS_CHANNEL  "org.mpport.ProgressWindow.status"

/* ---- worker threads ----------------------------------------------------- */

/* One worker's job. Made by the window, then touched only by the worker's
 * thread until the window joins it. */
typedef struct
{
  guint          id;
  guint          n_steps;
  guint          step_ms;
  MpMessagePort *port;          /* owned: the worker's end, never started */
  guint          step;          /* steps done */
  gboolean       noticed_close; /* the window closed its end before the last step */
} Job;

/* Tells the window where the worker stopped, and whether it saw the window's
 * close. Not on the port: after a Cancel the window's end receives nothing.
 * The channel binds to a context of its own that nobody iterates: it only
 * posts, and closes before the context goes. */
static void
worker_report (Job *job)
{
  g_autoptr(GMainContext) context = g_main_context_new ();
  g_autoptr(MpBroadcastChannel) status = NULL;

  g_main_context_push_thread_default (context);
  status = mp_broadcast_channel_new (STATUS_CHANNEL);
  g_main_context_pop_thread_default (context);

  mp_broadcast_channel_post_message (status,
                                     g_variant_new ("(uub)", job->id, job->step,
                                                    job->noticed_close),
                                     NULL);
  mp_broadcast_channel_close (status);
}

static gpointer
worker_thread (gpointer data)
{
  Job *job = data;

  while (job->step < job->n_steps)
    {
      g_autoptr(GError) error = NULL;

      /* Between two units of work: did the window close its end (Cancel, or
       * the window closed)? Lock-free, so asking before every step is free. */
      if (mp_message_port_is_peer_closed (job->port))
        {
          job->noticed_close = TRUE;
          break;
        }

      g_usleep ((gulong) job->step_ms * 1000);   /* one step of the job */
      job->step++;

      /* Fails only if this worker closed or gave away its own port, which it
       * does not: if the window closed its end since the check above, the
       * message is dropped and this still succeeds. */
      if (!mp_message_port_post (job->port, g_variant_new ("(uu)", job->step, job->n_steps),
                                 &error))
        g_printerr ("worker %u: %s\n", job->id, error->message);
    }

  /* The window gets "close" after the last progress message (if it has not
   * closed its end already). */
  mp_message_port_close (job->port);
  g_clear_object (&job->port);

  worker_report (job);

  return job;
}

/* ---- the window ------------------------------------------------------- */

typedef struct _App App;

/* One worker as the window sees it; touched only on the window's thread. */
typedef struct
{
  App              *app;
  guint             id;
  MpMessageChannel *channel;
  MpMessagePort    *port;         /* port1 of channel: started on the default context */
  GThread          *thread;
  GtkProgressBar   *bar;
  GtkLabel         *state;
  guint             step;         /* last progress shown */
  guint             n_steps;
  gboolean          in_order;
  gboolean          closed;       /* port said "close" */
  gboolean          reported;     /* the worker said where it stopped */
  guint             stopped_at;
  gboolean          noticed_close;
} Row;

struct _App
{
  GtkApplication     *application;
  GtkWindow          *window;
  GtkLabel           *status;
  GtkWidget          *cancel;
  MpBroadcastChannel *status_channel;
  Row                 rows[N_WORKERS];
  guint               duration_ms;
  double              cancel_at;    /* < 0: never */
  char               *screenshot;
  guint               timeout_s;
  gboolean            cancelled;
  gboolean            finished;
  guint               n_ticks;
  int                 exit_status;
};

static double
total_fraction (App *app)
{
  double sum = 0;

  for (guint i = 0; i < N_WORKERS; i++)
    sum += (double) app->rows[i].step / app->rows[i].n_steps;
  return sum / N_WORKERS;
}

static gboolean
save_screenshot (GtkWidget   *widget,
                 const char  *path,
                 GError     **error)
{
  int width = gtk_widget_get_width (widget);
  int height = gtk_widget_get_height (widget);
  g_autoptr(GdkPaintable) paintable = gtk_widget_paintable_new (widget);
  GtkSnapshot *snapshot = gtk_snapshot_new ();
  g_autoptr(GskRenderNode) node = NULL;
  g_autoptr(GdkTexture) texture = NULL;
  GskRenderer *renderer = gtk_native_get_renderer (gtk_widget_get_native (widget));

  gdk_paintable_snapshot (paintable, GDK_SNAPSHOT (snapshot), width, height);
  node = gtk_snapshot_free_to_node (snapshot);
  if (node == NULL || renderer == NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "nothing to render");
      return FALSE;
    }
  texture = gsk_renderer_render_texture (renderer, node,
                                         &GRAPHENE_RECT_INIT (0, 0, width, height));
  if (!gdk_texture_save_to_png (texture, path))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "could not write %s", path);
      return FALSE;
    }
  printf ("screenshot: %s (%dx%d)\n", path, width, height);
  return TRUE;
}

/* A few frames after the end, so the last state is laid out and drawn. */
static gboolean
finish_tick (GtkWidget     *widget,
             GdkFrameClock *frame_clock,
             gpointer       user_data)
{
  App *app = user_data;
  g_autoptr(GError) error = NULL;

  if (++app->n_ticks < 5)
    return G_SOURCE_CONTINUE;

  if (!save_screenshot (widget, app->screenshot, &error))
    {
      g_printerr ("screenshot: %s\n", error->message);
      app->exit_status = EXIT_FAILURE;
    }
  gtk_window_destroy (app->window);
  return G_SOURCE_REMOVE;
}

/* Every port said "close" and every worker said where it stopped: join the
 * threads (they are leaving) and check the story adds up. */
static void
check_finished (App *app)
{
  guint n_done = 0, n_noticed = 0;
  g_autofree char *text = NULL;

  for (guint i = 0; i < N_WORKERS; i++)
    if (!app->rows[i].closed || !app->rows[i].reported)
      return;
  app->finished = TRUE;

  for (guint i = 0; i < N_WORKERS; i++)
    {
      Row *row = &app->rows[i];
      Job *job = g_thread_join (g_steal_pointer (&row->thread));
      gboolean ok = row->in_order && row->step <= row->stopped_at &&
                    job->step == row->stopped_at;

      if (!row->noticed_close)
        {
          n_done++;
          /* Finished: the window saw every step, the last one before "close"
           * (unless Cancel dropped the last ones as they arrived). */
          ok = ok && row->stopped_at == row->n_steps &&
               (row->step == row->n_steps || app->cancelled);
        }
      else
        {
          n_noticed++;
          ok = ok && app->cancelled && row->noticed_close;
        }

      printf ("worker %u: %s at step %u/%u (window showed %u)%s\n", row->id,
              row->noticed_close ? "noticed the close, stopped" : "finished",
              row->stopped_at, row->n_steps, row->step, ok ? "" : "  INCONSISTENT");
      if (!ok)
        app->exit_status = EXIT_FAILURE;
      g_free (job);
    }

  if (!app->cancelled)
    text = g_strdup_printf ("All %u workers finished", n_done);
  else if (n_done == 0)
    text = g_strdup_printf ("Cancelled: all %u workers noticed the close and stopped",
                            n_noticed);
  else
    text = g_strdup_printf ("Cancelled: %u workers noticed the close and stopped, "
                            "%u had finished", n_noticed, n_done);
  gtk_label_set_text (app->status, text);
  gtk_widget_set_sensitive (app->cancel, FALSE);
  printf ("%s\n", text);
  if (app->cancelled && n_noticed == 0)
    app->exit_status = EXIT_FAILURE;

  if (app->screenshot != NULL)
    gtk_widget_add_tick_callback (GTK_WIDGET (app->window), finish_tick, app, NULL);
}

/* The row's state label, from everything known so far, whatever the order
 * in which the port's "close" and the worker's report arrived. */
static void
update_row_state (Row *row)
{
  g_autofree char *text = NULL;

  if (row->reported && row->noticed_close)
    text = g_strdup_printf ("stopped at %u", row->stopped_at);
  else if (row->closed && row->step == row->n_steps)
    text = g_strdup ("done");
  else if (row->closed)
    text = g_strdup ("closed");
  else
    text = g_strdup ("running");
  gtk_label_set_text (row->state, text);
}

/* Cancelling is closing the window's ends: each worker sees
 * mp_message_port_is_peer_closed() before its next step and stops. Our ports
 * deliver nothing more from now on; each emits "close" later, here. */
static void
cancel_workers (App *app)
{
  app->cancelled = TRUE;
  gtk_widget_set_sensitive (app->cancel, FALSE);
  gtk_label_set_text (app->status, "Cancelling…");
  for (guint i = 0; i < N_WORKERS; i++)
    mp_message_port_close (app->rows[i].port);
}

static void
on_cancel_clicked (GtkButton *button,
                   gpointer   user_data)
{
  cancel_workers (user_data);
}

/* Closing the window while the workers run cancels them too; main() joins
 * them once the application has quit. The "close" of our ports and the
 * workers' reports still arrive while GTK winds down, after the widgets are
 * gone: nothing is left to show them. */
static gboolean
on_close_request (GtkWindow *window,
                  gpointer   user_data)
{
  App *app = user_data;

  if (!app->cancelled && !app->finished)
    cancel_workers (app);
  for (guint i = 0; i < N_WORKERS; i++)
    g_signal_handlers_disconnect_by_data (app->rows[i].port, &app->rows[i]);
  g_signal_handlers_disconnect_by_data (app->status_channel, app);
  return FALSE;   /* let it close */
}

static void
on_progress (MpMessagePort *port,
             MpMessage     *message,
             gpointer       user_data)
{
  Row *row = user_data;
  App *app = row->app;
  GVariant *data = mp_message_get_data (message);
  g_autofree char *text = NULL;
  guint step, n_steps;

  if (data == NULL || !g_variant_is_of_type (data, G_VARIANT_TYPE ("(uu)")))
    {
      row->in_order = FALSE;
      return;
    }
  g_variant_get (data, "(uu)", &step, &n_steps);
  if (step != row->step + 1 || n_steps != row->n_steps)
    row->in_order = FALSE;
  row->step = step;

  /* We are on the window's thread: GTK may be used here. */
  gtk_progress_bar_set_fraction (row->bar, (double) step / n_steps);
  text = g_strdup_printf ("%u / %u", step, n_steps);
  gtk_progress_bar_set_text (row->bar, text);

  if (app->cancel_at >= 0 && !app->cancelled && total_fraction (app) >= app->cancel_at)
    gtk_widget_activate (app->cancel);   /* as if the user clicked it */
}

static void
on_port_close (MpMessagePort *port,
               gpointer       user_data)
{
  Row *row = user_data;

  row->closed = TRUE;
  update_row_state (row);
  check_finished (row->app);
}

static void
on_status (MpBroadcastChannel *channel,
           MpMessage          *message,
           gpointer            user_data)
{
  App *app = user_data;
  guint id, step;
  gboolean noticed;
  Row *row;

  g_variant_get (mp_message_get_data (message), "(uub)", &id, &step, &noticed);
  if (id >= N_WORKERS)
    return;
  row = &app->rows[id];
  row->reported = TRUE;
  row->stopped_at = step;
  row->noticed_close = noticed;
  update_row_state (row);
  check_finished (app);
}

static gboolean
on_timeout (gpointer user_data)
{
  App *app = user_data;

  g_printerr ("progress-window: not finished after %u s\n", app->timeout_s);
  app->exit_status = EXIT_FAILURE;
  g_application_quit (G_APPLICATION (app->application));
  return G_SOURCE_REMOVE;
}

static GtkWidget *
build_window (App *app)
{
  GtkWidget *window = gtk_application_window_new (app->application);
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 12);
  GtkWidget *grid = gtk_grid_new ();
  GtkWidget *heading = gtk_label_new (NULL);

  gtk_window_set_title (GTK_WINDOW (window), "mpport progress");
  gtk_window_set_default_size (GTK_WINDOW (window), 520, -1);
  gtk_widget_set_margin_top (box, 18);
  gtk_widget_set_margin_bottom (box, 18);
  gtk_widget_set_margin_start (box, 18);
  gtk_widget_set_margin_end (box, 18);

  gtk_label_set_markup (GTK_LABEL (heading),
                        "<b>4 worker threads, each a plain loop</b>\n"
                        "<small>progress arrives only through MessagePorts; "
                        "Cancel closes them</small>");
  gtk_label_set_xalign (GTK_LABEL (heading), 0);
  gtk_box_append (GTK_BOX (box), heading);

  gtk_grid_set_row_spacing (GTK_GRID (grid), 10);
  gtk_grid_set_column_spacing (GTK_GRID (grid), 12);
  for (guint i = 0; i < N_WORKERS; i++)
    {
      Row *row = &app->rows[i];
      g_autofree char *name = g_strdup_printf ("Worker %u", i + 1);
      GtkWidget *label = gtk_label_new (name);
      GtkWidget *bar = gtk_progress_bar_new ();
      GtkWidget *state = gtk_label_new ("running");

      gtk_label_set_xalign (GTK_LABEL (label), 0);
      gtk_progress_bar_set_show_text (GTK_PROGRESS_BAR (bar), TRUE);
      gtk_progress_bar_set_text (GTK_PROGRESS_BAR (bar), "waiting");
      gtk_widget_set_hexpand (bar, TRUE);
      gtk_widget_set_valign (bar, GTK_ALIGN_CENTER);
      gtk_label_set_xalign (GTK_LABEL (state), 0);
      gtk_label_set_width_chars (GTK_LABEL (state), 13);
      gtk_grid_attach (GTK_GRID (grid), label, 0, (int) i, 1, 1);
      gtk_grid_attach (GTK_GRID (grid), bar, 1, (int) i, 1, 1);
      gtk_grid_attach (GTK_GRID (grid), state, 2, (int) i, 1, 1);
      row->bar = GTK_PROGRESS_BAR (bar);
      row->state = GTK_LABEL (state);
    }
  gtk_box_append (GTK_BOX (box), grid);

  app->status = GTK_LABEL (gtk_label_new ("Working…"));
  gtk_label_set_xalign (app->status, 0);
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (app->status));

  app->cancel = gtk_button_new_with_mnemonic ("_Cancel");
  gtk_widget_set_halign (app->cancel, GTK_ALIGN_END);
  g_signal_connect (app->cancel, "clicked", G_CALLBACK (on_cancel_clicked), app);
  gtk_box_append (GTK_BOX (box), app->cancel);

  gtk_window_set_child (GTK_WINDOW (window), box);
  g_signal_connect (window, "close-request", G_CALLBACK (on_close_request), app);
  return window;
}

static void
on_activate (GtkApplication *application,
             gpointer        user_data)
{
  App *app = user_data;

  if (app->window != NULL)
    {
      gtk_window_present (app->window);
      return;
    }

  app->window = GTK_WINDOW (build_window (app));

  /* Made on this thread with no context pushed: it and the ports below
   * deliver on the global default context, which GTK iterates. */
  app->status_channel = mp_broadcast_channel_new (STATUS_CHANNEL);
  g_signal_connect (app->status_channel, "message", G_CALLBACK (on_status), app);

  for (guint i = 0; i < N_WORKERS; i++)
    {
      Row *row = &app->rows[i];
      Job *job = g_new0 (Job, 1);
      g_autofree char *name = g_strdup_printf ("worker-%u", i);

      row->app = app;
      row->id = i;
      row->n_steps = N_STEPS;
      row->in_order = TRUE;
      row->channel = mp_message_channel_new ();
      row->port = mp_message_channel_get_port1 (row->channel);
      g_signal_connect (row->port, "message", G_CALLBACK (on_progress), row);
      g_signal_connect (row->port, "close", G_CALLBACK (on_port_close), row);
      mp_message_port_start (row->port);

      job->id = i;
      job->n_steps = N_STEPS;
      /* Workers of different speeds: 1×, 1.3×, 1.6×, 1.9× the duration. */
      job->step_ms = MAX (1, app->duration_ms * (10 + 3 * i) / 10 / N_STEPS);
      job->port = g_object_ref (mp_message_channel_get_port2 (row->channel));
      row->thread = g_thread_new (name, worker_thread, job);
    }

  if (app->timeout_s > 0)
    g_timeout_add_seconds (app->timeout_s, on_timeout, app);
  gtk_window_present (app->window);
}

int
main (int    argc,
      char **argv)
{
  g_autoptr(GOptionContext) option_context = NULL;
  g_autoptr(GError) error = NULL;
  App app = { 0, };
  int duration_ms = 4000;
  double cancel_at = -1;
  int timeout_s = 0;
  const GOptionEntry entries[] = {
    { "duration-ms", 'd', 0, G_OPTION_ARG_INT, &duration_ms,
      "How long the fastest worker takes (default 4000)", "MS" },
    { "cancel-at", 'c', 0, G_OPTION_ARG_DOUBLE, &cancel_at,
      "Press Cancel once this fraction of the work is done (0..1)", "FRACTION" },
    { "screenshot", 's', 0, G_OPTION_ARG_FILENAME, &app.screenshot,
      "When everything stopped, save the window as a PNG and quit", "FILE" },
    { "timeout", 't', 0, G_OPTION_ARG_INT, &timeout_s,
      "Fail if not finished after this many seconds", "SECONDS" },
    { NULL }
  };
  char *app_argv[] = { argv[0], NULL };
  int status;

  option_context = g_option_context_new ("- GTK 4 progress window fed through MessagePorts");
  g_option_context_add_main_entries (option_context, entries, NULL);
  if (!g_option_context_parse (option_context, &argc, &argv, &error))
    {
      g_printerr ("%s\n", error->message);
      return EXIT_FAILURE;
    }
  if (duration_ms < 1 || timeout_s < 0 || cancel_at > 1)
    {
      g_printerr ("invalid option value\n");
      return EXIT_FAILURE;
    }

  app.duration_ms = (guint) duration_ms;
  app.cancel_at = cancel_at;
  app.timeout_s = (guint) timeout_s;
  app.application = gtk_application_new ("org.mpport.ProgressWindow", G_APPLICATION_NON_UNIQUE);
  g_signal_connect (app.application, "activate", G_CALLBACK (on_activate), &app);

  status = g_application_run (G_APPLICATION (app.application), 1, app_argv);

  /* Quit early (the timeout): stop the workers the same way, by closing our
   * ends; closing twice is harmless. */
  for (guint i = 0; i < N_WORKERS; i++)
    {
      Row *row = &app.rows[i];

      if (row->port != NULL)
        mp_message_port_close (row->port);
      if (row->thread != NULL)
        g_free (g_thread_join (row->thread));
      if (row->port != NULL)
        g_signal_handlers_disconnect_by_data (row->port, row);
      g_clear_object (&row->channel);
    }
  if (app.status_channel != NULL)
    {
      g_signal_handlers_disconnect_by_data (app.status_channel, &app);
      mp_broadcast_channel_close (app.status_channel);
      g_clear_object (&app.status_channel);
    }
  if (!app.finished && app.exit_status == EXIT_SUCCESS && app.screenshot != NULL)
    app.exit_status = EXIT_FAILURE;

  g_object_unref (app.application);
  g_free (app.screenshot);

  return status != 0 ? status : app.exit_status;
}
