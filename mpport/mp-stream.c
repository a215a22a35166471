/* mp-stream.c: ports entangled with ports of another process, over one stream
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "mp-frames-private.h"
#include "mp-i18n-private.h"
#include "mp-message-port-private.h"
#include "mp-message-private.h"
#include "mp-stream-private.h"
#include "mp-waker-private.h"
#include "mp-wire-private.h"
#include "mp-worker-private.h"

/* A stream is one D-Bus peer-to-peer connection that carries any number of ports, each
 * named by an id (docs/wire.md). A port of the stream is an ordinary local channel: the
 * application holds one end, the stream the other, its *relay*: a port started on mpport's
 * worker thread. What the application posts lands in the relay's inbox, like any post, and
 * the relay's "message" handler puts it in the stream's outbox, which goes out as one Post
 * signal per main-loop iteration of the worker thread (a burst of posts costs one D-Bus
 * message). What arrives is read by a filter in GDBus's own worker thread, which decodes it
 * and posts it on the relay, so it lands in the application's inbox with one wake-up per
 * burst, as any local post does. The application's end keeps every guarantee of a local
 * port: FIFO, exactly once, "close" after the data posted before it, its own context.
 *
 * A port transferred to the other process is simply adopted: the port object that travels
 * in the message is owned by the stream, gets an id, and is started on the worker thread as
 * one more relay: its queued messages follow the message that carried it. A port that
 * arrives is a new local channel whose one end is handed to the application in the message.
 * A port that travels back is relayed by the process it passed through (see docs/wire.md).
 *
 * Between two mpport processes the posts do not take D-Bus signals but the direct path: a
 * socket the server offers in its Hello (passed as a file descriptor), on which the same
 * bodies travel as frames (mp-frames.c), read and written on mpport's worker thread: no
 * GDBus marshalling, no hop through GDBus's thread. The D-Bus connection stays beside it,
 * for the handshake and as the stream's life line.
 *
 * A post without transfers made while its relay holds nothing skips the relay: the
 * relay's sink (link_sink_post(), MpPipeSink in mp-pipe-private.h) puts it in the outbox
 * from the posting thread, which also writes a lone post at once on the direct path. The
 * worker thread then only writes; a burst's posts for one port reach the application's
 * inbox under one lock (mp_pipe_side_send_all()).
 *
 * Threads: the relays, the outbox's flush, the connection's set-up and its "closed", and
 * the direct path's reading run on mpport's worker thread; the filter runs in GDBus's
 * worker thread; the sink runs in any thread that posts. The table of ports, the outbox,
 * the ports' flow-control counts and backlogs are shared under the stream's lock (taken
 * after a side's lock, never before one); no user code runs under it. */

typedef struct _MpStream MpStream;

/* The posts of a Post signal being gathered, column by column (MP_STREAM_POST_TYPE). */
typedef struct
{
  GArray *ports;        /* guint64 */
  GArray *types;        /* guint32, indexes of type_table */
  GPtrArray *type_table; /* char *, owned */
  GArray *ends;         /* guint32 */
  GByteArray *payloads;
  GArray *n_transfers;  /* guint32 */
  GArray *transfers;    /* guint64 */
} MpStreamBurst;

static void
burst_init (MpStreamBurst *burst)
{
  burst->ports = g_array_new (FALSE, FALSE, sizeof (guint64));
  burst->types = g_array_new (FALSE, FALSE, sizeof (guint32));
  burst->type_table = g_ptr_array_new_with_free_func (g_free);
  burst->ends = g_array_new (FALSE, FALSE, sizeof (guint32));
  burst->payloads = g_byte_array_new ();
  burst->n_transfers = g_array_new (FALSE, FALSE, sizeof (guint32));
  burst->transfers = g_array_new (FALSE, FALSE, sizeof (guint64));
}

static void
burst_clear (MpStreamBurst *burst)
{
  g_array_unref (burst->ports);
  g_array_unref (burst->types);
  g_ptr_array_unref (burst->type_table);
  g_array_unref (burst->ends);
  g_byte_array_unref (burst->payloads);
  g_array_unref (burst->n_transfers);
  g_array_unref (burst->transfers);
}

static void
burst_free (gpointer data)
{
  burst_clear (data);
  g_free (data);
}

/* The bytes the burst takes in a D-Bus body, near enough (the type table aside). */
static gsize
burst_size (MpStreamBurst *burst)
{
  return burst->payloads->len + burst->ports->len * (8 + 4 + 4 + 4) + burst->transfers->len * 8;
}

static void
burst_append (MpStreamBurst  *burst,
              guint64         port,
              const char     *type_string,
              gconstpointer   payload,
              gsize           size,
              const guint64  *transfers,
              guint           n_transfers)
{
  guint32 type = G_MAXUINT32;
  guint32 end;

  /* A burst mostly carries one or two types: the last ones are looked at first. */
  for (guint i = burst->type_table->len; i > 0 && type == G_MAXUINT32; i--)
    if (strcmp (g_ptr_array_index (burst->type_table, i - 1), type_string) == 0)
      type = i - 1;
  if (type == G_MAXUINT32)
    {
      type = burst->type_table->len;
      g_ptr_array_add (burst->type_table, g_strdup (type_string));
    }

  g_byte_array_append (burst->payloads, payload, size);
  end = burst->payloads->len;
  g_array_append_val (burst->ports, port);
  g_array_append_val (burst->types, type);
  g_array_append_val (burst->ends, end);
  g_array_append_val (burst->n_transfers, n_transfers);
  g_array_append_vals (burst->transfers, transfers, n_transfers);
}

static GVariant *
fixed_array (GArray             *array,
             const GVariantType *element_type)
{
  return g_variant_new_fixed_array (element_type, array->data, array->len,
                                    g_array_get_element_size (array));
}

/* The Post body of @burst (floating). */
static GVariant *
burst_to_body (MpStreamBurst *burst)
{
  g_autoptr(GBytes) payloads = g_byte_array_free_to_bytes (g_steal_pointer (&burst->payloads));

  burst->payloads = g_byte_array_new ();
  g_ptr_array_add (burst->type_table, NULL);

  return g_variant_new ("(@at@au^as@au@ay@au@at)",
                        fixed_array (burst->ports, G_VARIANT_TYPE_UINT64),
                        fixed_array (burst->types, G_VARIANT_TYPE_UINT32),
                        (const char *const *) burst->type_table->pdata,
                        fixed_array (burst->ends, G_VARIANT_TYPE_UINT32),
                        g_variant_new_from_bytes (G_VARIANT_TYPE_BYTESTRING, payloads, TRUE),
                        fixed_array (burst->n_transfers, G_VARIANT_TYPE_UINT32),
                        fixed_array (burst->transfers, G_VARIANT_TYPE_UINT64));
}

/* GVariant's framing: the size of the offsets of a container whose body takes
 * @body_size bytes and has @n_offsets framing offsets (gvariant-serialiser.c's
 * gvs_calculate_total_size() and gvs_get_offset_size()). */
static guint
framing_offset_size (gsize body_size,
                     gsize n_offsets)
{
  if (body_size + n_offsets == 0)
    return 0;
  if (body_size + n_offsets <= G_MAXUINT8)
    return 1;
  if (body_size + 2 * n_offsets <= G_MAXUINT16)
    return 2;
  if (body_size + 4 * n_offsets <= G_MAXUINT32)
    return 4;
  return 8;
}

static void
append_le (GByteArray *out,
           guint64     value,
           guint       size)
{
  guint8 bytes[8];

  for (guint i = 0; i < size; i++)
    bytes[i] = (guint8) (value >> (8 * i));
  g_byte_array_append (out, bytes, size);
}

static void
append_padding (GByteArray *out,
                guint       alignment)
{
  static const guint8 zeros[8] = { 0, };

  g_byte_array_append (out, zeros, (alignment - out->len % alignment) % alignment);
}

/* Appends @n little-endian values of @size bytes each, aligned to @size. */
static void
append_fixed (GByteArray    *out,
              gconstpointer  values,
              gsize          n,
              guint          size)
{
  append_padding (out, size);
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  g_byte_array_append (out, values, n * size);
#else
  for (gsize i = 0; i < n; i++)
    append_le (out, size == 8 ? ((const guint64 *) values)[i] : ((const guint32 *) values)[i],
               size);
#endif
}

GBytes *
mp_stream_encode_post (guint                n,
                       const guint64       *ports,
                       const guint32       *types,
                       const char *const   *table,
                       guint                n_table,
                       const guint32       *ends,
                       const guint8        *payloads,
                       gsize                payloads_size,
                       const guint32       *counts,
                       const guint64       *transfers,
                       guint                n_transfers)
{
  GByteArray *out = g_byte_array_sized_new (64 + n * 20 + payloads_size + n_transfers * 8);
  gsize member_ends[6];
  gsize start, strings_size = 0;
  guint offset_size;

  /* The members in order, each aligned to its own alignment from the tuple's start; the end
   * of each but the last is a framing offset of the tuple. */
  append_fixed (out, ports, n, 8);
  member_ends[0] = out->len;
  append_fixed (out, types, n, 4);
  member_ends[1] = out->len;

  /* as: the strings with their NULs, then the end of each, relative to the array's start,
   * in the size its whole size calls for. */
  start = out->len;
  for (guint i = 0; i < n_table; i++)
    strings_size += strlen (table[i]) + 1;
  offset_size = framing_offset_size (strings_size, n_table);
  for (guint i = 0; i < n_table; i++)
    g_byte_array_append (out, (const guint8 *) table[i], strlen (table[i]) + 1);
  {
    gsize end = 0;

    for (guint i = 0; i < n_table; i++)
      {
        end += strlen (table[i]) + 1;
        append_le (out, end, offset_size);
      }
  }
  member_ends[2] = out->len;
  g_assert (out->len - start == strings_size + (gsize) n_table * offset_size);

  append_fixed (out, ends, n, 4);
  member_ends[3] = out->len;
  g_byte_array_append (out, payloads, payloads_size);
  member_ends[4] = out->len;
  append_fixed (out, counts, n, 4);
  member_ends[5] = out->len;
  append_fixed (out, transfers, n_transfers, 8);

  /* The tuple's framing offsets, the first member's last. */
  offset_size = framing_offset_size (out->len, G_N_ELEMENTS (member_ends));
  for (guint i = G_N_ELEMENTS (member_ends); i > 0; i--)
    append_le (out, member_ends[i - 1], offset_size);

  return g_byte_array_free_to_bytes (out);
}

/* Flow control, receiving side (docs/wire.md): what arrived on one port and what its
 * application took since. The feed is hooked on the side whose inbox the port's posts land
 * in (the application's end), which reports every message taken out of it; once a quarter
 * of the window was taken, the worker thread grants it back to the sender with a Credit. */
typedef struct
{
  MpPipeFeed parent;
  gatomicrefcount ref_count;
  /* Unowned: a feed is hooked on its side only while its link (which holds the stream) is
   * alive, and the stream frees the feeds it still queues. */
  MpStream *stream;
  guint64 id;               /* immutable */
  /* Cost taken by the application and not granted back yet. Atomic. */
  guint pending;
  /* In the stream's grant queue. Atomic. */
  int queued;
  /* Cost granted back so far (modulo 2^32, as received). Atomic: added on the worker
   * thread, read by the filter. */
  guint granted;
  /* Cost received so far. The filter's (GDBus's worker thread) only. */
  guint received;
  /* Messages that were queued at the fed side (or waited to be) before the feed was hooked:
   * posted in this process before the port's other end left for the other one, so not
   * taken from what that one sent. They are taken first (FIFO) and counted neither as
   * credit nor as taken. Guarded by the fed side's lock. */
  guint skip;
  /* The high-water mark of the fed side, and how many messages its application took (mod
   * 2^32): atomic, written under the fed side's lock. What the worker thread last told the
   * other side of them (a Room): taken_told atomic (read by the feed), mark_told the worker
   * thread's. */
  guint mark;
  guint taken;
  guint taken_told;
  guint mark_told;
} MpStreamFeed;

typedef struct
{
  MpStream *stream;         /* strong */
  guint64 id;               /* immutable */
  MpMessagePort *relay;     /* strong, immutable */
  MpStreamFeed *feed;       /* strong, immutable */
  /* The side @feed is hooked on until the link finishes: the relay's peer. Immutable. */
  MpPipeSide *fed;
  gulong close_id;          /* worker thread only */
  /* The other side closed it (or the connection is gone): no Close goes back. Guarded by
   * stream->lock. */
  gboolean remote_closed;
  /* Credit the other side granted, not yet applied. Guarded by stream->lock. */
  guint credit_in;
  /* The last Room the other side sent, not yet applied (room_in). Guarded by stream->lock. */
  gboolean room_in;
  guint room_mark;
  guint room_taken;
  /* Flow control, sending side: the cost sent and not yet granted back, and the posts that
   * wait for credit (MpMessage, strong), oldest first. Guarded by stream->lock: the sink
   * reads them in the posting thread. Only the worker thread takes posts out of backlog. */
  guint in_flight;
  GQueue backlog;
  /* Hooked on the relay's side while the link is started: a post made while nothing waits
   * ahead of it goes to the outbox from the posting thread (link_sink_post()). */
  MpPipeSink sink;
  /* Posts without transfers that the sink took while the window was full, encoded as they
   * will be sent (a burst of this port only, from held_next on; held.ports is NULL until
   * first used): older than every post in backlog. Guarded by stream->lock. */
  MpStreamBurst held;
  guint held_next;
  /* The relay closed while posts waited for credit: the Close goes after them. Worker
   * thread only. */
  gboolean close_after_backlog;
  /* Started (link_start() ran). Worker thread only. */
  gboolean started;
  /* Out of the table and disconnected. Worker thread only. */
  gboolean finished;
} MpStreamLink;

struct _MpStream
{
  gatomicrefcount ref_count;

  /* Immutable. The server names its ports with even ids, the client with odd ones; id 0 is
   * the port both sides made with the stream. */
  gboolean server;

