/* mp-test-util.h: helpers shared by the C test suites
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Linked into every tests/test-*.c binary (tests/meson.build). Each helper
 * fails the running test itself (a g_assert_* or g_error inside) rather than
 * returning an error the caller might forget to check, and every wait is
 * bounded, so a bug shows up as a failed assertion, never as a hang.
 */

#pragma once

#include <mpport/mpport.h>

G_BEGIN_DECLS

/* The library logs its programmer-error criticals in this domain. */
#define MP_LOG_DOMAIN "Mp"

/* Upper bound of every WAIT_FOR(); a correct library needs milliseconds.
 * MP_WAIT_TIMEOUT (seconds) raises it where threads run one at a time
 * (the valgrind setup). */
#define WAIT_TIMEOUT_SECONDS 10
#define WAIT_TIMEOUT_USEC (mp_test_wait_timeout ())

/* How long "nothing more happens" is observed. */
#define QUIET_MSEC 50

/* The default of MP_STRESS_TIMEOUT for the stress and faults suites. */
#define STRESS_TIMEOUT_SECONDS 120

/* Iterate @ctx (or just sleep when it is %NULL: the work happens on another
 * thread) until @cond holds; fail the test after WAIT_TIMEOUT_USEC. A macro
 * so that the failure names the caller's line and condition. */
#define WAIT_FOR(ctx, cond) \
  G_STMT_START { \
    gint64 wait_deadline_ = g_get_monotonic_time () + WAIT_TIMEOUT_USEC; \
    while (!(cond)) \
      { \
        if (g_get_monotonic_time () > wait_deadline_) \
          { \
            g_assertion_message (G_LOG_DOMAIN, __FILE__, __LINE__, G_STRFUNC, \
                                 "timed out waiting for: " #cond); \
            break; \
          } \
        if ((ctx) == NULL || !g_main_context_iteration ((ctx), FALSE)) \
          g_usleep (100); \
      } \
  } G_STMT_END

/* Run @stmt expecting exactly one programmer-error critical from the library
 * (a failed g_return_if_fail()/g_return_val_if_fail()). */
#define EXPECT_CRITICAL(stmt) \
  G_STMT_START { \
    g_test_expect_message (MP_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*failed*"); \
    stmt; \
    g_test_assert_expected_messages (); \
  } G_STMT_END

/* Environment (MP_STRESS_SCALE, MP_STRESS_TIMEOUT, MP_LOAD_SCALE) */

guint    mp_test_env_uint  (const char *name,
                            guint       default_value);
double   mp_test_env_scale (const char *name,
                            double      max);
guint    mp_test_scaled    (double      scale,
                            guint       base);
gint64   mp_test_timeout   (guint       default_seconds);
gint64   stress_timeout    (void);
gint64   mp_test_wait_timeout (void);
guint    stress_scaled     (guint       base);
gint64   stress_deadline   (void);

/* Main contexts and object lifetimes */

GMainContext *context_push_new (void);
void          context_pop_free (GMainContext *ctx);

void     spin_context                (GMainContext *ctx,
                                      guint         msec);
gboolean weak_ref_is_empty           (GWeakRef     *weak);
void     assert_finalized_eventually (GMainContext *ctx,
                                      gpointer      object);

/* Posting and receiving int32 messages */

void     post_int_with_ports (MpMessagePort        *port,
                              gint32                value,
                              MpMessagePort *const *transfer,
                              guint                 n_transfer);
void     post_int            (MpMessagePort        *port,
                              gint32                value);
void     post_or_die         (MpMessagePort        *port,
                              GVariant             *data,
                              MpMessagePort        *transfer);
gint32   message_get_int     (MpMessage            *message);
gint32   receive_int         (MpMessagePort        *port);
void     assert_receive_null (MpMessagePort        *port);

/* Cross-thread synchronization with bounded waits */

/* A count-up latch: latch_add() counts one, latch_wait() blocks until the
 * count reaches a target and fails the test (naming @what) at the timeout. */
typedef struct
{
  GMutex mutex;
  GCond cond;
  guint count;   /* guarded by mutex */
} Latch;

void     latch_init            (Latch      *latch);
void     latch_clear           (Latch      *latch);
void     latch_add             (Latch      *latch);
gboolean latch_reached         (Latch      *latch,
                                guint       target);
void     latch_wait            (Latch      *latch,
                                guint       target,
                                gint64      timeout,
                                const char *what);
void     latch_arrive_and_wait (Latch      *latch,
                                guint       n,
                                gint64      timeout,
                                const char *what);

/* A start line: threads block in gate_wait() until gate_open(), so that they
 * all go at the same moment. A latch with a target of one; gate_wait() fails
 * the test after stress_timeout (). */
typedef Latch Gate;

void     gate_init  (Gate *gate);
void     gate_clear (Gate *gate);
void     gate_open  (Gate *gate);
void     gate_wait  (Gate *gate);

/* A backstop for what no bounded wait can cover (a thread spinning inside
 * the library, a join that never returns): if the watched phase is still
 * running after @timeout microseconds, the whole test fails instead of
 * hanging. */
typedef struct _Watchdog Watchdog;

Watchdog *watchdog_new  (const char *what,
                         gint64      timeout);
void      watchdog_free (Watchdog   *dog);

G_END_DECLS
