/* test-transfer-cycle.c: a transfer that would put a message inside its own cargo
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A transferred port travels inside its message; only the owner of the inbox the message
 * is queued at can take it out. If port A's peer travels in a message queued at B while B
 * is posted into A's channel, each port waits inside the other's queue: nothing can ever
 * receive either, and the pipes, ports and messages leak (the fuzzer found this). The
 * library refuses such a post with MP_ERROR_DATA_CLONE and changes nothing. These cases
 * check the refusal (directly, along chains, against a post racing on another thread),
 * that every way a carrier leaves its inbox lifts it, and that nothing is lost or leaked.
 */

#include <string.h>

#include <mpport/mpport.h>

#include "mp-test-util.h"

#define CHAIN_LENGTH 1000
#define RACE_ROUNDS  500

typedef struct
{
  MpMessageChannel *channel;
  MpMessagePort *port1;   /* owned */
  MpMessagePort *port2;   /* owned; NULL once transferred (then the received copy) */
} Chan;

static void
chan_init (Chan *chan)
{
  chan->channel = mp_message_channel_new ();
  chan->port1 = g_object_ref (mp_message_channel_get_port1 (chan->channel));
  chan->port2 = g_object_ref (mp_message_channel_get_port2 (chan->channel));
  g_clear_object (&chan->channel);
}

/* Closes both ports and checks they are finalized (with everything they held). */
static void
chan_finish (Chan         *chan,
             GMainContext *ctx)
{
  if (chan->port1 != NULL)
    {
      mp_message_port_close (chan->port1);
      assert_finalized_eventually (ctx, g_steal_pointer (&chan->port1));
    }
  if (chan->port2 != NULL)
    {
      mp_message_port_close (chan->port2);
      assert_finalized_eventually (ctx, g_steal_pointer (&chan->port2));
    }
}

/* Posts @value on @port with the one port @transfer; returns the error (or NULL). */
static GError *
try_post (MpMessagePort *port,
          gint32         value,
          MpMessagePort *transfer)
{
  GError *error = NULL;
  gboolean ok;

  ok = mp_message_port_post_message (port, g_variant_new_int32 (value), &transfer, 1, &error);
  g_assert_true (ok == (error == NULL));

  return error;
}

static void
assert_cycle_refused (MpMessagePort *port,
                      gint32         value,
                      MpMessagePort *transfer)
{
  g_autoptr(GError) error = try_post (port, value, transfer);

  g_assert_error (error, MP_ERROR, MP_ERROR_DATA_CLONE);
  g_assert_nonnull (strstr (error->message, "could never be received"));
  /* Nothing changed: the listed port is still its side's owner. */
  g_assert_false (mp_message_port_is_closed (transfer));
}

/* Takes the next message of @port: it must be @value with one port, which is returned
 * (a new reference). */
static MpMessagePort *
receive_carrier (MpMessagePort *port,
                 gint32         value)
{
  g_autoptr(MpMessage) message = mp_message_port_receive (port);
  GPtrArray *ports;

  g_assert_nonnull (message);
  g_assert_cmpint (message_get_int (message), ==, value);
  ports = mp_message_get_ports (message);
  g_assert_cmpuint (ports->len, ==, 1);

  return g_object_ref (g_ptr_array_index (ports, 0));
}

/* a1 posts b2 (b2 now travels in a's queue); then b1 posting a2 would put a2 into b2's
 * queue, inside the message that is inside a2's queue. */
static void
test_two_channels (void)
{
  Chan a, b;
  MpMessagePort *b2;

  chan_init (&a);
  chan_init (&b);

  post_int_with_ports (a.port1, 1, &b.port2, 1);
  assert_cycle_refused (b.port1, 2, a.port2);

  /* Both queues are intact and in order: b's queue travels with b2. */
  post_int (b.port1, 3);
  post_int (a.port1, 4);
  b2 = receive_carrier (a.port2, 1);
  g_assert_cmpint (receive_int (a.port2), ==, 4);
  assert_receive_null (a.port2);
  g_assert_cmpint (receive_int (b2), ==, 3);
  assert_receive_null (b2);

  /* b2 was taken out of a's queue: the same transfer is no cycle any more. */
  post_int_with_ports (b.port1, 5, &a.port2, 1);
  g_assert_true (mp_message_port_is_closed (a.port2));
  g_clear_object (&a.port2);
  a.port2 = receive_carrier (b2, 5);

  g_clear_object (&b.port2);   /* the detached original */
  b.port2 = b2;
  chan_finish (&a, NULL);
  chan_finish (&b, NULL);
}

