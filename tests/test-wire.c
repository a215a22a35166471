/* test-wire.c: the wire codec of bus channel posts (mpport/mp-wire.c, docs/wire.md)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * No bus here: bodies are built, passed through GDBus's own marshalling where it matters,
 * forged by hand where a hostile sender would, and decoded. Every decode is checked call by
 * call: which posts gave data, which gave an error, in which order.
 */

#include <mpport/mpport.h>
#include <string.h>

#include "mp-stream-private.h"
#include "mp-wire-private.h"

#include "mp-test-util.h"
#include "wire-calls.h"

#define NAME "org.example.App.chat"

/* ------------------------------------------------------------------------------------ */
/* Helpers                                                                               */

static void
check_call (GVariant *data,
            GError   *error)
{
  /* At most one of the two, whatever the body. */
  g_assert_true (data == NULL || error == NULL);
  if (data != NULL)
    {
      g_assert_false (g_variant_is_floating (data));
      g_assert_true (g_variant_is_normal_form (data));
    }
  if (error != NULL)
    g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
}

static GArray *
decode (GVariant   *body,
        const char *name)
{
  return wire_calls_decode (body, name, check_call);
}

#define CALL(calls, i) (&g_array_index ((calls), WireCall, (i)))

static GVariant *
parse (const char *text)
{
  g_autoptr(GError) error = NULL;
  GVariant *value = g_variant_parse (NULL, text, NULL, NULL, &error);

  g_assert_no_error (error);
  g_assert_false (g_variant_is_floating (value));
  return value;
}

static GVariant *
encode_ok (GVariant *data)
{
  g_autoptr(GError) error = NULL;
  GVariant *item = mp_wire_encode_item (data, &error);

  g_assert_no_error (error);
  g_assert_nonnull (item);
  g_assert_false (g_variant_is_floating (item));
  g_assert_true (g_variant_is_of_type (item, G_VARIANT_TYPE (MP_WIRE_ITEM_TYPE)));
  return item;
}

static void
encode_refused (GVariant *data)
{
  g_autoptr(GError) error = NULL;
  GVariant *item = mp_wire_encode_item (data, &error);

  g_assert_error (error, MP_ERROR, MP_ERROR_DATA_CLONE);
  g_assert_null (item);
}

/* A forged item: any type string, any bytes. */
static GVariant *
raw_item (const char *type_string,
          const void *data,
          gsize       size)
{
  GVariant *bytes = g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, data, size, 1);

  return g_variant_ref_sink (g_variant_new ("(s@ay)", type_string, bytes));
}

static GVariant *
body_of (const char *name,
         GPtrArray  *items)
{
  return mp_wire_build_body (name, (GVariant *const *) items->pdata, items->len);
}

/* The value as it comes out of a bus: a D-Bus message with @body, marshalled the way GDBus
 * writes it and parsed the way GDBus reads it. */
