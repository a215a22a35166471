/* backpressure-window.c: a GTK 4 window paces a fast producer thread
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A producer thread makes messages far faster than the window can show them.
 * The window's end of the MpMessageChannel is started on the default main
 * context, which GTK runs, and has a "high-water-mark": once that many
 * messages are queued at it, the producer's next
 * mp_message_port_post_message_async() waits for room. The producer posts
 * its next message only from the callback of the previous one (on a
 * GMainContext of its own), so it runs exactly as fast as the window
 * consumes, and the window's queue — its memory — never grows past the mark.
 *
 * The window handles every message slowly on purpose: a progress bar and a
 * label update, plus some busy work. It stays responsive: a spinner turns,
 * and it shows the frames drawn and the longest gap between two, the queue
 * at its port against the mark, and the process's resident memory. The mark
 * can be changed while it runs (0: no mark, as on the Web — watch the queue
 * and the memory grow), and Cancel closes the window's port: a post waiting
 * for room, and any post made after, then fails with MP_ERROR_CLOSED (or
 * the producer sees mp_message_port_is_peer_closed() before its next post),
 * and it stops.
 *
 *   backpressure-window [--messages N] [--mark M] [--work-us US]
 *                       [--payload-bytes B] [--check] [--cancel-at FRACTION]
 *                       [--screenshot FILE.png] [--timeout SECONDS]
 *
 * --check runs without a user: when the producer is done (or cancelled at
 * --cancel-at), it checks that every message arrived once, in order, that
 * the queue never held more than the mark and that frames were drawn, then
 * quits (after saving --screenshot, if given) with the verdict as exit
 * status. The tests run it so under xvfb-run.
 */

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <gtk/gtk.h>
#include <mpport/mpport.h>

#define REFRESH_MS 100

/* ---- the producer thread ------------------------------------------------ */

/* Made by the window, then touched only by the producer's thread until the
 * window joins it; except n_posted, which the window reads. */
typedef struct
{
  MpMessagePort *port;          /* owned: the producer's end, never started */
  GMainLoop     *loop;          /* on the producer's own context */
  guint          n_messages;
  guint          payload_bytes;
  guint          n_posted;      /* atomic: posts that completed */
  gboolean       noticed_close; /* stopped because the window closed its end */
  gboolean       closed_waiting; /* ... and learned it from a post that waited */
  GError        *error;         /* a post that failed, or NULL */
} Producer;

static void post_next (Producer *producer);

/* On the producer's thread, never inside post_message_async(): the message
 * is queued at the window (or the post failed). */
static void
on_posted (GObject      *source,
           GAsyncResult *result,
           gpointer      user_data)
{
  Producer *producer = user_data;

  if (!mp_message_port_post_message_finish (MP_MESSAGE_PORT (source), result,
                                            &producer->error))
    {
      /* MP_ERROR_CLOSED: the window closed while this post waited for room. */
      if (g_error_matches (producer->error, MP_ERROR, MP_ERROR_CLOSED))
        {
          producer->noticed_close = producer->closed_waiting = TRUE;
          g_clear_error (&producer->error);
        }
      g_main_loop_quit (producer->loop);
      return;
    }

  if ((guint) g_atomic_int_add (&producer->n_posted, 1) + 1 == producer->n_messages)
    g_main_loop_quit (producer->loop);
  else
    post_next (producer);
}

static void
post_next (Producer *producer)
{
  guint index = (guint) g_atomic_int_get (&producer->n_posted);
  g_autofree char *padding = NULL;

  /* Once the window closed its port, the next post would fail with
   * MP_ERROR_CLOSED; asking first saves making it. */
  if (mp_message_port_is_peer_closed (producer->port))
    {
      producer->noticed_close = TRUE;
      g_main_loop_quit (producer->loop);
      return;
    }

  padding = g_strnfill (producer->payload_bytes, 'x');
  mp_message_port_post_message_async (producer->port,
                                      g_variant_new ("(us)", index, padding),
                                      NULL, 0, NULL, on_posted, producer);
}