  GMutex lock;
  /* id -> MpStreamLink: the ports open on this side. Guarded by lock. */
  GHashTable *links;
  /* The highest id this side gave a port; guarded by lock (written on the worker thread,
   * read by the filter to tell a closed port from one that never existed). */
  guint64 own_max_id;
  /* The connection is closed or failed, or every port closed and it is being shut: new
   * ports close at once, nothing more is sent. Guarded by lock. */
  gboolean closing;
  /* The outbox: MP_STREAM_POST_ITEM_TYPE values and the ids to close after them, in order,
   * and the bytes they add to a Post body; a flush is scheduled while it is not empty.
   * Guarded by lock. */
  MpStreamBurst out_posts;
  /* Bursts that reached the body cap, oldest first (MpStreamBurst, owned): the flush sends
   * them before out_posts. */
  GQueue out_full;
  /* The flush took the outbox and is writing it (no post may be written before it), and
   * when a post was last written (monotonic): a lone post is written by its poster
   * (link_sink_post()). Guarded by lock. */
  gboolean flushing;
  gint64 last_write;
  /* app_reads at the last write: a post made after the application's context read
   * something (an answer to a request) is lone however soon it comes. */
  int last_write_reads;
  GArray *out_closes;
  gboolean flush_scheduled;
  /* Credits to send: (id, cost) pairs. Guarded by lock; sent by the flush. */
  GArray *out_credits;
  /* Rooms to send: (id, mark, taken) as guint64 triples. Guarded by lock; sent by the flush. */
  GArray *out_rooms;
  /* Ids of ports the other side granted credit to, for the worker thread to apply; a drain
   * is scheduled while it is not empty. Guarded by lock. */
  GArray *credited;
  gboolean drain_scheduled;

  /* Feeds (strong) whose application took enough to grant, and the source on the worker
   * thread that grants it (made once the connection is up; atomic pointer, for the feeds'
   * lock-free wake-up). */
  GAsyncQueue *grant_queue;
  GSource *grant_source;

  /* Set on the worker thread before the filter is added; immutable from then on. */
  GDBusConnection *connection;
  gulong closed_id;
  guint filter_id;

  /* Both Hellos were seen and the data path chosen (stream_begin_cb() ran): data may be
   * sent. Worker thread only. */
  gboolean begun;

  /* Made by mp_stream_new_detached(): no connection, relays never start. Immutable. */
  gboolean detached;

  /* The direct path (docs/wire.md): posts, closes and credits travel as frames on a socket
   * of their own once both Hellos agreed. direct: set by the filter at the other side's
   * Hello (atomic); offered_fd: the server's end of the socket it offered, until then;
   * direct_fd: the end to use, handed from the filter to the worker thread (both guarded
   * by lock). frames: from stream_begin() to the connection's end; set and cleared by the
   * worker thread under lock, read by others under lock. */
  int direct;
  int offered_fd;
  int direct_fd;
  MpFrames *frames;
  /* The direct path is also read on the context of the application's end of port 0, once
   * it is started there (stream_attach_app_reader()): a post then reaches the application
   * with no hop through the worker thread. app_reader and app_context (strong): worker
   * thread only. app_polling: the context is in its poll, so its thread will read when the
   * socket is readable; app_reads: how often it did (both atomic). deferred_reads:
   * app_reads when the worker thread last looked (worker thread only). */
  GSource *app_reader;
  GMainContext *app_context;
  int app_polling;
  int app_reads;
  int deferred_reads;

  /* Worker thread only. ended: the connection closed. */
  guint64 next_id;
  gboolean shut;
  gboolean ended;
  /* The end of the connection: this side closed its last port itself (its Close of last_id
   * went last), so it lingers until the other side, which closes the connection once it has
   * read that Close, does (both guarded by lock). close_started: it closes it; linger_source:
   * the wait's end (both worker thread only). */
  gboolean linger;
  guint64 last_id;
  gboolean close_started;
  GSource *linger_source;
  /* The other side's Close of last_id arrived (both closed it at once): it sends nothing
   * more, and the connection can close. Atomic (set by the filter). */
  int peer_done;
  MpStreamReadyFunc ready;
  gpointer ready_data;
  MpMessagePort *ready_port;   /* strong until ready() is called */
  GIOStream *io;
  GCancellable *cancellable;
  GDBusConnectionFlags flags;

  /* GDBus's worker thread only (the filter). */
  gboolean hello_seen;
  /* Set once, by the filter or by the worker thread. Atomic. */
  int broken;
  guint64 peer_max_id;
};

static void stream_schedule_flush_locked (MpStream *self);
static void stream_break (MpStream   *self,
                          const char *format,
                          ...) G_GNUC_PRINTF (2, 3);
static void streams_forget (MpStream *self);
static void link_start (MpStreamLink *link,
                        gboolean      with_sink);
static void link_install_sink (MpStreamLink *link);

static MpStream *
stream_ref (MpStream *self)
{
  g_atomic_ref_count_inc (&self->ref_count);

  return self;
}

static void
stream_unref (gpointer data)
{
  MpStream *self = data;

  if (!g_atomic_ref_count_dec (&self->ref_count))
    return;

  streams_forget (self);
  g_assert (g_hash_table_size (self->links) == 0);
  g_hash_table_unref (self->links);
  burst_clear (&self->out_posts);
  g_queue_clear_full (&self->out_full, burst_free);
  g_array_unref (self->out_closes);
  g_array_unref (self->out_credits);
  g_array_unref (self->out_rooms);
  g_array_unref (self->credited);
  g_async_queue_unref (self->grant_queue);
  g_assert (self->grant_source == NULL);
  g_assert (self->frames == NULL);
  g_assert (self->app_reader == NULL);
  if (self->offered_fd >= 0)
    close (self->offered_fd);
  if (self->direct_fd >= 0)
    close (self->direct_fd);
  g_clear_object (&self->connection);
  g_clear_object (&self->io);
  g_clear_object (&self->cancellable);
  g_mutex_clear (&self->lock);
  g_free (self);
}

static gboolean
is_own_id (MpStream *self,
           guint64   id)
{
  return id != 0 && ((id & 1) == 0) == self->server;
}

/* ------------------------------------------------------------------------------------------
 * Flow control (docs/wire.md): every port of the stream has a window of MP_STREAM_WINDOW
 * in cost (MP_STREAM_COST_OVERHEAD plus the payload's bytes, per post). A sender keeps what
 * it sent and was not granted back under the window (one post may cross it); what waits
 * stays in the relay's backlog. A receiver grants back what its application took, and breaks
 * a stream whose sender went over the window. So a peer can make this process hold at most a
 * window (and one post) per port it has open here, whatever it sends.
 */

static MpStreamFeed *
feed_ref (MpStreamFeed *feed)
{
  g_atomic_ref_count_inc (&feed->ref_count);

  return feed;
}

static void
feed_unref (gpointer data)
{
  MpStreamFeed *feed = data;

  if (!g_atomic_ref_count_dec (&feed->ref_count))
    return;

  g_free (feed);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MpStreamFeed, feed_unref)

/* Any thread: has the worker thread look at @feed (grant_source_dispatch()). */
static void
feed_queue (MpStreamFeed *feed)
{
  MpStream *stream = feed->stream;

  if (g_atomic_int_compare_and_exchange (&feed->queued, 0, 1))
    {
      GSource *source;

      g_async_queue_push (stream->grant_queue, feed_ref (feed));
      /* Lock-free: this runs under a side's lock. A detached stream has no source. */
      source = g_atomic_pointer_get (&stream->grant_source);
      if (source != NULL)
        mp_wakeable_source_wake (source);
    }
}

/* Any thread, under the lock of the fed side: @cost more was taken by the application,
 * in one more message. */
static void
feed_add (MpStreamFeed *feed,
          guint         cost)
{
  guint pending = (guint) g_atomic_int_add ((int *) &feed->pending, (int) cost) + cost;
  guint taken = (guint) g_atomic_int_add ((int *) &feed->taken, 1) + 1;
  guint mark = (guint) g_atomic_int_get (&feed->mark);

  /* With a mark, the sender hears of every quarter of it taken (at least every message
   * for a mark under 4): a sender whose posts wait has sent at least the mark, so once the
   * application took all that arrived, at least that much is untold. */
  if (pending >= MP_STREAM_WINDOW / 4 ||
      (mark > 0 && taken - (guint) g_atomic_int_get (&feed->taken_told) >= MAX (mark / 4, 1)))
    feed_queue (feed);
}

/* The pipe's hook: the fed side's mark changed (under its lock). */
static void
feed_mark_changed (MpPipeFeed *parent,
                   guint       mark)
{
  MpStreamFeed *feed = (MpStreamFeed *) parent;

  g_atomic_int_set (&feed->mark, mark);
  feed_queue (feed);
}

static guint
message_cost (MpMessage *message)
{
  return MP_STREAM_COST_OVERHEAD + (message->data != NULL ? g_variant_get_size (message->data) : 0);
}

/* The pipe's hook (mp-pipe-private.h): a message left the fed side's inbox. */
static void
feed_consumed (MpPipeFeed *parent,
               MpMessage  *message)
{
  MpStreamFeed *feed = (MpStreamFeed *) parent;

  if (G_UNLIKELY (feed->skip > 0))
    {
      feed->skip--;
      return;
    }
  feed_add (feed, message_cost (message));
}

/* A new link for @relay (transfer full), not in the table yet; no lock held. */
static MpStreamLink *
link_new (MpStream      *stream,
          guint64        id,
          MpMessagePort *relay)
{
  MpStreamLink *link = g_new0 (MpStreamLink, 1);
  MpPipeSide *side = mp_message_port_get_side (relay);

  link->stream = stream_ref (stream);
  link->id = id;
  link->relay = relay;
  g_queue_init (&link->backlog);

  link->feed = g_new0 (MpStreamFeed, 1);
  link->feed->parent.consumed = feed_consumed;
  link->feed->parent.mark_changed = feed_mark_changed;
  g_atomic_ref_count_init (&link->feed->ref_count);
  link->feed->stream = stream;
  link->feed->id = id;

  /* From now on, posts towards the relay are checked and encoded as they are made, and
   * wait for the other process's room, not for a mark of this one. */
  g_mutex_lock (&side->mutex);
  mp_pipe_side_make_remote_locked (side);
  g_mutex_unlock (&side->mutex);

  /* And what the application takes from the other end is counted. */
  link->fed = mp_pipe_side_get_peer (side);
  g_mutex_lock (&link->fed->mutex);
  mp_pipe_side_set_feed_locked (link->fed, &link->feed->parent);
  link->feed->skip = mp_pipe_side_count_queued_locked (link->fed);
  /* A mark set before: told once the link starts (link_start()). */
  link->feed->mark = mp_pipe_side_get_high_water_mark_locked (link->fed);
  g_mutex_unlock (&link->fed->mutex);

  return link;
}

/* No feed call runs for @link once this returns (they run under the fed side's lock). */
static void
link_unhook (MpStreamLink *link)
{
  MpPipeSide *side = mp_message_port_get_side (link->relay);

  g_mutex_lock (&link->fed->mutex);
  mp_pipe_side_set_feed_locked (link->fed, NULL);
  g_mutex_unlock (&link->fed->mutex);

  /* Once unhooked under the side's lock, no poster is in the sink any more. */
  g_mutex_lock (&side->mutex);
  mp_pipe_side_set_sink_locked (side, NULL);
  g_mutex_unlock (&side->mutex);
}

static void
link_free (MpStreamLink *link)
{
  link_unhook (link);
  feed_unref (link->feed);

  g_queue_clear_full (&link->backlog, (GDestroyNotify) mp_message_unref);
  if (link->held.ports != NULL)
    burst_clear (&link->held);
  g_object_unref (link->relay);
  stream_unref (link->stream);
  g_free (link);
}

/* ------------------------------------------------------------------------------------------
 * Sending (worker thread)
 */

static void
emit_signal (MpStream   *self,
             const char *member,
             GVariant   *body)
{
  /* Fails only once the connection is closed, and "closed" then closes every port. */
  g_dbus_connection_emit_signal (self->connection, NULL, MP_STREAM_PATH, MP_STREAM_INTERFACE,
                                 member, body, NULL);
}

enum {
  FRAME_POST = 1,
  FRAME_CLOSE = 2,
  FRAME_CREDIT = 3,
  FRAME_ROOM = 4,
};

/* Sends the body (floating) of a Post, Close or Credit: on the direct path if there is one,
 * else as a signal. Worker thread. */
static void
send_data (MpStream   *self,
           const char *member,
           guint8      kind,
           GVariant   *body)
{
  g_autoptr(GVariant) owned = g_variant_ref_sink (body);
  g_autoptr(GBytes) bytes = NULL;

  if (self->frames == NULL)
    {
      emit_signal (self, member, owned);
      return;
    }

#if G_BYTE_ORDER == G_BIG_ENDIAN
  {
    GVariant *swapped = g_variant_take_ref (g_variant_byteswap (owned));

    g_variant_unref (owned);
    owned = swapped;
  }
#endif
  bytes = g_variant_get_data_as_bytes (owned);
  mp_frames_send (self->frames, kind, bytes);
}

/* Sends @burst as one Post: on the direct path written directly (mp_stream_encode_post()),
 * as a signal through GVariant. Worker thread. */
static void
send_burst (MpStream      *self,
            MpStreamBurst *burst)
{
  g_autoptr(GBytes) body = NULL;

  if (self->frames == NULL)
    {
      send_data (self, MP_STREAM_POST, FRAME_POST, burst_to_body (burst));
      return;
    }

  body = mp_stream_encode_post (burst->ports->len, (const guint64 *) (gpointer) burst->ports->data,
                                (const guint32 *) (gpointer) burst->types->data,
                                (const char *const *) burst->type_table->pdata,
                                burst->type_table->len,
                                (const guint32 *) (gpointer) burst->ends->data,
                                burst->payloads->data, burst->payloads->len,
                                (const guint32 *) (gpointer) burst->n_transfers->data,
                                (const guint64 *) (gpointer) burst->transfers->data,
                                burst->transfers->len);
  mp_frames_send (self->frames, FRAME_POST, body);
}

/* The flush: everything in the outbox, as one Post signal (or a few, for big posts) and
 * then one Close signal. Runs once per main-loop iteration of the worker thread that left
 * something in the outbox, after the relays (it has a lower priority): a burst of posts on
 * any ports of the stream goes out together. */