static GVariant *
through_dbus (GVariant *body,
              gsize    *body_length)
{
  g_autoptr(GDBusMessage) message = NULL;
  g_autoptr(GDBusMessage) parsed = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *path = mp_wire_path_for_name (NAME);
  g_autofree guchar *blob = NULL;
  gsize blob_size;

  message = g_dbus_message_new_signal (path, MP_WIRE_INTERFACE, MP_WIRE_MEMBER);
  g_dbus_message_set_body (message, body);
  blob = g_dbus_message_to_blob (message, &blob_size, G_DBUS_CAPABILITY_FLAGS_NONE, &error);
  g_assert_no_error (error);

  parsed = g_dbus_message_new_from_blob (blob, blob_size, G_DBUS_CAPABILITY_FLAGS_NONE, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (g_dbus_message_get_signature (parsed), ==, "sa(say)");
  if (body_length != NULL)
    {
      /* The body length: bytes 4..7 of the fixed header, in the message's byte order. */
      guint32 length;

      memcpy (&length, blob + 4, 4);
      *body_length = blob[0] == 'l' ? GUINT32_FROM_LE (length) : GUINT32_FROM_BE (length);
    }

  return g_variant_ref (g_dbus_message_get_body (parsed));
}

/* ------------------------------------------------------------------------------------ */
/* The object path                                                                       */

static void
assert_path_for (const char *name)
{
  g_autofree char *path = mp_wire_path_for_name (name);
  const char *digest;

  g_assert_true (g_str_has_prefix (path, MP_WIRE_PATH_PREFIX));
  g_assert_true (g_variant_is_object_path (path));
  digest = path + strlen (MP_WIRE_PATH_PREFIX);
  g_assert_cmpuint (strlen (digest), ==, 64);
  for (const char *p = digest; *p != '\0'; p++)
    g_assert_true (g_ascii_isdigit (*p) || (*p >= 'a' && *p <= 'f'));
}

static void
test_path_known_digests (void)
{
  g_autofree char *empty = mp_wire_path_for_name ("");
  g_autofree char *abc = mp_wire_path_for_name ("abc");

  /* SHA-256 test vectors (FIPS 180-2). */
  g_assert_cmpstr (empty, ==, MP_WIRE_PATH_PREFIX
                   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  g_assert_cmpstr (abc, ==, MP_WIRE_PATH_PREFIX
                   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  assert_path_for ("");
}

static void
test_path_any_name (void)
{
  g_autofree char *long_name = g_strnfill (10000, 'x');
  g_autoptr(GHashTable) paths = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  const char *names[] = {
    "", "it's", "a/b", "/", "'", "\\'", "a'b/c,d=e", "Grüße, 日本語 🙂", "chat", "chat2",
    "cha", "org.example.App.chat", long_name,
  };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    {
      assert_path_for (names[i]);
      /* Distinct names, distinct paths: a prefix of a name is another channel. */
      g_assert_true (g_hash_table_add (paths, mp_wire_path_for_name (names[i])));
    }
  g_assert_cmpuint (g_hash_table_size (paths), ==, G_N_ELEMENTS (names));
}

/* ------------------------------------------------------------------------------------ */
/* Encoding                                                                              */

static void
assert_item (GVariant   *item,
             const char *type_string,
             const void *data,
             gsize       size)
{
  g_autoptr(GVariant) type_variant = g_variant_get_child_value (item, 0);
  g_autoptr(GVariant) bytes = g_variant_get_child_value (item, 1);

  g_assert_cmpstr (g_variant_get_string (type_variant, NULL), ==, type_string);
  g_assert_cmpmem (g_variant_get_data (bytes), g_variant_get_size (bytes), data, size);
}

static void
test_encode_exact_bytes (void)
{
  static const guint8 u32[] = { 0x04, 0x03, 0x02, 0x01 };
  static const guint8 i16[] = { 0xfe, 0xff };
  static const guint8 str[] = { 'h', 'e', 'l', 'l', 'o', 0 };
  /* (uy): the uint32, then the byte; no framing for a fixed-size tuple, padded to 4. */
  static const guint8 tuple[] = { 0x2a, 0, 0, 0, 0x07, 0, 0, 0 };
  /* mi Nothing is empty; mi 5 is the int32 alone (a fixed-size child). */
  static const guint8 just5[] = { 5, 0, 0, 0 };
  g_autoptr(GVariant) v_u32 = g_variant_ref_sink (g_variant_new_uint32 (0x01020304));
  g_autoptr(GVariant) v_i16 = g_variant_ref_sink (g_variant_new_int16 (-2));
  g_autoptr(GVariant) v_str = g_variant_ref_sink (g_variant_new_string ("hello"));
  g_autoptr(GVariant) v_tuple = parse ("(uint32 42, byte 7)");
  g_autoptr(GVariant) v_nothing = parse ("@mi nothing");
  g_autoptr(GVariant) v_just5 = parse ("@mi 5");
  struct { GVariant *value; const char *type; const guint8 *bytes; gsize size; } cases[] = {
    { v_u32, "u", u32, sizeof u32 },
    { v_i16, "n", i16, sizeof i16 },
    { v_str, "s", str, sizeof str },
    { v_tuple, "(uy)", tuple, sizeof tuple },
    { v_nothing, "mi", NULL, 0 },
    { v_just5, "mi", just5, sizeof just5 },
  };

  /* Little-endian whatever the host. */
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr(GVariant) item = encode_ok (cases[i].value);

      assert_item (item, cases[i].type, cases[i].bytes, cases[i].size);
    }
}

static void
test_encode_null (void)
{
  g_autoptr(GVariant) item = encode_ok (NULL);

  assert_item (item, "", NULL, 0);
}

/* A floating value is neither sunk nor consumed. */
static void
test_encode_floating (void)
{
  GVariant *value = g_variant_new_string ("floating");
  g_autoptr(GVariant) item = NULL;

  item = encode_ok (value);
  g_assert_true (g_variant_is_floating (value));
  g_variant_unref (g_variant_ref_sink (value));
}

/* A value loaded from untrusted bytes that are not in normal form travels in normal form. */
static void
test_encode_normalizes (void)
{
  /* A uint32 of 3 bytes: not normal; its normal form is 0. */
  static const guint8 short_u32[] = { 1, 2, 3 };
  g_autoptr(GBytes) bytes = g_bytes_new_static (short_u32, sizeof short_u32);
  g_autoptr(GVariant) value = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE_UINT32,
                                                                            bytes, FALSE));
  g_autoptr(GVariant) item = NULL;
  static const guint8 zero[] = { 0, 0, 0, 0 };

  g_assert_false (g_variant_is_normal_form (value));
  item = encode_ok (value);
  assert_item (item, "u", zero, sizeof zero);
}

static void
test_encode_payload_cap (void)
{
  guint8 *block = g_malloc0 (MP_WIRE_MAX_PAYLOAD + 1);
  g_autoptr(GVariant) at_cap = NULL;
  g_autoptr(GVariant) over_cap = NULL;
  g_autoptr(GVariant) item = NULL;
  g_autoptr(GVariant) string_over = NULL;
  g_autofree char *text = NULL;

  at_cap = g_variant_ref_sink (g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, block,
                                                          MP_WIRE_MAX_PAYLOAD, 1));
  over_cap = g_variant_ref_sink (g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, block,
                                                            MP_WIRE_MAX_PAYLOAD + 1, 1));
  g_free (block);

  item = encode_ok (at_cap);
  g_assert_cmpuint (mp_wire_item_size (item), >=, MP_WIRE_MAX_PAYLOAD);
  encode_refused (over_cap);

  /* The serialized size counts: a string of MP_WIRE_MAX_PAYLOAD characters has its NUL. */
  text = g_strnfill (MP_WIRE_MAX_PAYLOAD, 's');
  string_over = g_variant_ref_sink (g_variant_new_take_string (g_steal_pointer (&text)));
  encode_refused (string_over);
}

