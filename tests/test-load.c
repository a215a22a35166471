/* test-load.c: mpport under load: many threads, many ports, a flood
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * /mpport/load/threads-64x1000
 *   64 threads, each iterating its own GMainContext, each owning 1000
 *   started receiving ports (128 000 port objects, 64 000 GSources). Every
 *   port is fed by another thread, which posts numbered messages, now and
 *   then a message that carries a freshly made port ("cargo") with three
 *   messages and a close marker already queued in it, and finally closes
 *   its end. One port in twenty is closed by its receiver after a chosen
 *   number of messages instead. Everything is counted exactly: each port
 *   receives exactly what was posted before its close (FIFO, on its owner's
 *   thread), gets one "close"; each cargo that arrives delivers its three
 *   messages and one "close"; every port and context is finalized.
 *
 * /mpport/load/flood-10m
 *   10 000 000 messages posted to an unstarted port, which is then closed:
 *   the resident set size (/proc/self/statm) must come back to within 10%
 *   of what it was before the flood. Timings and sizes go to the TAP log.
 *
 *   What RSS can show depends on two allocators below mpport, so the test
 *   pins them down:
 *   - GLib 2.74's GSlice keeps freed chunks in per-thread magazines and
 *     slabs it never returns (GLib 2.76 made GSlice plain malloc): the test
 *     re-executes itself with G_SLICE=always-malloc if that is not set.
 *   - glibc keeps the last freed chunks of each size in a per-thread cache
 *     (tcache); those at the top of the heap pin all the free memory below
 *     them, so RSS right after the close depends on which chunk happened to
 *     be freed last. It is reported as is; the check is made after
 *     malloc_trim (0), which hands back every free page: what stays
 *     resident then is what is still allocated. (With
 *     GLIBC_TUNABLES=glibc.malloc.tcache_count=0 it comes back by itself.)
 *   The flood runs first, before the thread test grows the heap and the
 *   malloc arenas.
 *
 * Environment:
 *   MP_LOAD_SCALE=X    multiply the messages per port (at least 2) and the
 *                      flood size by X (default 1; the sanitizer and
 *                      valgrind runs use a fraction). The thread and port
 *                      counts never change.
 *   MP_STRESS_TIMEOUT=S  seconds a wait may take before failing (default 300)
 *
 * Under a sanitizer or valgrind the flood still runs and its accounting is
 * checked, but RSS is only reported: their allocators keep freed memory in
 * quarantines and shadow maps, so RSS says nothing about mpport there.
 */

#include <mpport/mpport.h>

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

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
# define LOAD_SANITIZED 1
#elif defined(__has_feature)
# if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#  define LOAD_SANITIZED 1
# endif
#endif
#ifndef LOAD_SANITIZED
# define LOAD_SANITIZED 0
#endif

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

static guint
load_scaled (guint base)
{
  return mp_test_scaled (mp_test_env_scale ("MP_LOAD_SCALE", 1000.0), base);
}

static gint64
load_timeout (void)
{
  return mp_test_timeout (300);
}

static double
seconds_since (gint64 start)
{
  return (g_get_monotonic_time () - start) / (double) G_TIME_SPAN_SECOND;
}

