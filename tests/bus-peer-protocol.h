/* bus-peer-protocol.h: what tests/test-bus.c and tests/bus-peer.c must agree on
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Linked into both (tests/meson.build), so that the two ends of the conversation cannot
 * drift apart: the channel specs of bus-peer's command line, the payloads the processes
 * post, and the records of what a channel received, with the report lines they print as.
 * bus-peer.c's header describes the commands and the report.
 */

#pragma once

#include <mpport/mpport.h>

G_BEGIN_DECLS

/* ------------------------------------------------------------------ */
/* Channel specs: "bus:HEX" or "plain:HEX"                              */
/* ------------------------------------------------------------------ */

/* HEX is the name's bytes in hexadecimal, so that any name (quotes, slashes, newlines,
 * 10 000 bytes) passes through argv unharmed. @kind is "bus" or "plain". */
char *bus_peer_spec_new (const char *kind,
                         const char *name);

/* The name of @spec, and in @on_bus whether it is a bus channel's; aborts on a malformed
 * spec. */
char *bus_peer_spec_parse (const char *spec,
                           gboolean   *on_bus);

/* ------------------------------------------------------------------ */
/* Payloads: (process, channel, seq)                                    */
/* ------------------------------------------------------------------ */

#define BUS_PAYLOAD_TYPE "(uuu)"

/* The (floating) payload of post @seq of channel @channel of process @proc. */
GVariant *bus_payload_new (guint   proc,
                           guint   channel,
                           guint32 seq);

/* ------------------------------------------------------------------ */
/* Receipts: what one channel got                                       */
/* ------------------------------------------------------------------ */

/* What one channel got from one sending channel. */
typedef struct
{
  guint proc;
  guint channel;
  guint32 first;   /* the seq of the first message */
  guint32 last;
  guint count;
  guint bad;       /* messages whose seq was not the next one */
  char *sender;    /* mp_message_get_sender(), "-" for NULL */
  gboolean mixed;  /* the sender changed */
} BusSource;

typedef struct
{
  gboolean from_start;   /* each sender's seqs start at 0, else where this one joined */
  GPtrArray *sources;    /* BusSource */
  guint other_count;     /* payloads that are not BUS_PAYLOAD_TYPE */
  guint64 other_bytes;
  char *other_sender;
  gboolean other_mixed;
  GPtrArray *errors;     /* GError, the "message-error"s */
  guint closed;          /* "notify::closed" emissions */
} BusReceipts;

/* Empty receipts, from_start. */
void bus_receipts_init (BusReceipts *receipts);

void bus_receipts_clear (BusReceipts *receipts);

/* The record of what came from channel @channel of process @proc: an empty one if nothing
 * did yet. */
BusSource *bus_receipts_source (BusReceipts *receipts,
                                guint        proc,
                                guint        channel);

/* Records @message: its source's record if it holds a BUS_PAYLOAD_TYPE payload, else NULL
 * (it counts among the others). */
BusSource *bus_receipts_add_message (BusReceipts *receipts,
                                     MpMessage   *message);

void bus_receipts_add_error (BusReceipts  *receipts,
                             const GError *error);

/* Appends the report lines of @receipts, as those of channel @index, each ending in "\n":
 *   got RX P C COUNT BAD SENDER
 *   other RX COUNT BYTES SENDER
 *   errors RX N
 *   closed RX N
 * sorted, zero counts left out; SENDER is "mixed" if it changed. */
void bus_receipts_append_report (BusReceipts *receipts,
                                 guint        index,
                                 GString     *report);

G_END_DECLS
