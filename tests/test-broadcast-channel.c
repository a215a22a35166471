/* test-broadcast-channel.c: the MpBroadcastChannel contract, one case per behaviour
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Each case names the sentence of DESIGN.md §2 "BroadcastChannel" it checks. Counts and
 * orders are asserted exactly. Every wait is bounded by TEST_TIMEOUT_SECONDS: a lost
 * delivery fails the test instead of hanging it.
 */

#include <mpport/mpport.h>

#include "mp-test-util.h"

#define TEST_TIMEOUT_SECONDS 30

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

/* TRUE while the main thread is inside post_message() or close(): a handler that runs then
 * was emitted synchronously. Only main-thread handlers read it. */
static gboolean in_call;

/* What one channel received. Handlers of several probes can share one log to record the
 * interleaving as "(label,payload)" entries. */
typedef struct
{
  const char *label;
  GString *log;           /* nullable, shared */
  GThread *thread;        /* the thread the handler must run on */
  guint count;
  gboolean close_self;    /* close the channel inside its first delivery */
  MpBroadcastChannel *close_other;  /* close this one inside the first delivery */
} Probe;

static void
on_message_record (MpBroadcastChannel *channel,
                   MpMessage          *message,
                   gpointer            user_data)
{
  Probe *probe = user_data;
  GVariant *data = mp_message_get_data (message);

  g_assert_true (g_thread_self () == probe->thread);
  g_assert_false (in_call);
  g_assert_false (mp_broadcast_channel_is_closed (channel));
  g_assert_nonnull (mp_message_get_ports (message));
  g_assert_cmpuint (mp_message_get_ports (message)->len, ==, 0);

  probe->count++;
  if (probe->log != NULL)
    {
      g_assert_nonnull (data);
      g_string_append_printf (probe->log, "%s(%s,%s)",
                              probe->log->len > 0 ? " " : "",
                              probe->label, g_variant_get_string (data, NULL));
    }

  if (probe->close_self && probe->count == 1)
    mp_broadcast_channel_close (channel);
  if (probe->close_other != NULL && probe->count == 1)
    mp_broadcast_channel_close (probe->close_other);
}

static void
probe_connect (Probe              *probe,
               MpBroadcastChannel *channel,
               const char         *label,
               GString            *log)
{
  *probe = (Probe) { .label = label, .log = log, .thread = g_thread_self () };
  g_signal_connect (channel, "message", G_CALLBACK (on_message_record), probe);
}

/* Creates a channel of @name on the calling thread and checks its initial state. */
static MpBroadcastChannel *
channel_new_checked (const char *name)
{
  MpBroadcastChannel *channel = mp_broadcast_channel_new (name);

  g_assert_true (MP_IS_BROADCAST_CHANNEL (channel));
  g_assert_cmpstr (mp_broadcast_channel_get_name (channel), ==, name);
  g_assert_false (mp_broadcast_channel_is_closed (channel));
  g_assert_true (mp_broadcast_channel_get_context (channel) ==
                 (g_main_context_get_thread_default () != NULL
                  ? g_main_context_get_thread_default ()
                  : g_main_context_default ()));

  return channel;
}

/* Posts @text as a string variant; the post must succeed and emit nothing. */
static void
post_string (MpBroadcastChannel *channel,
             const char         *text)
{
  GError *error = NULL;
  gboolean ok;

  in_call = TRUE;
  ok = mp_broadcast_channel_post_message (channel, g_variant_new_string (text), &error);
  in_call = FALSE;

  g_assert_no_error (error);
  g_assert_true (ok);
}

static void
close_checked (MpBroadcastChannel *channel)
{
  in_call = TRUE;
  mp_broadcast_channel_close (channel);
  in_call = FALSE;

  g_assert_true (mp_broadcast_channel_is_closed (channel));
  g_assert_null (mp_broadcast_channel_get_context (channel));
}

/* Dispatches everything ready on @context (posts made on this thread set their inbox
 * ready at once). Bounded: a source that re-arms forever fails the test. */
static void
drain_context (GMainContext *context)
{
  guint guard = 0;

  while (g_main_context_iteration (context, FALSE))
    g_assert_cmpuint (++guard, <, 100000);
}

static void
drain_main (void)
{
  drain_context (NULL);
}

/* Closes, lets queued deliveries that still name the channel run out, and checks that the
 * caller's reference was the last one. */
static void
close_and_finalize (MpBroadcastChannel *channel)
{
  close_checked (channel);
  drain_main ();
  g_assert_finalize_object (channel);
}

static gboolean
on_timeout_fail (gpointer user_data)
{
  g_error ("%s: timed out after %d s", (const char *) user_data, TEST_TIMEOUT_SECONDS);
  return G_SOURCE_REMOVE;
}

/* Adds a source to @context that aborts the test if it is still iterated after the
 * timeout. The caller destroys it. */
static GSource *
watchdog_attach (GMainContext *context,
                 const char   *what)
{
  GSource *source = g_timeout_source_new_seconds (TEST_TIMEOUT_SECONDS);

  g_source_set_callback (source, on_timeout_fail, (gpointer) what, NULL);
  g_source_attach (source, context);

  return source;
}

