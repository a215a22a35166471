/* baselines.c: mp-bench's in-thread implementations behind one interface, the Link
 * (baselines.h): mpport's started port, and the baselines (a) invoke, (b) queue, (c) ring
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * What each baseline is, and why it is one: the top of mp-bench.c, and bench/README.md.
 */

#define _GNU_SOURCE   /* eventfd */

#include <errno.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <gio/gio.h>
#include <mpport/mpport.h>

#include "baselines.h"

#define RING_SIZE             16384u    /* slots of the (c) ring; a power of two */

/* ------------------------------------------------------------------------------------------ */
/* A link: one direction, from producer threads to one receiving context, for each           */
/* implementation. link_start() binds it on the receiving thread; link_send() is called from */
/* the producer (one producer per link for (c)); the handler gets the GVariant.              */
/* ------------------------------------------------------------------------------------------ */

typedef struct
{
  /* Producer side. */
  alignas (64) atomic_size_t tail;
  size_t cached_head;
  guint64 wakes;
  /* Consumer side. */
  alignas (64) atomic_size_t head;
  /* Shared: 1 while the consumer has declared itself idle and wants an eventfd write. */
  alignas (64) atomic_int need_wake;
  int efd;
  alignas (64) GVariant *slots[RING_SIZE];
} Ring;

/* Link is declared in baselines.h. */
struct _Link
{
  Impl impl;
  DeliverFunc deliver;
  gpointer deliver_data;
  GMainContext *context;      /* the receiving context, strong, from link_start() */

  MpMessageChannel *channel;  /* mpport: port1 sends, port2 receives */
  MpMessagePort *tx;
  BenchSink *sink;            /* baselines: the signal emitter */
  GSource *source;            /* (b), (c) */
  Ring *ring;                 /* (c) */

  /* (b): guarded by mutex. */
  alignas (64) GMutex mutex;
  GQueue queue;
  gboolean armed;
  guint64 wakes;
};

typedef struct
{
  GSource parent;
  Link *link;
  gpointer fd_tag;
  gboolean rearmed;
} LinkSource;

typedef struct
{
  Link *link;
  GVariant *data;
} InvokeItem;

static void
on_port_message (MpMessagePort *port,
                 MpMessage     *message,
                 gpointer       user_data)
{
  Link *link = user_data;

  link->deliver (mp_message_get_data (message), link->deliver_data);
}

static void
on_sink_message (BenchSink *sink,
                 GVariant  *data,
                 gpointer   user_data)
{
  Link *link = user_data;

  link->deliver (data, link->deliver_data);
}

static void
emit_and_release (Link     *link,
                  GVariant *data)
{
  g_signal_emit (link->sink, sink_message_signal, 0, data);
  g_variant_unref (data);
}

/* (a) */
static gboolean
invoke_dispatch (gpointer user_data)
{
  InvokeItem *item = user_data;

  g_signal_emit (item->link->sink, sink_message_signal, 0, item->data);
  return G_SOURCE_REMOVE;
}

static void
invoke_item_free (gpointer user_data)
{
  InvokeItem *item = user_data;

  g_variant_unref (item->data);
  g_free (item);
}

/* (b): the DESIGN.md §3 strategy C. Reset the ready time, clear armed, steal the batch. */
static gboolean
queue_source_dispatch (GSource     *source,
                       GSourceFunc  callback,
                       gpointer     user_data)
{
  Link *link = ((LinkSource *) source)->link;
  GQueue batch;
  GList *node;

  g_source_set_ready_time (source, -1);

  g_mutex_lock (&link->mutex);
  link->armed = FALSE;
  batch = link->queue;
  g_queue_init (&link->queue);
  g_mutex_unlock (&link->mutex);

  while ((node = g_queue_pop_head_link (&batch)) != NULL)
    {
      GVariant *data = node->data;

      g_list_free_1 (node);
      emit_and_release (link, data);
    }

  return G_SOURCE_CONTINUE;
}

static GSourceFuncs queue_source_funcs = {
  .dispatch = queue_source_dispatch,
};

/* (c) */
static Ring *
ring_new (void)
{
  Ring *ring = g_aligned_alloc0 (1, sizeof (Ring), 64);

  atomic_init (&ring->tail, 0);
  atomic_init (&ring->head, 0);
  atomic_init (&ring->need_wake, 1);
  ring->efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ring->efd < 0)
    g_error ("eventfd: %s", g_strerror (errno));

  return ring;
}

