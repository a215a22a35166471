/* bus-peer-protocol.c: what tests/test-bus.c and tests/bus-peer.c must agree on
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "bus-peer-protocol.h"

#include <string.h>

/* ------------------------------------------------------------------ */
/* Channel specs                                                        */
/* ------------------------------------------------------------------ */

char *
bus_peer_spec_new (const char *kind,
                   const char *name)
{
  GString *spec = g_string_new (kind);

  g_string_append_c (spec, ':');
  for (const guchar *p = (const guchar *) name; *p != '\0'; p++)
    g_string_append_printf (spec, "%02x", *p);

  return g_string_free (spec, FALSE);
}

static char *
name_from_hex (const char *hex)
{
  gsize len = strlen (hex);
  GString *name = g_string_sized_new (len / 2);

  if (len % 2 != 0)
    g_error ("odd hex name: %s", hex);
  for (gsize i = 0; i < len; i += 2)
    {
      int hi = g_ascii_xdigit_value (hex[i]);
      int lo = g_ascii_xdigit_value (hex[i + 1]);

      if (hi < 0 || lo < 0)
        g_error ("bad hex name: %s", hex);
      g_string_append_c (name, (char) (hi * 16 + lo));
    }

  return g_string_free (name, FALSE);
}

char *
bus_peer_spec_parse (const char *spec,
                     gboolean   *on_bus)
{
  if (g_str_has_prefix (spec, "bus:"))
    {
      *on_bus = TRUE;
      return name_from_hex (spec + strlen ("bus:"));
    }
  if (g_str_has_prefix (spec, "plain:"))
    {
      *on_bus = FALSE;
      return name_from_hex (spec + strlen ("plain:"));
    }
  g_error ("bad channel spec: %s", spec);
}

/* ------------------------------------------------------------------ */
/* Payloads                                                             */
/* ------------------------------------------------------------------ */

GVariant *
bus_payload_new (guint   proc,
                 guint   channel,
                 guint32 seq)
{
  return g_variant_new (BUS_PAYLOAD_TYPE, proc, channel, seq);
}

/* ------------------------------------------------------------------ */
/* Receipts                                                             */
/* ------------------------------------------------------------------ */

static void
source_free (gpointer data)
{
  BusSource *source = data;

  g_free (source->sender);
  g_free (source);
}

void
bus_receipts_init (BusReceipts *receipts)
{
  *receipts = (BusReceipts) {
    .from_start = TRUE,
    .sources = g_ptr_array_new_with_free_func (source_free),
    .errors = g_ptr_array_new_with_free_func ((GDestroyNotify) g_error_free),
  };
}

void
bus_receipts_clear (BusReceipts *receipts)
{
  g_clear_pointer (&receipts->sources, g_ptr_array_unref);
  g_clear_pointer (&receipts->errors, g_ptr_array_unref);
  g_clear_pointer (&receipts->other_sender, g_free);
}

BusSource *
bus_receipts_source (BusReceipts *receipts,
                     guint        proc,
                     guint        channel)
{
  BusSource *source;

  for (guint i = 0; i < receipts->sources->len; i++)
    {
      source = g_ptr_array_index (receipts->sources, i);
      if (source->proc == proc && source->channel == channel)
        return source;
    }

  source = g_new0 (BusSource, 1);
  source->proc = proc;
  source->channel = channel;
  g_ptr_array_add (receipts->sources, source);

  return source;
}

static void
record_sender (char       **slot,
               gboolean    *mixed,
               const char  *sender)
{
  const char *shown = sender != NULL ? sender : "-";

  if (*slot == NULL)
    *slot = g_strdup (shown);
  else if (strcmp (*slot, shown) != 0)
    *mixed = TRUE;
}

BusSource *
bus_receipts_add_message (BusReceipts *receipts,
                          MpMessage   *message)
{
  GVariant *data = mp_message_get_data (message);
  const char *sender = mp_message_get_sender (message);
  guint32 proc, from, seq;
  BusSource *source;

  if (data == NULL || !g_variant_is_of_type (data, G_VARIANT_TYPE (BUS_PAYLOAD_TYPE)))
    {
      receipts->other_count++;
      receipts->other_bytes += data != NULL ? g_variant_get_size (data) : 0;
      record_sender (&receipts->other_sender, &receipts->other_mixed, sender);
      return NULL;
    }

  g_variant_get (data, BUS_PAYLOAD_TYPE, &proc, &from, &seq);
  source = bus_receipts_source (receipts, proc, from);
  if (source->count == 0)
    {
      source->first = receipts->from_start ? 0 : seq;
      if (seq != source->first)
        source->bad++;
    }
  else if (seq != source->last + 1)
    source->bad++;
  source->last = seq;
  source->count++;
  record_sender (&source->sender, &source->mixed, sender);

  return source;
}

void
bus_receipts_add_error (BusReceipts  *receipts,
                        const GError *error)
{
  g_ptr_array_add (receipts->errors, g_error_copy (error));
}

static int
source_compare (gconstpointer a,
                gconstpointer b)
{
  const BusSource *sa = *(BusSource *const *) a;
  const BusSource *sb = *(BusSource *const *) b;

  if (sa->proc != sb->proc)
    return sa->proc < sb->proc ? -1 : 1;
  if (sa->channel != sb->channel)
    return sa->channel < sb->channel ? -1 : 1;
  return 0;
}

void
bus_receipts_append_report (BusReceipts *receipts,
                            guint        index,
                            GString     *report)
{
  g_ptr_array_sort (receipts->sources, source_compare);
  for (guint i = 0; i < receipts->sources->len; i++)
    {
      BusSource *s = g_ptr_array_index (receipts->sources, i);

      if (s->count > 0)
        g_string_append_printf (report, "got %u %u %u %u %u %s\n", index, s->proc, s->channel,
                                s->count, s->bad, s->mixed ? "mixed" : s->sender);
    }
  if (receipts->other_count > 0)
    g_string_append_printf (report, "other %u %u %" G_GUINT64_FORMAT " %s\n", index,
                            receipts->other_count, receipts->other_bytes,
                            receipts->other_mixed ? "mixed" : receipts->other_sender);
  if (receipts->errors->len > 0)
    g_string_append_printf (report, "errors %u %u\n", index, receipts->errors->len);
  if (receipts->closed > 0)
    g_string_append_printf (report, "closed %u %u\n", index, receipts->closed);
}