static void
watchdog_remove (GSource *source)
{
  g_source_destroy (source);
  g_source_unref (source);
}

static void
on_notify_count (GObject    *object,
                 GParamSpec *pspec,
                 gpointer    user_data)
{
  guint *count = user_data;

  (*count)++;
}

/* ------------------------------------------------------------------ */
/* "post_message delivers to every other open channel of the same name  */
/* in the process (all threads), never to itself."                      */
/* ------------------------------------------------------------------ */

static void
test_fan_out_others (void)
{
  GString *log = g_string_new (NULL);
  MpBroadcastChannel *a1 = channel_new_checked ("fan-out/a");
  MpBroadcastChannel *a2 = channel_new_checked ("fan-out/a");
  MpBroadcastChannel *a3 = channel_new_checked ("fan-out/a");
  MpBroadcastChannel *b1 = channel_new_checked ("fan-out/b");
  MpBroadcastChannel *lone = channel_new_checked ("fan-out/lone");
  Probe pa1, pa2, pa3, pb1, plone;

  probe_connect (&pa1, a1, "a1", log);
  probe_connect (&pa2, a2, "a2", log);
  probe_connect (&pa3, a3, "a3", log);
  probe_connect (&pb1, b1, "b1", log);
  probe_connect (&plone, lone, "lone", log);

  post_string (a1, "x");
  post_string (a1, "y");
  post_string (a2, "z");
  post_string (b1, "w");
  post_string (lone, "nobody");
  g_assert_cmpuint (log->len, ==, 0);
  drain_main ();

  g_assert_cmpuint (pa1.count, ==, 1);
  g_assert_cmpuint (pa2.count, ==, 2);
  g_assert_cmpuint (pa3.count, ==, 3);
  g_assert_cmpuint (pb1.count, ==, 0);
  g_assert_cmpuint (plone.count, ==, 0);
  g_assert_cmpstr (log->str, ==, "(a2,x) (a3,x) (a2,y) (a3,y) (a1,z) (a3,z)");

  close_and_finalize (a1);
  close_and_finalize (a2);
  close_and_finalize (a3);
  close_and_finalize (b1);
  close_and_finalize (lone);
  g_string_free (log, TRUE);
}

/* A delivered entry (message, destinations) goes back to its inbox for the next posts to
 * reuse (mp-broadcast-channel.c, "Recycled entries"): bursts with deliveries in between
 * keep the HTML order and counts exact; a group that grows past what a recycled entry
 * holds gets bigger entries, every destination served, in creation order; channels closed
 * in between get nothing more. */
static void
test_order_recycled_entries (void)
{
  MpBroadcastChannel *sender = channel_new_checked ("order/recycled");
  MpBroadcastChannel *receivers[16];
  Probe probes[16];
  GString *log = g_string_new (NULL);
  GString *expected = g_string_new (NULL);
  guint n = 3;

  for (guint i = 0; i < G_N_ELEMENTS (receivers); i++)
    receivers[i] = NULL;
  for (guint i = 0; i < n; i++)
    {
      receivers[i] = channel_new_checked ("order/recycled");
      probe_connect (&probes[i], receivers[i], "r", NULL);
    }

  for (guint burst = 0; burst < 5; burst++)
    {
      for (guint i = 0; i < 100; i++)
        post_string (sender, "m");
      drain_main ();
      for (guint r = 0; r < n; r++)
        g_assert_cmpuint (probes[r].count, ==, 100 * (burst + 1));
    }

  /* The group grows to 16 channels on this context: 15 destinations a post. */
  for (guint i = n; i < G_N_ELEMENTS (receivers); i++)
    {
      static const char *labels[] = { "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11",
                                      "r12", "r13", "r14", "r15" };

      receivers[i] = channel_new_checked ("order/recycled");
      probe_connect (&probes[i], receivers[i], labels[i - n], log);
    }
  for (guint i = 0; i < 3; i++)
    {
      g_autofree char *text = g_strdup_printf ("g%u", i);

      post_string (sender, text);
      for (guint r = n; r < G_N_ELEMENTS (receivers); r++)
        g_string_append_printf (expected, "%s(r%u,%s)", expected->len > 0 ? " " : "", r, text);
    }
  drain_main ();
  g_assert_cmpstr (log->str, ==, expected->str);
  for (guint r = 0; r < n; r++)
    g_assert_cmpuint (probes[r].count, ==, 503);

  /* Back to fewer destinations, after entries of both sizes went round. */
  for (guint r = 1; r < G_N_ELEMENTS (receivers); r++)
    close_and_finalize (g_steal_pointer (&receivers[r]));
  for (guint i = 0; i < 100; i++)
    post_string (sender, "m");
  drain_main ();
  g_assert_cmpuint (probes[0].count, ==, 603);

  close_and_finalize (receivers[0]);
  close_and_finalize (sender);
  g_string_free (expected, TRUE);
  g_string_free (log, TRUE);
}