static gboolean
stream_flush_cb (gpointer data)
{
  MpStream *self = data;
  MpStreamBurst posts, *burst;
  GQueue full;
  g_autoptr(GArray) closes = NULL;
  g_autoptr(GArray) credits = NULL;
  g_autoptr(GArray) rooms = NULL;
  gboolean send;

  g_mutex_lock (&self->lock);
  full = self->out_full;
  g_queue_init (&self->out_full);
  posts = self->out_posts;
  burst_init (&self->out_posts);
  closes = g_steal_pointer (&self->out_closes);
  credits = g_steal_pointer (&self->out_credits);
  rooms = g_steal_pointer (&self->out_rooms);
  self->out_closes = g_array_new (FALSE, FALSE, sizeof (guint64));
  self->out_credits = g_array_new (FALSE, FALSE, sizeof (guint64));
  self->out_rooms = g_array_new (FALSE, FALSE, sizeof (guint64));
  self->flush_scheduled = FALSE;
  self->flushing = TRUE;
  send = self->connection != NULL;
  g_mutex_unlock (&self->lock);

  /* Credits first: they may unblock the other side's posts. */
  if (send && credits->len > 0)
    {
      GVariantBuilder builder;

      g_variant_builder_init (&builder, G_VARIANT_TYPE ("a(tt)"));
      for (guint i = 0; i + 1 < credits->len; i += 2)
        g_variant_builder_add (&builder, "(tt)", g_array_index (credits, guint64, i),
                               g_array_index (credits, guint64, i + 1));
      send_data (self, MP_STREAM_CREDIT, FRAME_CREDIT, g_variant_new ("(a(tt))", &builder));
    }
  while ((burst = g_queue_pop_head (&full)) != NULL)
    {
      if (send)
        send_burst (self, burst);
      burst_free (burst);
    }
  if (send && posts.ports->len > 0)
    send_burst (self, &posts);
  burst_clear (&posts);
  if (send && closes->len > 0)
    send_data (self, MP_STREAM_CLOSE, FRAME_CLOSE,
               g_variant_new ("(@at)",
                              g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, closes->data,
                                                         closes->len, sizeof (guint64))));
  /* Rooms last: the Post that announces a port (one just transferred to the other side,
   * whose end here has a mark) goes before the first Room about it. */
  if (send && rooms->len > 0)
    {
      GVariantBuilder builder;

      g_variant_builder_init (&builder, G_VARIANT_TYPE ("a(tuu)"));
      for (guint i = 0; i + 2 < rooms->len; i += 3)
        g_variant_builder_add (&builder, "(tuu)", g_array_index (rooms, guint64, i),
                               (guint32) g_array_index (rooms, guint64, i + 1),
                               (guint32) g_array_index (rooms, guint64, i + 2));
      send_data (self, MP_STREAM_ROOM, FRAME_ROOM, g_variant_new ("(a(tuu))", &builder));
    }

  g_mutex_lock (&self->lock);
  self->flushing = FALSE;
  self->last_write = g_get_monotonic_time ();
  self->last_write_reads = g_atomic_int_get (&self->app_reads);
  g_mutex_unlock (&self->lock);

  return G_SOURCE_REMOVE;
}

static void
stream_schedule_flush_locked (MpStream *self)
{
  GSource *idle;

  if (self->flush_scheduled)
    return;
  self->flush_scheduled = TRUE;

  idle = g_idle_source_new ();
  g_source_set_priority (idle, G_PRIORITY_DEFAULT + 10);
  g_source_set_static_name (idle, "MpStream flush");
  g_source_set_callback (idle, stream_flush_cb, stream_ref (self), stream_unref);
  g_source_attach (idle, mp_worker_context ());
  g_source_unref (idle);
}

static void
on_flushed (GObject      *object,
            GAsyncResult *result,
            gpointer      data)
{
  MpStream *self = data;

  g_dbus_connection_flush_finish (G_DBUS_CONNECTION (object), result, NULL);
  g_dbus_connection_close (self->connection, NULL, NULL, NULL);
  stream_unref (self);
}

#define MP_STREAM_LINGER (5 * G_USEC_PER_SEC)

/* Worker thread: closes the connection of a shut stream once what it wrote is out, unless it
 * lingers (@force: the lingering is over). The close waits for GDBus's own writes. Returns
 * FALSE while the direct path's writes are not done yet. */
static gboolean
stream_try_close (MpStream *self,
                  gboolean  force)
{
  if (self->close_started || self->connection == NULL ||
      g_dbus_connection_is_closed (self->connection))
    return TRUE;
  if (self->frames != NULL && !mp_frames_is_flushed (self->frames) && !self->ended)
    return FALSE;
  if (self->linger && !force && !g_atomic_int_get (&self->peer_done))
    return TRUE;

  self->close_started = TRUE;
  g_dbus_connection_flush (self->connection, NULL, on_flushed, stream_ref (self));

  return TRUE;
}

static gboolean
stream_linger_over_cb (gpointer data)
{
  MpStream *self = data;

  g_clear_pointer (&self->linger_source, g_source_unref);
  stream_try_close (self, TRUE);

  return G_SOURCE_REMOVE;
}

static gboolean
stream_peer_done_cb (gpointer data)
{
  stream_try_close (data, FALSE);

  return G_SOURCE_REMOVE;
}

/* Every port of the stream closed on this side. If the other side closed the last one, it
 * holds no port either and sends nothing more: the connection closes once our writes are
 * out. If we did, the other side may still be writing (credit for what its application
 * takes, posts that crossed our Close): closing now could make its write fail, and GDBus
 * then drops what it had not read yet, our last posts with it. So we wait until it closes
 * the connection, which it does once it has read our last Close, or until its Close of the
 * same port says it closed it too, or at most MP_STREAM_LINGER. Polled until the direct
 * path's writes are done. */
static gboolean
stream_shut_cb (gpointer data)
{
  MpStream *self = data;
  GSource *timeout;

  if (!stream_try_close (self, FALSE))
    return G_SOURCE_CONTINUE;

  if (self->linger && !self->close_started)
    {
      /* Our writes go out meanwhile. */
      if (self->connection != NULL && !g_dbus_connection_is_closed (self->connection))
        g_dbus_connection_flush (self->connection, NULL, NULL, NULL);
      timeout = g_timeout_source_new (MP_STREAM_LINGER / 1000);
      g_source_set_static_name (timeout, "MpStream linger");
      g_source_set_callback (timeout, stream_linger_over_cb, stream_ref (self), stream_unref);
      g_source_attach (timeout, mp_worker_context ());
      self->linger_source = timeout;
    }

  return G_SOURCE_REMOVE;
}

/* Worker thread: @link's relay closed (or will never start): it leaves the table, and the
 * other side is told unless it closed the port itself. The last one shuts the stream, after
 * the outbox's last flush. */
static void
link_finish (MpStreamLink *link)
{
  MpStream *self = link->stream;
  gboolean empty;

  if (link->finished)
    return;
  link->finished = TRUE;

  link_unhook (link);
  mp_message_port_set_sink (link->relay, NULL, NULL);
  g_clear_signal_handler (&link->close_id, link->relay);

  g_mutex_lock (&self->lock);
  if (!link->remote_closed && !self->closing)
    {
      g_array_append_val (self->out_closes, link->id);
      stream_schedule_flush_locked (self);
    }
  g_hash_table_remove (self->links, &link->id);
  empty = g_hash_table_size (self->links) == 0 && !self->shut;
  if (empty)
    {
      self->closing = TRUE;
      self->shut = TRUE;
      self->linger = !link->remote_closed;
      self->last_id = link->id;
    }
  g_mutex_unlock (&self->lock);

  /* No feed can wake the grant source any more: every link is unhooked. */
  if (empty && self->grant_source != NULL)
    {
      GSource *source = g_atomic_pointer_exchange (&self->grant_source, NULL);

      g_source_destroy (source);
      g_source_unref (source);
    }

  if (empty && self->connection != NULL)
    {
      /* Lower than the flush: the outbox goes first. A timeout, which polls the direct
       * path's writes until they are done. */
      GSource *idle = g_timeout_source_new (1);

      g_source_set_priority (idle, G_PRIORITY_LOW);
      g_source_set_callback (idle, stream_shut_cb, stream_ref (self), stream_unref);
      g_source_attach (idle, mp_worker_context ());
      g_source_unref (idle);
    }

  link_free (link);
}

/* Posts waiting in @link's held burst. With the stream's lock held. */
static guint
held_length (MpStreamLink *link)
{
  return link->held.ports != NULL ? link->held.ports->len - link->held_next : 0;
}

static void
on_relay_close (MpMessagePort *relay,
                gpointer       data)
{
  MpStreamLink *link = data;
  gboolean gone, waiting;

  g_mutex_lock (&link->stream->lock);
  gone = link->remote_closed || link->stream->closing;
  waiting = link->backlog.length > 0 || held_length (link) > 0;
  g_mutex_unlock (&link->stream->lock);

  /* The application's end closed: its Close goes after the posts that wait for credit. */
  if (waiting && !gone)
    link->close_after_backlog = TRUE;
  else
    link_finish (link);
}

/* Gives the owner @port (a port that travelled in a message to be sent) an id of ours and
 * makes it a relay of the stream; returns the id, or 0 if the stream is closing (the port is
 * closed: it will never reach the other side). */
static guint64
adopt_port (MpStream      *self,
            MpMessagePort *port)
{
  MpStreamLink *link;
  guint64 id;

  id = self->next_id;
  self->next_id += 2;
  link = link_new (self, id, g_object_ref (port));

  g_mutex_lock (&self->lock);
  if (self->closing)
    {
      g_mutex_unlock (&self->lock);
      link_free (link);
      mp_message_port_close (port);
      return 0;
    }
  self->own_max_id = id;
  g_hash_table_insert (self->links, &link->id, link);
  g_mutex_unlock (&self->lock);

  /* Without its sink until the post that names it is in the outbox (send_post()): a post
   * made on it meanwhile from another thread must not overtake that post. */
  link_start (link, FALSE);

  return id;
}

/* With the stream's lock held: a post of @size more bytes must fit in the outbox's burst,
 * under the body cap (one post always fits: mp_wire_encode_payload() refuses bigger
 * payloads); if it would not, the burst gathered so far waits for the flush, whole. */
static void
outbox_make_room_locked (MpStream *self,
                         gsize     size,
                         guint     n_ids)
{
  MpStreamBurst *full;

  if (self->out_posts.ports->len == 0 ||
      burst_size (&self->out_posts) + size + n_ids * 8 + 64 <= MP_WIRE_MAX_BODY)
    return;

  full = g_new (MpStreamBurst, 1);
  *full = self->out_posts;
  burst_init (&self->out_posts);
  g_queue_push_tail (&self->out_full, full);
}

/* With the stream's lock held, the stream not closing: a post of @link (its payload's type
 * string and serialized bytes) joins the outbox, and its cost the port's flight. */
static void
outbox_append_raw_locked (MpStreamLink  *link,
                          const char    *type_string,
                          gconstpointer  data,
                          gsize          size,
                          const guint64 *ids,
                          guint          n_ids)
{
  MpStream *self = link->stream;

  outbox_make_room_locked (self, size, n_ids);
  link->in_flight += MP_STREAM_COST_OVERHEAD + (guint) size;
  burst_append (&self->out_posts, link->id, type_string, data, size, ids, n_ids);
  stream_schedule_flush_locked (self);
}

/* With the stream's lock held, the stream not closing: @normal (the payload's normal form,
 * or NULL for a NULL post) joins the outbox for @link, and its cost the port's flight. */
static void
outbox_append_locked (MpStreamLink  *link,
                      GVariant      *normal,
                      const guint64 *ids,
                      guint          n_ids)
{
  outbox_append_raw_locked (link, normal != NULL ? g_variant_get_type_string (normal) : "",
                            normal != NULL ? g_variant_get_data (normal) : NULL,
                            normal != NULL ? g_variant_get_size (normal) : 0, ids, n_ids);
}

/* With the stream's lock held: @data (normal form, or NULL) waits in @link's held burst. */
static void
held_append_locked (MpStreamLink *link,
                    GVariant     *data)
{
  if (link->held.ports == NULL)
    burst_init (&link->held);
  burst_append (&link->held, link->id, data != NULL ? g_variant_get_type_string (data) : "",
                data != NULL ? g_variant_get_data (data) : NULL,
                data != NULL ? g_variant_get_size (data) : 0, NULL, 0);
}

/* With the stream's lock held: the held posts go to the outbox, oldest first, as far as the
 * window allows. */
static void
held_release_locked (MpStreamLink *link)
{
  MpStreamBurst *held = &link->held;

  while (held_length (link) > 0 && link->in_flight < MP_STREAM_WINDOW)
    {
      guint i = link->held_next++;
      guint32 start = i > 0 ? g_array_index (held->ends, guint32, i - 1) : 0;
      guint32 end = g_array_index (held->ends, guint32, i);
      guint32 type = g_array_index (held->types, guint32, i);

      outbox_append_raw_locked (link, g_ptr_array_index (held->type_table, type),
                                held->payloads->data + start, end - start, NULL, 0);
    }
  if (held->ports != NULL && held_length (link) == 0)
    {
      /* Emptied: made anew, so that its memory goes with the burst it held. */
      burst_clear (held);
      held->ports = NULL;
      link->held_next = 0;
    }
}

/* Worker thread: puts @message, posted by the application on the other end of @link's
 * relay, in the outbox; the ports it carries become ports of the stream now, just before
 * the post that names them. @from_backlog: @message is the head of the link's backlog, and
 * leaves it in the same locked section as it joins the outbox, so that the sink, which
 * posts only while the backlog is empty, never overtakes it. */
static void
send_post (MpStreamLink *link,
           MpMessage    *message,
           gboolean      from_backlog)
{
  MpStream *self = link->stream;
  g_autoptr(GVariant) normal = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(MpMessage) popped = NULL;
  guint64 ids_here[4];
  g_autofree guint64 *ids_heap = NULL;
  guint64 *ids = ids_here;
  guint n_ids = message->ports != NULL ? message->ports->len : 0;
  gboolean drop = FALSE;

  if (message->data != NULL)
    {
      normal = mp_wire_encode_payload (message->data, &error);
      if (normal == NULL)
        {
          /* Refused when posted on a port known to be entangled with another process; only
           * a message queued at a port before it was transferred there gets here. */
          g_warning ("mpport: a message to another process was dropped: %s", error->message);
          n_ids = 0;
          drop = TRUE;
        }
    }

  if (n_ids > G_N_ELEMENTS (ids_here))
    ids = ids_heap = g_new (guint64, n_ids);
  for (guint i = 0; i < n_ids && !drop; i++)
    {
      ids[i] = adopt_port (self, g_ptr_array_index (message->ports, i));
      drop = ids[i] == 0;   /* closing: nothing is sent any more */
    }

  g_mutex_lock (&self->lock);
  if (from_backlog)
    popped = g_queue_pop_head (&link->backlog);
  if (!self->closing && !drop)
    outbox_append_locked (link, normal, ids, n_ids);
  else
    drop = TRUE;
  g_mutex_unlock (&self->lock);

  /* It left the relay's side and counted against the other side's mark, which will never
   * take it: it no longer does. */
  if (drop)
    {
      MpPipeSide *side = mp_message_port_get_side (link->relay);

      g_mutex_lock (&side->mutex);
      mp_pipe_side_unsend_locked (side);
      g_mutex_unlock (&side->mutex);
    }

  /* The post that names the adopted ports is in the outbox: posts on them may now skip
   * their relays. (Links are freed on this thread only; one may have finished already.) */
  for (guint i = 0; i < n_ids && !drop; i++)
    {
      MpStreamLink *adopted;

      g_mutex_lock (&self->lock);
      adopted = g_hash_table_lookup (self->links, &ids[i]);
      g_mutex_unlock (&self->lock);
      if (adopted != NULL && adopted->started && !adopted->finished)
        link_install_sink (adopted);
    }
}