static void
ring_free (Ring *ring)
{
  close (ring->efd);
  g_aligned_free (ring);
}

/* The wake-up handshake is a store-buffering (Dekker) pair: the producer stores tail then
 * loads need_wake, the consumer stores need_wake then loads tail; at least one of them must
 * see the other's store. Natively a seq_cst fence between store and load orders them.
 * ThreadSanitizer does not model fences (GCC warns with -Wtsan): there the four accesses
 * are seq_cst operations instead, which gives the same guarantee by their single total order. */
#ifdef BENCH_TSAN
#define ring_fence()          ((void) 0)
#define RING_SB_ORDER(order)  memory_order_seq_cst
#else
#define ring_fence()          atomic_thread_fence (memory_order_seq_cst)
#define RING_SB_ORDER(order)  (order)
#endif

static void
ring_push (Ring     *ring,
           GVariant *data)
{
  size_t tail = atomic_load_explicit (&ring->tail, memory_order_relaxed);

  while (tail - ring->cached_head >= RING_SIZE)
    {
      ring->cached_head = atomic_load_explicit (&ring->head, memory_order_acquire);
      if (tail - ring->cached_head >= RING_SIZE)
        sched_yield ();
    }
  ring->slots[tail & (RING_SIZE - 1)] = data;
  atomic_store_explicit (&ring->tail, tail + 1, RING_SB_ORDER (memory_order_release));

  /* Pairs with the consumer's store of need_wake then load of tail. */
  ring_fence ();
  if (atomic_load_explicit (&ring->need_wake, RING_SB_ORDER (memory_order_relaxed)) &&
      atomic_exchange_explicit (&ring->need_wake, 0, memory_order_acq_rel))
    {
      if (eventfd_write (ring->efd, 1) < 0)
        g_error ("eventfd_write: %s", g_strerror (errno));
      ring->wakes++;
    }
}

static gboolean
ring_source_dispatch (GSource     *source,
                      GSourceFunc  callback,
                      gpointer     user_data)
{
  LinkSource *self = (LinkSource *) source;
  Link *link = self->link;
  Ring *ring = link->ring;
  guint budget = BASELINE_BUDGET;
  size_t head = atomic_load_explicit (&ring->head, memory_order_relaxed);

  if (g_source_query_unix_fd (source, self->fd_tag) & G_IO_IN)
    {
      eventfd_t value;

      (void) eventfd_read (ring->efd, &value);
    }
  if (self->rearmed)
    {
      g_source_set_ready_time (source, -1);
      self->rearmed = FALSE;
    }

  for (;;)
    {
      size_t tail = atomic_load_explicit (&ring->tail, memory_order_acquire);

      while (head != tail && budget > 0)
        {
          GVariant *data = ring->slots[head & (RING_SIZE - 1)];

          head++;
          atomic_store_explicit (&ring->head, head, memory_order_release);
          budget--;
          emit_and_release (link, data);
        }

      if (budget == 0)
        {
          /* Yield to the main loop; come back at once. */
          g_source_set_ready_time (source, 0);
          self->rearmed = TRUE;
          break;
        }

      /* Empty: declare idle, then look again (a push after this look writes the eventfd). */
      atomic_store_explicit (&ring->need_wake, 1, memory_order_seq_cst);
      ring_fence ();
      if (atomic_load_explicit (&ring->tail, RING_SB_ORDER (memory_order_acquire)) == head)
        break;
      /* More came: stay awake. A producer that already took need_wake woke us once more. */
      atomic_store_explicit (&ring->need_wake, 0, memory_order_relaxed);
    }

  return G_SOURCE_CONTINUE;
}

static GSourceFuncs ring_source_funcs = {
  .dispatch = ring_source_dispatch,
};

Link *
link_new (Impl impl)
{
  Link *link = g_aligned_alloc0 (1, sizeof (Link), 64);

  link->impl = impl;
  switch (impl)
    {
    case IMPL_MPPORT:
      link->channel = mp_message_channel_new ();
      link->tx = mp_message_channel_get_port1 (link->channel);
      break;
    case IMPL_QUEUE:
      g_mutex_init (&link->mutex);
      g_queue_init (&link->queue);
      G_GNUC_FALLTHROUGH;
    case IMPL_INVOKE:
    case IMPL_RING:
      link->sink = g_object_new (BENCH_TYPE_SINK, NULL);
      g_signal_connect (link->sink, "message", G_CALLBACK (on_sink_message), link);
      if (impl == IMPL_RING)
        link->ring = ring_new ();
      break;
    case N_IMPLS:
    default:
      g_assert_not_reached ();
    }

  return link;
}

