/* mp-wire-private.h: the wire codec of bus channel posts (docs/wire.md)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* Version 1 of the format lives in the interface name; an incompatible format gets
 * BroadcastChannel2, next to this one. docs/wire.md is the description for other
 * implementations: keep the two in step. */
#define MP_WIRE_INTERFACE   "org.gnome.Mpport.BroadcastChannel1"
#define MP_WIRE_MEMBER      "Message"
/* Followed by the 64 lowercase hex digits of the SHA-256 of the channel name. */
#define MP_WIRE_PATH_PREFIX "/org/gnome/Mpport/BroadcastChannel1/"
/* (channel name, [(payload type string, payload bytes), ...]) */
#define MP_WIRE_BODY_TYPE   "(sa(say))"
#define MP_WIRE_ITEM_TYPE   "(say)"

/* The serialized payload of one post, in bytes. */
#define MP_WIRE_MAX_PAYLOAD (8 * 1024 * 1024)
/* A whole body, as counted by mp_wire_body_base_size() + mp_wire_item_size(): half of
 * dbus-daemon's built-in max_message_size (32 MiB), over which the bus disconnects the
 * sender. A sender splits a burst to stay under it. */
#define MP_WIRE_MAX_BODY    (16 * 1024 * 1024)
/* A payload's type string, in bytes. */
#define MP_WIRE_MAX_TYPE_STRING 255
/* A channel name that travels on the bus, in bytes: with it, a body holding any single
 * post stays under MP_WIRE_MAX_BODY. */
#define MP_WIRE_MAX_NAME    (4 * 1024 * 1024)

/* Everything here is pure: callable from any thread, on values no other thread mutates
 * (GVariants are immutable). Nothing touches a connection or a main context. */

/* The object path of the channel @name (any string: it is hashed, never pasted), newly
 * allocated (g_free()). Any thread. */
char     *mp_wire_path_for_name   (const char *name) G_GNUC_WARN_UNUSED_RESULT;

/* One post as a non-floating "(say)" item: @data's type string and its serialized bytes in
 * normal form, little-endian; "" and no bytes for a %NULL @data. @data is not consumed (a
 * floating one stays floating). %NULL with %MP_ERROR_DATA_CLONE and a translated message if
 * the post cannot travel: its serialized size is over MP_WIRE_MAX_PAYLOAD, its type string
 * is longer than MP_WIRE_MAX_TYPE_STRING or holds a handle ('h'), or it is nested too
 * deeply for a receiver to accept it as normal form. Any thread. */
GVariant *mp_wire_encode_item     (GVariant  *data,
                                   GError   **error) G_GNUC_WARN_UNUSED_RESULT;

/* The same checks, for a non-%NULL @data: its normal form, little-endian (a new reference,
 * non-floating), whose g_variant_get_data() is what travels; %NULL with MP_ERROR_DATA_CLONE.
 * Any thread. */
GVariant *mp_wire_encode_payload  (GVariant  *data,
                                   GError   **error) G_GNUC_WARN_UNUSED_RESULT;

/* An upper bound of the bytes @item (from mp_wire_encode_item()) adds to a body, in D-Bus
 * marshalling and in GVariant serialization alike. Any thread. */
gsize     mp_wire_item_size       (GVariant   *item);

/* An upper bound of the bytes a body for @name takes besides its items. A body of @name and
 * items i1..in needs at most mp_wire_body_base_size (name) + the sum of their
 * mp_wire_item_size(); for a name of at most MP_WIRE_MAX_NAME bytes, that is under
 * MP_WIRE_MAX_BODY with any one item. Any thread. */
gsize     mp_wire_body_base_size  (const char *name);

/* The non-floating MP_WIRE_BODY_TYPE body of @n_items (at least one) @items, in the order
 * given, for the channel @name (valid UTF-8, as every D-Bus string). The items are not
 * consumed. Staying under MP_WIRE_MAX_BODY is the caller's business. Any thread. */
GVariant *mp_wire_build_body      (const char      *name,
                                   GVariant *const *items,
                                   guint            n_items) G_GNUC_WARN_UNUSED_RESULT;

/* Called once per post of a body, in order, with exactly one of @data and @error set, or
 * neither for a %NULL post. Both are transfer full: @data a non-floating, trusted GVariant in
 * normal form and host byte order, @error a G_IO_ERROR_INVALID_DATA with a translated
 * message. */
typedef void (*MpWireVisitFunc) (GVariant *data,
                                 GError   *error,
                                 gpointer  user_data);

/* The post carried by @item, an untrusted MP_WIRE_ITEM_TYPE value taken from a body of
 * @body_size bytes (used to decide whether the post may share the body's memory, or is
 * copied out of it): its data (transfer full, trusted, normal form, host byte order; NULL
 * for a NULL post), or NULL and @error (G_IO_ERROR_INVALID_DATA, translated). Any thread. */
GVariant *mp_wire_decode_item     (GVariant        *item,
                                   gsize            body_size,
                                   GError         **error) G_GNUC_WARN_UNUSED_RESULT;

/* Checks an untrusted, non-empty payload type string of @type_length bytes (and no NUL
 * within): at most MP_WIRE_MAX_TYPE_STRING bytes, valid, definite, no handle. FALSE with
 * G_IO_ERROR_INVALID_DATA otherwise. Any thread. */
gboolean  mp_wire_check_type_string (const char *type_string,
                                     gsize       type_length,
                                     GError    **error);

/* The post of type @type_string (checked by mp_wire_check_type_string()) whose untrusted
 * serialized bytes are @bytes: as mp_wire_decode_item() gives it, or NULL and @error (over
 * MP_WIRE_MAX_PAYLOAD bytes, or not in normal form). Any thread. */
GVariant *mp_wire_load_payload    (const char  *type_string,
                                   GBytes      *bytes,
                                   GError     **error) G_GNUC_WARN_UNUSED_RESULT;

/* The same, for a post given as its two parts: @type_variant ("s") and @bytes_variant
 * ("ay"), untrusted values taken from a body of @body_size bytes. Any thread. */
GVariant *mp_wire_decode_payload  (GVariant        *type_variant,
                                   GVariant        *bytes_variant,
                                   gsize            body_size,
                                   GError         **error) G_GNUC_WARN_UNUSED_RESULT;

/* Checks the untrusted @body of a Message signal received on @name's path, and calls @func
 * for each post it carries, in order: with the data of each valid one, with an error for
 * each invalid one (the others are still delivered). A body that is not of type
 * MP_WIRE_BODY_TYPE or names another channel than @name gives one call with an error and
 * nothing else; a body with no posts gives no call. @func runs on the calling thread, before
 * this returns. Any thread. */
void      mp_wire_decode_body     (GVariant        *body,
                                   const char      *name,
                                   MpWireVisitFunc  func,
                                   gpointer         user_data);

G_END_DECLS
