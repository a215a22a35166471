/* test-stress.c: cross-thread stress tests for MpMessagePort
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * mpport exists because Bun shipped a data race in its port registry. These
 * tests hammer the library from many threads at once and check every message
 * exactly: a race that loses, duplicates or reorders a single message, emits
 * on the wrong thread or leaks an object fails them.
 *
 * Environment:
 *   MP_STRESS_SCALE=X    multiply every iteration count by X (default 1;
 *                        a fraction such as 0.05 shrinks the run for
 *                        valgrind)
 *   MP_STRESS_TIMEOUT=S  seconds any single wait may take before the test
 *                        fails instead of hanging (default 120); a
 *                        watchdog thread enforces it on each test as a
 *                        whole too (4x for started-transfer)
 *
 * Random choices come from g_test_rand_int(): rerun a failure with the
 * --seed printed in the TAP output to get the same decisions (the thread
 * interleaving will differ, of course).
 */

#include <mpport/mpport.h>

#include "mp-test-util.h"

/* ------------------------------------------------------------------ */
/* Shared helpers                                                       */
/* ------------------------------------------------------------------ */

/* Waits under @lock until *@counter reaches @target or @deadline passes.
 * Returns whether the target was reached. */
static gboolean
wait_for_counter (GMutex      *lock,
                  GCond       *cond,
                  const guint *counter,
                  guint        target,
                  gint64       deadline)
{
  gboolean reached;

  g_mutex_lock (lock);
  while (*counter < target)
    {
      if (!g_cond_wait_until (cond, lock, deadline))
        break;
    }
  reached = *counter >= target;
  g_mutex_unlock (lock);

  return reached;
}

/* Points *@slot at @object and clears it when @object is finalized. */
static void
watch_object (gpointer *slot,
              gpointer  object)
{
  *slot = object;
  g_object_add_weak_pointer (G_OBJECT (object), slot);
}

static void
assert_watches_cleared (gpointer const *slots,
                        guint           n_slots,
                        const char     *what)
{
  guint i;

  for (i = 0; i < n_slots; i++)
    {
      if (slots[i] != NULL)
        g_error ("%s: watched object %u (%s %p) was not finalized",
                 what, i, G_OBJECT_TYPE_NAME (slots[i]), slots[i]);
    }
}

/* ------------------------------------------------------------------ */
/* /mpport/stress/seed                                                  */
/*                                                                      */
/* The shape of the original crash (Bun message-channel-concurrent):    */
/* 6 threads + the main thread each create, transfer, drain and close  */
/* channels as fast as they can; nothing is started, everything is     */
/* synchronous receive(). Every thread must count exactly 6400, in     */
/* every round.                                                         */
/* ------------------------------------------------------------------ */

#define SEED_THREADS              6
#define SEED_ITERATIONS           400
#define SEED_CHANNELS             8
#define SEED_MESSAGES_PER_CHANNEL 2
/* The original shape is one round; repeat it (scaled by MP_STRESS_SCALE),
 * each round with fresh threads, to give a rare interleaving more chances. */
#define SEED_ROUNDS               16

/* Objects watched in the sampled channel of every iteration. */
enum
{
  SEED_WATCH_OUTER_PORT1,
  SEED_WATCH_OUTER_PORT2,
  SEED_WATCH_INNER_PORT1,   /* the detached sender-side object */
  SEED_WATCH_INNER_PORT2,
  SEED_WATCH_RECEIVED,      /* the new object that arrived in get_ports() */
  SEED_N_WATCHES
};

typedef struct
{
  guint id;
  guint n_iterations;
  Gate *gate;
  GThread *thread;
  guint count;   /* written by the thread, read after join */
} SeedThread;

/* Drains @port with receive(): expects the tagged message carrying one port,
 * then the plain one. Closes each received port unless @finalize_received, in
 * which case dropping the message must close its side by finalization.
 * Returns the number of messages received. */
static guint
seed_drain (MpMessagePort *port,
            gint32         tag,
            gboolean       finalize_received,
            gpointer      *received_watch)
{
  MpMessage *message;
  guint n = 0;

  while ((message = mp_message_port_receive (port)) != NULL)
    {
      GVariant *data = mp_message_get_data (message);
      GPtrArray *ports = mp_message_get_ports (message);
      guint k;

      g_assert_nonnull (data);
      g_assert_nonnull (ports);

      if (n == 0)
        {
          /* FIFO: the message carrying the port comes first. */
          g_assert_true (g_variant_is_of_type (data, G_VARIANT_TYPE_INT32));
          g_assert_cmpint (g_variant_get_int32 (data), ==, tag);
          g_assert_cmpuint (ports->len, ==, 1);
        }
      else
        {
          g_assert_true (g_variant_is_of_type (data, G_VARIANT_TYPE_STRING));
          g_assert_cmpstr (g_variant_get_string (data, NULL), ==, "plain");
          g_assert_cmpuint (ports->len, ==, 0);
        }

      for (k = 0; k < ports->len; k++)
        {
          MpMessagePort *received = g_ptr_array_index (ports, k);

          g_assert_true (MP_IS_MESSAGE_PORT (received));
          g_assert_false (mp_message_port_is_closed (received));
          g_assert_null (mp_message_port_get_context (received));
          if (received_watch != NULL)
            watch_object (received_watch, received);
          if (!finalize_received)
            mp_message_port_close (received);
        }

      n++;
      mp_message_unref (message);
    }

  return n;
}

/* One channel of one iteration: post a port and a plain message through
 * @outer's port1, drain port2. Returns the number of messages drained. */
