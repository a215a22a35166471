/* mp-wire.c: the wire codec of bus channel posts (docs/wire.md)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A post crosses a process boundary as a (type string, serialized bytes) pair: D-Bus has no
 * maybe type, so a bare "v" could not carry every GVariant. Several posts of one sender
 * travel in one body, in order. Encoding works on trusted values of this process; decoding
 * works on whatever another process (or anyone on the bus) sent, so every check the format
 * makes happens here, before a value leaves this file. The receiver accepts exactly what the
 * sender produces: a value is refused at encode if a receiver would refuse it.
 */

#include "config.h"

#include <string.h>

#include "mp-error.h"
#include "mp-i18n-private.h"
#include "mp-wire-private.h"

/* What one item adds to a body besides its type string (with its NUL) and its bytes: in
 * D-Bus marshalling at most 7 bytes to align the struct to 8, the string's 4-byte length, at
 * most 3 to align the array length and the 4-byte array length (18); in GVariant
 * serialization two framing offsets of at most 8 bytes each (16). */
#define ITEM_OVERHEAD 24
/* What a body adds besides its name (with its NUL) and its items: in D-Bus the string's
 * length, the array's length and their padding (at most 11); in GVariant one framing offset
 * (at most 8). */
#define BODY_OVERHEAD 24

/* A value whose type nests fewer containers than this and holds no variant is always in
 * normal form when it is loaded back: GVariant refuses only 128 levels or more (type strings
 * are valid up to 128). Other values are checked exactly as a receiver checks them. */
#define CHEAP_DEPTH 64

char *
mp_wire_path_for_name (const char *name)
{
  g_autofree char *digest = NULL;

  g_return_val_if_fail (name != NULL, NULL);

  /* The hash keeps any name (quotes, slashes, any length) out of the object path and out of
   * the match rules built from it: GLib pastes rule arguments unescaped. */
  digest = g_compute_checksum_for_string (G_CHECKSUM_SHA256, name, -1);

  return g_strconcat (MP_WIRE_PATH_PREFIX, digest, NULL);
}

static GVariant *
item_new (const char *type_string,
          GBytes     *bytes)
{
  GVariant *payload = g_variant_new_from_bytes (G_VARIANT_TYPE_BYTESTRING, bytes, TRUE);

  return g_variant_ref_sink (g_variant_new ("(s@ay)", type_string, payload));
}

/* How many containers @type_string could nest at most: every a, m, ( and {. */
static guint
count_containers (const char *type_string)
{
  guint n = 0;

  for (const char *p = type_string; *p != '\0'; p++)
    if (*p == 'a' || *p == 'm' || *p == '(' || *p == '{')
      n++;

  return n;
}

/* Whether a receiver loading @bytes as @type would find them in normal form. */
static gboolean
loads_as_normal_form (const GVariantType *type,
                      GBytes             *bytes)
{
  g_autoptr(GVariant) loaded = g_variant_ref_sink (g_variant_new_from_bytes (type, bytes, FALSE));

  return g_variant_is_normal_form (loaded);
}

GVariant *
mp_wire_encode_payload (GVariant  *data,
                        GError   **error)
{
  g_autoptr(GVariant) normal = NULL;
  g_autoptr(GBytes) bytes = NULL;
  const char *type_string;
  gsize size;

  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  g_return_val_if_fail (data != NULL, NULL);

  type_string = g_variant_get_type_string (data);
  if (strlen (type_string) > MP_WIRE_MAX_TYPE_STRING)
    {
      g_set_error (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                   _("The type string of the message is longer than %u bytes, the limit for messages to other processes"),
                   (guint) MP_WIRE_MAX_TYPE_STRING);
      return NULL;
    }
  /* A handle is the index of a file descriptor that travels beside the message; a signal to
   * a whole bus carries none. */
  if (strchr (type_string, 'h') != NULL)
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                           _("The message holds a handle (type “h”), which means nothing in another process without its file descriptor"));
      return NULL;
    }

  /* A trusted value (every value built in this process) is its own normal form; an
   * untrusted one not in normal form is copied into it. The size of a value in tree form is
   * computed without serializing it, so the cap is checked before the work. */
  normal = g_variant_get_normal_form (data);
  size = g_variant_get_size (normal);
  if (size > MP_WIRE_MAX_PAYLOAD)
    {
      g_set_error (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                   _("The message is too large for other processes: its data takes %lu bytes, the limit is %lu"),
                   (unsigned long) size, (unsigned long) MP_WIRE_MAX_PAYLOAD);
      return NULL;
    }