/* The same MpMessage reaches each destination; its data is the posted variant. */
static void
on_message_keep (MpBroadcastChannel *channel,
                 MpMessage          *message,
                 gpointer            user_data)
{
  GPtrArray *kept = user_data;

  g_ptr_array_add (kept, mp_message_ref (message));
}

static void
test_fan_out_payload (void)
{
  MpBroadcastChannel *sender = channel_new_checked ("fan-out/payload");
  MpBroadcastChannel *r1 = channel_new_checked ("fan-out/payload");
  MpBroadcastChannel *r2 = channel_new_checked ("fan-out/payload");
  GPtrArray *kept = g_ptr_array_new_with_free_func ((GDestroyNotify) mp_message_unref);
  GVariant *value = g_variant_ref_sink (g_variant_new ("(su)", "payload", 42));
  GError *error = NULL;

  g_signal_connect (r1, "message", G_CALLBACK (on_message_keep), kept);
  g_signal_connect (r2, "message", G_CALLBACK (on_message_keep), kept);

  g_assert_true (mp_broadcast_channel_post_message (sender, value, &error));
  g_assert_no_error (error);
  g_assert_true (mp_broadcast_channel_post_message (sender, NULL, &error));
  g_assert_no_error (error);
  drain_main ();

  g_assert_cmpuint (kept->len, ==, 4);
  g_assert_true (g_variant_equal (mp_message_get_data (g_ptr_array_index (kept, 0)), value));
  g_assert_true (g_variant_equal (mp_message_get_data (g_ptr_array_index (kept, 1)), value));
  g_assert_null (mp_message_get_data (g_ptr_array_index (kept, 2)));
  g_assert_null (mp_message_get_data (g_ptr_array_index (kept, 3)));

  g_ptr_array_unref (kept);
  g_variant_unref (value);
  close_and_finalize (sender);
  close_and_finalize (r1);
  close_and_finalize (r2);
}

/* ------------------------------------------------------------------ */
/* "Order (the HTML rule): ... message-major, creation-minor, even when */
/* several posts were made back to back before any delivery ran."      */
/* ------------------------------------------------------------------ */

#define HTML_RULE_EXPECTED \
  "(c2,from c1) (c3,from c1) (c1,from c3) (c2,from c3) (c1,done) (c3,done)"

typedef struct
{
  MpBroadcastChannel *c[3];
  Probe probes[3];
  GString *log;
} Trio;

static void
trio_init (Trio       *trio,
           const char *name)
{
  static const char *labels[] = { "c1", "c2", "c3" };

  trio->log = g_string_new (NULL);
  for (guint i = 0; i < 3; i++)
    {
      trio->c[i] = channel_new_checked (name);
      probe_connect (&trio->probes[i], trio->c[i], labels[i], trio->log);
    }
}

static void
trio_finish (Trio *trio)
{
  for (guint i = 0; i < 3; i++)
    close_and_finalize (trio->c[i]);
  g_string_free (trio->log, TRUE);
}

static void
test_order_html_rule (void)
{
  Trio trio;

  trio_init (&trio, "order/html-rule");

  post_string (trio.c[0], "from c1");
  post_string (trio.c[2], "from c3");
  post_string (trio.c[1], "done");
  g_assert_cmpuint (trio.log->len, ==, 0);
  drain_main ();

  g_assert_cmpstr (trio.log->str, ==, HTML_RULE_EXPECTED);

  trio_finish (&trio);
}

typedef struct
{
  MpBroadcastChannel *channel;
  const char *text;
} PostJob;

static gpointer
post_job_thread (gpointer data)
{
  PostJob *job = data;
  GError *error = NULL;

  g_assert_true (mp_broadcast_channel_post_message (job->channel,
                                                    g_variant_new_string (job->text),
                                                    &error));
  g_assert_no_error (error);

  return NULL;
}

static void
post_string_from_thread (MpBroadcastChannel *channel,
                         const char         *text)
{
  PostJob job = { channel, text };

  g_thread_join (g_thread_new ("poster", post_job_thread, &job));
}

static void
test_order_html_rule_threads (void)
{
  Trio trio;

  trio_init (&trio, "order/html-rule-threads");

  post_string_from_thread (trio.c[0], "from c1");
  post_string_from_thread (trio.c[2], "from c3");
  post_string_from_thread (trio.c[1], "done");
  g_assert_cmpuint (trio.log->len, ==, 0);
  drain_main ();

  g_assert_cmpstr (trio.log->str, ==, HTML_RULE_EXPECTED);

  trio_finish (&trio);
}

/* ------------------------------------------------------------------ */
/* "a channel closed before its delivery runs (even after the post, or  */
/* by its own handler) receives nothing."                               */
/* ------------------------------------------------------------------ */

/* A sender, a victim and a witness created after the victim: the witness proves the
 * deliveries did run. */
typedef struct
{
  MpBroadcastChannel *sender;
  MpBroadcastChannel *victim;
  MpBroadcastChannel *witness;
  Probe victim_probe;
  Probe witness_probe;
} CloseCase;

static void
close_case_init (CloseCase  *cc,
                 const char *name)
{
  cc->sender = channel_new_checked (name);
  cc->victim = channel_new_checked (name);
  cc->witness = channel_new_checked (name);
  probe_connect (&cc->victim_probe, cc->victim, "victim", NULL);
  probe_connect (&cc->witness_probe, cc->witness, "witness", NULL);
}

