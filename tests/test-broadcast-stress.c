/* test-broadcast-stress.c: MpBroadcastChannel under concurrent create, post and close
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Eight worker threads and the main thread ("participants"), each iterating its own
 * GMainContext, create, post on and close channels of 16 names for a few seconds. Every
 * delivery is checked as it happens, and the totals reconcile exactly at the end.
 *
 * The bookkeeping that makes the counts exact:
 *
 * - Posts are numbered per (participant, name): tseq 0, 1, 2, ... in program order. A
 *   message carries (participant, tseq, sending channel id).
 * - A post holds the name's test lock for reading, a creation holds it for writing. So when
 *   a channel D is created, no post of that name is in flight: the per-participant post
 *   counts read then are exactly the first tseq of each participant that D is a destination
 *   of. (Closing is not locked: closes race freely with posts and deliveries.)
 * - D is closed only by its owning participant (explicitly, inside its own handler, or by
 *   finalizing a scratch context), the thread that runs its handlers. Hence from each
 *   participant D receives exactly the posts from its creation count on, minus the ones D
 *   made itself, in order and without gaps, up to the moment it is closed: the handler
 *   checks each delivery against that expectation.
 * - After every participant stopped posting, each drains its context until each of its
 *   channels still open has received everything it should; those channels then reconcile
 *   exactly (received == sum over participants of posts since creation, minus its own).
 *
 * Also checked: a handler never runs on a closed channel, always on its owner's thread and
 * context, never for the channel's own post; posting on a closed channel fails with
 * MP_ERROR_INVALID_STATE; every channel is finalized in the end (weak references).
 *
 * /mpport/broadcast/stress/close-vs-context-finalize races close() on one thread against
 * the owner thread dropping the channel's context, 20 000 times.
 *
 * Environment:
 *   MP_STRESS_SCALE=N    multiply the storm duration (3 s) and the race iterations by N
 *   MP_STRESS_TIMEOUT=S  seconds any single wait may take before the test fails (default
 *                        120); a watchdog thread fails a test that hangs that long
 */

#include <mpport/mpport.h>

#include "mp-test-util.h"

#define N_WORKERS             8
#define N_PARTICIPANTS        (N_WORKERS + 1)   /* the workers and the main thread */
#define MAIN_PARTICIPANT      N_WORKERS
#define N_NAMES               16
#define STORM_SECONDS         3
#define MAX_EPHEMERAL         6                 /* open ephemeral channels per participant */

#define stress_check(cond, ...) \
  G_STMT_START { \
    if (G_UNLIKELY (!(cond))) \
      g_error ("%s: " G_STRINGIFY (cond) ": %s", G_STRLOC, g_strdup_printf (__VA_ARGS__)); \
  } G_STMT_END

typedef struct _Participant Participant;

/* One channel and what it must receive. Touched only by its owner's thread. */
typedef struct
{
  Participant *owner;
  MpBroadcastChannel *channel;   /* strong while tracked; NULL once released */
  GMainContext *context;         /* weak: the context it was created on */
  guint id;
  guint name;
  gboolean stable;               /* open from before the storm until every drain ended */
  gboolean scratch;              /* lives on a short-lived scratch context */
  gboolean closed;               /* set right after close() returned / context finalized */
  gboolean drained;              /* was open when its owner's drain ended */
  guint close_after;             /* if not 0, close inside the handler at this delivery */
  guint first[N_PARTICIPANTS];   /* per participant: first tseq this channel must get */
  guint next[N_PARTICIPANTS];    /* per participant: next tseq expected */
  GArray *own_tseqs;             /* guint: tseqs of the owner's posts made through this one */
  guint own_head;                /* own_tseqs before it are already skipped */
  guint n_posted;
  guint received;
} Rx;

struct _Participant
{
  guint index;
  GThread *thread;               /* its own thread, set by itself */
  GMainContext *context;         /* iterated by it; the worker's is pushed thread-default */
  GRand *rand;
  GPtrArray *open;               /* Rx, open channels on context, stable and ephemeral */
  GPtrArray *all;                /* Rx, owned: every channel it ever created */

  /* Completed posts per name. Written by this participant holding the name's lock for
   * reading; read by others holding it for writing, or after the posting-done latch. */
  guint posts[N_NAMES];

