/* mp-stream-private.h: ports entangled with ports of another process, over one stream
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <gio/gio.h>

#include "mp-message-port.h"

G_BEGIN_DECLS

/* Version 1 of the protocol lives in the interface name, as for the bus channel
 * (mp-wire-private.h); docs/wire.md describes it for other implementations: keep the two in
 * step. Every message is a signal on MP_STREAM_PATH, on a D-Bus peer-to-peer connection. */
#define MP_STREAM_INTERFACE   "org.gnome.Mpport.Port1"
#define MP_STREAM_PATH        "/org/gnome/Mpport/Port1"
#define MP_STREAM_VERSION     1u

/* Hello (protocol version, options): the first message of each side, once. */
#define MP_STREAM_HELLO       "Hello"
#define MP_STREAM_HELLO_TYPE  "(ua{sv})"
/* The option of the direct path: the server's Hello offers a socket (a handle, "h", of the
 * message's file descriptors); the client's says it can use one (a boolean). */
#define MP_STREAM_OPTION_DIRECT "direct"
/* Post (ports, types, type table, ends, payloads, transfer counts, transfers): a burst of
 * posts in the order made, for any ports of the stream, as columns: post i goes to port
 * ports[i]; its payload has the type string type_table[types[i]] ("" for a NULL post) and the
 * serialized bytes payloads[ends[i-1] .. ends[i]) (from 0 for the first), in normal form,
 * little-endian; it transfers the next transfer_counts[i] ids of transfers. Columns of basic
 * types rather than an array of structures, because GDBus builds a GVariant for every
 * structure member it reads or writes, while an array of a fixed type is one copy. */
#define MP_STREAM_POST        "Post"
#define MP_STREAM_POST_TYPE   "(atauasauayauat)"
/* Close ([port id, ...]): the sender's ends of these ports closed, after their posts. */
#define MP_STREAM_CLOSE       "Close"
#define MP_STREAM_CLOSE_TYPE  "(at)"

/* Credit ([(port id, cost), ...]): the sender's application took that much of what arrived
 * on these ports: the receiver may send that much more (flow control, docs/wire.md). */
#define MP_STREAM_CREDIT      "Credit"
#define MP_STREAM_CREDIT_TYPE "(a(tt))"

/* Room ([(port id, mark, taken), ...]): the sender's end of these ports has that high-water
 * mark (0: none), and its application took that many messages of what arrived on them so far
 * (modulo 2^32): the receiver's async posts on them wait while what it sent and was not
 * taken, with what waits to leave, reaches the mark (docs/wire.md). Sent when the mark
 * changes and, while there is one, as the application takes messages. */
#define MP_STREAM_ROOM        "Room"
#define MP_STREAM_ROOM_TYPE   "(a(tuu))"

/* Flow control: a port's window, in cost, and the cost of a post besides its payload's
 * bytes. A sender keeps what it sent and was not granted back under the window (it may send
 * one post while under it, whatever its size); a receiver grants back what its application
 * takes, in steps of at least a quarter of the window. */
#define MP_STREAM_WINDOW        (1u << 20)
#define MP_STREAM_COST_OVERHEAD 64u

/* The ports one post may transfer. */
#define MP_STREAM_MAX_TRANSFER 1024
/* The ports a peer may have open on one stream at a time (each costs this side a pipe and
 * two port objects). */
#define MP_STREAM_MAX_PORTS    65536

/* Called once, on mpport's worker thread, when the connection is up (@error NULL) or could
 * not be made (@error set, transfer none): then @port (transfer none: the port
 * mp_stream_open() returned) is closed. Must not block. */
typedef void (*MpStreamReadyFunc) (MpMessagePort *port,
                                   const GError  *error,
                                   gpointer       user_data);

/* Makes a D-Bus peer-to-peer connection over @io with @flags (an authentication role and
 * its options; see mp_stream_connection_flags()) in the background, and returns at once the
 * port (transfer full, unstarted, the owner) that is entangled with the first port of the
 * other side. Posts made on it wait until the connection is up. @ready (nullable) tells
 * when. Any thread. */
MpMessagePort        *mp_stream_open             (GIOStream            *io,
                                                  GDBusConnectionFlags  flags,
                                                  GCancellable         *cancellable,
                                                  MpStreamReadyFunc     ready,
                                                  gpointer              user_data) G_GNUC_WARN_UNUSED_RESULT;

/* The GDBus flags of a stream's connection for @flags. */
GDBusConnectionFlags  mp_stream_connection_flags (MpStreamFlags         flags);

/* For the fuzzer and the decoder's tests: a stream with no connection, whose port 0's other
 * end is @port (transfer full). What mp_stream_receive() is given goes through the same
 * checks as what a connection reads, except those the worker thread makes later (a Credit
 * or a Room for more than was sent: no drain runs), and what it delivers lands in @port and in the ports
 * that arrive (whose relays never start); a protocol violation only marks the stream broken
 * (no warning). mp_stream_free_detached() closes every port of the stream. */
typedef struct _MpStream MpStream;

MpStream             *mp_stream_new_detached     (gboolean              server,
                                                  MpMessagePort       **port);
void                  mp_stream_receive          (MpStream             *self,
                                                  GDBusMessage         *message);
/* A frame of the direct path (@kind 1 Post, 2 Close, 3 Credit, 4 Room; @body its serialized
 * body), as the socket would bring it; only after a Hello that asks for the path (a
 * boolean true from a client, a handle from a server), else it breaks the stream. */
void                  mp_stream_receive_frame    (MpStream             *self,
                                                  guint8                kind,
                                                  GBytes               *body);
gboolean              mp_stream_is_broken        (MpStream             *self);
void                  mp_stream_free_detached    (MpStream             *self);

/* The serialized Post body (MP_STREAM_POST_TYPE, little-endian, normal form) of @n posts
 * given as its columns, written directly rather than through GVariant's builders (which
 * cost tens of thousands of instructions for a lone post): the same bytes as
 * g_variant_get_data() of the tuple GVariant would give (tests/test-wire.c compares). */
GBytes               *mp_stream_encode_post      (guint                 n,
                                                  const guint64        *ports,
                                                  const guint32        *types,
                                                  const char *const    *table,
                                                  guint                 n_table,
                                                  const guint32        *ends,
                                                  const guint8         *payloads,
                                                  gsize                 payloads_size,
                                                  const guint32        *counts,
                                                  const guint64        *transfers,
                                                  guint                 n_transfers);

G_END_DECLS
