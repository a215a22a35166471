/* test-flow-control.c: the high-water mark and mp_message_port_post_message_async()
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The contract (issue #17; the doc comments of post_message_async(), _finish() and
 * "high-water-mark"): the mark belongs to the receiving port; an async post towards it is
 * queued at once while fewer messages than the mark are queued there and no earlier post
 * waits, else it waits, FIFO across every thread that posts on that port. Whatever takes a
 * message out of the receiving port (dispatch, receive(), receive_async(), receive_timeout())
 * moves the oldest waiting post in and completes it, so with async posts only the queue never
 * holds more than the mark (slack 0). A sync post never waits and never fails for fullness;
 * made while async posts wait, it queues behind them, so each sender's order holds across
 * both. Raising the mark (or setting 0) admits waiting posts as far as room allows; lowering
 * it makes new posts wait. Cancelling a waiting post withdraws that message only (its
 * transfer list comes back, open and unstarted); cancelling a post already queued changes
 * nothing. The receiving side closing fails the waiting posts with MP_ERROR_CLOSED; the
 * sending side closed by its own code fails its waiting async posts with
 * MP_ERROR_INVALID_STATE, while the sync posts behind them still arrive, before "close"; an
 * async post towards a peer already closed fails with MP_ERROR_CLOSED too (unlike a sync
 * one). The mark and the waiting posts travel with a transferred receiving port. With a
 * mark, one dispatch delivers at most that many messages.
 *
 * Every callback checks that it does not run inside post_message_async() itself and that it
 * runs on the poster's thread-default context. Every wait is bounded, so a bug shows up as a
 * failed assertion, not a hang.
 *
 * Environment:
 *   MP_LOAD_SCALE=X      multiply the message counts of the flood (1 000 000), the cancel
 *                        race and the stress case by X (the valgrind setup uses 0.01),
 *                        down to a floor that still races
 *   MP_STRESS_TIMEOUT=S  seconds without progress before the flood and the stress case
 *                        fail (default 60)
 *
 * The flood's peak RSS growth is only checked where it means something: on Linux, not under
 * valgrind or a sanitizer (their allocators keep freed memory in quarantines).
 */

#include <mpport/mpport.h>

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "mp-test-util.h"

#if defined(__has_include)
# if __has_include(<valgrind/valgrind.h>)
#  include <valgrind/valgrind.h>
# endif
#endif
#ifndef RUNNING_ON_VALGRIND
# define RUNNING_ON_VALGRIND 0
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
# define FLOW_SANITIZED 1
#elif defined(__has_feature)
# if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#  define FLOW_SANITIZED 1
# endif
#endif
#ifndef FLOW_SANITIZED
# define FLOW_SANITIZED 0
#endif

/* The flood: a producer thread paced by the mark against a slower consumer. */
#define FLOOD_MESSAGES   1000000    /* scaled by MP_LOAD_SCALE */
#define FLOOD_MARK       64
#define FLOOD_IN_FLIGHT  32         /* async posts the producer keeps outstanding */
#define FLOOD_WORK       300        /* busy-loop rounds per message in the consumer */
/* 1 000 000 queued int32 messages take about 210 MiB (measured on x86_64 with
 * glibc): an unbounded queue fails this by far; one bounded at 64 stays in the
 * noise of the GTasks and sources in flight. */
#define FLOOD_RSS_BOUND  (64 * 1024 * 1024)

#define N_FAIR_THREADS   4

/* Cancels racing the consumer's admissions. */
#define RACE_POSTS       3000       /* scaled by MP_LOAD_SCALE */
#define RACE_MARK        4
#define RACE_IN_FLIGHT   16
#define RACE_CARGO_EVERY 8          /* one post in 8 carries a port with a message in it */

#define STRESS_PRODUCERS       4
#define STRESS_PER_PRODUCER    50000   /* scaled by MP_LOAD_SCALE */
#define STRESS_MARK            8
#define STRESS_LOW_MARK        2       /* the consumer switches between the two */
#define STRESS_IN_FLIGHT       4       /* async posts outstanding per producer */
#define STRESS_ASYNC_PERCENT   70

/* ------------------------------------------------------------------------ */
/* Scale and timeouts                                                       */
/* ------------------------------------------------------------------------ */

/* @base scaled by MP_LOAD_SCALE, but not below @floor: a small run still races. */
static guint
flow_scaled (guint base,
             guint floor)
{
  return MAX (floor, mp_test_scaled (mp_test_env_scale ("MP_LOAD_SCALE", 1000.0), base));
}

/* How long the flood and the stress case may go without progress. */
static gint64
no_progress_timeout (void)
{
  return mp_test_timeout (60);
}

/* ------------------------------------------------------------------------ */
/* One post_message_async() call and what its callback saw                  */
/* ------------------------------------------------------------------------ */

typedef struct
{
  gint32         value;      /* the payload; appended to log on completion */
  GString       *log;        /* completion log shared by several posts, or NULL */
  GMutex        *log_mutex;  /* guards log when posts complete on several threads */
  MpMessagePort *port;       /* the port posted on (not owned) */
  gboolean       in_call;    /* TRUE while post_message_async() runs */
  int            done;       /* atomic: callbacks run so far (must end at 1) */
  gboolean       ok;         /* what _finish() returned */
  GError        *error;      /* owned, or NULL */
  GThread       *thread;     /* the thread that ran the callback */
  GMainContext  *posted_on;  /* owned: the poster's thread-default context */
  GMainContext  *context;    /* owned: the thread-default context of the callback */
} Post;

static void
on_posted (GObject      *source,
           GAsyncResult *result,
           gpointer      user_data)
{
  Post *p = user_data;

  /* Never synchronously inside post_message_async(). */
  g_assert_false (p->in_call);
  g_assert_true (source == (GObject *) p->port);
  g_assert_cmpint (g_atomic_int_get (&p->done), ==, 0);

  p->ok = mp_message_port_post_message_finish (MP_MESSAGE_PORT (source), result, &p->error);
  g_assert_true (p->ok == (p->error == NULL));
  p->thread = g_thread_self ();
  p->context = g_main_context_ref_thread_default ();

  if (p->log != NULL)
    {
      if (p->log_mutex != NULL)
        g_mutex_lock (p->log_mutex);
      g_string_append_printf (p->log, "%d ", p->value);
      if (p->log_mutex != NULL)
        g_mutex_unlock (p->log_mutex);
    }

  g_atomic_int_set (&p->done, 1);
}

static void
post_async_full (Post                 *p,
                 MpMessagePort        *port,
                 gint32                value,
                 MpMessagePort *const *transfer,
                 guint                 n_transfer,
                 GCancellable         *cancellable)
{
  p->port = port;
  p->value = value;
  p->posted_on = g_main_context_ref_thread_default ();
  p->in_call = TRUE;
  mp_message_port_post_message_async (port, g_variant_new_int32 (value), transfer, n_transfer,
                                      cancellable, on_posted, p);
  p->in_call = FALSE;
}

static void
post_async (Post          *p,
            MpMessagePort *port,
            gint32         value)
{
  post_async_full (p, port, value, NULL, 0, NULL);
}

static gboolean
post_done (Post *p)
{
  return g_atomic_int_get (&p->done) != 0;
}

static void
assert_post_completed_here (Post *p)
{
  g_assert_true (post_done (p));
  g_assert_true (p->context == p->posted_on);
}

static void
assert_post_ok (Post *p)
{
  assert_post_completed_here (p);
  g_assert_no_error (p->error);
  g_assert_true (p->ok);
}

static void
assert_post_failed (Post   *p,
                    GQuark  domain,
                    int     code)
{
  assert_post_completed_here (p);
  g_assert_false (p->ok);
  g_assert_error (p->error, domain, code);
}

static void
post_clear (Post *p)
{
  g_clear_error (&p->error);
  g_clear_pointer (&p->posted_on, g_main_context_unref);
  g_clear_pointer (&p->context, g_main_context_unref);
}

/* None of the @n posts has completed, even after QUIET_MSEC of iterating @ctx. */
static void
assert_posts_waiting (GMainContext *ctx,
                      Post         *posts,
                      guint         n)
{
  spin_context (ctx, QUIET_MSEC);
  for (guint i = 0; i < n; i++)
    if (post_done (&posts[i]))
      g_error ("post %d completed, but it should still wait for room", posts[i].value);
}

/* ------------------------------------------------------------------------ */
/* Channels, filling, receiving                                             */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpMessageChannel *channel;
  MpMessagePort    *port1;  /* owned */
  MpMessagePort    *port2;  /* owned */
} Pair;

static void
pair_init (Pair *pair)
{
  pair->channel = mp_message_channel_new ();
  pair->port1 = g_object_ref (mp_message_channel_get_port1 (pair->channel));
  pair->port2 = g_object_ref (mp_message_channel_get_port2 (pair->channel));
}

/* A pair whose port2 has @mark and holds the sync posts 0 .. @n_queued - 1. */
static void
pair_init_full (Pair  *pair,
                guint  mark,
                guint  n_queued)
{
  pair_init (pair);
  mp_message_port_set_high_water_mark (pair->port2, mark);
  for (guint i = 0; i < n_queued; i++)
    post_int (pair->port1, (gint32) i);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair->port2), ==, n_queued);
}

/* Close both ports and check that the channel and both port objects are finalized (iterating
 * @ctx, where started ports deliver their "close"). */
static void
pair_finish (Pair         *pair,
             GMainContext *ctx)
{
  mp_message_port_close (pair->port1);
  mp_message_port_close (pair->port2);
  g_assert_finalize_object (pair->channel);
  assert_finalized_eventually (ctx, g_steal_pointer (&pair->port1));
  assert_finalized_eventually (ctx, g_steal_pointer (&pair->port2));
}

/* Move @port through a fresh carrier channel; returns the new object (a new reference). */
static MpMessagePort *
transfer_port (MpMessagePort *port)
{
  Pair carrier;
  g_autoptr(MpMessage) message = NULL;
  MpMessagePort *moved;

  pair_init (&carrier);
  post_int_with_ports (carrier.port1, -1, &port, 1);
  message = mp_message_port_receive (carrier.port2);
  g_assert_nonnull (message);
  g_assert_cmpint (message_get_int (message), ==, -1);
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 1);
  moved = g_object_ref (g_ptr_array_index (mp_message_get_ports (message), 0));
  g_assert_true (moved != port);
  pair_finish (&carrier, NULL);

  return moved;
}

/* receive() returns @first, @first + 1, ... up to @last, then nothing. */
static void
assert_receive_range (MpMessagePort *port,
                      gint32         first,
                      gint32         last)
{
  for (gint32 v = first; v <= last; v++)
    g_assert_cmpint (receive_int (port), ==, v);
  assert_receive_null (port);
}

/* ------------------------------------------------------------------------ */
/* Recorder: what a started port emits, in order                            */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpMessagePort *port;        /* not owned; cleared by recorder_clear() */
  GString       *log;         /* "v v ... close " */
  guint          n_messages;
  guint          n_close;
  gulong         message_id;
  gulong         close_id;
} Recorder;

static void
on_recorded_message (MpMessagePort *port,
                     MpMessage     *message,
                     gpointer       user_data)
{
  Recorder *r = user_data;

  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);
  g_string_append_printf (r->log, "%d ", message_get_int (message));
  r->n_messages++;
}