static guint
seed_exercise_channel (MpMessageChannel *outer,
                       MpMessageChannel *inner,
                       gint32            tag,
                       gboolean          finalize_received,
                       gpointer         *watches)
{
  MpMessagePort *p1 = mp_message_channel_get_port1 (outer);
  MpMessagePort *p2 = mp_message_channel_get_port2 (outer);
  MpMessagePort *inner_p1 = mp_message_channel_get_port1 (inner);
  MpMessagePort *inner_p2 = mp_message_channel_get_port2 (inner);
  MpMessage *leftover;
  guint n;

  if (watches != NULL)
    {
      watch_object (&watches[SEED_WATCH_OUTER_PORT1], p1);
      watch_object (&watches[SEED_WATCH_OUTER_PORT2], p2);
      watch_object (&watches[SEED_WATCH_INNER_PORT1], inner_p1);
      watch_object (&watches[SEED_WATCH_INNER_PORT2], inner_p2);
    }

  post_or_die (p1, g_variant_new_int32 (tag), inner_p1);
  /* The sender-side object is detached as soon as the post returns. */
  g_assert_true (mp_message_port_is_closed (inner_p1));
  g_assert_null (mp_message_port_get_context (inner_p1));
  post_or_die (p1, g_variant_new_string ("plain"), NULL);

  n = seed_drain (p2, tag, finalize_received,
                  watches != NULL ? &watches[SEED_WATCH_RECEIVED] : NULL);

  /* The received port's side is closed now (by close() or finalization):
   * its peer reads the in-band close marker and reports closed. */
  leftover = mp_message_port_receive (inner_p2);
  g_assert_null (leftover);
  g_assert_true (mp_message_port_is_closed (inner_p2));

  return n;
}

static void
seed_close_channel (MpMessageChannel *channel)
{
  mp_message_port_close (mp_message_channel_get_port1 (channel));
  mp_message_port_close (mp_message_channel_get_port2 (channel));
}

static guint
seed_hammer (guint id,
             guint n_iterations)
{
  guint count = 0;
  guint i;

  for (i = 0; i < n_iterations; i++)
    {
      MpMessageChannel *outer[SEED_CHANNELS];
      MpMessageChannel *inner[SEED_CHANNELS];
      gpointer watches[SEED_N_WATCHES] = { NULL, };
      guint sampled = (i + id) % SEED_CHANNELS;
      /* Every fourth iteration drops the received port without closing it:
       * finalizing an unstarted port must close its side. */
      gboolean finalize_received = (i % 4) == 3;
      guint j;

      for (j = 0; j < SEED_CHANNELS; j++)
        {
          outer[j] = mp_message_channel_new ();
          inner[j] = mp_message_channel_new ();
          count += seed_exercise_channel (outer[j], inner[j],
                                          (gint32) (i * SEED_CHANNELS + j),
                                          finalize_received,
                                          j == sampled ? watches : NULL);
        }

      /* As in the original: keep port1, port2 and inner.port2 until the end
       * of the iteration, then close them all and drop every reference. */
      for (j = 0; j < SEED_CHANNELS; j++)
        {
          seed_close_channel (outer[j]);
          mp_message_port_close (mp_message_channel_get_port2 (inner[j]));

          if (j == sampled)
            {
              g_assert_finalize_object (outer[j]);
              g_assert_finalize_object (inner[j]);
            }
          else
            {
              g_object_unref (outer[j]);
              g_object_unref (inner[j]);
            }
        }

      assert_watches_cleared (watches, SEED_N_WATCHES, "seed");
    }

  return count;
}

static gpointer
seed_thread_func (gpointer data)
{
  SeedThread *self = data;

  gate_wait (self->gate);
  self->count = seed_hammer (self->id, self->n_iterations);

  return NULL;
}

/* One round of the original: fresh threads, all released at once. */
static void
seed_round (guint round,
            guint n_iterations)
{
  SeedThread threads[SEED_THREADS];
  Gate gate;
  guint expected = n_iterations * SEED_CHANNELS * SEED_MESSAGES_PER_CHANNEL;
  guint main_count;
  guint t;

  gate_init (&gate);

  for (t = 0; t < SEED_THREADS; t++)
    {
      char *name = g_strdup_printf ("seed-%u", t);

      threads[t].id = t + 1;
      threads[t].n_iterations = n_iterations;
      threads[t].gate = &gate;
      threads[t].count = 0;
      threads[t].thread = g_thread_new (name, seed_thread_func, &threads[t]);
      g_free (name);
    }

  gate_open (&gate);
  main_count = seed_hammer (0, n_iterations);

  for (t = 0; t < SEED_THREADS; t++)
    g_thread_join (threads[t].thread);

  if (main_count != expected)
    g_test_message ("seed round %u: the main thread miscounted", round);
  g_assert_cmpuint (main_count, ==, expected);
  for (t = 0; t < SEED_THREADS; t++)
    {
      if (threads[t].count != expected)
        g_test_message ("seed round %u: thread %u miscounted", round, t);
      g_assert_cmpuint (threads[t].count, ==, expected);
    }

  gate_clear (&gate);
}

static void
test_stress_seed (void)
{
  guint n_rounds = stress_scaled (SEED_ROUNDS);
  gint64 start_time = g_get_monotonic_time ();
  /* A corrupted table or list (the original bug) tends to spin, not crash. */
  Watchdog *dog = watchdog_new ("/mpport/stress/seed", stress_timeout ());
  guint round;

  /* Nothing in this process has touched an mpport type before the first
   * round (this is the first test): its threads race on type registration. */
  for (round = 0; round < n_rounds; round++)
    seed_round (round, SEED_ITERATIONS);

  watchdog_free (dog);

  g_test_message ("seed: %u rounds of %u threads x %u iterations x %u channels in %.3f s",
                  n_rounds, SEED_THREADS + 1, SEED_ITERATIONS, SEED_CHANNELS,
                  (g_get_monotonic_time () - start_time) / (double) G_TIME_SPAN_SECOND);
}

/* ------------------------------------------------------------------ */
/* /mpport/stress/started-transfer                                      */
/*                                                                      */
/* N_WORKERS threads each run their own GMainContext and GMainLoop.     */
/* N_STREAMS data channels carry numbered messages (sender, seq) from   */
/* N_SENDER_THREADS plain threads; each sender thread posts into two    */
/* streams, so each stream's port1 is posted on from two threads at     */
/* once, under a flow-control window. The receiving port2 of every      */
/* stream is started on a worker and keeps hopping between workers      */
/* mid-stream: from inside its "message" handler, or from an idle       */
/* between messages, it posts itself through the target worker's        */
/* control channel; the target starts the new object (now and then     */
/* only once the senders stalled on a full window), which continues the */
/* count. Handlers also pull messages with receive() now and then.      */
/* Checked: exactly once, per-sender order across every hop (one global */
/* "next expected" per sender), owning thread on every emission,        */
/* nothing emitted by transferred-away objects, exactly one "close" per */
/* stream after all its messages, exactly one "close" per control port, */
/* and every object and context finalized at the end.                   */
/* ------------------------------------------------------------------ */

