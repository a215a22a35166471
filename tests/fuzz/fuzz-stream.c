/* fuzz-stream.c: libFuzzer target for the receiving side of a stream (mpport/mp-stream.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Built and run by `MPPORT_FUZZ_TARGET=stream scripts/fuzz` (clang
 * -fsanitize=fuzzer,address,undefined). Each input is what a peer process sends on one
 * stream, fed to a detached stream (mp-stream-private.h) through mp_stream_receive(), the
 * entry point of the filter that reads a real connection, and, once the peer's Hello asked
 * for the direct path, through mp_stream_receive_frame(), the entry point of the reader of
 * its socket. The first byte picks the side (bit 0 set: this side is the server, so the peer
 * names its ports with odd ids); the rest is a sequence of steps, each an opcode byte (bits
 * 0-2: the step; bit 3: round-trip the message through g_dbus_message_to_blob() and
 * g_dbus_message_new_from_blob(), as the connection's reader would hand it over; bit 4: do
 * that in big-endian byte order; bits 5-7: for a Post, how its columns are put together, see
 * make_post()):
 *
 *   0     a raw D-Bus message: a 16-bit length and that many bytes, cut to the size its
 *         header declares (g_dbus_message_bytes_needed(), as GDBus's reader does) and
 *         parsed by g_dbus_message_new_from_blob(): whatever GDBus accepts from a peer;
 *   1     Hello, with a fuzz-chosen version (mostly 1) and options, among them at times
 *         "direct": in the form that asks for the direct path (a client's true, a server's
 *         handle, as the peer is the one or the other), in the other side's form, or not a
 *         request at all;
 *   2, 6  Post, with posts to fuzz-chosen ids (port 0, ports the peer announced, ids in the
 *         gaps, ids of this side, ids never announced), payloads (NULL, valid values, raw
 *         type strings and bytes, refused types, overlong type strings, big ones) and
 *         transfer lists (fresh ids, skipped ids, invalid ones, lists at and over
 *         MP_STREAM_MAX_TRANSFER), in columns that agree or not;
 *   3     Close of fuzz-chosen ids;
 *   4     a misshapen message: a wrong body type, no body, an unknown member, a method call
 *         of the protocol's interface, messages of other interfaces;
 *   5     with bits 3-4 0: the application closes one of the ports it holds (its relay then
 *         drops posts); 1: it sets a high-water mark on one of them, or removes it (which
 *         has mpport tell the peer with a Room, which a detached stream never sends); 2: a
 *         frame (frame_step()): a fuzz-chosen kind (mostly Post, Close, Credit or Room) and
 *         body (raw bytes, or a serialized Post, Close, Credit or Room with a few bytes
 *         changed, cut or added); 3: a Post, Close, Credit or Room on the other channel than
 *         the stream's: as a signal on the direct path, as a frame without it;
 *   7     with bit 5 clear, Credit of fuzz-chosen ids and amounts (valid, zero, over 32
 *         bits); with bit 5 set, Room of fuzz-chosen ids, marks and counts taken.
 *
 * On the direct path, steps 2, 3, 6 and 7 send the body they make as a frame of its kind
 * (serialized in normal form, little-endian), not as a signal; bits 3-4 do not apply.
 *
 * A model of the protocol as docs/wire.md describes it reads every message GDBus would
 * deliver and every frame, and predicts, for every port, what its application end receives:
 * the valid posts to it in order (value, and the ids of the ports carried), one
 * G_IO_ERROR_INVALID_DATA per invalid payload, its close after a Close; and whether the
 * stream breaks. A frame carries the body of the signal of its kind and is decoded the same
 * way; it breaks the stream unless the peer's Hello asked for the direct path, if its kind is
 * none of the four, or if it is a Close, Credit or Room not in normal form (a Post is read as
 * any untrusted GVariant is); on the direct path a Post, Close, Credit or Room signal breaks
 * it. A Credit or Room changes no delivery: it breaks the stream only for an unknown id (or a
 * Credit of 0 or over 32 bits). The checks against what mpport sent on the port (a Credit for
 * more than is in flight, a Room that took more than was sent) are made by the worker thread,
 * in the drain a detached stream never runs, so the model cannot see them: a detached stream
 * sends nothing, so every Credit and every Room with a count taken other than 0 is beyond
 * them, and the model says such a message does not break the stream. After every step,
 * every port with something due is drained with mp_message_port_receive_timeout (port, 0)
 * and checked:
 *
 *   - the stream is broken exactly when the model says so (a detached stream never grants
 *     credit, so a port's window closes for good after MP_STREAM_WINDOW of cost); from
 *     then on nothing more is delivered to any port;
 *   - each port gets exactly what the model predicts, in order; every port carried in a
 *     message is a MpMessagePort, and the posts to its id arrive on it;
 *   - no port stays in transit: every message that carries ports is delivered.
 *
 * At the end, mp_stream_free_detached() must close every port the harness holds: each
 * gives MP_ERROR_CLOSED and nothing else (no stray delivery) and is_peer_closed(). The
 * stream, the ports and the messages are all freed per input, so LeakSanitizer sees any
 * leak. A failed check aborts with a message: libFuzzer reports it as a crash.
 */

#include <mpport/mpport.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp-stream-private.h"
#include "mp-wire-private.h"

#define MAX_STEPS       256
/* The kinds of the frames of the direct path (mpport/mp-frames-private.h, docs/wire.md). */
#define FRAME_POST       1
#define FRAME_CLOSE      2
#define FRAME_CREDIT     3
#define FRAME_ROOM       4
/* The longest raw frame body made from the input. */
#define MAX_RAW_FRAME    2048
#define MAX_SMALL_STRING 24
#define MAX_RAW_TYPE     16
#define CAPABILITIES     G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING

static void fail (const char *format, ...) G_GNUC_PRINTF (1, 2) G_GNUC_NORETURN;

#define CHECK(cond, ...) \
  G_STMT_START { if (G_UNLIKELY (!(cond))) fail (__VA_ARGS__); } G_STMT_END

static void
fail (const char *format,
      ...)
{
  va_list args;

  va_start (args, format);
  fprintf (stderr, "fuzz-stream: invariant violated: ");
  vfprintf (stderr, format, args);
  fprintf (stderr, "\n");
  va_end (args);
  abort ();
}

/* ------------------------------------------------------------------------------------------
 * Input
 */

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

static guint16
next_u16 (Reader *r)
{
  guint16 v = next_byte (r);

  return v | (guint16) next_byte (r) << 8;
}

static guint32
next_u32 (Reader *r)
{
  guint32 v = next_u16 (r);

  return v | (guint32) next_u16 (r) << 16;
}

static guint64
next_u64 (Reader *r)
{
  guint64 v = next_u32 (r);

  return v | (guint64) next_u32 (r) << 32;
}

/* A length read from the input (@wanted), cut to what is left of it. */
static gsize
take_length (Reader *r,
             gsize   wanted)
{
  return MIN (wanted, r->size - r->pos);
}

/* Up to @max bytes (a length byte first) as valid UTF-8 without NUL: what a D-Bus string
 * can hold. */
static char *
next_string (Reader *r,
             gsize   max)
{
  gsize length = take_length (r, next_byte (r) % (max + 1));
  g_autofree char *raw = g_strndup ((const char *) r->data + r->pos, length);

  r->pos += length;
  return g_utf8_make_valid (raw, -1);
}

static GVariant *
next_byte_array (Reader *r,
                 gsize   max)
{
  gsize length = take_length (r, next_byte (r) % (max + 1));
  GVariant *bytes = g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, r->data + r->pos, length, 1);

  r->pos += length;
  return bytes;
}

