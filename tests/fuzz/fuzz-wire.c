/* fuzz-wire.c: libFuzzer target for the wire codec's decoder (mpport/mp-wire.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Built and run by `MPPORT_FUZZ_TARGET=wire scripts/fuzz` (clang
 * -fsanitize=fuzzer,address,undefined). The first byte of the input picks what the rest is:
 *
 *   0  a serialized "(sa(say))" body, loaded untrusted: what a forged or broken sender
 *      could make GVariant hold (GDBus itself hands over bodies in normal form);
 *   1  a type string (up to a NUL), then the serialized value of that type, loaded
 *      untrusted and decoded as a body: the signature check, and everything behind it when
 *      the type happens to be the right one;
 *   2  a body built item by item, as GDBus would hand it over: a name choice, then items of
 *      (type string length, type string, data length, data): the checks of each post;
 *   3  a type string and a serialized value of it, loaded untrusted and then *encoded*: what
 *      the encoder accepts, the decoder must accept and give back in normal form.
 *
 * Checked for every body decoded, against GLib's own reading of the body:
 *
 *   - a body that is not "(sa(say))" or names another channel gives exactly one call, an
 *     error; otherwise there is exactly one call per post, in order;
 *   - each call has at most one of data and error; neither only for a post of type "" with
 *     no bytes; errors are G_IO_ERROR_INVALID_DATA with a message;
 *   - data is non-floating, in normal form, of the post's type, which is a valid definite
 *     type string of at most MP_WIRE_MAX_TYPE_STRING bytes without 'h', with at most
 *     MP_WIRE_MAX_PAYLOAD bytes;
 *   - encoding the data again succeeds and gives the post's type string and bytes exactly,
 *     and decoding that gives the same value; the size bounds hold for the new body.
 *
 * A failed check aborts with a message: libFuzzer reports it as a crash.
 */

#include <mpport/mpport.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp-wire-private.h"
#include "../wire-calls.h"

#define NAME "chat"
#define MAX_ARBITRARY_TYPE 64

static void fail (const char *format, ...) G_GNUC_PRINTF (1, 2) G_GNUC_NORETURN;

#define CHECK(cond, ...) \
  G_STMT_START { if (G_UNLIKELY (!(cond))) fail (__VA_ARGS__); } G_STMT_END

static void
fail (const char *format,
      ...)
{
  va_list args;

  va_start (args, format);
  fprintf (stderr, "fuzz-wire: invariant violated: ");
  vfprintf (stderr, format, args);
  fprintf (stderr, "\n");
  va_end (args);
  abort ();
}

static void
check_call (GVariant *data,
            GError   *error)
{
  CHECK (data == NULL || error == NULL, "a call with both data and an error");
  if (error != NULL)
    CHECK (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA) &&
           error->message != NULL && error->message[0] != '\0',
           "an error that is not G_IO_ERROR_INVALID_DATA with a message");
  if (data != NULL)
    CHECK (!g_variant_is_floating (data) && g_variant_is_normal_form (data),
           "data floating or not in normal form");
}

static GArray *
decode (GVariant   *body,
        const char *name)
{
  return wire_calls_decode (body, name, check_call);
}

/* The item's type string (newly allocated) and bytes as GLib reads them. */
static char *
item_parts (GVariant  *item,
            GVariant **bytes_out)
{
  g_autoptr(GVariant) type_variant = g_variant_get_child_value (item, 0);

  *bytes_out = g_variant_get_child_value (item, 1);
  return g_variant_dup_string (type_variant, NULL);
}