static void
on_recorded_close (MpMessagePort *port,
                   gpointer       user_data)
{
  Recorder *r = user_data;

  g_string_append (r->log, "close ");
  r->n_close++;
}

static void
recorder_init (Recorder      *r,
               MpMessagePort *port)
{
  memset (r, 0, sizeof *r);
  r->port = port;
  r->log = g_string_new (NULL);
  r->message_id = g_signal_connect (port, "message", G_CALLBACK (on_recorded_message), r);
  r->close_id = g_signal_connect (port, "close", G_CALLBACK (on_recorded_close), r);
}

static void
recorder_clear (Recorder *r)
{
  g_signal_handler_disconnect (r->port, r->message_id);
  g_signal_handler_disconnect (r->port, r->close_id);
  r->port = NULL;
  g_string_free (r->log, TRUE);
}

/* ------------------------------------------------------------------------ */
/* The fixture: a thread-default context for the main thread's callbacks    */
/* ------------------------------------------------------------------------ */

typedef struct
{
  GMainContext *context;
} Fixture;

static void
fixture_setup (Fixture       *f,
               gconstpointer  data)
{
  f->context = context_push_new ();
}

static void
fixture_teardown (Fixture       *f,
                  gconstpointer  data)
{
  context_pop_free (f->context);
}

#define ADD_TEST(path, func) \
  g_test_add (path, Fixture, NULL, fixture_setup, func, fixture_teardown)

/* ------------------------------------------------------------------------ */
/* Memory: /proc/self/status                                                */
/* ------------------------------------------------------------------------ */

/* @field of /proc/self/status ("VmRSS", "VmHWM") in bytes, or 0 where there is none. */
static guint64
proc_status_bytes (const char *field)
{
  g_autofree char *contents = NULL;
  g_autofree char *key = g_strconcat ("\n", field, ":", NULL);
  const char *at;
  guint64 kib = 0;

  if (!g_file_get_contents ("/proc/self/status", &contents, NULL, NULL))
    return 0;
  at = strstr (contents, key);
  if (at == NULL || sscanf (at + strlen (key), "%" G_GUINT64_FORMAT, &kib) != 1)
    return 0;

  return kib * 1024;
}

/* Resets the peak RSS (VmHWM) to the current RSS (Linux 4.0 and later). */
static gboolean
reset_peak_rss (void)
{
  FILE *file = fopen ("/proc/self/clear_refs", "w");
  gboolean ok;

  if (file == NULL)
    return FALSE;
  ok = fputs ("5", file) >= 0;
  ok = (fclose (file) == 0) && ok;

  return ok;
}

static double
mib (guint64 bytes)
{
  return bytes / (1024.0 * 1024.0);
}

/* ------------------------------------------------------------------------ */
/* /mpport/port/flow/flood: 1 000 000 messages, mark 64, a slower consumer  */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpMessagePort *port;       /* port1, posted on by the producer thread (not owned) */
  GMainContext  *context;    /* the producer thread's thread-default context */
  guint          total;
  guint          posted;     /* producer thread only */
  guint          completed;  /* atomic: callbacks run */
} FloodProducer;

static void flood_post_next (FloodProducer *fp);

static void
on_flood_posted (GObject      *source,
                 GAsyncResult *result,
                 gpointer      user_data)
{
  FloodProducer *fp = user_data;
  GError *error = NULL;

  if (!mp_message_port_post_message_finish (MP_MESSAGE_PORT (source), result, &error))
    g_error ("flood: a post failed after %u completed: %s",
             g_atomic_int_get (&fp->completed), error->message);
  g_atomic_int_inc (&fp->completed);
  /* The next post starts from the callback of one that completed: at most FLOOD_IN_FLIGHT
   * are outstanding. */
  if (fp->posted < fp->total)
    flood_post_next (fp);
}

static void
flood_post_next (FloodProducer *fp)
{
  mp_message_port_post_message_async (fp->port, g_variant_new_int32 ((gint32) fp->posted),
                                      NULL, 0, NULL, on_flood_posted, fp);
  fp->posted++;
}

static gpointer
flood_producer_main (gpointer data)
{
  FloodProducer *fp = data;

  g_main_context_push_thread_default (fp->context);
  for (guint i = 0; i < FLOOD_IN_FLIGHT && fp->posted < fp->total; i++)
    flood_post_next (fp);
  /* Blocking: the main thread fails the test if the flood stops moving. */
  while ((guint) g_atomic_int_get (&fp->completed) < fp->total)
    g_main_context_iteration (fp->context, TRUE);
  /* Every post completed: the consumer's "close" comes after the last message. */
  mp_message_port_close (fp->port);
  g_main_context_pop_thread_default (fp->context);

  return NULL;
}

typedef struct
{
  guint next;        /* the value expected next (main thread only) */
  guint max_queued;  /* the most get_n_queued() returned in a handler */
  guint n_at_mark;   /* handlers that found the queue at the mark (reported) */
  guint n_close;
} FloodConsumer;

/* Keeps the consumer slower than the producer. */
static volatile guint flood_sink;

/* Waits until *@counter is at least @at_least and then stays the same for QUIET_MSEC. */
static void
wait_until_still (guint *counter,
                  guint  at_least)
{
  gint64 deadline = g_get_monotonic_time () + no_progress_timeout ();
  guint seen = 0;

  for (;;)
    {
      guint now;

      g_usleep (QUIET_MSEC * 1000);
      now = (guint) g_atomic_int_get (counter);
      if (now >= at_least && now == seen)
        return;
      if (g_get_monotonic_time () > deadline)
        g_error ("flood: the producer did not stop (%u posts completed)", now);
      seen = now;
    }
}

static void
on_flood_message (MpMessagePort *port,
                  MpMessage     *message,
                  gpointer       user_data)
{
  FloodConsumer *c = user_data;
  guint n_queued = mp_message_port_get_n_queued (port);
  gint32 value = message_get_int (message);

  if ((guint) value != c->next)
    g_error ("flood: message %d arrived where %u was expected", value, c->next);
  c->next++;
  c->max_queued = MAX (c->max_queued, n_queued);
  if (n_queued == FLOOD_MARK)
    c->n_at_mark++;

  for (guint i = 0; i < FLOOD_WORK; i++)
    flood_sink = flood_sink * 31 + i;
}

static void
on_flood_close (MpMessagePort *port,
                gpointer       user_data)
{
  FloodConsumer *c = user_data;

  c->n_close++;
}

static void
test_flood_bounded_in_order (Fixture       *f,
                             gconstpointer  data)
{
  Pair pair;
  FloodProducer fp = { 0 };
  FloodConsumer c = { 0 };
  GThread *thread;
  gboolean peak_reset;
  gboolean rss_meaningful = !FLOW_SANITIZED && !RUNNING_ON_VALGRIND;
  guint64 rss_before, peak_before, peak_after;
  guint last_next = 0;
  gint64 start = g_get_monotonic_time ();
  gint64 last_progress = start;

  fp.total = flow_scaled (FLOOD_MESSAGES, 20000);
  g_assert_cmpuint (fp.total, >, FLOOD_MARK + FLOOD_IN_FLIGHT);

  peak_reset = reset_peak_rss ();
  rss_before = proc_status_bytes ("VmRSS");
  peak_before = proc_status_bytes ("VmHWM");

  pair_init (&pair);
  mp_message_port_set_high_water_mark (pair.port2, FLOOD_MARK);
  g_signal_connect (pair.port2, "message", G_CALLBACK (on_flood_message), &c);
  g_signal_connect (pair.port2, "close", G_CALLBACK (on_flood_close), &c);

  fp.port = pair.port1;
  fp.context = g_main_context_new ();
  thread = g_thread_new ("flood-producer", flood_producer_main, &fp);

  /* Nobody receives yet: the producer goes on until its posts wait, which they do at the
   * mark exactly (the rest of the FLOOD_IN_FLIGHT wait). Unbounded, it would queue every
   * message now, and the peak RSS would show it. */
  wait_until_still (&fp.completed, FLOOD_MARK);
  g_assert_cmpuint (g_atomic_int_get (&fp.completed), ==, FLOOD_MARK);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, FLOOD_MARK);

  mp_message_port_start (pair.port2);
  while (c.n_close == 0)
    {
      gint64 now = g_get_monotonic_time ();

      if (c.next != last_next)
        {
          last_next = c.next;
          last_progress = now;
        }
      else if (now - last_progress > no_progress_timeout ())
        g_error ("flood: no progress for %" G_GINT64_FORMAT " s at %u of %u received, "
                 "%u posts completed, %u queued",
                 no_progress_timeout () / G_TIME_SPAN_SECOND, c.next, fp.total,
                 g_atomic_int_get (&fp.completed), mp_message_port_get_n_queued (pair.port2));
      if (!g_main_context_iteration (f->context, FALSE))
        g_usleep (100);
    }
  g_thread_join (thread);

  peak_after = proc_status_bytes ("VmHWM");
  g_test_message ("flood: %u messages in %.2f s, %u handlers found the queue at the mark; "
                  "peak RSS %.1f MiB above the start "
                  "(RSS %.1f MiB, peak %s %.1f MiB, peak after %.1f MiB)",
                  fp.total, (g_get_monotonic_time () - start) / (double) G_TIME_SPAN_SECOND,
                  c.n_at_mark,
                  mib (peak_after - MIN (peak_after, rss_before)), mib (rss_before),
                  peak_reset ? "reset to" : "before (not resettable)", mib (peak_before),
                  mib (peak_after));

  /* Every message once, in order, and then the close. */
  g_assert_cmpuint (c.next, ==, fp.total);
  g_assert_cmpuint (c.n_close, ==, 1);
  g_assert_cmpuint (g_atomic_int_get (&fp.completed), ==, fp.total);
  /* The documented slack is 0 with async posts only. The queue reached the mark: it stood
   * there when the port started, and the first message taken let one waiting post in. */
  g_assert_cmpuint (c.max_queued, ==, FLOOD_MARK);

  if (rss_meaningful && rss_before > 0 && peak_after > 0)
    {
      /* Without a reset, the peak of an earlier case may hide growth: measured against the
       * older peak, which is never lower than the RSS. */
      guint64 base = peak_reset ? rss_before : peak_before;

      g_assert_cmpuint (peak_after - MIN (peak_after, base), <, FLOOD_RSS_BOUND);
    }

  g_main_context_unref (fp.context);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Cancellation                                                             */
/* ------------------------------------------------------------------------ */

static gpointer
cancel_thread_main (gpointer data)
{
  g_cancellable_cancel (data);
  return NULL;
}

/* Five posts wait behind one queued message at mark 1; the first, the middle (from another
 * thread) and the last are cancelled, one by one: each fails with G_IO_ERROR_CANCELLED, the
 * others stay waiting, and the receiver gets exactly the rest, in order. */