/* A post made this long (µs) after the last write, or after the application's context
 * read something since (an answer), is written by its poster at once if nothing else waits
 * to be written: a lone post (a request, an answer) then costs no wake-up of the worker
 * thread. Posts made closer together without reading in between are gathered into bursts
 * by the worker thread, so that a fast producer is not slowed by a write per post. */
#define MP_STREAM_LONE_GAP 20

/* With the stream's lock held (which orders the stream's writes), on the direct path: a
 * Post frame with the one post @data (in normal form, or NULL) for @link, written now. */
static void
write_lone_post_locked (MpStreamLink *link,
                        GVariant     *data)
{
  MpStream *self = link->stream;
  gsize size = data != NULL ? g_variant_get_size (data) : 0;
  const char *table[] = { data != NULL ? g_variant_get_type_string (data) : "" };
  guint32 zero = 0, end = (guint32) size;
  g_autoptr(GBytes) body = NULL;

  link->in_flight += MP_STREAM_COST_OVERHEAD + (guint) size;
  body = mp_stream_encode_post (1, &link->id, &zero, table, 1, &end,
                                data != NULL ? g_variant_get_data (data) : NULL, size,
                                &zero, NULL, 0);
  mp_frames_send (self->frames, FRAME_POST, body);
}

/* The relay's sink, in the thread that posted @message on the application's end, with the
 * relay's side locked, nothing queued at it and no message of it being dispatched: the
 * post goes to the outbox at once, or, while the port's window is full, to the backlog
 * behind the posts that wait for credit, as the relay would have put it. So a producer
 * faster than the worker thread keeps posting this way (the worker only writes); only a
 * post that transfers ports queues at the relay, and the posts after it until the relay
 * has sent it. The lock order is the side's, then the stream's: the stream never locks a
 * side while it holds its own lock. */
static gboolean
link_sink_post (MpPipeSink *sink,
                GVariant   *data)
{
  MpStreamLink *link = (MpStreamLink *) ((char *) sink - G_STRUCT_OFFSET (MpStreamLink, sink));
  MpStream *self = link->stream;
  gboolean taken = FALSE;
  gint64 now;
  int reads;

  g_mutex_lock (&self->lock);
  if (!self->closing)
    {
      if (link->backlog.length > 0)
        g_queue_push_tail (&link->backlog,
                           mp_message_new_take (data != NULL ? g_variant_ref (data) : NULL, NULL));
      else if (held_length (link) > 0 || link->in_flight >= MP_STREAM_WINDOW)
        held_append_locked (link, data);
      else if (self->frames != NULL && !self->flush_scheduled && !self->flushing &&
               self->out_posts.ports->len == 0 && self->out_full.length == 0 &&
               ((reads = g_atomic_int_get (&self->app_reads)) != self->last_write_reads ||
                (now = g_get_monotonic_time ()) - self->last_write >= MP_STREAM_LONE_GAP))
        {
          write_lone_post_locked (link, data);
          self->last_write = g_get_monotonic_time ();
          self->last_write_reads = reads;
        }
      else
        outbox_append_locked (link, data, NULL, 0);
      taken = TRUE;
    }
  g_mutex_unlock (&self->lock);

  return taken;
}

/* The relay's sink on the worker thread (mp_message_port_set_sink()): the application's
 * end posted @message. It goes to the outbox, or to the backlog while the port's window is
 * full (and behind any post already waiting). */
static void
relay_sink (MpMessage *message,
            gpointer   data)
{
  MpStreamLink *link = data;
  g_autoptr(GVariant) normal = NULL;
  gboolean plain = message->ports == NULL || message->ports->len == 0;
  gboolean wait;

  /* A post without transfers that must wait, and has only held posts ahead of it, waits
   * encoded with them (its payload is in normal form already: made by the post's check). */
  if (plain && message->data != NULL)
    normal = mp_wire_encode_payload (message->data, NULL);

  g_mutex_lock (&link->stream->lock);
  wait = link->backlog.length > 0 || held_length (link) > 0 ||
         link->in_flight >= MP_STREAM_WINDOW;
  if (wait && plain && link->backlog.length == 0 && (message->data == NULL || normal != NULL) &&
      !link->stream->closing)
    held_append_locked (link, normal);
  else if (wait)
    g_queue_push_tail (&link->backlog, mp_message_ref (message));
  g_mutex_unlock (&link->stream->lock);

  /* The relay is being dispatched: it is ARMED, so the sink takes no post meanwhile. */
  if (!wait)
    send_post (link, message, FALSE);
}

/* Worker thread: the other side granted @credit back to @link: what waits goes out, as far
 * as the window allows. */
static void
link_apply_credit (MpStreamLink *link,
                   guint         credit)
{
  MpStream *self = link->stream;
  MpMessage *message;
  gboolean over, waiting;

  GQueue sent = G_QUEUE_INIT;

  g_mutex_lock (&self->lock);
  over = credit > link->in_flight;
  if (!over)
    {
      link->in_flight -= credit;
      if (!self->closing)
        held_release_locked (link);
      /* The posts without transfers go in one locked section (their payloads are mostly in
       * normal form already: made by the post's check); the first with ports, or one that
       * cannot travel, is left to send_post() below. */
      while (link->in_flight < MP_STREAM_WINDOW && !self->closing && held_length (link) == 0 &&
             (message = g_queue_peek_head (&link->backlog)) != NULL &&
             (message->ports == NULL || message->ports->len == 0))
        {
          g_autoptr(GVariant) normal = NULL;

          if (message->data != NULL &&
              (normal = mp_wire_encode_payload (message->data, NULL)) == NULL)
            break;
          outbox_append_locked (link, normal, NULL, 0);
          g_queue_push_tail (&sent, g_queue_pop_head (&link->backlog));
        }
    }
  g_mutex_unlock (&self->lock);
  g_queue_clear_full (&sent, (GDestroyNotify) mp_message_unref);
  if (over)
    {
      stream_break (self, "it granted port %" G_GUINT64_FORMAT " more than was sent", link->id);
      return;
    }

  for (;;)
    {
      g_mutex_lock (&self->lock);
      message = link->in_flight < MP_STREAM_WINDOW && held_length (link) == 0 ?
                g_queue_peek_head (&link->backlog) : NULL;
      if (message != NULL)
        mp_message_ref (message);
      g_mutex_unlock (&self->lock);
      if (message == NULL)
        break;
      /* Only this thread takes posts out of the backlog: @message is still its head. */
      send_post (link, message, TRUE);
      mp_message_unref (message);
    }

  g_mutex_lock (&self->lock);
  waiting = link->backlog.length > 0 || held_length (link) > 0;
  g_mutex_unlock (&self->lock);
  if (!waiting && link->close_after_backlog)
    link_finish (link);
}

static gboolean
stream_drain_cb (gpointer data)
{
  MpStream *self = data;
  g_autoptr(GArray) ids = NULL;

  g_mutex_lock (&self->lock);
  ids = g_steal_pointer (&self->credited);
  self->credited = g_array_new (FALSE, FALSE, sizeof (guint64));
  self->drain_scheduled = FALSE;
  g_mutex_unlock (&self->lock);

  for (guint i = 0; i < ids->len; i++)
    {
      guint64 id = g_array_index (ids, guint64, i);
      MpStreamLink *link;
      guint credit = 0;
      gboolean room = FALSE;
      guint mark = 0, taken = 0;

      g_mutex_lock (&self->lock);
      link = g_hash_table_lookup (self->links, &id);
      if (link != NULL)
        {
          credit = link->credit_in;
          link->credit_in = 0;
          room = link->room_in;
          mark = link->room_mark;
          taken = link->room_taken;
          link->room_in = FALSE;
        }
      g_mutex_unlock (&self->lock);

      /* Links are freed on this thread only: @link stays valid. */
      if (link != NULL && credit > 0 && !link->finished)
        link_apply_credit (link, credit);
      if (link != NULL && room && !link->finished)
        {
          MpPipeSide *side = mp_message_port_get_side (link->relay);
          gboolean valid;

          g_mutex_lock (&side->mutex);
          valid = mp_pipe_side_set_remote_room_locked (side, mark, taken);
          g_mutex_unlock (&side->mutex);
          if (!valid)
            {
              stream_break (self, "a Room for port %" G_GUINT64_FORMAT " that took more than was sent", id);
              break;
            }
        }
    }

  return G_SOURCE_REMOVE;
}

/* Worker thread: tells the other side @feed's mark and how much its application took, if
 * the mark changed or, while there is one, the application took more since last told. */
static void
feed_tell_room (MpStream     *self,
                MpStreamFeed *feed)
{
  guint mark = (guint) g_atomic_int_get (&feed->mark);
  guint taken = (guint) g_atomic_int_get (&feed->taken);

  /* Before the data path is chosen nothing is sent: link_start() looks again. */
  if (!self->begun ||
      (mark == feed->mark_told && (mark == 0 || taken == (guint) g_atomic_int_get (&feed->taken_told))))
    return;

  feed->mark_told = mark;
  g_atomic_int_set (&feed->taken_told, taken);
  g_mutex_lock (&self->lock);
  if (!self->closing)
    {
      guint64 triple[3] = { feed->id, mark, taken };

      g_array_append_vals (self->out_rooms, triple, 3);
      stream_schedule_flush_locked (self);
    }
  g_mutex_unlock (&self->lock);
}

/* The source that grants credit back: woken by the feeds (lock-free, from any thread). */
typedef struct
{
  MpWakeableSource parent;
  MpStream *stream;   /* strong: the last link's finish destroys the source */
} GrantSource;

static void
grant_source_finalize (GSource *source)
{
  g_clear_pointer (&((GrantSource *) source)->stream, stream_unref);
  mp_wakeable_source_finalize (source);
}

static gboolean
grant_source_dispatch (GSource     *source,
                       GSourceFunc  callback,
                       gpointer     user_data)
{
  MpStream *self = ((GrantSource *) source)->stream;
  MpStreamFeed *feed;

  mp_wakeable_source_set_pending (source, FALSE);

  while ((feed = g_async_queue_try_pop (self->grant_queue)) != NULL)
    {
      guint credit;

      /* Cleared first: what the application takes from now on queues the feed again. */
      g_atomic_int_set (&feed->queued, 0);
      credit = (guint) g_atomic_int_exchange ((int *) &feed->pending, 0);
      if (credit > 0)
        {
          g_atomic_int_add ((int *) &feed->granted, (int) credit);
          g_mutex_lock (&self->lock);
          if (!self->closing)
            {
              guint64 pair[2] = { feed->id, credit };

              g_array_append_vals (self->out_credits, pair, 2);
              stream_schedule_flush_locked (self);
            }
          g_mutex_unlock (&self->lock);
        }
      feed_tell_room (self, feed);
      feed_unref (feed);
    }

  return G_SOURCE_CONTINUE;
}

static GSourceFuncs grant_source_funcs = {
  .prepare = mp_wakeable_source_prepare,
  .check = mp_wakeable_source_check,
  .dispatch = grant_source_dispatch,
  .finalize = grant_source_finalize,
};

/* Worker thread: from now on, posts on the application's end of @link may skip its relay
 * (link_sink_post()). */
static void
link_install_sink (MpStreamLink *link)
{
  MpPipeSide *side = mp_message_port_get_side (link->relay);

  link->sink.post = link_sink_post;
  g_mutex_lock (&side->mutex);
  mp_pipe_side_set_sink_locked (side, &link->sink);
  g_mutex_unlock (&side->mutex);
}

/* Worker thread: starts relaying @link (in the table). A relay that closed before it could
 * start never emits "close": it is finished here. */
static void
link_start (MpStreamLink *link,
            gboolean      with_sink)
{
  if (link->started || link->finished)
    return;
  link->started = TRUE;
  mp_message_port_set_sink (link->relay, relay_sink, link);
  if (with_sink)
    link_install_sink (link);
  link->close_id = g_signal_connect (link->relay, "close", G_CALLBACK (on_relay_close), link);
  /* A mark set on the application's end before the link started. */
  if (g_atomic_int_get (&link->feed->mark) != 0)
    feed_queue (link->feed);
  mp_message_port_start (link->relay);
  /* On this thread, a started port has a context until its own dispatch retires it. */
  if (mp_message_port_get_context (link->relay) == NULL)
    link_finish (link);
}

/* Ports that arrived, to start on the worker thread. By id, looked up there: by then a link
 * may have started (stream_begin_cb() starts the whole table), run and been freed. */
typedef struct
{
  MpStream *stream;
  GArray *ids;   /* guint64 */
} StartLinks;

static gboolean
start_links_cb (gpointer data)
{
  StartLinks *start = data;
  MpStream *self = start->stream;

  for (guint i = 0; i < start->ids->len; i++)
    {
      MpStreamLink *link;

      g_mutex_lock (&self->lock);
      link = g_hash_table_lookup (self->links, &g_array_index (start->ids, guint64, i));
      g_mutex_unlock (&self->lock);

      /* Links are freed on this thread only: @link stays valid. */
      if (link != NULL)
        link_start (link, TRUE);
    }

  g_array_unref (start->ids);
  stream_unref (start->stream);
  g_free (start);

  return G_SOURCE_REMOVE;
}

/* ------------------------------------------------------------------------------------------
 * Receiving (GDBus's worker thread)
 */

/* The other side broke the protocol: its ports close here, and it is said why. The filter's
 * or the worker thread's. */
static void
stream_break (MpStream   *self,
              const char *format,
              ...)
{
  g_autofree char *reason = NULL;
  va_list args;

  if (!g_atomic_int_compare_and_exchange (&self->broken, 0, 1))
    return;

  va_start (args, format);
  reason = g_strdup_vprintf (format, args);
  va_end (args);

  if (self->detached)
    return;
  g_warning ("mpport: closing a stream to another process, which broke the protocol: %s",
             reason);
  g_dbus_connection_close (self->connection, NULL, NULL, NULL);
}