/* @data came from a post of @type_string and @bytes: it must travel back exactly. */
static void
check_reencodes (GVariant   *data,
                 const char *type_string,
                 GVariant   *bytes)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) item = mp_wire_encode_item (data, &error);
  g_autoptr(GVariant) again_type = NULL;
  g_autoptr(GVariant) again_bytes = NULL;
  g_autoptr(GVariant) body = NULL;
  g_autoptr(GArray) calls = NULL;
  gsize size;

  CHECK (item != NULL, "decoded data of type %s does not encode: %s", type_string,
         error != NULL ? error->message : "?");
  again_type = g_variant_get_child_value (item, 0);
  again_bytes = g_variant_get_child_value (item, 1);
  CHECK (strcmp (g_variant_get_string (again_type, NULL), type_string) == 0,
         "re-encoded type string differs");
  size = g_variant_get_size (bytes);
  CHECK (g_variant_get_size (again_bytes) == size &&
         (size == 0 || memcmp (g_variant_get_data (again_bytes), g_variant_get_data (bytes),
                               size) == 0),
         "re-encoded bytes of type %s differ", type_string);

  body = mp_wire_build_body (NAME, &item, 1);
  CHECK (g_variant_get_size (body) <= mp_wire_body_base_size (NAME) + mp_wire_item_size (item),
         "body larger than its bound");
  calls = decode (body, NAME);
  CHECK (calls->len == 1, "a body of one post gave %u calls", calls->len);
  if (data == NULL)
    CHECK (g_array_index (calls, WireCall, 0).data == NULL &&
           g_array_index (calls, WireCall, 0).error == NULL, "a NULL post did not come back");
  else
    CHECK (g_array_index (calls, WireCall, 0).data != NULL &&
           g_variant_equal (g_array_index (calls, WireCall, 0).data, data),
           "re-encoded data does not decode to itself");
}

/* Decodes @body for NAME and checks every call against GLib's reading of the body. */
static void
check_body (GVariant *body)
{
  g_autoptr(GArray) calls = decode (body, NAME);
  g_autoptr(GVariant) name = NULL;
  g_autoptr(GVariant) items = NULL;
  gsize n_items;

  if (!g_variant_is_of_type (body, G_VARIANT_TYPE (MP_WIRE_BODY_TYPE)))
    {
      CHECK (calls->len == 1 && g_array_index (calls, WireCall, 0).error != NULL,
             "a body of type %s gave %u calls", g_variant_get_type_string (body), calls->len);
      return;
    }

  name = g_variant_get_child_value (body, 0);
  if (strcmp (g_variant_get_string (name, NULL), NAME) != 0)
    {
      CHECK (calls->len == 1 && g_array_index (calls, WireCall, 0).error != NULL,
             "a body for another name gave %u calls", calls->len);
      return;
    }

  items = g_variant_get_child_value (body, 1);
  n_items = g_variant_n_children (items);
  CHECK (calls->len == n_items, "%" G_GSIZE_FORMAT " posts gave %u calls", n_items, calls->len);

  for (gsize i = 0; i < n_items; i++)
    {
      g_autoptr(GVariant) item = g_variant_get_child_value (items, i);
      g_autoptr(GVariant) bytes = NULL;
      g_autofree char *type_string = item_parts (item, &bytes);
      WireCall *call = &g_array_index (calls, WireCall, i);

      if (call->error != NULL)
        continue;

      if (call->data == NULL)
        {
          CHECK (type_string[0] == '\0' && g_variant_get_size (bytes) == 0,
                 "post %" G_GSIZE_FORMAT " of type '%s' gave neither data nor an error", i,
                 type_string);
          check_reencodes (NULL, type_string, bytes);
          continue;
        }

      CHECK (strlen (type_string) <= MP_WIRE_MAX_TYPE_STRING &&
             g_variant_type_string_is_valid (type_string) &&
             g_variant_type_is_definite (G_VARIANT_TYPE (type_string)) &&
             strchr (type_string, 'h') == NULL,
             "post %" G_GSIZE_FORMAT " accepted with type '%s'", i, type_string);
      CHECK (strcmp (g_variant_get_type_string (call->data), type_string) == 0,
             "post %" G_GSIZE_FORMAT " of type '%s' gave data of type '%s'", i, type_string,
             g_variant_get_type_string (call->data));
      CHECK (g_variant_get_size (bytes) <= MP_WIRE_MAX_PAYLOAD, "post over the cap accepted");
      check_reencodes (call->data, type_string, bytes);
    }
}

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

/* Up to @max bytes, until a NUL or the end, as a string. */
static char *
next_string (Reader *r,
             gsize   max)
{
  GString *s = g_string_new (NULL);

  while (r->pos < r->size && s->len < max)
    {
      guint8 c = r->data[r->pos++];

      if (c == 0)
        break;
      g_string_append_c (s, c);
    }
  return g_string_free (s, FALSE);
}

static GBytes *
rest (Reader *r)
{
  GBytes *bytes = g_bytes_new (r->data + r->pos, r->size - r->pos);

  r->pos = r->size;
  return bytes;
}