#define N_WORKERS          4
#define N_STREAMS          4
#define N_SENDER_THREADS   N_STREAMS
#define SENDERS_PER_STREAM 2
#define MESSAGES_PER_SENDER 50000

/* Per message, out of 1000: hop from inside the handler; schedule a hop
 * from an idle (between messages); pull a few messages with receive(). */
#define HOP_NOW_PERMILLE   15
#define HOP_IDLE_PERMILLE  10
#define RECEIVE_PERMILLE   20
#define RECEIVE_BURST_MAX  16

/* Per arrival, out of 1000: leave the new object unstarted until every
 * sender of the stream stalls on its window (or finished), or for at most
 * DELAYED_START_MAX_MS; then start() finds a backlog of up to a whole window
 * and, the senders waiting for it to drain, no post comes to wake the port
 * again: each dispatch budget must re-arm the next one by itself. */
#define DELAYED_START_PERMILLE 100
#define DELAYED_START_MAX_MS   20

/* Per arrival, out of 1000 (and always after a delayed start): make no
 * random hop for the first CALM_MESSAGES messages, a little more than one
 * dispatch budget (1024), so that dispatches run to their full budget (with
 * a hop every few dozen messages, a dispatch rarely would, and every start()
 * wakes the port anyway). */
#define CALM_PERMILLE          10
#define CALM_MESSAGES          1100

/* Senders keep at most this many messages of a stream undelivered, the
 * window being drawn per chunk of SENDER_CHUNK messages: small windows keep
 * posts racing with hops and wake-ups, large ones make long backlogs travel
 * with the hopping port. A sender that fills the window waits until a
 * quarter of it is left: the receiver then drains a backlog of several
 * dispatch budgets with no post arriving to wake it again. */
static const guint sender_windows[] = { 8, 64, 512, 4096, 16384 };
#define SENDER_CHUNK       256

/* Rounds of posts to the orphans before the worker loops are told to quit,
 * and at most how many posts after (queued until the context goes). */
#define ORPHAN_ROUNDS_BEFORE_QUIT   1000
#define ORPHAN_MAX_POSTS_AFTER_QUIT 100000

G_STATIC_ASSERT (N_SENDER_THREADS == N_STREAMS);
G_STATIC_ASSERT (SENDERS_PER_STREAM == 2);

typedef struct _StartedFixture StartedFixture;
typedef struct _Stream Stream;
typedef struct _Worker Worker;

/* One receiving port object of a stream, on one worker: the stream's port
 * after its n-th hop. Kept until the end of the test (even once detached) so
 * that a stray emission on a transferred-away object is caught, not a
 * use-after-free. */
typedef struct
{
  Stream *stream;
  Worker *worker;
  guint hop;                  /* immutable */
  MpMessagePort *port;        /* strong ref; owner thread; dropped when transferred away */
  gpointer port_watch;        /* weak pointer to the same object */
  gboolean detached;          /* guarded by stream->lock */
  gboolean hop_pending;       /* owner thread only: an idle hop is scheduled */
  guint calm;                 /* owner thread only: messages to take before any random hop */
  guint start_ticks;          /* owner thread only: milliseconds of delayed start so far */
  guint n_notify_closed;      /* owner thread only */
  guint n_close;              /* owner thread only */
} HopRecord;

struct _Stream
{
  StartedFixture *fixture;
  guint id;
  MpMessageChannel *channel;       /* main's ref; port1 is shared by the senders */
  MpMessagePort *sender_port;      /* channel's port1 (transfer none) */
  gpointer watches[2];             /* weak pointers: the channel's port1 and port2 */
  gint senders_left;               /* atomic: the last sender to finish closes port1 */
  gint n_senders_stalled;          /* atomic: senders waiting for the window to drain */
  gint n_posted;                   /* atomic: flow control between senders and receivers */
  gint n_delivered;                /* atomic */

  GMutex lock;
  /* Guarded by lock: */
  HopRecord *current;              /* the object receiving now; NULL while in flight */
  GPtrArray *records;              /* every HopRecord of this stream, in hop order */
  guint8 *seen[SENDERS_PER_STREAM];          /* one byte per sequence number */
  guint next_seq[SENDERS_PER_STREAM];        /* the sequence number expected next */
  guint n_received;
  guint n_received_sync;           /* of which taken with receive() in a handler */
  guint n_hops_out;                /* transfers made by a receiving object */
  guint n_hops_idle;               /* of which from an idle */
  guint n_arrivals;                /* control messages that brought this stream's port */
  guint n_delayed_starts;
  guint n_close;
};

struct _Worker
{
  StartedFixture *fixture;
  guint id;
  GThread *thread;            /* main's handle, for join */
  GThread *self;              /* set by the worker itself before it is ready */
  GMainContext *context;      /* created, pushed and dropped by the worker thread */
  GMainLoop *loop;            /* created by the worker; quit from main */
  GRand *rand;                /* worker thread only */
  guint32 seed;

  MpMessageChannel *control;  /* main's ref */
  MpMessagePort *control_in;  /* port1: any thread posts a stream id + its port here */
  MpMessagePort *control_out; /* port2: started on this worker */
  guint n_control_messages;   /* worker thread only */
  guint n_control_close;      /* worker thread only */
  gpointer control_watches[2];

  /* A channel whose port2 is started on this worker and never closed: the
   * worker drops its context with it open, while the main thread posts to
   * it, so wake-ups race with the context's finalization. */
  MpMessageChannel *orphan;   /* main's ref */
  MpMessagePort *orphan_in;   /* port1: the main thread posts here */
  MpMessagePort *orphan_out;  /* port2: started on this worker */
  gpointer orphan_watches[2];
  guint n_orphan_posts;       /* main thread only */

  gboolean sentinel_destroyed; /* atomic: set when the worker's context is finalized */
};

typedef struct
{
  StartedFixture *fixture;
  guint id;
  GThread *thread;
  guint32 seed;
} SenderThread;

struct _StartedFixture
{
  guint n_messages;           /* per sender and stream */
  Gate start_gate;            /* senders wait here */

  GMutex lock;
  GCond cond;
  /* Guarded by lock: */
  guint n_workers_ready;
  guint n_workers_exited;
  guint n_streams_closed;
  guint n_control_closed;

  guint n_orphan_posts_after_quit;  /* main thread only */