static void
test_cancel_first_middle_last (Fixture       *f,
                               gconstpointer  data)
{
  Pair pair;
  Post posts[5] = { 0 };
  GCancellable *cancellables[5];
  g_autoptr(GString) log = g_string_new (NULL);

  pair_init_full (&pair, 1, 1);
  for (guint i = 0; i < 5; i++)
    {
      cancellables[i] = g_cancellable_new ();
      posts[i].log = log;
      post_async_full (&posts[i], pair.port1, (gint32) i + 1, NULL, 0, cancellables[i]);
    }
  assert_posts_waiting (f->context, posts, 5);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 1);

  g_cancellable_cancel (cancellables[0]);
  WAIT_FOR (f->context, post_done (&posts[0]));
  assert_post_failed (&posts[0], G_IO_ERROR, G_IO_ERROR_CANCELLED);

  g_thread_join (g_thread_new ("cancel", cancel_thread_main, cancellables[2]));
  WAIT_FOR (f->context, post_done (&posts[2]));
  assert_post_failed (&posts[2], G_IO_ERROR, G_IO_ERROR_CANCELLED);

  g_cancellable_cancel (cancellables[4]);
  WAIT_FOR (f->context, post_done (&posts[4]));
  assert_post_failed (&posts[4], G_IO_ERROR, G_IO_ERROR_CANCELLED);

  /* The others still wait; nothing went in. */
  spin_context (f->context, QUIET_MSEC);
  g_assert_false (post_done (&posts[1]));
  g_assert_false (post_done (&posts[3]));
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 1);

  /* Each message taken lets the next waiting post in, and only it. */
  g_assert_cmpint (receive_int (pair.port2), ==, 0);
  WAIT_FOR (f->context, post_done (&posts[1]));
  assert_post_ok (&posts[1]);
  spin_context (f->context, QUIET_MSEC);
  g_assert_false (post_done (&posts[3]));
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 1);

  g_assert_cmpint (receive_int (pair.port2), ==, 2);
  WAIT_FOR (f->context, post_done (&posts[3]));
  assert_post_ok (&posts[3]);

  g_assert_cmpint (receive_int (pair.port2), ==, 4);
  assert_receive_null (pair.port2);
  g_assert_cmpstr (log->str, ==, "1 3 5 2 4 ");

  /* A cancel after the fact changes nothing. */
  g_cancellable_cancel (cancellables[1]);
  g_cancellable_cancel (cancellables[3]);
  spin_context (f->context, QUIET_MSEC);
  assert_post_ok (&posts[1]);
  assert_post_ok (&posts[3]);
  assert_receive_null (pair.port2);

  for (guint i = 0; i < 5; i++)
    {
      post_clear (&posts[i]);
      g_assert_finalize_object (cancellables[i]);
    }
  pair_finish (&pair, f->context);
}

/* Cancelled once the post went into the inbox, before its callback ran: it succeeds and the
 * message arrives once. */
static void
test_cancel_after_admitted (Fixture       *f,
                            gconstpointer  data)
{
  Pair pair;
  Post post = { 0 };
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();

  pair_init_full (&pair, 1, 1);
  post_async_full (&post, pair.port1, 1, NULL, 0, cancellable);
  assert_posts_waiting (f->context, &post, 1);

  /* Room: the post goes in under the receiver's lock, here; its callback is only scheduled. */
  g_assert_cmpint (receive_int (pair.port2), ==, 0);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 1);
  g_assert_false (post_done (&post));
  g_cancellable_cancel (cancellable);

  WAIT_FOR (f->context, post_done (&post));
  assert_post_ok (&post);
  g_assert_cmpint (receive_int (pair.port2), ==, 1);
  assert_receive_null (pair.port2);

  post_clear (&post);
  pair_finish (&pair, f->context);
}

/* A cancellable cancelled before the call: G_IO_ERROR_CANCELLED, nothing posted, whether
 * the port has room or not; the posts after it are not held up. */
static void
test_cancel_before_call (Fixture       *f,
                         gconstpointer  data)
{
  Pair pair;
  Post posts[4] = { 0 };
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();

  g_cancellable_cancel (cancellable);
  pair_init_full (&pair, 2, 0);

  /* Room. */
  post_async_full (&posts[0], pair.port1, 10, NULL, 0, cancellable);
  WAIT_FOR (f->context, post_done (&posts[0]));
  assert_post_failed (&posts[0], G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 0);
  assert_receive_null (pair.port2);

  /* Full. */
  post_int (pair.port1, 0);
  post_int (pair.port1, 1);
  post_async_full (&posts[1], pair.port1, 11, NULL, 0, cancellable);
  WAIT_FOR (f->context, post_done (&posts[1]));
  assert_post_failed (&posts[1], G_IO_ERROR, G_IO_ERROR_CANCELLED);

  /* Full, with a transfer list: the listed port is not taken. */
  {
    Pair t;

    pair_init (&t);
    post_async_full (&posts[2], pair.port1, 12, &t.port1, 1, cancellable);
    WAIT_FOR (f->context, post_done (&posts[2]));
    assert_post_failed (&posts[2], G_IO_ERROR, G_IO_ERROR_CANCELLED);
    g_assert_false (mp_message_port_is_closed (t.port1));
    post_int (t.port1, 5);
    g_assert_cmpint (receive_int (t.port2), ==, 5);
    pair_finish (&t, f->context);
  }

  /* Nothing of them waits: the next post is the first in line. */
  post_async (&posts[3], pair.port1, 2);
  assert_posts_waiting (f->context, &posts[3], 1);
  g_assert_cmpint (receive_int (pair.port2), ==, 0);
  WAIT_FOR (f->context, post_done (&posts[3]));
  assert_post_ok (&posts[3]);
  assert_receive_range (pair.port2, 1, 2);

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&pair, f->context);
}

/* A waiting post carries t.port1, which was started; cancelled, t.port1 is its own again:
 * open, posting works, receive() takes what reached it meanwhile, start() delivers the rest.
 * With @restart_at_once, the cancel and the new start() come before the context ran again (the
 * old source has not retired yet). */
