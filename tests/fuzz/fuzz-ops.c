/* fuzz-ops.c: libFuzzer target running random operations against a shadow model
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Built and run by scripts/fuzz (clang -fsanitize=fuzzer,address,undefined). The input is
 * a sequence of operations over a few message channels, broadcast channels and two main
 * contexts, all on the fuzzer's thread so that a run is deterministic:
 *
 *   create a channel, post (with transfer lists, valid and invalid: NULL, not a port, the
 *   poster itself, its peer, duplicates, closed or transferred ports), a burst of posts
 *   past the dispatch budget, start on either context, receive, close, drop a reference,
 *   set a priority, iterate a context, drain both, finalize a context (and make a new one),
 *   create/post/close/drop broadcast channels, and "arm" one operation that then runs
 *   inside the next "message" handler (close, post, transfer or receive from a handler);
 *   flow control (issue 17): post_message_async() with and without transfer lists, with a
 *   cancellable (sometimes cancelled before the call), on either context, one by one or in
 *   bursts; cancel a post; set a port's high-water mark (0 to 4); get_n_queued().
 *
 * A shadow model predicts every result from the documented contract (DESIGN.md,
 * contract-notes.md): what each call returns, which error (domain and code), which message
 * each "message" signal carries and on which object and context, when "close" comes, and
 * which objects are finalized. Every message posted is tracked by id (its payload) to one
 * place: queued at a side, delivered to a port object (signal) or taken by receive(), or
 * dropped by a documented close rule (the receiving side closed, or it was queued at a side
 * that closed, or it carried ports into a drop). The checks, after every step:
 *
 *   - each "message" is the oldest message queued at that side (FIFO, exactly once), comes
 *     on the object that owns the side, on the context it was started on, from a dispatch
 *     (never inside an API call), never on a closed or transferred port;
 *   - "close" comes once per started side that closed, after "notify::closed", after the
 *     messages posted before the peer closed, and nothing follows it;
 *   - post results and errors are exactly the predicted ones (MP_ERROR_INVALID_STATE /
 *     MP_ERROR_DATA_CLONE only), and a failed transfer changes nothing;
 *   - is_closed(), get_context(), get_priority() of every live object are as predicted;
 *   - once both contexts are drained, no started open side holds a message (no lost
 *     wake-up) and every broadcast delivery due has happened;
 *   - flow control: an async post waits exactly when its destination holds at least its
 *     mark or other posts wait there, and a sync post made while posts wait goes behind
 *     them, so each side's order is the order of the posts (the FIFO check above covers
 *     what waited); taking a message out (dispatch, receive(), receive_async()) or raising
 *     the mark moves the oldest waiting posts in, as far as the mark allows; get_n_queued()
 *     and get_high_water_mark() are as predicted, inside handlers too; every async post's
 *     callback runs exactly once, on the context that was thread-default at the call,
 *     never inside an API call, with the predicted result (TRUE, G_IO_ERROR_CANCELLED,
 *     MP_ERROR_CLOSED when the destination was closed or closed while it waited,
 *     MP_ERROR_INVALID_STATE when its own port closed, the sync post's errors); after a
 *     drain a post still waits only at a side nobody takes from (no waiter left behind); a
 *     cancelled waiting post gives its transfer list back, open and unstarted;
 *   - nothing outlives what holds it: a dropped port is finalized unless its source holds
 *     it (started and open, or transferred and not yet retired by its context), a closed
 *     broadcast channel unless a queued delivery holds it; after a drain, nothing at all;
 *   - at the end everything is closed and drained and every object is finalized.
 *
 * A failed check aborts with a message: libFuzzer reports it as a crash. A post that would
 * make a transfer cycle (see makes_cycle()) must fail with MP_ERROR_DATA_CLONE.
 */

#include <mpport/mpport.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OPS        256
#define MAX_POOL        16
#define MAX_BC_POOL      8
#define N_NAMES          2
#define N_CTX            2
#define MAX_TRANSFER     3
#define MAX_DRAIN   100000
#define MARKER   G_MAXUINT    /* the peer's close marker in a shadow queue */
#define BC_ID_BASE 0x80000000u

static void fail (const char *format, ...) G_GNUC_PRINTF (1, 2) G_GNUC_NORETURN;

#define CHECK(cond, ...) \
  G_STMT_START { if (G_UNLIKELY (!(cond))) fail (__VA_ARGS__); } G_STMT_END

static void
fail (const char *format,
      ...)
{
  va_list args;

  va_start (args, format);
  fprintf (stderr, "fuzz-ops: invariant violated: ");
  vfprintf (stderr, format, args);
  fprintf (stderr, "\n");
  va_end (args);
  abort ();
}

/* ------------------------------------------------------------------------------------ */
/* The shadow model                                                                      */

typedef enum {
  M_QUEUED,      /* in sides[side].queue */
  M_DELIVERED,   /* emitted as "message" on PortRec holder */
  M_RECEIVED,    /* returned by receive() on PortRec holder */
  M_DROPPED,     /* dropped by a close rule */
  M_ASYNC,       /* handed to a pending receive_async() of PortRec holder, not yet completed */
  M_POSTING,     /* waits for room in sides[side].posting (flow control) */
  M_WITHDRAWN,   /* its async post was cancelled while it waited */
} MsgFate;

typedef struct
{
  guint32 id;
  int side;            /* destination side */
  MsgFate fate;
  int holder;          /* PortRec that got it */
  int post;            /* its Post (an async post), or -1 */
  guint n_carried;
  int carried[MAX_TRANSFER];   /* the sides transferred with it, in transfer-list order */
} Msg;

#define OWNER_IN_FLIGHT  (-1)   /* the owner is a new object inside a queued message */
#define OWNER_DEAD       (-2)   /* that object was dropped undelivered */

typedef struct
{
  int peer;
  gboolean closed;       /* MP_SIDE_CLOSED */
  gboolean closed_here;  /* MP_SIDE_CLOSED_HERE: closed by its owner, not by its peer */
  gboolean peer_closed;  /* the peer's marker was queued */
  gboolean attached;     /* MP_SIDE_ATTACHED: the owner's source is attached */
  gboolean close_owed;   /* MP_SIDE_CLOSE_PENDING: "close" still to be emitted */
  int ctx;               /* while attached */
  int owner;             /* PortRec index, or OWNER_* */
  int carrier;           /* while OWNER_IN_FLIGHT after a transfer: the message index */
  GQueue queue;          /* message index + 1, or MARKER */
  GQueue waiters;        /* Waiter: pending receive_async() calls, oldest first */
  guint mark;            /* high-water mark, 0 for none: travels with the side */
  GQueue posting;        /* message index + 1: posts waiting for room, oldest first */
} Side;

typedef struct
{
  MpMessagePort *obj;    /* no reference of its own; valid until finalized */
  int index;
  int side;
  gboolean detached;
  gboolean started;      /* this object's start() attached it */
  int ctx;               /* its start() context ... */
  guint ctx_gen;         /* ... in that generation */
  gboolean ctx_cleared;  /* its context was finalized while it held its source */
  gboolean retiring;     /* transferred while attached: its old source retires itself
                          * on its context's next dispatch of it, then releases the object */
  int priority;
  int n_async;           /* receive_async() and post_message_async() calls on it not
                          * completed yet (their tasks hold it) */
  int n_held;            /* async posts whose transfer list holds it, not completed yet */
  gboolean in_pool;      /* the fuzzer holds a reference */
  gboolean finalized;
  gboolean notified_closed;
  int close_signals;
} PortRec;

typedef struct
{
  MpBroadcastChannel *obj;   /* no reference of its own; valid until finalized */
  int index;
  int name;
  int ctx;
  gboolean closed;
  gboolean in_pool;
  gboolean finalized;
} BcRec;

typedef struct
{
  guint32 id;
  int dest;   /* BcRec */
} BcPair;

typedef enum {
  W_QUEUED,   /* waiting in its side */
  W_SERVED,   /* handed message msg: completes with it */
  W_FAILED,   /* completes with domain/code */
  W_DONE,     /* its callback ran */
} WaiterState;

/* One mp_message_port_receive_async() call. */
typedef struct
{
  PortRec *port;
  int ctx;                 /* the callback's context */
  GCancellable *cancellable;
  WaiterState state;
  int msg;
  GQuark domain;
  int code;
} Waiter;

typedef enum {
  P_WAITING,  /* its message waits in its destination's posting queue */
  P_OK,       /* queued (or handed to a pending receive): completes with TRUE */
  P_FAILED,   /* completes with domain/code */
  P_DONE,     /* its callback ran */
} PostState;

/* One mp_message_port_post_message_async() call. */
typedef struct
{
  PortRec *port;           /* the poster */
  int ctx;                 /* the callback's context */
  GCancellable *cancellable;   /* or NULL */
  PostState state;
  int msg;                 /* Msg index, or -1 if nothing was posted */
  GQuark domain;
  int code;
  guint n_held;
  PortRec *held[MAX_TRANSFER + 1];   /* the transfer list's objects (the post holds them) */
  PortRec *listed[MAX_TRANSFER];     /* the ports of a posted message, in its order */
} Post;

/* What the input does when it runs out of bytes: zeros. */
typedef struct
{
  const guint8 *data;
  size_t size;
  size_t pos;
} Reader;

static guint8
next_byte (Reader *r)
{
  return r->pos < r->size ? r->data[r->pos++] : 0;
}

typedef struct
{
  GArray *sides;       /* Side */
  GPtrArray *ports;    /* PortRec, all ever made this run */
  GArray *msgs;        /* Msg */
  GPtrArray *pool;     /* PortRec in the pool (the fuzzer's references), in order */
  GPtrArray *bcs;      /* BcRec, all */
  GPtrArray *bc_pool;  /* BcRec in the pool */
  GPtrArray *waiters;  /* Waiter, all */
  GPtrArray *posts;    /* Post, all */
  GQueue bq[N_CTX][N_NAMES];   /* BcPair: deliveries due, per destination context and name */
  guint32 next_id;
  guint32 next_bc_id;

  /* An operation to run inside the next "message" handler. */
  guint8 armed[16];
  gsize armed_len;
  gboolean armed_set;

  int api_depth;       /* > 0 while inside an mpport call made by us */
  int cur_ctx;         /* the context being iterated, or -1 */
  PortRec *handler_port;
  BcRec *handler_bc;
} Fuzz;