  Worker workers[N_WORKERS];
  Stream streams[N_STREAMS];
  SenderThread senders[N_SENDER_THREADS];
};

static void
fixture_bump (StartedFixture *fixture,
              guint          *counter)
{
  g_mutex_lock (&fixture->lock);
  (*counter)++;
  g_cond_broadcast (&fixture->cond);
  g_mutex_unlock (&fixture->lock);
}

/* The sender slot of thread @sender_id in stream @stream, or fail: stream r
 * is fed by sender threads r (slot 0) and r - 1 (slot 1). */
static guint
stream_sender_slot (Stream *stream,
                    guint   sender_id)
{
  if (sender_id == stream->id)
    return 0;
  if ((sender_id + 1) % N_STREAMS == stream->id)
    return 1;

  g_error ("stream %u: message from sender %u, which never posts to it",
           stream->id, sender_id);
  return 0;
}

static char *
fixture_describe (StartedFixture *fixture)
{
  GString *str = g_string_new (NULL);
  guint r;

  g_mutex_lock (&fixture->lock);
  g_string_append_printf (str, "workers ready %u exited %u, streams closed %u/%u, "
                          "control closed %u/%u\n",
                          fixture->n_workers_ready, fixture->n_workers_exited,
                          fixture->n_streams_closed, N_STREAMS,
                          fixture->n_control_closed, N_WORKERS);
  g_mutex_unlock (&fixture->lock);

  for (r = 0; r < N_STREAMS; r++)
    {
      Stream *stream = &fixture->streams[r];

      g_mutex_lock (&stream->lock);
      g_string_append_printf (str, "  stream %u: received %u (next seq %u, %u of %u), "
                              "posted %d, senders left %d stalled %d, "
                              "hops out %u, arrivals %u, close %u, current %s on worker %d\n",
                              r, stream->n_received,
                              stream->next_seq[0], stream->next_seq[1], fixture->n_messages,
                              g_atomic_int_get (&stream->n_posted),
                              g_atomic_int_get (&stream->senders_left),
                              g_atomic_int_get (&stream->n_senders_stalled),
                              stream->n_hops_out, stream->n_arrivals, stream->n_close,
                              stream->current != NULL ? "object" : "(in flight)",
                              stream->current != NULL ? (int) stream->current->worker->id : -1);
      g_mutex_unlock (&stream->lock);
    }

  return g_string_free (str, FALSE);
}

static void
fixture_wait (StartedFixture *fixture,
              guint          *counter,
              guint           target,
              const char     *what)
{
  if (!wait_for_counter (&fixture->lock, &fixture->cond, counter, target,
                         stress_deadline ()))
    {
      char *state = fixture_describe (fixture);

      g_error ("timed out waiting for %s (MP_STRESS_TIMEOUT); state:\n%s", what, state);
    }
}

/* Asserts that @record is its stream's live receiving object and that the
 * emission runs on the record's worker. */
static void
hop_record_assert_current (HopRecord     *record,
                           MpMessagePort *port,
                           const char    *signal_name)
{
  Stream *stream = record->stream;
  gboolean detached, current;

  g_mutex_lock (&stream->lock);
  detached = record->detached;
  current = stream->current == record;
  g_mutex_unlock (&stream->lock);

  if (detached || !current)
    g_error ("stream %u hop %u: \"%s\" emitted by a port object that was "
             "transferred away", stream->id, record->hop, signal_name);
  if (g_thread_self () != record->worker->self)
    g_error ("stream %u hop %u: \"%s\" emitted on the wrong thread "
             "(owner is worker %u)", stream->id, record->hop, signal_name,
             record->worker->id);
  g_assert_true (port == record->port);
  g_assert_true (mp_message_port_get_context (port) == record->worker->context);
}

/* Checks one data message against the stream's per-sender state. Returns
 * TRUE if it was the stream's very last message (only the close marker may
 * follow). */
static gboolean
stream_account (Stream    *stream,
                MpMessage *message,
                gboolean   sync)
{
  GVariant *data = mp_message_get_data (message);
  guint32 sender_id, seq;
  guint slot;
  gboolean completed;

  g_assert_nonnull (data);
  g_assert_true (g_variant_is_of_type (data, G_VARIANT_TYPE ("(uu)")));
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);
  g_variant_get (data, "(uu)", &sender_id, &seq);
  slot = stream_sender_slot (stream, sender_id);

  g_mutex_lock (&stream->lock);
  if (seq >= stream->fixture->n_messages)
    g_error ("stream %u: sender %u: sequence number %u out of range",
             stream->id, sender_id, seq);
  if (stream->seen[slot][seq])
    g_error ("stream %u: sender %u: message %u delivered twice (after %u hops)",
             stream->id, sender_id, seq, stream->n_hops_out);
  stream->seen[slot][seq] = 1;
  if (seq < stream->next_seq[slot])
    g_error ("stream %u: sender %u: message %u after %u: order broken (after %u hops)",
             stream->id, sender_id, seq, stream->next_seq[slot] - 1, stream->n_hops_out);
  if (seq > stream->next_seq[slot])
    g_error ("stream %u: sender %u: got %u while %u is missing: message lost "
             "or reordered (after %u hops)",
             stream->id, sender_id, seq, stream->next_seq[slot], stream->n_hops_out);
  stream->next_seq[slot] = seq + 1;
  stream->n_received++;
  if (sync)
    stream->n_received_sync++;
  completed = stream->n_received == SENDERS_PER_STREAM * stream->fixture->n_messages;
  g_mutex_unlock (&stream->lock);

  g_atomic_int_inc (&stream->n_delivered);

  return completed;
}

/* Transfers @record's port to a random worker (possibly its own) through
 * that worker's control channel. Runs on the owner thread. */
static void
hop_record_transfer (HopRecord *record,
                     gboolean   from_idle)
{
  Stream *stream = record->stream;
  Worker *target;
  MpMessagePort *port = record->port;

  target = &stream->fixture->workers[g_rand_int_range (record->worker->rand, 0, N_WORKERS)];

  g_mutex_lock (&stream->lock);
  g_assert_true (stream->current == record);
  g_assert_false (record->detached);
  stream->current = NULL;
  record->detached = TRUE;
  stream->n_hops_out++;
  if (from_idle)
    stream->n_hops_idle++;
  g_mutex_unlock (&stream->lock);

  post_or_die (target->control_in, g_variant_new_uint32 (stream->id), port);

  /* The old object is detached at once. */
  g_assert_true (mp_message_port_is_closed (port));
  g_assert_null (mp_message_port_get_context (port));

  /* Inside its own handler the emission still holds a reference. */
  record->port = NULL;
  g_object_unref (port);
}