#if G_BYTE_ORDER == G_BIG_ENDIAN
  {
    /* g_variant_byteswap() sinks a floating argument, and @normal is the caller's @data
     * when that was in normal form: swap a value of our own, sharing its bytes. */
    g_autoptr(GBytes) host_order = g_variant_get_data_as_bytes (normal);
    g_autoptr(GVariant) own = g_variant_ref_sink (g_variant_new_from_bytes (g_variant_get_type (normal),
                                                                            host_order, TRUE));
    GVariant *swapped = g_variant_take_ref (g_variant_byteswap (own));

    g_variant_unref (normal);
    normal = swapped;
  }
#endif

  /* Only a type that can nest deeply needs the look (the common, flat ones cost nothing). */
  if ((strchr (type_string, 'v') != NULL || count_containers (type_string) >= CHEAP_DEPTH) &&
      !loads_as_normal_form (g_variant_get_type (normal),
                             (bytes = g_variant_get_data_as_bytes (normal))))
    {
      g_set_error_literal (error, MP_ERROR, MP_ERROR_DATA_CLONE,
                           _("The message is nested too deeply to be sent to another process"));
      return NULL;
    }

  return g_steal_pointer (&normal);
}

GVariant *
mp_wire_encode_item (GVariant  *data,
                     GError   **error)
{
  g_autoptr(GVariant) normal = NULL;
  g_autoptr(GBytes) bytes = NULL;

  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (data == NULL)
    {
      g_autoptr(GBytes) empty = g_bytes_new_static (NULL, 0);

      return item_new ("", empty);
    }

  normal = mp_wire_encode_payload (data, error);
  if (normal == NULL)
    return NULL;
  bytes = g_variant_get_data_as_bytes (normal);

  return item_new (g_variant_get_type_string (normal), bytes);
}

gsize
mp_wire_item_size (GVariant *item)
{
  g_autoptr(GVariant) type_string = NULL;
  g_autoptr(GVariant) bytes = NULL;

  g_return_val_if_fail (item != NULL, 0);
  g_return_val_if_fail (g_variant_is_of_type (item, G_VARIANT_TYPE (MP_WIRE_ITEM_TYPE)), 0);

  type_string = g_variant_get_child_value (item, 0);
  bytes = g_variant_get_child_value (item, 1);

  return g_variant_get_size (type_string) + g_variant_get_size (bytes) + ITEM_OVERHEAD;
}

gsize
mp_wire_body_base_size (const char *name)
{
  g_return_val_if_fail (name != NULL, 0);

  return strlen (name) + 1 + BODY_OVERHEAD;
}

GVariant *
mp_wire_build_body (const char      *name,
                    GVariant *const *items,
                    guint            n_items)
{
  GVariant *array;

  g_return_val_if_fail (name != NULL, NULL);
  g_return_val_if_fail (g_utf8_validate (name, -1, NULL), NULL);
  g_return_val_if_fail (items != NULL && n_items > 0, NULL);

  /* The items are not floating: the array takes references of its own. */
  array = g_variant_new_array (G_VARIANT_TYPE (MP_WIRE_ITEM_TYPE), items, n_items);

  return g_variant_ref_sink (g_variant_new ("(s@a(say))", name, array));
}

GVariant *
mp_wire_decode_item (GVariant  *item,
                     gsize      body_size,
                     GError   **error)
{
  g_autoptr(GVariant) type_variant = g_variant_get_child_value (item, 0);
  g_autoptr(GVariant) bytes_variant = g_variant_get_child_value (item, 1);

  return mp_wire_decode_payload (type_variant, bytes_variant, body_size, error);
}

gboolean
mp_wire_check_type_string (const char  *type_string,
                           gsize        type_length,
                           GError     **error)
{
  /* The length first, so that nothing else looks at a long string. */
  if (type_length > MP_WIRE_MAX_TYPE_STRING)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   _("Message from another process: the type string is longer than %u bytes"),
                   (guint) MP_WIRE_MAX_TYPE_STRING);
      return FALSE;
    }
  if (type_length != strlen (type_string) || !g_variant_type_string_is_valid (type_string))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                           _("Message from another process: invalid type string"));
      return FALSE;
    }
  if (!g_variant_type_is_definite (G_VARIANT_TYPE (type_string)))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   _("Message from another process: the type “%s” is not definite"),
                   type_string);
      return FALSE;
    }
  /* Refused at encode; accepting one here would deliver what this side could not send. */
  if (strchr (type_string, 'h') != NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   _("Message from another process: the type “%s” holds a handle"),
                   type_string);
      return FALSE;
    }

  return TRUE;
}