static gpointer
producer_thread (gpointer data)
{
  Producer *producer = data;
  g_autoptr(GMainContext) context = g_main_context_new ();

  /* The post callbacks run on the thread-default context of the posting
   * thread: this one. */
  g_main_context_push_thread_default (context);
  producer->loop = g_main_loop_new (context, FALSE);

  post_next (producer);
  g_main_loop_run (producer->loop);

  /* The window gets "close" after the last message. */
  mp_message_port_close (producer->port);
  g_clear_object (&producer->port);
  g_clear_pointer (&producer->loop, g_main_loop_unref);
  g_main_context_pop_thread_default (context);

  return producer;
}

/* ---- the window ---------------------------------------------------------- */

/* Touched only on the window's thread. */
typedef struct
{
  GtkApplication   *application;
  GtkWindow        *window;
  GtkProgressBar   *bar;
  GtkLabel         *last;
  GtkLabel         *queue;
  GtkLabel         *producer_state;
  GtkLabel         *memory;
  GtkLabel         *frames;
  GtkWidget        *cancel;
  GtkSpinner       *spinner;

  MpMessageChannel *channel;
  MpMessagePort    *port;        /* port1 of channel: started on the default context */
  Producer         *producer;
  GThread          *thread;

  guint             n_messages;
  guint             mark;        /* the mark the run started with, for --check */
  gboolean          mark_changed;
  guint             work_us;
  guint             payload_bytes;
  guint             cancel_after; /* messages; 0: never */
  gboolean          check;
  char             *screenshot;
  guint             timeout_s;

  guint             n_received;
  gboolean          in_order;
  guint             peak_queued;
  guint64           rss_at_start; /* bytes, 0 if unknown */
  gint64            started;     /* monotonic time of the first message, µs */
  guint             n_frames;
  gint64            first_frame; /* frame clock times, µs */
  gint64            last_frame;
  gint64            longest_gap; /* µs */
  gboolean          cancelled;
  gboolean          finished;
  guint             n_ticks;     /* frames since the end, before the screenshot */
  guint             refresh_id;
  int               exit_status;
} App;

/* The process's resident memory in bytes, or 0 if unknown (not Linux). */
static guint64
resident_bytes (void)
{
  g_autofree char *statm = NULL;
  guint64 pages;

  if (!g_file_get_contents ("/proc/self/statm", &statm, NULL, NULL))
    return 0;
  if (sscanf (statm, "%*u %" G_GUINT64_FORMAT, &pages) != 1)
    return 0;
  return pages * (guint64) sysconf (_SC_PAGESIZE);
}

/* Busy for @us microseconds: the window's real work per message would be here. */
static void
do_slow_work (guint us)
{
  gint64 until = g_get_monotonic_time () + us;

  while (g_get_monotonic_time () < until)
    ;
}

static double
frames_per_second (App *app)
{
  if (app->n_frames < 2 || app->last_frame <= app->first_frame)
    return 0;
  return (app->n_frames - 1) * (double) G_USEC_PER_SEC / (app->last_frame - app->first_frame);
}

static void
refresh_labels (App *app)
{
  guint mark = mp_message_port_get_high_water_mark (app->port);
  guint n_posted = (guint) g_atomic_int_get (&app->producer->n_posted);
  guint64 rss = resident_bytes ();
  g_autofree char *queue = NULL;
  g_autofree char *producer = NULL;
  g_autofree char *frames = NULL;
  g_autofree char *memory = NULL;

  if (mark > 0)
    queue = g_strdup_printf ("Queued at the window: %u (high-water mark %u, peak %u)",
                             mp_message_port_get_n_queued (app->port), mark, app->peak_queued);
  else
    queue = g_strdup_printf ("Queued at the window: %u (no mark, peak %u)",
                             mp_message_port_get_n_queued (app->port), app->peak_queued);
  gtk_label_set_text (app->queue, queue);

  producer = g_strdup_printf ("Producer: %u posted, %u ahead of the window",
                              n_posted, n_posted - MIN (n_posted, app->n_received));
  gtk_label_set_text (app->producer_state, producer);

  frames = g_strdup_printf ("Frames drawn: %u (%.0f per second), longest gap: %.0f ms",
                            app->n_frames, frames_per_second (app), app->longest_gap / 1000.0);
  gtk_label_set_text (app->frames, frames);

  if (rss > 0 && app->rss_at_start > 0)
    {
      g_autofree char *size = g_format_size (rss);

      g_autofree char *at_start = g_format_size (app->rss_at_start);

      memory = g_strdup_printf ("Resident memory: %s (%s before the first message)",
                                size, at_start);
      gtk_label_set_text (app->memory, memory);
    }
}