static void
close_case_finish (CloseCase *cc)
{
  close_and_finalize (cc->sender);
  close_and_finalize (cc->victim);
  close_and_finalize (cc->witness);
}

static void
test_close_before_post (void)
{
  CloseCase cc;

  close_case_init (&cc, "close/before-post");

  close_checked (cc.victim);
  post_string (cc.sender, "m");
  drain_main ();

  g_assert_cmpuint (cc.victim_probe.count, ==, 0);
  g_assert_cmpuint (cc.witness_probe.count, ==, 1);

  close_case_finish (&cc);
}

static void
test_close_after_post (void)
{
  CloseCase cc;

  close_case_init (&cc, "close/after-post");

  post_string (cc.sender, "m1");
  post_string (cc.sender, "m2");
  close_checked (cc.victim);
  drain_main ();

  g_assert_cmpuint (cc.victim_probe.count, ==, 0);
  g_assert_cmpuint (cc.witness_probe.count, ==, 2);

  close_case_finish (&cc);
}

/* Queued deliveries to a channel that closes itself inside its handler are cancelled. */
static void
test_close_in_own_handler (void)
{
  CloseCase cc;

  close_case_init (&cc, "close/in-own-handler");
  cc.victim_probe.close_self = TRUE;

  post_string (cc.sender, "m1");
  post_string (cc.sender, "m2");
  post_string (cc.sender, "m3");
  drain_main ();

  g_assert_cmpuint (cc.victim_probe.count, ==, 1);
  g_assert_true (mp_broadcast_channel_is_closed (cc.victim));
  g_assert_cmpuint (cc.witness_probe.count, ==, 3);

  close_case_finish (&cc);
}

/* Closed by the handler of an earlier destination of the same post. */
static void
test_close_by_earlier_destination (void)
{
  MpBroadcastChannel *sender = channel_new_checked ("close/by-earlier-destination");
  MpBroadcastChannel *first = channel_new_checked ("close/by-earlier-destination");
  MpBroadcastChannel *victim = channel_new_checked ("close/by-earlier-destination");
  Probe first_probe, victim_probe;

  probe_connect (&first_probe, first, "first", NULL);
  probe_connect (&victim_probe, victim, "victim", NULL);
  first_probe.close_other = victim;

  post_string (sender, "m1");
  post_string (sender, "m2");
  drain_main ();

  g_assert_cmpuint (first_probe.count, ==, 2);
  g_assert_cmpuint (victim_probe.count, ==, 0);

  close_and_finalize (sender);
  close_and_finalize (first);
  close_and_finalize (victim);
}

/* ------------------------------------------------------------------ */
/* "The destinations are fixed when the post is made: a channel created */
/* later receives nothing of it." "Creating or closing channels during */
/* delivery is safe."                                                   */
/* ------------------------------------------------------------------ */

typedef struct
{
  const char *name;
  MpBroadcastChannel *created;
  Probe created_probe;
  GString *log;
} CreateInHandler;

static void
on_message_create (MpBroadcastChannel *channel,
                   MpMessage          *message,
                   gpointer            user_data)
{
  CreateInHandler *cih = user_data;

  if (cih->created != NULL)
    return;

  cih->created = channel_new_checked (cih->name);
  probe_connect (&cih->created_probe, cih->created, "late", cih->log);
}

static void
test_lifecycle_created_in_handler (void)
{
  CreateInHandler cih = { .name = "lifecycle/created-in-handler" };
  MpBroadcastChannel *sender = channel_new_checked (cih.name);
  MpBroadcastChannel *creator = channel_new_checked (cih.name);
  Probe creator_probe;

  cih.log = g_string_new (NULL);
  probe_connect (&creator_probe, creator, "creator", cih.log);
  g_signal_connect (creator, "message", G_CALLBACK (on_message_create), &cih);

  /* Both posted before the late channel exists, though m2 is delivered after. */
  post_string (sender, "m1");
  post_string (sender, "m2");
  drain_main ();
  g_assert_nonnull (cih.created);
  g_assert_cmpuint (cih.created_probe.count, ==, 0);

  post_string (sender, "m3");
  drain_main ();

  g_assert_cmpstr (cih.log->str, ==, "(creator,m1) (creator,m2) (creator,m3) (late,m3)");

  close_and_finalize (sender);
  close_and_finalize (creator);
  close_and_finalize (cih.created);
  g_string_free (cih.log, TRUE);
}