static gboolean
hop_idle_cb (gpointer user_data)
{
  HopRecord *record = user_data;

  g_assert_true (g_thread_self () == record->worker->self);
  record->hop_pending = FALSE;

  /* Already hopped from a handler, or the port reached its close marker
   * (through receive()): nothing to move. Only this thread changes either. */
  if (record->port == NULL || mp_message_port_is_closed (record->port))
    return G_SOURCE_REMOVE;

  hop_record_transfer (record, TRUE);

  return G_SOURCE_REMOVE;
}

static void
hop_record_schedule_idle (HopRecord *record)
{
  GSource *source;

  if (record->hop_pending)
    return;

  record->hop_pending = TRUE;
  source = g_idle_source_new ();
  g_source_set_callback (source, hop_idle_cb, record, NULL);
  g_source_attach (source, record->worker->context);
  g_source_unref (source);
}

/* Pulls up to @max messages with receive() from inside a handler: they
 * interleave with signal delivery in one FIFO. Returns TRUE if the stream's
 * last message was among them. */
static gboolean
hop_record_receive_some (HopRecord *record,
                         guint      max)
{
  gboolean completed = FALSE;
  guint i;

  for (i = 0; i < max; i++)
    {
      MpMessage *message = mp_message_port_receive (record->port);

      if (message == NULL)
        break;
      completed |= stream_account (record->stream, message, TRUE);
      mp_message_unref (message);
    }

  return completed;
}

static void
on_stream_message (MpMessagePort *port,
                   MpMessage     *message,
                   gpointer       user_data)
{
  HopRecord *record = user_data;
  gboolean completed;
  guint roll;

  hop_record_assert_current (record, port, "message");
  completed = stream_account (record->stream, message, FALSE);

  roll = g_rand_int_range (record->worker->rand, 0, 1000);

  if (roll < RECEIVE_PERMILLE)
    {
      completed |= hop_record_receive_some (record,
                                            g_rand_int_range (record->worker->rand,
                                                              1, RECEIVE_BURST_MAX + 1));
      /* receive() may have consumed the close marker: then the port is
       * closed, "close" follows on this context, and it cannot move. */
      if (mp_message_port_is_closed (port))
        return;
    }

  roll = g_rand_int_range (record->worker->rand, 0, 1000);
  if (record->calm > 0)
    {
      record->calm--;
      roll = 1000;
    }

  /* After the last message the close marker is queued or about to be (the
   * senders close right after their last post): always move then, so the
   * marker travels with the port, or arrives while it is in flight. */
  if (completed || roll < HOP_NOW_PERMILLE)
    hop_record_transfer (record, FALSE);   /* the rest of the batch follows */
  else if (roll < HOP_NOW_PERMILLE + HOP_IDLE_PERMILLE)
    hop_record_schedule_idle (record);
}

static void
on_stream_notify_closed (MpMessagePort *port,
                         GParamSpec    *pspec,
                         gpointer       user_data)
{
  HopRecord *record = user_data;

  hop_record_assert_current (record, port, "notify::closed");
  g_assert_true (mp_message_port_is_closed (port));
  g_assert_cmpuint (record->n_close, ==, 0);
  record->n_notify_closed++;
}

static void
on_stream_close (MpMessagePort *port,
                 gpointer       user_data)
{
  HopRecord *record = user_data;
  Stream *stream = record->stream;
  guint n_messages = stream->fixture->n_messages;
  guint s;

  hop_record_assert_current (record, port, "close");
  g_assert_true (mp_message_port_is_closed (port));
  g_assert_cmpuint (record->n_notify_closed, ==, 1);
  g_assert_cmpuint (record->n_close, ==, 0);
  record->n_close++;

  g_mutex_lock (&stream->lock);
  /* Close is in-band: it comes after everything the senders posted. */
  for (s = 0; s < SENDERS_PER_STREAM; s++)
    {
      if (stream->next_seq[s] != n_messages)
        g_error ("stream %u: \"close\" after %u of %u messages of its sender slot %u",
                 stream->id, stream->next_seq[s], n_messages, s);
    }
  g_assert_cmpuint (stream->n_received, ==, SENDERS_PER_STREAM * n_messages);
  g_assert_cmpuint (stream->n_close, ==, 0);
  stream->n_close++;
  g_mutex_unlock (&stream->lock);

  fixture_bump (stream->fixture, &stream->fixture->n_streams_closed);
}

static void
hop_record_start (HopRecord *record)
{
  g_assert_true (g_thread_self () == record->worker->self);
  g_assert_nonnull (record->port);
  g_assert_null (mp_message_port_get_context (record->port));

  mp_message_port_start (record->port);
  g_assert_true (mp_message_port_get_context (record->port) == record->worker->context);
}

/* Whether no sender of @stream will post before the backlog drains. */
static gboolean
stream_senders_quiet (Stream *stream)
{
  guint n_finished = SENDERS_PER_STREAM - g_atomic_int_get (&stream->senders_left);

  return n_finished + g_atomic_int_get (&stream->n_senders_stalled) >= SENDERS_PER_STREAM;
}

static gboolean
delayed_start_cb (gpointer user_data)
{
  HopRecord *record = user_data;
  Stream *stream = record->stream;

  if (++record->start_ticks < DELAYED_START_MAX_MS && !stream_senders_quiet (stream))
    return G_SOURCE_CONTINUE;

  /* Unstarted, the port emitted nothing, so nothing could move it. */
  g_mutex_lock (&stream->lock);
  g_assert_true (stream->current == record);
  stream->n_delayed_starts++;
  g_mutex_unlock (&stream->lock);

  record->calm = CALM_MESSAGES;
  hop_record_start (record);

  return G_SOURCE_REMOVE;
}

static void
hop_record_schedule_start (HopRecord *record)
{
  GSource *source = g_timeout_source_new (1);

  g_source_set_callback (source, delayed_start_cb, record, NULL);
  g_source_attach (source, record->worker->context);
  g_source_unref (source);
}

/* A control message brought @port, the new object for @stream's receiving
 * side: take it over on this worker and start it here. */