static gboolean
on_refresh (gpointer user_data)
{
  refresh_labels (user_data);
  return G_SOURCE_CONTINUE;
}

/* Every frame while the messages flow: the window is responsive if these
 * keep coming meanwhile. One dispatch of the port delivers up to its budget
 * of messages, and with a mark the producer keeps the queue full, so every
 * dispatch uses the whole budget: the gap is that many times the work per
 * message. */
static gboolean
on_frame (GtkWidget     *widget,
          GdkFrameClock *frame_clock,
          gpointer       user_data)
{
  App *app = user_data;
  gint64 now = gdk_frame_clock_get_frame_time (frame_clock);

  if (app->finished)
    return G_SOURCE_REMOVE;
  if (app->n_received == 0)
    return G_SOURCE_CONTINUE;   /* not started yet: the window is still being mapped */
  if (app->n_frames > 0)
    app->longest_gap = MAX (app->longest_gap, now - app->last_frame);
  else
    app->first_frame = now;
  app->last_frame = now;
  app->n_frames++;
  return G_SOURCE_CONTINUE;
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

  if (app->screenshot != NULL && !save_screenshot (widget, app->screenshot, &error))
    {
      g_printerr ("screenshot: %s\n", error->message);
      app->exit_status = EXIT_FAILURE;
    }
  gtk_window_destroy (app->window);
  return G_SOURCE_REMOVE;
}

/* Our port said "close": after the producer's last message, or after our own
 * close() (Cancel). The producer is leaving its loop: join it and check the
 * story adds up. */
static void
finish (App *app)
{
  Producer *producer = g_thread_join (g_steal_pointer (&app->thread));
  guint n_posted = (guint) g_atomic_int_get (&producer->n_posted);
  gboolean ok = app->in_order && producer->error == NULL;
  g_autofree char *text = NULL;

  app->finished = TRUE;
  g_clear_handle_id (&app->refresh_id, g_source_remove);
  refresh_labels (app);
  gtk_spinner_stop (app->spinner);
  gtk_widget_set_sensitive (app->cancel, FALSE);

  if (producer->error != NULL)
    g_printerr ("producer: %s\n", producer->error->message);
  if (!app->cancelled)
    {
      text = g_strdup_printf ("Done: %u messages, in order%s", app->n_received,
                              app->in_order ? "" : "? NO");
      ok = ok && app->n_received == app->n_messages && n_posted == app->n_messages &&
           !producer->noticed_close;
    }
  else
    {
      text = g_strdup_printf ("Cancelled after %u messages; the producer %s", app->n_received,
                              !producer->noticed_close ? "had finished"
                              : producer->closed_waiting ? "stopped: its waiting post failed"
                                                         : "saw the close and stopped");
      /* Some of the posts that completed may have been dropped by our close,
       * but once close() has returned here, nothing more is delivered. */
      ok = ok && app->n_received <= n_posted &&
           (producer->noticed_close || n_posted == app->n_messages) &&
           (app->cancel_after == 0 || app->n_received == app->cancel_after);
    }
  /* The bound of the mark, unless someone changed it meanwhile. */
  if (app->mark > 0 && !app->mark_changed && app->peak_queued > app->mark)
    ok = FALSE;
  /* Responsive: GTK drew frames while the messages were handled (unless
   * they all fit in the time of one). */
  if (app->n_frames < 2 && g_get_monotonic_time () - app->started > 100 * 1000)
    ok = FALSE;

  gtk_label_set_text (app->last, text);
  printf ("%s\n", text);
  printf ("queue peaked at %u (high-water mark %u); %u frames (%.0f per second), "
          "longest gap %.0f ms\n", app->peak_queued, app->mark, app->n_frames,
          frames_per_second (app), app->longest_gap / 1000.0);
  if (!ok)
    {
      printf ("INCONSISTENT\n");
      app->exit_status = EXIT_FAILURE;
    }

  g_clear_error (&producer->error);
  g_free (producer);
  app->producer = NULL;

  if (app->check)
    gtk_widget_add_tick_callback (GTK_WIDGET (app->window), finish_tick, app, NULL);
}