static void
test_encode_handles (void)
{
  const char *refused[] = { "handle 3", "@ah [3, 4]", "('fd', handle 0)", "{handle 1: 'x'}",
                            "@mh nothing" };
  g_autoptr(GVariant) in_variant = parse ("<handle 3>");
  g_autoptr(GVariant) item = NULL;

  for (guint i = 0; i < G_N_ELEMENTS (refused); i++)
    {
      g_autoptr(GVariant) value = parse (refused[i]);

      encode_refused (value);
    }

  /* Only the type string is looked at: inside a variant, a handle is the int32 it is. */
  item = encode_ok (in_variant);
  assert_item (item, "v", "\3\0\0\0\0h", 6);
}

static GVariant *
tuple_of_bytes (guint n)
{
  g_autoptr(GPtrArray) children = g_ptr_array_new ();

  for (guint i = 0; i < n; i++)
    g_ptr_array_add (children, g_variant_new_byte (i));
  return g_variant_ref_sink (g_variant_new_tuple ((GVariant **) children->pdata, n));
}

static void
test_encode_type_string_cap (void)
{
  /* "(" + n × "y" + ")": n + 2 bytes of type string. */
  g_autoptr(GVariant) at_cap = tuple_of_bytes (MP_WIRE_MAX_TYPE_STRING - 2);
  g_autoptr(GVariant) over_cap = tuple_of_bytes (MP_WIRE_MAX_TYPE_STRING - 1);
  g_autoptr(GVariant) item = NULL;
  g_autoptr(GVariant) body = NULL;
  g_autoptr(GArray) calls = NULL;

  g_assert_cmpuint (strlen (g_variant_get_type_string (at_cap)), ==, MP_WIRE_MAX_TYPE_STRING);
  item = encode_ok (at_cap);
  body = mp_wire_build_body (NAME, &item, 1);
  calls = decode (body, NAME);
  g_assert_cmpuint (calls->len, ==, 1);
  g_assert_true (g_variant_equal (CALL (calls, 0)->data, at_cap));

  encode_refused (over_cap);
}

/* @depth containers around a byte: arrays (each with one element) or variants. */
static GVariant *
nested (guint    depth,
        gboolean variants)
{
  GVariant *value = g_variant_new_byte (1);

  for (guint i = 0; i < depth; i++)
    value = variants ? g_variant_new_variant (value) : g_variant_new_array (NULL, &value, 1);
  return g_variant_ref_sink (value);
}

/* What a receiver could never take in normal form (GVariant stops at 128 levels) is refused
 * at encode; one level less travels. */