  /* Statistics, read by main after join. */
  guint64 received;
  guint n_created;
  guint n_closed;
  guint n_closed_in_handler;
  guint n_closed_by_context;
  guint n_scratch_contexts;
  guint n_posted;
};

static struct
{
  GRWLock name_locks[N_NAMES];
  char *names[N_NAMES];
  Participant participants[N_PARTICIPANTS];
  gint64 storm_end;
  Latch ready;            /* stable channels created */
  Latch start;            /* opened by main when everyone is ready */
  Latch posting_done;     /* a participant stopped posting */
  Latch drained;          /* a participant's open channels got everything */
  int live_channels;      /* atomic: created minus finalized */
  int next_id;            /* atomic */
} stress;

/* ------------------------------------------------------------------ */
/* Channels and their expectations                                      */
/* ------------------------------------------------------------------ */

static void
on_channel_finalized (gpointer  data,
                      GObject  *where_the_object_was)
{
  g_atomic_int_add (&stress.live_channels, -1);
}

/* Moves rx->next[@sender] past the posts @rx made itself: it never receives those. */
static void
rx_skip_own (Rx    *rx,
             guint  sender)
{
  if (sender != rx->owner->index)
    return;

  while (rx->own_head < rx->own_tseqs->len &&
         g_array_index (rx->own_tseqs, guint, rx->own_head) == rx->next[sender])
    {
      rx->own_head++;
      rx->next[sender]++;
    }

  if (rx->own_head > 4096 && rx->own_head * 2 > rx->own_tseqs->len)
    {
      g_array_remove_range (rx->own_tseqs, 0, rx->own_head);
      rx->own_head = 0;
    }
}

static void
rx_mark_closed (Rx *rx)
{
  stress_check (mp_broadcast_channel_is_closed (rx->channel), "channel %u", rx->id);
  stress_check (mp_broadcast_channel_get_context (rx->channel) == NULL, "channel %u", rx->id);
  rx->closed = TRUE;
}

static void
on_stress_message (MpBroadcastChannel *channel,
                   MpMessage          *message,
                   gpointer            user_data)
{
  Rx *rx = user_data;
  Participant *owner = rx->owner;
  GVariant *data = mp_message_get_data (message);
  guint sender, tseq, sender_id;

  stress_check (g_thread_self () == owner->thread, "channel %u: wrong thread", rx->id);
  stress_check (g_main_context_is_owner (rx->context), "channel %u: wrong context", rx->id);
  stress_check (!rx->closed, "channel %u: delivery after close", rx->id);
  stress_check (!mp_broadcast_channel_is_closed (channel), "channel %u: closed", rx->id);

  g_variant_get (data, "(uuu)", &sender, &tseq, &sender_id);
  stress_check (sender < N_PARTICIPANTS, "channel %u: sender %u", rx->id, sender);
  stress_check (sender_id != rx->id, "channel %u: got its own post %u", rx->id, tseq);

  rx_skip_own (rx, sender);
  stress_check (tseq == rx->next[sender],
                "channel %u (participant %u, name %u): from participant %u got post %u, "
                "expected %u (first %u)",
                rx->id, owner->index, rx->name, sender, tseq, rx->next[sender],
                rx->first[sender]);
  rx->next[sender]++;
  rx->received++;
  owner->received++;

  if (rx->close_after != 0 && rx->received == rx->close_after)
    {
      mp_broadcast_channel_close (channel);
      rx_mark_closed (rx);
      owner->n_closed_in_handler++;
    }
}

/* Creates a channel of @name on the thread-default context. Holding the name's lock for
 * writing, no post of @name is in flight: the post counts read are exact. */
static Rx *
rx_create (Participant *p,
           guint        name)
{
  Rx *rx = g_new0 (Rx, 1);

  rx->owner = p;
  rx->name = name;
  rx->id = (guint) g_atomic_int_add (&stress.next_id, 1) + 1;
  rx->own_tseqs = g_array_new (FALSE, FALSE, sizeof (guint));

  g_rw_lock_writer_lock (&stress.name_locks[name]);
  for (guint q = 0; q < N_PARTICIPANTS; q++)
    rx->first[q] = rx->next[q] = stress.participants[q].posts[name];
  rx->channel = mp_broadcast_channel_new (stress.names[name]);
  g_rw_lock_writer_unlock (&stress.name_locks[name]);

  rx->context = mp_broadcast_channel_get_context (rx->channel);
  g_atomic_int_inc (&stress.live_channels);
  g_object_weak_ref (G_OBJECT (rx->channel), on_channel_finalized, NULL);
  g_signal_connect (rx->channel, "message", G_CALLBACK (on_stress_message), rx);

  g_ptr_array_add (p->all, rx);
  p->n_created++;

  return rx;
}