static Fuzz F;
static GMainContext *contexts[N_CTX];
static guint context_gen[N_CTX];
static GObject *not_a_port;

#define SIDE(i) (&g_array_index (F.sides, Side, (i)))
#define MSG(i) (&g_array_index (F.msgs, Msg, (i)))
#define PORT(i) ((PortRec *) g_ptr_array_index (F.ports, (i)))
#define POST(i) ((Post *) g_ptr_array_index (F.posts, (i)))

#define API_BEGIN() (F.api_depth++)
#define API_END() (F.api_depth--)

static void shadow_close_sides (int side, gboolean notify_peer);

static int
side_new_pair (void)
{
  Side a = { 0 }, b = { 0 };
  int first = F.sides->len;

  a.peer = first + 1;
  b.peer = first;
  a.owner = b.owner = OWNER_IN_FLIGHT;
  a.carrier = b.carrier = -1;
  g_array_append_val (F.sides, a);
  g_array_append_val (F.sides, b);

  return first;
}

static void
port_weak_notify (gpointer data,
                  GObject *where_the_object_was)
{
  PortRec *rec = data;
  Side *side = SIDE (rec->side);

  /* Nobody may finalize a port the fuzzer or a started source still holds. */
  CHECK (!rec->in_pool, "port %d finalized while the fuzzer holds it", rec->index);
  CHECK (rec->n_async == 0, "port %d finalized with a receive_async() or post pending", rec->index);
  CHECK (rec->n_held == 0, "port %d finalized while a pending post's transfer list holds it",
         rec->index);
  CHECK (!(side->owner == rec->index && side->attached),
         "port %d finalized while its source is attached", rec->index);
  rec->finalized = TRUE;
  rec->obj = NULL;
}

static void on_port_message (MpMessagePort *port, MpMessage *message, PortRec *rec);
static void on_port_close (MpMessagePort *port, PortRec *rec);
static void on_port_notify_closed (MpMessagePort *port, GParamSpec *pspec, PortRec *rec);

/* Starts tracking @obj as the owner (or detached object) of @side. */
static PortRec *
port_rec_new (MpMessagePort *obj,
              int            side)
{
  PortRec *rec = g_new0 (PortRec, 1);

  rec->obj = obj;
  rec->index = F.ports->len;
  rec->side = side;
  rec->priority = G_PRIORITY_DEFAULT;
  g_ptr_array_add (F.ports, rec);

  g_signal_connect (obj, "message", G_CALLBACK (on_port_message), rec);
  g_signal_connect (obj, "close", G_CALLBACK (on_port_close), rec);
  g_signal_connect (obj, "notify::closed", G_CALLBACK (on_port_notify_closed), rec);
  g_object_weak_ref (G_OBJECT (obj), port_weak_notify, rec);

  SIDE (side)->owner = rec->index;

  return rec;
}

static void
pool_add (PortRec *rec)
{
  g_object_ref (rec->obj);
  rec->in_pool = TRUE;
  g_ptr_array_add (F.pool, rec);
}

/* What finalizing an unstarted owner does: its side closes (mp_message_port_finalize). */
static void
shadow_owner_dropped (int side)
{
  SIDE (side)->owner = OWNER_DEAD;
  shadow_close_sides (side, TRUE);
}

static void
waiter_fail (Waiter *w,
             GQuark  domain,
             int     code)
{
  w->state = W_FAILED;
  w->domain = domain;
  w->code = code;
}

/* The side gives up its pending receive_async() calls: they fail with @code
 * (MP_ERROR_CLOSED when it closes, MP_ERROR_INVALID_STATE when it is transferred away). */
static void
shadow_fail_waiters (Side *side,
                     int   code)
{
  Waiter *w;

  while ((w = g_queue_pop_head (&side->waiters)) != NULL)
    waiter_fail (w, MP_ERROR, code);
}

static void
post_fail (Post   *p,
           GQuark  domain,
           int     code)
{
  p->state = P_FAILED;
  p->domain = domain;
  p->code = code;
}

/* Flow control: whether an async post to @side (open) waits for room. */
static gboolean
shadow_post_waits (Side *side)
{
  return !g_queue_is_empty (&side->posting) ||
         (side->mark > 0 && g_queue_get_length (&side->queue) >= side->mark);
}

/* mp_pipe_side_admit_locked(): the oldest waiting posts go into the queue while it is below
 * the mark; their async posts succeed. */
static void
shadow_admit (int s)
{
  Side *side = SIDE (s);

  while (!g_queue_is_empty (&side->posting) &&
         (side->mark == 0 || g_queue_get_length (&side->queue) < side->mark))
    {
      gpointer entry = g_queue_pop_head (&side->posting);
      Msg *msg = MSG (GPOINTER_TO_UINT (entry) - 1);

      CHECK (g_queue_is_empty (&side->waiters), "side %d: posts wait and so do receives", s);
      msg->fate = M_QUEUED;
      g_queue_push_tail (&side->queue, entry);
      if (msg->post >= 0)
        POST (msg->post)->state = P_OK;
    }
}

/* posting_end_locked(): the posts waiting at @side end. Async ones fail with @code and their
 * messages are dropped; sync ones are dropped too, or with @keep_sync (their sender closed,
 * they were accepted) go into the queue, before the marker the caller queues next. The sides
 * that dropped messages carried are appended to @work, to close. */
static void
shadow_posting_end (Side   *side,
                    int     code,
                    gboolean keep_sync,
                    GQueue *work)
{
  gpointer entry;

  while ((entry = g_queue_pop_head (&side->posting)) != NULL)
    {
      Msg *msg = MSG (GPOINTER_TO_UINT (entry) - 1);

      if (msg->post < 0 && keep_sync)
        {
          msg->fate = M_QUEUED;
          g_queue_push_tail (&side->queue, entry);
          continue;
        }
      msg->fate = M_DROPPED;
      if (msg->post >= 0)
        post_fail (POST (msg->post), MP_ERROR, code);
      for (guint i = 0; i < msg->n_carried; i++)
        {
          SIDE (msg->carried[i])->owner = OWNER_DEAD;
          g_queue_push_tail (work, GINT_TO_POINTER (msg->carried[i] + 1));
        }
    }
}

/* mp_pipe_side_send_locked() to an open side: behind the posts that wait for room, if any;
 * else the oldest waiting receive_async() gets the message, else it is queued. */
static void
shadow_send (int dest,
             int m)
{
  Side *side = SIDE (dest);
  Waiter *w;

  if (!g_queue_is_empty (&side->posting))
    {
      MSG (m)->fate = M_POSTING;
      g_queue_push_tail (&side->posting, GUINT_TO_POINTER (m + 1));
      return;
    }

  w = g_queue_pop_head (&side->waiters);
  if (w != NULL)
    {
      w->state = W_SERVED;
      w->msg = m;
      MSG (m)->fate = M_ASYNC;
      MSG (m)->holder = w->port->index;
    }
  else
    g_queue_push_tail (&side->queue, GUINT_TO_POINTER (m + 1));
}

/* mp_pipe_side_close_locked + mp_pipe_side_notify_peer_closed + the release of what was
 * dropped, which closes the sides of the ports inside dropped messages (iteratively). */
static void
shadow_close_sides (int first,
                    gboolean notify_peer)
{
  GQueue work = G_QUEUE_INIT;
  gpointer item;

  g_queue_push_tail (&work, GINT_TO_POINTER (first + 1));
  while ((item = g_queue_pop_head (&work)) != NULL)
    {
      int s = GPOINTER_TO_INT (item) - 1;
      Side *side = SIDE (s);
      gpointer entry;

      /* close() on a side its peer closed already still makes posting on it misuse. */
      if (s == first && notify_peer)
        side->closed_here = TRUE;
      if (side->closed)
        continue;
      side->closed = TRUE;
      if (side->attached)
        side->close_owed = TRUE;
      shadow_fail_waiters (side, MP_ERROR_CLOSED);
      /* Room will never come: what waits here fails and is dropped. */
      shadow_posting_end (side, MP_ERROR_CLOSED, FALSE, &work);

      if (notify_peer || s != first)
        {
          Side *peer = SIDE (side->peer);

          if (!peer->closed && !peer->peer_closed)
            {
              peer->peer_closed = TRUE;
              /* Our own async posts waiting at the peer fail; our sync ones go in. */
              shadow_posting_end (peer, MP_ERROR_INVALID_STATE, TRUE, &work);
              if (!g_queue_is_empty (&peer->waiters))
                /* A waiting receive_async() reaches the marker at once: the peer closes. */
                g_queue_push_tail (&work, GINT_TO_POINTER (side->peer + 1));
              else
                g_queue_push_tail (&peer->queue, GUINT_TO_POINTER (MARKER));
            }
        }

      while ((entry = g_queue_pop_head (&side->queue)) != NULL)
        {
          Msg *msg;

          if (GPOINTER_TO_UINT (entry) == MARKER)
            continue;
          msg = MSG (GPOINTER_TO_UINT (entry) - 1);
          msg->fate = M_DROPPED;
          for (guint i = 0; i < msg->n_carried; i++)
            {
              int c = msg->carried[i];

              SIDE (c)->owner = OWNER_DEAD;
              g_queue_push_tail (&work, GINT_TO_POINTER (c + 1));
            }
        }
    }
}

/* A message leaves a queue without being delivered: its ports' sides close. */
static void
shadow_drop_message (int m)
{
  Msg *msg = MSG (m);

  msg->fate = M_DROPPED;
  for (guint i = 0; i < msg->n_carried; i++)
    shadow_owner_dropped (msg->carried[i]);
}