static void
test_encode_depth (void)
{
  for (guint variants = 0; variants <= 1; variants++)
    {
      g_autoptr(GVariant) deepest = nested (127, variants);
      g_autoptr(GVariant) too_deep = nested (128, variants);
      g_autoptr(GVariant) item = encode_ok (deepest);
      g_autoptr(GVariant) body = mp_wire_build_body (NAME, &item, 1);
      g_autoptr(GArray) calls = decode (body, NAME);

      g_assert_cmpuint (calls->len, ==, 1);
      g_assert_nonnull (CALL (calls, 0)->data);
      g_assert_true (g_variant_equal (CALL (calls, 0)->data, deepest));
      encode_refused (too_deep);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Round trips                                                                           */

static const char *const round_trip_values[] = {
  "true", "false", "byte 0", "byte 255", "int16 -32768", "uint16 65535", "int32 -7",
  "uint32 4294967295", "int64 -9223372036854775808", "uint64 18446744073709551615",
  "3.25", "-0.0", "'text'", "''", "'Grüße, 日本語 🙂'", "objectpath '/org/example/x'",
  "signature 'a{sv}'", "<'inside'>", "<<<int32 1>>>", "@mi nothing", "@mi 5",
  "@m(s) nothing", "@m(s) ('x',)", "@ms nothing", "@ms ''", "@mms just nothing",
  "@mmi nothing", "@mmi just 3", "@mv nothing", "@mv <'x'>", "@as []", "@a{sv} {}",
  "@aay []", "@a(uy) []", "()", "((),())", "['a', 'b', '']", "[b'x', b'']",
  "{'one': <1>, 'two': <('x', @as [])>}", "[(byte 1, uint64 2), (3, 4)]",
  "(true, byte 1, int16 2, uint16 3, 4, uint32 5, int64 6, uint64 7, 8.5, 's', "
  "objectpath '/o', signature 'g', <0>)",
  "[{'k': [[@mi 1, nothing], []]}]", "@aams [[just 'x', nothing], [], [nothing]]",
  "[<byte 1>, <@mi nothing>, <[<'deep'>]>]", "{byte 1: (@as [], @a{ss} {'k': 'v'})}",
};

static void
assert_round_trip (GPtrArray *values,
                   gboolean   via_dbus,
                   gboolean   serialized_body)
{
  g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func ((GDestroyNotify) g_variant_unref);
  g_autoptr(GVariant) body = NULL;
  g_autoptr(GArray) calls = NULL;
  gsize bound = mp_wire_body_base_size (NAME);

  for (guint i = 0; i < values->len; i++)
    {
      GVariant *item = encode_ok (g_ptr_array_index (values, i));

      bound += mp_wire_item_size (item);
      g_ptr_array_add (items, item);
    }
  body = body_of (NAME, items);
  g_assert_false (g_variant_is_floating (body));
  g_assert_cmpstr (g_variant_get_type_string (body), ==, MP_WIRE_BODY_TYPE);
  g_assert_cmpuint (g_variant_get_size (body), <=, bound);

  if (via_dbus)
    {
      gsize body_length;
      GVariant *received = through_dbus (body, &body_length);

      g_assert_cmpuint (body_length, <=, bound);
      g_variant_unref (body);
      body = received;
    }
  if (serialized_body)
    {
      /* One block of untrusted bytes, as a forged or copied body would be. */
      GBytes *bytes = g_variant_get_data_as_bytes (body);
      GVariant *loaded = g_variant_new_from_bytes (G_VARIANT_TYPE (MP_WIRE_BODY_TYPE), bytes,
                                                   FALSE);

      g_bytes_unref (bytes);
      g_variant_unref (body);
      body = g_variant_ref_sink (loaded);
    }

  calls = decode (body, NAME);
  g_assert_cmpuint (calls->len, ==, values->len);
  for (guint i = 0; i < values->len; i++)
    {
      GVariant *sent = g_ptr_array_index (values, i);
      WireCall *call = CALL (calls, i);

      g_assert_no_error (call->error);
      if (sent == NULL)
        {
          g_assert_null (call->data);
          continue;
        }
      g_assert_nonnull (call->data);
      g_assert_cmpstr (g_variant_get_type_string (call->data), ==,
                       g_variant_get_type_string (sent));
      g_assert_true (g_variant_equal (call->data, sent));
    }
}

/* Values to post, NULL ones among them (so no free function: g_variant_unref (NULL) is
 * critical). */
static GPtrArray *
values_new (void)
{
  return g_ptr_array_new ();
}

static void
values_free (GPtrArray *values)
{
  for (guint i = 0; i < values->len; i++)
    if (g_ptr_array_index (values, i) != NULL)
      g_variant_unref (g_ptr_array_index (values, i));
  g_ptr_array_unref (values);
}

/* Every value alone, and all of them (with NULL posts between) in one body. */
static void
test_round_trip_types (void)
{
  GPtrArray *burst = values_new ();

  for (guint i = 0; i < G_N_ELEMENTS (round_trip_values); i++)
    {
      GPtrArray *one = values_new ();

      g_ptr_array_add (one, parse (round_trip_values[i]));
      assert_round_trip (one, FALSE, FALSE);
      assert_round_trip (one, TRUE, FALSE);
      assert_round_trip (one, FALSE, TRUE);
      values_free (one);

      g_ptr_array_add (burst, parse (round_trip_values[i]));
      if (i % 5 == 0)
        g_ptr_array_add (burst, NULL);
    }
  assert_round_trip (burst, FALSE, FALSE);
  assert_round_trip (burst, TRUE, FALSE);
  assert_round_trip (burst, FALSE, TRUE);
  values_free (burst);
}

static void
test_round_trip_null (void)
{
  GPtrArray *values = values_new ();

  g_ptr_array_add (values, NULL);
  assert_round_trip (values, FALSE, FALSE);
  assert_round_trip (values, TRUE, FALSE);
  g_ptr_array_add (values, NULL);
  g_ptr_array_add (values, g_variant_ref_sink (g_variant_new_string ("between")));
  g_ptr_array_add (values, NULL);
  assert_round_trip (values, TRUE, FALSE);
  values_free (values);
}

/* Large values, and misaligned 8-byte data inside a serialized body (GLib copies it). */
static void
test_round_trip_large (void)
{
  GPtrArray *values = values_new ();
  g_autofree char *big = g_strnfill (1024 * 1024, 'L');
  g_autoptr(GVariantBuilder) builder = g_variant_builder_new (G_VARIANT_TYPE ("a(ts)"));

  for (guint i = 0; i < 10000; i++)
    {
      g_autofree char *text = g_strdup_printf ("entry %u", i);

      g_variant_builder_add (builder, "(ts)", (guint64) i * G_GUINT64_CONSTANT (0x100000001), text);
    }
  g_ptr_array_add (values, g_variant_ref_sink (g_variant_new_string ("odd")));
  g_ptr_array_add (values, g_variant_ref_sink (g_variant_new_string (big)));
  g_ptr_array_add (values, g_variant_ref_sink (g_variant_builder_end (builder)));
  g_ptr_array_add (values, g_variant_ref_sink (g_variant_new_uint64 (G_GUINT64_CONSTANT (0x0102030405060708))));
  assert_round_trip (values, FALSE, FALSE);
  assert_round_trip (values, TRUE, FALSE);
  assert_round_trip (values, FALSE, TRUE);
  values_free (values);
}

/* The text a `gdbus emit` user would type (docs/wire.md) decodes as documented. */
static void
test_round_trip_gdbus_emit_text (void)
{
  g_autoptr(GVariant) name = parse ("'" NAME "'");
  g_autoptr(GVariant) posts = parse ("[('s', b'hello'), ('u', [byte 0x2a, 0, 0, 0]), "
                                     "('', @ay []), ('(sb)', [byte 0x6f, 0x6e, 0, 1, 3])]");
  g_autoptr(GVariant) on = parse ("('on', true)");
  GVariant *children[] = { name, posts };
  g_autoptr(GVariant) body = g_variant_ref_sink (g_variant_new_tuple (children, 2));
  g_autoptr(GVariant) received = through_dbus (body, NULL);
  g_autoptr(GArray) calls = decode (received, NAME);

  g_assert_cmpuint (calls->len, ==, 4);
  g_assert_cmpstr (g_variant_get_string (CALL (calls, 0)->data, NULL), ==, "hello");
  g_assert_cmpuint (g_variant_get_uint32 (CALL (calls, 1)->data), ==, 42);
  g_assert_null (CALL (calls, 2)->data);
  g_assert_no_error (CALL (calls, 2)->error);
  g_assert_no_error (CALL (calls, 3)->error);
  g_assert_true (g_variant_equal (CALL (calls, 3)->data, on));
}

/* ------------------------------------------------------------------------------------ */
/* Sizes                                                                                 */

static void
test_size_bounds (void)
{
  const char *names[] = { "", "x", NAME, "Grüße" };
  const char *texts[] = { "@mi nothing", "byte 1", "uint64 1", "'abc'", "[<(1, 'x')>]",
                          "@as []" };

  /* Every count of items from 1 to 9, every name length: the bound holds for the GVariant
   * body and for the D-Bus body alike. */
  for (guint n = 0; n < G_N_ELEMENTS (names); n++)
    for (guint count = 1; count < 10; count++)
      {
        g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func ((GDestroyNotify) g_variant_unref);
        g_autoptr(GVariant) body = NULL;
        g_autoptr(GVariant) received = NULL;
        gsize bound = mp_wire_body_base_size (names[n]);
        gsize body_length;

        for (guint i = 0; i < count; i++)
          {
            g_autoptr(GVariant) value = parse (texts[(i + n) % G_N_ELEMENTS (texts)]);
            GVariant *item = (i % 4 == 3) ? encode_ok (NULL) : encode_ok (value);

            bound += mp_wire_item_size (item);
            g_ptr_array_add (items, item);
          }
        body = body_of (names[n], items);
        received = through_dbus (body, &body_length);
        g_assert_cmpuint (g_variant_get_size (body), <=, bound);
        g_assert_cmpuint (body_length, <=, bound);
      }
}

/* With a name of MP_WIRE_MAX_NAME bytes, a post at both caps (payload and type string)
 * still fits a body. */
static void
test_size_max_name_fits (void)
{
  g_autofree char *name = g_strnfill (MP_WIRE_MAX_NAME, 'n');
  g_autofree char *type_string = g_strnfill (MP_WIRE_MAX_TYPE_STRING, 'y');
  guint8 *block = g_malloc0 (MP_WIRE_MAX_PAYLOAD);
  g_autoptr(GVariant) item = NULL;
  g_autoptr(GVariant) body = NULL;
  gsize bound;

  type_string[0] = '(';
  type_string[MP_WIRE_MAX_TYPE_STRING - 1] = ')';
  item = raw_item (type_string, block, MP_WIRE_MAX_PAYLOAD);
  g_free (block);

  bound = mp_wire_body_base_size (name) + mp_wire_item_size (item);
  g_assert_cmpuint (bound, <=, MP_WIRE_MAX_BODY);
  body = mp_wire_build_body (name, &item, 1);
  g_assert_cmpuint (g_variant_get_size (body), <=, bound);
}

/* ------------------------------------------------------------------------------------ */
/* Decoding what a hostile or broken sender sends                                        */

static void
assert_one_error (GVariant   *body,
                  const char *name)
{
  g_autoptr(GArray) calls = decode (body, name);

  g_assert_cmpuint (calls->len, ==, 1);
  g_assert_null (CALL (calls, 0)->data);
  g_assert_error (CALL (calls, 0)->error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
}

static void
test_decode_wrong_signature (void)
{
  const char *bodies[] = {
    "('" NAME "', [('s', <'x'>)])",
    "('" NAME "', 's', b'x')",
    "'" NAME "'",
    "('" NAME "', [('s', b'x')], 'extra')",
    "('" NAME "', [('s', b'x', b'')])",
    "('" NAME "', ('s', b'x'))",
    "()",
    "[('s', b'x')]",
    "(objectpath '/x', [('s', b'x')])",
  };

  for (guint i = 0; i < G_N_ELEMENTS (bodies); i++)
    {
      g_autoptr(GVariant) body = parse (bodies[i]);

      assert_one_error (body, NAME);
    }
}

static void
test_decode_wrong_name (void)
{
  g_autoptr(GVariant) good = g_variant_ref_sink (g_variant_new_string ("x"));
  g_autoptr(GVariant) item = encode_ok (good);
  const char *pairs[][2] = {
    { "chat", "chat2" }, { "chat2", "chat" }, { "", "x" }, { "x", "" }, { "Chat", "chat" },
    { "it's", "its" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (pairs); i++)
    {
      g_autoptr(GVariant) body = mp_wire_build_body (pairs[i][0], &item, 1);
      g_autoptr(GArray) calls = decode (body, pairs[i][0]);

      g_assert_cmpuint (calls->len, ==, 1);
      g_assert_nonnull (CALL (calls, 0)->data);
      assert_one_error (body, pairs[i][1]);
    }
}

static void
test_decode_no_posts (void)
{
  g_autoptr(GVariant) body = parse ("('" NAME "', @a(say) [])");
  g_autoptr(GArray) calls = decode (body, NAME);

  g_assert_cmpuint (calls->len, ==, 0);
}

/* One body of good posts and bad ones: an error for each bad one, the good ones delivered,
 * all in order. */
static void
test_decode_bad_posts (void)
{
  g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func ((GDestroyNotify) g_variant_unref);
  g_autoptr(GPtrArray) expected = g_ptr_array_new ();   /* a value's text, or NULL: an error */
  g_autoptr(GVariant) body = NULL;
  g_autoptr(GVariant) received = NULL;
  g_autofree char *long_type = NULL;
  g_autofree guint8 *over_cap = NULL;
  guint null_index;
  static const guint8 u32[] = { 1, 0, 0, 0 };
  static const guint8 bool2[] = { 2 };
  static const guint8 no_nul[] = { 'a', 'b', 'c' };
  static const guint8 inner_nul[] = { 'a', 0, 'c', 0 };
  static const guint8 bad_utf8[] = { 0xff, 0xfe, 0 };
  static const guint8 truncated_su[] = { 'h', 'i', 0, 0, 1, 0 };           /* (su) cut */
  static const guint8 padding[] = { 7, 1, 0, 0, 1, 0, 0, 0 };             /* (yu), pad 1 */
  static const guint8 as_bad_offset[] = { 'a', 0, 'b', 0, 9, 4 };         /* as, offset past */
  static const guint8 ms_nothing_bytes[] = { 0 };                          /* ms: "" is 2 */
  static const guint8 bad_path[] = { 'x', 0 };                             /* o: not a path */
  static const guint8 bad_sig[] = { '*', 0 };                              /* g: not definite */
  static const guint8 bad_variant[] = { 1, 0, '*' };                        /* v of type * */
  static const guint8 handle[] = { 3, 0, 0, 0 };
  static const guint8 stray[] = { 1 };

#define GOOD(text) \
  G_STMT_START { \
    g_autoptr(GVariant) value_ = parse (text); \
    g_ptr_array_add (items, encode_ok (value_)); \
    g_ptr_array_add (expected, (gpointer) (text)); \
  } G_STMT_END
#define BAD(type, data, size) \
  G_STMT_START { \
    g_ptr_array_add (items, raw_item ((type), (data), (size))); \
    g_ptr_array_add (expected, NULL); \
  } G_STMT_END

  long_type = g_strnfill (MP_WIRE_MAX_TYPE_STRING + 1, 'y');
  long_type[0] = '(';
  long_type[MP_WIRE_MAX_TYPE_STRING] = ')';
  g_assert_true (g_variant_type_string_is_valid (long_type));
  over_cap = g_malloc0 (MP_WIRE_MAX_PAYLOAD + 1);

  GOOD ("'first'");
  BAD ("(", u32, sizeof u32);                  /* invalid type string */
  GOOD ("uint32 1");
  BAD ("*", u32, sizeof u32);                  /* indefinite */
  BAD ("?", u32, sizeof u32);
  BAD ("r", u32, sizeof u32);
  BAD ("a*", u32, sizeof u32);
  BAD ("m?", u32, sizeof u32);
  BAD ("{?s}", u32, sizeof u32);
  GOOD ("@mi nothing");
  BAD ("uu", u32, sizeof u32);                 /* two types: not one type string */
  BAD ("z", u32, sizeof u32);
  BAD (long_type, u32, sizeof u32);            /* over 255 bytes */
  BAD ("s", no_nul, sizeof no_nul);            /* not normal form */
  BAD ("s", inner_nul, sizeof inner_nul);
  BAD ("s", bad_utf8, sizeof bad_utf8);
  BAD ("s", NULL, 0);
  BAD ("b", bool2, sizeof bool2);
  BAD ("u", u32, 3);                           /* wrong size for fixed-size data */
  BAD ("u", padding, sizeof padding);
  BAD ("y", NULL, 0);
  BAD ("(su)", truncated_su, sizeof truncated_su);   /* truncated */
  BAD ("(yu)", padding, sizeof padding);       /* non-zero padding */
  BAD ("as", as_bad_offset, sizeof as_bad_offset);
  BAD ("ms", ms_nothing_bytes, sizeof ms_nothing_bytes);
  BAD ("o", bad_path, sizeof bad_path);
  BAD ("g", bad_sig, sizeof bad_sig);
  BAD ("v", bad_variant, sizeof bad_variant);
  BAD ("", stray, sizeof stray);               /* no type, but bytes */
  BAD ("h", handle, sizeof handle);            /* a handle */
  BAD ("(sh)", truncated_su, sizeof truncated_su);
  BAD ("ay", over_cap, MP_WIRE_MAX_PAYLOAD + 1);   /* over the cap */
  GOOD ("[<'still'>, <'here'>]");
  null_index = items->len;
  g_ptr_array_add (items, encode_ok (NULL));   /* a NULL post is no error */
  g_ptr_array_add (expected, (gpointer) "NULL");
  GOOD ("'last'");

#undef GOOD
#undef BAD

  body = body_of (NAME, items);
  /* As GDBus would hand it over, and as one untrusted block. */
  received = through_dbus (body, NULL);

  for (guint round = 0; round < 3; round++)
    {
      g_autoptr(GArray) calls = NULL;
      g_autoptr(GVariant) serialized = NULL;
      GVariant *input = body;

      if (round == 1)
        input = received;
      if (round == 2)
        {
          g_autoptr(GBytes) bytes = g_variant_get_data_as_bytes (body);

          serialized = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (MP_WIRE_BODY_TYPE),
                                                                     bytes, FALSE));
          input = serialized;
        }

      calls = decode (input, NAME);
      g_assert_cmpuint (calls->len, ==, expected->len);
      for (guint i = 0; i < expected->len; i++)
        {
          const char *text = g_ptr_array_index (expected, i);
          WireCall *call = CALL (calls, i);

          if (text == NULL)
            {
              if (call->error == NULL)
                g_error ("post %u: expected an error, got %s", i,
                         call->data != NULL ? g_variant_print (call->data, TRUE) : "NULL");
              g_assert_null (call->data);
              if (round == 0)
                g_test_message ("post %u: %s", i, call->error->message);
            }
          else if (i == null_index)
            {
              g_assert_no_error (call->error);
              g_assert_null (call->data);
            }
          else
            {
              g_autoptr(GVariant) value = parse (text);

              g_assert_no_error (call->error);
              g_assert_true (g_variant_equal (call->data, value));
            }
        }
    }
}

/* Small posts of a serialized body get memory of their own: a kept one does not keep a
 * large neighbour alive. A post that is most of the body shares it. */
static void
test_decode_no_retention (void)
{
  g_autofree char *big_text = g_strnfill (64 * 1024, 'B');
  g_autoptr(GVariant) small = g_variant_ref_sink (g_variant_new_string ("small"));
  g_autoptr(GVariant) big = g_variant_ref_sink (g_variant_new_string (big_text));
  GVariant *items[2];
  g_autoptr(GVariant) tree_body = NULL;
  g_autoptr(GVariant) body = NULL;
  g_autoptr(GBytes) bytes = NULL;
  g_autoptr(GArray) calls = NULL;
  const guint8 *start;
  gsize size;

  items[0] = encode_ok (small);
  items[1] = encode_ok (big);
  tree_body = mp_wire_build_body (NAME, items, 2);
  g_variant_unref (items[0]);
  g_variant_unref (items[1]);
  bytes = g_variant_get_data_as_bytes (tree_body);
  body = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (MP_WIRE_BODY_TYPE), bytes,
                                                       FALSE));
  start = g_bytes_get_data (bytes, &size);

  calls = decode (body, NAME);
  g_assert_cmpuint (calls->len, ==, 2);
  {
    const guint8 *small_data = g_variant_get_data (CALL (calls, 0)->data);
    const guint8 *big_data = g_variant_get_data (CALL (calls, 1)->data);

    g_assert_false (small_data >= start && small_data < start + size);
    g_assert_true (big_data >= start && big_data < start + size);
  }
}