static void
rx_free (Rx *rx)
{
  g_assert (rx->channel == NULL);
  g_array_unref (rx->own_tseqs);
  g_free (rx);
}

/* Whether @rx got every post it is a destination of. Only meaningful once every
 * participant stopped posting. */
static gboolean
rx_complete (Rx *rx)
{
  for (guint q = 0; q < N_PARTICIPANTS; q++)
    {
      rx_skip_own (rx, q);
      if (rx->next[q] != stress.participants[q].posts[rx->name])
        return FALSE;
    }

  return TRUE;
}

static void
rx_post (Participant *p,
         Rx          *rx)
{
  GError *error = NULL;
  gboolean ok;
  guint tseq;

  g_rw_lock_reader_lock (&stress.name_locks[rx->name]);
  tseq = p->posts[rx->name];
  g_array_append_val (rx->own_tseqs, tseq);
  ok = mp_broadcast_channel_post_message (rx->channel,
                                          g_variant_new ("(uuu)", p->index, tseq, rx->id),
                                          &error);
  p->posts[rx->name] = tseq + 1;
  g_rw_lock_reader_unlock (&stress.name_locks[rx->name]);

  stress_check (ok, "channel %u: %s", rx->id, error != NULL ? error->message : "");
  rx->n_posted++;
  p->n_posted++;
}

/* Closes @rx explicitly; a post on it fails from then on. */
static void
rx_close (Rx *rx)
{
  GError *error = NULL;

  mp_broadcast_channel_close (rx->channel);
  rx_mark_closed (rx);
  rx->owner->n_closed++;

  stress_check (!mp_broadcast_channel_post_message (rx->channel, g_variant_new_int32 (0), &error),
                "channel %u: posted while closed", rx->id);
  stress_check (g_error_matches (error, MP_ERROR, MP_ERROR_INVALID_STATE),
                "channel %u: %s", rx->id, error != NULL ? error->message : "no error");
  g_clear_error (&error);
}

/* ------------------------------------------------------------------ */
/* One participant                                                      */
/* ------------------------------------------------------------------ */

/* Drops the channels closed since (by handlers) from the open set. */
static void
participant_prune (Participant *p)
{
  for (guint i = 0; i < p->open->len; )
    {
      Rx *rx = g_ptr_array_index (p->open, i);

      if (!rx->closed)
        {
          i++;
          continue;
        }
      g_clear_object (&rx->channel);
      g_ptr_array_remove_index_fast (p->open, i);
    }
}

static guint
participant_n_ephemeral (Participant *p)
{
  guint n = 0;

  for (guint i = 0; i < p->open->len; i++)
    if (!((Rx *) g_ptr_array_index (p->open, i))->stable)
      n++;

  return n;
}

/* A random open channel of @p, of @name if it is not G_MAXUINT, ephemeral if asked. */
static Rx *
participant_pick (Participant *p,
                  guint        name,
                  gboolean     ephemeral_only)
{
  Rx *candidates[N_NAMES + MAX_EPHEMERAL + 1];
  guint n = 0;

  for (guint i = 0; i < p->open->len; i++)
    {
      Rx *rx = g_ptr_array_index (p->open, i);

      if (rx->closed || (ephemeral_only && rx->stable) || (name != G_MAXUINT && rx->name != name))
        continue;
      if (n < G_N_ELEMENTS (candidates))
        candidates[n++] = rx;
    }

  return n > 0 ? candidates[g_rand_int_range (p->rand, 0, n)] : NULL;
}

static void
participant_iterate (Participant *p,
                     guint        n)
{
  for (guint i = 0; i < n; i++)
    g_main_context_iteration (p->context, FALSE);
  participant_prune (p);
}

/* Channels on a short-lived context of their own, which is finalized with some of them
 * still open: those must close, and deliveries racing with the teardown must vanish. */