static void
cancel_with_transfer_list (Fixture  *f,
                           gboolean  restart_at_once)
{
  Pair pair, t;
  Recorder rec;
  Post post = { 0 };
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  GError *error = NULL;

  pair_init_full (&pair, 1, 1);
  pair_init (&t);
  recorder_init (&rec, t.port1);
  mp_message_port_start (t.port1);
  post_int (t.port2, 100);
  WAIT_FOR (f->context, rec.n_messages == 1);

  post_async_full (&post, pair.port1, 1, &t.port1, 1, cancellable);
  g_assert_false (post.in_call);
  /* Detached at once, as by post_message(). */
  g_assert_true (mp_message_port_is_closed (t.port1));
  g_assert_false (mp_message_port_post_message (t.port1, g_variant_new_int32 (9), NULL, 0,
                                                &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_clear_error (&error);
  post_int (t.port2, 101);
  post_int (t.port2, 102);
  if (!restart_at_once)
    assert_posts_waiting (f->context, &post, 1);

  g_cancellable_cancel (cancellable);
  g_assert_false (mp_message_port_is_closed (t.port1));
  if (restart_at_once)
    {
      g_assert_cmpint (receive_int (t.port1), ==, 101);
      mp_message_port_start (t.port1);
    }
  WAIT_FOR (f->context, post_done (&post));
  assert_post_failed (&post, G_IO_ERROR, G_IO_ERROR_CANCELLED);

  /* Posting on it works. */
  post_int (t.port1, 200);
  g_assert_cmpint (receive_int (t.port2), ==, 200);

  if (!restart_at_once)
    {
      /* Unstarted: nothing was emitted for 101 and 102; receive() takes 101. */
      spin_context (f->context, QUIET_MSEC);
      g_assert_cmpuint (rec.n_messages, ==, 1);
      g_assert_cmpint (receive_int (t.port1), ==, 101);
      mp_message_port_start (t.port1);
    }
  WAIT_FOR (f->context, rec.n_messages == 2);
  post_int (t.port2, 103);
  WAIT_FOR (f->context, rec.n_messages == 3);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpstr (rec.log->str, ==, "100 102 103 ");
  g_assert_true (mp_message_port_get_context (t.port1) == f->context);

  /* The withdrawn message is gone; the queue is the one before. */
  g_assert_cmpint (receive_int (pair.port2), ==, 0);
  assert_receive_null (pair.port2);

  /* t.port1 closes as its own: "close" once. */
  mp_message_port_close (t.port1);
  WAIT_FOR (f->context, rec.n_close == 1);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpstr (rec.log->str, ==, "100 102 103 close ");
  g_assert_true (mp_message_port_is_peer_closed (t.port2));

  recorder_clear (&rec);
  post_clear (&post);
  pair_finish (&t, f->context);
  pair_finish (&pair, f->context);
}

static void
test_cancel_transfer_list_comes_back (Fixture       *f,
                                      gconstpointer  data)
{
  cancel_with_transfer_list (f, FALSE);
}

static void
test_cancel_transfer_list_restart_at_once (Fixture       *f,
                                           gconstpointer  data)
{
  cancel_with_transfer_list (f, TRUE);
}

/* A waiting post's message counts as travelling, as a queued one does: q.port2, waiting at
 * p.port2 inside it, makes posting p.port2 to q.port2 a cycle (MP_ERROR_DATA_CLONE).
 * Withdrawn by a cancel, it no longer travels: the same post then succeeds. */
static void
test_cancel_withdraws_transit_edge (Fixture       *f,
                                    gconstpointer  data)
{
  Pair p, q;
  Post post = { 0 };
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(MpMessage) message = NULL;
  MpMessagePort *moved;
  GError *error = NULL;

  pair_init_full (&p, 1, 1);
  pair_init (&q);
  post_async_full (&post, p.port1, 1, &q.port2, 1, cancellable);
  assert_posts_waiting (f->context, &post, 1);

  g_assert_false (mp_message_port_post_message (q.port1, g_variant_new_int32 (2), &p.port2, 1,
                                                &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_DATA_CLONE);
  g_clear_error (&error);
  g_assert_false (mp_message_port_is_closed (p.port2));

  g_cancellable_cancel (cancellable);
  WAIT_FOR (f->context, post_done (&post));
  assert_post_failed (&post, G_IO_ERROR, G_IO_ERROR_CANCELLED);

  post_int_with_ports (q.port1, 2, &p.port2, 1);
  message = mp_message_port_receive (q.port2);
  g_assert_cmpint (message_get_int (message), ==, 2);
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 1);
  moved = g_object_ref (g_ptr_array_index (mp_message_get_ports (message), 0));
  g_clear_pointer (&message, mp_message_unref);
  g_assert_cmpuint (mp_message_port_get_high_water_mark (moved), ==, 1);
  assert_receive_range (moved, 0, 0);

  post_clear (&post);
  mp_message_port_close (moved);
  assert_finalized_eventually (f->context, moved);
  pair_finish (&q, f->context);
  pair_finish (&p, f->context);
}

typedef struct
{
  gint32            value;
  GCancellable     *cancellable;    /* owned */
  MpMessageChannel *cargo_channel;  /* owned, or NULL */
  MpMessagePort    *cargo;          /* not owned: the channel's port1, in the transfer list */
  int               done;
  gboolean          ok;
  GError           *error;          /* owned, or NULL */
} RacePost;

typedef struct
{
  MpMessagePort *port2;        /* not owned */
  RacePost      *posts;
  guint          in_flight;    /* main thread */
  GArray        *received;     /* gint32; the consumer's until it is joined */
  guint          n_cargo;      /* cargo ports received (consumer) */
} Race;

static void
on_race_posted (GObject      *source,
                GAsyncResult *result,
                gpointer      user_data)
{
  RacePost *rp = user_data;
  Race *race = g_object_get_data (source, "race");

  g_assert_cmpint (rp->done, ==, 0);
  rp->ok = mp_message_port_post_message_finish (MP_MESSAGE_PORT (source), result, &rp->error);
  if (!rp->ok)
    g_assert_error (rp->error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  rp->done = 1;
  race->in_flight--;
}

static gpointer
race_consumer_main (gpointer data)
{
  Race *race = data;
  gint64 deadline = g_get_monotonic_time () + no_progress_timeout ();

  for (;;)
    {
      GError *error = NULL;
      g_autoptr(MpMessage) message = mp_message_port_receive_timeout (race->port2,
                                                                      100 * G_TIME_SPAN_MILLISECOND,
                                                                      NULL, &error);
      GPtrArray *ports;
      gint32 value;

      if (message == NULL && error == NULL)
        {
          if (g_get_monotonic_time () > deadline)
            g_error ("cancel race: no message for %" G_GINT64_FORMAT " s after %u",
                     no_progress_timeout () / G_TIME_SPAN_SECOND, race->received->len);
          continue;
        }
      if (error != NULL)
        {
          /* The end: port1 closed after every post completed. */
          g_assert_error (error, MP_ERROR, MP_ERROR_CLOSED);
          g_error_free (error);
          break;
        }
      deadline = g_get_monotonic_time () + no_progress_timeout ();

      value = message_get_int (message);
      ports = mp_message_get_ports (message);
      if (value % RACE_CARGO_EVERY == 0)
        {
          MpMessagePort *cargo;

          /* The cargo comes with the message queued in it before it travelled. */
          g_assert_cmpuint (ports->len, ==, 1);
          cargo = g_ptr_array_index (ports, 0);
          g_assert_cmpint (receive_int (cargo), ==, -value);
          assert_receive_null (cargo);
          mp_message_port_close (cargo);
          race->n_cargo++;
        }
      else
        {
          g_assert_cmpuint (ports->len, ==, 0);
        }
      g_array_append_val (race->received, value);

      /* A slower consumer keeps the queue at the mark, so that most cancels find their post
       * waiting, and some race its admission. */
      if (race->received->len % 64 == 0)
        g_usleep (500);
    }

  return NULL;
}

/* Async posts with a cancellable each, some carrying a port that has a message queued in it;
 * a third are cancelled right after they were made (or one that came before), while a
 * consumer thread takes messages out, which admits them: each post either succeeds and its
 * message (and cargo) arrives exactly once, in order, or fails with G_IO_ERROR_CANCELLED and
 * nothing of it arrives: its cargo port is its own again, with its message. */
static void
test_cancel_races_admission (Fixture       *f,
                             gconstpointer  data)
{
  Pair pair;
  Race race = { 0 };
  guint n_posts = flow_scaled (RACE_POSTS, 600);
  GThread *consumer;
  Watchdog *dog;
  guint n_ok = 0, n_cancelled = 0, n_cargo_back = 0, next = 0;

  pair_init_full (&pair, RACE_MARK, 0);
  g_object_set_data (G_OBJECT (pair.port1), "race", &race);
  race.port2 = pair.port2;
  race.posts = g_new0 (RacePost, n_posts);
  race.received = g_array_new (FALSE, FALSE, sizeof (gint32));
  dog = watchdog_new ("cancel race", 4 * no_progress_timeout ());
  consumer = g_thread_new ("race-consumer", race_consumer_main, &race);

  for (guint i = 0; i < n_posts; i++)
    {
      RacePost *rp = &race.posts[i];

      /* Blocking: the watchdog covers a post that never completes. */
      while (race.in_flight >= RACE_IN_FLIGHT)
        g_main_context_iteration (f->context, TRUE);

      rp->value = (gint32) i;
      rp->cancellable = g_cancellable_new ();
      if (i % RACE_CARGO_EVERY == 0)
        {
          MpMessagePort *cargo_peer;

          rp->cargo_channel = mp_message_channel_new ();
          rp->cargo = mp_message_channel_get_port1 (rp->cargo_channel);
          cargo_peer = mp_message_channel_get_port2 (rp->cargo_channel);
          post_int (cargo_peer, -rp->value);
        }
      race.in_flight++;
      mp_message_port_post_message_async (pair.port1, g_variant_new_int32 (rp->value),
                                          rp->cargo != NULL ? &rp->cargo : NULL,
                                          rp->cargo != NULL ? 1 : 0,
                                          rp->cancellable, on_race_posted, rp);

      /* This post or one of the four before it. */
      if (g_test_rand_int_range (0, 3) == 0)
        {
          guint back = (guint) g_test_rand_int_range (0, (gint32) MIN (i, 4) + 1);

          g_cancellable_cancel (race.posts[i - back].cancellable);
        }
    }
  while (race.in_flight > 0)
    g_main_context_iteration (f->context, TRUE);
  mp_message_port_close (pair.port1);
  g_thread_join (consumer);
  watchdog_free (dog);

  for (guint i = 0; i < n_posts; i++)
    {
      RacePost *rp = &race.posts[i];

      g_assert_cmpint (rp->done, ==, 1);
      if (rp->ok)
        {
          n_ok++;
          g_assert_cmpuint (next, <, race.received->len);
          g_assert_cmpint (g_array_index (race.received, gint32, next), ==, rp->value);
          next++;
          if (rp->cargo != NULL)
            g_assert_true (mp_message_port_is_closed (rp->cargo));
        }
      else
        {
          n_cancelled++;
          if (rp->cargo != NULL)
            {
              /* Back, open, with its message. */
              g_assert_false (mp_message_port_is_closed (rp->cargo));
              g_assert_cmpint (receive_int (rp->cargo), ==, -rp->value);
              assert_receive_null (rp->cargo);
              n_cargo_back++;
            }
        }
      g_clear_error (&rp->error);
      g_object_unref (rp->cancellable);
      if (rp->cargo_channel != NULL)
        {
          mp_message_port_close (mp_message_channel_get_port1 (rp->cargo_channel));
          mp_message_port_close (mp_message_channel_get_port2 (rp->cargo_channel));
          g_assert_finalize_object (rp->cargo_channel);
        }
    }
  g_assert_cmpuint (next, ==, race.received->len);
  g_assert_cmpuint (race.n_cargo + n_cargo_back, ==,
                    (n_posts + RACE_CARGO_EVERY - 1) / RACE_CARGO_EVERY);
  g_test_message ("cancel race: %u posts, %u delivered, %u cancelled (%u cargo ports back)",
                  n_posts, n_ok, n_cancelled, n_cargo_back);

  g_array_unref (race.received);
  g_free (race.posts);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Close of either side while posts wait                                    */
/* ------------------------------------------------------------------------ */

/* The receiver closes: every waiting post fails with MP_ERROR_CLOSED; a port travelling in
 * one of them is closed (its peer gets "close"). */
static void
test_close_receiver_fails_waiting (Fixture       *f,
                                   gconstpointer  data)
{
  Pair pair, t;
  Recorder rec;
  Post posts[4] = { 0 };
  g_autoptr(GString) log = g_string_new (NULL);

  pair_init_full (&pair, 1, 1);
  pair_init (&t);
  recorder_init (&rec, t.port2);
  mp_message_port_start (t.port2);

  for (guint i = 0; i < 3; i++)
    {
      posts[i].log = log;
      post_async_full (&posts[i], pair.port1, (gint32) i + 1, i == 1 ? &t.port1 : NULL,
                       i == 1 ? 1 : 0, NULL);
    }
  post_int (pair.port1, 4);  /* a sync post behind them */
  assert_posts_waiting (f->context, posts, 3);

  mp_message_port_close (pair.port2);
  WAIT_FOR (f->context, post_done (&posts[0]) && post_done (&posts[1]) && post_done (&posts[2]));
  for (guint i = 0; i < 3; i++)
    assert_post_failed (&posts[i], MP_ERROR, MP_ERROR_CLOSED);
  g_assert_cmpstr (log->str, ==, "1 2 3 ");

  /* The port inside the dropped message closed. */
  WAIT_FOR (f->context, rec.n_close == 1);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpstr (rec.log->str, ==, "close ");

  /* A post now finds the peer closed: room will never come either. */
  g_assert_true (mp_message_port_is_peer_closed (pair.port1));
  post_async (&posts[3], pair.port1, 5);
  WAIT_FOR (f->context, post_done (&posts[3]));
  assert_post_failed (&posts[3], MP_ERROR, MP_ERROR_CLOSED);

  recorder_clear (&rec);
  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&t, f->context);
  pair_finish (&pair, f->context);
}

/* The sender closes its port: its waiting async posts fail with MP_ERROR_INVALID_STATE and
 * are dropped (a port travelling in one closes); the sync posts behind them arrive, in
 * order, before "close". */
static void
test_close_sender_fails_waiting_keeps_sync (Fixture       *f,
                                            gconstpointer  data)
{
  Pair pair, t;
  Recorder rec, trec;
  Post posts[3] = { 0 };
  g_autoptr(GString) log = g_string_new (NULL);

  pair_init_full (&pair, 1, 1);
  recorder_init (&rec, pair.port2);
  pair_init (&t);
  recorder_init (&trec, t.port2);
  mp_message_port_start (t.port2);

  posts[0].log = posts[1].log = posts[2].log = log;
  post_async (&posts[0], pair.port1, 1);
  post_async_full (&posts[1], pair.port1, 2, &t.port1, 1, NULL);
  post_int (pair.port1, 3);
  post_int (pair.port1, 4);
  post_async (&posts[2], pair.port1, 5);
  post_int (pair.port1, 6);
  assert_posts_waiting (f->context, posts, 3);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 1);

  mp_message_port_close (pair.port1);
  WAIT_FOR (f->context, post_done (&posts[0]) && post_done (&posts[1]) && post_done (&posts[2]));
  for (guint i = 0; i < 3; i++)
    assert_post_failed (&posts[i], MP_ERROR, MP_ERROR_INVALID_STATE);
  g_assert_cmpstr (log->str, ==, "1 2 5 ");

  WAIT_FOR (f->context, trec.n_close == 1);

  mp_message_port_start (pair.port2);
  WAIT_FOR (f->context, rec.n_close == 1);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpstr (rec.log->str, ==, "0 3 4 6 close ");
  g_assert_cmpstr (trec.log->str, ==, "close ");

  recorder_clear (&trec);
  recorder_clear (&rec);
  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&t, f->context);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* The mark changed while posts wait                                        */
/* ------------------------------------------------------------------------ */

static void
on_notify_count (GObject    *object,
                 GParamSpec *pspec,
                 gpointer    user_data)
{
  guint *count = user_data;

  g_assert_cmpstr (g_param_spec_get_name (pspec), ==, "high-water-mark");
  (*count)++;
}

/* Mark 2, full, five posts waiting: raised to 4, exactly two go in (the oldest); set to 0,
 * the other three go in. One notification per change, none for the same value. */
static void
test_mark_raised_then_zero (Fixture       *f,
                            gconstpointer  data)
{
  Pair pair;
  Post posts[5] = { 0 };
  g_autoptr(GString) log = g_string_new (NULL);
  guint n_notify = 0;

  pair_init_full (&pair, 2, 2);
  g_signal_connect (pair.port2, "notify::high-water-mark", G_CALLBACK (on_notify_count),
                    &n_notify);
  for (guint i = 0; i < 5; i++)
    {
      posts[i].log = log;
      post_async (&posts[i], pair.port1, (gint32) i + 2);
    }
  assert_posts_waiting (f->context, posts, 5);

  mp_message_port_set_high_water_mark (pair.port2, 2);
  g_assert_cmpuint (n_notify, ==, 0);

  mp_message_port_set_high_water_mark (pair.port2, 4);
  g_assert_cmpuint (n_notify, ==, 1);
  g_assert_cmpuint (mp_message_port_get_high_water_mark (pair.port2), ==, 4);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 4);
  WAIT_FOR (f->context, post_done (&posts[0]) && post_done (&posts[1]));
  assert_posts_waiting (f->context, &posts[2], 3);
  assert_post_ok (&posts[0]);
  assert_post_ok (&posts[1]);
  g_assert_cmpstr (log->str, ==, "2 3 ");

  mp_message_port_set_high_water_mark (pair.port2, 0);
  g_assert_cmpuint (n_notify, ==, 2);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 7);
  WAIT_FOR (f->context, post_done (&posts[2]) && post_done (&posts[3]) && post_done (&posts[4]));
  for (guint i = 2; i < 5; i++)
    assert_post_ok (&posts[i]);
  g_assert_cmpstr (log->str, ==, "2 3 4 5 6 ");

  assert_receive_range (pair.port2, 0, 6);

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&pair, f->context);
}

