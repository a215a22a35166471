/* wire-calls.h: the calls of mp_wire_decode_body()'s visit function, collected in order
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Shared by tests/test-wire.c and tests/fuzz/fuzz-wire.c. Header-only, because scripts/fuzz
 * builds the fuzz target from its one source file with clang, outside meson. Each of the two
 * checks every call as it is made in its own way (GTest assertions, the fuzzer's CHECK()).
 */

#pragma once

#include <glib.h>

#include "mp-wire-private.h"

G_BEGIN_DECLS

/* One call of the visit function; it owns what it got. */
typedef struct
{
  GVariant *data;
  GError *error;
} WireCall;

/* Checks one call as it is made: at most one of @data and @error is set. */
typedef void (*WireCallCheck) (GVariant *data,
                               GError   *error);

typedef struct
{
  GArray *calls;         /* WireCall */
  WireCallCheck check;
} WireCallCollector;

static inline void
wire_call_clear (gpointer p)
{
  WireCall *call = p;

  g_clear_pointer (&call->data, g_variant_unref);
  g_clear_error (&call->error);
}

static inline void
wire_call_collect (GVariant *data,
                   GError   *error,
                   gpointer  user_data)
{
  WireCallCollector *collector = user_data;
  WireCall call = { data, error };

  collector->check (data, error);
  g_array_append_val (collector->calls, call);
}

/* Decodes @body as a post to the channel @name: the calls (WireCall) in the order they were
 * made, each passed through @check first. */
static inline GArray *
wire_calls_decode (GVariant      *body,
                   const char    *name,
                   WireCallCheck  check)
{
  WireCallCollector collector = { g_array_new (FALSE, TRUE, sizeof (WireCall)), check };

  g_array_set_clear_func (collector.calls, wire_call_clear);
  mp_wire_decode_body (body, name, wire_call_collect, &collector);

  return collector.calls;
}

G_END_DECLS