/* Whether @id names a port that existed on this stream (open or closed since). */
static gboolean
id_known (MpStream *self,
          guint64   id)
{
  gboolean known;

  if (id == 0)
    return TRUE;
  if (!is_own_id (self, id))
    return id <= self->peer_max_id;

  g_mutex_lock (&self->lock);
  known = id <= self->own_max_id;
  g_mutex_unlock (&self->lock);

  return known;
}

/* The relay (strong) and the feed (strong) of @id, or FALSE if that port is closed here. */
static gboolean
lookup_link (MpStream       *self,
             guint64         id,
             MpMessagePort **relay,
             MpStreamFeed  **feed)
{
  MpStreamLink *link;

  *relay = NULL;
  *feed = NULL;
  g_mutex_lock (&self->lock);
  link = g_hash_table_lookup (self->links, &id);
  if (link != NULL)
    {
      *relay = g_object_ref (link->relay);
      *feed = feed_ref (link->feed);
    }
  g_mutex_unlock (&self->lock);

  return link != NULL;
}

static gboolean stream_begin_cb (gpointer data);
static gboolean direct_allowed (void);

/* The other side's Hello: its version, and whether the data takes the direct path: the
 * server offers the client a socket ("direct", a handle); the client says it can use one
 * ("direct", true). Then this side begins sending (stream_begin_cb()). */
static gboolean
handle_hello (MpStream     *self,
              GDBusMessage *message,
              GVariant     *body)
{
  g_autoptr(GVariant) options = NULL;
  g_autoptr(GVariant) direct = NULL;
  guint32 version;
  int fd = -1;

  if (!g_variant_is_of_type (body, G_VARIANT_TYPE (MP_STREAM_HELLO_TYPE)))
    {
      stream_break (self, "Hello has type “%s”", g_variant_get_type_string (body));
      return FALSE;
    }
  g_variant_get_child (body, 0, "u", &version);
  if (version != MP_STREAM_VERSION)
    {
      stream_break (self, "it speaks version %u of the protocol, this side version %u",
                    version, MP_STREAM_VERSION);
      return FALSE;
    }
  self->hello_seen = TRUE;

  options = g_variant_get_child_value (body, 1);
  direct = g_variant_lookup_value (options, MP_STREAM_OPTION_DIRECT, NULL);

  /* A detached stream (the fuzzer's) has no socket: it takes the direct path's frames
   * (mp_stream_receive_frame()) when the Hello asks for the path. */
  if (self->detached)
    {
      if (direct != NULL &&
          g_variant_is_of_type (direct, self->server ? G_VARIANT_TYPE_BOOLEAN : G_VARIANT_TYPE_HANDLE) &&
          (!self->server || g_variant_get_boolean (direct)))
        g_atomic_int_set (&self->direct, 1);
      return TRUE;
    }
  if (!self->server && direct != NULL && g_variant_is_of_type (direct, G_VARIANT_TYPE_HANDLE) &&
      direct_allowed ())
    {
      GUnixFDList *list = g_dbus_message_get_unix_fd_list (message);
      int index = g_variant_get_handle (direct);

      if (list == NULL || index < 0 || index >= g_unix_fd_list_get_length (list) ||
          (fd = g_unix_fd_list_get (list, index, NULL)) < 0)
        {
          stream_break (self, "its Hello offers a socket it does not pass");
          return FALSE;
        }
    }

  g_mutex_lock (&self->lock);
  if (self->server && direct != NULL && g_variant_is_of_type (direct, G_VARIANT_TYPE_BOOLEAN) &&
      g_variant_get_boolean (direct) && self->offered_fd >= 0)
    {
      fd = self->offered_fd;
      self->offered_fd = -1;
    }
  self->direct_fd = fd;
  g_mutex_unlock (&self->lock);
  if (fd >= 0)
    g_atomic_int_set (&self->direct, 1);

  if (!self->detached)
    g_main_context_invoke_full (mp_worker_context (), G_PRIORITY_DEFAULT, stream_begin_cb,
                                stream_ref (self), stream_unref);

  return TRUE;
}

/* The relay and feed of the port the last post went to: a burst mostly goes to one port. */
typedef struct
{
  guint64 id;
  MpMessagePort *relay;   /* strong, or NULL: nothing looked up, or the port is closed */
  MpStreamFeed *feed;     /* strong, with relay */
  gboolean valid;
  /* Posts without transfers decoded for @relay and not yet queued at it (MpMessage,
   * strong): queued together, under one lock, when the burst moves to another port, when
   * a post carries ports or an error, and at its end. */
  GPtrArray *batch;
} LinkCache;

static void
link_cache_send_batch (LinkCache *cache)
{
  if (cache->batch == NULL || cache->batch->len == 0)
    return;
  mp_pipe_side_send_all (mp_message_port_get_side (cache->relay),
                         (MpMessage **) cache->batch->pdata, cache->batch->len);
  g_ptr_array_set_size (cache->batch, 0);
}

static void
link_cache_clear (LinkCache *cache)
{
  link_cache_send_batch (cache);
  g_clear_object (&cache->relay);
  g_clear_pointer (&cache->feed, feed_unref);
  cache->valid = FALSE;
}

/* One post of a burst, already decoded: @data (transfer full; NULL for a NULL post) or
 * @error (transfer full), for port @id, transferring the ports @ids; @cost counts against
 * that port's window. It is posted on the relay of its port with the ports it transfers
 * (new local channels), or reported with "message-error". FALSE if it broke the protocol. */
static gboolean
handle_post (MpStream       *self,
             LinkCache      *cache,
             guint64         id,
             GVariant       *data_in,
             GError         *error_in,
             guint           cost,
             const guint64  *ids,
             gsize           n_ids)
{
  g_autoptr(GVariant) data = data_in;
  g_autoptr(GError) error = error_in;
  g_autoptr(GPtrArray) ports = NULL;
  g_autoptr(GPtrArray) new_links = NULL;

  if (!id_known (self, id))
    {
      stream_break (self, "a post to port %" G_GUINT64_FORMAT ", which does not exist", id);
      return FALSE;
    }

  if (n_ids > MP_STREAM_MAX_TRANSFER)
    {
      stream_break (self, "a post transfers %" G_GSIZE_FORMAT " ports, more than %u", n_ids,
                    (guint) MP_STREAM_MAX_TRANSFER);
      return FALSE;
    }
  for (gsize i = 0; i < n_ids; i++)
    {
      if (ids[i] == 0 || is_own_id (self, ids[i]) || ids[i] <= self->peer_max_id)
        {
          stream_break (self, "a transferred port has the id %" G_GUINT64_FORMAT
                        ", which is not a new id of that side", ids[i]);
          return FALSE;
        }
      self->peer_max_id = ids[i];
    }

  /* Each transferred port is a new local channel: the application gets one end in the
   * message, the other becomes the relay of the new id. */
  if (n_ids > 0)
    {
      ports = g_ptr_array_new_with_free_func (g_object_unref);
      new_links = g_ptr_array_new ();
    }
  for (gsize i = 0; i < n_ids; i++)
    {
      MpPipe *pipe = mp_pipe_new ();

      g_ptr_array_add (ports, mp_message_port_new_for_side (&pipe->sides[0], TRUE));
      g_ptr_array_add (new_links,
                       link_new (self, ids[i], mp_message_port_new_for_side (&pipe->sides[1], TRUE)));
      mp_pipe_unref (pipe);
    }
  if (n_ids > 0)
    {
      GPtrArray *unused = NULL;
      gboolean too_many;

      g_mutex_lock (&self->lock);
      too_many = g_hash_table_size (self->links) + n_ids > MP_STREAM_MAX_PORTS;
      if (!too_many && !self->closing)
        for (guint i = 0; i < new_links->len; i++)
          {
            MpStreamLink *link = g_ptr_array_index (new_links, i);

            g_hash_table_insert (self->links, &link->id, link);
          }
      else
        unused = g_steal_pointer (&new_links);
      g_mutex_unlock (&self->lock);

      /* Never in the table: closed at once (outside the lock: the last unref of a relay
       * finalizes a port), with the ports handed out below. */
      if (unused != NULL)
        {
          for (guint i = 0; i < unused->len; i++)
            link_free (g_ptr_array_index (unused, i));
          g_ptr_array_unref (unused);
        }

      if (too_many)
        {
          stream_break (self, "more than %u ports open at a time", (guint) MP_STREAM_MAX_PORTS);
          return FALSE;
        }
    }

  if (!cache->valid || cache->id != id)
    {
      link_cache_clear (cache);
      cache->id = id;
      cache->valid = TRUE;
      lookup_link (self, id, &cache->relay, &cache->feed);
    }

  if (cache->relay != NULL)
    {
      MpStreamFeed *feed = cache->feed;

      /* A sender keeps under the window what it sent and was not granted back; what we
       * granted may not have reached it yet, so it can only have sent less than this. */
      if (feed->received - (guint) g_atomic_int_get (&feed->granted) >= MP_STREAM_WINDOW)
        {
          stream_break (self, "it posted more than the window of port %" G_GUINT64_FORMAT, id);
          return FALSE;
        }
      feed->received += cost;

      if (error != NULL)
        {
          /* The entry in the inbox takes no payload: what it does not hold is taken now. */
          link_cache_send_batch (cache);
          mp_pipe_side_send (mp_message_port_get_side (cache->relay),
                             mp_message_new_error (g_steal_pointer (&error)));
          feed_add (feed, cost - MP_STREAM_COST_OVERHEAD);
        }
      else if (ports == NULL)
        {
          if (cache->batch == NULL)
            cache->batch = g_ptr_array_new ();
          g_ptr_array_add (cache->batch, mp_message_new_take (g_steal_pointer (&data), NULL));
        }
      else
        {
          /* Fails only if the port closed meanwhile: then the post is dropped, as any post
           * to a closed port, and the ports it carried close (below, with our references). */
          link_cache_send_batch (cache);
          mp_message_port_post_message (cache->relay, data,
                                        (MpMessagePort *const *) ports->pdata, ports->len, NULL);
        }
    }

  if (new_links != NULL && new_links->len > 0 && !self->detached)
    {
      StartLinks *start = g_new0 (StartLinks, 1);

      start->stream = stream_ref (self);
      /* From @ids, not from the links: once in the table, a link is the worker thread's, and
       * may already be gone. */
      start->ids = g_array_sized_new (FALSE, FALSE, sizeof (guint64), n_ids);
      g_array_append_vals (start->ids, ids, n_ids);
      g_main_context_invoke (mp_worker_context (), start_links_cb, start);
    }

  return TRUE;
}

static void
error_free0 (gpointer error)
{
  if (error != NULL)
    g_error_free (error);
}

/* A Post's columns (MP_STREAM_POST_TYPE), as read from its body. */
typedef struct
{
  const guint64 *ports;
  const guint32 *types;
  const guint32 *ends;
  const guint32 *counts;
  const guint64 *transfers;
  const char **table;     /* n_table strings */
  GBytes *payloads;       /* the ay column */
  gsize n, n_types, n_ends, n_counts, n_transfers, n_table;
} PostColumns;

static void handle_columns (MpStream    *self,
                            PostColumns *columns);

/* A Post read through GVariant: whatever bytes it was given, GVariant reads some value of
 * the type (the default one for a part that is not well formed). */
static void
handle_burst (MpStream *self,
              GVariant *body)
{
  g_autoptr(GVariant) ports_v = g_variant_get_child_value (body, 0);
  g_autoptr(GVariant) types_v = g_variant_get_child_value (body, 1);
  g_autoptr(GVariant) table_v = g_variant_get_child_value (body, 2);
  g_autoptr(GVariant) ends_v = g_variant_get_child_value (body, 3);
  g_autoptr(GVariant) payloads_v = g_variant_get_child_value (body, 4);
  g_autoptr(GVariant) counts_v = g_variant_get_child_value (body, 5);
  g_autoptr(GVariant) transfers_v = g_variant_get_child_value (body, 6);
  g_autoptr(GBytes) payloads = g_variant_get_data_as_bytes (payloads_v);
  g_autofree const char **table = NULL;
  PostColumns columns = { 0, };

  columns.ports = g_variant_get_fixed_array (ports_v, &columns.n, sizeof (guint64));
  columns.types = g_variant_get_fixed_array (types_v, &columns.n_types, sizeof (guint32));
  columns.ends = g_variant_get_fixed_array (ends_v, &columns.n_ends, sizeof (guint32));
  columns.counts = g_variant_get_fixed_array (counts_v, &columns.n_counts, sizeof (guint32));
  columns.transfers = g_variant_get_fixed_array (transfers_v, &columns.n_transfers,
                                                 sizeof (guint64));
  table = g_variant_get_strv (table_v, &columns.n_table);
  columns.table = table;
  columns.payloads = payloads;

  handle_columns (self, &columns);
}

/* GVariant's framing: the size of a container's offsets, from its whole size
 * (gvariant-serialiser.c's gvs_get_offset_size()). */
static guint
read_offset_size (gsize size)
{
  if (size > G_MAXUINT32)
    return 8;
  if (size > G_MAXUINT16)
    return 4;
  if (size > G_MAXUINT8)
    return 2;
  return size > 0 ? 1 : 0;
}

static gsize
read_le (const guint8 *p,
         guint         size)
{
  guint64 value = 0;

  for (guint i = 0; i < size; i++)
    value |= (guint64) p[i] << (8 * i);

  return (gsize) value;
}

/* Reads a Post body serialized as mp_stream_encode_post() writes it, in the calling
 * thread and without GVariant (whose reading of a small Post costs more than all the rest
 * of its delivery). It accepts only a body in normal form that reads unambiguously: its
 * framing offsets in order and in bounds, padding zero, each fixed-size column a whole
 * number of elements, each string NUL-terminated, without another NUL, UTF-8. Then
 * GVariant would read the same columns. Anything else returns FALSE, and the body is read
 * through GVariant (handle_burst()), which decides. @strings gets the table. */