/* Lowered below the queue: a new async post waits until the queue is below the new mark,
 * which takes exactly queue - mark + 1 messages out; a sync post still goes straight in. */
static void
test_mark_lowered_new_posts_wait (Fixture       *f,
                                  gconstpointer  data)
{
  Pair pair;
  Post posts[2] = { 0 };

  pair_init_full (&pair, 0, 6);
  mp_message_port_set_high_water_mark (pair.port2, 3);

  post_async (&posts[0], pair.port1, 6);
  assert_posts_waiting (f->context, posts, 1);
  /* A sync post made now queues behind the waiting one. */
  post_int (pair.port1, 7);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 6);

  for (gint32 v = 0; v < 3; v++)
    g_assert_cmpint (receive_int (pair.port2), ==, v);
  /* 3 queued, mark 3: still no room. */
  assert_posts_waiting (f->context, posts, 1);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 3);

  g_assert_cmpint (receive_int (pair.port2), ==, 3);
  WAIT_FOR (f->context, post_done (&posts[0]));
  assert_post_ok (&posts[0]);
  /* The waiting post went in; the sync post behind it waits for the next room. */
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 3);

  /* With nothing waiting, a sync post goes in above the mark. */
  g_assert_cmpint (receive_int (pair.port2), ==, 4);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 3);
  post_int (pair.port1, 8);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 4);

  /* An async post above the mark waits. */
  post_async (&posts[1], pair.port1, 9);
  assert_posts_waiting (f->context, &posts[1], 1);
  g_assert_cmpint (receive_int (pair.port2), ==, 5);
  assert_posts_waiting (f->context, &posts[1], 1);
  g_assert_cmpint (receive_int (pair.port2), ==, 6);
  WAIT_FOR (f->context, post_done (&posts[1]));
  assert_post_ok (&posts[1]);

  assert_receive_range (pair.port2, 7, 9);

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&pair, f->context);
}

/* The mark is the receiving port's: on port1 it holds posts towards port1, not posts made on
 * it. The property and the accessors agree. */
static void
test_mark_belongs_to_receiver (Fixture       *f,
                               gconstpointer  data)
{
  Pair pair;
  Post posts[4] = { 0 };
  guint mark = 0;

  pair_init (&pair);
  g_object_set (pair.port1, "high-water-mark", 1, NULL);
  g_assert_cmpuint (mp_message_port_get_high_water_mark (pair.port1), ==, 1);
  g_assert_cmpuint (mp_message_port_get_high_water_mark (pair.port2), ==, 0);

  for (guint i = 0; i < 3; i++)
    post_async (&posts[i], pair.port1, (gint32) i);
  WAIT_FOR (f->context, post_done (&posts[0]) && post_done (&posts[1]) && post_done (&posts[2]));
  for (guint i = 0; i < 3; i++)
    assert_post_ok (&posts[i]);
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 3);

  post_int (pair.port2, 10);
  post_async (&posts[3], pair.port2, 11);
  assert_posts_waiting (f->context, &posts[3], 1);
  g_assert_cmpint (receive_int (pair.port1), ==, 10);
  WAIT_FOR (f->context, post_done (&posts[3]));
  assert_post_ok (&posts[3]);
  assert_receive_range (pair.port1, 11, 11);
  assert_receive_range (pair.port2, 0, 2);

  mp_message_port_set_high_water_mark (pair.port2, 5);
  g_object_get (pair.port2, "high-water-mark", &mark, NULL);
  g_assert_cmpuint (mark, ==, 5);

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&pair, f->context);
}

static void
on_count_message (MpMessagePort *port,
                  MpMessage     *message,
                  gpointer       user_data)
{
  gint32 *next = user_data;

  g_assert_cmpint (message_get_int (message), ==, *next);
  (*next)++;
}

/* With a mark, one dispatch delivers at most mark messages: with the queue above it (sync
 * posts) and with posts waiting, which refill it as the dispatch takes. Each iteration of
 * the context dispatches the port at most once. */
static void
test_mark_bounds_dispatch (Fixture       *f,
                           gconstpointer  data)
{
  Pair pair;
  Post posts[4] = { 0 };
  gint32 next = 0;
  g_autoptr(GString) per_dispatch = g_string_new (NULL);
  gint64 deadline;

  /* 10 sync posts: above the mark, none waits. */
  pair_init_full (&pair, 3, 10);
  g_signal_connect (pair.port2, "message", G_CALLBACK (on_count_message), &next);
  mp_message_port_start (pair.port2);
  deadline = g_get_monotonic_time () + WAIT_TIMEOUT_USEC;
  while (next < 10 && g_get_monotonic_time () < deadline)
    {
      gint32 before = next;

      if (!g_main_context_iteration (f->context, FALSE))
        g_usleep (100);
      if (next != before)
        g_string_append_printf (per_dispatch, "%d ", next - before);
    }
  g_assert_cmpstr (per_dispatch->str, ==, "3 3 3 1 ");

  /* 3 queued and 4 waiting: each message taken lets one in. */
  mp_message_port_close (pair.port2);
  g_signal_handlers_disconnect_by_data (pair.port2, &next);
  pair_finish (&pair, f->context);
  pair_init_full (&pair, 3, 3);
  for (guint i = 0; i < 4; i++)
    post_async (&posts[i], pair.port1, (gint32) i + 3);
  assert_posts_waiting (f->context, posts, 4);
  next = 0;
  g_string_truncate (per_dispatch, 0);
  g_signal_connect (pair.port2, "message", G_CALLBACK (on_count_message), &next);
  mp_message_port_start (pair.port2);
  deadline = g_get_monotonic_time () + WAIT_TIMEOUT_USEC;
  while (next < 7 && g_get_monotonic_time () < deadline)
    {
      gint32 before = next;

      if (!g_main_context_iteration (f->context, FALSE))
        g_usleep (100);
      if (next != before)
        g_string_append_printf (per_dispatch, "%d ", next - before);
    }
  g_assert_cmpstr (per_dispatch->str, ==, "3 3 1 ");
  WAIT_FOR (f->context, post_done (&posts[3]));
  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    {
      assert_post_ok (&posts[i]);
      post_clear (&posts[i]);
    }

  mp_message_port_close (pair.port2);
  g_signal_handlers_disconnect_by_data (pair.port2, &next);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Order and room                                                           */
/* ------------------------------------------------------------------------ */

/* Async posts wait, then sync posts, then more async posts: the sync ones return TRUE at
 * once and the receiver gets the exact program order; the callbacks come in order, one per
 * message taken. */
static void
test_order_sync_async_fifo (Fixture       *f,
                            gconstpointer  data)
{
  Pair pair;
  Post posts[4] = { 0 };
  g_autoptr(GString) log = g_string_new (NULL);
  const gint32 async_values[4] = { 1, 2, 5, 6 };

  pair_init_full (&pair, 1, 1);
  for (guint i = 0; i < 4; i++)
    posts[i].log = log;

  post_async (&posts[0], pair.port1, 1);
  post_async (&posts[1], pair.port1, 2);
  post_int (pair.port1, 3);
  post_int (pair.port1, 4);
  post_async (&posts[2], pair.port1, 5);
  post_async (&posts[3], pair.port1, 6);
  post_int (pair.port1, 7);
  assert_posts_waiting (f->context, posts, 4);
  /* What waits is not counted as queued, sync posts included. */
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 1);

  for (gint32 v = 0; v <= 7; v++)
    {
      g_assert_cmpint (receive_int (pair.port2), ==, v);
      spin_context (f->context, 5);
      /* Every async post at or before the next message is in. */
      for (guint i = 0; i < 4; i++)
        if (async_values[i] <= v + 1)
          {
            WAIT_FOR (f->context, post_done (&posts[i]));
            assert_post_ok (&posts[i]);
          }
        else
          g_assert_false (post_done (&posts[i]));
    }
  assert_receive_null (pair.port2);
  g_assert_cmpstr (log->str, ==, "1 2 5 6 ");

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&pair, f->context);
}

static void
on_received_async (GObject      *source,
                   GAsyncResult *result,
                   gpointer      user_data)
{
  MpMessage **out = user_data;
  GError *error = NULL;

  *out = mp_message_port_receive_finish (MP_MESSAGE_PORT (source), result, &error);
  g_assert_no_error (error);
  g_assert_nonnull (*out);
}

/* Every way of taking a message out hands room to the oldest waiting post: receive(),
 * receive_async(), receive_timeout() and the "message" delivery. */