static void
participant_scratch_round (Participant *p)
{
  GMainContext *scratch = g_main_context_new ();
  Rx *rxs[2];
  guint n = (guint) g_rand_int_range (p->rand, 1, 3);
  guint n_iterations = (guint) g_rand_int_range (p->rand, 0, 4);

  g_main_context_push_thread_default (scratch);
  for (guint i = 0; i < n; i++)
    {
      rxs[i] = rx_create (p, (guint) g_rand_int_range (p->rand, 0, N_NAMES));
      rxs[i]->scratch = TRUE;
      stress_check (rxs[i]->context == scratch, "channel %u", rxs[i]->id);
    }
  g_main_context_pop_thread_default (scratch);

  for (guint i = 0; i < n_iterations; i++)
    {
      /* Let posts from the others arrive before iterating. */
      g_thread_yield ();
      g_main_context_iteration (scratch, FALSE);
    }

  if (!rxs[0]->closed && g_rand_boolean (p->rand))
    rx_close (rxs[0]);
  g_main_context_unref (scratch);

  for (guint i = 0; i < n; i++)
    {
      if (!rxs[i]->closed)
        {
          rx_mark_closed (rxs[i]);
          p->n_closed_by_context++;
        }
      g_clear_object (&rxs[i]->channel);
    }
  p->n_scratch_contexts++;
}

static void
participant_storm_step (Participant *p)
{
  guint op = (guint) g_rand_int_range (p->rand, 0, 1000);

  if (op < 550)
    {
      guint name = (guint) g_rand_int_range (p->rand, 0, N_NAMES);
      Rx *sender = participant_pick (p, name, FALSE);

      rx_post (p, sender);
    }
  else if (op < 600)
    {
      if (participant_n_ephemeral (p) < MAX_EPHEMERAL)
        {
          Rx *rx = rx_create (p, (guint) g_rand_int_range (p->rand, 0, N_NAMES));

          /* One in four closes itself inside one of its first deliveries. */
          if (g_rand_int_range (p->rand, 0, 4) == 0)
            rx->close_after = (guint) g_rand_int_range (p->rand, 1, 8);
          g_ptr_array_add (p->open, rx);
        }
    }
  else if (op < 640)
    {
      Rx *rx = participant_pick (p, G_MAXUINT, TRUE);

      if (rx != NULL)
        {
          rx_close (rx);
          participant_prune (p);
        }
    }
  else if (op < 645)
    {
      participant_scratch_round (p);
    }
  else
    {
      participant_iterate (p, 1);
    }
}

static gboolean
participant_complete (Participant *p)
{
  for (guint i = 0; i < p->open->len; i++)
    if (!rx_complete (g_ptr_array_index (p->open, i)))
      return FALSE;

  return TRUE;
}

static gboolean
on_tick (gpointer user_data)
{
  return G_SOURCE_CONTINUE;
}

/* Iterates until every open channel got everything. A periodic tick keeps the loop
 * checking the deadline even if a wake-up were lost. */
static void
participant_drain (Participant *p)
{
  gint64 deadline = stress_deadline ();
  GSource *tick = g_timeout_source_new (50);

  g_source_set_callback (tick, on_tick, NULL, NULL);
  g_source_attach (tick, p->context);

  participant_prune (p);
  while (!participant_complete (p))
    {
      if (g_get_monotonic_time () > deadline)
        {
          for (guint i = 0; i < p->open->len; i++)
            {
              Rx *rx = g_ptr_array_index (p->open, i);

              for (guint q = 0; q < N_PARTICIPANTS; q++)
                if (rx->next[q] != stress.participants[q].posts[rx->name])
                  g_printerr ("participant %u channel %u name %u: from %u at %u of %u\n",
                              p->index, rx->id, rx->name, q, rx->next[q],
                              stress.participants[q].posts[rx->name]);
            }
          g_error ("participant %u: drain timed out", p->index);
        }
      g_main_context_iteration (p->context, TRUE);
      participant_prune (p);
    }

  for (guint i = 0; i < p->open->len; i++)
    ((Rx *) g_ptr_array_index (p->open, i))->drained = TRUE;

  g_source_destroy (tick);
  g_source_unref (tick);
}