static guint32
message_id (MpMessage *message)
{
  GVariant *data = mp_message_get_data (message);

  CHECK (data != NULL && g_variant_is_of_type (data, G_VARIANT_TYPE_UINT32),
         "message without a uint32 payload");
  return g_variant_get_uint32 (data);
}

/* Takes @message's ports into the pool as new owners of the sides @msg carried (the pool
 * may be full: then the port is dropped when the message is, and its side closes). Returns
 * how many were left out, appended to @left_out. */
static void
adopt_ports (Msg        *msg,
             MpMessage  *message,
             GArray     *left_out)
{
  GPtrArray *ports = mp_message_get_ports (message);

  CHECK (ports != NULL, "get_ports() returned NULL");
  CHECK (ports->len == msg->n_carried, "message %u carries %u ports, expected %u",
         msg->id, ports->len, msg->n_carried);

  for (guint i = 0; i < ports->len; i++)
    {
      MpMessagePort *obj = g_ptr_array_index (ports, i);
      int c = msg->carried[i];
      PortRec *rec;

      CHECK (MP_IS_MESSAGE_PORT (obj), "get_ports() holds a non-port");
      CHECK (SIDE (c)->owner == OWNER_IN_FLIGHT, "carried side %d has an owner", c);
      API_BEGIN ();
      CHECK (!mp_message_port_is_closed (obj), "a received port is closed");
      CHECK (mp_message_port_get_context (obj) == NULL, "a received port has a context");
      API_END ();
      rec = port_rec_new (obj, c);
      if (F.pool->len < MAX_POOL)
        pool_add (rec);
      else
        g_array_append_val (left_out, c);
    }
}

static void run_op (Reader *r, gboolean in_handler);

/* What get_n_queued() says: the messages queued at its side (not the peer's marker), 0 once
 * transferred away. */
static guint
shadow_n_queued (PortRec *rec)
{
  guint n = 0;

  if (rec->detached)
    return 0;
  for (GList *l = SIDE (rec->side)->queue.head; l != NULL; l = l->next)
    if (GPOINTER_TO_UINT (l->data) != MARKER)
      n++;

  return n;
}

static void
run_armed_op (void)
{
  Reader armed;
  guint8 copy[sizeof F.armed];

  if (!F.armed_set)
    return;

  memcpy (copy, F.armed, F.armed_len);
  armed.data = copy;
  armed.size = F.armed_len;
  armed.pos = 0;
  F.armed_set = FALSE;
  run_op (&armed, TRUE);
}

static void
on_port_message (MpMessagePort *port,
                 MpMessage     *message,
                 PortRec       *rec)
{
  Side *side = SIDE (rec->side);
  gpointer head;
  guint32 id = message_id (message);
  Msg *msg;
  g_autoptr(GArray) left_out = g_array_new (FALSE, FALSE, sizeof (int));
  PortRec *saved_port = F.handler_port;
  BcRec *saved_bc = F.handler_bc;

  CHECK (F.api_depth == 0, "\"message\" emitted inside an API call");
  CHECK (F.cur_ctx >= 0, "\"message\" emitted outside a context iteration");
  CHECK (!rec->finalized && port == rec->obj, "\"message\" on a finalized port");
  CHECK (!rec->detached, "\"message\" on transferred-away port %d", rec->index);
  CHECK (side->owner == rec->index, "\"message\" on port %d, not the owner of side %d",
         rec->index, rec->side);
  CHECK (rec->started && side->attached, "\"message\" on an unstarted port %d", rec->index);
  CHECK (side->ctx == F.cur_ctx && rec->ctx == F.cur_ctx,
         "\"message\" on context %d, port %d started on %d", F.cur_ctx, rec->index, side->ctx);
  CHECK (rec->close_signals == 0, "\"message\" after \"close\" on port %d", rec->index);
  CHECK (!side->closed, "\"message\" on closed side %d (port %d)", rec->side, rec->index);

  head = g_queue_pop_head (&side->queue);
  CHECK (head != NULL && GPOINTER_TO_UINT (head) != MARKER,
         "\"message\" %u on port %d, but %s is next", id, rec->index,
         head == NULL ? "nothing" : "the close marker");
  msg = MSG (GPOINTER_TO_UINT (head) - 1);
  CHECK (msg->id == id, "\"message\" %u on port %d, but %u is next (FIFO)", id, rec->index,
         msg->id);
  CHECK (msg->fate == M_QUEUED, "message %u delivered twice", id);
  msg->fate = M_DELIVERED;
  msg->holder = rec->index;
  /* Taken out before the emission: room for what waits. */
  shadow_admit (rec->side);
  API_BEGIN ();
  CHECK (mp_message_port_get_n_queued (port) == shadow_n_queued (rec),
         "port %d: get_n_queued() %u in its handler, expected %u", rec->index,
         mp_message_port_get_n_queued (port), shadow_n_queued (rec));
  API_END ();

  adopt_ports (msg, message, left_out);

  F.handler_port = rec;
  F.handler_bc = NULL;
  run_armed_op ();
  F.handler_port = saved_port;
  F.handler_bc = saved_bc;

  /* Ports the pool had no room for go with the message, after this handler. */
  for (guint i = 0; i < left_out->len; i++)
    shadow_owner_dropped (g_array_index (left_out, int, i));
}

static void
on_port_notify_closed (MpMessagePort *port,
                       GParamSpec    *pspec,
                       PortRec       *rec)
{
  Side *side = SIDE (rec->side);

  CHECK (F.api_depth == 0, "notify::closed inside an API call");
  CHECK (F.cur_ctx >= 0 && side->attached && side->ctx == F.cur_ctx,
         "notify::closed on port %d outside its context's dispatch", rec->index);
  if (!side->closed)
    {
      /* The dispatch reached the peer's close marker (it emits nothing for it): everything
       * the peer posted before must have been delivered. */
      gpointer head = g_queue_pop_head (&side->queue);

      CHECK (head != NULL && GPOINTER_TO_UINT (head) == MARKER,
             "port %d closed by its dispatch before the peer's close marker", rec->index);
      shadow_close_sides (rec->side, FALSE);
    }
  CHECK (side->owner == rec->index && side->closed && side->close_owed,
         "notify::closed on port %d that does not owe \"close\"", rec->index);
  CHECK (!rec->notified_closed, "notify::closed twice on port %d", rec->index);
  CHECK (mp_message_port_is_closed (port), "notify::closed but not is_closed()");
  rec->notified_closed = TRUE;
}

static void
on_port_close (MpMessagePort *port,
               PortRec       *rec)
{
  Side *side = SIDE (rec->side);

  CHECK (F.api_depth == 0, "\"close\" emitted inside an API call");
  CHECK (F.cur_ctx >= 0 && side->attached && side->ctx == F.cur_ctx,
         "\"close\" on port %d outside its context's dispatch", rec->index);
  CHECK (side->owner == rec->index && rec->started, "\"close\" on port %d, not the started owner",
         rec->index);
  CHECK (side->closed && side->close_owed, "\"close\" on port %d that does not owe it",
         rec->index);
  CHECK (rec->notified_closed, "\"close\" without notify::closed first on port %d", rec->index);
  CHECK (rec->close_signals == 0, "\"close\" twice on port %d", rec->index);
  CHECK (g_queue_is_empty (&side->queue), "\"close\" on port %d with messages queued",
         rec->index);

  rec->close_signals++;
  side->close_owed = FALSE;
  side->attached = FALSE;   /* take_source_for_close_locked(): the source goes */
}

static BcRec *bc_find_open (int name, int ctx);

static void
on_bc_message (MpBroadcastChannel *channel,
               MpMessage          *message,
               BcRec              *rec)
{
  guint32 id = message_id (message);
  GQueue *q;
  BcPair *pair;
  PortRec *saved_port = F.handler_port;
  BcRec *saved_bc = F.handler_bc;

  CHECK (F.api_depth == 0, "broadcast \"message\" inside an API call");
  CHECK (F.cur_ctx == rec->ctx, "broadcast \"message\" on context %d, channel on %d",
         F.cur_ctx, rec->ctx);
  CHECK (!rec->closed, "broadcast \"message\" on closed channel %d", rec->index);
  CHECK (mp_message_get_ports (message)->len == 0, "broadcast message with ports");

  /* Deliveries to channels closed since the post are skipped. */
  q = &F.bq[rec->ctx][rec->name];
  while ((pair = g_queue_peek_head (q)) != NULL &&
         ((BcRec *) g_ptr_array_index (F.bcs, pair->dest))->closed)
    g_free (g_queue_pop_head (q));
  CHECK (pair != NULL, "broadcast %u on channel %d: nothing due", id, rec->index);
  CHECK (pair->id == id && pair->dest == rec->index,
         "broadcast %u on channel %d, but %u to channel %d is due", id, rec->index,
         pair->id, pair->dest);
  g_free (g_queue_pop_head (q));

  F.handler_port = NULL;
  F.handler_bc = rec;
  run_armed_op ();
  F.handler_port = saved_port;
  F.handler_bc = saved_bc;
}