static void
test_room_every_consumer_hands_out (Fixture       *f,
                                    gconstpointer  data)
{
  Pair pair;
  Recorder rec;
  Post posts[4] = { 0 };
  MpMessage *message = NULL;
  GError *error = NULL;

  pair_init_full (&pair, 1, 1);
  for (guint i = 0; i < 4; i++)
    post_async (&posts[i], pair.port1, (gint32) i + 1);
  assert_posts_waiting (f->context, posts, 4);

  g_assert_cmpint (receive_int (pair.port2), ==, 0);
  WAIT_FOR (f->context, post_done (&posts[0]));
  assert_post_ok (&posts[0]);
  assert_posts_waiting (f->context, &posts[1], 3);

  mp_message_port_receive_async (pair.port2, NULL, on_received_async, &message);
  WAIT_FOR (f->context, message != NULL && post_done (&posts[1]));
  g_assert_cmpint (message_get_int (message), ==, 1);
  g_clear_pointer (&message, mp_message_unref);
  assert_post_ok (&posts[1]);
  assert_posts_waiting (f->context, &posts[2], 2);

  message = mp_message_port_receive_timeout (pair.port2, 0, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (message_get_int (message), ==, 2);
  g_clear_pointer (&message, mp_message_unref);
  WAIT_FOR (f->context, post_done (&posts[2]));
  assert_post_ok (&posts[2]);
  assert_posts_waiting (f->context, &posts[3], 1);

  recorder_init (&rec, pair.port2);
  mp_message_port_start (pair.port2);
  WAIT_FOR (f->context, rec.n_messages == 2 && post_done (&posts[3]));
  assert_post_ok (&posts[3]);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpstr (rec.log->str, ==, "3 4 ");
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 0);

  recorder_clear (&rec);
  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Fairness across threads                                                  */
/* ------------------------------------------------------------------------ */

typedef struct
{
  MpMessagePort *port;   /* port1, shared (not owned) */
  Latch          turn;   /* thread of rank r posts when it reaches r + 1 */
  Latch          posted; /* one per post made (it waits once the call returned) */
  GString       *log;    /* completion order, under log_mutex */
  GMutex         log_mutex;
} Fair;

typedef struct
{
  Fair    *fair;
  guint    rank;     /* its place in the waiting order */
  gint32   value;    /* its thread number, which is not its rank */
  Post     post;
  GThread *thread;
} FairThread;

static gpointer
fair_thread_main (gpointer data)
{
  FairThread *ft = data;
  GMainContext *ctx = context_push_new ();

  latch_wait (&ft->fair->turn, ft->rank + 1, stress_timeout (), "fair: turn");
  ft->post.log = ft->fair->log;
  ft->post.log_mutex = &ft->fair->log_mutex;
  post_async (&ft->post, ft->fair->port, ft->value);
  latch_add (&ft->fair->posted);

  WAIT_FOR (ctx, post_done (&ft->post));
  g_assert_true (ft->post.thread == g_thread_self ());
  assert_post_ok (&ft->post);
  context_pop_free (ctx);

  return NULL;
}

/* N threads start an async post at a full port, one after the other in a known order (not
 * the order of their thread numbers); room is made one message at a time: each time, the
 * post that began to wait first completes (on its own thread) and its message is next. */
static void
test_fair_threads_in_wait_order (Fixture       *f,
                                 gconstpointer  data)
{
  static const gint32 wait_order[N_FAIR_THREADS] = { 2, 0, 3, 1 };
  Pair pair;
  Fair fair;
  FairThread threads[N_FAIR_THREADS] = { 0 };
  g_autoptr(GString) expected = g_string_new (NULL);

  pair_init_full (&pair, 1, 1);
  fair.port = pair.port1;
  latch_init (&fair.turn);
  latch_init (&fair.posted);
  fair.log = g_string_new (NULL);
  g_mutex_init (&fair.log_mutex);

  for (guint rank = 0; rank < N_FAIR_THREADS; rank++)
    {
      FairThread *ft = &threads[wait_order[rank]];

      ft->fair = &fair;
      ft->rank = rank;
      ft->value = wait_order[rank];
    }
  for (guint i = 0; i < N_FAIR_THREADS; i++)
    threads[i].thread = g_thread_new ("fair", fair_thread_main, &threads[i]);

  for (guint rank = 0; rank < N_FAIR_THREADS; rank++)
    {
      latch_add (&fair.turn);
      latch_wait (&fair.posted, rank + 1, stress_timeout (), "fair: posted");
    }
  spin_context (NULL, QUIET_MSEC);
  for (guint i = 0; i < N_FAIR_THREADS; i++)
    g_assert_false (post_done (&threads[i].post));

  /* One message out at a time; the next in line completes, and only it. */
  g_assert_cmpint (receive_int (pair.port2), ==, 0);
  for (guint rank = 0; rank < N_FAIR_THREADS; rank++)
    {
      FairThread *ft = &threads[wait_order[rank]];

      WAIT_FOR (NULL, post_done (&ft->post));
      spin_context (NULL, QUIET_MSEC);
      for (guint later = rank + 1; later < N_FAIR_THREADS; later++)
        g_assert_false (post_done (&threads[wait_order[later]].post));
      g_string_append_printf (expected, "%d ", wait_order[rank]);
      g_mutex_lock (&fair.log_mutex);
      g_assert_cmpstr (fair.log->str, ==, expected->str);
      g_mutex_unlock (&fair.log_mutex);
      g_assert_cmpint (receive_int (pair.port2), ==, wait_order[rank]);
    }
  assert_receive_null (pair.port2);

  for (guint i = 0; i < N_FAIR_THREADS; i++)
    {
      g_thread_join (threads[i].thread);
      post_clear (&threads[i].post);
    }
  g_mutex_clear (&fair.log_mutex);
  g_string_free (fair.log, TRUE);
  latch_clear (&fair.posted);
  latch_clear (&fair.turn);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Transfer                                                                 */
/* ------------------------------------------------------------------------ */

/* The receiving port, with its mark and posts waiting at it, is transferred: the new object
 * has the mark and the queue, and the waiting posts go in as the new owner takes messages
 * out (one each), in order. */
static void
test_transfer_receiver_mark_and_waiting_travel (Fixture       *f,
                                                gconstpointer  data)
{
  Pair pair;
  Post posts[2] = { 0 };
  MpMessagePort *old, *moved;
  Recorder rec;

  pair_init_full (&pair, 2, 2);
  post_async (&posts[0], pair.port1, 2);
  post_async (&posts[1], pair.port1, 3);
  assert_posts_waiting (f->context, posts, 2);

  old = pair.port2;
  moved = transfer_port (old);
  pair.port2 = moved;
  g_assert_cmpuint (mp_message_port_get_high_water_mark (moved), ==, 2);
  g_assert_cmpuint (mp_message_port_get_n_queued (moved), ==, 2);
  g_assert_cmpuint (mp_message_port_get_n_queued (old), ==, 0);
  assert_posts_waiting (f->context, posts, 2);

  g_assert_cmpint (receive_int (moved), ==, 0);
  WAIT_FOR (f->context, post_done (&posts[0]));
  assert_post_ok (&posts[0]);
  assert_posts_waiting (f->context, &posts[1], 1);

  /* The new owner delivers; the last post goes in with the first message delivered. */
  recorder_init (&rec, moved);
  mp_message_port_start (moved);
  WAIT_FOR (f->context, rec.n_messages == 3 && post_done (&posts[1]));
  assert_post_ok (&posts[1]);
  g_assert_cmpstr (rec.log->str, ==, "1 2 3 ");

  /* The mark is the new owner's: the old object no longer has one, nor can change it. */
  g_assert_cmpuint (mp_message_port_get_high_water_mark (old), ==, 0);
  mp_message_port_set_high_water_mark (old, 7);
  g_assert_cmpuint (mp_message_port_get_high_water_mark (moved), ==, 2);
  mp_message_port_set_high_water_mark (moved, 1);
  g_assert_cmpuint (mp_message_port_get_high_water_mark (moved), ==, 1);
  recorder_clear (&rec);

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&pair, f->context);
  assert_finalized_eventually (f->context, old);
}

/* The sending port is transferred while its posts wait: they stay and complete (on the old
 * object) as room comes; the new owner's posts queue behind them. */
static void
test_transfer_sender_waiting_stay (Fixture       *f,
                                   gconstpointer  data)
{
  Pair pair;
  Post posts[3] = { 0 };
  g_autoptr(GString) log = g_string_new (NULL);
  MpMessagePort *old, *moved;

  pair_init_full (&pair, 1, 1);
  posts[0].log = posts[1].log = posts[2].log = log;
  post_async (&posts[0], pair.port1, 1);
  post_async (&posts[1], pair.port1, 2);
  assert_posts_waiting (f->context, posts, 2);

  old = pair.port1;
  moved = transfer_port (old);
  pair.port1 = moved;
  post_async (&posts[2], moved, 3);
  post_int (moved, 4);
  assert_posts_waiting (f->context, posts, 3);

  for (gint32 v = 0; v <= 4; v++)
    g_assert_cmpint (receive_int (pair.port2), ==, v);
  assert_receive_null (pair.port2);
  WAIT_FOR (f->context, post_done (&posts[0]) && post_done (&posts[1]) && post_done (&posts[2]));
  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    assert_post_ok (&posts[i]);
  g_assert_cmpstr (log->str, ==, "1 2 3 ");

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&pair, f->context);
  assert_finalized_eventually (f->context, old);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

static void
test_errors_closed_or_transferred (Fixture       *f,
                                   gconstpointer  data)
{
  Pair pair, other;
  Post posts[2] = { 0 };
  MpMessagePort *old;

  /* Closed by its own code (full or not makes no difference). */
  pair_init_full (&pair, 1, 1);
  mp_message_port_close (pair.port1);
  post_async (&posts[0], pair.port1, 1);
  WAIT_FOR (f->context, post_done (&posts[0]));
  assert_post_failed (&posts[0], MP_ERROR, MP_ERROR_INVALID_STATE);

  /* Transferred away. */
  pair_init (&other);
  old = other.port1;
  other.port1 = transfer_port (old);
  post_async (&posts[1], old, 1);
  WAIT_FOR (f->context, post_done (&posts[1]));
  assert_post_failed (&posts[1], MP_ERROR, MP_ERROR_INVALID_STATE);
  assert_receive_null (other.port2);

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&other, f->context);
  assert_finalized_eventually (f->context, old);
  pair_finish (&pair, f->context);
}

/* A bad transfer list fails with MP_ERROR_DATA_CLONE at once, even at a full port, and
 * takes nothing: not the source port, not its peer, not a closed port. */
/* @pair (mark 1) holds one message, 0, and nothing waits: a post of 4 is the first to wait,
 * goes in once 0 is taken, and is the only other message. */
static void
assert_next_post_waits_its_turn (Fixture *f,
                                 Pair    *pair,
                                 Post    *post)
{
  post_async (post, pair->port1, 4);
  assert_posts_waiting (f->context, post, 1);
  g_assert_cmpint (receive_int (pair->port2), ==, 0);
  WAIT_FOR (f->context, post_done (post));
  assert_post_ok (post);
  g_assert_cmpint (receive_int (pair->port2), ==, 4);
  assert_receive_null (pair->port2);
}

static void
test_errors_transfer_list (Fixture       *f,
                           gconstpointer  data)
{
  Pair pair, t;
  Post posts[4] = { 0 };
  MpMessagePort *list[2];

  pair_init_full (&pair, 1, 1);
  pair_init (&t);

  post_async_full (&posts[0], pair.port1, 1, &pair.port1, 1, NULL);
  list[0] = t.port1;
  list[1] = pair.port2;
  post_async_full (&posts[1], pair.port1, 2, list, 2, NULL);
  mp_message_port_close (t.port2);
  list[0] = t.port2;
  post_async_full (&posts[2], pair.port1, 3, list, 1, NULL);
  WAIT_FOR (f->context, post_done (&posts[0]) && post_done (&posts[1]) && post_done (&posts[2]));
  for (guint i = 0; i < 3; i++)
    assert_post_failed (&posts[i], MP_ERROR, MP_ERROR_DATA_CLONE);

  /* Nothing was taken or queued: the ports work, the next post is the first to wait. */
  g_assert_false (mp_message_port_is_closed (pair.port1));
  g_assert_false (mp_message_port_is_closed (t.port1));
  assert_next_post_waits_its_turn (f, &pair, &posts[3]);

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&t, f->context);
  pair_finish (&pair, f->context);
}

/* A refused post stays connected to its cancellable until its result is dispatched: a
 * cancel meanwhile finds nothing to withdraw, even when its list names one side twice (a
 * port listed twice, the destination, the sender): no lock is taken twice, the result
 * stays MP_ERROR_DATA_CLONE. (Found by the fuzzer as a hang.) */