/* ------------------------------------------------------------------------------------------
 * The model: the protocol as docs/wire.md says a receiver handles it
 */

typedef enum
{
  EXPECT_DATA,    /* a message: its value, and the ids of the ports it carries */
  EXPECT_ERROR,   /* a payload that could not be decoded: G_IO_ERROR_INVALID_DATA */
  EXPECT_CLOSE,   /* the peer's close: MP_ERROR_CLOSED */
} ExpectKind;

typedef struct
{
  ExpectKind kind;
  GVariant *data;   /* EXPECT_DATA, nullable */
  GArray *ids;      /* EXPECT_DATA: guint64 */
} Expect;

typedef enum
{
  PORT_PENDING,   /* its application end travels in a message not taken yet */
  PORT_HELD,      /* the harness holds its application end */
  PORT_ENDED,     /* the harness took its close, or closed it: nothing more arrives */
  PORT_DEAD,      /* the stream dropped its application end: nothing is ever seen */
} PortState;

typedef struct
{
  guint64 id;
  PortState state;
  /* A Close for it arrived: later posts to it are dropped. */
  gboolean relay_closed;
  /* The cost of the posts it received (flow control): a detached stream grants none. */
  guint64 received;
  MpMessagePort *port;   /* strong, from PORT_HELD on */
  GQueue expected;       /* Expect */
  gboolean dirty;        /* in Fuzz.dirty */
} PortModel;

typedef struct
{
  gboolean server;
  MpStream *stream;

  /* Every id that has a port on this side: 0 and every id the peer announced. */
  GHashTable *ports;   /* guint64 * -> PortModel */
  GArray *announced;   /* guint64, the peer's ids in order */
  GPtrArray *dirty;    /* PortModel with something newly due */
  guint n_pending;
  guint n_links;

  gboolean hello_seen;
  /* The peer's Hello asked for the direct path: its data comes as frames. */
  gboolean direct;
  gboolean broken;
  guint64 peer_max;
  guint32 serial;
} Fuzz;

static void
expect_free (Expect *e)
{
  g_clear_pointer (&e->data, g_variant_unref);
  g_clear_pointer (&e->ids, g_array_unref);
  g_free (e);
}

static void
port_model_free (gpointer data)
{
  PortModel *pm = data;

  g_queue_clear_full (&pm->expected, (GDestroyNotify) expect_free);
  g_clear_object (&pm->port);
  g_free (pm);
}

static PortModel *
port_model_add (Fuzz      *f,
                guint64    id,
                PortState  state)
{
  PortModel *pm = g_new0 (PortModel, 1);

  pm->id = id;
  pm->state = state;
  g_queue_init (&pm->expected);
  g_hash_table_insert (f->ports, &pm->id, pm);
  if (state == PORT_PENDING)
    f->n_pending++;

  return pm;
}

static PortModel *
port_model_lookup (Fuzz    *f,
                   guint64  id)
{
  return g_hash_table_lookup (f->ports, &id);
}

static void
port_model_kill (Fuzz      *f,
                 PortModel *pm)
{
  g_assert (pm->state == PORT_PENDING);
  pm->state = PORT_DEAD;
  f->n_pending--;
}

static void
expect (Fuzz       *f,
        PortModel  *pm,
        ExpectKind  kind,
        GVariant   *data,
        GArray     *ids)
{
  Expect *e = g_new0 (Expect, 1);

  e->kind = kind;
  e->data = data != NULL ? g_variant_ref (data) : NULL;
  e->ids = ids != NULL ? g_array_ref (ids) : NULL;
  g_queue_push_tail (&pm->expected, e);
  if (!pm->dirty)
    {
      pm->dirty = TRUE;
      g_ptr_array_add (f->dirty, pm);
    }
}

static guint64
peer_first_id (Fuzz *f)
{
  return f->server ? 1 : 2;
}

static gboolean
is_own_id (Fuzz    *f,
           guint64  id)
{
  return id != 0 && ((id & 1) == 0) == f->server;
}

/* A detached stream has no ports of its own besides 0: every own id is unknown. */
static gboolean
id_known (Fuzz    *f,
          guint64  id)
{
  return id == 0 || (!is_own_id (f, id) && id <= f->peer_max);
}

/* Whether a post to @pm reaches its application end. */
static gboolean
deliverable (PortModel *pm)
{
  return pm != NULL && !pm->relay_closed &&
         (pm->state == PORT_PENDING || pm->state == PORT_HELD);
}

/* The value of a post of @type_string and @length bytes at @bytes (transfer full, nullable
 * for a NULL post), or FALSE if the post is invalid: the checks of docs/wire.md, written
 * from the description. */
static gboolean
model_decode (const char    *type_string,
              const guint8  *bytes,
              gsize          length,
              GVariant     **data)
{
  g_autoptr(GBytes) copy = NULL;
  g_autoptr(GVariant) value = NULL;
  gsize type_length = strlen (type_string);

  *data = NULL;
  if (type_length == 0)
    return length == 0;
  if (type_length > MP_WIRE_MAX_TYPE_STRING ||
      !g_variant_type_string_is_valid (type_string) ||
      !g_variant_type_is_definite (G_VARIANT_TYPE (type_string)) ||
      strchr (type_string, 'h') != NULL ||
      length > MP_WIRE_MAX_PAYLOAD)
    return FALSE;

  copy = g_bytes_new (bytes, length);
  value = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (type_string), copy,
                                                        FALSE));
  if (!g_variant_is_normal_form (value))
    return FALSE;
  *data = g_steal_pointer (&value);

  return TRUE;
}

/* One post of a Post signal, to port @id, of @length payload bytes, transferring the
 * @n_ids ports @ids: FALSE if it breaks the protocol. */
static gboolean
model_post (Fuzz           *f,
            guint64         id,
            const char     *type_string,
            const guint8   *bytes,
            gsize           length,
            const guint64  *ids,
            gsize           n_ids)
{
  g_autoptr(GVariant) data = NULL;
  g_autoptr(GArray) new_ids = g_array_new (FALSE, FALSE, sizeof (guint64));
  PortModel *target;
  gboolean valid;

  if (!id_known (f, id) || n_ids > MP_STREAM_MAX_TRANSFER)
    return FALSE;
  for (gsize i = 0; i < n_ids; i++)
    {
      if (ids[i] == 0 || is_own_id (f, ids[i]) || ids[i] <= f->peer_max)
        return FALSE;
      f->peer_max = ids[i];
    }
  if (f->n_links + n_ids > MP_STREAM_MAX_PORTS)
    return FALSE;

  /* Flow control: a post to a port whose window is used up breaks the stream. A port
   * closed by a Close keeps its place here (and its count): a detached stream never
   * finishes one, and never grants credit. */
  target = port_model_lookup (f, id);
  if (target != NULL)
    {
      if (target->received >= MP_STREAM_WINDOW)
        return FALSE;
      target->received += MP_STREAM_COST_OVERHEAD + length;
    }

  f->n_links += n_ids;
  if (n_ids > 0)
    g_array_append_vals (new_ids, ids, n_ids);
  for (gsize i = 0; i < n_ids; i++)
    {
      port_model_add (f, ids[i], PORT_PENDING);
      g_array_append_val (f->announced, ids[i]);
    }

  valid = model_decode (type_string, bytes, length, &data);
  if (deliverable (target) && valid)
    {
      expect (f, target, EXPECT_DATA, data, new_ids);
      return TRUE;
    }

  /* Dropped or reported: the ports it carried are dropped with it. */
  if (deliverable (target))
    expect (f, target, EXPECT_ERROR, NULL, NULL);
  for (gsize i = 0; i < n_ids; i++)
    port_model_kill (f, port_model_lookup (f, ids[i]));

  return TRUE;
}