/* Cancelling is closing our end: a post waiting for room (and any later one)
 * fails with MP_ERROR_CLOSED, and the producer asks is_peer_closed() before
 * each post.
 * Our port delivers nothing more; it emits "close" later, here. */
static void
cancel_producer (App *app)
{
  app->cancelled = TRUE;
  gtk_widget_set_sensitive (app->cancel, FALSE);
  mp_message_port_close (app->port);
}

static void
on_cancel_clicked (GtkButton *button,
                   gpointer   user_data)
{
  cancel_producer (user_data);
}

static void
on_message (MpMessagePort *port,
            MpMessage     *message,
            gpointer       user_data)
{
  App *app = user_data;
  GVariant *data = mp_message_get_data (message);
  g_autofree char *text = NULL;
  guint index;

  if (data == NULL || !g_variant_is_of_type (data, G_VARIANT_TYPE ("(us)")))
    {
      app->in_order = FALSE;
      return;
    }
  g_variant_get (data, "(u&s)", &index, NULL);
  if (index != app->n_received)
    app->in_order = FALSE;
  if (app->n_received++ == 0)
    {
      app->started = g_get_monotonic_time ();
      app->rss_at_start = resident_bytes ();
    }

  /* What waits is what is queued: the message handled here is not. */
  app->peak_queued = MAX (app->peak_queued, mp_message_port_get_n_queued (port));

  /* We are on the window's thread: GTK may be used here. Slow on purpose. */
  gtk_progress_bar_set_fraction (app->bar, (double) app->n_received / app->n_messages);
  text = g_strdup_printf ("Message %u of %u", index + 1, app->n_messages);
  gtk_label_set_text (app->last, text);
  do_slow_work (app->work_us);

  if (app->n_received == app->cancel_after && !app->cancelled)
    cancel_producer (app);   /* as if the user clicked Cancel */
}

static void
on_port_close (MpMessagePort *port,
               gpointer       user_data)
{
  finish (user_data);
}

static void
on_mark_changed (GtkSpinButton *button,
                 gpointer       user_data)
{
  App *app = user_data;
  guint mark = (guint) gtk_spin_button_get_value_as_int (button);

  /* Raised (or 0): posts that wait go in at once as far as it allows.
   * Lowered: new posts wait until the queue is below it. */
  if (mark != mp_message_port_get_high_water_mark (app->port))
    {
      app->mark_changed = TRUE;
      mp_message_port_set_high_water_mark (app->port, mark);
    }
}

/* Closing the window while the producer runs cancels it; main() joins it. */
static gboolean
on_close_request (GtkWindow *window,
                  gpointer   user_data)
{
  App *app = user_data;

  /* Nothing may touch the widgets from now on. */
  g_clear_handle_id (&app->refresh_id, g_source_remove);
  g_signal_handlers_disconnect_by_data (app->port, app);
  mp_message_port_close (app->port);
  return FALSE;   /* let it close */
}

static gboolean
on_timeout (gpointer user_data)
{
  App *app = user_data;

  g_printerr ("backpressure-window: not finished after %u s\n", app->timeout_s);
  app->exit_status = EXIT_FAILURE;
  g_application_quit (G_APPLICATION (app->application));
  return G_SOURCE_REMOVE;
}

static GtkLabel *
add_label (GtkBox     *box,
           const char *text)
{
  GtkWidget *label = gtk_label_new (text);

  gtk_label_set_xalign (GTK_LABEL (label), 0);
  gtk_box_append (box, label);
  return GTK_LABEL (label);
}