static gboolean
parse_post (GBytes      *body,
            PostColumns *columns,
            GPtrArray   *strings)
{
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
  static const guint alignments[7] = { 8, 4, 1, 4, 1, 4, 8 };
  static const guint element_sizes[7] = { 8, 4, 0, 4, 1, 4, 8 };
  gsize n;
  const guint8 *d = g_bytes_get_data (body, &n);
  guint osz = read_offset_size (n);
  gsize body_end, starts[7], ends[7], previous = 0;

  if (osz == 0 || n < 6 * (gsize) osz || ((gsize) d & 7) != 0)
    return FALSE;
  body_end = n - 6 * (gsize) osz;
  for (guint i = 0; i < 7; i++)
    {
      gsize start = (previous + alignments[i] - 1) / alignments[i] * alignments[i];
      gsize end = i < 6 ? read_le (d + n - (i + 1) * (gsize) osz, osz) : body_end;

      if (start > end || end > body_end)
        return FALSE;
      for (gsize j = previous; j < start; j++)
        if (d[j] != 0)
          return FALSE;
      if (element_sizes[i] > 1 && (end - start) % element_sizes[i] != 0)
        return FALSE;
      starts[i] = start;
      ends[i] = end;
      previous = end;
    }

  columns->ports = (const guint64 *) (gconstpointer) (d + starts[0]);
  columns->n = (ends[0] - starts[0]) / 8;
  columns->types = (const guint32 *) (gconstpointer) (d + starts[1]);
  columns->n_types = (ends[1] - starts[1]) / 4;
  columns->ends = (const guint32 *) (gconstpointer) (d + starts[3]);
  columns->n_ends = (ends[3] - starts[3]) / 4;
  columns->counts = (const guint32 *) (gconstpointer) (d + starts[5]);
  columns->n_counts = (ends[5] - starts[5]) / 4;
  columns->transfers = (const guint64 *) (gconstpointer) (d + starts[6]);
  columns->n_transfers = (ends[6] - starts[6]) / 8;

  /* The strings: their ends (relative to the array) after them, in the size the array's
   * own size calls for; the last end is where the offsets start. */
  {
    const guint8 *a = d + starts[2];
    gsize size = ends[2] - starts[2];
    guint asz = read_offset_size (size);
    gsize last, count, from = 0;

    if (size > 0)
      {
        if (size < asz)
          return FALSE;
        last = read_le (a + size - asz, asz);
        if (last > size - asz || (size - last) % asz != 0)
          return FALSE;
        count = (size - last) / asz;
        for (gsize j = 0; j < count; j++)
          {
            gsize to = read_le (a + last + j * asz, asz);

            if (to <= from || to > last || a[to - 1] != '\0' ||
                memchr (a + from, '\0', to - from - 1) != NULL ||
                !g_utf8_validate ((const char *) a + from, (gssize) (to - from - 1), NULL))
              return FALSE;
            g_ptr_array_add (strings, (gpointer) (a + from));
            from = to;
          }
        if (from != last)
          return FALSE;
      }
  }
  columns->table = (const char **) strings->pdata;
  columns->n_table = strings->len;
  columns->payloads = g_bytes_new_from_bytes (body, starts[4], ends[4] - starts[4]);

  return TRUE;
#else
  return FALSE;
#endif
}

/* A Post: its columns checked against each other, then each post decoded and handled in
 * order. */
static void
handle_columns (MpStream    *self,
                PostColumns *columns)
{
  const guint64 *ports = columns->ports, *transfers = columns->transfers;
  const guint32 *types = columns->types, *ends = columns->ends, *counts = columns->counts;
  const char **table = columns->table;
  GBytes *payloads = columns->payloads;
  gsize n = columns->n, n_types = columns->n_types, n_ends = columns->n_ends;
  gsize n_counts = columns->n_counts, n_transfers = columns->n_transfers;
  gsize n_table = columns->n_table, size;
  const guint8 *bytes = g_bytes_get_data (payloads, &size);
  g_autoptr(GPtrArray) table_errors = NULL;
  LinkCache cache = { 0, };
  guint64 total_transfers = 0;
  guint32 start = 0;
  gsize next_transfer = 0;

  /* A sender never sends an empty burst; and a frame whose framing is broken reads as
   * empty columns: that must not pass for a Post that carried nothing. */
  if (n == 0)
    {
      stream_break (self, "a Post without posts");
      return;
    }
  if (n_types != n || n_ends != n || n_counts != n)
    {
      stream_break (self, "a Post whose columns differ in length");
      return;
    }
  for (gsize i = 0; i < n; i++)
    {
      if (types[i] >= n_table)
        {
          stream_break (self, "a Post with a type index out of its table");
          return;
        }
      if (ends[i] < (i > 0 ? ends[i - 1] : 0) || ends[i] > size)
        {
          stream_break (self, "a Post whose payload ends are out of order or out of bounds");
          return;
        }
      total_transfers += counts[i];
    }
  if ((n > 0 ? ends[n - 1] : 0) != size || total_transfers != n_transfers)
    {
      stream_break (self, "a Post whose columns do not add up");
      return;
    }

  /* Each type once: NULL for a good one ("" is the NULL post's). */
  table_errors = g_ptr_array_new_full (n_table, error_free0);
  for (gsize t = 0; t < n_table; t++)
    {
      GError *type_error = NULL;

      if (table[t][0] != '\0')
        mp_wire_check_type_string (table[t], strlen (table[t]), &type_error);
      g_ptr_array_add (table_errors, type_error);
    }

  for (gsize i = 0; i < n; i++)
    {
      const char *type_string = table[types[i]];
      const GError *type_error = g_ptr_array_index (table_errors, types[i]);
      guint32 length = ends[i] - start;
      GVariant *data = NULL;
      GError *error = NULL;

      if (type_error != NULL)
        error = g_error_copy (type_error);
      else if (type_string[0] == '\0')
        {
          if (length != 0)
            g_set_error_literal (&error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                 _("Message from another process: data without a type"));
        }
      else
        {
          /* A post the application keeps keeps alive the memory it points into: share the
           * burst only with a post that is at least half of it, copy smaller ones. */
          g_autoptr(GBytes) payload = length < size / 2 ? g_bytes_new (bytes + start, length)
                                                        : g_bytes_new_from_bytes (payloads, start, length);

          data = mp_wire_load_payload (type_string, payload, &error);
        }

      if (!handle_post (self, &cache, ports[i], data, error,
                        MP_STREAM_COST_OVERHEAD + length,
                        counts[i] > 0 ? transfers + next_transfer : NULL, counts[i]))
        break;
      start = ends[i];
      next_transfer += counts[i];
    }

  link_cache_clear (&cache);
  g_clear_pointer (&cache.batch, g_ptr_array_unref);
}

static gboolean
handle_close (MpStream *self,
              guint64   id)
{
  MpStreamLink *link;
  MpMessagePort *relay = NULL;

  if (!id_known (self, id))
    {
      stream_break (self, "a close of port %" G_GUINT64_FORMAT ", which does not exist", id);
      return FALSE;
    }

  g_mutex_lock (&self->lock);
  link = g_hash_table_lookup (self->links, &id);
  if (link != NULL)
    {
      link->remote_closed = TRUE;
      relay = g_object_ref (link->relay);
    }
  else if (self->linger && id == self->last_id && !g_atomic_int_get (&self->peer_done))
    {
      /* We both closed our last port at once: neither sends anything more. */
      GSource *idle = g_idle_source_new ();

      g_atomic_int_set (&self->peer_done, 1);
      g_source_set_static_name (idle, "MpStream peer done");
      g_source_set_callback (idle, stream_peer_done_cb, stream_ref (self), stream_unref);
      g_source_attach (idle, mp_worker_context ());
      g_source_unref (idle);
    }
  g_mutex_unlock (&self->lock);

  /* The application's end gets "close" after what arrived before. */
  if (relay != NULL)
    {
      mp_message_port_close (relay);
      g_object_unref (relay);
    }

  return TRUE;
}

/* The other side's application took @credit of what @id posted: applied on the worker
 * thread, which owns the sending side of the window. */
/* With the lock held: has the worker thread apply what came for port @id (stream_drain_cb()). */
static void
stream_schedule_drain_locked (MpStream *self,
                              guint64   id)
{
  g_array_append_val (self->credited, id);
  if (!self->drain_scheduled && !self->detached)
    {
      /* An idle, never a call made here: on the direct path this runs on the worker
       * thread itself, with the lock held. */
      GSource *idle = g_idle_source_new ();

      self->drain_scheduled = TRUE;
      g_source_set_static_name (idle, "MpStream drain");
      g_source_set_callback (idle, stream_drain_cb, stream_ref (self), stream_unref);
      g_source_attach (idle, mp_worker_context ());
      g_source_unref (idle);
    }
}

static gboolean
handle_credit (MpStream *self,
               guint64   id,
               guint64   credit)
{
  MpStreamLink *link;

  if (!id_known (self, id))
    {
      stream_break (self, "a credit for port %" G_GUINT64_FORMAT ", which does not exist", id);
      return FALSE;
    }
  if (credit == 0 || credit > G_MAXUINT32)
    {
      stream_break (self, "a credit of %" G_GUINT64_FORMAT, credit);
      return FALSE;
    }

  g_mutex_lock (&self->lock);
  link = g_hash_table_lookup (self->links, &id);
  if (link != NULL)
    {
      if (credit > G_MAXUINT32 - link->credit_in)
        link->credit_in = G_MAXUINT32;   /* more than was ever sent: the drain breaks it */
      else
        link->credit_in += (guint) credit;
      stream_schedule_drain_locked (self, id);
    }
  g_mutex_unlock (&self->lock);

  return TRUE;
}

/* The other side's port @id has @mark and its application took @taken: applied on the
 * worker thread, which owns the relay. */
static gboolean
handle_room (MpStream *self,
             guint64   id,
             guint32   mark,
             guint32   taken)
{
  MpStreamLink *link;

  if (!id_known (self, id))
    {
      stream_break (self, "a Room for port %" G_GUINT64_FORMAT ", which does not exist", id);
      return FALSE;
    }

  g_mutex_lock (&self->lock);
  link = g_hash_table_lookup (self->links, &id);
  if (link != NULL)
    {
      /* Cumulative: the last one says it all. */
      link->room_in = TRUE;
      link->room_mark = mark;
      link->room_taken = taken;
      stream_schedule_drain_locked (self, id);
    }
  g_mutex_unlock (&self->lock);

  return TRUE;
}

/* A Post, Close or Credit body (untrusted, of any type), from a signal or a frame. */
static void
handle_data (MpStream   *self,
             const char *member,
             GVariant   *body)
{
  if (g_strcmp0 (member, MP_STREAM_POST) == 0)
    {
      if (!g_variant_is_of_type (body, G_VARIANT_TYPE (MP_STREAM_POST_TYPE)))
        stream_break (self, "Post has type “%s”", g_variant_get_type_string (body));
      else
        handle_burst (self, body);
    }
  else if (g_strcmp0 (member, MP_STREAM_CLOSE) == 0)
    {
      g_autoptr(GVariant) ids_variant = NULL;
      const guint64 *ids;
      gsize n_ids;

      if (!g_variant_is_of_type (body, G_VARIANT_TYPE (MP_STREAM_CLOSE_TYPE)))
        {
          stream_break (self, "Close has type “%s”", g_variant_get_type_string (body));
          return;
        }
      ids_variant = g_variant_get_child_value (body, 0);
      ids = g_variant_get_fixed_array (ids_variant, &n_ids, sizeof (guint64));
      for (gsize i = 0; i < n_ids; i++)
        if (!handle_close (self, ids[i]))
          return;
    }
  else if (g_strcmp0 (member, MP_STREAM_CREDIT) == 0)
    {
      g_autoptr(GVariant) credits = NULL;
      gsize n_credits;

      if (!g_variant_is_of_type (body, G_VARIANT_TYPE (MP_STREAM_CREDIT_TYPE)))
        {
          stream_break (self, "Credit has type “%s”", g_variant_get_type_string (body));
          return;
        }
      credits = g_variant_get_child_value (body, 0);
      n_credits = g_variant_n_children (credits);
      for (gsize i = 0; i < n_credits; i++)
        {
          guint64 id, credit;

          g_variant_get_child (credits, i, "(tt)", &id, &credit);
          if (!handle_credit (self, id, credit))
            return;
        }
    }
  else if (g_strcmp0 (member, MP_STREAM_ROOM) == 0)
    {
      g_autoptr(GVariant) rooms = NULL;
      gsize n_rooms;

      if (!g_variant_is_of_type (body, G_VARIANT_TYPE (MP_STREAM_ROOM_TYPE)))
        {
          stream_break (self, "Room has type “%s”", g_variant_get_type_string (body));
          return;
        }
      rooms = g_variant_get_child_value (body, 0);
      n_rooms = g_variant_n_children (rooms);
      for (gsize i = 0; i < n_rooms; i++)
        {
          guint64 id;
          guint32 mark, taken;

          g_variant_get_child (rooms, i, "(tuu)", &id, &mark, &taken);
          if (!handle_room (self, id, mark, taken))
            return;
        }
    }
}

static void
handle_message (MpStream     *self,
                GDBusMessage *message)
{
  const char *member = g_dbus_message_get_member (message);
  GVariant *body = g_dbus_message_get_body (message);
  g_autoptr(GVariant) empty = NULL;

  if (body == NULL)
    body = empty = g_variant_ref_sink (g_variant_new ("()"));

  if (!self->hello_seen)
    {
      if (g_strcmp0 (member, MP_STREAM_HELLO) != 0)
        stream_break (self, "its first message is not Hello but “%s”", member);
      else
        handle_hello (self, message, body);
      return;
    }

  if (g_strcmp0 (member, MP_STREAM_POST) == 0 || g_strcmp0 (member, MP_STREAM_CLOSE) == 0 ||
      g_strcmp0 (member, MP_STREAM_CREDIT) == 0 || g_strcmp0 (member, MP_STREAM_ROOM) == 0)
    {
      if (g_atomic_int_get (&self->direct))
        stream_break (self, "a %s signal on a stream whose data takes the direct path", member);
      else
        handle_data (self, member, body);
    }
  else if (g_strcmp0 (member, MP_STREAM_HELLO) == 0)
    stream_break (self, "a second Hello");
  else
    stream_break (self, "an unknown message “%s”", member);
}

/* Runs in GDBus's worker thread for every message of the connection, both ways. The
 * protocol's signals are taken out of GDBus's own dispatch; anything else is left to GDBus
 * (which answers org.freedesktop.DBus.Peer calls itself, and an error to other calls). */
static GDBusMessage *
stream_filter (GDBusConnection *connection,
               GDBusMessage    *message,
               gboolean         incoming,
               gpointer         data)
{
  MpStream *self = data;

  if (!incoming ||
      g_strcmp0 (g_dbus_message_get_interface (message), MP_STREAM_INTERFACE) != 0)
    return message;

  if (g_dbus_message_get_message_type (message) != G_DBUS_MESSAGE_TYPE_SIGNAL)
    stream_break (self, "a message of the protocol that is not a signal");
  else if (!g_atomic_int_get (&self->broken))
    handle_message (self, message);

  g_object_unref (message);   /* a filter owns the message it drops */

  return NULL;
}

/* ------------------------------------------------------------------------------------------
 * The end of the process
 *
 * Like stdio's buffers, what the application posted before its process exits normally
 * (returning from main() or calling exit()) is written before the process ends: an
 * atexit() handler asks the worker thread to send what the relays hold and waits, at most
 * MP_STREAM_EXIT_WAIT, until GDBus has written it. A crash or _exit() loses what was not
 * written yet.
 */