/* On @p's thread, its context pushed: the stable channels, one per name. */
static void
participant_setup (Participant *p)
{
  p->thread = g_thread_self ();

  for (guint name = 0; name < N_NAMES; name++)
    {
      Rx *rx = rx_create (p, name);

      rx->stable = TRUE;
      g_ptr_array_add (p->open, rx);
    }
}

/* The storm, then receiving until everything posted has arrived. */
static void
participant_run (Participant *p)
{
  gint64 deadline;

  while (g_get_monotonic_time () < stress.storm_end)
    participant_storm_step (p);

  /* Keep receiving while the others finish posting. */
  latch_add (&stress.posting_done);
  deadline = stress_deadline ();
  while (!latch_reached (&stress.posting_done, N_PARTICIPANTS))
    {
      stress_check (g_get_monotonic_time () < deadline, "participant %u: posting-done", p->index);
      if (!g_main_context_iteration (p->context, FALSE))
        g_usleep (500);
      participant_prune (p);
    }

  participant_drain (p);
  latch_add (&stress.drained);
  latch_wait (&stress.drained, N_PARTICIPANTS, stress_timeout (), "drained");

  /* Nothing is left to deliver: a delivery now would fail the handler's check. */
  participant_iterate (p, 4);
}

/* Closes what is still open explicitly, or (@by_context) by finalizing the context. */
static void
participant_teardown (Participant *p,
                      gboolean     by_context)
{
  participant_prune (p);

  for (guint i = 0; i < p->open->len; i++)
    if (!by_context)
      rx_close (g_ptr_array_index (p->open, i));

  if (by_context)
    {
      g_main_context_pop_thread_default (p->context);
      g_clear_pointer (&p->context, g_main_context_unref);
    }

  for (guint i = 0; i < p->open->len; i++)
    {
      Rx *rx = g_ptr_array_index (p->open, i);

      if (!rx->closed)
        {
          rx_mark_closed (rx);
          p->n_closed_by_context++;
        }
      g_clear_object (&rx->channel);
    }
  g_ptr_array_set_size (p->open, 0);
}

static gpointer
worker_thread (gpointer data)
{
  Participant *p = data;
  gboolean by_context = p->index % 2 == 1;

  p->context = g_main_context_new ();
  g_main_context_push_thread_default (p->context);

  participant_setup (p);
  latch_add (&stress.ready);
  latch_wait (&stress.start, 1, stress_timeout (), "start");
  participant_run (p);
  participant_teardown (p, by_context);

  if (!by_context)
    {
      g_main_context_pop_thread_default (p->context);
      g_clear_pointer (&p->context, g_main_context_unref);
    }

  return NULL;
}

/* ------------------------------------------------------------------ */
/* The test                                                             */
/* ------------------------------------------------------------------ */

/* The exact reconciliation. Every channel open through the drain got every post of its
 * name made since its creation by another channel: the deliveries counted by its handler
 * equal the posts counted by the posters. (Channels closed earlier were checked delivery by
 * delivery: in order, without gaps, nothing after their close.) */
static void
check_reconciliation (void)
{
  guint64 expected = 0, received = 0, all_received = 0, all_counted = 0;
  guint n_drained = 0;

  for (guint i = 0; i < N_PARTICIPANTS; i++)
    {
      Participant *p = &stress.participants[i];

      all_counted += p->received;
      for (guint j = 0; j < p->all->len; j++)
        {
          Rx *rx = g_ptr_array_index (p->all, j);
          guint64 rx_expected = 0;

          all_received += rx->received;
          g_assert_true (rx->closed);
          if (!rx->drained)
            continue;

          for (guint q = 0; q < N_PARTICIPANTS; q++)
            rx_expected += stress.participants[q].posts[rx->name] - rx->first[q];
          rx_expected -= rx->n_posted;
          if (rx->received != rx_expected)
            g_error ("channel %u (participant %u, name %u): received %u, expected %"
                     G_GUINT64_FORMAT, rx->id, i, rx->name, rx->received, rx_expected);

          n_drained++;
          received += rx->received;
          expected += rx_expected;
        }
    }

  g_test_message ("deliveries: %" G_GUINT64_FORMAT "; to the %u channels open through the "
                  "drain: %" G_GUINT64_FORMAT ", expected %" G_GUINT64_FORMAT,
                  all_received, n_drained, received, expected);
  g_assert_cmpuint (all_received, ==, all_counted);
  g_assert_cmpuint (received, ==, expected);
  g_assert_cmpuint (n_drained, >=, N_PARTICIPANTS * N_NAMES);
}