/* A Post signal (MP_STREAM_POST_TYPE): its columns must agree with each other before any of
 * its posts counts; then each post, in order. FALSE if it breaks the protocol. */
static gboolean
model_burst (Fuzz     *f,
             GVariant *body)
{
  g_autoptr(GVariant) ports_v = g_variant_get_child_value (body, 0);
  g_autoptr(GVariant) types_v = g_variant_get_child_value (body, 1);
  g_autoptr(GVariant) table_v = g_variant_get_child_value (body, 2);
  g_autoptr(GVariant) ends_v = g_variant_get_child_value (body, 3);
  g_autoptr(GVariant) payloads_v = g_variant_get_child_value (body, 4);
  g_autoptr(GVariant) counts_v = g_variant_get_child_value (body, 5);
  g_autoptr(GVariant) transfers_v = g_variant_get_child_value (body, 6);
  g_autofree const char **table = NULL;
  const guint64 *ports, *transfers;
  const guint32 *types, *ends, *counts;
  const guint8 *payloads;
  gsize n, n_types, n_ends, n_counts, n_transfers, n_table, size;
  guint64 total = 0;
  gsize start = 0, next_transfer = 0;

  ports = g_variant_get_fixed_array (ports_v, &n, sizeof (guint64));
  types = g_variant_get_fixed_array (types_v, &n_types, sizeof (guint32));
  ends = g_variant_get_fixed_array (ends_v, &n_ends, sizeof (guint32));
  counts = g_variant_get_fixed_array (counts_v, &n_counts, sizeof (guint32));
  transfers = g_variant_get_fixed_array (transfers_v, &n_transfers, sizeof (guint64));
  payloads = g_variant_get_fixed_array (payloads_v, &size, 1);
  table = g_variant_get_strv (table_v, &n_table);

  /* A Post without posts breaks the stream (docs/wire.md). */
  if (n == 0 || n_types != n || n_ends != n || n_counts != n)
    return FALSE;
  for (gsize i = 0; i < n; i++)
    {
      if (types[i] >= n_table || ends[i] < (i > 0 ? ends[i - 1] : 0) || ends[i] > size)
        return FALSE;
      total += counts[i];
    }
  if ((n > 0 ? ends[n - 1] : 0) != size || total != n_transfers)
    return FALSE;

  for (gsize i = 0; i < n; i++)
    {
      /* GVariant gives NULL for an empty array: no offset from that. */
      if (!model_post (f, ports[i], table[types[i]], size > 0 ? payloads + start : NULL,
                       ends[i] - start, counts[i] > 0 ? transfers + next_transfer : NULL,
                       counts[i]))
        return FALSE;
      start = ends[i];
      next_transfer += counts[i];
    }

  return TRUE;
}

static gboolean
model_close (Fuzz    *f,
             guint64  id)
{
  PortModel *pm;

  if (!id_known (f, id))
    return FALSE;
  pm = port_model_lookup (f, id);
  if (deliverable (pm))
    expect (f, pm, EXPECT_CLOSE, NULL, NULL);
  if (pm != NULL)
    pm->relay_closed = TRUE;

  return TRUE;
}

static gboolean
model_credit (Fuzz    *f,
              guint64  id,
              guint64  credit)
{
  return id_known (f, id) && credit != 0 && credit <= G_MAXUINT32;
}

/* Any mark is fine, and a Room for a closed port is ignored. A count taken beyond what mpport
 * sent on the port is refused in the drain, which a detached stream never runs (see the top
 * of the file): only the id is checked here. */
static gboolean
model_room (Fuzz    *f,
            guint64  id)
{
  return id_known (f, id);
}

/* A Post, Close, Credit or Room @body (of any type) as a signal or a frame carries it. */
static void
model_data (Fuzz       *f,
            const char *member,
            GVariant   *body)
{
  if (g_strcmp0 (member, MP_STREAM_POST) == 0 &&
      g_variant_is_of_type (body, G_VARIANT_TYPE (MP_STREAM_POST_TYPE)))
    {
      if (!model_burst (f, body))
        f->broken = TRUE;
    }
  else if (g_strcmp0 (member, MP_STREAM_CLOSE) == 0 &&
           g_variant_is_of_type (body, G_VARIANT_TYPE (MP_STREAM_CLOSE_TYPE)))
    {
      g_autoptr(GVariant) ids = g_variant_get_child_value (body, 0);

      for (gsize i = 0; i < g_variant_n_children (ids); i++)
        {
          guint64 id;

          g_variant_get_child (ids, i, "t", &id);
          if (!model_close (f, id))
            {
              f->broken = TRUE;
              return;
            }
        }
    }
  else if (g_strcmp0 (member, MP_STREAM_CREDIT) == 0 &&
           g_variant_is_of_type (body, G_VARIANT_TYPE (MP_STREAM_CREDIT_TYPE)))
    {
      g_autoptr(GVariant) credits = g_variant_get_child_value (body, 0);

      for (gsize i = 0; i < g_variant_n_children (credits); i++)
        {
          guint64 id, credit;

          g_variant_get_child (credits, i, "(tt)", &id, &credit);
          if (!model_credit (f, id, credit))
            {
              f->broken = TRUE;
              return;
            }
        }
    }
  else if (g_strcmp0 (member, MP_STREAM_ROOM) == 0 &&
           g_variant_is_of_type (body, G_VARIANT_TYPE (MP_STREAM_ROOM_TYPE)))
    {
      g_autoptr(GVariant) rooms = g_variant_get_child_value (body, 0);

      for (gsize i = 0; i < g_variant_n_children (rooms); i++)
        {
          guint64 id;
          guint32 mark, taken;

          g_variant_get_child (rooms, i, "(tuu)", &id, &mark, &taken);
          if (!model_room (f, id))
            {
              f->broken = TRUE;
              return;
            }
        }
    }
  else
    f->broken = TRUE;   /* a body of another type */
}

/* Whether the options of the peer's Hello ask for the direct path: a client's "direct" is
 * true, a server's a handle (the index of the socket among the message's file descriptors:
 * a detached stream needs none). The first "direct" counts, as for g_variant_lookup_value(). */
static gboolean
model_asks_direct (Fuzz     *f,
                   GVariant *options)
{
  g_autoptr(GVariant) direct = g_variant_lookup_value (options, MP_STREAM_OPTION_DIRECT, NULL);

  if (direct == NULL)
    return FALSE;
  if (f->server)
    return g_variant_is_of_type (direct, G_VARIANT_TYPE_BOOLEAN) && g_variant_get_boolean (direct);

  return g_variant_is_of_type (direct, G_VARIANT_TYPE_HANDLE);
}