static void
worker_adopt (Worker        *worker,
              Stream        *stream,
              MpMessagePort *port)
{
  HopRecord *record = g_new0 (HopRecord, 1);

  g_assert_false (mp_message_port_is_closed (port));
  g_assert_null (mp_message_port_get_context (port));

  record->stream = stream;
  record->worker = worker;
  record->port = g_object_ref (port);
  watch_object (&record->port_watch, port);
  if (g_rand_int_range (worker->rand, 0, 1000) < CALM_PERMILLE)
    record->calm = CALM_MESSAGES;

  g_mutex_lock (&stream->lock);
  if (stream->current != NULL)
    g_error ("stream %u: its port arrived on worker %u while worker %u still receives",
             stream->id, worker->id, stream->current->worker->id);
  record->hop = stream->n_arrivals++;
  stream->current = record;
  g_ptr_array_add (stream->records, record);
  g_mutex_unlock (&stream->lock);

  g_signal_connect (port, "message", G_CALLBACK (on_stream_message), record);
  g_signal_connect (port, "notify::closed", G_CALLBACK (on_stream_notify_closed), record);
  g_signal_connect (port, "close", G_CALLBACK (on_stream_close), record);

  if (g_rand_int_range (worker->rand, 0, 1000) < DELAYED_START_PERMILLE)
    hop_record_schedule_start (record);
  else
    hop_record_start (record);
}

static void
on_control_message (MpMessagePort *port,
                    MpMessage     *message,
                    gpointer       user_data)
{
  Worker *worker = user_data;
  GVariant *data = mp_message_get_data (message);
  GPtrArray *ports = mp_message_get_ports (message);
  guint32 stream_id;

  g_assert_true (g_thread_self () == worker->self);
  g_assert_true (port == worker->control_out);
  g_assert_nonnull (data);
  g_assert_true (g_variant_is_of_type (data, G_VARIANT_TYPE_UINT32));
  stream_id = g_variant_get_uint32 (data);
  g_assert_cmpuint (stream_id, <, N_STREAMS);
  g_assert_cmpuint (ports->len, ==, 1);

  worker->n_control_messages++;
  worker_adopt (worker, &worker->fixture->streams[stream_id],
                g_ptr_array_index (ports, 0));
}

static void
on_control_close (MpMessagePort *port,
                  gpointer       user_data)
{
  Worker *worker = user_data;

  g_assert_true (g_thread_self () == worker->self);
  g_assert_true (port == worker->control_out);
  g_assert_cmpuint (worker->n_control_close, ==, 0);
  worker->n_control_close++;

  fixture_bump (worker->fixture, &worker->fixture->n_control_closed);
}

static void
on_orphan_message (MpMessagePort *port,
                   MpMessage     *message,
                   gpointer       user_data)
{
  Worker *worker = user_data;

  g_assert_true (g_thread_self () == worker->self);
  g_assert_true (port == worker->orphan_out);
}

static gboolean
sentinel_never_cb (gpointer user_data)
{
  g_error ("the sentinel timeout of a worker context fired");
  return G_SOURCE_REMOVE;
}

static void
sentinel_destroyed_cb (gpointer user_data)
{
  Worker *worker = user_data;

  g_atomic_int_set (&worker->sentinel_destroyed, TRUE);
}

/* A source that never fires: its destroy notify runs when the context is
 * finalized, which proves nothing (no port) kept the context alive. */
static void
worker_attach_sentinel (Worker *worker)
{
  /* Not g_timeout_source_new_seconds(): its lazily set global perturbation
   * is a (benign, GLib-internal) data race under ThreadSanitizer. */
  GSource *source = g_timeout_source_new (24 * 3600 * 1000);

  g_source_set_callback (source, sentinel_never_cb, worker, sentinel_destroyed_cb);
  g_source_attach (source, worker->context);
  g_source_unref (source);
}

static gpointer
worker_thread_func (gpointer data)
{
  Worker *worker = data;
  StartedFixture *fixture = worker->fixture;

  worker->self = g_thread_self ();
  worker->rand = g_rand_new_with_seed (worker->seed);
  worker->context = g_main_context_new ();
  worker->loop = g_main_loop_new (worker->context, FALSE);
  g_main_context_push_thread_default (worker->context);
  worker_attach_sentinel (worker);

  g_signal_connect (worker->control_out, "message", G_CALLBACK (on_control_message), worker);
  g_signal_connect (worker->control_out, "close", G_CALLBACK (on_control_close), worker);
  mp_message_port_start (worker->control_out);
  g_assert_true (mp_message_port_get_context (worker->control_out) == worker->context);

  g_signal_connect (worker->orphan_out, "message", G_CALLBACK (on_orphan_message), worker);
  mp_message_port_start (worker->orphan_out);

  fixture_bump (fixture, &fixture->n_workers_ready);

  g_main_loop_run (worker->loop);

  /* The thread drops its loop and context, as an application thread would:
   * the context is finalized here unless something still holds it, and
   * the orphan port, still started and open, closes with it. */
  g_main_context_pop_thread_default (worker->context);
  g_main_loop_unref (worker->loop);
  g_main_context_unref (worker->context);
  g_rand_free (worker->rand);
  worker->rand = NULL;

  fixture_bump (fixture, &fixture->n_workers_exited);

  return NULL;
}

static guint
stream_in_flight (Stream *stream)
{
  return (guint) (g_atomic_int_get (&stream->n_posted)
                  - g_atomic_int_get (&stream->n_delivered));
}

static void
sender_post (SenderThread *sender,
             Stream       *stream,
             guint         seq,
             guint         window)
{
  /* Bounded by the main thread's deadline: if delivery stops, it fails. */
  if (stream_in_flight (stream) >= window)
    {
      g_atomic_int_inc (&stream->n_senders_stalled);
      while (stream_in_flight (stream) > window / 4)
        g_usleep (20);
      g_atomic_int_add (&stream->n_senders_stalled, -1);
    }

  post_or_die (stream->sender_port, g_variant_new ("(uu)", sender->id, seq), NULL);
  g_atomic_int_inc (&stream->n_posted);
}

/* Stream @stream has been fed all of @sender's messages. */
static void
sender_finish_stream (Stream *stream)
{
  if (g_atomic_int_dec_and_test (&stream->senders_left))
    mp_message_port_close (stream->sender_port);
}