/* Garbage bytes as a body never crash and give at most one call per post. */
static void
test_decode_garbage (void)
{
  GRand *rand = g_rand_new_with_seed (16);

  for (guint i = 0; i < 2000; i++)
    {
      gsize size = g_rand_int_range (rand, 0, 64);
      g_autofree guint8 *data = g_malloc (size + 1);
      g_autoptr(GBytes) bytes = NULL;
      g_autoptr(GVariant) body = NULL;
      g_autoptr(GArray) calls = NULL;

      for (gsize j = 0; j < size; j++)
        data[j] = g_rand_int_range (rand, 0, 8) == 0 ? 0 : g_rand_int_range (rand, 0, 256);
      /* Start from the name most of the time, so that the posts are reached. */
      if (size > 5 && g_rand_boolean (rand))
        memcpy (data, "chat\0", 5);
      bytes = g_bytes_new_take (g_steal_pointer (&data), size);
      body = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (MP_WIRE_BODY_TYPE),
                                                           bytes, FALSE));
      calls = decode (body, "chat");
      g_assert_cmpuint (calls->len, <=, MAX (1, size));
    }
  g_rand_free (rand);
}

/* A Post body written by mp_stream_encode_post() is byte for byte what GVariant makes of
 * the same columns: bursts of 1 to 300 posts, type tables of 1 to 40 strings (long ones
 * make the strings' framing offsets two bytes wide), payloads of 0 bytes to 80 KiB (the
 * tuple's offsets one, two and four bytes wide), with and without transfers. */