static void
model_receive (Fuzz         *f,
               GDBusMessage *message)
{
  const char *member = g_dbus_message_get_member (message);
  GVariant *body = g_dbus_message_get_body (message);
  g_autoptr(GVariant) empty = NULL;

  if (g_strcmp0 (g_dbus_message_get_interface (message), MP_STREAM_INTERFACE) != 0)
    return;   /* not the protocol's: GDBus's business */
  if (g_dbus_message_get_message_type (message) != G_DBUS_MESSAGE_TYPE_SIGNAL)
    {
      f->broken = TRUE;
      return;
    }
  if (f->broken)
    return;

  if (body == NULL)
    body = empty = g_variant_ref_sink (g_variant_new ("()"));

  if (!f->hello_seen)
    {
      guint32 version;

      if (g_strcmp0 (member, MP_STREAM_HELLO) != 0 ||
          !g_variant_is_of_type (body, G_VARIANT_TYPE (MP_STREAM_HELLO_TYPE)))
        {
          f->broken = TRUE;
          return;
        }
      g_variant_get_child (body, 0, "u", &version);
      if (version != 1)
        f->broken = TRUE;
      else
        {
          g_autoptr(GVariant) options = g_variant_get_child_value (body, 1);

          f->hello_seen = TRUE;
          f->direct = model_asks_direct (f, options);
        }
      return;
    }

  if (g_strcmp0 (member, MP_STREAM_POST) == 0 || g_strcmp0 (member, MP_STREAM_CLOSE) == 0 ||
      g_strcmp0 (member, MP_STREAM_CREDIT) == 0 || g_strcmp0 (member, MP_STREAM_ROOM) == 0)
    {
      /* On the direct path, the data signals are gone: any of them, whatever its body. */
      if (f->direct)
        f->broken = TRUE;
      else
        model_data (f, member, body);
    }
  else
    f->broken = TRUE;   /* a second Hello, an unknown member */
}

/* A frame of @kind with @body. */
static void
model_frame (Fuzz   *f,
             guint8  kind,
             GBytes *body)
{
  static const char *const members[] = { NULL, MP_STREAM_POST, MP_STREAM_CLOSE,
                                         MP_STREAM_CREDIT, MP_STREAM_ROOM };
  static const char *const types[] = { NULL, MP_STREAM_POST_TYPE, MP_STREAM_CLOSE_TYPE,
                                       MP_STREAM_CREDIT_TYPE, MP_STREAM_ROOM_TYPE };
  g_autoptr(GVariant) value = NULL;

  if (f->broken)
    return;
  if (!f->hello_seen || !f->direct || kind < FRAME_POST || kind > FRAME_ROOM)
    {
      f->broken = TRUE;
      return;
    }

  /* Untrusted: read as GVariant reads any bytes. A Post is not checked for normal form as a
   * whole (docs/wire.md): what it reads as is checked as columns and payloads. */
  value = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (types[kind]), body,
                                                        FALSE));
  if (kind != FRAME_POST && !g_variant_is_normal_form (value))
    {
      f->broken = TRUE;
      return;
    }
#if G_BYTE_ORDER == G_BIG_ENDIAN
  {
    GVariant *swapped = g_variant_byteswap (value);

    g_variant_unref (value);
    value = swapped;
  }
#endif

  model_data (f, members[kind], value);
}

/* ------------------------------------------------------------------------------------------
 * Checking what arrived
 */

static const char *
kind_name (Expect *e)
{
  if (e == NULL)
    return "nothing";
  switch (e->kind)
    {
    case EXPECT_DATA:
      return "a message";
    case EXPECT_ERROR:
      return "an error";
    case EXPECT_CLOSE:
    default:
      return "the close";
    }
}

/* Takes one thing from @pm's port and checks it against the model; FALSE once the port
 * has nothing more (or reached its close). */
static gboolean
drain_one (Fuzz      *f,
           PortModel *pm)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(MpMessage) message = mp_message_port_receive_timeout (pm->port, 0, NULL, &error);
  Expect *e = g_queue_peek_head (&pm->expected);

  if (message != NULL)
    {
      GVariant *data = mp_message_get_data (message);
      GPtrArray *ports = mp_message_get_ports (message);

      CHECK (e != NULL && e->kind == EXPECT_DATA,
             "port %" G_GUINT64_FORMAT " got a message, expected %s", pm->id, kind_name (e));
      CHECK ((data == NULL) == (e->data == NULL),
             "port %" G_GUINT64_FORMAT " got a %s post, expected a %s one", pm->id,
             data == NULL ? "NULL" : "non-NULL", e->data == NULL ? "NULL" : "non-NULL");
      if (data != NULL)
        CHECK (!g_variant_is_floating (data) && g_variant_equal (data, e->data),
               "port %" G_GUINT64_FORMAT " got a value of type %s, not the one posted (%s)",
               pm->id, g_variant_get_type_string (data), g_variant_get_type_string (e->data));
      CHECK (ports->len == e->ids->len,
             "port %" G_GUINT64_FORMAT " got a message with %u ports, expected %u", pm->id,
             ports->len, e->ids->len);
      for (guint i = 0; i < ports->len; i++)
        {
          PortModel *carried = port_model_lookup (f, g_array_index (e->ids, guint64, i));

          CHECK (MP_IS_MESSAGE_PORT (g_ptr_array_index (ports, i)),
                 "a carried port is not a MpMessagePort");
          g_assert (carried != NULL && carried->state == PORT_PENDING);
          carried->port = g_object_ref (g_ptr_array_index (ports, i));
          carried->state = PORT_HELD;
          f->n_pending--;
          /* Posts to it may be waiting. */
          if (!carried->dirty)
            {
              carried->dirty = TRUE;
              g_ptr_array_add (f->dirty, carried);
            }
        }
    }
  else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA))
    CHECK (e != NULL && e->kind == EXPECT_ERROR,
           "port %" G_GUINT64_FORMAT " got an error (%s), expected %s", pm->id,
           error->message, kind_name (e));
  else if (g_error_matches (error, MP_ERROR, MP_ERROR_CLOSED))
    {
      CHECK (e != NULL && e->kind == EXPECT_CLOSE,
             "port %" G_GUINT64_FORMAT " reached its close, expected %s", pm->id, kind_name (e));
      CHECK (g_queue_get_length (&pm->expected) == 1,
             "port %" G_GUINT64_FORMAT " reached its close before what was posted to it",
             pm->id);
      CHECK (mp_message_port_is_peer_closed (pm->port),
             "port %" G_GUINT64_FORMAT " reached its close, but its peer is open", pm->id);
      expect_free (g_queue_pop_head (&pm->expected));
      pm->state = PORT_ENDED;
      return FALSE;
    }
  else if (error != NULL)
    fail ("port %" G_GUINT64_FORMAT ": receive failed: %s", pm->id, error->message);
  else
    {
      CHECK (e == NULL, "port %" G_GUINT64_FORMAT " got nothing, expected %s", pm->id,
             kind_name (e));
      return FALSE;
    }

  expect_free (g_queue_pop_head (&pm->expected));
  return TRUE;
}

/* Takes what is due at every port with something new, and what that brings. */
static void
drain (Fuzz *f)
{
  while (f->dirty->len > 0)
    {
      PortModel *pm = g_ptr_array_steal_index (f->dirty, f->dirty->len - 1);

      pm->dirty = FALSE;
      /* A port in transit is drained when its carrier arrives (it is made dirty then). */
      if (pm->state != PORT_HELD)
        continue;
      while (drain_one (f, pm))
        ;
    }

  CHECK (f->n_pending == 0, "%u ports are still in transit: their carriers never arrived",
         f->n_pending);
}

/* ------------------------------------------------------------------------------------------
 * Making messages
 */