static gpointer
sender_thread_func (gpointer data)
{
  SenderThread *sender = data;
  StartedFixture *fixture = sender->fixture;
  Stream *first = &fixture->streams[sender->id];
  Stream *second = &fixture->streams[(sender->id + 1) % N_STREAMS];
  GRand *rand = g_rand_new_with_seed (sender->seed);
  guint window = sender_windows[0];
  guint seq;

  gate_wait (&fixture->start_gate);

  for (seq = 0; seq < fixture->n_messages; seq++)
    {
      if (seq % SENDER_CHUNK == 0)
        window = sender_windows[g_rand_int_range (rand, 0, G_N_ELEMENTS (sender_windows))];

      sender_post (sender, first, seq, window);
      sender_post (sender, second, seq, window);

      /* Vary the pace: bursts, yields and short sleeps. */
      if (seq % 32 == 31)
        {
          guint pace = g_rand_int_range (rand, 0, 8);

          if (pace == 0)
            g_usleep (g_rand_int_range (rand, 20, 400));
          else if (pace < 3)
            g_thread_yield ();
        }
    }

  sender_finish_stream (first);
  sender_finish_stream (second);
  g_rand_free (rand);

  return NULL;
}

static void
started_fixture_setup (StartedFixture *fixture)
{
  guint i;

  fixture->n_messages = stress_scaled (MESSAGES_PER_SENDER);
  gate_init (&fixture->start_gate);
  g_mutex_init (&fixture->lock);
  g_cond_init (&fixture->cond);

  for (i = 0; i < N_STREAMS; i++)
    {
      Stream *stream = &fixture->streams[i];
      guint s;

      stream->fixture = fixture;
      stream->id = i;
      stream->channel = mp_message_channel_new ();
      stream->sender_port = mp_message_channel_get_port1 (stream->channel);
      watch_object (&stream->watches[0], stream->sender_port);
      watch_object (&stream->watches[1], mp_message_channel_get_port2 (stream->channel));
      stream->senders_left = SENDERS_PER_STREAM;
      g_mutex_init (&stream->lock);
      stream->records = g_ptr_array_new ();
      for (s = 0; s < SENDERS_PER_STREAM; s++)
        stream->seen[s] = g_new0 (guint8, fixture->n_messages);
    }

  for (i = 0; i < N_WORKERS; i++)
    {
      Worker *worker = &fixture->workers[i];

      worker->fixture = fixture;
      worker->id = i;
      worker->seed = g_test_rand_int ();
      worker->control = mp_message_channel_new ();
      worker->control_in = mp_message_channel_get_port1 (worker->control);
      worker->control_out = mp_message_channel_get_port2 (worker->control);
      watch_object (&worker->control_watches[0], worker->control_in);
      watch_object (&worker->control_watches[1], worker->control_out);
      worker->orphan = mp_message_channel_new ();
      worker->orphan_in = mp_message_channel_get_port1 (worker->orphan);
      worker->orphan_out = mp_message_channel_get_port2 (worker->orphan);
      watch_object (&worker->orphan_watches[0], worker->orphan_in);
      watch_object (&worker->orphan_watches[1], worker->orphan_out);
    }

  for (i = 0; i < N_SENDER_THREADS; i++)
    {
      fixture->senders[i].fixture = fixture;
      fixture->senders[i].id = i;
      fixture->senders[i].seed = g_test_rand_int ();
    }
}

static void
started_fixture_start (StartedFixture *fixture)
{
  guint i;

  for (i = 0; i < N_WORKERS; i++)
    {
      char *name = g_strdup_printf ("worker-%u", i);

      fixture->workers[i].thread = g_thread_new (name, worker_thread_func,
                                                 &fixture->workers[i]);
      g_free (name);
    }
  fixture_wait (fixture, &fixture->n_workers_ready, N_WORKERS, "the workers to start");

  for (i = 0; i < N_SENDER_THREADS; i++)
    {
      char *name = g_strdup_printf ("sender-%u", i);

      fixture->senders[i].thread = g_thread_new (name, sender_thread_func,
                                                 &fixture->senders[i]);
      g_free (name);
    }

  /* The senders start at once; the receiving ports reach their first worker
   * asynchronously, so messages queue before the first start() too. */
  gate_open (&fixture->start_gate);
  for (i = 0; i < N_STREAMS; i++)
    {
      Stream *stream = &fixture->streams[i];
      MpMessagePort *receiving = mp_message_channel_get_port2 (stream->channel);

      post_or_die (fixture->workers[i % N_WORKERS].control_in,
                   g_variant_new_uint32 (stream->id), receiving);
      g_assert_true (mp_message_port_is_closed (receiving));
    }
}

/* Posts to every orphan, quits the worker loops after ORPHAN_ROUNDS_BEFORE_QUIT
 * rounds and goes on posting until every worker thread has dropped its
 * context: posts wake sources whose context is being finalized. Posting
 * never fails; once the orphan's side is closed, the message is dropped.
 * Returns the number of posts made after the quit. */
static guint
started_fixture_quit_posting_to_orphans (StartedFixture *fixture)
{
  guint n_exited = 0, n_after_quit = 0;
  guint round;

  for (round = 0; n_exited < N_WORKERS && n_after_quit < ORPHAN_MAX_POSTS_AFTER_QUIT; round++)
    {
      guint i;

      for (i = 0; i < N_WORKERS; i++)
        {
          Worker *worker = &fixture->workers[i];

          post_or_die (worker->orphan_in, g_variant_new_uint32 (worker->n_orphan_posts++), NULL);
        }

      if (round == ORPHAN_ROUNDS_BEFORE_QUIT)
        {
          for (i = 0; i < N_WORKERS; i++)
            g_main_loop_quit (fixture->workers[i].loop);
        }
      else if (round > ORPHAN_ROUNDS_BEFORE_QUIT)
        {
          n_after_quit += N_WORKERS;
          g_thread_yield ();
          g_mutex_lock (&fixture->lock);
          n_exited = fixture->n_workers_exited;
          g_mutex_unlock (&fixture->lock);
        }
    }

  fixture_wait (fixture, &fixture->n_workers_exited, N_WORKERS, "the workers to quit");

  return n_after_quit;
}