static void
test_lifecycle_recreate_name (void)
{
  const char *name = "lifecycle/recreate";
  MpBroadcastChannel *a = channel_new_checked (name);
  MpBroadcastChannel *b;
  MpBroadcastChannel *c;
  Probe pa, pb, pc;

  /* Every channel of the name closed, then the name used again. */
  close_and_finalize (a);
  a = channel_new_checked (name);
  b = channel_new_checked (name);
  probe_connect (&pa, a, "a", NULL);
  probe_connect (&pb, b, "b", NULL);
  post_string (a, "to b");
  drain_main ();
  g_assert_cmpuint (pa.count, ==, 0);
  g_assert_cmpuint (pb.count, ==, 1);

  /* One closed and re-created while the other stays open. */
  close_and_finalize (b);
  c = channel_new_checked (name);
  probe_connect (&pc, c, "c", NULL);
  post_string (a, "to c");
  post_string (c, "to a");
  drain_main ();
  g_assert_cmpuint (pa.count, ==, 1);
  g_assert_cmpuint (pb.count, ==, 1);
  g_assert_cmpuint (pc.count, ==, 1);

  close_and_finalize (a);
  close_and_finalize (c);
}

/* close() is idempotent and emits nothing; is_closed(), get_context() and the properties
 * follow it ("closed" is not notified, by decision). */
static void
test_lifecycle_close_state (void)
{
  MpBroadcastChannel *channel = channel_new_checked ("lifecycle/close-state");
  GMainContext *context = NULL;
  char *name = NULL;
  gboolean closed = TRUE;
  guint n_notify_closed = 0;
  guint n_notify_context = 0;

  g_signal_connect (channel, "notify::closed", G_CALLBACK (on_notify_count), &n_notify_closed);
  g_signal_connect (channel, "notify::context", G_CALLBACK (on_notify_count), &n_notify_context);

  g_object_get (channel, "name", &name, "closed", &closed, "context", &context, NULL);
  g_assert_cmpstr (name, ==, "lifecycle/close-state");
  g_assert_false (closed);
  g_assert_true (context == g_main_context_default ());
  g_clear_pointer (&name, g_free);
  g_clear_pointer (&context, g_main_context_unref);

  close_checked (channel);
  close_checked (channel);
  drain_main ();

  g_object_get (channel, "closed", &closed, "context", &context, NULL);
  g_assert_true (closed);
  g_assert_null (context);
  g_assert_cmpuint (n_notify_closed, ==, 0);
  g_assert_cmpuint (n_notify_context, ==, 0);

  close_and_finalize (channel);
}

/* ------------------------------------------------------------------ */
/* "Posting on a closed channel fails with MP_ERROR_INVALID_STATE."     */
/* ------------------------------------------------------------------ */