/* An untrusted value of a type the input names (a byte if it names none). */
static GVariant *
arbitrary_value (Reader *r)
{
  g_autofree char *type_string = next_string (r, MAX_ARBITRARY_TYPE);
  g_autoptr(GBytes) bytes = rest (r);
  const GVariantType *type = G_VARIANT_TYPE_BYTE;

  if (g_variant_type_string_is_valid (type_string) &&
      g_variant_type_is_definite (G_VARIANT_TYPE (type_string)))
    type = G_VARIANT_TYPE (type_string);
  return g_variant_ref_sink (g_variant_new_from_bytes (type, bytes, FALSE));
}

/* A body built item by item (tree form, as GDBus builds it). */
static GVariant *
structured_body (Reader *r)
{
  static const char *const names[] = { NAME, NAME, NAME, "", "cha", "chat2", "Chat" };
  g_autoptr(GVariantBuilder) builder = g_variant_builder_new (G_VARIANT_TYPE ("a(say)"));
  const char *name = names[next_byte (r) % G_N_ELEMENTS (names)];

  while (r->pos < r->size)
    {
      guint type_length = next_byte (r);
      guint data_length;
      g_autofree char *raw_type = NULL;
      g_autofree char *type_string = NULL;
      const guint8 *data;

      /* Lengths up to 255 + 255: long type strings, and types from the input. */
      if (type_length == 255)
        type_length += next_byte (r);
      type_length = MIN (type_length, r->size - r->pos);
      raw_type = g_strndup ((const char *) r->data + r->pos, type_length);
      r->pos += type_length;
      /* D-Bus strings are UTF-8 without NUL; GDBus never hands over anything else. */
      type_string = g_utf8_make_valid (raw_type, -1);

      data_length = next_byte (r);
      data_length |= (guint) next_byte (r) << 8;
      data_length = MIN (data_length, r->size - r->pos);
      data = r->data + r->pos;
      r->pos += data_length;

      g_variant_builder_add (builder, "(s@ay)", type_string,
                             g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, data, data_length, 1));
    }

  return g_variant_ref_sink (g_variant_new ("(s@a(say))", name,
                                            g_variant_builder_end (builder)));
}

/* What the encoder accepts, the decoder gives back: as the value's normal form. */
static void
check_encode (GVariant *value)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) item = mp_wire_encode_item (value, &error);
  g_autoptr(GVariant) normal = NULL;
  g_autoptr(GVariant) body = NULL;
  g_autoptr(GArray) calls = NULL;

  if (item == NULL)
    {
      CHECK (g_error_matches (error, MP_ERROR, MP_ERROR_DATA_CLONE), "encode failed oddly");
      return;
    }
  CHECK (error == NULL, "encode succeeded with an error");
  normal = g_variant_get_normal_form (value);
  body = mp_wire_build_body (NAME, &item, 1);
  calls = decode (body, NAME);
  CHECK (calls->len == 1 && g_array_index (calls, WireCall, 0).data != NULL,
         "a value of type %s encoded but did not decode: %s", g_variant_get_type_string (value),
         g_array_index (calls, WireCall, 0).error != NULL ?
           g_array_index (calls, WireCall, 0).error->message : "NULL");
  CHECK (g_variant_equal (g_array_index (calls, WireCall, 0).data, normal),
         "a value of type %s came back different", g_variant_get_type_string (value));
  check_body (body);
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize (int    *argc,
                      char ***argv)
{
  g_setenv ("G_SLICE", "always-malloc", TRUE);
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
  /* The error quarks registered once, outside the runs. */
  (void) MP_ERROR;
  (void) G_IO_ERROR;
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data,
                        size_t         size)
{
  Reader r = { data, size, 0 };
  g_autoptr(GVariant) value = NULL;

  switch (next_byte (&r) % 4)
    {
    case 0:
      {
        g_autoptr(GBytes) bytes = rest (&r);

        value = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (MP_WIRE_BODY_TYPE),
                                                              bytes, FALSE));
        check_body (value);
      }
      break;

    case 1:
      value = arbitrary_value (&r);
      check_body (value);
      break;

    case 2:
      value = structured_body (&r);
      check_body (value);
      break;

    case 3:
    default:
      value = arbitrary_value (&r);
      check_encode (value);
      break;
    }

  return 0;
}