static void
test_errors_transfer_list_cancelled (Fixture       *f,
                                     gconstpointer  data)
{
  Pair pair, t;
  Post posts[4] = { 0 };
  GCancellable *cancellables[3];
  MpMessagePort *list[3];

  pair_init_full (&pair, 1, 1);
  pair_init (&t);
  for (guint i = 0; i < G_N_ELEMENTS (cancellables); i++)
    cancellables[i] = g_cancellable_new ();

  list[0] = t.port1;
  list[1] = t.port1;
  post_async_full (&posts[0], pair.port1, 1, list, 2, cancellables[0]);
  list[0] = t.port1;
  list[1] = pair.port2;
  post_async_full (&posts[1], pair.port1, 2, list, 2, cancellables[1]);
  list[0] = pair.port1;
  list[1] = t.port2;
  list[2] = pair.port1;
  post_async_full (&posts[2], pair.port1, 3, list, 3, cancellables[2]);
  for (guint i = 0; i < G_N_ELEMENTS (cancellables); i++)
    {
      g_assert_false (post_done (&posts[i]));
      g_cancellable_cancel (cancellables[i]);
    }
  WAIT_FOR (f->context, post_done (&posts[0]) && post_done (&posts[1]) && post_done (&posts[2]));
  for (guint i = 0; i < 3; i++)
    assert_post_failed (&posts[i], MP_ERROR, MP_ERROR_DATA_CLONE);

  /* Nothing was taken or queued (but the message that fills the port), and every side
   * lock is free: the ports work, the next post is the first to wait. */
  g_assert_cmpuint (mp_message_port_get_n_queued (pair.port2), ==, 1);
  post_int (t.port1, 7);
  g_assert_cmpint (receive_int (t.port2), ==, 7);
  assert_next_post_waits_its_turn (f, &pair, &posts[3]);

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  for (guint i = 0; i < G_N_ELEMENTS (cancellables); i++)
    g_object_unref (cancellables[i]);
  pair_finish (&t, f->context);
  pair_finish (&pair, f->context);
}

/* The peer already closed: the post fails with MP_ERROR_CLOSED (nobody will take what the
 * producer posts) and the message is dropped; a failed call leaves its transfer list alone:
 * the port stays open and usable. A sync post still succeeds. */
static void
test_errors_peer_closed_fails_closed (Fixture       *f,
                                  gconstpointer  data)
{
  Pair pair, t;
  Recorder rec;
  Post posts[2] = { 0 };

  pair_init_full (&pair, 1, 1);
  mp_message_port_close (pair.port2);
  g_assert_true (mp_message_port_is_peer_closed (pair.port1));

  post_async (&posts[0], pair.port1, 1);
  pair_init (&t);
  recorder_init (&rec, t.port2);
  mp_message_port_start (t.port2);
  post_async_full (&posts[1], pair.port1, 2, &t.port1, 1, NULL);
  WAIT_FOR (f->context, post_done (&posts[0]) && post_done (&posts[1]));
  assert_post_failed (&posts[0], MP_ERROR, MP_ERROR_CLOSED);
  assert_post_failed (&posts[1], MP_ERROR, MP_ERROR_CLOSED);
  g_assert_false (mp_message_port_is_closed (t.port1));
  post_int (t.port1, 7);
  WAIT_FOR (f->context, rec.log->len > 0);
  spin_context (f->context, 20);
  g_assert_cmpstr (rec.log->str, ==, "7 ");
  g_assert_cmpuint (rec.n_close, ==, 0);
  post_int (pair.port1, 3);

  recorder_clear (&rec);
  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_clear (&posts[i]);
  pair_finish (&t, f->context);
  pair_finish (&pair, f->context);
}

static void
on_keep_result (GObject      *source,
                GAsyncResult *result,
                gpointer      user_data)
{
  GAsyncResult **out = user_data;

  *out = g_object_ref (result);
}

/* Programmer errors: a critical, and nothing happens. */
static void
test_errors_programmer (Fixture       *f,
                        gconstpointer  data)
{
  Pair pair;
  GAsyncResult *foreign = NULL;
  GError *error = NULL;
  guint value = 1;

  pair_init (&pair);

  EXPECT_CRITICAL (mp_message_port_post_message_async (NULL, g_variant_new_int32 (1), NULL, 0,
                                                       NULL, on_posted, NULL));
  EXPECT_CRITICAL (mp_message_port_post_message_async (pair.port1, g_variant_new_int32 (1),
                                                       NULL, 1, NULL, on_posted, NULL));
  EXPECT_CRITICAL (value = mp_message_port_get_high_water_mark (NULL));
  g_assert_cmpuint (value, ==, 0);
  EXPECT_CRITICAL (mp_message_port_set_high_water_mark (NULL, 1));
  value = 1;
  EXPECT_CRITICAL (value = mp_message_port_get_n_queued (NULL));
  g_assert_cmpuint (value, ==, 0);
  spin_context (f->context, QUIET_MSEC);
  assert_receive_null (pair.port2);

  /* A result of another call. */
  post_int (pair.port1, 1);
  mp_message_port_receive_async (pair.port2, NULL, on_keep_result, &foreign);
  WAIT_FOR (f->context, foreign != NULL);
  EXPECT_CRITICAL (g_assert_false (mp_message_port_post_message_finish (pair.port2, foreign,
                                                                        &error)));
  g_assert_no_error (error);
  g_object_unref (foreign);

  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Stress: 4 producers, sync and async, one port, a small mark              */
/* ------------------------------------------------------------------------ */

typedef struct _Stress Stress;

typedef struct
{
  Stress       *stress;
  guint         id;
  guint32       seed;
  GThread      *thread;
  GMainContext *context;     /* the producer thread's */
  guint         next_seq;    /* atomic: the next sequence number to post */
  guint         in_flight;   /* producer thread only: async posts not completed */
  guint         n_async;     /* producer thread only */
  guint         n_completed; /* producer thread only */
  guint         received;    /* consumer thread only: the next sequence number expected */
} StressProducer;

struct _Stress
{
  MpMessagePort  *port1;     /* posted on by every producer (not owned) */
  MpMessagePort  *port2;     /* started on the consumer thread (not owned) */
  guint           per_producer;
  Gate            go;
  Latch           producers_done;
  Latch           consumer_ready;
  StressProducer  producers[STRESS_PRODUCERS];
  /* Consumer thread only, but for the atomics. */
  GMainContext   *consumer_context;
  guint           n_received;  /* atomic */
  guint           n_received_by_call;
  int             closed;      /* atomic */
  GThread        *consumer;
};

#define STRESS_VALUE(id, seq) ((gint32) (((id) << 24) | (seq)))

static void
stress_check (Stress    *s,
              MpMessage *message)
{
  gint32 value = message_get_int (message);
  guint id = (guint) value >> 24;
  guint seq = (guint) value & 0xffffff;

  if (id >= STRESS_PRODUCERS)
    g_error ("stress: message from unknown producer %u", id);
  if (seq != s->producers[id].received)
    g_error ("stress: producer %u: message %u arrived where %u was expected",
             id, seq, s->producers[id].received);
  s->producers[id].received++;
  g_atomic_int_inc (&s->n_received);
}

static void
on_stress_message (MpMessagePort *port,
                   MpMessage     *message,
                   gpointer       user_data)
{
  Stress *s = user_data;
  guint n;

  stress_check (s, message);
  n = (guint) g_atomic_int_get (&s->n_received);

  /* Now and then, take a few more with receive(): they come next in the queue. */
  if (n % 7 == 0)
    for (guint i = 0; i < 3; i++)
      {
        g_autoptr(MpMessage) next = mp_message_port_receive (port);

        if (next == NULL)
          break;
        stress_check (s, next);
        s->n_received_by_call++;
      }

  /* And the mark moves, which admits waiting posts (raised) or holds new ones (lowered). */
  if (n % 1009 == 0)
    mp_message_port_set_high_water_mark (port, mp_message_port_get_high_water_mark (port) ==
                                               STRESS_MARK ? STRESS_LOW_MARK : STRESS_MARK);
}

static void
on_stress_close (MpMessagePort *port,
                 gpointer       user_data)
{
  Stress *s = user_data;

  g_atomic_int_set (&s->closed, 1);
}

static gpointer
stress_consumer_main (gpointer data)
{
  Stress *s = data;

  s->consumer_context = context_push_new ();
  g_signal_connect (s->port2, "message", G_CALLBACK (on_stress_message), s);
  g_signal_connect (s->port2, "close", G_CALLBACK (on_stress_close), s);
  mp_message_port_start (s->port2);
  latch_add (&s->consumer_ready);

  /* Blocking: the main thread fails the test if the stream stops moving. */
  while (!g_atomic_int_get (&s->closed))
    g_main_context_iteration (s->consumer_context, TRUE);

  g_signal_handlers_disconnect_by_data (s->port2, s);
  context_pop_free (s->consumer_context);

  return NULL;
}

static void
on_stress_posted (GObject      *source,
                  GAsyncResult *result,
                  gpointer      user_data)
{
  StressProducer *sp = user_data;
  GError *error = NULL;

  if (!mp_message_port_post_message_finish (MP_MESSAGE_PORT (source), result, &error))
    g_error ("stress: producer %u: an async post failed: %s", sp->id, error->message);
  g_assert_true (g_main_context_get_thread_default () == sp->context);
  sp->in_flight--;
  sp->n_completed++;
}

static gpointer
stress_producer_main (gpointer data)
{
  StressProducer *sp = data;
  Stress *s = sp->stress;
  GRand *rand = g_rand_new_with_seed (sp->seed);

  sp->context = context_push_new ();
  gate_wait (&s->go);

  for (guint seq = 0; seq < s->per_producer; seq++)
    {
      gint32 value = STRESS_VALUE (sp->id, seq);

      if (g_rand_int_range (rand, 0, 100) < STRESS_ASYNC_PERCENT)
        {
          while (sp->in_flight >= STRESS_IN_FLIGHT)
            g_main_context_iteration (sp->context, TRUE);
          sp->in_flight++;
          sp->n_async++;
          mp_message_port_post_message_async (s->port1, g_variant_new_int32 (value), NULL, 0,
                                              NULL, on_stress_posted, sp);
        }
      else
        {
          post_int (s->port1, value);
        }
      g_atomic_int_set (&sp->next_seq, seq + 1);
      /* Let the completed callbacks run now and then without blocking. */
      if (seq % 16 == 0)
        while (g_main_context_iteration (sp->context, FALSE))
          ;
    }
  while (sp->in_flight > 0)
    g_main_context_iteration (sp->context, TRUE);
  g_assert_cmpuint (sp->n_completed, ==, sp->n_async);

  context_pop_free (sp->context);
  g_rand_free (rand);
  latch_add (&s->producers_done);

  return NULL;
}

static void
test_stress_producers_sync_async (Fixture       *f,
                                  gconstpointer  data)
{
  Pair pair;
  Stress s = { 0 };
  Watchdog *dog;
  guint total, last = 0;
  gint64 last_progress;

  pair_init (&pair);
  s.port1 = pair.port1;
  s.port2 = pair.port2;
  s.per_producer = flow_scaled (STRESS_PER_PRODUCER, 2000);
  g_assert_cmpuint (s.per_producer, <, 1 << 24);
  total = s.per_producer * STRESS_PRODUCERS;
  mp_message_port_set_high_water_mark (pair.port2, STRESS_MARK);
  gate_init (&s.go);
  latch_init (&s.producers_done);
  latch_init (&s.consumer_ready);
  /* The watchdog covers the joins and the blocking iterations; the loop below names a stall
   * first, with the counts. */
  dog = watchdog_new ("stress", 4 * no_progress_timeout ());

  s.consumer = g_thread_new ("stress-consumer", stress_consumer_main, &s);
  latch_wait (&s.consumer_ready, 1, stress_timeout (), "stress: consumer started");
  for (guint i = 0; i < STRESS_PRODUCERS; i++)
    {
      StressProducer *sp = &s.producers[i];

      sp->stress = &s;
      sp->id = i;
      sp->seed = (guint32) g_test_rand_int ();
      sp->thread = g_thread_new ("stress-producer", stress_producer_main, sp);
    }
  gate_open (&s.go);

  last_progress = g_get_monotonic_time ();
  while (!g_atomic_int_get (&s.closed))
    {
      guint n = (guint) g_atomic_int_get (&s.n_received);
      gint64 now = g_get_monotonic_time ();

      if (n != last)
        {
          last = n;
          last_progress = now;
        }
      else if (now - last_progress > no_progress_timeout ())
        g_error ("stress: no progress for %" G_GINT64_FORMAT " s: %u of %u received, "
                 "producers at %u %u %u %u, %u queued",
                 no_progress_timeout () / G_TIME_SPAN_SECOND, n, total,
                 g_atomic_int_get (&s.producers[0].next_seq),
                 g_atomic_int_get (&s.producers[1].next_seq),
                 g_atomic_int_get (&s.producers[2].next_seq),
                 g_atomic_int_get (&s.producers[3].next_seq),
                 mp_message_port_get_n_queued (pair.port2));
      /* Once every producer is done (their async posts completed), the sending side
       * closes: the consumer's "close" comes after the last message. */
      if (latch_reached (&s.producers_done, STRESS_PRODUCERS) &&
          !mp_message_port_is_closed (pair.port1))
        mp_message_port_close (pair.port1);
      g_usleep (1000);
    }

  for (guint i = 0; i < STRESS_PRODUCERS; i++)
    g_thread_join (s.producers[i].thread);
  g_thread_join (s.consumer);
  watchdog_free (dog);

  g_test_message ("stress: %u messages, %u by receive(); async posts %u %u %u %u", total,
                  s.n_received_by_call, s.producers[0].n_async, s.producers[1].n_async,
                  s.producers[2].n_async, s.producers[3].n_async);
  g_assert_cmpuint (g_atomic_int_get (&s.n_received), ==, total);
  for (guint i = 0; i < STRESS_PRODUCERS; i++)
    {
      g_assert_cmpuint (s.producers[i].received, ==, s.per_producer);
      g_assert_cmpuint (s.producers[i].n_completed, ==, s.producers[i].n_async);
    }
  /* Both kinds were made, and both ways of receiving were used. */
  g_assert_cmpuint (s.producers[0].n_async, >, 0);
  g_assert_cmpuint (s.producers[0].n_async, <, s.per_producer);
  g_assert_cmpuint (s.n_received_by_call, >, 0);

  latch_clear (&s.consumer_ready);
  latch_clear (&s.producers_done);
  gate_clear (&s.go);
  pair_finish (&pair, f->context);
}

/* ------------------------------------------------------------------------ */
/* Across a stream (two ends in this process, over a socket pair)           */
/* ------------------------------------------------------------------------ */

static void
on_stream_made (GObject      *source,
                GAsyncResult *result,
                gpointer      user_data)
{
  MpMessagePort **out = user_data;
  g_autoptr(GError) error = NULL;

  *out = mp_message_port_new_for_stream_finish (result, &error);
  g_assert_no_error (error);
}

static GIOStream *
stream_for_fd (int fd)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocket) socket = g_socket_new_from_fd (fd, &error);

  g_assert_no_error (error);
  return G_IO_STREAM (g_socket_connection_factory_create_connection (socket));
}

