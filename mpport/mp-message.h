/* mp-message.h: one delivered message
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#if !defined(MPPORT_INSIDE) && !defined(MPPORT_COMPILATION)
# error "Only <mpport/mpport.h> can be included directly."
#endif

#include <glib-object.h>

#include "mp-version-macros.h"

G_BEGIN_DECLS

#define MP_TYPE_MESSAGE (mp_message_get_type ())

typedef struct _MpMessage MpMessage;
typedef struct _MpMessagePort MpMessagePort;

MP_AVAILABLE_IN_ALL
GType      mp_message_get_type  (void) G_GNUC_CONST;
MP_AVAILABLE_IN_ALL
MpMessage *mp_message_new       (GVariant             *data,
                                 MpMessagePort *const *ports,
                                 guint                 n_ports) G_GNUC_WARN_UNUSED_RESULT;
MP_AVAILABLE_IN_ALL
MpMessage *mp_message_ref       (MpMessage *self);
MP_AVAILABLE_IN_ALL
void       mp_message_unref     (MpMessage *self);
MP_AVAILABLE_IN_ALL
GVariant  *mp_message_get_data  (MpMessage *self);
MP_AVAILABLE_IN_ALL
GPtrArray *mp_message_get_ports (MpMessage *self);
MP_AVAILABLE_IN_ALL
const char *mp_message_get_sender (MpMessage *self);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MpMessage, mp_message_unref)

G_END_DECLS