static void
test_encode_post (void)
{
  static const guint sizes[] = { 1, 2, 5, 40, 300 };
  static const gsize payload_sizes[] = { 0, 3, 200, 4000, 80000 };

  for (guint s = 0; s < G_N_ELEMENTS (sizes); s++)
    for (guint p = 0; p < G_N_ELEMENTS (payload_sizes); p++)
      for (guint with_transfers = 0; with_transfers < 2; with_transfers++)
        {
          guint n = sizes[s];
          guint n_table = 1 + (n + p) % 40;
          g_autofree guint64 *ports = g_new (guint64, n);
          g_autofree guint32 *types = g_new (guint32, n);
          g_autofree guint32 *ends = g_new (guint32, n);
          g_autofree guint32 *counts = g_new0 (guint32, n);
          g_autofree guint8 *payloads = g_malloc (payload_sizes[p] + 1);
          g_autoptr(GPtrArray) table = g_ptr_array_new_with_free_func (g_free);
          g_autoptr(GArray) transfers = g_array_new (FALSE, FALSE, sizeof (guint64));
          g_autoptr(GVariant) expected = NULL;
          g_autoptr(GBytes) got = NULL;

          for (guint t = 0; t < n_table; t++)
            g_ptr_array_add (table, g_strnfill ((t * 37 + p * 11) % (t % 3 == 0 ? 200 : 9), 'a' + t % 26));
          g_ptr_array_add (table, NULL);
          for (gsize i = 0; i < payload_sizes[p]; i++)
            payloads[i] = (guint8) g_test_rand_int ();
          for (guint i = 0; i < n; i++)
            {
              ports[i] = g_test_rand_int () % 3 == 0 ? G_GUINT64_CONSTANT (0x123456789abc) + i : i;
              types[i] = i % n_table;
              ends[i] = (guint32) (payload_sizes[p] * (i + 1) / n);
              if (with_transfers && i % 3 == 1)
                {
                  counts[i] = 1 + i % 4;
                  for (guint k = 0; k < counts[i]; k++)
                    {
                      guint64 id = 2 * (transfers->len + 1);

                      g_array_append_val (transfers, id);
                    }
                }
            }

          expected = g_variant_ref_sink (g_variant_new ("(@at@au^as@au@ay@au@at)",
                                                        g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, ports, n, 8),
                                                        g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32, types, n, 4),
                                                        (const char *const *) table->pdata,
                                                        g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32, ends, n, 4),
                                                        g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, payloads, payload_sizes[p], 1),
                                                        g_variant_new_fixed_array (G_VARIANT_TYPE_UINT32, counts, n, 4),
                                                        g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, transfers->data, transfers->len, 8)));
          got = mp_stream_encode_post (n, ports, types, (const char *const *) table->pdata, n_table,
                                       ends, payloads, payload_sizes[p], counts,
                                       (const guint64 *) (gpointer) transfers->data, transfers->len);