/* A port whose peer is a port of a stream's other end, here: what crosses it is encoded,
 * travels as in a process boundary and carries Rooms. */
static void
stream_pair (GMainContext   *ctx,
             MpMessagePort **a,
             MpMessagePort **b)
{
  int fds[2];
  g_autoptr(GIOStream) sa = NULL;
  g_autoptr(GIOStream) sb = NULL;

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  sa = stream_for_fd (fds[0]);
  sb = stream_for_fd (fds[1]);
  *a = *b = NULL;
  mp_message_port_new_for_stream (sa, MP_STREAM_FLAGS_SERVER, NULL, on_stream_made, a);
  mp_message_port_new_for_stream (sb, MP_STREAM_FLAGS_NONE, NULL, on_stream_made, b);
  WAIT_FOR (ctx, *a != NULL && *b != NULL);
}

/* A port with a mark (q2), whose peer q has two messages queued at q2, goes to the other end
 * of a stream; the mark is set before the transfer or after it. The first Room about the
 * new port must follow the Post that names it, and the two local messages, taken here, are
 * not what the other end sent: the stream stays up. The other end's async posts then wait
 * at the mark, here: exactly 4 are queued at q2 while it takes nothing, and the rest go in
 * as it takes, in order. */
static void
test_stream_transfer_with_mark (Fixture       *f,
                                gconstpointer  data)
{
  gboolean mark_first = GPOINTER_TO_INT (data);
  MpMessagePort *pa, *pb;
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *q = mp_message_channel_get_port1 (channel);
  MpMessagePort *q2 = mp_message_channel_get_port2 (channel);
  g_autoptr(MpMessage) carrier = NULL;
  MpMessagePort *got;
  Post posts[12] = { 0 };

  stream_pair (f->context, &pa, &pb);
  if (mark_first)
    mp_message_port_set_high_water_mark (q2, 4);
  post_int (q, 100);
  post_int (q, 101);
  g_assert_true (mp_message_port_post_message (pa, NULL, &q, 1, NULL));
  WAIT_FOR (f->context, (carrier = mp_message_port_receive (pb)) != NULL);
  g_assert_cmpuint (mp_message_get_ports (carrier)->len, ==, 1);
  got = g_ptr_array_index (mp_message_get_ports (carrier), 0);
  if (!mark_first)
    mp_message_port_set_high_water_mark (q2, 4);
  g_assert_cmpint (receive_int (q2), ==, 100);
  g_assert_cmpint (receive_int (q2), ==, 101);
  /* Time for the Rooms to cross. */
  spin_context (f->context, 100);

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    post_async (&posts[i], got, (gint32) i);
  WAIT_FOR (f->context, mp_message_port_get_n_queued (q2) >= 4);
  spin_context (f->context, QUIET_MSEC);
  g_assert_cmpuint (mp_message_port_get_n_queued (q2), ==, 4);
  g_assert_false (post_done (&posts[G_N_ELEMENTS (posts) - 1]));

  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    {
      g_autoptr(MpMessage) message = NULL;

      WAIT_FOR (f->context, (message = mp_message_port_receive (q2)) != NULL);
      g_assert_cmpint (message_get_int (message), ==, (gint32) i);
    }
  for (guint i = 0; i < G_N_ELEMENTS (posts); i++)
    {
      WAIT_FOR (f->context, post_done (&posts[i]));
      assert_post_ok (&posts[i]);
      post_clear (&posts[i]);
    }
  g_assert_false (mp_message_port_is_closed (pa));
  g_assert_false (mp_message_port_is_closed (pb));
  g_assert_false (mp_message_port_is_closed (q2));

  /* q2's close reaches got over the stream. */
  mp_message_port_close (q2);
  WAIT_FOR (f->context, mp_message_port_is_peer_closed (got));
  mp_message_port_close (got);
  mp_message_port_close (pa);
  mp_message_port_close (pb);
  spin_context (f->context, QUIET_MSEC);
  g_object_unref (pa);
  g_object_unref (pb);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  /* First: its peak RSS is measured from a heap the other cases have not grown yet. */
  ADD_TEST ("/mpport/port/flow/flood/bounded-in-order", test_flood_bounded_in_order);

  ADD_TEST ("/mpport/port/flow/cancel/first-middle-last", test_cancel_first_middle_last);
  ADD_TEST ("/mpport/port/flow/cancel/after-admitted-succeeds", test_cancel_after_admitted);
  ADD_TEST ("/mpport/port/flow/cancel/before-call-posts-nothing", test_cancel_before_call);
  ADD_TEST ("/mpport/port/flow/cancel/transfer-list-comes-back",
            test_cancel_transfer_list_comes_back);
  ADD_TEST ("/mpport/port/flow/cancel/transfer-list-restarted-at-once",
            test_cancel_transfer_list_restart_at_once);
  ADD_TEST ("/mpport/port/flow/cancel/withdraws-transit-edge", test_cancel_withdraws_transit_edge);
  ADD_TEST ("/mpport/port/flow/cancel/races-admission", test_cancel_races_admission);

  ADD_TEST ("/mpport/port/flow/close/receiver-fails-waiting-closed",
            test_close_receiver_fails_waiting);
  ADD_TEST ("/mpport/port/flow/close/sender-fails-waiting-keeps-sync",
            test_close_sender_fails_waiting_keeps_sync);

  ADD_TEST ("/mpport/port/flow/mark/raised-admits-room-zero-admits-all",
            test_mark_raised_then_zero);
  ADD_TEST ("/mpport/port/flow/mark/lowered-new-posts-wait", test_mark_lowered_new_posts_wait);
  ADD_TEST ("/mpport/port/flow/mark/belongs-to-receiver", test_mark_belongs_to_receiver);
  ADD_TEST ("/mpport/port/flow/mark/bounds-dispatch", test_mark_bounds_dispatch);

  ADD_TEST ("/mpport/port/flow/order/sync-async-fifo", test_order_sync_async_fifo);
  ADD_TEST ("/mpport/port/flow/room/every-consumer-hands-out",
            test_room_every_consumer_hands_out);
  ADD_TEST ("/mpport/port/flow/fair/threads-in-wait-order", test_fair_threads_in_wait_order);

  ADD_TEST ("/mpport/port/flow/transfer/receiver-mark-and-waiting-travel",
            test_transfer_receiver_mark_and_waiting_travel);
  ADD_TEST ("/mpport/port/flow/transfer/sender-waiting-stay", test_transfer_sender_waiting_stay);

  ADD_TEST ("/mpport/port/flow/errors/closed-or-transferred-invalid-state",
            test_errors_closed_or_transferred);
  ADD_TEST ("/mpport/port/flow/errors/transfer-list-data-clone", test_errors_transfer_list);
  ADD_TEST ("/mpport/port/flow/errors/transfer-list-refused-then-cancelled",
            test_errors_transfer_list_cancelled);
  g_test_add ("/mpport/port/flow/stream/transfer-with-mark/before", Fixture, GINT_TO_POINTER (TRUE),
              fixture_setup, test_stream_transfer_with_mark, fixture_teardown);
  g_test_add ("/mpport/port/flow/stream/transfer-with-mark/after", Fixture, GINT_TO_POINTER (FALSE),
              fixture_setup, test_stream_transfer_with_mark, fixture_teardown);
  ADD_TEST ("/mpport/port/flow/errors/peer-closed-fails-closed",
            test_errors_peer_closed_fails_closed);
  ADD_TEST ("/mpport/port/flow/errors/programmer", test_errors_programmer);

  ADD_TEST ("/mpport/port/flow/stress/producers-sync-async", test_stress_producers_sync_async);

  return g_test_run ();
}