static void
test_broadcast_stress_storm (void)
{
  guint scale = mp_test_env_uint ("MP_STRESS_SCALE", 1);
  GThread *threads[N_WORKERS];
  Participant *main_p = &stress.participants[MAIN_PARTICIPANT];
  guint n_created = 0, n_closed = 0, n_in_handler = 0, n_by_context = 0, n_scratch = 0;
  guint64 n_posted = 0;
  Watchdog *watchdog;

  watchdog = watchdog_new ("storm", stress_timeout ());
  for (guint n = 0; n < N_NAMES; n++)
    {
      g_rw_lock_init (&stress.name_locks[n]);
      stress.names[n] = g_strdup_printf ("bcast-stress/%02u", n);
    }
  latch_init (&stress.ready);
  latch_init (&stress.start);
  latch_init (&stress.posting_done);
  latch_init (&stress.drained);

  for (guint i = 0; i < N_PARTICIPANTS; i++)
    {
      Participant *p = &stress.participants[i];

      p->index = i;
      p->rand = g_rand_new_with_seed (g_test_rand_int ());
      p->open = g_ptr_array_new ();
      p->all = g_ptr_array_new_with_free_func ((GDestroyNotify) rx_free);
    }

  for (guint t = 0; t < N_WORKERS; t++)
    threads[t] = g_thread_new ("bcast-stress", worker_thread, &stress.participants[t]);

  /* The main thread takes part on the global default context. */
  main_p->context = g_main_context_ref (g_main_context_default ());
  participant_setup (main_p);
  latch_wait (&stress.ready, N_WORKERS, stress_timeout (), "ready");
  stress.storm_end = g_get_monotonic_time () + (gint64) scale * STORM_SECONDS * G_TIME_SPAN_SECOND;
  latch_add (&stress.start);

  participant_run (main_p);
  participant_teardown (main_p, FALSE);
  g_clear_pointer (&main_p->context, g_main_context_unref);

  for (guint t = 0; t < N_WORKERS; t++)
    g_thread_join (threads[t]);

  /* Deliveries that were still queued for closed channels went with their inboxes. */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_assert_cmpint (g_atomic_int_get (&stress.live_channels), ==, 0);

  check_reconciliation ();

  for (guint i = 0; i < N_PARTICIPANTS; i++)
    {
      Participant *p = &stress.participants[i];

      n_created += p->n_created;
      n_closed += p->n_closed;
      n_in_handler += p->n_closed_in_handler;
      n_by_context += p->n_closed_by_context;
      n_scratch += p->n_scratch_contexts;
      n_posted += p->n_posted;
      g_assert_cmpuint (p->n_created, ==,
                        p->n_closed + p->n_closed_in_handler + p->n_closed_by_context);
    }
  g_test_message ("posts: %" G_GUINT64_FORMAT ", channels: %u (closed: %u explicitly, %u in "
                  "their handler, %u by their context), scratch contexts: %u",
                  n_posted, n_created, n_closed, n_in_handler, n_by_context, n_scratch);

  /* The storm must have exercised every path, or it proves nothing. */
  g_assert_cmpuint (n_posted, >, 1000);
  g_assert_cmpuint (n_closed, >, N_PARTICIPANTS);
  g_assert_cmpuint (n_in_handler, >, 0);
  g_assert_cmpuint (n_by_context, >, 0);
  g_assert_cmpuint (n_scratch, >, 0);

  for (guint i = 0; i < N_PARTICIPANTS; i++)
    {
      Participant *p = &stress.participants[i];

      g_rand_free (p->rand);
      g_ptr_array_unref (p->open);
      g_ptr_array_unref (p->all);
    }
  for (guint n = 0; n < N_NAMES; n++)
    {
      g_rw_lock_clear (&stress.name_locks[n]);
      g_free (stress.names[n]);
    }
  latch_clear (&stress.ready);
  latch_clear (&stress.start);
  latch_clear (&stress.posting_done);
  latch_clear (&stress.drained);
  watchdog_free (watchdog);
}