/* Makes a <- b2 <- c2 (b2 travels in a's queue, c2 in b's, inside b2) and checks that c1
 * posting a2, which would close the loop through the three queues, is refused. */
static void
chain_three (Chan *a,
             Chan *b,
             Chan *c)
{
  chan_init (a);
  chan_init (b);
  chan_init (c);

  post_int_with_ports (a->port1, 1, &b->port2, 1);
  post_int_with_ports (b->port1, 2, &c->port2, 1);
  assert_cycle_refused (c->port1, 3, a->port2);
}

/* The chain of three refused; a port travelling in an unrelated queue is no cycle,
 * and a refused list is refused as a whole. */
static void
test_chain_of_three (void)
{
  Chan a, b, c, d;
  MpMessagePort *list[2];
  g_autoptr(GError) error = NULL;
  MpMessagePort *b2, *c2;

  chain_three (&a, &b, &c);
  chan_init (&d);

  /* Not a cycle: d's queue is on nobody's path. */
  post_int_with_ports (d.port1, 4, &a.port2, 1);
  g_clear_object (&a.port2);
  a.port2 = receive_carrier (d.port2, 4);

  /* A list with a harmless port and the cycle-making one: nothing moves. */
  list[0] = d.port2;
  list[1] = a.port2;
  g_assert_false (mp_message_port_post_message (c.port1, g_variant_new_int32 (5), list, 2,
                                                &error));
  g_assert_error (error, MP_ERROR, MP_ERROR_DATA_CLONE);
  g_assert_false (mp_message_port_is_closed (d.port2));
  g_assert_false (mp_message_port_is_closed (a.port2));

  /* Unwind: every message is where it was, exactly once. */
  b2 = receive_carrier (a.port2, 1);
  assert_receive_null (a.port2);
  c2 = receive_carrier (b2, 2);
  assert_receive_null (b2);
  assert_receive_null (c2);
  assert_receive_null (d.port2);

  g_clear_object (&b.port2);
  b.port2 = b2;
  g_clear_object (&c.port2);
  c.port2 = c2;
  chan_finish (&a, NULL);
  chan_finish (&b, NULL);
  chan_finish (&c, NULL);
  chan_finish (&d, NULL);
}

/* CHAIN_LENGTH queues nested in each other: closing the loop from the innermost is
 * refused, and closing the outermost drops all of it (each carried port closes). */
static void
test_long_chain (void)
{
  Chan chans[CHAIN_LENGTH];
  GWeakRef last_peer;

  for (guint i = 0; i < CHAIN_LENGTH; i++)
    chan_init (&chans[i]);

  /* chans[i + 1].port2 travels in chans[i]'s queue. */
  for (guint i = 0; i + 1 < CHAIN_LENGTH; i++)
    {
      post_int_with_ports (chans[i].port1, (gint32) i, &chans[i + 1].port2, 1);
      g_clear_object (&chans[i + 1].port2);
    }

  assert_cycle_refused (chans[CHAIN_LENGTH - 1].port1, -1, chans[0].port2);
  assert_cycle_refused (chans[CHAIN_LENGTH / 2].port1, -2, chans[0].port2);

  /* Closing the outer port drops the nested messages; the innermost peer gets "close". */
  g_weak_ref_init (&last_peer, chans[CHAIN_LENGTH - 1].port1);
  mp_message_port_close (chans[0].port2);
  for (guint i = 0; i < CHAIN_LENGTH; i++)
    {
      g_assert_null (mp_message_port_receive (chans[i].port1));
      g_assert_true (mp_message_port_is_closed (chans[i].port1));
      chan_finish (&chans[i], NULL);
    }
  g_assert_true (weak_ref_is_empty (&last_peer));
  g_weak_ref_clear (&last_peer);
}