/* Quits the workers once every stream and control port is closed. */
static void
started_fixture_stop (StartedFixture *fixture)
{
  guint i;

  fixture_wait (fixture, &fixture->n_streams_closed, N_STREAMS,
                "every stream's final port to get \"close\"");

  for (i = 0; i < N_SENDER_THREADS; i++)
    g_thread_join (fixture->senders[i].thread);

  /* No stream moves any more: close the control channels. Their receivers
   * get "close" after every control message, on their own worker. */
  for (i = 0; i < N_WORKERS; i++)
    mp_message_port_close (fixture->workers[i].control_in);
  fixture_wait (fixture, &fixture->n_control_closed, N_WORKERS,
                "every control port to get \"close\"");

  fixture->n_orphan_posts_after_quit = started_fixture_quit_posting_to_orphans (fixture);
  for (i = 0; i < N_WORKERS; i++)
    g_thread_join (fixture->workers[i].thread);
}

/* The orphan's context is gone: its side closed, so the peer reads the
 * close marker, and nothing (no source) keeps the started port alive. */
static void
worker_verify_orphan (Worker *worker)
{
  MpMessage *message = mp_message_port_receive (worker->orphan_in);

  if (message != NULL)
    g_error ("worker %u: its orphan port, which never posts, sent a message", worker->id);
  if (!mp_message_port_is_closed (worker->orphan_in))
    g_error ("worker %u: the peer of a port started on a finalized context is "
             "still open (close marker missing)", worker->id);

  g_assert_finalize_object (worker->orphan);
  assert_watches_cleared (worker->orphan_watches, G_N_ELEMENTS (worker->orphan_watches),
                          "orphan port");
}

static void
stream_verify (Stream *stream)
{
  guint n_messages = stream->fixture->n_messages;
  guint s, seq;

  for (s = 0; s < SENDERS_PER_STREAM; s++)
    {
      for (seq = 0; seq < n_messages; seq++)
        {
          if (!stream->seen[s][seq])
            g_error ("stream %u: sender slot %u: message %u never delivered",
                     stream->id, s, seq);
        }
      g_assert_cmpuint (stream->next_seq[s], ==, n_messages);
    }

  g_assert_cmpuint (stream->n_received, ==, SENDERS_PER_STREAM * n_messages);
  g_assert_cmpuint (stream->n_close, ==, 1);
  /* Every transfer arrived, plus the initial placement. */
  g_assert_cmpuint (stream->n_arrivals, ==, stream->n_hops_out + 1);
  g_assert_cmpuint (stream->records->len, ==, stream->n_arrivals);
  g_assert_nonnull (stream->current);
  g_assert_cmpuint (stream->current->n_close, ==, 1);
  g_assert_cmpuint (stream->current->n_notify_closed, ==, 1);
}

/* Drops the test's last references and checks everything is finalized. */
static void
stream_release (Stream *stream)
{
  guint i;

  for (i = 0; i < stream->records->len; i++)
    {
      HopRecord *record = g_ptr_array_index (stream->records, i);

      if (record != stream->current)
        {
          g_assert_true (record->detached);
          g_assert_null (record->port);
          g_assert_cmpuint (record->n_close, ==, 0);
          g_assert_cmpuint (record->n_notify_closed, ==, 0);
        }
      g_clear_object (&record->port);
      assert_watches_cleared (&record->port_watch, 1, "stream receiving port");
      g_free (record);
    }
  g_ptr_array_unref (stream->records);

  g_assert_finalize_object (stream->channel);
  assert_watches_cleared (stream->watches, G_N_ELEMENTS (stream->watches),
                          "stream channel port");

  for (i = 0; i < SENDERS_PER_STREAM; i++)
    g_free (stream->seen[i]);
  g_mutex_clear (&stream->lock);
}

static void
test_stress_started_transfer (void)
{
  StartedFixture *fixture = g_new0 (StartedFixture, 1);
  guint n_hops = 0, n_hops_idle = 0, n_sync = 0, n_delayed = 0;
  guint n_control_messages = 0, n_arrivals = 0;
  gint64 start_time;
  Watchdog *dog;
  guint i;

  /* Backstop only: the phases below wait with their own deadlines and
   * describe the state when one passes. */
  dog = watchdog_new ("/mpport/stress/started-transfer", 4 * stress_timeout ());
  started_fixture_setup (fixture);

  start_time = g_get_monotonic_time ();
  started_fixture_start (fixture);
  started_fixture_stop (fixture);

  for (i = 0; i < N_WORKERS; i++)
    {
      Worker *worker = &fixture->workers[i];

      if (!g_atomic_int_get (&worker->sentinel_destroyed))
        g_error ("worker %u: its GMainContext was not finalized when the thread "
                 "dropped it: something still holds a reference", i);
      g_assert_cmpuint (worker->n_control_close, ==, 1);
      n_control_messages += worker->n_control_messages;
      g_assert_finalize_object (worker->control);
      assert_watches_cleared (worker->control_watches,
                              G_N_ELEMENTS (worker->control_watches), "control port");
      worker_verify_orphan (worker);
    }

  for (i = 0; i < N_STREAMS; i++)
    {
      Stream *stream = &fixture->streams[i];

      stream_verify (stream);
      n_hops += stream->n_hops_out;
      n_hops_idle += stream->n_hops_idle;
      n_sync += stream->n_received_sync;
      n_arrivals += stream->n_arrivals;
      n_delayed += stream->n_delayed_starts;
      stream_release (stream);
    }
  g_assert_cmpuint (n_control_messages, ==, n_arrivals);

  g_test_message ("started-transfer: %u messages, %u hops (%u from idles, "
                  "%u arrivals started late), %u taken by receive() in handlers, "
                  "%u orphan posts after the quit, in %.3f s",
                  N_STREAMS * SENDERS_PER_STREAM * fixture->n_messages,
                  n_hops, n_hops_idle, n_delayed, n_sync,
                  fixture->n_orphan_posts_after_quit,
                  (g_get_monotonic_time () - start_time) / (double) G_TIME_SPAN_SECOND);
  g_assert_cmpuint (n_hops, >, 0);

  gate_clear (&fixture->start_gate);
  g_mutex_clear (&fixture->lock);
  g_cond_clear (&fixture->cond);
  g_free (fixture);
  watchdog_free (dog);
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/mpport/stress/seed", test_stress_seed);
  g_test_add_func ("/mpport/stress/started-transfer", test_stress_started_transfer);

  return g_test_run ();
}