#define MP_STREAM_EXIT_WAIT (5 * G_USEC_PER_SEC)

static GMutex streams_lock;
static GList *streams;   /* MpStream, unowned: each removes itself as it is freed */

static void
streams_forget (MpStream *self)
{
  g_mutex_lock (&streams_lock);
  streams = g_list_remove (streams, self);
  g_mutex_unlock (&streams_lock);
}

typedef struct
{
  GMutex lock;
  GCond cond;
  gboolean done;
  GPtrArray *streams;   /* strong */
  /* When the waiting ends; moved on by the worker thread while posts go out. Written
   * under lock, by the worker thread only. */
  gint64 deadline;
  gboolean flushed;     /* the worker thread's */
  guint pending;        /* the worker thread's: the posts left at the last look */
} ExitFlush;

/* How many posts of @self's ports are not yet in the outbox: in the relays' inboxes and
 * backlogs. Worker thread. */
static guint
stream_pending (MpStream *self)
{
  g_autoptr(GPtrArray) relays = g_ptr_array_new_with_free_func (g_object_unref);
  guint pending = 0;
  GHashTableIter iter;
  gpointer value;

  g_mutex_lock (&self->lock);
  g_hash_table_iter_init (&iter, self->links);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      MpStreamLink *link = value;

      pending += link->backlog.length + held_length (link);
      g_ptr_array_add (relays, g_object_ref (link->relay));
    }
  g_mutex_unlock (&self->lock);

  /* Not under the stream's lock: a poster holds a side's lock when it takes the stream's. */
  for (guint i = 0; i < relays->len; i++)
    {
      MpPipeSide *side = mp_message_port_get_side (g_ptr_array_index (relays, i));

      g_mutex_lock (&side->mutex);
      mp_pipe_side_flush_lane_locked (side);
      pending += side->inbox.length;
      g_mutex_unlock (&side->mutex);
    }

  return pending;
}

/* The ports still open here close with the process: their Closes go after their posts, and
 * the stream lingers, as when the application closes its last port (stream_shut_cb()), so
 * that the other side's writes cannot cut off what it has not read yet. Worker thread. */
static void
stream_close_all_at_exit (MpStream *self)
{
  GHashTableIter iter;
  gpointer value;

  g_mutex_lock (&self->lock);
  if (!self->closing)
    {
      g_hash_table_iter_init (&iter, self->links);
      while (g_hash_table_iter_next (&iter, NULL, &value))
        {
          MpStreamLink *link = value;

          if (link->remote_closed)
            continue;
          g_array_append_val (self->out_closes, link->id);
          self->last_id = link->id;
          self->linger = TRUE;
        }
      self->closing = TRUE;
    }
  g_mutex_unlock (&self->lock);
}

static gboolean
exit_flush_cb (gpointer data)
{
  ExitFlush *op = data;

  guint pending = 0;

  /* Every millisecond, until the relays have handed everything over (a relay delivers a
   * bounded number of messages per dispatch, and a full window waits for the other side's
   * credit), or streams_flush_at_exit() stops waiting. As long as the other sides keep
   * taking posts, the wait goes on: it ends after MP_STREAM_EXIT_WAIT without progress. */
  for (guint i = 0; i < op->streams->len; i++)
    {
      MpStream *self = g_ptr_array_index (op->streams, i);

      if (self->connection != NULL && !g_dbus_connection_is_closed (self->connection))
        pending += stream_pending (self);
    }
  if (pending < op->pending)
    {
      g_mutex_lock (&op->lock);
      op->deadline = g_get_monotonic_time () + MP_STREAM_EXIT_WAIT;
      g_mutex_unlock (&op->lock);
    }
  op->pending = pending;
  if (pending > 0)
    return G_SOURCE_CONTINUE;

  if (!op->flushed)
    {
      op->flushed = TRUE;
      for (guint i = 0; i < op->streams->len; i++)
        {
          MpStream *self = g_ptr_array_index (op->streams, i);

          if (self->connection == NULL)
            continue;
          stream_close_all_at_exit (self);
          stream_flush_cb (self);
          if (self->frames != NULL)
            mp_frames_flush_sync (self->frames, op->deadline);
          if (!g_dbus_connection_is_closed (self->connection))
            g_dbus_connection_flush_sync (self->connection, NULL, NULL);
        }
    }

  /* A stream whose every port is closed here is shutting down: the other side closes the
   * connection once it has read our last Close. Until then, wait: on D-Bus signals, a
   * process that ends first can make the other side's next write fail, and GDBus then drops
   * what it had not read yet, our last posts with it. */
  for (guint i = 0; i < op->streams->len; i++)
    {
      MpStream *self = g_ptr_array_index (op->streams, i);

      if ((self->shut || self->linger) && self->connection != NULL &&
          !g_dbus_connection_is_closed (self->connection))
        return G_SOURCE_CONTINUE;
    }

  g_mutex_lock (&op->lock);
  op->done = TRUE;
  g_cond_signal (&op->cond);
  g_mutex_unlock (&op->lock);

  return G_SOURCE_REMOVE;
}

static void
streams_flush_at_exit (void)
{
  ExitFlush *op;
  GSource *idle;
  gint64 deadline = g_get_monotonic_time () + MP_STREAM_EXIT_WAIT;
  gboolean done;

  op = g_new0 (ExitFlush, 1);
  op->deadline = deadline;
  op->pending = G_MAXUINT;
  op->streams = g_ptr_array_new_with_free_func (stream_unref);
  g_mutex_lock (&streams_lock);
  for (GList *l = streams; l != NULL; l = l->next)
    {
      MpStream *self = l->data;

      int count;

      /* One on its way out (its count reached 0, it waits for streams_lock to leave the
       * list) is skipped: its connection closes anyway. */
      do
        count = g_atomic_int_get ((int *) &self->ref_count);
      while (count > 0 &&
             !g_atomic_int_compare_and_exchange ((int *) &self->ref_count, count, count + 1));
      if (count > 0)
        g_ptr_array_add (op->streams, self);
    }
  g_mutex_unlock (&streams_lock);

  if (op->streams->len == 0)
    {
      g_ptr_array_unref (op->streams);
      g_free (op);
      return;
    }

  g_mutex_init (&op->lock);
  g_cond_init (&op->cond);
  idle = g_timeout_source_new (1);
  g_source_set_priority (idle, G_PRIORITY_LOW);
  g_source_set_callback (idle, exit_flush_cb, op, NULL);
  g_source_attach (idle, mp_worker_context ());
  g_source_unref (idle);

  g_mutex_lock (&op->lock);
  while (!op->done)
    if (!g_cond_wait_until (&op->cond, &op->lock, op->deadline) &&
        g_get_monotonic_time () >= op->deadline)
      break;
  done = op->done;
  g_mutex_unlock (&op->lock);

  /* Timed out: the worker thread still uses @op; leave it to the process's end. */
  if (done)
    {
      g_ptr_array_unref (op->streams);
      g_mutex_clear (&op->lock);
      g_cond_clear (&op->cond);
      g_free (op);
    }
}

static void
streams_remember (MpStream *self)
{
  static gsize registered = 0;

  if (g_once_init_enter (&registered))
    {
      atexit (streams_flush_at_exit);
      g_once_init_leave (&registered, 1);
    }

  g_mutex_lock (&streams_lock);
  streams = g_list_prepend (streams, self);
  g_mutex_unlock (&streams_lock);
}

/* ------------------------------------------------------------------------------------------
 * Setting up and tearing down (worker thread)
 */

/* The connection is gone (closed by either side, or it failed): every port closes here,
 * after what already arrived. */
static void
on_connection_closed (GDBusConnection *connection,
                      gboolean         remote_peer_vanished,
                      GError          *error,
                      gpointer         data)
{
  MpStream *self = data;
  g_autoptr(GPtrArray) relays = g_ptr_array_new_with_free_func (g_object_unref);
  MpFrames *frames;
  GHashTableIter iter;
  gpointer value;

  /* What the direct path already brought comes first (the other side may have written its
   * last posts there just before it ended). */
  self->ended = TRUE;
  if (self->frames != NULL)
    mp_frames_read_now (self->frames);

  g_mutex_lock (&self->lock);
  self->closing = TRUE;
  g_hash_table_iter_init (&iter, self->links);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      MpStreamLink *link = value;

      link->remote_closed = TRUE;
      g_ptr_array_add (relays, g_object_ref (link->relay));
    }
  g_mutex_unlock (&self->lock);

  for (guint i = 0; i < relays->len; i++)
    mp_message_port_close (g_ptr_array_index (relays, i));

  /* The application's context stops watching the socket before it is closed (a read in
   * progress there ends first: mp_frames_close() waits for it). */
  if (self->app_reader != NULL)
    {
      g_source_destroy (self->app_reader);
      g_clear_pointer (&self->app_reader, g_source_unref);
      g_clear_pointer (&self->app_context, g_main_context_unref);
    }
  g_mutex_lock (&self->lock);
  frames = g_steal_pointer (&self->frames);
  g_mutex_unlock (&self->lock);
  g_clear_pointer (&frames, mp_frames_close);

  if (self->linger_source != NULL)
    {
      g_source_destroy (self->linger_source);
      g_clear_pointer (&self->linger_source, g_source_unref);
    }
  /* Ended by the other side or by a failure, GDBus keeps the stream open until the
   * connection is closed or finalized: the socket is released now. */
  if (!self->close_started)
    {
      self->close_started = TRUE;
      g_dbus_connection_close (connection, NULL, NULL, NULL);
    }

  /* Removing the filter may drop the last reference but ours. */
  stream_ref (self);
  g_clear_signal_handler (&self->closed_id, connection);
  g_dbus_connection_remove_filter (connection, self->filter_id);
  stream_unref (self);
}

static void
stream_report_ready (MpStream     *self,
                     const GError *error)
{
  g_autoptr(MpMessagePort) port = g_steal_pointer (&self->ready_port);

  if (self->ready != NULL)
    self->ready (port, error, self->ready_data);
}

static void
stream_fail (MpStream     *self,
             const GError *error)
{
  g_autoptr(GPtrArray) links = g_ptr_array_new ();
  GHashTableIter iter;
  gpointer value;

  g_mutex_lock (&self->lock);
  self->closing = TRUE;
  g_hash_table_iter_init (&iter, self->links);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      ((MpStreamLink *) value)->remote_closed = TRUE;
      g_ptr_array_add (links, value);
    }
  g_mutex_unlock (&self->lock);

  /* Never started: closed and finished here. */
  for (guint i = 0; i < links->len; i++)
    {
      MpStreamLink *link = g_ptr_array_index (links, i);

      mp_message_port_close (link->relay);
      link_finish (link);
    }

  stream_report_ready (self, error);
}

/* Our Hello, first of all: the server offers a socket for the direct path when the
 * connection can pass file descriptors; the client says it can use one. */
/* MPPORT_STREAM_SIGNALS_ONLY (any value) keeps every stream of the process on D-Bus signals,
 * neither offering nor accepting the direct path: for the tests of that path between two
 * mpport processes. */
static gboolean
direct_allowed (void)
{
  static gsize allowed = 0;

  if (g_once_init_enter (&allowed))
    g_once_init_leave (&allowed, g_getenv ("MPPORT_STREAM_SIGNALS_ONLY") == NULL ? 2 : 1);

  return allowed == 2;
}

static void
send_hello (MpStream *self)
{
  g_autoptr(GDBusMessage) message = g_dbus_message_new_signal (MP_STREAM_PATH, MP_STREAM_INTERFACE,
                                                               MP_STREAM_HELLO);
  g_autoptr(GUnixFDList) fds = NULL;
  GVariantBuilder options;

  g_variant_builder_init (&options, G_VARIANT_TYPE ("a{sv}"));
  if (!direct_allowed ())
    ;
  else if (!self->server)
    g_variant_builder_add (&options, "{sv}", MP_STREAM_OPTION_DIRECT, g_variant_new_boolean (TRUE));
  else if (g_dbus_connection_get_capabilities (self->connection) &
           G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING)
    {
      int pair[2];

      if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0)
        {
          fds = g_unix_fd_list_new_from_array (&pair[1], 1);   /* takes pair[1] */
          g_mutex_lock (&self->lock);
          self->offered_fd = pair[0];
          g_mutex_unlock (&self->lock);
          g_variant_builder_add (&options, "{sv}", MP_STREAM_OPTION_DIRECT,
                                 g_variant_new_handle (0));
          g_dbus_message_set_unix_fd_list (message, fds);
        }
    }

  g_dbus_message_set_body (message, g_variant_new ("(ua{sv})", MP_STREAM_VERSION, &options));
  /* Fails only once the connection is closed, and "closed" then closes every port. */
  g_dbus_connection_send_message (self->connection, message, G_DBUS_SEND_MESSAGE_FLAGS_NONE,
                                  NULL, NULL);
}

/* A frame of the direct path, on the worker thread: the same bodies as the signals. */
static void
on_frame (guint8        kind,
          GBytes       *body,
          const GError *error,
          gpointer      data)
{
  MpStream *self = data;
  g_autoptr(GVariant) value = NULL;
  const char *member;
  const char *type;

  if (kind == 0)
    {
      /* The other side closed the socket (it closed the stream, or ended), or broke its
       * format: the whole stream ends, after what was read. */
      if (error != NULL)
        stream_break (self, "its direct path failed: %s", error->message);
      else
        g_dbus_connection_close (self->connection, NULL, NULL, NULL);
      return;
    }
  if (g_atomic_int_get (&self->broken))
    return;

  switch (kind)
    {
    case FRAME_POST:
      member = MP_STREAM_POST;
      type = MP_STREAM_POST_TYPE;
      break;
    case FRAME_CLOSE:
      member = MP_STREAM_CLOSE;
      type = MP_STREAM_CLOSE_TYPE;
      break;
    case FRAME_CREDIT:
      member = MP_STREAM_CREDIT;
      type = MP_STREAM_CREDIT_TYPE;
      break;
    case FRAME_ROOM:
      member = MP_STREAM_ROOM;
      type = MP_STREAM_ROOM_TYPE;
      break;
    default:
      stream_break (self, "a frame of unknown kind %u", kind);
      return;
    }

  /* Untrusted: GVariant reads any bytes safely, and the checks of handle_data() hold for
   * whatever it reads. Only the small bodies must be in normal form: checking a Post's
   * would walk every byte of its payloads (GLib checks arrays element by element), which
   * cost more than the rest of its decoding; a Post that is not in normal form reads as
   * columns that do not add up, or as posts that are each checked for their own type. */
  if (kind == FRAME_POST)
    {
      g_autoptr(GPtrArray) strings = g_ptr_array_new ();
      PostColumns columns = { 0, };

      if (parse_post (body, &columns, strings))
        {
          handle_columns (self, &columns);
          g_bytes_unref (columns.payloads);
          return;
        }
    }

  value = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (type), body, FALSE));
  if (kind != FRAME_POST && !g_variant_is_normal_form (value))
    {
      stream_break (self, "a %s frame that is not in normal form", member);
      return;
    }