/* How a carrier leaves the inbox it was queued at. */
typedef enum {
  LEAVE_RECEIVE,         /* mp_message_port_receive() */
  LEAVE_DISPATCH,        /* the "message" signal of the started port */
  LEAVE_RECEIVE_ASYNC,   /* mp_message_port_receive_async(), message already queued */
  LEAVE_WAITER,          /* handed straight to a pending receive_async(): never queued */
} LeaveHow;

static void
keep_first_port (MpMessagePort *port,
                 MpMessage     *message,
                 gpointer       user_data)
{
  MpMessagePort **out = user_data;
  GPtrArray *ports = mp_message_get_ports (message);

  g_assert_null (*out);
  g_assert_cmpint (message_get_int (message), ==, 1);
  g_assert_cmpuint (ports->len, ==, 1);
  *out = g_object_ref (g_ptr_array_index (ports, 0));
}

static void
receive_async_done (GObject      *source,
                    GAsyncResult *result,
                    gpointer      user_data)
{
  MpMessage **out = user_data;
  GError *error = NULL;

  *out = mp_message_port_receive_finish (MP_MESSAGE_PORT (source), result, &error);
  g_assert_no_error (error);
  g_assert_nonnull (*out);
}

/* Once b2's carrier left a's inbox, by any way, posting a2 into b's channel is fine. */
static void
test_leave (gconstpointer data)
{
  LeaveHow how = GPOINTER_TO_INT (data);
  GMainContext *ctx = context_push_new ();
  g_autoptr(MpMessage) async_message = NULL;
  MpMessagePort *b2 = NULL;
  Chan a, b;
  gulong handler = 0;

  chan_init (&a);
  chan_init (&b);

  if (how == LEAVE_WAITER)
    mp_message_port_receive_async (a.port2, NULL, receive_async_done, &async_message);

  post_int_with_ports (a.port1, 1, &b.port2, 1);

  switch (how)
    {
    case LEAVE_RECEIVE:
      b2 = receive_carrier (a.port2, 1);
      break;

    case LEAVE_DISPATCH:
      handler = g_signal_connect (a.port2, "message", G_CALLBACK (keep_first_port), &b2);
      mp_message_port_start (a.port2);
      WAIT_FOR (ctx, b2 != NULL);
      g_signal_handler_disconnect (a.port2, handler);
      break;

    case LEAVE_RECEIVE_ASYNC:
      mp_message_port_receive_async (a.port2, NULL, receive_async_done, &async_message);
      break;

    case LEAVE_WAITER:
      break;
    }

  /* For the async cases the carrier sits in the completion, not yet delivered: it is out of
   * the inbox, so still no cycle; a2 leaves with its pending nothing. */
  post_int_with_ports (b.port1, 2, &a.port2, 1);

  if (how == LEAVE_RECEIVE_ASYNC || how == LEAVE_WAITER)
    {
      GPtrArray *ports;

      WAIT_FOR (ctx, async_message != NULL);
      g_assert_cmpint (message_get_int (async_message), ==, 1);
      ports = mp_message_get_ports (async_message);
      g_assert_cmpuint (ports->len, ==, 1);
      b2 = g_object_ref (g_ptr_array_index (ports, 0));
    }

  g_clear_object (&a.port2);
  a.port2 = receive_carrier (b2, 2);
  assert_receive_null (b2);
  g_clear_object (&b.port2);
  b.port2 = b2;

  /* Now the other way round is the cycle. */
  post_int_with_ports (a.port1, 3, &b.port2, 1);
  assert_cycle_refused (b.port1, 4, a.port2);
  b2 = receive_carrier (a.port2, 3);
  g_clear_object (&b.port2);
  b.port2 = b2;

  chan_finish (&a, ctx);
  chan_finish (&b, ctx);
  context_pop_free (ctx);
}

/* Closing the port whose queue holds carriers drops them: the carried ports close, their
 * peers get "close" after what was posted before, and everything is freed. */
static void
test_close_drops_carriers (void)
{
  Chan a, b, c;

  chain_three (&a, &b, &c);

  mp_message_port_close (a.port2);
  g_assert_null (mp_message_port_receive (b.port1));
  g_assert_true (mp_message_port_is_closed (b.port1));
  g_assert_null (mp_message_port_receive (c.port1));
  g_assert_true (mp_message_port_is_closed (c.port1));

  chan_finish (&a, NULL);
  chan_finish (&b, NULL);
  chan_finish (&c, NULL);
}

