/* mp-test-util.c: helpers shared by the C test suites
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "mp-test-util.h"

/* ------------------------------------------------------------------ */
/* Environment                                                          */
/* ------------------------------------------------------------------ */

/* The value of the variable @name, a whole number from 1 to G_MAXUINT16, or
 * @default_value when it is unset or empty; anything else aborts the run. */
guint
mp_test_env_uint (const char *name,
                  guint       default_value)
{
  const char *str = g_getenv (name);
  guint64 value = 0;
  GError *error = NULL;

  if (str == NULL || *str == '\0')
    return default_value;

  if (!g_ascii_string_to_unsigned (str, 10, 1, G_MAXUINT16, &value, &error))
    g_error ("%s=%s: %s", name, str, error->message);

  return (guint) value;
}

/* The factor in the variable @name, a positive number up to @max, or 1 when
 * it is unset or empty; anything else aborts the run. */
double
mp_test_env_scale (const char *name,
                   double      max)
{
  const char *str = g_getenv (name);
  char *end = NULL;
  double scale;

  if (str == NULL || *str == '\0')
    return 1.0;

  scale = g_ascii_strtod (str, &end);
  if (*end != '\0' || !(scale > 0.0) || scale > max)
    g_error ("%s=%s: expected a positive number", name, str);

  return scale;
}

/* @base multiplied by @scale, rounded, at least 1. */
guint
mp_test_scaled (double scale,
                guint  base)
{
  return (guint) MAX (1.0, base * scale + 0.5);
}

/* How long (µs) a wait of the stress, faults and load suites may take before
 * it fails: MP_STRESS_TIMEOUT seconds, or @default_seconds. */
gint64
mp_test_timeout (guint default_seconds)
{
  return (gint64) mp_test_env_uint ("MP_STRESS_TIMEOUT", default_seconds) * G_TIME_SPAN_SECOND;
}

/* mp_test_timeout (STRESS_TIMEOUT_SECONDS): the bound of every wait of the
 * stress and faults suites. */
gint64
stress_timeout (void)
{
  return mp_test_timeout (STRESS_TIMEOUT_SECONDS);
}

/* The bound (µs) of WAIT_FOR(): MP_WAIT_TIMEOUT seconds, or
 * WAIT_TIMEOUT_SECONDS. */
gint64
mp_test_wait_timeout (void)
{
  return (gint64) mp_test_env_uint ("MP_WAIT_TIMEOUT", WAIT_TIMEOUT_SECONDS) * G_TIME_SPAN_SECOND;
}

/* @base iterations scaled by MP_STRESS_SCALE, at least 1. */
guint
stress_scaled (guint base)
{
  return mp_test_scaled (mp_test_env_scale ("MP_STRESS_SCALE", 10000.0), base);
}

/* Monotonic time at which a wait started now must give up. */
gint64
stress_deadline (void)
{
  return g_get_monotonic_time () + stress_timeout ();
}

/* ------------------------------------------------------------------ */
/* Main contexts and object lifetimes                                   */
/* ------------------------------------------------------------------ */

/* A new GMainContext, pushed as the thread-default one (a test fixture's). */
GMainContext *
context_push_new (void)
{
  GMainContext *ctx = g_main_context_new ();

  g_main_context_push_thread_default (ctx);
  return ctx;
}

/* Lets what is ready on @ctx run for a few milliseconds, pops it (it must be
 * the thread-default context) and drops the reference context_push_new()
 * returned. */
void
context_pop_free (GMainContext *ctx)
{
  spin_context (ctx, 5);
  g_main_context_pop_thread_default (ctx);
  g_main_context_unref (ctx);
}

/* Iterate @ctx (or just sleep when it is %NULL) for @msec, so that anything
 * that would (wrongly) happen gets the chance to. */
void
spin_context (GMainContext *ctx,
              guint         msec)
{
  gint64 end = g_get_monotonic_time () + (gint64) msec * 1000;

  while (g_get_monotonic_time () < end)
    {
      if (ctx == NULL || !g_main_context_iteration (ctx, FALSE))
        g_usleep (200);
    }
}

gboolean
weak_ref_is_empty (GWeakRef *weak)
{
  GObject *object = g_weak_ref_get (weak);

  if (object == NULL)
    return TRUE;
  g_object_unref (object);
  return FALSE;
}

/* Drop the caller's reference on @object and wait (iterating @ctx) until it
 * is finalized: for ports whose GSource may still hold a reference until
 * its pending "close" has been dispatched. */
void
assert_finalized_eventually (GMainContext *ctx,
                             gpointer      object)
{
  GWeakRef weak;

  g_assert_true (G_IS_OBJECT (object));
  g_weak_ref_init (&weak, object);
  g_object_unref (object);
  WAIT_FOR (ctx, weak_ref_is_empty (&weak));
  g_weak_ref_clear (&weak);
}

/* ------------------------------------------------------------------ */
/* Posting and receiving                                                */
/* ------------------------------------------------------------------ */

void
post_int_with_ports (MpMessagePort        *port,
                     gint32                value,
                     MpMessagePort *const *transfer,
                     guint                 n_transfer)
{
  GError *error = NULL;
  gboolean ok;

  ok = mp_message_port_post_message (port, g_variant_new_int32 (value),
                                     transfer, n_transfer, &error);
  g_assert_no_error (error);
  g_assert_true (ok);
}