static GtkWidget *
build_window (App *app)
{
  GtkWidget *window = gtk_application_window_new (app->application);
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 10);
  GtkWidget *top = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 12);
  GtkWidget *heading = gtk_label_new (NULL);
  GtkWidget *spinner = gtk_spinner_new ();
  GtkWidget *bottom = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 12);
  GtkWidget *mark_label = gtk_label_new_with_mnemonic ("High-water _mark (0: none)");
  GtkWidget *mark_button = gtk_spin_button_new_with_range (0, 1000000, 1);
  g_autofree char *work = NULL;

  gtk_window_set_title (GTK_WINDOW (window), "mpport backpressure");
  gtk_window_set_default_size (GTK_WINDOW (window), 560, -1);
  gtk_widget_set_margin_top (box, 18);
  gtk_widget_set_margin_bottom (box, 18);
  gtk_widget_set_margin_start (box, 18);
  gtk_widget_set_margin_end (box, 18);

  work = g_markup_printf_escaped ("<b>A fast producer thread, a slow window</b>\n"
                                  "<small>the producer posts with post_message_async(); "
                                  "the window spends %u µs on each message</small>",
                                  app->work_us);
  gtk_label_set_markup (GTK_LABEL (heading), work);
  gtk_label_set_xalign (GTK_LABEL (heading), 0);
  gtk_widget_set_hexpand (heading, TRUE);
  gtk_box_append (GTK_BOX (top), heading);
  gtk_spinner_start (GTK_SPINNER (spinner));
  gtk_box_append (GTK_BOX (top), spinner);
  app->spinner = GTK_SPINNER (spinner);
  gtk_box_append (GTK_BOX (box), top);

  app->bar = GTK_PROGRESS_BAR (gtk_progress_bar_new ());
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (app->bar));
  app->last = add_label (GTK_BOX (box), "Waiting for the first message");
  app->queue = add_label (GTK_BOX (box), "");
  app->producer_state = add_label (GTK_BOX (box), "");
  app->frames = add_label (GTK_BOX (box), "");
  app->memory = add_label (GTK_BOX (box), "");

  gtk_spin_button_set_value (GTK_SPIN_BUTTON (mark_button), app->mark);
  gtk_label_set_mnemonic_widget (GTK_LABEL (mark_label), mark_button);
  g_signal_connect (mark_button, "value-changed", G_CALLBACK (on_mark_changed), app);
  gtk_box_append (GTK_BOX (bottom), mark_label);
  gtk_box_append (GTK_BOX (bottom), mark_button);

  app->cancel = gtk_button_new_with_mnemonic ("_Cancel");
  gtk_widget_set_hexpand (app->cancel, TRUE);
  gtk_widget_set_halign (app->cancel, GTK_ALIGN_END);
  g_signal_connect (app->cancel, "clicked", G_CALLBACK (on_cancel_clicked), app);
  gtk_box_append (GTK_BOX (bottom), app->cancel);
  gtk_box_append (GTK_BOX (box), bottom);

  gtk_window_set_child (GTK_WINDOW (window), box);
  g_signal_connect (window, "close-request", G_CALLBACK (on_close_request), app);
  return window;
}