GVariant *
mp_wire_load_payload (const char  *type_string,
                      GBytes      *bytes,
                      GError     **error)
{
  g_autoptr(GVariant) data = NULL;
  gsize size = g_bytes_get_size (bytes);

  if (size > MP_WIRE_MAX_PAYLOAD)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   _("Message from another process: %lu bytes of data, more than the limit of %lu"),
                   (unsigned long) size, (unsigned long) MP_WIRE_MAX_PAYLOAD);
      return NULL;
    }

  /* A value of a fixed-size basic type is in normal form exactly when it has that size: the
   * common small post is checked here, without GLib's general walk. */
  if (type_string[0] != '\0' && type_string[1] == '\0' && strchr ("bynqiuxtd", type_string[0]) != NULL)
    {
      static const guint8 sizes[] = { ['b'] = 1, ['y'] = 1, ['n'] = 2, ['q'] = 2, ['i'] = 4,
                                      ['u'] = 4, ['x'] = 8, ['t'] = 8, ['d'] = 8 };

      if (size == sizes[(guchar) type_string[0]] &&
          (type_string[0] != 'b' || *(const guint8 *) g_bytes_get_data (bytes, NULL) <= 1))
        {
          data = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (type_string), bytes,
                                                               TRUE));
#if G_BYTE_ORDER == G_BIG_ENDIAN
          {
            GVariant *swapped = g_variant_take_ref (g_variant_byteswap (data));

            g_variant_unref (data);
            data = swapped;
          }
#endif
          return g_steal_pointer (&data);
        }
    }

  /* Untrusted: GLib copies misaligned data, and every accessor copes with data that is not
   * in normal form; the check below turns such data away. It also marks the value trusted. */
  data = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (type_string), bytes, FALSE));
  if (!g_variant_is_normal_form (data))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   _("Message from another process: the data is not in normal form for type “%s”"),
                   type_string);
      return NULL;
    }

#if G_BYTE_ORDER == G_BIG_ENDIAN
  {
    GVariant *swapped = g_variant_take_ref (g_variant_byteswap (data));

    g_variant_unref (data);
    data = swapped;
  }
#endif

  return g_steal_pointer (&data);
}

GVariant *
mp_wire_decode_payload (GVariant  *type_variant,
                        GVariant  *bytes_variant,
                        gsize      body_size,
                        GError   **error)
{
  g_autoptr(GBytes) bytes = NULL;
  const char *type_string;
  gsize type_length;
  gsize size;

  /* GVariant hands out an invalid string of untrusted data as "": still a string. */
  type_string = g_variant_get_string (type_variant, &type_length);
  size = g_variant_get_size (bytes_variant);

  if (type_length == 0)
    {
      if (size != 0)
        {
          g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                               _("Message from another process: data without a type"));
          return NULL;
        }
      return NULL;   /* a NULL post */
    }

  if (!mp_wire_check_type_string (type_string, type_length, error))
    return NULL;
  bytes = g_variant_get_data_as_bytes (bytes_variant);
  /* A post the application keeps keeps alive the memory it points into. A body GDBus
   * parsed gives every item bytes of their own, but a serialized body is one block: share
   * it only with a post that is at least half of it, copy smaller ones. (An oversized one
   * is refused by mp_wire_load_payload() without a copy.) */
  if (size < body_size / 2)
    {
      GBytes *copy = g_bytes_new (g_bytes_get_data (bytes, NULL), size);

      g_bytes_unref (bytes);
      bytes = copy;
    }

  return mp_wire_load_payload (type_string, bytes, error);
}

void
mp_wire_decode_body (GVariant        *body,
                     const char      *name,
                     MpWireVisitFunc  func,
                     gpointer         user_data)
{
  g_autoptr(GVariant) body_name = NULL;
  g_autoptr(GVariant) items = NULL;
  GError *error = NULL;
  const char *sent_name;
  gsize sent_length;
  gsize n_items;
  gsize body_size;

  g_return_if_fail (body != NULL);
  g_return_if_fail (name != NULL);
  g_return_if_fail (func != NULL);

  if (!g_variant_is_of_type (body, G_VARIANT_TYPE (MP_WIRE_BODY_TYPE)))
    {
      g_set_error (&error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   _("Message from another process: the body has type “%s”, not “%s”"),
                   g_variant_get_type_string (body), MP_WIRE_BODY_TYPE);
      func (NULL, g_steal_pointer (&error), user_data);
      return;
    }

  /* The path is a hash of the name: a body on it may still be for another name, by a
   * collision or by a sender's mistake. */
  body_name = g_variant_get_child_value (body, 0);
  sent_name = g_variant_get_string (body_name, &sent_length);
  if (sent_length != strlen (name) || memcmp (sent_name, name, sent_length) != 0)
    {
      g_set_error_literal (&error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                           _("Message from another process: the body is for another channel name"));
      func (NULL, g_steal_pointer (&error), user_data);
      return;
    }

  items = g_variant_get_child_value (body, 1);
  n_items = g_variant_n_children (items);
  body_size = n_items > 0 ? g_variant_get_size (body) : 0;

  for (gsize i = 0; i < n_items; i++)
    {
      g_autoptr(GVariant) item = g_variant_get_child_value (items, i);
      GError *item_error = NULL;
      GVariant *data;

      data = mp_wire_decode_item (item, body_size, &item_error);
      func (data, item_error, user_data);
    }
}