/* A value for a post, from the input. */
static GVariant *
make_value (Reader *r)
{
  switch (next_byte (r) % 8)
    {
    case 0:
      {
        g_autofree char *s = next_string (r, MAX_SMALL_STRING);

        return g_variant_new_string (s);
      }
    case 1:
      return g_variant_new_uint32 (next_u32 (r));
    case 2:
      return next_byte_array (r, 64);
    case 3:
      {
        g_autofree char *s = next_string (r, MAX_SMALL_STRING);

        return g_variant_new ("(su)", s, next_u32 (r));
      }
    case 4:
      return g_variant_new_variant (make_value (r));
    case 5:
      {
        g_autofree char *s = NULL;

        if (next_byte (r) & 1)
          return g_variant_new_maybe (G_VARIANT_TYPE_STRING, NULL);
        s = next_string (r, MAX_SMALL_STRING);
        return g_variant_new_maybe (NULL, g_variant_new_string (s));
      }
    case 6:
      {
        GVariantBuilder builder;
        guint n = next_byte (r) % 3;

        g_variant_builder_init (&builder, G_VARIANT_TYPE_VARDICT);
        for (guint i = 0; i < n; i++)
          {
            g_autofree char *key = next_string (r, 8);

            g_variant_builder_add (&builder, "{sv}", key, make_value (r));
          }
        return g_variant_builder_end (&builder);
      }
    case 7:
    default:
      return g_variant_new ("(ynqxd)", next_byte (r), (gint16) next_u16 (r), next_u16 (r),
                            (gint64) next_u64 (r), (double) (gint32) next_u32 (r) / 3.0);
    }
}

/* A payload as a "(say)" pair of type string and bytes: NULL, a valid value, or something
 * a receiver must refuse. */
static GVariant *
make_item (Reader *r)
{
  static const char *const refused[] = { "h", "(sh)", "ah", "*", "?", "r", "a{sv", "m", "()" };

  switch (next_byte (r) % 8)
    {
    case 0:
      return g_variant_new ("(s@ay)", "", g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE,
                                                                      NULL, 0, 1));
    case 1:
    case 2:
    case 3:
      {
        g_autoptr(GVariant) value = g_variant_ref_sink (make_value (r));
        g_autoptr(GVariant) normal = g_variant_get_normal_form (value);

        if (G_BYTE_ORDER == G_BIG_ENDIAN)
          {
            GVariant *swapped = g_variant_byteswap (normal);

            g_variant_unref (normal);
            normal = swapped;
          }
        return g_variant_new ("(s@ay)", g_variant_get_type_string (normal),
                              g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE,
                                                         g_variant_get_data (normal),
                                                         g_variant_get_size (normal), 1));
      }
    case 4:
      {
        g_autofree char *type_string = next_string (r, MAX_RAW_TYPE);

        return g_variant_new ("(s@ay)", type_string, next_byte_array (r, 64));
      }
    case 5:
      {
        /* Zeros, a valid "ay" value of up to 1 MiB, or just over the payload limit, or a
         * quarter of a window of cost (invalid, but it counts). Data without a type, when
         * small. */
        guint8 choice = next_byte (r);
        gsize size;
        g_autofree guint8 *zeros = NULL;

        if (choice < 128)
          return g_variant_new ("(s@ay)", "", next_byte_array (r, 8));
        if (choice == 255)
          size = MP_WIRE_MAX_PAYLOAD + 1;
        else if (choice == 254 && next_byte (r) == 0xa5)
          size = MP_STREAM_WINDOW / 4;   /* slow: behind a key, so that mutations rarely are */
        else
          size = (gsize) next_u16 (r) << 4;
        zeros = g_malloc0 (MAX (size, 1));
        return g_variant_new ("(s@ay)", "ay",
                              g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, zeros, size, 1));
      }
    case 6:
      {
        /* Type strings around MP_WIRE_MAX_TYPE_STRING bytes. */
        gsize length = MP_WIRE_MAX_TYPE_STRING - 4 + next_byte (r) % 8;
        g_autofree char *type_string = g_malloc (length + 1);

        memset (type_string, next_byte (r) & 1 ? 'a' : 'm', length - 1);
        type_string[length - 1] = 'y';
        type_string[length] = '\0';
        return g_variant_new ("(s@ay)", type_string, next_byte_array (r, 8));
      }
    case 7:
    default:
      return g_variant_new ("(s@ay)", refused[next_byte (r) % G_N_ELEMENTS (refused)],
                            next_byte_array (r, 8));
    }
}

/* The next id the peer may announce, after @max (its highest so far, 0 for none). */
static guint64
fresh_id (Fuzz    *f,
          guint64  max)
{
  return max < peer_first_id (f) ? peer_first_id (f) : max + 2;
}

/* A port id to post to or close: mostly valid ones, and every kind of wrong one. */
static guint64
pick_id (Fuzz   *f,
         Reader *r,
         guint64 max)
{
  guint8 choice = next_byte (r);

  switch (choice % 8)
    {
    case 0:
    case 1:
    case 2:
      return 0;
    case 3:
    case 4:
      if (f->announced->len == 0)
        return 0;
      return g_array_index (f->announced, guint64, next_byte (r) % f->announced->len);
    case 5:
      /* Announced, skipped or never announced. */
      return peer_first_id (f) + 2 * (guint64) (next_byte (r) % 8);
    case 6:
      /* One of this side's, or the peer's next. */
      return choice & 8 ? (f->server ? 2 : 1) + 2 * (guint64) (next_byte (r) % 4)
                        : fresh_id (f, max);
    case 7:
    default:
      return next_u64 (r);
    }
}

/* A transfer list: fresh ids, mostly; at times skipped, repeated or wrong ones, or a list
 * at or over the limit. @max is the highest id announced so far, updated. */
static GVariant *
make_transfer (Fuzz    *f,
               Reader  *r,
               guint64 *max)
{
  g_autoptr(GArray) ids = g_array_new (FALSE, FALSE, sizeof (guint64));
  guint8 count = next_byte (r);
  guint n;
  gboolean plain;

  if (count < 200)
    n = count % 4;
  else if (count < 250)
    n = count % 16;
  else if (count < 254)
    n = 64;
  else
    n = count == 254 ? MP_STREAM_MAX_TRANSFER : MP_STREAM_MAX_TRANSFER + 1;
  /* Long lists are all fresh ids, so that a short input makes them. */
  plain = n > 16;

  for (guint i = 0; i < n; i++)
    {
      guint64 id = fresh_id (f, *max);

      if (!plain)
        switch (next_byte (r) % 8)
          {
          case 6:
            id += 2 * (guint64) (1 + next_byte (r) % 4);
            break;
          case 7:
            switch (next_byte (r) % 4)
              {
              case 0:
                id = 0;
                break;
              case 1:
                id = f->server ? 2 : 1;
                break;
              case 2:
                id = *max;
                break;
              default:
                id = next_u64 (r);
                break;
              }
            break;
          default:
            break;
          }
      g_array_append_val (ids, id);
      *max = MAX (*max, id);
    }

  return g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, ids->data, ids->len,
                                    sizeof (guint64));
}

static GDBusMessage *
make_signal (const char *member,
             GVariant   *body)
{
  GDBusMessage *message = g_dbus_message_new_signal (MP_STREAM_PATH, MP_STREAM_INTERFACE,
                                                     member);

  g_dbus_message_set_body (message, body);
  return message;
}

/* The value of a Hello's "direct" option: mostly the peer's request of the direct path (a
 * client's true, a server's handle), at times the other side's form, false, or a value of
 * another type. */
static GVariant *
make_direct_option (Fuzz   *f,
                    Reader *r)
{
  guint8 choice = next_byte (r);

  switch (choice % 4)
    {
    case 0:
    case 1:
      return f->server ? g_variant_new_boolean (TRUE)
                       : g_variant_new_handle ((gint32) next_byte (r));
    case 2:
      return f->server ? g_variant_new_handle (0) : g_variant_new_boolean (TRUE);
    default:
      return choice & 4 ? g_variant_new_boolean (FALSE) : make_value (r);
    }
}