#if G_BYTE_ORDER == G_BIG_ENDIAN
  {
    GVariant *swapped = g_variant_take_ref (g_variant_byteswap (value));

    g_variant_unref (value);
    value = swapped;
  }
#endif

  handle_data (self, member, value);
}

/* The other side's Hello came (handle_hello()): the direct path opens if both agreed, and
 * the ports start sending. */
/* The reader on the application's context: a GSource watching the direct path's socket.
 * Its prepare() and check() bracket the context's poll, so the worker thread knows when
 * this thread sleeps in it and will wake for the socket (app_polling). */
typedef struct
{
  GSource parent;
  MpStream *stream;   /* strong */
  gpointer tag;
} AppReader;

static gboolean
app_reader_prepare (GSource *source,
                    gint    *timeout)
{
  g_atomic_int_set (&((AppReader *) source)->stream->app_polling, 1);
  *timeout = -1;

  return FALSE;
}

static gboolean
app_reader_check (GSource *source)
{
  AppReader *reader = (AppReader *) source;

  g_atomic_int_set (&reader->stream->app_polling, 0);

  return (g_source_query_unix_fd (source, reader->tag) & (G_IO_IN | G_IO_HUP | G_IO_ERR)) != 0;
}

static gboolean
app_reader_dispatch (GSource     *source,
                     GSourceFunc  callback,
                     gpointer     user_data)
{
  MpStream *self = ((AppReader *) source)->stream;
  MpFrames *frames;

  g_atomic_int_set (&self->app_polling, 0);
  g_mutex_lock (&self->lock);
  frames = self->frames != NULL ? mp_frames_ref (self->frames) : NULL;
  g_mutex_unlock (&self->lock);

  /* The worker thread may be reading: it hands over what it reads, and this source comes
   * back while the socket stays readable. */
  if (frames != NULL)
    {
      if (mp_frames_try_read (frames))
        g_atomic_int_inc (&self->app_reads);
      mp_frames_unref (frames);
    }

  return G_SOURCE_CONTINUE;
}

static void
app_reader_finalize (GSource *source)
{
  g_clear_pointer (&((AppReader *) source)->stream, stream_unref);
}

static GSourceFuncs app_reader_funcs = {
  .prepare = app_reader_prepare,
  .check = app_reader_check,
  .dispatch = app_reader_dispatch,
  .finalize = app_reader_finalize,
};

/* Worker thread: once the application's end of port 0 is started on a context of its own,
 * that context reads the direct path too. */
static void
stream_attach_app_reader (MpStream *self)
{
  MpStreamLink *link;
  MpPipeSide *side = NULL;
  GMainContext *context = NULL;
  guint64 first = 0;
  AppReader *reader;

  g_mutex_lock (&self->lock);
  link = g_hash_table_lookup (self->links, &first);
  if (link != NULL && self->frames != NULL)
    side = link->fed;   /* links are freed on this thread only */
  g_mutex_unlock (&self->lock);
  if (side == NULL || !mp_pipe_side_test (side, MP_SIDE_ATTACHED))
    return;

  g_mutex_lock (&side->mutex);
  if (side->source != NULL && g_source_get_context (side->source) != NULL)
    context = g_main_context_ref (g_source_get_context (side->source));
  g_mutex_unlock (&side->mutex);
  if (context == NULL || context == mp_worker_context ())
    {
      g_clear_pointer (&context, g_main_context_unref);
      return;
    }

  /* The context is held until the stream ends: destroying the source from this thread
   * must never race with its context's finalization. */
  reader = (AppReader *) g_source_new (&app_reader_funcs, sizeof (AppReader));
  reader->stream = stream_ref (self);
  reader->tag = g_source_add_unix_fd (&reader->parent, mp_frames_get_fd (self->frames),
                                      G_IO_IN | G_IO_HUP | G_IO_ERR);
  g_source_set_static_name (&reader->parent, "MpStream application reader");
  self->app_context = context;
  self->app_reader = &reader->parent;
  g_source_attach (self->app_reader, context);
}

/* The worker thread's question before it reads the direct path (MpFramesDeferFunc): it
 * leaves the reading to the application's context while that context's thread sleeps in
 * its poll (it wakes for the socket and reads), and takes it back if that thread did not
 * read since the last time it was left to it (its context is busy or no longer iterated). */
static gboolean
stream_defer_read (gpointer data)
{
  MpStream *self = data;
  gboolean active;
  int reads;

  if (self->app_reader == NULL)
    stream_attach_app_reader (self);
  if (self->app_reader == NULL)
    return FALSE;

  /* It reads each time its context iterates, busy or asleep: leave it the reading if it is
   * asleep in its poll (it wakes for the socket) or read since the last look (it keeps up).
   * Otherwise its context is busy elsewhere or no longer iterated, and this thread reads. */
  reads = g_atomic_int_get (&self->app_reads);
  active = reads != self->deferred_reads;
  self->deferred_reads = reads;

  return active || g_atomic_int_get (&self->app_polling);
}

static gboolean
stream_begin_cb (gpointer data)
{
  MpStream *self = data;
  g_autoptr(GPtrArray) links = g_ptr_array_new ();
  GHashTableIter iter;
  gpointer value;
  int direct_fd;
  int offered_fd;

  g_mutex_lock (&self->lock);
  direct_fd = self->direct_fd;
  offered_fd = self->offered_fd;
  self->direct_fd = self->offered_fd = -1;
  g_hash_table_iter_init (&iter, self->links);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    g_ptr_array_add (links, value);
  g_mutex_unlock (&self->lock);

  if (offered_fd >= 0)
    close (offered_fd);   /* not taken: the client cannot use it */
  if (direct_fd >= 0)
    {
      if (self->ended)
        close (direct_fd);
      else
        {
          MpFrames *frames = mp_frames_new (direct_fd, mp_worker_context (), on_frame, self);

          mp_frames_set_defer (frames, stream_defer_read);
          g_mutex_lock (&self->lock);
          self->frames = frames;
          g_mutex_unlock (&self->lock);
        }
    }

  self->begun = TRUE;
  for (guint i = 0; i < links->len; i++)
    link_start (g_ptr_array_index (links, i), TRUE);

  return G_SOURCE_REMOVE;
}

static void
on_connection_made (GObject      *object,
                    GAsyncResult *result,
                    gpointer      data)
{
  MpStream *self = data;
  g_autoptr(GError) error = NULL;
  GDBusConnection *connection;

  connection = g_dbus_connection_new_finish (result, &error);
  if (connection == NULL)
    {
      stream_fail (self, error);
      stream_unref (self);
      return;
    }

  self->connection = connection;
  {
    GSource *source = mp_wakeable_source_new (&grant_source_funcs, sizeof (GrantSource),
                                              mp_worker_context ());

    ((GrantSource *) source)->stream = stream_ref (self);
    g_source_set_static_name (source, "MpStream grants");
    g_source_attach (source, mp_worker_context ());
    g_atomic_pointer_set (&self->grant_source, source);
    /* Feeds queued before it was there (a mark set on a port before the connection was
     * up) woke nothing. */
    mp_wakeable_source_wake (source);
  }
  self->closed_id = g_signal_connect (connection, "closed", G_CALLBACK (on_connection_closed),
                                      self);
  self->filter_id = g_dbus_connection_add_filter (connection, stream_filter, stream_ref (self),
                                                  stream_unref);
  send_hello (self);
  g_dbus_connection_start_message_processing (connection);

  stream_report_ready (self, NULL);

  /* The ports start once the other side's Hello came (stream_begin_cb()). */
  stream_unref (self);   /* the set-up's */
}

static gboolean
connect_cb (gpointer data)
{
  MpStream *self = data;
  g_autofree char *guid = NULL;

  if (self->flags & G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_SERVER)
    guid = g_dbus_generate_guid ();

  g_dbus_connection_new (self->io, guid, self->flags, NULL, self->cancellable,
                         on_connection_made, self);
  g_clear_object (&self->io);

  return G_SOURCE_REMOVE;
}

GDBusConnectionFlags
mp_stream_connection_flags (MpStreamFlags flags)
{
  GDBusConnectionFlags result = G_DBUS_CONNECTION_FLAGS_DELAY_MESSAGE_PROCESSING;

  if (flags & MP_STREAM_FLAGS_SERVER)
    {
      result |= G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_SERVER;
      if (flags & MP_STREAM_FLAGS_ALLOW_ANONYMOUS)
        result |= G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_ALLOW_ANONYMOUS;
      else
        result |= G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_REQUIRE_SAME_USER;
    }
  else
    result |= G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT;

  return result;
}

/* GLib 2.74 keeps the description of a GVariant type (its GVariantTypeInfo) only while a
 * value of that type exists, in a table under a global lock: each Post built or read
 * alone made and freed the descriptions of its tuple and columns again, most of the
 * 100 000 instructions a round trip cost (callgrind, xproc-pingpong). Values of the
 * bodies' types, kept for the life of the process, keep them. */
static GVariant *volatile kept_bodies[3];   /* reachable (volatile: the stores stay), so that no leak checker minds them */

static void
keep_body_types (void)
{
  static gsize kept = 0;

  if (g_once_init_enter (&kept))
    {
      const char *const none[] = { NULL };
      GVariant *post = g_variant_new ("(@at@au^as@au@ay@au@at)",
                                      g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, NULL, 0, 8),
                                      g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32, NULL, 0, 4),
                                      none,
                                      g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32, NULL, 0, 4),
                                      g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, NULL, 0, 1),
                                      g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32, NULL, 0, 4),
                                      g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, NULL, 0, 8));
      GVariant *close = g_variant_new ("(@at)", g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64,
                                                                          NULL, 0, 8));
      GVariant *credit = g_variant_new ("(@a(tt))", g_variant_new_array (G_VARIANT_TYPE ("(tt)"),
                                                                        NULL, 0));

      g_assert (g_variant_is_of_type (post, G_VARIANT_TYPE (MP_STREAM_POST_TYPE)));
      /* Never freed: the type descriptions are what is kept. */
      kept_bodies[0] = g_variant_ref_sink (post);
      kept_bodies[1] = g_variant_ref_sink (close);
      kept_bodies[2] = g_variant_ref_sink (credit);
      g_once_init_leave (&kept, 1);
    }
}

/* A stream with port 0 in its table: the application's end is returned in @port. */
static MpStream *
stream_new (gboolean        server,
            MpMessagePort **port)
{
  MpStream *self = g_new0 (MpStream, 1);
  MpPipe *pipe = mp_pipe_new ();
  MpStreamLink *link;

  keep_body_types ();

  g_atomic_ref_count_init (&self->ref_count);
  self->server = server;
  self->next_id = server ? 2 : 1;
  g_mutex_init (&self->lock);
  self->links = g_hash_table_new (g_int64_hash, g_int64_equal);
  burst_init (&self->out_posts);
  g_queue_init (&self->out_full);
  self->out_closes = g_array_new (FALSE, FALSE, sizeof (guint64));
  self->out_credits = g_array_new (FALSE, FALSE, sizeof (guint64));
  self->out_rooms = g_array_new (FALSE, FALSE, sizeof (guint64));
  self->credited = g_array_new (FALSE, FALSE, sizeof (guint64));
  self->grant_queue = g_async_queue_new_full (feed_unref);
  self->offered_fd = self->direct_fd = -1;

  /* Port 0: the application's end, and the relay that waits (unstarted, so posts queue in
   * its inbox) until the connection is up. */
  *port = mp_message_port_new_for_side (&pipe->sides[0], TRUE);
  link = link_new (self, 0, mp_message_port_new_for_side (&pipe->sides[1], TRUE));
  mp_pipe_unref (pipe);
  g_hash_table_insert (self->links, &link->id, link);

  return self;
}

MpMessagePort *
mp_stream_open (GIOStream            *io,
                GDBusConnectionFlags  flags,
                GCancellable         *cancellable,
                MpStreamReadyFunc     ready,
                gpointer              user_data)
{
  MpMessagePort *port;
  MpStream *self = stream_new ((flags & G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_SERVER) != 0,
                               &port);

  self->ready = ready;
  self->ready_data = user_data;
  if (ready != NULL)
    self->ready_port = g_object_ref (port);
  self->io = g_object_ref (io);
  self->cancellable = cancellable != NULL ? g_object_ref (cancellable) : NULL;
  self->flags = flags;

  streams_remember (self);

  /* The reference of the connection's set-up (released in on_connection_made()). */
  g_main_context_invoke (mp_worker_context (), connect_cb, self);

  return port;
}

/* ------------------------------------------------------------------------------------------
 * Detached streams, for the fuzzer and the tests of the decoder
 */

MpStream *
mp_stream_new_detached (gboolean        server,
                        MpMessagePort **port)
{
  MpStream *self = stream_new (server, port);

  self->detached = TRUE;

  return self;
}

void
mp_stream_receive (MpStream     *self,
                   GDBusMessage *message)
{
  g_return_if_fail (self->detached);

  if (g_strcmp0 (g_dbus_message_get_interface (message), MP_STREAM_INTERFACE) != 0)
    return;
  if (g_dbus_message_get_message_type (message) != G_DBUS_MESSAGE_TYPE_SIGNAL)
    stream_break (self, "a message of the protocol that is not a signal");
  else if (!g_atomic_int_get (&self->broken))
    handle_message (self, message);
}

void
mp_stream_receive_frame (MpStream *self,
                         guint8    kind,
                         GBytes   *body)
{
  g_return_if_fail (self->detached);
  g_return_if_fail (kind != 0);

  if (!self->hello_seen)
    stream_break (self, "a frame before Hello");
  else if (!g_atomic_int_get (&self->direct))
    stream_break (self, "a frame on a stream that did not open the direct path");
  else
    on_frame (kind, body, NULL, self);
}

gboolean
mp_stream_is_broken (MpStream *self)
{
  return g_atomic_int_get (&self->broken);
}

void
mp_stream_free_detached (MpStream *self)
{
  g_return_if_fail (self->detached);

  stream_fail (self, NULL);
  stream_unref (self);
}