/* ------------------------------------------------------------------ */
/* /mpport/broadcast/stress/close-vs-context-finalize                   */
/*                                                                      */
/* "close() from any thread" racing with the owner thread finalizing   */
/* the channel's context ("An open channel keeps itself alive ... until */
/* close() or until its context is finalized"). Either may close the   */
/* channel first; it must end closed and finalized, and neither side   */
/* may touch the context after it was freed.                            */
/* ------------------------------------------------------------------ */

#define RACE_ITERATIONS 20000

typedef struct
{
  guint n_iterations;
  int ready;                      /* atomic: last iteration whose channel is published */
  int go;                         /* atomic: last iteration main released */
  int done;                       /* atomic: last iteration whose context is finalized */
  MpBroadcastChannel *channel;    /* published by ready; main owns the reference */
  gint64 deadline;
  int stop;                       /* atomic: tells the table hammer to stop */
} Race;

/* Busy-waits for *@word == @value: a condition variable would add enough latency to
 * close the window being tested. Bounded by @deadline. */
static void
spin_until (int        *word,
            int         value,
            gint64      deadline,
            const char *what)
{
  guint n = 0;

  while (g_atomic_int_get (word) != value)
    {
      if ((++n & 0xfff) == 0)
        {
          if (g_get_monotonic_time () > deadline)
            g_error ("close-vs-context-finalize: timed out waiting for %s %d", what, value);
          g_thread_yield ();
        }
    }
}

/* Shifts the two racers against each other by a varying few hundred nanoseconds. */
static void
spin_delay (guint n)
{
  for (volatile guint k = 0; k < n; k++)
    ;
}

static gpointer
race_owner_thread (gpointer data)
{
  Race *race = data;

  for (guint i = 0; i < race->n_iterations; i++)
    {
      GMainContext *context = g_main_context_new ();

      g_main_context_push_thread_default (context);
      race->channel = mp_broadcast_channel_new ("bcast-stress/close-vs-context");
      g_main_context_pop_thread_default (context);

      g_atomic_int_set (&race->ready, (int) i);
      spin_until (&race->go, (int) i, race->deadline, "go");
      spin_delay ((i * 7) % 1999);
      /* The last reference: the channel's source is destroyed, the channel closes. */
      g_main_context_unref (context);
      g_atomic_int_set (&race->done, (int) i);
    }

  return NULL;
}

/* Keeps the name table busy, as any process with channels does: a closer that waits for
 * the table lock while the owner finalizes the context stays in the race longer. */
static gpointer
race_table_hammer_thread (gpointer data)
{
  Race *race = data;

  while (!g_atomic_int_get (&race->stop))
    {
      MpBroadcastChannel *channel = mp_broadcast_channel_new ("bcast-stress/hammer");

      mp_broadcast_channel_close (channel);
      g_object_unref (channel);
    }

  return NULL;
}

static void
test_broadcast_stress_close_vs_context_finalize (void)
{
  Race race = { .ready = -1, .go = -1, .done = -1 };
  Watchdog *watchdog;
  GThread *owner;
  GThread *hammer;

  race.n_iterations = RACE_ITERATIONS * mp_test_env_uint ("MP_STRESS_SCALE", 1);
  race.deadline = stress_deadline ();
  watchdog = watchdog_new ("close-vs-context-finalize", stress_timeout ());
  owner = g_thread_new ("race-owner", race_owner_thread, &race);
  hammer = g_thread_new ("race-hammer", race_table_hammer_thread, &race);

  for (guint i = 0; i < race.n_iterations; i++)
    {
      MpBroadcastChannel *channel;

      spin_until (&race.ready, (int) i, race.deadline, "ready");
      channel = race.channel;
      g_atomic_int_set (&race.go, (int) i);
      spin_delay (i % 1499);
      mp_broadcast_channel_close (channel);
      g_assert_true (mp_broadcast_channel_is_closed (channel));

      spin_until (&race.done, (int) i, race.deadline, "done");
      g_assert_null (mp_broadcast_channel_get_context (channel));
      g_assert_finalize_object (channel);
    }

  g_thread_join (owner);
  g_atomic_int_set (&race.stop, TRUE);
  g_thread_join (hammer);
  watchdog_free (watchdog);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/mpport/broadcast/stress/storm", test_broadcast_stress_storm);
  g_test_add_func ("/mpport/broadcast/stress/close-vs-context-finalize",
                   test_broadcast_stress_close_vs_context_finalize);

  return g_test_run ();
}