static GDBusMessage *
make_hello (Fuzz   *f,
            Reader *r)
{
  static const char *const keys[] = { "window", "x-unknown", "", "version",
                                      MP_STREAM_OPTION_DIRECT };
  guint8 choice = next_byte (r);
  guint32 version = choice < 224 ? 1 : choice == 224 ? 0 : choice == 225 ? 2 : next_u32 (r);
  GVariantBuilder options;
  guint n = next_byte (r) % 4;

  g_variant_builder_init (&options, G_VARIANT_TYPE_VARDICT);
  for (guint i = 0; i < n; i++)
    {
      const char *key = keys[next_byte (r) % G_N_ELEMENTS (keys)];

      g_variant_builder_add (&options, "{sv}", key,
                             g_str_equal (key, MP_STREAM_OPTION_DIRECT) ? make_direct_option (f, r)
                                                                        : make_value (r));
    }

  return make_signal (MP_STREAM_HELLO, g_variant_new ("(u@a{sv})", version,
                                                      g_variant_builder_end (&options)));
}

static void
append_u32 (GArray  *array,
            guint32  value)
{
  g_array_append_val (array, value);
}

/* A Post signal (MP_STREAM_POST_TYPE) of posts made from the input. @shape (0-7) picks how
 * its columns are put together: 0-3 as mpport does (each type once in the table); 4 with
 * repeated table entries and an unused invalid one; 5-7 with columns that disagree
 * (lengths, a type index or a payload end out of bounds, transfer counts that do not add
 * up), which break the protocol. */
static GDBusMessage *
make_post (Fuzz   *f,
           Reader *r,
           guint   shape)
{
  g_autoptr(GArray) ports = g_array_new (FALSE, FALSE, sizeof (guint64));
  g_autoptr(GArray) types = g_array_new (FALSE, FALSE, sizeof (guint32));
  g_autoptr(GPtrArray) table = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GArray) ends = g_array_new (FALSE, FALSE, sizeof (guint32));
  g_autoptr(GByteArray) payloads = g_byte_array_new ();
  g_autoptr(GArray) counts = g_array_new (FALSE, FALSE, sizeof (guint32));
  g_autoptr(GArray) transfers = g_array_new (FALSE, FALSE, sizeof (guint64));
  guint8 count = next_byte (r);
  guint n = count < 250 ? count % 5 : 64;
  guint64 max = f->peer_max;

  for (guint i = 0; i < n && r->pos < r->size; i++)
    {
      guint64 id = pick_id (f, r, max);
      g_autoptr(GVariant) item = g_variant_ref_sink (make_item (r));
      g_autoptr(GVariant) transfer = g_variant_ref_sink (make_transfer (f, r, &max));
      g_autoptr(GVariant) type_variant = g_variant_get_child_value (item, 0);
      g_autoptr(GVariant) bytes_variant = g_variant_get_child_value (item, 1);
      const char *type_string = g_variant_get_string (type_variant, NULL);
      guint32 type = table->len;
      gsize n_ids;
      const guint64 *ids = g_variant_get_fixed_array (transfer, &n_ids, sizeof (guint64));

      if (shape != 4)
        for (guint t = 0; t < table->len && type == table->len; t++)
          if (strcmp (g_ptr_array_index (table, t), type_string) == 0)
            type = t;
      if (type == table->len)
        g_ptr_array_add (table, g_strdup (type_string));
      if (g_variant_get_size (bytes_variant) > 0)
        g_byte_array_append (payloads, g_variant_get_data (bytes_variant),
                             g_variant_get_size (bytes_variant));

      g_array_append_val (ports, id);
      append_u32 (types, type);
      append_u32 (ends, payloads->len);
      append_u32 (counts, n_ids);
      g_array_append_vals (transfers, ids, n_ids);
    }

  switch (shape)
    {
    case 4:
      g_ptr_array_add (table, g_strdup ("h"));
      break;
    case 5:
      {
        GArray *columns[] = { types, ends, counts };
        GArray *column = columns[next_byte (r) % G_N_ELEMENTS (columns)];

        if (column->len > 0)
          g_array_set_size (column, column->len - 1);
        else
          append_u32 (column, 0);
      }
      break;
    case 6:
      if (ports->len == 0)
        {
          guint8 zero = 0;

          g_byte_array_append (payloads, &zero, 1);   /* bytes no post ends at */
          break;
        }
      switch (next_byte (r) % 3)
        {
        case 0:
          g_array_index (types, guint32, next_byte (r) % types->len) = table->len + next_byte (r);
          break;
        case 1:
          g_array_index (ends, guint32, next_byte (r) % ends->len) = payloads->len + 1;
          break;
        default:
          g_array_index (ends, guint32, 0) = g_array_index (ends, guint32, ends->len - 1) + 1;
          break;
        }
      break;
    case 7:
      if (ports->len > 0 && next_byte (r) & 1)
        g_array_index (counts, guint32, next_byte (r) % counts->len)++;
      else if (transfers->len > 0 && next_byte (r) & 1)
        g_array_set_size (transfers, transfers->len - 1);
      else
        {
          guint64 id = fresh_id (f, max);

          g_array_append_val (transfers, id);
        }
      break;
    default:
      break;
    }

  return make_signal (MP_STREAM_POST,
                      g_variant_new ("(@at@au@as@au@ay@au@at)",
                                     g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64,
                                                                ports->data, ports->len, 8),
                                     g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32,
                                                                types->data, types->len, 4),
                                     g_variant_new_strv ((const char *const *) table->pdata,
                                                         table->len),
                                     g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32,
                                                                ends->data, ends->len, 4),
                                     g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE,
                                                                payloads->data, payloads->len, 1),
                                     g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32,
                                                                counts->data, counts->len, 4),
                                     g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64,
                                                                transfers->data, transfers->len,
                                                                8)));
}

static GDBusMessage *
make_close (Fuzz   *f,
            Reader *r)
{
  g_autoptr(GArray) ids = g_array_new (FALSE, FALSE, sizeof (guint64));
  guint n = next_byte (r) % 4;

  for (guint i = 0; i < n; i++)
    {
      guint64 id = pick_id (f, r, f->peer_max);

      g_array_append_val (ids, id);
    }

  return make_signal (MP_STREAM_CLOSE,
                      g_variant_new ("(@at)",
                                     g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, ids->data,
                                                                ids->len, sizeof (guint64))));
}

static GDBusMessage *
make_credit (Fuzz   *f,
             Reader *r)
{
  GVariantBuilder credits;
  guint n = next_byte (r) % 4;

  g_variant_builder_init (&credits, G_VARIANT_TYPE ("a(tt)"));
  for (guint i = 0; i < n; i++)
    {
      guint64 id = pick_id (f, r, f->peer_max);
      guint8 choice = next_byte (r);
      guint64 credit = choice == 0 ? 0 : choice == 1 ? (guint64) G_MAXUINT32 + 1 :
                       choice == 2 ? next_u64 (r) : next_u32 (r);

      g_variant_builder_add (&credits, "(tt)", id, credit);
    }

  return make_signal (MP_STREAM_CREDIT, g_variant_new ("(a(tt))", &credits));
}

/* A Room of fuzz-chosen ids, any marks, and counts taken: mostly 0, which never exceeds what
 * was sent; at times more than a detached stream ever sent (it sends nothing), which only the
 * drain, never run here, would refuse. */
static GDBusMessage *
make_room (Fuzz   *f,
           Reader *r)
{
  GVariantBuilder rooms;
  guint n = next_byte (r) % 4;

  g_variant_builder_init (&rooms, G_VARIANT_TYPE ("a(tuu)"));
  for (guint i = 0; i < n; i++)
    {
      guint64 id = pick_id (f, r, f->peer_max);
      guint8 choice = next_byte (r);
      guint32 mark = choice % 4 == 0 ? 0 : choice % 4 == 1 ? 1 + (choice >> 2) :
                     choice % 4 == 2 ? G_MAXUINT32 : next_u32 (r);
      guint32 taken;

      choice = next_byte (r);
      taken = choice < 192 ? 0 : choice < 224 ? 1 : choice < 240 ? G_MAXUINT32 : next_u32 (r);
      g_variant_builder_add (&rooms, "(tuu)", id, mark, taken);
    }

  return make_signal (MP_STREAM_ROOM, g_variant_new ("(a(tuu))", &rooms));
}