static void
on_activate (GtkApplication *application,
             gpointer        user_data)
{
  App *app = user_data;
  Producer *producer;

  if (app->window != NULL)
    {
      gtk_window_present (app->window);
      return;
    }

  app->window = GTK_WINDOW (build_window (app));

  app->channel = mp_message_channel_new ();
  app->port = mp_message_channel_get_port1 (app->channel);
  /* The mark belongs to the receiving port: it paces posts towards it. */
  mp_message_port_set_high_water_mark (app->port, app->mark);
  g_signal_connect (app->port, "message", G_CALLBACK (on_message), app);
  g_signal_connect (app->port, "close", G_CALLBACK (on_port_close), app);
  mp_message_port_start (app->port);   /* no context pushed: GTK's, the default */

  producer = g_new0 (Producer, 1);
  producer->port = g_object_ref (mp_message_channel_get_port2 (app->channel));
  producer->n_messages = app->n_messages;
  producer->payload_bytes = app->payload_bytes;
  app->producer = producer;
  app->thread = g_thread_new ("producer", producer_thread, producer);

  gtk_widget_add_tick_callback (GTK_WIDGET (app->window), on_frame, app, NULL);
  app->refresh_id = g_timeout_add (REFRESH_MS, on_refresh, app);
  refresh_labels (app);
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
  int n_messages = 200000;
  int mark = 64;
  int work_us = 10;
  int payload_bytes = 1024;
  double cancel_at = -1;
  int timeout_s = 0;
  const GOptionEntry entries[] = {
    { "messages", 'n', 0, G_OPTION_ARG_INT, &n_messages,
      "How many messages the producer posts (default 200000)", "N" },
    { "mark", 'm', 0, G_OPTION_ARG_INT, &mark,
      "The window port's high-water mark, 0 for none (default 64)", "M" },
    { "work-us", 'w', 0, G_OPTION_ARG_INT, &work_us,
      "Microseconds of busy work per message in the window (default 10)", "US" },
    { "payload-bytes", 'b', 0, G_OPTION_ARG_INT, &payload_bytes,
      "Bytes of padding in each message (default 1024)", "B" },
    { "check", 'C', 0, G_OPTION_ARG_NONE, &app.check,
      "Quit when done, exit status 0 only if everything arrived in order", NULL },
    { "cancel-at", 'c', 0, G_OPTION_ARG_DOUBLE, &cancel_at,
      "Press Cancel once this fraction of the messages arrived (0..1)", "FRACTION" },
    { "screenshot", 's', 0, G_OPTION_ARG_FILENAME, &app.screenshot,
      "With --check, save the window as a PNG before quitting", "FILE" },
    { "timeout", 't', 0, G_OPTION_ARG_INT, &timeout_s,
      "Fail if not finished after this many seconds", "SECONDS" },
    { NULL }
  };
  char *app_argv[] = { argv[0], NULL };
  int status;

  option_context = g_option_context_new ("- a GTK 4 window paces a producer thread");
  g_option_context_add_main_entries (option_context, entries, NULL);
  if (!g_option_context_parse (option_context, &argc, &argv, &error))
    {
      g_printerr ("%s\n", error->message);
      return EXIT_FAILURE;
    }
  if (n_messages < 1 || mark < 0 || work_us < 0 || payload_bytes < 0 || timeout_s < 0 ||
      cancel_at > 1)
    {
      g_printerr ("invalid option value\n");
      return EXIT_FAILURE;
    }

  app.n_messages = (guint) n_messages;
  app.mark = (guint) mark;
  app.work_us = (guint) work_us;
  app.payload_bytes = (guint) payload_bytes;
  if (cancel_at >= 0)
    app.cancel_after = MAX (1, (guint) (cancel_at * n_messages));
  app.timeout_s = (guint) timeout_s;
  app.in_order = TRUE;
  app.application = gtk_application_new ("org.mpport.BackpressureWindow",
                                         G_APPLICATION_NON_UNIQUE);
  g_signal_connect (app.application, "activate", G_CALLBACK (on_activate), &app);

  status = g_application_run (G_APPLICATION (app.application), 1, app_argv);

  /* Quit before the end (the window closed, or the timeout): stop the
   * producer the same way, by closing our end; closing twice is harmless. */
  if (app.port != NULL)
    {
      g_signal_handlers_disconnect_by_data (app.port, &app);
      mp_message_port_close (app.port);
    }
  if (app.thread != NULL)
    {
      Producer *producer = g_thread_join (app.thread);

      g_clear_error (&producer->error);
      g_free (producer);
    }
  g_clear_handle_id (&app.refresh_id, g_source_remove);
  g_clear_object (&app.channel);
  if (app.check && !app.finished && app.exit_status == EXIT_SUCCESS)
    app.exit_status = EXIT_FAILURE;

  g_object_unref (app.application);
  g_free (app.screenshot);

  return status != 0 ? status : app.exit_status;
}