/* Posts racing from N threads that each add one edge of an N-cycle: whatever the
 * interleaving, exactly the last one to commit is refused. */
typedef struct
{
  Gate *gate;
  MpMessagePort *from;
  MpMessagePort *transfer;
  GError *error;   /* out */
} Racer;

static gpointer
racer_thread (gpointer data)
{
  Racer *racer = data;

  gate_wait (racer->gate);
  racer->error = try_post (racer->from, 7, racer->transfer);

  return NULL;
}

static void
race_cycle (guint n)
{
  Chan chans[3];
  Racer racers[3];
  GThread *threads[3];
  Gate gate;
  guint refused = 0;

  g_assert_cmpuint (n, <=, G_N_ELEMENTS (chans));

  for (guint i = 0; i < n; i++)
    chan_init (&chans[i]);

  /* Racer i posts chans[i + 1].port2 into chans[i]'s queue. */
  gate_init (&gate);
  for (guint i = 0; i < n; i++)
    {
      racers[i] = (Racer) { &gate, chans[i].port1, chans[(i + 1) % n].port2, NULL };
      threads[i] = g_thread_new ("racer", racer_thread, &racers[i]);
    }
  gate_open (&gate);
  for (guint i = 0; i < n; i++)
    g_thread_join (threads[i]);
  gate_clear (&gate);

  for (guint i = 0; i < n; i++)
    if (racers[i].error != NULL)
      {
        g_assert_error (racers[i].error, MP_ERROR, MP_ERROR_DATA_CLONE);
        g_clear_error (&racers[i].error);
        refused++;
      }
  g_assert_cmpuint (refused, ==, 1);

  /* Unwind from the queue whose port is still at hand: the refused racer's transfer. */
  for (guint i = 0; i < n; i++)
    if (!mp_message_port_is_closed (chans[i].port2))
      {
        MpMessagePort *at = g_object_ref (chans[i].port2);

        for (guint hop = 1; hop < n; hop++)
          {
            Chan *next = &chans[(i + hop) % n];
            MpMessagePort *carried = receive_carrier (at, 7);

            assert_receive_null (at);
            g_object_unref (at);
            g_clear_object (&next->port2);
            next->port2 = g_object_ref (carried);
            at = carried;
          }
        assert_receive_null (at);
        g_object_unref (at);
        break;
      }

  for (guint i = 0; i < n; i++)
    chan_finish (&chans[i], NULL);
}

static void
test_race (gconstpointer data)
{
  guint n = GPOINTER_TO_UINT (data);

  for (guint round = 0; round < RACE_ROUNDS; round++)
    race_cycle (n);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/mpport/transfer-cycle/two-channels", test_two_channels);
  g_test_add_func ("/mpport/transfer-cycle/chain-of-three", test_chain_of_three);
  g_test_add_func ("/mpport/transfer-cycle/long-chain", test_long_chain);
  g_test_add_data_func ("/mpport/transfer-cycle/lifted-by/receive",
                        GINT_TO_POINTER (LEAVE_RECEIVE), test_leave);
  g_test_add_data_func ("/mpport/transfer-cycle/lifted-by/dispatch",
                        GINT_TO_POINTER (LEAVE_DISPATCH), test_leave);
  g_test_add_data_func ("/mpport/transfer-cycle/lifted-by/receive-async",
                        GINT_TO_POINTER (LEAVE_RECEIVE_ASYNC), test_leave);
  g_test_add_data_func ("/mpport/transfer-cycle/lifted-by/waiter-handoff",
                        GINT_TO_POINTER (LEAVE_WAITER), test_leave);
  g_test_add_func ("/mpport/transfer-cycle/close-drops-carriers", test_close_drops_carriers);
  g_test_add_data_func ("/mpport/transfer-cycle/race/two-threads", GUINT_TO_POINTER (2),
                        test_race);
  g_test_add_data_func ("/mpport/transfer-cycle/race/three-threads", GUINT_TO_POINTER (3),
                        test_race);

  return g_test_run ();
}