#if G_BYTE_ORDER == G_BIG_ENDIAN
          {
            GVariant *swapped = g_variant_take_ref (g_variant_byteswap (expected));

            g_variant_unref (expected);
            expected = swapped;
          }
#endif
          g_assert_cmpmem (g_bytes_get_data (got, NULL), g_bytes_get_size (got),
                           g_variant_get_data (expected), g_variant_get_size (expected));
        }
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/mpport/wire/path/known-digests", test_path_known_digests);
  g_test_add_func ("/mpport/wire/path/any-name", test_path_any_name);
  g_test_add_func ("/mpport/wire/encode/exact-bytes", test_encode_exact_bytes);
  g_test_add_func ("/mpport/wire/encode/null", test_encode_null);
  g_test_add_func ("/mpport/wire/encode/floating-untouched", test_encode_floating);
  g_test_add_func ("/mpport/wire/encode/normal-form", test_encode_normalizes);
  g_test_add_func ("/mpport/wire/encode/payload-cap", test_encode_payload_cap);
  g_test_add_func ("/mpport/wire/encode/handles-refused", test_encode_handles);
  g_test_add_func ("/mpport/wire/encode/type-string-cap", test_encode_type_string_cap);
  g_test_add_func ("/mpport/wire/encode/depth", test_encode_depth);
  g_test_add_func ("/mpport/wire/round-trip/types", test_round_trip_types);
  g_test_add_func ("/mpport/wire/round-trip/null", test_round_trip_null);
  g_test_add_func ("/mpport/wire/round-trip/large", test_round_trip_large);
  g_test_add_func ("/mpport/wire/round-trip/gdbus-emit-text", test_round_trip_gdbus_emit_text);
  g_test_add_func ("/mpport/wire/size/bounds", test_size_bounds);
  g_test_add_func ("/mpport/wire/size/max-name-fits", test_size_max_name_fits);
  g_test_add_func ("/mpport/wire/decode/wrong-signature", test_decode_wrong_signature);
  g_test_add_func ("/mpport/wire/decode/wrong-name", test_decode_wrong_name);
  g_test_add_func ("/mpport/wire/decode/no-posts", test_decode_no_posts);
  g_test_add_func ("/mpport/wire/decode/bad-posts-in-order", test_decode_bad_posts);
  g_test_add_func ("/mpport/wire/decode/no-retention", test_decode_no_retention);
  g_test_add_func ("/mpport/wire/decode/garbage", test_decode_garbage);
  g_test_add_func ("/mpport/wire/encode-post", test_encode_post);

  return g_test_run ();
}