/* A Room whose body has another type: Credit's, or one close to its own. */
static GDBusMessage *
make_misshapen_room (Reader *r)
{
  switch (next_byte (r) % 4)
    {
    case 0:
      return make_signal (MP_STREAM_ROOM, g_variant_new_parsed ("(@a(tt) [(0, 1)],)"));
    case 1:
      return make_signal (MP_STREAM_ROOM, g_variant_new_parsed ("(@a(tut) [(0, 1, 0)],)"));
    case 2:
      return make_signal (MP_STREAM_ROOM, g_variant_new_parsed ("(@a(tuu) [], @u 0)"));
    case 3:
    default:
      return make_signal (MP_STREAM_ROOM, g_variant_new_parsed ("(@at [],)"));
    }
}

static GDBusMessage *
make_misshapen (Reader *r)
{
  GDBusMessage *message;
  guint8 choice;

  switch (next_byte (r) % 8)
    {
    case 0:
      return make_signal (MP_STREAM_POST, g_variant_new ("(s)", "Post"));
    case 1:
      return make_signal (MP_STREAM_CLOSE, g_variant_new ("(@au)",
                                                          g_variant_new_array (G_VARIANT_TYPE_UINT32,
                                                                               NULL, 0)));
    case 2:
      return g_dbus_message_new_signal (MP_STREAM_PATH, MP_STREAM_INTERFACE,
                                        next_byte (r) & 1 ? MP_STREAM_POST : MP_STREAM_HELLO);
    case 3:
      choice = next_byte (r);
      if (choice & 1)
        return make_signal (MP_STREAM_CREDIT, g_variant_new ("(@at)",
                                                             g_variant_new_array (G_VARIANT_TYPE_UINT64,
                                                                                  NULL, 0)));
      if (choice & 2)
        return make_misshapen_room (r);
      return make_signal ("Unknown", g_variant_new ("(u)", 1));
    case 4:
      message = g_dbus_message_new_method_call (NULL, MP_STREAM_PATH, MP_STREAM_INTERFACE,
                                                MP_STREAM_CLOSE);
      g_dbus_message_set_body (message, g_variant_new ("(@at)",
                                                       g_variant_new_array (G_VARIANT_TYPE_UINT64,
                                                                            NULL, 0)));
      return message;
    case 5:
      return make_signal (MP_STREAM_HELLO, g_variant_new ("(u)", 1));
    case 6:
      /* The bus channel's signal, with the same item type: not this protocol's. */
      message = g_dbus_message_new_signal (MP_WIRE_PATH_PREFIX "x", MP_WIRE_INTERFACE,
                                           MP_WIRE_MEMBER);
      g_dbus_message_set_body (message, g_variant_new ("(s@a(say))", "x",
                                                       g_variant_new_array (G_VARIANT_TYPE ("(say)"),
                                                                            NULL, 0)));
      return message;
    case 7:
    default:
      return g_dbus_message_new_method_call (NULL, "/", "org.freedesktop.DBus.Peer", "Ping");
    }
}

/* The raw bytes of a message as a peer writes them: cut to the length its header declares,
 * as GDBus's reader does, then parsed. NULL if GDBus would not deliver it. */
static GDBusMessage *
make_raw (Reader *r)
{
  gsize length = take_length (r, next_u16 (r));
  g_autofree guchar *blob = g_memdup2 (r->data + r->pos, length);
  gssize needed;

  r->pos += length;
  if (length < 16)
    return NULL;
  needed = g_dbus_message_bytes_needed (blob, 16, NULL);
  if (needed < 16 || (gsize) needed > length)
    return NULL;

  return g_dbus_message_new_from_blob (blob, needed, CAPABILITIES, NULL);
}

/* @message as it would come out of a connection's reader (a new message), or NULL. */
static GDBusMessage *
round_trip (Fuzz         *f,
            GDBusMessage *message,
            gboolean      big_endian)
{
  g_autofree guchar *blob = NULL;
  gsize size;

  g_dbus_message_set_serial (message, ++f->serial);
  if (big_endian)
    g_dbus_message_set_byte_order (message, G_DBUS_MESSAGE_BYTE_ORDER_BIG_ENDIAN);
  blob = g_dbus_message_to_blob (message, &size, CAPABILITIES, NULL);
  if (blob == NULL)
    return NULL;

  return g_dbus_message_new_from_blob (blob, size, CAPABILITIES, NULL);
}

/* One of the ports the harness holds, picked from the input, or NULL. */
static PortModel *
pick_held_port (Fuzz   *f,
                Reader *r)
{
  guint8 choice = next_byte (r);
  guint64 id = choice % 4 == 0 || f->announced->len == 0 ?
    0 : g_array_index (f->announced, guint64, choice % f->announced->len);
  PortModel *pm = port_model_lookup (f, id);

  if (pm == NULL || pm->state != PORT_HELD)
    return NULL;
  g_assert (g_queue_is_empty (&pm->expected));

  return pm;
}

/* The application sets a high-water mark on one of the ports it holds, or removes it. Its
 * stream would tell the peer with a Room (a detached stream sends nothing); what arrives at
 * the port does not change: the stream's posts to it never wait for room. */
static void
mark_a_port (Fuzz   *f,
             Reader *r)
{
  PortModel *pm = pick_held_port (f, r);
  guint8 choice = next_byte (r);
  guint mark = choice % 4 == 0 ? 0 : choice % 4 == 3 ? G_MAXUINT32 : 1 + (choice >> 2);

  if (pm == NULL)
    return;
  mp_message_port_set_high_water_mark (pm->port, mark);
  CHECK (mp_message_port_get_high_water_mark (pm->port) == mark,
         "port %" G_GUINT64_FORMAT " has the high-water mark %u, not %u", pm->id,
         mp_message_port_get_high_water_mark (pm->port), mark);
  /* Nothing is due at it, and the mark brings nothing: anything that arrives fails. */
  drain_one (f, pm);
}

/* The application closes one of the ports it holds: its relay drops what comes later. */
static void
close_a_port (Fuzz   *f,
              Reader *r)
{
  PortModel *pm = pick_held_port (f, r);

  if (pm == NULL)
    return;
  mp_message_port_close (pm->port);
  CHECK (mp_message_port_is_closed (pm->port), "a closed port is not closed");
  pm->state = PORT_ENDED;
}

/* A Post (of a fuzz-chosen shape), Close, Credit or Room, as its step makes it. */
static GDBusMessage *
make_data (Fuzz   *f,
           Reader *r)
{
  guint8 choice = next_byte (r);

  switch (choice % 4)
    {
    case 0:
      return make_post (f, r, choice >> 5);
    case 1:
      return make_close (f, r);
    case 2:
      return make_credit (f, r);
    case 3:
    default:
      return make_room (f, r);
    }
}

static guint8
frame_kind (GDBusMessage *message)
{
  const char *member = g_dbus_message_get_member (message);

  if (g_strcmp0 (member, MP_STREAM_POST) == 0)
    return FRAME_POST;
  if (g_strcmp0 (member, MP_STREAM_CLOSE) == 0)
    return FRAME_CLOSE;
  if (g_strcmp0 (member, MP_STREAM_CREDIT) == 0)
    return FRAME_CREDIT;
  g_assert (g_strcmp0 (member, MP_STREAM_ROOM) == 0);
  return FRAME_ROOM;
}