static void
bc_weak_notify (gpointer data,
                GObject *where_the_object_was)
{
  BcRec *rec = data;

  CHECK (!rec->in_pool, "broadcast channel %d finalized while held", rec->index);
  CHECK (rec->closed, "open broadcast channel %d finalized", rec->index);
  rec->finalized = TRUE;
  rec->obj = NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Operations                                                                            */

enum {
  OP_NEW_CHANNEL,
  OP_POST,
  OP_START,
  OP_RECEIVE,
  OP_CLOSE,
  OP_DROP,
  OP_ITERATE,
  OP_DRAIN,
  OP_SET_PRIORITY,
  OP_BURST,
  OP_ARM,
  OP_BC_NEW,
  OP_BC_POST,
  OP_BC_CLOSE,
  OP_BC_DROP,
  OP_CTX_FINALIZE,
  OP_RECEIVE_ASYNC,
  OP_CANCEL,
  OP_POST_ASYNC,
  OP_POST_CANCEL,
  OP_SET_MARK,
  OP_BURST_ASYNC,
  N_OPS
};

/* 0xff picks the port whose handler is running, if any; else a pool entry. */
static PortRec *
pick_port (guint8 b)
{
  if (b == 0xff && F.handler_port != NULL)
    return F.handler_port;
  if (F.pool->len == 0)
    return NULL;
  return g_ptr_array_index (F.pool, b % F.pool->len);
}

static BcRec *
pick_bc (guint8 b)
{
  if (b == 0xff && F.handler_bc != NULL)
    return F.handler_bc;
  if (F.bc_pool->len == 0)
    return NULL;
  return g_ptr_array_index (F.bc_pool, b % F.bc_pool->len);
}

static BcRec *
bc_find_open (int name,
              int ctx)
{
  for (guint i = 0; i < F.bcs->len; i++)
    {
      BcRec *b = g_ptr_array_index (F.bcs, i);

      if (!b->closed && b->name == name && b->ctx == ctx)
        return b;
    }
  return NULL;
}

static void
op_new_channel (void)
{
  MpMessageChannel *channel;
  int first = side_new_pair ();
  PortRec *p1, *p2;

  API_BEGIN ();
  channel = mp_message_channel_new ();
  p1 = port_rec_new (mp_message_channel_get_port1 (channel), first);
  p2 = port_rec_new (mp_message_channel_get_port2 (channel), first + 1);
  API_END ();

  if (F.pool->len + 2 <= MAX_POOL)
    {
      pool_add (p1);
      pool_add (p2);
      API_BEGIN ();
      g_object_unref (channel);
      API_END ();
    }
  else
    {
      /* No room: both unstarted owners go with the channel; each side closes. */
      API_BEGIN ();
      g_object_unref (channel);
      API_END ();
      shadow_owner_dropped (first);
      shadow_owner_dropped (first + 1);
    }
}

typedef enum {
  ENTRY_NULL,
  ENTRY_NOT_A_PORT,
  ENTRY_SELF,
  ENTRY_PORT,
} EntryKind;

/* Whether moving the sides of @recs into @dest's inbox closes a cycle: @dest's owner
 * travels in a message queued at a side whose owner travels ... inside one of them. Such a
 * message could never be received, and everything in the cycle would leak: the library
 * refuses the post with MP_ERROR_DATA_CLONE. */
static gboolean
makes_cycle (int        dest,
             guint      n,
             PortRec  **recs)
{
  int s = dest;

  if (SIDE (dest)->closed)
    return FALSE;   /* dropped at once */
  for (guint hops = 0; hops <= F.sides->len; hops++)
    {
      Side *side = SIDE (s);

      for (guint i = 0; i < n; i++)
        if (recs[i]->side == s)
          return TRUE;
      /* A carrier handed to a pending receive_async() is on its way out: no cycle. */
      /* A post that waits for room holds its edges as a queued one does. */
      if (side->owner != OWNER_IN_FLIGHT || side->carrier < 0 ||
          (MSG (side->carrier)->fate != M_QUEUED && MSG (side->carrier)->fate != M_POSTING))
        return FALSE;
      s = MSG (side->carrier)->side;
    }
  return TRUE;
}

static void on_post_done (GObject *source, GAsyncResult *result, gpointer data);

/* Posts a new message on @rec with the transfer list @list (@recs and @kinds say what each
 * entry is) and checks the outcome: with post_message(), or with post_message_async() if
 * @post is not NULL (its ctx and cancellable set; the rest is filled in here). */
static void
do_post (PortRec *rec,
         guint n,
         MpMessagePort **list,
         PortRec **recs,
         EntryKind *kinds,
         Post *post)
{
  Side *side = SIDE (rec->side);
  int expected_code = -1;   /* -1: success */
  guint32 id = F.next_id++;
  g_autoptr(GError) error = NULL;
  gboolean ok = TRUE;
  Msg msg = { 0 };

  if (post != NULL)
    {
      post->port = rec;
      post->msg = -1;
      g_ptr_array_add (F.posts, post);
      rec->n_async++;   /* its task holds it */
      g_main_context_push_thread_default (contexts[post->ctx]);
      API_BEGIN ();
      mp_message_port_post_message_async (rec->obj, g_variant_new_uint32 (id), list, n,
                                          post->cancellable, on_post_done, post);
      API_END ();
      g_main_context_pop_thread_default (contexts[post->ctx]);

      /* Cancelled before the call: nothing is checked, nothing is posted. */
      if (g_cancellable_is_cancelled (post->cancellable))
        {
          post_fail (post, G_IO_ERROR, G_IO_ERROR_CANCELLED);
          return;
        }
    }

  /* The order of the checks: self, then the list. A side closed by its peer is no error:
   * the post goes on, and its peer, closed, drops it. */
  if (rec->detached || side->closed_here)
    expected_code = MP_ERROR_INVALID_STATE;
  else
    {
      for (guint i = 0; i < n && expected_code < 0; i++)
        {
          PortRec *t = recs[i];

          if (kinds[i] != ENTRY_PORT)
            expected_code = MP_ERROR_DATA_CLONE;
          else if (t->side == rec->side || t->side == side->peer)
            expected_code = MP_ERROR_DATA_CLONE;
          else if (t->detached || SIDE (t->side)->closed)
            expected_code = MP_ERROR_DATA_CLONE;
          else
            for (guint j = 0; j < i; j++)
              if (kinds[j] == ENTRY_PORT && recs[j]->side == t->side)
                expected_code = MP_ERROR_DATA_CLONE;
        }
    }

  if (expected_code < 0 && makes_cycle (side->peer, n, recs))
    expected_code = MP_ERROR_DATA_CLONE;

  if (post != NULL)
    {
      /* Past the checks of the port itself, the post holds its transfer list's objects until
       * it completes. */
      if (expected_code != MP_ERROR_INVALID_STATE)
        for (guint i = 0; i < n; i++)
          {
            PortRec *held = kinds[i] == ENTRY_PORT ? recs[i] : kinds[i] == ENTRY_SELF ? rec : NULL;

            if (held != NULL)
              {
                held->n_held++;
                post->held[post->n_held++] = held;
              }
          }
      if (expected_code >= 0)
        {
          post_fail (post, MP_ERROR, expected_code);
          return;
        }
      /* Towards a closed peer an async post fails, as room will never come (a producer
       * loop must end); as any failed call, it leaves its transfer list alone. */
      if (SIDE (side->peer)->closed)
        {
          post_fail (post, MP_ERROR, MP_ERROR_CLOSED);
          return;
        }
    }
  else
    {
      API_BEGIN ();
      ok = mp_message_port_post_message (rec->obj, g_variant_new_uint32 (id), list, n, &error);
      API_END ();
    }

  if (expected_code >= 0)
    {
      CHECK (!ok && error != NULL, "post %u on port %d succeeded, expected error %d", id,
             rec->index, expected_code);
      CHECK (g_error_matches (error, MP_ERROR, expected_code),
             "post %u on port %d: error %s %d \"%s\", expected MP_ERROR %d", id, rec->index,
             g_quark_to_string (error->domain), error->code, error->message, expected_code);
      CHECK (error->message != NULL && error->message[0] != '\0', "error without a message");
      return;
    }
  CHECK (ok && error == NULL, "post %u on port %d failed: %s", id, rec->index,
         error != NULL ? error->message : "(no error)");

  /* The transfer commits: the listed objects are detached, their sides travel. */
  msg.id = id;
  msg.side = side->peer;
  msg.fate = M_QUEUED;
  msg.holder = -1;
  msg.post = post != NULL ? (int) F.posts->len - 1 : -1;
  for (guint i = 0; i < n; i++)
    {
      Side *ts = SIDE (recs[i]->side);

      recs[i]->detached = TRUE;
      shadow_fail_waiters (ts, MP_ERROR_INVALID_STATE);   /* "The port was transferred away" */
      if (ts->attached)
        recs[i]->retiring = TRUE;   /* its source is woken to retire itself */
      ts->attached = FALSE;
      ts->owner = OWNER_IN_FLIGHT;
      ts->carrier = F.msgs->len;
      msg.carried[msg.n_carried++] = recs[i]->side;
      if (post != NULL)
        post->listed[i] = recs[i];
    }
  g_array_append_val (F.msgs, msg);
  if (post != NULL)
    {
      post->msg = F.msgs->len - 1;
      post->state = P_OK;
    }

  if (SIDE (side->peer)->closed)
    shadow_drop_message (F.msgs->len - 1);   /* closed peer: success, dropped */
  else if (post != NULL && shadow_post_waits (SIDE (side->peer)))
    {
      MSG (post->msg)->fate = M_POSTING;
      g_queue_push_tail (&SIDE (side->peer)->posting, GUINT_TO_POINTER (post->msg + 1));
      post->state = P_WAITING;
    }
  else
    shadow_send (side->peer, F.msgs->len - 1);
}

/* Decodes a transfer list for a post on @rec (may be NULL) into @list, @recs, @kinds:
 * returns its length. */
static guint
read_transfer_list (Reader          *r,
                    PortRec         *rec,
                    MpMessagePort  **list,
                    PortRec        **recs,
                    EntryKind       *kinds)
{
  guint n = next_byte (r) % (MAX_TRANSFER + 1);

  for (guint i = 0; i < n; i++)
    {
      guint8 b = next_byte (r);

      recs[i] = NULL;
      if (b == 0xfe)
        {
          kinds[i] = ENTRY_NULL;
          list[i] = NULL;
        }
      else if (b == 0xfd)
        {
          kinds[i] = ENTRY_NOT_A_PORT;
          list[i] = (MpMessagePort *) not_a_port;
        }
      else if (b == 0xfc || (recs[i] = pick_port (b)) == NULL)
        {
          kinds[i] = ENTRY_SELF;
          list[i] = rec != NULL ? rec->obj : NULL;
          if (rec == NULL)
            kinds[i] = ENTRY_NULL;
        }
      else
        {
          kinds[i] = ENTRY_PORT;
          list[i] = recs[i]->obj;
        }
    }

  return n;
}

static void
op_post (Reader *r)
{
  PortRec *rec = pick_port (next_byte (r));
  MpMessagePort *list[MAX_TRANSFER];
  PortRec *recs[MAX_TRANSFER] = { NULL };
  EntryKind kinds[MAX_TRANSFER];
  guint n = read_transfer_list (r, rec, list, recs, kinds);

  if (rec == NULL)
    return;
  do_post (rec, n, list, recs, kinds, NULL);
}

/* A new async post record for the callback's context @ctx; @mode picks its cancellable:
 * none (0-3), one (4-6), or one cancelled already (7). */
static Post *
post_new (int    ctx,
          guint8 mode)
{
  Post *post = g_new0 (Post, 1);

  post->ctx = ctx;
  post->state = P_OK;
  if (mode % 8 >= 4)
    post->cancellable = g_cancellable_new ();
  if (mode % 8 == 7)
    g_cancellable_cancel (post->cancellable);

  return post;
}

static void
op_post_async (Reader *r)
{
  PortRec *rec = pick_port (next_byte (r));
  int ctx = next_byte (r) % N_CTX;
  guint8 mode = next_byte (r);
  MpMessagePort *list[MAX_TRANSFER];
  PortRec *recs[MAX_TRANSFER] = { NULL };
  EntryKind kinds[MAX_TRANSFER];
  guint n = read_transfer_list (r, rec, list, recs, kinds);

  if (rec == NULL)
    return;
  do_post (rec, n, list, recs, kinds, post_new (ctx, mode));
}

/* Mostly short; with the top bit, past the dispatch budget (1024). */
static guint
burst_count (guint8 b)
{
  return (b & 0x80) ? 1000 + (b & 0x7f) * 2 : b % 16;
}

static void
op_burst (Reader *r)
{
  PortRec *rec = pick_port (next_byte (r));
  guint count = burst_count (next_byte (r));

  if (rec == NULL)
    return;
  for (guint i = 0; i < count; i++)
    do_post (rec, 0, NULL, NULL, NULL, NULL);
}

/* The same with async posts (no cancellable) completing on either context: past a mark,
 * most of them wait. */
static void
op_burst_async (Reader *r)
{
  PortRec *rec = pick_port (next_byte (r));
  guint count = burst_count (next_byte (r));
  int ctx = next_byte (r) % N_CTX;

  if (rec == NULL)
    return;
  for (guint i = 0; i < count; i++)
    do_post (rec, 0, NULL, NULL, NULL, post_new (ctx, 0));
}

static void
op_start (Reader *r)
{
  PortRec *rec = pick_port (next_byte (r));
  int ctx = next_byte (r) % N_CTX;
  Side *side;

  if (rec == NULL)
    return;
  side = SIDE (rec->side);

  g_main_context_push_thread_default (contexts[ctx]);
  API_BEGIN ();
  mp_message_port_start (rec->obj);
  API_END ();
  g_main_context_pop_thread_default (contexts[ctx]);

  /* A no-op when transferred, closed or started already. */
  if (!rec->detached && !side->closed && !side->attached && !rec->started)
    {
      rec->started = TRUE;
      rec->ctx = ctx;
      rec->ctx_gen = context_gen[ctx];
      side->attached = TRUE;
      side->ctx = ctx;
    }
}

static void
op_receive (Reader *r)
{
  PortRec *rec = pick_port (next_byte (r));
  Side *side;
  MpMessage *message;
  gpointer head = NULL;

  if (rec == NULL)
    return;
  side = SIDE (rec->side);

  API_BEGIN ();
  message = mp_message_port_receive (rec->obj);
  API_END ();

  if (!rec->detached && !side->closed)
    head = g_queue_pop_head (&side->queue);

  if (head == NULL || GPOINTER_TO_UINT (head) == MARKER)
    {
      CHECK (message == NULL, "receive() on port %d returned %u, expected NULL", rec->index,
             message_id (message));
      if (head != NULL)
        shadow_close_sides (rec->side, FALSE);   /* reached the peer's close */
    }
  else
    {
      Msg *msg = MSG (GPOINTER_TO_UINT (head) - 1);
      g_autoptr(GArray) left_out = g_array_new (FALSE, FALSE, sizeof (int));

      CHECK (message != NULL, "receive() on port %d returned NULL, expected %u", rec->index,
             msg->id);
      CHECK (message_id (message) == msg->id, "receive() on port %d returned %u, expected %u",
             rec->index, message_id (message), msg->id);
      CHECK (msg->fate == M_QUEUED, "message %u taken twice", msg->id);
      msg->fate = M_RECEIVED;
      msg->holder = rec->index;
      shadow_admit (rec->side);
      adopt_ports (msg, message, left_out);
      API_BEGIN ();
      mp_message_unref (message);
      API_END ();
      for (guint i = 0; i < left_out->len; i++)
        shadow_owner_dropped (g_array_index (left_out, int, i));
    }
}

static void
op_close (Reader *r)
{
  PortRec *rec = pick_port (next_byte (r));

  if (rec == NULL)
    return;

  API_BEGIN ();
  mp_message_port_close (rec->obj);
  API_END ();

  if (!rec->detached)
    shadow_close_sides (rec->side, TRUE);
  CHECK (mp_message_port_is_closed (rec->obj), "port %d open after close()", rec->index);
}

static void
op_drop (Reader *r)
{
  guint8 b = next_byte (r);
  PortRec *rec;
  Side *side;
  gboolean held_by_source;
  gboolean retiring;

  if (F.pool->len == 0)
    return;
  rec = g_ptr_array_index (F.pool, b % F.pool->len);
  if (rec->n_async > 0 || rec->n_held > 0)
    return;   /* its pending tasks hold it: it would go when they complete */
  if (rec->retiring && !rec->detached)
    return;   /* given back by a cancelled post, its old source not yet retired: it would
               * be finalized, and its side closed, whenever its context retires it */
  side = SIDE (rec->side);
  held_by_source = !rec->detached && side->owner == rec->index && side->attached;
  retiring = rec->retiring;

  g_ptr_array_remove_index (F.pool, b % F.pool->len);
  rec->in_pool = FALSE;
  API_BEGIN ();
  g_object_unref (rec->obj);
  API_END ();

  if (held_by_source)
    CHECK (!rec->finalized, "started open port %d finalized when dropped", rec->index);
  else if (retiring)
    ;   /* finalized now or when its context retires its old source */
  else
    {
      CHECK (rec->finalized, "port %d not finalized when its last reference was dropped",
             rec->index);
      if (!rec->detached && side->owner == rec->index && !side->closed)
        shadow_owner_dropped (rec->side);
    }
}

static void
op_set_priority (Reader *r)
{
  PortRec *rec = pick_port (next_byte (r));
  int priority = (int) (next_byte (r) % 5) * 100 - 200;

  if (rec == NULL)
    return;
  API_BEGIN ();
  mp_message_port_set_priority (rec->obj, priority);
  API_END ();
  rec->priority = priority;
}

static gboolean
iterate_once (int ctx)
{
  gboolean dispatched;

  F.cur_ctx = ctx;
  dispatched = g_main_context_iteration (contexts[ctx], FALSE);
  F.cur_ctx = -1;

  return dispatched;
}

static void
op_iterate (Reader *r)
{
  int ctx = next_byte (r) % N_CTX;
  guint count = 1 + next_byte (r) % 4;

  for (guint i = 0; i < count; i++)
    iterate_once (ctx);
}

static void
drain (void)
{
  guint rounds = 0;
  gboolean busy;

  do
    {
      busy = FALSE;
      for (int c = 0; c < N_CTX; c++)
        while (g_main_context_pending (contexts[c]))
          {
            iterate_once (c);
            busy = TRUE;
            CHECK (++rounds < MAX_DRAIN, "the contexts never become idle");
          }
    }
  while (busy);
}

/* Every message is in exactly one place: delivered, received, dropped, or queued (in its
 * side's shadow queue, which the checks above compare with what the library does). */
static void
check_messages (void)
{
  g_autofree guint *queued = g_new0 (guint, F.sides->len);
  g_autofree guint *posting = g_new0 (guint, F.sides->len);

  for (guint m = 0; m < F.msgs->len; m++)
    {
      Msg *msg = MSG (m);

      if (msg->fate == M_POSTING)
        {
          CHECK (!SIDE (msg->side)->closed, "message %u waits at closed side %d", msg->id,
                 msg->side);
          CHECK (msg->post < 0 || POST (msg->post)->state == P_WAITING,
                 "message %u waits, its post does not", msg->id);
          posting[msg->side]++;
          continue;
        }
      CHECK (msg->post < 0 || POST (msg->post)->state != P_WAITING,
             "message %u does not wait, its post does", msg->id);
      if (msg->fate != M_QUEUED)
        continue;
      CHECK (!SIDE (msg->side)->closed, "message %u queued at closed side %d", msg->id,
             msg->side);
      queued[msg->side]++;
    }
  for (guint s = 0; s < F.sides->len; s++)
    {
      Side *side = SIDE (s);
      guint n = 0;

      for (GList *l = side->queue.head; l != NULL; l = l->next)
        if (GPOINTER_TO_UINT (l->data) != MARKER)
          {
            CHECK (MSG (GPOINTER_TO_UINT (l->data) - 1)->fate == M_QUEUED &&
                   MSG (GPOINTER_TO_UINT (l->data) - 1)->side == (int) s,
                   "side %u holds a message that is not queued there", s);
            n++;
          }
      CHECK (n == queued[s], "side %u: %u queued, %u expected", s, n, queued[s]);

      n = 0;
      for (GList *l = side->posting.head; l != NULL; l = l->next)
        {
          CHECK (MSG (GPOINTER_TO_UINT (l->data) - 1)->fate == M_POSTING &&
                 MSG (GPOINTER_TO_UINT (l->data) - 1)->side == (int) s,
                 "side %u: a message waits there that is not waiting", s);
          n++;
        }
      CHECK (n == posting[s], "side %u: %u waiting, %u expected", s, n, posting[s]);
      /* Posts wait only while there is no room (mark 0: never). */
      CHECK (n == 0 || (side->mark > 0 && g_queue_get_length (&side->queue) >= side->mark),
             "side %u: %u posts wait with %u queued, mark %u", s, n,
             g_queue_get_length (&side->queue), side->mark);
    }
}

/* After drain(): nothing due is left undelivered. */
static void
check_quiescent (void)
{
  for (guint s = 0; s < F.sides->len; s++)
    {
      Side *side = SIDE (s);

      if (!side->attached)
        continue;
      /* An attached side is open or owes "close"; the drain ran its dispatch. */
      CHECK (!side->close_owed, "side %d never emitted its \"close\"", s);
      CHECK (g_queue_is_empty (&side->queue),
             "lost wake-up: started side %d keeps %u queued after the drain", s,
             g_queue_get_length (&side->queue));
    }

  for (int c = 0; c < N_CTX; c++)
    for (int n = 0; n < N_NAMES; n++)
      {
        BcPair *pair;

        while ((pair = g_queue_pop_head (&F.bq[c][n])) != NULL)
          {
            CHECK (((BcRec *) g_ptr_array_index (F.bcs, pair->dest))->closed,
                   "broadcast %u to open channel %d never delivered", pair->id, pair->dest);
            g_free (pair);
          }
      }

  check_messages ();

  /* Every receive_async() completed, or still waits at an open side with nothing queued. */
  for (guint i = 0; i < F.waiters->len; i++)
    {
      Waiter *w = g_ptr_array_index (F.waiters, i);
      Side *side = SIDE (w->port->side);

      CHECK (w->state == W_DONE || w->state == W_QUEUED,
             "receive_async() on port %d never completed", w->port->index);
      if (w->state == W_QUEUED)
        CHECK (!side->closed && !w->port->detached && g_queue_is_empty (&side->queue),
               "receive_async() on port %d waits with messages queued", w->port->index);
    }

  /* Every async post completed, or still waits (for room at a side nobody takes from). */
  for (guint i = 0; i < F.posts->len; i++)
    {
      Post *post = POST (i);

      CHECK (post->state == P_DONE || post->state == P_WAITING,
             "async post on port %d never completed", post->port->index);
      if (post->state == P_WAITING)
        CHECK (!SIDE (MSG (post->msg)->side)->attached,
               "async post on port %d waits at started side %d after the drain",
               post->port->index, MSG (post->msg)->side);
    }

  /* Nothing is kept alive but by the fuzzer, a started open port's source or the name
   * table (an open broadcast channel); retired sources are gone after the drain. */
  for (guint i = 0; i < F.ports->len; i++)
    {
      PortRec *rec = PORT (i);
      Side *side = SIDE (rec->side);

      rec->retiring = FALSE;
      if (!rec->finalized)
        CHECK (rec->in_pool || (side->owner == rec->index && side->attached) || rec->n_async > 0 ||
               rec->n_held > 0,
               "port %d leaked (detached %d, side closed %d)", rec->index, rec->detached,
               side->closed);
    }
  for (guint i = 0; i < F.bcs->len; i++)
    {
      BcRec *rec = g_ptr_array_index (F.bcs, i);

      if (!rec->finalized)
        CHECK (rec->in_pool || !rec->closed, "broadcast channel %d leaked", rec->index);
    }
}

static void
op_bc_new (Reader *r)
{
  int name = next_byte (r) % N_NAMES;
  int ctx = next_byte (r) % N_CTX;
  static const char *const names[N_NAMES] = { "fuzz-a", "fuzz-b" };
  BcRec *rec;

  if (F.bc_pool->len >= MAX_BC_POOL)
    return;

  rec = g_new0 (BcRec, 1);
  rec->index = F.bcs->len;
  rec->name = name;
  rec->ctx = ctx;
  g_main_context_push_thread_default (contexts[ctx]);
  API_BEGIN ();
  rec->obj = mp_broadcast_channel_new (names[name]);
  API_END ();
  g_main_context_pop_thread_default (contexts[ctx]);
  g_ptr_array_add (F.bcs, rec);
  g_signal_connect (rec->obj, "message", G_CALLBACK (on_bc_message), rec);
  g_object_weak_ref (G_OBJECT (rec->obj), bc_weak_notify, rec);
  rec->in_pool = TRUE;
  g_ptr_array_add (F.bc_pool, rec);   /* the reference new() returned */
}

static void
op_bc_post (Reader *r)
{
  BcRec *rec = pick_bc (next_byte (r));
  guint32 id;
  g_autoptr(GError) error = NULL;
  gboolean ok;

  if (rec == NULL)
    return;
  id = BC_ID_BASE + F.next_bc_id++;

  API_BEGIN ();
  ok = mp_broadcast_channel_post_message (rec->obj, g_variant_new_uint32 (id), &error);
  API_END ();

  if (rec->closed)
    {
      CHECK (!ok && g_error_matches (error, MP_ERROR, MP_ERROR_INVALID_STATE),
             "post on closed broadcast channel %d: expected MP_ERROR_INVALID_STATE",
             rec->index);
      return;
    }
  CHECK (ok && error == NULL, "broadcast post on channel %d failed", rec->index);

  /* Every other open channel of the name, in creation order. */
  for (guint i = 0; i < F.bcs->len; i++)
    {
      BcRec *dest = g_ptr_array_index (F.bcs, i);
      BcPair *pair;

      if (dest == rec || dest->closed || dest->name != rec->name)
        continue;
      pair = g_new (BcPair, 1);
      pair->id = id;
      pair->dest = dest->index;
      g_queue_push_tail (&F.bq[dest->ctx][dest->name], pair);
    }
}

/* @rec closed. When the last open channel of its (context, name) closes, the inbox is torn
 * down and its queued deliveries are released at once. */
static void
bc_closed (BcRec *rec)
{
  BcPair *pair;

  rec->closed = TRUE;
  if (bc_find_open (rec->name, rec->ctx) != NULL)
    return;
  while ((pair = g_queue_pop_head (&F.bq[rec->ctx][rec->name])) != NULL)
    g_free (pair);
}

static void
op_bc_close (Reader *r)
{
  BcRec *rec = pick_bc (next_byte (r));

  if (rec == NULL)
    return;
  rec->closed = TRUE;   /* before: close() may release the last reference */
  API_BEGIN ();
  mp_broadcast_channel_close (rec->obj);
  API_END ();
  bc_closed (rec);
}

/* Whether a delivery to @rec may still be queued (and hold it). */
static gboolean
bc_pending (BcRec *rec)
{
  for (GList *l = F.bq[rec->ctx][rec->name].head; l != NULL; l = l->next)
    if (((BcPair *) l->data)->dest == rec->index)
      return TRUE;
  return FALSE;
}

static void
op_bc_drop (Reader *r)
{
  guint8 b = next_byte (r);
  BcRec *rec;

  if (F.bc_pool->len == 0)
    return;
  rec = g_ptr_array_index (F.bc_pool, b % F.bc_pool->len);
  g_ptr_array_remove_index (F.bc_pool, b % F.bc_pool->len);
  rec->in_pool = FALSE;
  API_BEGIN ();
  g_object_unref (rec->obj);
  API_END ();
  /* The name table holds an open channel; a closed one may still be held by a delivery
   * queued for it, which its context drops when it comes to it. */
  if (!rec->closed)
    CHECK (!rec->finalized, "open broadcast channel %d finalized when dropped", rec->index);
  else if (!bc_pending (rec))
    CHECK (rec->finalized, "closed broadcast channel %d not finalized when dropped",
           rec->index);
}

/* The context's thread quit and dropped it: its started ports close (their peers get
 * "close"; they emit nothing themselves), its broadcast channels close. */
static void
op_ctx_finalize (Reader *r)
{
  int ctx = next_byte (r) % N_CTX;

  /* A pending receive_async() task holds its context: it would not be finalized. */
  for (guint i = 0; i < F.waiters->len; i++)
    {
      Waiter *w = g_ptr_array_index (F.waiters, i);

      if (w->state != W_DONE && w->ctx == ctx)
        return;
    }
  /* So does a pending async post's. */
  for (guint i = 0; i < F.posts->len; i++)
    if (POST (i)->state != P_DONE && POST (i)->ctx == ctx)
      return;

  for (guint s = 0; s < F.sides->len; s++)
    {
      Side *side = SIDE (s);

      if (side->attached && side->ctx == ctx)
        {
          /* mp_port_source_destroyed(): ATTACHED and CLOSE_PENDING cleared first. */
          side->attached = FALSE;
          side->close_owed = FALSE;
          if (side->owner >= 0)
            PORT (side->owner)->ctx_cleared = TRUE;
          shadow_close_sides (s, TRUE);
        }
    }
  for (guint i = 0; i < F.bcs->len; i++)
    {
      BcRec *b = g_ptr_array_index (F.bcs, i);

      if (b->ctx == ctx)
        b->closed = TRUE;
    }
  for (int n = 0; n < N_NAMES; n++)
    {
      gpointer pair;

      while ((pair = g_queue_pop_head (&F.bq[ctx][n])) != NULL)
        g_free (pair);
    }

  API_BEGIN ();
  g_main_context_unref (contexts[ctx]);
  API_END ();
  contexts[ctx] = g_main_context_new ();
  context_gen[ctx]++;
}

static void
on_receive_done (GObject      *source,
                 GAsyncResult *result,
                 gpointer      data)
{
  Waiter *w = data;
  PortRec *rec = w->port;
  g_autoptr(GError) error = NULL;
  MpMessage *message;

  CHECK (F.api_depth == 0, "receive_async() completed inside an API call");
  CHECK (F.cur_ctx == w->ctx, "receive_async() completed on context %d, not %d", F.cur_ctx,
         w->ctx);
  CHECK (source == G_OBJECT (rec->obj), "receive_async(): wrong source object");

  message = mp_message_port_receive_finish (rec->obj, result, &error);
  switch (w->state)
    {
    case W_SERVED:
      {
        Msg *msg = MSG (w->msg);
        g_autoptr(GArray) left_out = g_array_new (FALSE, FALSE, sizeof (int));

        CHECK (message != NULL, "receive_async() on port %d failed (%s), expected %u",
               rec->index, error != NULL ? error->message : "?", msg->id);
        CHECK (message_id (message) == msg->id, "receive_async() on port %d got %u, expected %u",
               rec->index, message_id (message), msg->id);
        CHECK (msg->fate == M_ASYNC, "message %u completed twice", msg->id);
        msg->fate = M_RECEIVED;
        adopt_ports (msg, message, left_out);
        API_BEGIN ();
        mp_message_unref (message);
        API_END ();
        for (guint i = 0; i < left_out->len; i++)
          shadow_owner_dropped (g_array_index (left_out, int, i));
      }
      break;

    case W_FAILED:
      CHECK (message == NULL, "receive_async() on port %d got %u, expected an error",
             rec->index, message_id (message));
      CHECK (g_error_matches (error, w->domain, w->code),
             "receive_async() on port %d: error %s %d, expected %s %d", rec->index,
             error != NULL ? g_quark_to_string (error->domain) : "none",
             error != NULL ? error->code : 0, g_quark_to_string (w->domain), w->code);
      break;

    case W_QUEUED:
    case W_DONE:
    default:
      fail ("receive_async() on port %d completed while %s", rec->index,
            w->state == W_QUEUED ? "still waiting" : "done already");
    }

  w->state = W_DONE;
  rec->n_async--;
}

static void
op_receive_async (Reader *r)
{
  PortRec *rec = pick_port (next_byte (r));
  int ctx = next_byte (r) % N_CTX;
  gboolean cancelled = next_byte (r) % 8 == 7;
  Side *side;
  Waiter *w;
  gpointer head;

  if (rec == NULL)
    return;
  side = SIDE (rec->side);

  w = g_new0 (Waiter, 1);
  w->port = rec;
  w->ctx = ctx;
  w->cancellable = g_cancellable_new ();
  g_ptr_array_add (F.waiters, w);
  if (cancelled)
    g_cancellable_cancel (w->cancellable);

  g_main_context_push_thread_default (contexts[ctx]);
  API_BEGIN ();
  mp_message_port_receive_async (rec->obj, w->cancellable, on_receive_done, w);
  API_END ();
  g_main_context_pop_thread_default (contexts[ctx]);
  rec->n_async++;

  if (cancelled)
    waiter_fail (w, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  else if (rec->detached || side->closed_here)
    waiter_fail (w, MP_ERROR, MP_ERROR_INVALID_STATE);
  else if (side->closed)
    waiter_fail (w, MP_ERROR, MP_ERROR_CLOSED);   /* the end of the stream */
  else if ((head = g_queue_pop_head (&side->queue)) != NULL)
    {
      if (GPOINTER_TO_UINT (head) == MARKER)
        {
          shadow_close_sides (rec->side, FALSE);   /* reached the peer's close */
          waiter_fail (w, MP_ERROR, MP_ERROR_CLOSED);
        }
      else
        {
          Msg *msg = MSG (GPOINTER_TO_UINT (head) - 1);

          w->state = W_SERVED;
          w->msg = GPOINTER_TO_UINT (head) - 1;
          msg->fate = M_ASYNC;
          msg->holder = rec->index;
          shadow_admit (rec->side);
        }
    }
  else
    {
      w->state = W_QUEUED;
      g_queue_push_tail (&side->waiters, w);
    }
}

static void
op_cancel (Reader *r)
{
  guint8 b = next_byte (r);
  Waiter *w;

  if (F.waiters->len == 0)
    return;
  w = g_ptr_array_index (F.waiters, b % F.waiters->len);

  API_BEGIN ();
  g_cancellable_cancel (w->cancellable);
  API_END ();

  /* Only a receive still waiting is cancelled; one already served keeps its message. */
  if (w->state == W_QUEUED)
    {
      g_queue_remove (&SIDE (w->port->side)->waiters, w);
      waiter_fail (w, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    }
}

static void
on_post_done (GObject      *source,
              GAsyncResult *result,
              gpointer      data)
{
  Post *post = data;
  PortRec *rec = post->port;
  g_autoptr(GError) error = NULL;
  gboolean ok;

  CHECK (F.api_depth == 0, "post_message_async() completed inside an API call");
  CHECK (F.cur_ctx == post->ctx, "post_message_async() completed on context %d, not %d",
         F.cur_ctx, post->ctx);
  CHECK (source == G_OBJECT (rec->obj), "post_message_async(): wrong source object");

  ok = mp_message_port_post_message_finish (rec->obj, result, &error);
  switch (post->state)
    {
    case P_OK:
      CHECK (ok && error == NULL, "post %u on port %d failed (%s), expected success",
             MSG (post->msg)->id, rec->index, error != NULL ? error->message : "no error");
      break;

    case P_FAILED:
      CHECK (!ok && g_error_matches (error, post->domain, post->code),
             "async post on port %d: %s %s %d, expected %s %d", rec->index,
             ok ? "succeeded" : "error", error != NULL ? g_quark_to_string (error->domain) : "-",
             error != NULL ? error->code : 0, g_quark_to_string (post->domain), post->code);
      CHECK (error->message != NULL && error->message[0] != '\0', "error without a message");
      break;

    case P_WAITING:
    case P_DONE:
    default:
      fail ("async post on port %d (message %d) completed while %s", rec->index,
            post->msg >= 0 ? (int) MSG (post->msg)->id : -1,
            post->state == P_WAITING ? "still waiting for room" : "done already");
    }

  post->state = P_DONE;
  rec->n_async--;
  for (guint i = 0; i < post->n_held; i++)
    post->held[i]->n_held--;
}

/* Cancels the cancellable of an async post. One that waits is withdrawn: it fails with
 * G_IO_ERROR_CANCELLED and the objects of its transfer list own their sides again, open and
 * unstarted, with what reached those sides meanwhile. Otherwise nothing changes. */
static void
op_post_cancel (Reader *r)
{
  guint8 b = next_byte (r);
  Post *post;
  Msg *msg;

  if (F.posts->len == 0)
    return;
  post = g_ptr_array_index (F.posts, b % F.posts->len);
  if (post->cancellable == NULL)
    return;

  API_BEGIN ();
  g_cancellable_cancel (post->cancellable);
  API_END ();

  if (post->state != P_WAITING)
    return;
  msg = MSG (post->msg);
  CHECK (g_queue_remove (&SIDE (msg->side)->posting, GUINT_TO_POINTER (post->msg + 1)),
         "waiting message %u not in its side's posting queue", msg->id);
  msg->fate = M_WITHDRAWN;
  for (guint i = 0; i < msg->n_carried; i++)
    {
      PortRec *listed = post->listed[i];
      Side *ts = SIDE (msg->carried[i]);

      CHECK (ts->owner == OWNER_IN_FLIGHT && ts->carrier == post->msg,
             "side %d withdrawn but not in flight in message %u", msg->carried[i], msg->id);
      CHECK (!listed->finalized, "port %d finalized while its post held it", listed->index);
      listed->detached = FALSE;
      listed->started = FALSE;
      ts->owner = listed->index;
      ts->carrier = -1;
    }
  post_fail (post, G_IO_ERROR, G_IO_ERROR_CANCELLED);
}

static void
op_set_mark (Reader *r)
{
  PortRec *rec = pick_port (next_byte (r));
  guint mark = next_byte (r) % 5;

  if (rec == NULL)
    return;
  API_BEGIN ();
  mp_message_port_set_high_water_mark (rec->obj, mark);
  API_END ();

  /* Does nothing on a port transferred away; a raised (or removed) mark lets what waits in. */
  if (!rec->detached)
    {
      SIDE (rec->side)->mark = mark;
      shadow_admit (rec->side);
    }
}

static void
op_arm (Reader *r)
{
  /* The next operation is not run now but inside the next "message" handler. Only those
   * that make sense there: no iteration, drain, drop or context finalization. */
  guint8 op = next_byte (r) % N_OPS;
  static const guint8 allowed[] = {
    OP_NEW_CHANNEL, OP_POST, OP_START, OP_RECEIVE, OP_CLOSE, OP_SET_PRIORITY,
    OP_BC_NEW, OP_BC_POST, OP_BC_CLOSE, OP_POST_ASYNC, OP_POST_CANCEL, OP_SET_MARK,
    OP_BURST_ASYNC,
  };

  F.armed[0] = allowed[op % G_N_ELEMENTS (allowed)];
  F.armed_len = 1;
  while (F.armed_len < 8)
    F.armed[F.armed_len++] = next_byte (r);
  F.armed_set = TRUE;
}

static void
run_op (Reader *r,
        gboolean in_handler)
{
  switch (next_byte (r) % N_OPS)
    {
    case OP_NEW_CHANNEL: op_new_channel (); break;
    case OP_POST: op_post (r); break;
    case OP_START: op_start (r); break;
    case OP_RECEIVE: op_receive (r); break;
    case OP_CLOSE: op_close (r); break;
    case OP_DROP: if (!in_handler) op_drop (r); break;
    case OP_ITERATE: if (!in_handler) op_iterate (r); break;
    case OP_DRAIN: if (!in_handler) { drain (); check_quiescent (); } break;
    case OP_SET_PRIORITY: op_set_priority (r); break;
    case OP_BURST: op_burst (r); break;
    case OP_ARM: if (!in_handler) op_arm (r); break;
    case OP_BC_NEW: op_bc_new (r); break;
    case OP_BC_POST: op_bc_post (r); break;
    case OP_BC_CLOSE: op_bc_close (r); break;
    case OP_BC_DROP: if (!in_handler) op_bc_drop (r); break;
    case OP_CTX_FINALIZE: if (!in_handler) op_ctx_finalize (r); break;
    case OP_RECEIVE_ASYNC: if (!in_handler) op_receive_async (r); break;
    case OP_CANCEL: if (!in_handler) op_cancel (r); break;
    case OP_POST_ASYNC: op_post_async (r); break;
    case OP_POST_CANCEL: op_post_cancel (r); break;
    case OP_SET_MARK: op_set_mark (r); break;
    case OP_BURST_ASYNC: op_burst_async (r); break;
    default: g_assert_not_reached ();
    }
}

/* The getters of every live object agree with the shadow, and posts wait only where there
 * is no room. */
static void
check_objects (void)
{
  for (guint s = 0; s < F.sides->len; s++)
    {
      Side *side = SIDE (s);

      CHECK (g_queue_is_empty (&side->posting) ||
             (side->mark > 0 && g_queue_get_length (&side->queue) >= side->mark),
             "side %u: posts wait with %u queued, mark %u", s, g_queue_get_length (&side->queue),
             side->mark);
    }

  for (guint i = 0; i < F.ports->len; i++)
    {
      PortRec *rec = PORT (i);
      Side *side = SIDE (rec->side);
      gboolean closed;
      GMainContext *context;

      if (rec->finalized)
        continue;

      API_BEGIN ();
      closed = mp_message_port_is_closed (rec->obj);
      context = mp_message_port_get_context (rec->obj);
      CHECK (mp_message_port_get_priority (rec->obj) == rec->priority,
             "port %d: wrong priority", rec->index);
      API_END ();

      CHECK (closed == (rec->detached || side->closed), "port %d: is_closed() %d, expected %d",
             rec->index, closed, rec->detached || side->closed);

      API_BEGIN ();
      CHECK (mp_message_port_get_n_queued (rec->obj) == shadow_n_queued (rec),
             "port %d: get_n_queued() %u, expected %u", rec->index,
             mp_message_port_get_n_queued (rec->obj), shadow_n_queued (rec));
      CHECK (rec->detached || mp_message_port_get_high_water_mark (rec->obj) == side->mark,
             "port %d: get_high_water_mark() %u, expected %u", rec->index,
             mp_message_port_get_high_water_mark (rec->obj), side->mark);
      API_END ();

      /* NULL until started, once transferred away, once its "close" was emitted or its
       * context finalized. */
      if (rec->detached || !rec->started || rec->close_signals > 0 || rec->ctx_cleared)
        CHECK (context == NULL, "port %d: get_context() %p, expected NULL", rec->index,
               (void *) context);
      else
        {
          CHECK (rec->ctx_gen == context_gen[rec->ctx],
                 "port %d started on a finalized context", rec->index);
          CHECK (context == contexts[rec->ctx], "port %d: get_context() %p, expected %p",
                 rec->index, (void *) context, (void *) contexts[rec->ctx]);
        }
    }

  for (guint i = 0; i < F.bcs->len; i++)
    {
      BcRec *rec = g_ptr_array_index (F.bcs, i);

      if (rec->finalized)
        continue;
      API_BEGIN ();
      CHECK (mp_broadcast_channel_is_closed (rec->obj) == rec->closed,
             "broadcast channel %d: is_closed() wrong", rec->index);
      CHECK ((mp_broadcast_channel_get_context (rec->obj) == NULL) == rec->closed,
             "broadcast channel %d: get_context() wrong", rec->index);
      CHECK (rec->closed || mp_broadcast_channel_get_context (rec->obj) == contexts[rec->ctx],
             "broadcast channel %d: not on its context", rec->index);
      API_END ();
    }
}

/* Closes and releases everything; every object must then be finalized. */
static void
teardown (void)
{
  guint n_ports;

  F.armed_set = FALSE;
  /* Closing makes the drain complete pending receives, which may bring new ports: again
   * until nothing new comes. */
  do
    {
      n_ports = F.ports->len;
      for (guint i = 0; i < F.ports->len; i++)
        {
          PortRec *rec = PORT (i);

          if (rec->finalized || rec->detached)
            continue;
          API_BEGIN ();
          mp_message_port_close (rec->obj);
          API_END ();
          shadow_close_sides (rec->side, TRUE);
        }
      for (guint i = 0; i < F.bcs->len; i++)
        {
          BcRec *rec = g_ptr_array_index (F.bcs, i);

          if (rec->finalized || rec->closed)
            continue;
          rec->closed = TRUE;
          API_BEGIN ();
          mp_broadcast_channel_close (rec->obj);
          API_END ();
          bc_closed (rec);
        }
      drain ();
    }
  while (F.ports->len != n_ports);

  check_quiescent ();
  check_objects ();

  while (F.pool->len > 0)
    {
      PortRec *rec = g_ptr_array_steal_index (F.pool, F.pool->len - 1);

      rec->in_pool = FALSE;
      g_object_unref (rec->obj);
    }
  while (F.bc_pool->len > 0)
    {
      BcRec *rec = g_ptr_array_steal_index (F.bc_pool, F.bc_pool->len - 1);

      rec->in_pool = FALSE;
      g_object_unref (rec->obj);
    }
  drain ();

  for (guint i = 0; i < F.ports->len; i++)
    CHECK (PORT (i)->finalized, "port %d leaked", i);
  for (guint i = 0; i < F.bcs->len; i++)
    CHECK (((BcRec *) g_ptr_array_index (F.bcs, i))->finalized, "broadcast channel %u leaked",
           i);
  for (guint s = 0; s < F.sides->len; s++)
    CHECK (SIDE (s)->closed && g_queue_is_empty (&SIDE (s)->queue), "side %u left open", s);
  for (guint m = 0; m < F.msgs->len; m++)
    CHECK (MSG (m)->fate != M_QUEUED && MSG (m)->fate != M_ASYNC && MSG (m)->fate != M_POSTING,
           "message %u still queued after teardown", MSG (m)->id);
  for (guint i = 0; i < F.posts->len; i++)
    CHECK (POST (i)->state == P_DONE, "async post on port %d never completed",
           POST (i)->port->index);
  for (guint i = 0; i < F.waiters->len; i++)
    CHECK (((Waiter *) g_ptr_array_index (F.waiters, i))->state == W_DONE,
           "receive_async() never completed");
  for (int c = 0; c < N_CTX; c++)
    CHECK (!g_main_context_pending (contexts[c]), "context %d still busy", c);
}

static void
fuzz_reset (void)
{
  memset (&F, 0, sizeof F);
  F.sides = g_array_new (FALSE, TRUE, sizeof (Side));
  F.ports = g_ptr_array_new_with_free_func (g_free);
  F.msgs = g_array_new (FALSE, TRUE, sizeof (Msg));
  F.pool = g_ptr_array_new ();
  F.bcs = g_ptr_array_new_with_free_func (g_free);
  F.bc_pool = g_ptr_array_new ();
  F.waiters = g_ptr_array_new ();
  F.posts = g_ptr_array_new ();
  F.cur_ctx = -1;
  for (int c = 0; c < N_CTX; c++)
    for (int n = 0; n < N_NAMES; n++)
      g_queue_init (&F.bq[c][n]);
}

static void
fuzz_free (void)
{
  for (guint s = 0; s < F.sides->len; s++)
    {
      g_queue_clear (&SIDE (s)->queue);
      g_queue_clear (&SIDE (s)->waiters);
      g_queue_clear (&SIDE (s)->posting);
    }
  for (guint i = 0; i < F.posts->len; i++)
    {
      Post *post = POST (i);

      g_clear_object (&post->cancellable);
      g_free (post);
    }
  g_ptr_array_unref (F.posts);
  for (guint i = 0; i < F.waiters->len; i++)
    {
      Waiter *w = g_ptr_array_index (F.waiters, i);

      g_object_unref (w->cancellable);
      g_free (w);
    }
  g_ptr_array_unref (F.waiters);
  g_array_unref (F.sides);
  g_ptr_array_unref (F.ports);
  g_array_unref (F.msgs);
  g_ptr_array_unref (F.pool);
  g_ptr_array_unref (F.bcs);
  g_ptr_array_unref (F.bc_pool);
}

/* GLib ends a fatal message with G_BREAKPOINT(), a SIGTRAP, which libFuzzer does not catch:
 * the run would die without saving its input. Criticals and warnings abort here instead,
 * once written out. */
static GLogWriterOutput
fuzz_log_writer (GLogLevelFlags   log_level,
                 const GLogField *fields,
                 gsize            n_fields,
                 gpointer         user_data)
{
  GLogWriterOutput output = g_log_writer_default (log_level, fields, n_fields, user_data);

  if (log_level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING))
    abort ();

  return output;
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize (int    *argc,
                      char ***argv)
{
  g_setenv ("G_SLICE", "always-malloc", TRUE);
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
  g_log_set_writer_func (fuzz_log_writer, NULL, NULL);
  for (int c = 0; c < N_CTX; c++)
    contexts[c] = g_main_context_new ();
  not_a_port = g_object_new (G_TYPE_OBJECT, NULL);
  /* Types and the error quark registered once, outside the runs. */
  g_type_ensure (MP_TYPE_MESSAGE_PORT);
  g_type_ensure (MP_TYPE_BROADCAST_CHANNEL);
  (void) MP_ERROR;
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data,
                        size_t         size)
{
  Reader r = { data, size, 0 };

  fuzz_reset ();
  for (guint n = 0; n < MAX_OPS && r.pos < r.size; n++)
    {
      run_op (&r, FALSE);
      check_objects ();
    }
  teardown ();
  fuzz_free ();

  return 0;
}