static void
test_post_closed_fails (void)
{
  MpBroadcastChannel *closed = channel_new_checked ("post/closed");
  MpBroadcastChannel *other = channel_new_checked ("post/closed");
  Probe other_probe;
  GError *error = NULL;

  probe_connect (&other_probe, other, "other", NULL);
  close_checked (closed);

  /* The floating payload is sunk and released on failure (a leak shows under valgrind). */
  g_assert_false (mp_broadcast_channel_post_message (closed, g_variant_new_string ("x"), &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_assert_nonnull (error->message);
  g_assert_cmpstr (error->message, !=, "");
  g_clear_error (&error);

  g_assert_false (mp_broadcast_channel_post_message (closed, NULL, &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_INVALID_STATE);
  g_clear_error (&error);

  /* Without an error location it still fails quietly. */
  g_assert_false (mp_broadcast_channel_post_message (closed, g_variant_new_int32 (1), NULL));

  drain_main ();
  g_assert_cmpuint (other_probe.count, ==, 0);

  close_and_finalize (closed);
  close_and_finalize (other);
}

/* ------------------------------------------------------------------ */
/* "Signals are emitted only on the owning GMainContext, from that      */
/* context's dispatch, never inside the call that caused them."         */
/* ------------------------------------------------------------------ */

static void
test_no_emission_in_post (void)
{
  MpBroadcastChannel *sender = channel_new_checked ("post/no-emission");
  MpBroadcastChannel *receiver = channel_new_checked ("post/no-emission");
  Probe probe;

  probe_connect (&probe, receiver, "receiver", NULL);

  /* The main context is owned by no one here; post_message must still not dispatch. */
  for (guint i = 0; i < 5; i++)
    post_string (sender, "m");
  g_assert_cmpuint (probe.count, ==, 0);

  /* Nor while this thread owns the context (as inside a handler or a running loop). */
  g_assert_true (g_main_context_acquire (g_main_context_default ()));
  post_string (sender, "m");
  g_assert_cmpuint (probe.count, ==, 0);
  g_main_context_release (g_main_context_default ());

  drain_main ();
  g_assert_cmpuint (probe.count, ==, 6);

  close_and_finalize (sender);
  close_and_finalize (receiver);
}

/* ------------------------------------------------------------------ */
/* "post_message delivers to every other open channel of the same name  */
/* in the process (all threads)"; "Across contexts only each sender's   */
/* order is promised"; signals only on the channel's own context.       */
/* ------------------------------------------------------------------ */

#define FAN_THREADS  4
#define FAN_MESSAGES 1000

typedef struct
{
  const char *name;
  Latch *ready;
  GThread *self;             /* set by the thread itself */
  GMainContext *context;     /* the thread's, valid while it runs */
  GMainLoop *loop;
  MpBroadcastChannel *channel;
  guint received;
} FanWorker;

static void
on_fan_message (MpBroadcastChannel *channel,
                MpMessage          *message,
                gpointer            user_data)
{
  FanWorker *worker = user_data;

  g_assert_true (g_thread_self () == worker->self);
  g_assert_true (g_main_context_is_owner (worker->context));
  g_assert_cmpuint (g_variant_get_uint32 (mp_message_get_data (message)), ==, worker->received);

  if (++worker->received == FAN_MESSAGES)
    g_main_loop_quit (worker->loop);
}

static gpointer
fan_worker_thread (gpointer data)
{
  FanWorker *worker = data;
  GSource *watchdog;

  worker->self = g_thread_self ();
  worker->context = g_main_context_new ();
  g_main_context_push_thread_default (worker->context);
  worker->loop = g_main_loop_new (worker->context, FALSE);
  worker->channel = channel_new_checked (worker->name);
  g_signal_connect (worker->channel, "message", G_CALLBACK (on_fan_message), worker);
  watchdog = watchdog_attach (worker->context, "fan-out worker");

  latch_add (worker->ready);
  g_main_loop_run (worker->loop);

  watchdog_remove (watchdog);
  mp_broadcast_channel_close (worker->channel);
  g_main_context_pop_thread_default (worker->context);
  g_main_loop_unref (worker->loop);
  g_main_context_unref (worker->context);

  return NULL;
}

static void
test_threads_fan_out (void)
{
  const char *name = "threads/fan-out";
  FanWorker workers[FAN_THREADS];
  GThread *threads[FAN_THREADS];
  MpBroadcastChannel *sender;
  Latch ready;

  latch_init (&ready);
  for (guint t = 0; t < FAN_THREADS; t++)
    {
      workers[t] = (FanWorker) { .name = name, .ready = &ready };
      threads[t] = g_thread_new ("fan-out", fan_worker_thread, &workers[t]);
    }
  latch_wait (&ready, FAN_THREADS, TEST_TIMEOUT_SECONDS * G_TIME_SPAN_SECOND, "ready");

  sender = channel_new_checked (name);
  for (guint i = 0; i < FAN_MESSAGES; i++)
    g_assert_true (mp_broadcast_channel_post_message (sender, g_variant_new_uint32 (i), NULL));

  for (guint t = 0; t < FAN_THREADS; t++)
    {
      g_thread_join (threads[t]);
      g_assert_true (workers[t].self == threads[t]);
      g_assert_cmpuint (workers[t].received, ==, FAN_MESSAGES);
      g_assert_true (mp_broadcast_channel_is_closed (workers[t].channel));
      g_assert_finalize_object (workers[t].channel);
    }

  close_and_finalize (sender);
  latch_clear (&ready);
}

/* ------------------------------------------------------------------ */
/* "An open channel keeps itself alive (the name table holds it) until  */
/* close() or until its context is finalized."                          */
/* ------------------------------------------------------------------ */

typedef struct
{
  const char *name;
  Latch created;
  Latch posted;
  MpBroadcastChannel *channel;
  GMainContext *context;   /* weak, compared only */
  guint received;
} DyingContext;

static void
on_message_count (MpBroadcastChannel *channel,
                  MpMessage          *message,
                  gpointer            user_data)
{
  guint *count = user_data;

  (*count)++;
}

static gpointer
dying_context_thread (gpointer data)
{
  DyingContext *dc = data;
  GMainContext *context = g_main_context_new ();

  g_main_context_push_thread_default (context);
  dc->context = context;
  dc->channel = channel_new_checked (dc->name);
  g_signal_connect (dc->channel, "message", G_CALLBACK (on_message_count), &dc->received);
  latch_add (&dc->created);

  /* Deliveries are queued on the context and never dispatched: it goes away first. */
  latch_wait (&dc->posted, 1, TEST_TIMEOUT_SECONDS * G_TIME_SPAN_SECOND, "posted");
  g_main_context_pop_thread_default (context);
  g_main_context_unref (context);

  return NULL;
}

static void
test_lifetime_context_finalized (void)
{
  DyingContext dc = { .name = "lifetime/context-finalized" };
  MpBroadcastChannel *sender = channel_new_checked (dc.name);
  MpBroadcastChannel *witness = channel_new_checked (dc.name);
  MpBroadcastChannel *later;
  GThread *thread;
  Probe witness_probe, later_probe;

  probe_connect (&witness_probe, witness, "witness", NULL);
  latch_init (&dc.created);
  latch_init (&dc.posted);

  thread = g_thread_new ("dying-context", dying_context_thread, &dc);
  latch_wait (&dc.created, 1, TEST_TIMEOUT_SECONDS * G_TIME_SPAN_SECOND, "created");
  g_assert_false (mp_broadcast_channel_is_closed (dc.channel));
  g_assert_true (mp_broadcast_channel_get_context (dc.channel) == dc.context);

  post_string (sender, "queued 1");
  post_string (sender, "queued 2");
  latch_add (&dc.posted);
  g_thread_join (thread);

  g_assert_true (mp_broadcast_channel_is_closed (dc.channel));
  g_assert_null (mp_broadcast_channel_get_context (dc.channel));
  post_string (sender, "after");
  drain_main ();
  g_assert_cmpuint (dc.received, ==, 0);
  g_assert_cmpuint (witness_probe.count, ==, 3);

  /* Released by the table and by the dropped deliveries: ours is the last reference. */
  g_assert_finalize_object (dc.channel);

  /* The name still works for the channels left. */
  later = channel_new_checked (dc.name);
  probe_connect (&later_probe, later, "later", NULL);
  post_string (sender, "again");
  drain_main ();
  g_assert_cmpuint (witness_probe.count, ==, 4);
  g_assert_cmpuint (later_probe.count, ==, 1);

  close_and_finalize (later);
  close_and_finalize (sender);
  close_and_finalize (witness);
  latch_clear (&dc.created);
  latch_clear (&dc.posted);
}

static void
test_lifetime_open_keeps_alive (void)
{
  const char *name = "lifetime/open-keeps-alive";
  MpBroadcastChannel *sender = channel_new_checked (name);
  MpBroadcastChannel *unowned = channel_new_checked (name);
  gpointer weak = unowned;
  guint received = 0;

  g_object_add_weak_pointer (G_OBJECT (unowned), &weak);
  g_signal_connect (unowned, "message", G_CALLBACK (on_message_count), &received);
  g_object_unref (unowned);
  g_assert_nonnull (weak);

  post_string (sender, "m1");
  post_string (sender, "m2");
  drain_main ();
  g_assert_nonnull (weak);
  g_assert_cmpuint (received, ==, 2);

  /* Nothing is queued for it now: close() drops the last reference at once. */
  mp_broadcast_channel_close (weak);
  g_assert_null (weak);

  close_and_finalize (sender);
}

/* ------------------------------------------------------------------ */
/* "priority" (default G_PRIORITY_DEFAULT); "Property setters notify on  */
/* the calling thread".                                                 */
/* ------------------------------------------------------------------ */

static void
test_priority_property (void)
{
  MpBroadcastChannel *channel = channel_new_checked ("priority/property");
  guint n_notify = 0;
  int priority = 0;

  g_signal_connect (channel, "notify::priority", G_CALLBACK (on_notify_count), &n_notify);

  g_assert_cmpint (mp_broadcast_channel_get_priority (channel), ==, G_PRIORITY_DEFAULT);
  g_object_get (channel, "priority", &priority, NULL);
  g_assert_cmpint (priority, ==, G_PRIORITY_DEFAULT);

  mp_broadcast_channel_set_priority (channel, G_PRIORITY_HIGH);
  g_assert_cmpint (mp_broadcast_channel_get_priority (channel), ==, G_PRIORITY_HIGH);
  g_assert_cmpuint (n_notify, ==, 1);

  /* Explicit notify: setting the same value again notifies nothing. */
  mp_broadcast_channel_set_priority (channel, G_PRIORITY_HIGH);
  g_assert_cmpuint (n_notify, ==, 1);

  g_object_set (channel, "priority", G_PRIORITY_LOW, NULL);
  g_assert_cmpint (mp_broadcast_channel_get_priority (channel), ==, G_PRIORITY_LOW);
  g_assert_cmpuint (n_notify, ==, 2);

  close_and_finalize (channel);
}

/* Channels of one name on one context share one queue: creation order (the HTML rule)
 * holds whatever their priorities, and the queue runs at the highest of them. Between
 * names, the priority decides: "high" (another name, created last) is dispatched first. */
static void
test_priority_high_before_low (void)
{
  const char *low_name = "priority/high-before-low/low";
  const char *high_name = "priority/high-before-low/high";
  GString *log = g_string_new (NULL);
  MpBroadcastChannel *low_sender = channel_new_checked (low_name);
  MpBroadcastChannel *low = channel_new_checked (low_name);
  MpBroadcastChannel *low_sibling = channel_new_checked (low_name);
  MpBroadcastChannel *high_sender = channel_new_checked (high_name);
  MpBroadcastChannel *high = channel_new_checked (high_name);
  Probe low_probe, sibling_probe, high_probe;

  mp_broadcast_channel_set_priority (low, G_PRIORITY_LOW);
  mp_broadcast_channel_set_priority (low_sender, G_PRIORITY_LOW);
  mp_broadcast_channel_set_priority (low_sibling, G_PRIORITY_HIGH_IDLE);
  mp_broadcast_channel_set_priority (high, G_PRIORITY_HIGH);
  probe_connect (&low_probe, low, "low", log);
  probe_connect (&sibling_probe, low_sibling, "sibling", log);
  probe_connect (&high_probe, high, "high", log);

  post_string (low_sender, "m1");
  post_string (high_sender, "m1");
  post_string (low_sender, "m2");
  post_string (high_sender, "m2");
  drain_main ();

  g_assert_cmpstr (log->str, ==,
                   "(high,m1) (high,m2) (low,m1) (sibling,m1) (low,m2) (sibling,m2)");

  close_and_finalize (low_sender);
  close_and_finalize (low);
  close_and_finalize (low_sibling);
  close_and_finalize (high_sender);
  close_and_finalize (high);
  g_string_free (log, TRUE);
}

/* Changing the priority loses nothing and keeps the order: the queue of the name on this
 * context is shared, only its priority changes. */
static void
test_priority_change_keeps_queued (void)
{
  const char *name = "priority/change-keeps-queued";
  GString *log = g_string_new (NULL);
  MpBroadcastChannel *sender = channel_new_checked (name);
  MpBroadcastChannel *receiver = channel_new_checked (name);
  Probe probe;

  mp_broadcast_channel_set_priority (sender, G_PRIORITY_LOW);
  probe_connect (&probe, receiver, "receiver", log);

  post_string (sender, "before");
  mp_broadcast_channel_set_priority (receiver, G_PRIORITY_HIGH);
  post_string (sender, "after");
  drain_main ();

  g_assert_cmpstr (log->str, ==, "(receiver,before) (receiver,after)");
  g_assert_cmpuint (probe.count, ==, 2);

  close_and_finalize (sender);
  close_and_finalize (receiver);
  g_string_free (log, TRUE);
}

/* ------------------------------------------------------------------ */
/* "programmer errors (NULL self, wrong type of self) ->                */
/* g_return_val_if_fail critical and a safe return."                    */
/* ------------------------------------------------------------------ */

static void
check_bad_self (MpBroadcastChannel *bad)
{
  GError *error = NULL;
  gboolean ok = TRUE;
  const char *name = "unset";
  gboolean closed = FALSE;
  GMainContext *context = g_main_context_default ();
  int priority = 0;

  EXPECT_CRITICAL (name = mp_broadcast_channel_get_name (bad));
  g_assert_null (name);
  EXPECT_CRITICAL (ok = mp_broadcast_channel_post_message (bad, g_variant_new_string ("x"), &error));
  g_assert_false (ok);
  g_assert_no_error (error);
  EXPECT_CRITICAL (mp_broadcast_channel_close (bad));
  EXPECT_CRITICAL (closed = mp_broadcast_channel_is_closed (bad));
  g_assert_true (closed);
  EXPECT_CRITICAL (context = mp_broadcast_channel_get_context (bad));
  g_assert_null (context);
  EXPECT_CRITICAL (priority = mp_broadcast_channel_get_priority (bad));
  g_assert_cmpint (priority, ==, G_PRIORITY_DEFAULT);
  EXPECT_CRITICAL (mp_broadcast_channel_set_priority (bad, G_PRIORITY_HIGH));
}

static void
test_bad_input (void)
{
  MpBroadcastChannel *channel = (gpointer) 0x1;
  GObject *not_a_channel = g_object_new (G_TYPE_OBJECT, NULL);

  EXPECT_CRITICAL (channel = mp_broadcast_channel_new (NULL));
  g_assert_null (channel);

  check_bad_self (NULL);
  check_bad_self ((MpBroadcastChannel *) not_a_channel);

  g_assert_finalize_object (not_a_channel);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/mpport/broadcast/fan-out/others-not-self", test_fan_out_others);
  g_test_add_func ("/mpport/broadcast/fan-out/payload", test_fan_out_payload);
  g_test_add_func ("/mpport/broadcast/order/html-rule", test_order_html_rule);
  g_test_add_func ("/mpport/broadcast/order/recycled-entries", test_order_recycled_entries);
  g_test_add_func ("/mpport/broadcast/order/html-rule-posts-from-threads",
                   test_order_html_rule_threads);
  g_test_add_func ("/mpport/broadcast/close/before-post", test_close_before_post);
  g_test_add_func ("/mpport/broadcast/close/after-post", test_close_after_post);
  g_test_add_func ("/mpport/broadcast/close/in-own-handler", test_close_in_own_handler);
  g_test_add_func ("/mpport/broadcast/close/by-earlier-destination",
                   test_close_by_earlier_destination);
  g_test_add_func ("/mpport/broadcast/lifecycle/created-in-handler",
                   test_lifecycle_created_in_handler);
  g_test_add_func ("/mpport/broadcast/lifecycle/recreate-name", test_lifecycle_recreate_name);
  g_test_add_func ("/mpport/broadcast/lifecycle/close-state", test_lifecycle_close_state);
  g_test_add_func ("/mpport/broadcast/post/closed-fails", test_post_closed_fails);
  g_test_add_func ("/mpport/broadcast/post/no-emission", test_no_emission_in_post);
  g_test_add_func ("/mpport/broadcast/threads/fan-out-4-contexts", test_threads_fan_out);
  g_test_add_func ("/mpport/broadcast/lifetime/context-finalized",
                   test_lifetime_context_finalized);
  g_test_add_func ("/mpport/broadcast/lifetime/open-keeps-alive",
                   test_lifetime_open_keeps_alive);
  g_test_add_func ("/mpport/broadcast/priority/property", test_priority_property);
  g_test_add_func ("/mpport/broadcast/priority/high-before-low", test_priority_high_before_low);
  g_test_add_func ("/mpport/broadcast/priority/change-keeps-queued",
                   test_priority_change_keeps_queued);
  g_test_add_func ("/mpport/broadcast/bad-input", test_bad_input);

  return g_test_run ();
}