/* On the receiving thread, with its Loop pushed. */
void
link_start (Link        *link,
            DeliverFunc  deliver,
            gpointer     deliver_data)
{
  LinkSource *source;

  link->deliver = deliver;
  link->deliver_data = deliver_data;
  link->context = g_main_context_ref_thread_default ();

  switch (link->impl)
    {
    case IMPL_MPPORT:
      {
        MpMessagePort *rx = mp_message_channel_get_port2 (link->channel);

        g_signal_connect (rx, "message", G_CALLBACK (on_port_message), link);
        mp_message_port_start (rx);
      }
      break;
    case IMPL_QUEUE:
      source = (LinkSource *) g_source_new (&queue_source_funcs, sizeof (LinkSource));
      source->link = link;
      link->source = (GSource *) source;
      g_source_set_static_name (link->source, "mp-bench queue");
      g_source_attach (link->source, link->context);
      break;
    case IMPL_RING:
      source = (LinkSource *) g_source_new (&ring_source_funcs, sizeof (LinkSource));
      source->link = link;
      source->fd_tag = g_source_add_unix_fd (&source->parent, link->ring->efd, G_IO_IN);
      link->source = (GSource *) source;
      g_source_set_static_name (link->source, "mp-bench ring");
      g_source_attach (link->source, link->context);
      break;
    case IMPL_INVOKE:
      break;
    case N_IMPLS:
    default:
      g_assert_not_reached ();
    }
}

/* Sends @data, whose reference (floating or not) is taken. For mpport a floating reference
 * goes straight to post_message(), as an application would write it. */
void
link_send (Link     *link,
           GVariant *data)
{
  switch (link->impl)
    {
    case IMPL_MPPORT:
      if (g_variant_is_floating (data))
        mp_message_port_post_message (link->tx, data, NULL, 0, NULL);
      else
        {
          mp_message_port_post_message (link->tx, data, NULL, 0, NULL);
          g_variant_unref (data);
        }
      break;
    case IMPL_INVOKE:
      {
        InvokeItem *item = g_new (InvokeItem, 1);

        item->link = link;
        item->data = g_variant_ref_sink (data);
        g_main_context_invoke_full (link->context, G_PRIORITY_DEFAULT, invoke_dispatch, item,
                                    invoke_item_free);
      }
      break;
    case IMPL_QUEUE:
      {
        gboolean wake;

        data = g_variant_ref_sink (data);
        g_mutex_lock (&link->mutex);
        g_queue_push_tail (&link->queue, data);
        wake = !link->armed;
        link->armed = TRUE;
        if (wake)
          link->wakes++;
        g_mutex_unlock (&link->mutex);
        /* The source outlives every producer: no lock needed around it here. */
        if (wake)
          g_source_set_ready_time (link->source, 0);
      }
      break;
    case IMPL_RING:
      ring_push (link->ring, g_variant_ref_sink (data));
      break;
    case N_IMPLS:
    default:
      g_assert_not_reached ();
    }
}

guint64
link_wakes (Link *link)
{
  switch (link->impl)
    {
    case IMPL_QUEUE:
      return link->wakes;
    case IMPL_RING:
      return link->ring->wakes;
    case IMPL_MPPORT:
    case IMPL_INVOKE:
    case N_IMPLS:
    default:
      return 0;
    }
}

/* On the receiving thread, once every producer is done. */
void
link_free (Link *link)
{
  switch (link->impl)
    {
    case IMPL_MPPORT:
      mp_message_port_close (link->tx);
      mp_message_port_close (mp_message_channel_get_port2 (link->channel));
      g_object_unref (link->channel);
      break;
    case IMPL_QUEUE:
    case IMPL_RING:
      g_source_destroy (link->source);
      g_source_unref (link->source);
      if (link->impl == IMPL_QUEUE)
        {
          g_queue_clear_full (&link->queue, (GDestroyNotify) g_variant_unref);
          g_mutex_clear (&link->mutex);
        }
      else
        ring_free (link->ring);
      g_object_unref (link->sink);
      break;
    case IMPL_INVOKE:
      g_object_unref (link->sink);
      break;
    case N_IMPLS:
    default:
      g_assert_not_reached ();
    }

  g_clear_pointer (&link->context, g_main_context_unref);
  g_aligned_free (link);
}