void
post_int (MpMessagePort *port,
          gint32         value)
{
  post_int_with_ports (port, value, NULL, 0);
}

/* Posts @data (floating references are sunk) with @transfer, if not %NULL,
 * as its one transferred port; the post must succeed. */
void
post_or_die (MpMessagePort *port,
             GVariant      *data,
             MpMessagePort *transfer)
{
  GError *error = NULL;
  gboolean ok;

  ok = mp_message_port_post_message (port, data,
                                     transfer != NULL ? &transfer : NULL,
                                     transfer != NULL ? 1 : 0,
                                     &error);
  g_assert_no_error (error);
  g_assert_true (ok);
}

gint32
message_get_int (MpMessage *message)
{
  GVariant *data;

  g_assert_nonnull (message);
  data = mp_message_get_data (message);
  g_assert_nonnull (data);
  g_assert_true (g_variant_is_of_type (data, G_VARIANT_TYPE_INT32));
  return g_variant_get_int32 (data);
}

/* Synchronously take the next message, which must be an int32 without ports. */
gint32
receive_int (MpMessagePort *port)
{
  g_autoptr(MpMessage) message = mp_message_port_receive (port);
  GPtrArray *ports;

  g_assert_nonnull (message);
  ports = mp_message_get_ports (message);
  g_assert_nonnull (ports);
  g_assert_cmpuint (ports->len, ==, 0);
  return message_get_int (message);
}

void
assert_receive_null (MpMessagePort *port)
{
  MpMessage *message = mp_message_port_receive (port);

  g_assert_null (message);
}

/* ------------------------------------------------------------------ */
/* Latch, gate, watchdog                                                */
/* ------------------------------------------------------------------ */

void
latch_init (Latch *latch)
{
  g_mutex_init (&latch->mutex);
  g_cond_init (&latch->cond);
  latch->count = 0;
}

void
latch_clear (Latch *latch)
{
  g_mutex_clear (&latch->mutex);
  g_cond_clear (&latch->cond);
}

void
latch_add (Latch *latch)
{
  g_mutex_lock (&latch->mutex);
  latch->count++;
  g_cond_broadcast (&latch->cond);
  g_mutex_unlock (&latch->mutex);
}

gboolean
latch_reached (Latch *latch,
               guint  target)
{
  gboolean reached;

  g_mutex_lock (&latch->mutex);
  reached = latch->count >= target;
  g_mutex_unlock (&latch->mutex);

  return reached;
}

void
latch_wait (Latch      *latch,
            guint       target,
            gint64      timeout,
            const char *what)
{
  gint64 deadline = g_get_monotonic_time () + timeout;

  g_mutex_lock (&latch->mutex);
  while (latch->count < target)
    {
      if (!g_cond_wait_until (&latch->cond, &latch->mutex, deadline))
        g_error ("%s: timed out at %u of %u", what, latch->count, target);
    }
  g_mutex_unlock (&latch->mutex);
}

/* Counts one arrival and waits until @n have arrived (a barrier). */
void
latch_arrive_and_wait (Latch      *latch,
                       guint       n,
                       gint64      timeout,
                       const char *what)
{
  latch_add (latch);
  latch_wait (latch, n, timeout, what);
}

void
gate_init (Gate *gate)
{
  latch_init (gate);
}

void
gate_clear (Gate *gate)
{
  latch_clear (gate);
}

void
gate_open (Gate *gate)
{
  latch_add (gate);
}

void
gate_wait (Gate *gate)
{
  latch_wait (gate, 1, stress_timeout (), "a gate stayed shut past the deadline");
}

struct _Watchdog
{
  GMutex lock;
  GCond cond;
  gboolean done;      /* guarded by lock */
  gint64 timeout;     /* immutable */
  gint64 deadline;    /* immutable */
  char *what;         /* immutable */
  GThread *thread;
};

static gpointer
watchdog_thread_func (gpointer data)
{
  Watchdog *dog = data;

  g_mutex_lock (&dog->lock);
  while (!dog->done)
    {
      if (!g_cond_wait_until (&dog->cond, &dog->lock, dog->deadline) && !dog->done)
        g_error ("%s: still running after %" G_GINT64_FORMAT " s (MP_STRESS_TIMEOUT): "
                 "a hang, a livelock or a corrupted structure",
                 dog->what, dog->timeout / G_TIME_SPAN_SECOND);
    }
  g_mutex_unlock (&dog->lock);

  return NULL;
}

Watchdog *
watchdog_new (const char *what,
              gint64      timeout)
{
  Watchdog *dog = g_new0 (Watchdog, 1);

  g_mutex_init (&dog->lock);
  g_cond_init (&dog->cond);
  dog->timeout = timeout;
  dog->deadline = g_get_monotonic_time () + timeout;
  dog->what = g_strdup (what);
  dog->thread = g_thread_new ("watchdog", watchdog_thread_func, dog);

  return dog;
}

void
watchdog_free (Watchdog *dog)
{
  g_mutex_lock (&dog->lock);
  dog->done = TRUE;
  g_cond_signal (&dog->cond);
  g_mutex_unlock (&dog->lock);
  g_thread_join (dog->thread);

  g_mutex_clear (&dog->lock);
  g_cond_clear (&dog->cond);
  g_free (dog->what);
  g_free (dog);
}