/* Resident set size in bytes, from /proc/self/statm. */
static guint64
rss_bytes (void)
{
  char *contents = NULL;
  guint64 size = 0, resident = 0;
  GError *error = NULL;

  if (!g_file_get_contents ("/proc/self/statm", &contents, NULL, &error))
    g_error ("reading /proc/self/statm: %s", error->message);
  if (sscanf (contents, "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, &size, &resident) != 2)
    g_error ("unexpected /proc/self/statm: %s", contents);
  g_free (contents);

  return resident * (guint64) sysconf (_SC_PAGESIZE);
}

static double
mib (guint64 bytes)
{
  return bytes / (1024.0 * 1024.0);
}

/* ------------------------------------------------------------------ */
/* /mpport/load/threads-64x1000                                         */
/* ------------------------------------------------------------------ */

#define LOAD_THREADS        64
#define LOAD_PORTS          1000
#define LOAD_POSTS_PER_PORT 8       /* scaled by MP_LOAD_SCALE */
#define CARGO_PERMILLE      20      /* posts that carry a cargo port */
#define CARGO_MESSAGES      3
#define RECEIVER_CLOSE_ONE_IN 20    /* links closed by their receiver */
#define OPS_PER_ROUND       64      /* posts between two looks at the own context */

typedef struct _LoadThread LoadThread;

/* One channel: port2 is started on the receiver's context, port1 is posted on
 * by the sender thread. */
typedef struct
{
  MpMessageChannel *channel;   /* the receiver's reference; dropped by main at the end */
  MpMessagePort *port1;        /* transfer none, from the channel */
  LoadThread *receiver;
  LoadThread *sender;
  gpointer weak[2];            /* weak pointers on port1, port2 */

  /* Sender thread only (read by main after the joins). */
  guint posted;
  guint target;                /* messages to post before closing port1 */
  guint cargo_sent;
  gboolean sender_closed;

  /* Receiver thread only (read by main after the joins). */
  guint close_after;           /* 0, or close port2 in the handler at this count */
  guint received;
  guint cargo_received;
  guint closes;
  guint notify_closed;
} Link;

/* A port that arrived in a message, started on the receiver's context. */
typedef struct
{
  LoadThread *owner;
  guint received;
  guint closes;
} CargoRx;

struct _LoadThread
{
  guint id;
  GThread *thread;             /* set by the thread itself */
  GMainContext *context;       /* the thread's own, pushed thread-default */
  GRand *rand;

  Link links[LOAD_PORTS];      /* the links this thread receives on */
  GPtrArray *sending;          /* Link *: the links this thread posts on */

  /* Own thread only, read by main after the joins. */
  guint links_closed;          /* "close" on own receiving ports */
  guint cargo_arrived;
  guint cargo_closed;
  guint cargo_messages;
  GPtrArray *cargo;            /* CargoRx *, owned */
  guint iterations;
};

typedef struct
{
  LoadThread threads[LOAD_THREADS];
  Latch set_up;                /* every thread made its links */
  Latch done;                  /* every thread saw everything it must see */
  guint posts_per_port;
  gint cargo_finalized;        /* atomic */
  gint wrong_thread;           /* atomic: emissions off the owner thread */
} Load;

static Load *load;

static void
on_cargo_finalized (gpointer  data,
                    GObject  *where_the_object_was)
{
  g_atomic_int_inc (&load->cargo_finalized);
}

static void
check_owner (LoadThread    *owner,
             MpMessagePort *port)
{
  if (G_UNLIKELY (g_thread_self () != owner->thread ||
                  mp_message_port_get_context (port) != owner->context))
    g_atomic_int_inc (&load->wrong_thread);
}

static void
on_cargo_message (MpMessagePort *port,
                  MpMessage     *message,
                  gpointer       user_data)
{
  CargoRx *rx = user_data;
  GVariant *data = mp_message_get_data (message);

  check_owner (rx->owner, port);
  g_assert_nonnull (data);
  g_assert_cmpuint (g_variant_get_uint32 (data), ==, rx->received);
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);
  rx->received++;
  rx->owner->cargo_messages++;
}

static void
on_cargo_close (MpMessagePort *port,
                gpointer       user_data)
{
  CargoRx *rx = user_data;

  check_owner (rx->owner, port);
  g_assert_cmpuint (rx->received, ==, CARGO_MESSAGES);
  g_assert_cmpuint (rx->closes, ==, 0);
  rx->closes++;
  rx->owner->cargo_closed++;
}

static void
on_link_message (MpMessagePort *port,
                 MpMessage     *message,
                 gpointer       user_data)
{
  Link *link = user_data;
  LoadThread *self = link->receiver;
  GVariant *data = mp_message_get_data (message);
  GPtrArray *ports = mp_message_get_ports (message);

  check_owner (self, port);
  g_assert_cmpuint (link->closes, ==, 0);
  g_assert_nonnull (data);
  /* FIFO and exactly once: the sender numbers its posts per link. */
  g_assert_cmpuint (g_variant_get_uint32 (data), ==, link->received);
  link->received++;

  if (ports->len > 0)
    {
      MpMessagePort *cargo = g_ptr_array_index (ports, 0);
      CargoRx *rx = g_new0 (CargoRx, 1);

      g_assert_cmpuint (ports->len, ==, 1);
      g_assert_null (mp_message_port_get_context (cargo));
      rx->owner = self;
      g_ptr_array_add (self->cargo, rx);
      link->cargo_received++;
      self->cargo_arrived++;
      g_signal_connect (cargo, "message", G_CALLBACK (on_cargo_message), rx);
      g_signal_connect (cargo, "close", G_CALLBACK (on_cargo_close), rx);
      g_object_weak_ref (G_OBJECT (cargo), on_cargo_finalized, NULL);
      /* Kept alive by its source from here on; the message holds the only
       * other reference. */
      mp_message_port_start (cargo);
    }

  if (link->close_after != 0 && link->received == link->close_after)
    {
      mp_message_port_close (port);
      /* Nothing more may be emitted but "close". */
      g_assert_true (mp_message_port_is_closed (port));
    }
}

static void
on_link_notify_closed (GObject    *object,
                       GParamSpec *pspec,
                       gpointer    user_data)
{
  Link *link = user_data;

  g_assert_cmpuint (link->closes, ==, 0);
  link->notify_closed++;
}

static void
on_link_close (MpMessagePort *port,
               gpointer       user_data)
{
  Link *link = user_data;

  check_owner (link->receiver, port);
  g_assert_cmpuint (link->notify_closed, ==, 1);
  g_assert_cmpuint (link->closes, ==, 0);
  link->closes++;
  link->receiver->links_closed++;
}

/* Posts the next message on @link, with a cargo port now and then. */
static void
link_post_next (LoadThread *self,
                Link       *link)
{
  GVariant *data = g_variant_new_uint32 (link->posted);

  if (g_rand_int_range (self->rand, 0, 1000) < CARGO_PERMILLE)
    {
      MpMessageChannel *cargo = mp_message_channel_new ();
      MpMessagePort *in = mp_message_channel_get_port1 (cargo);
      MpMessagePort *out = mp_message_channel_get_port2 (cargo);
      guint i;

      /* Queued in the cargo port before it travels, then the close marker. */
      for (i = 0; i < CARGO_MESSAGES; i++)
        post_or_die (in, g_variant_new_uint32 (i), NULL);
      post_or_die (link->port1, data, out);
      g_assert_true (mp_message_port_is_closed (out));   /* detached */
      mp_message_port_close (in);
      g_object_unref (cargo);
      link->cargo_sent++;
    }
  else
    {
      post_or_die (link->port1, data, NULL);
    }

  link->posted++;
}

/* Runs whatever is ready on the thread's context, without blocking. */
static void
load_iterate (LoadThread *self)
{
  guint n = 0;

  while (n < 64 && g_main_context_iteration (self->context, FALSE))
    n++;
  self->iterations += n;
}

static gboolean
load_thread_finished (LoadThread *self)
{
  return self->links_closed == LOAD_PORTS && self->cargo_closed == self->cargo_arrived;
}

static gboolean
heartbeat (gpointer data)
{
  return G_SOURCE_CONTINUE;
}

static gpointer
load_thread_func (gpointer data)
{
  LoadThread *self = data;
  GSource *beat;
  gint64 deadline;
  guint open_sends;
  guint i;

  self->thread = g_thread_self ();
  self->context = g_main_context_new ();
  g_main_context_push_thread_default (self->context);

  /* Set up: 1000 channels, port2 started here. Half the port2 objects are
   * kept alive only by their sources (and the channel object, which main
   * holds until the end). */
  for (i = 0; i < LOAD_PORTS; i++)
    {
      Link *link = &self->links[i];
      MpMessagePort *port2;

      link->channel = mp_message_channel_new ();
      link->port1 = mp_message_channel_get_port1 (link->channel);
      port2 = mp_message_channel_get_port2 (link->channel);
      link->receiver = self;
      link->target = load->posts_per_port;
      if (g_rand_int_range (self->rand, 0, RECEIVER_CLOSE_ONE_IN) == 0)
        link->close_after = (guint) g_rand_int_range (self->rand, 1, (gint32) link->target + 1);
      link->weak[0] = link->port1;
      link->weak[1] = port2;
      g_object_add_weak_pointer (G_OBJECT (link->port1), &link->weak[0]);
      g_object_add_weak_pointer (G_OBJECT (port2), &link->weak[1]);
      g_signal_connect (port2, "message", G_CALLBACK (on_link_message), link);
      g_signal_connect (port2, "notify::closed", G_CALLBACK (on_link_notify_closed), link);
      g_signal_connect (port2, "close", G_CALLBACK (on_link_close), link);
      mp_message_port_start (port2);
    }

  latch_arrive_and_wait (&load->set_up, LOAD_THREADS, load_timeout (), "setup");

  /* Work: post on every link this thread feeds, in random order, looking at
   * its own context between rounds. */
  open_sends = self->sending->len;
  while (open_sends > 0)
    {
      guint op;

      for (op = 0; op < OPS_PER_ROUND && open_sends > 0; op++)
        {
          guint k = (guint) g_rand_int_range (self->rand, 0, (gint32) open_sends);
          Link *link = g_ptr_array_index (self->sending, k);

          if (link->posted < link->target)
            link_post_next (self, link);

          if (link->posted == link->target)
            {
              mp_message_port_close (link->port1);
              g_assert_true (mp_message_port_is_closed (link->port1));
              link->sender_closed = TRUE;
              /* Move it past the open ones. */
              open_sends--;
              self->sending->pdata[k] = self->sending->pdata[open_sends];
              self->sending->pdata[open_sends] = link;
            }
        }
      load_iterate (self);
    }

  /* Drain: until each own port saw its "close" and each cargo its own. A
   * heartbeat bounds each blocking iteration so the deadline is checked. */
  beat = g_timeout_source_new (100);
  g_source_set_callback (beat, heartbeat, NULL, NULL);
  g_source_attach (beat, self->context);
  deadline = g_get_monotonic_time () + load_timeout ();
  while (!load_thread_finished (self))
    {
      if (g_get_monotonic_time () > deadline)
        g_error ("load thread %u: %u of %u ports closed, cargo %u of %u closed by the deadline",
                 self->id, self->links_closed, LOAD_PORTS, self->cargo_closed, self->cargo_arrived);
      g_main_context_iteration (self->context, TRUE);
      self->iterations++;
    }
  g_source_destroy (beat);
  g_source_unref (beat);

  latch_arrive_and_wait (&load->done, LOAD_THREADS, load_timeout (), "drain");

  /* Nothing may arrive any more: every port of this context is closed. */
  while (g_main_context_iteration (self->context, FALSE))
    ;
  g_main_context_pop_thread_default (self->context);
  g_main_context_unref (self->context);

  return NULL;
}

static void
test_load_threads (void)
{
  gint64 start = g_get_monotonic_time ();
  guint64 rss_start = rss_bytes (), rss_peak = 0;
  guint64 posted = 0, received = 0, cargo_sent = 0, cargo_arrived = 0, cargo_messages = 0;
  guint64 iterations = 0;
  guint receiver_closed = 0;
  GThread *handles[LOAD_THREADS];
  double setup_s;
  guint t, i;

  load = g_new0 (Load, 1);
  /* At least two, so that a receiver may close between two messages. */
  load->posts_per_port = MAX (2, load_scaled (LOAD_POSTS_PER_PORT));
  latch_init (&load->set_up);
  latch_init (&load->done);

  /* Link i of thread t is fed by thread (t + 1 + i % 63) % 64: every other
   * thread feeds each thread, about 1000 links per sender. */
  for (t = 0; t < LOAD_THREADS; t++)
    {
      LoadThread *self = &load->threads[t];

      self->id = t;
      self->rand = g_rand_new_with_seed (g_test_rand_int ());
      self->sending = g_ptr_array_new ();
      self->cargo = g_ptr_array_new_with_free_func (g_free);
    }
  for (t = 0; t < LOAD_THREADS; t++)
    for (i = 0; i < LOAD_PORTS; i++)
      {
        LoadThread *sender = &load->threads[(t + 1 + i % (LOAD_THREADS - 1)) % LOAD_THREADS];

        load->threads[t].links[i].sender = sender;
        g_ptr_array_add (sender->sending, &load->threads[t].links[i]);
      }

  for (t = 0; t < LOAD_THREADS; t++)
    {
      char *name = g_strdup_printf ("load-%u", t);

      /* The thread records its own GThread in ->thread (used by its handlers). */
      handles[t] = g_thread_new (name, load_thread_func, &load->threads[t]);
      g_free (name);
    }
  for (t = 0; t < LOAD_THREADS; t++)
    g_thread_join (handles[t]);
  setup_s = seconds_since (start);
  rss_peak = rss_bytes ();

  g_assert_cmpint (g_atomic_int_get (&load->wrong_thread), ==, 0);

  for (t = 0; t < LOAD_THREADS; t++)
    {
      LoadThread *self = &load->threads[t];

      g_assert_cmpuint (self->links_closed, ==, LOAD_PORTS);
      g_assert_cmpuint (self->cargo_closed, ==, self->cargo_arrived);
      g_assert_cmpuint (self->cargo_messages, ==, CARGO_MESSAGES * self->cargo_arrived);
      cargo_arrived += self->cargo_arrived;
      cargo_messages += self->cargo_messages;
      iterations += self->iterations;

      for (i = 0; i < LOAD_PORTS; i++)
        {
          Link *link = &self->links[i];

          g_assert_true (link->sender_closed);
          g_assert_cmpuint (link->posted, ==, link->target);
          g_assert_cmpuint (link->closes, ==, 1);
          g_assert_cmpuint (link->notify_closed, ==, 1);
          if (link->close_after != 0)
            {
              /* Closed by its receiver: exactly what came before. */
              g_assert_cmpuint (link->received, ==, link->close_after);
              g_assert_cmpuint (link->cargo_received, <=, link->cargo_sent);
              receiver_closed++;
            }
          else
            {
              g_assert_cmpuint (link->received, ==, link->posted);
              g_assert_cmpuint (link->cargo_received, ==, link->cargo_sent);
            }
          posted += link->posted;
          received += link->received;
          cargo_sent += link->cargo_sent;

          g_object_unref (link->channel);
          if (link->weak[0] != NULL || link->weak[1] != NULL)
            g_error ("link %u of thread %u: port%s not finalized", i, t,
                     link->weak[0] != NULL ? "1" : "2");
        }
      g_rand_free (self->rand);
      g_ptr_array_unref (self->sending);
      g_ptr_array_unref (self->cargo);
    }

  /* Every cargo port object that arrived was finalized after its close. */
  g_assert_cmpint (g_atomic_int_get (&load->cargo_finalized), ==, (gint) cargo_arrived);
  g_assert_cmpuint (cargo_arrived, <=, cargo_sent);
  g_assert_cmpuint (receiver_closed, >, 0);
  g_assert_cmpuint (cargo_arrived, >, 0);

  g_test_message ("threads-64x1000: %u threads x %u ports, %u posts per port: "
                  "%" G_GUINT64_FORMAT " posted, %" G_GUINT64_FORMAT " received "
                  "(%u ports closed by their receiver), %" G_GUINT64_FORMAT " cargo ports sent, "
                  "%" G_GUINT64_FORMAT " arrived with %" G_GUINT64_FORMAT " messages; "
                  "%" G_GUINT64_FORMAT " context iterations; %.3f s; RSS %.1f MiB -> %.1f MiB",
                  LOAD_THREADS, LOAD_PORTS, load->posts_per_port, posted, received,
                  receiver_closed, cargo_sent, cargo_arrived, cargo_messages, iterations,
                  setup_s, mib (rss_start), mib (rss_peak));

  latch_clear (&load->set_up);
  latch_clear (&load->done);
  g_clear_pointer (&load, g_free);
}

/* ------------------------------------------------------------------ */
/* /mpport/load/flood-10m                                               */
/* ------------------------------------------------------------------ */

#define FLOOD_MESSAGES 10000000

static void
flood_once (guint n,
            gboolean report)
{
  MpMessageChannel *channel = mp_message_channel_new ();
  MpMessagePort *port1 = mp_message_channel_get_port1 (channel);
  MpMessagePort *port2 = mp_message_channel_get_port2 (channel);
  gint64 start;
  guint64 rss_full, rss_closed;
  double post_s, close_s;
  MpMessage *head;
  guint i;

  start = g_get_monotonic_time ();
  for (i = 0; i < n; i++)
    post_or_die (port1, g_variant_new_uint32 (i), NULL);
  post_s = seconds_since (start);
  rss_full = rss_bytes ();

  /* Still unstarted and queued in order. */
  g_assert_null (mp_message_port_get_context (port2));
  head = mp_message_port_receive (port2);
  g_assert_nonnull (head);
  g_assert_cmpuint (g_variant_get_uint32 (mp_message_get_data (head)), ==, 0);
  mp_message_unref (head);

  start = g_get_monotonic_time ();
  mp_message_port_close (port2);
  close_s = seconds_since (start);
  rss_closed = rss_bytes ();
  g_assert_true (mp_message_port_is_closed (port2));
  g_assert_null (mp_message_port_receive (port2));

  /* The sender reaches the close marker. */
  g_assert_null (mp_message_port_receive (port1));
  g_assert_true (mp_message_port_is_closed (port1));
  g_assert_finalize_object (channel);

  if (report)
    g_test_message ("flood: %u posts in %.3f s (%.0f ns/post), RSS with the queue %.1f MiB "
                    "(%.0f bytes/message), close() dropped it in %.3f s, RSS right after "
                    "the close %.1f MiB",
                    n, post_s, post_s * 1e9 / n, mib (rss_full),
                    (double) rss_full / n, close_s, mib (rss_closed));
}

static void
test_load_flood (void)
{
  guint n = load_scaled (FLOOD_MESSAGES);
  guint64 before, after;
  double ratio;
  gboolean rss_meaningful = !LOAD_SANITIZED && !RUNNING_ON_VALGRIND;

  /* Warm up type registration, the allocator and the i18n machinery so the
   * baseline is the steady state, not a cold process. */
  flood_once (MIN (n, 1000), FALSE);

  malloc_trim (0);
  before = rss_bytes ();
  flood_once (n, TRUE);
  malloc_trim (0);
  after = rss_bytes ();
  ratio = (double) after / (double) before;

  g_test_message ("flood: RSS before %.1f MiB, after the close and malloc_trim %.1f MiB (%.1f%%)%s",
                  mib (before), mib (after), 100.0 * ratio,
                  rss_meaningful ? "" : " (not checked under a sanitizer or valgrind)");
  if (rss_meaningful && ratio > 1.10)
    g_error ("flood: RSS did not come back: %.1f MiB before, %.1f MiB after the close",
             mib (before), mib (after));
}

int
main (int   argc,
      char *argv[])
{
  /* See the flood test: GSlice's magazines would keep the flood's memory.
   * (Not under valgrind: the new image would run outside it.) */
  if (g_strcmp0 (g_getenv ("G_SLICE"), "always-malloc") != 0 && !RUNNING_ON_VALGRIND)
    {
      g_setenv ("G_SLICE", "always-malloc", TRUE);
      execv ("/proc/self/exe", argv);
      g_error ("re-executing with G_SLICE=always-malloc: %s", g_strerror (errno));
    }

  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/mpport/load/flood-10m", test_load_flood);
  g_test_add_func ("/mpport/load/threads-64x1000", test_load_threads);

  return g_test_run ();
}
