/* mp-bus-private.h: a message bus connection and its broadcast-channel subscriptions
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* What mpport keeps per GDBusConnection to a message bus: the subscriptions of its bus
 * channels (one match rule per channel name, counted), the filter that reads their signals
 * in GDBus's worker thread, and whether the connection was lost. One per connection,
 * found through a process-wide table touched only when bus channels are made or closed.
 * Every function is callable from any thread. */
typedef struct _MpBus MpBus;

/* How the bus layer reports to the objects above it (mp-broadcast-channel.c): set once. */
typedef struct
{
  /* A post for @name arrived from @sender (a unique bus name, never our own): @data
   * (transfer full; NULL for a NULL post) or else @error (transfer full): a post that could
   * not be turned back into a valid GVariant. Called in GDBus's worker thread, in the order
   * the posts arrived; it must not block. */
  void (*received) (MpBus      *bus,
                    const char *name,
                    const char *sender,
                    GVariant   *data,
                    GError     *error);
  /* The connection closed (the bus went away): called once, from any thread. */
  void (*lost)     (MpBus      *bus);
} MpBusFuncs;

void      mp_bus_set_funcs        (const MpBusFuncs *funcs);

/* The MpBus of @connection, or with %NULL of mpport's own private connection to the
 * session bus (opened on first use, and again once a previous one was lost; never
 * g_bus_get()'s shared connection, which exits the process when the bus goes away).
 * Blocks while it connects. */
MpBus    *mp_bus_get_sync         (GDBusConnection *connection,
                                   GCancellable    *cancellable,
                                   GError         **error);
MpBus    *mp_bus_ref              (MpBus           *self);
void      mp_bus_unref            (MpBus           *self);
GDBusConnection *mp_bus_get_connection (MpBus      *self);
gboolean  mp_bus_is_lost          (MpBus           *self);

/* Counts a subscriber of @name in; the first one sends the match rule and, like every
 * other that finds it not yet acknowledged, waits for the bus's reply: once this returns
 * TRUE, a post another process makes on @name reaches us. Blocks. On failure nothing was
 * counted. */
gboolean  mp_bus_subscribe_sync   (MpBus           *self,
                                   const char      *name,
                                   GCancellable    *cancellable,
                                   GError         **error);
/* Counts a subscriber of @name out; the last one removes the match rule (no wait). */
void      mp_bus_unsubscribe      (MpBus           *self,
                                   const char      *name);

/* Sends one post of @name: @item is a wire item (mp_wire_encode_item()). Never blocks on
 * the bus; posts of one thread go out in the order made. Fails with MP_ERROR_CLOSED once
 * the connection is lost. */
gboolean  mp_bus_send             (MpBus           *self,
                                   const char      *name,
                                   GVariant        *item,
                                   GError         **error);
/* Blocks until what was sent so far is written to the bus (or the connection is lost). */
void      mp_bus_flush            (MpBus           *self);

G_END_DECLS