/* The body of a frame that carries @body: its serialization in normal form, little-endian. */
static GBytes *
frame_body (GVariant *body)
{
  g_autoptr(GVariant) normal = g_variant_get_normal_form (body);

#if G_BYTE_ORDER == G_BIG_ENDIAN
  {
    GVariant *swapped = g_variant_byteswap (normal);

    g_variant_unref (normal);
    normal = swapped;
  }
#endif
  return g_variant_get_data_as_bytes (normal);
}

/* Changes @bytes a little: a byte flipped or set, the end cut off, a byte added. */
static void
mutate (GByteArray *bytes,
        Reader     *r)
{
  guint8 op = next_byte (r);
  guint16 at = next_u16 (r);
  guint8 value = next_byte (r);

  switch (op % 4)
    {
    case 0:
      if (bytes->len > 0)
        bytes->data[at % bytes->len] ^= value | 1;
      break;
    case 1:
      if (bytes->len > 0)
        bytes->data[at % bytes->len] = value;
      break;
    case 2:
      g_byte_array_set_size (bytes, bytes->len > 0 ? at % bytes->len : 0);
      break;
    default:
      g_byte_array_append (bytes, &value, 1);
      break;
    }
}

static void
check_broken (Fuzz *f)
{
  CHECK (mp_stream_is_broken (f->stream) == f->broken,
         "the stream is %sbroken, the model says it is %sbroken",
         mp_stream_is_broken (f->stream) ? "" : "not ", f->broken ? "" : "not ");
}

/* A frame of @kind (not 0: the reader ends the stream on that) with @body, as the reader of
 * the direct path hands it over. */
static void
receive_frame (Fuzz   *f,
               guint8  kind,
               GBytes *body)
{
  model_frame (f, kind, body);
  mp_stream_receive_frame (f->stream, kind, body);
  check_broken (f);
  drain (f);
}

/* A frame made from the input: mostly of kind Post, Close, Credit or Room, at times of a kind
 * that is none (240-255); its body raw bytes, or the serialization of a Post, Close, Credit
 * or Room (of that kind or another) with up to three bytes changed, cut or added. */
static void
frame_step (Fuzz   *f,
            Reader *r)
{
  guint8 choice = next_byte (r);
  guint8 kind = choice < 240 ? FRAME_POST + choice % 4 : choice;
  guint8 how = next_byte (r);
  g_autoptr(GBytes) body = NULL;

  if (how % 4 == 0)
    {
      gsize length = take_length (r, next_u16 (r) % (MAX_RAW_FRAME + 1));

      body = g_bytes_new (r->data + r->pos, length);
      r->pos += length;
    }
  else
    {
      g_autoptr(GDBusMessage) message = make_data (f, r);
      g_autoptr(GBytes) normal = frame_body (g_dbus_message_get_body (message));
      GByteArray *bytes = g_bytes_unref_to_array (g_steal_pointer (&normal));

      for (guint i = 0; i < (how >> 2) % 4; i++)
        mutate (bytes, r);
      body = g_byte_array_free_to_bytes (bytes);
    }

  receive_frame (f, kind, body);
}

/* ------------------------------------------------------------------------------------------
 * One input
 */

static void
step (Fuzz   *f,
      Reader *r)
{
  guint8 op = next_byte (r);
  g_autoptr(GDBusMessage) message = NULL;
  /* A Post, Close, Credit or Room: a frame on the direct path, a signal otherwise... */
  gboolean data = FALSE;
  /* ... or the other way round. */
  gboolean other_channel = FALSE;

  switch (op % 8)
    {
    case 0:
      message = make_raw (r);
      break;
    case 1:
      message = make_hello (f, r);
      break;
    case 2:
    case 6:
      message = make_post (f, r, op >> 5);
      data = TRUE;
      break;
    case 3:
      message = make_close (f, r);
      data = TRUE;
      break;
    case 4:
      message = make_misshapen (r);
      break;
    case 7:
      message = op & 32 ? make_room (f, r) : make_credit (f, r);
      data = TRUE;
      break;
    case 5:
    default:
      switch ((op >> 3) & 3)
        {
        case 0:
          close_a_port (f, r);
          return;
        case 1:
          mark_a_port (f, r);
          check_broken (f);
          return;
        case 2:
          frame_step (f, r);
          return;
        case 3:
        default:
          message = make_data (f, r);
          data = TRUE;
          other_channel = TRUE;
          break;
        }
      break;
    }

  if (data && f->direct != other_channel)
    {
      g_autoptr(GBytes) body = frame_body (g_dbus_message_get_body (message));

      receive_frame (f, frame_kind (message), body);
      return;
    }

  if (message != NULL && op % 8 != 0 && (op & 8) != 0)
    {
      GDBusMessage *parsed = round_trip (f, message, (op & 16) != 0);

      g_object_unref (message);
      message = parsed;
    }
  if (message == NULL)
    return;

  model_receive (f, message);
  mp_stream_receive (f->stream, message);
  check_broken (f);
  drain (f);
}

/* Frees the stream: every port the harness holds must reach its close, with nothing
 * before it. */
static void
finish (Fuzz *f)
{
  GHashTableIter iter;
  gpointer value;

  mp_stream_free_detached (f->stream);
  f->stream = NULL;

  g_hash_table_iter_init (&iter, f->ports);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      PortModel *pm = value;
      g_autoptr(GError) error = NULL;
      g_autoptr(MpMessage) message = NULL;

      if (pm->state != PORT_HELD)
        continue;
      g_assert (g_queue_is_empty (&pm->expected));
      message = mp_message_port_receive_timeout (pm->port, 0, NULL, &error);
      CHECK (message == NULL, "port %" G_GUINT64_FORMAT " got a message nobody posted",
             pm->id);
      CHECK (g_error_matches (error, MP_ERROR, MP_ERROR_CLOSED),
             "port %" G_GUINT64_FORMAT " did not close with its stream: %s", pm->id,
             error != NULL ? error->message : "no error");
      CHECK (mp_message_port_is_peer_closed (pm->port) && mp_message_port_is_closed (pm->port),
             "port %" G_GUINT64_FORMAT " is open after its stream was freed", pm->id);
    }

  g_hash_table_unref (f->ports);
  g_array_unref (f->announced);
  g_ptr_array_unref (f->dirty);
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize (int    *argc,
                      char ***argv)
{
  g_setenv ("G_SLICE", "always-malloc", TRUE);
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
  /* Types and error quarks registered once, outside the runs. */
  g_type_ensure (MP_TYPE_MESSAGE_PORT);
  g_type_ensure (G_TYPE_DBUS_MESSAGE);
  (void) MP_ERROR;
  (void) G_IO_ERROR;
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data,
                        size_t         size)
{
  Reader r = { data, size, 0 };
  Fuzz f = { 0 };
  MpMessagePort *port0;

  f.server = next_byte (&r) & 1;
  f.ports = g_hash_table_new_full (g_int64_hash, g_int64_equal, NULL, port_model_free);
  f.announced = g_array_new (FALSE, FALSE, sizeof (guint64));
  f.dirty = g_ptr_array_new ();
  f.n_links = 1;
  f.stream = mp_stream_new_detached (f.server, &port0);
  port_model_add (&f, 0, PORT_HELD)->port = port0;

  for (guint n = 0; n < MAX_STEPS && r.pos < r.size; n++)
    step (&f, &r);

  finish (&f);
  return 0;
}
