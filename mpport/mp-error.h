/* mp-error.h: the MP_ERROR domain
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#if !defined(MPPORT_INSIDE) && !defined(MPPORT_COMPILATION)
# error "Only <mpport/mpport.h> can be included directly."
#endif

#include <glib.h>

#include "mp-version-macros.h"

G_BEGIN_DECLS

/**
 * MP_ERROR:
 *
 * The error domain of mpport; errors in it carry an [enum@Mp.Error] code.
 *
 * Since: 1.0
 */
#define MP_ERROR (mp_error_quark ())

/**
 * MpError:
 * @MP_ERROR_DATA_CLONE: a message could not be posted because its transfer
 *   list holds something that cannot be transferred: %NULL, a non-port, the
 *   posting port itself, its entangled peer, a duplicate, or a port that is
 *   closed or was transferred away. Nothing was posted and every listed port
 *   is unchanged.
 * @MP_ERROR_INVALID_STATE: misuse: the object cannot do this in its current
 *   state because of what its own code did, for example posting on a port that
 *   it closed itself or that was transferred away.
 * @MP_ERROR_CLOSED: the channel was closed, and nothing more will arrive: the
 *   end of the stream for a receive that was waiting (or started after the
 *   other port closed), not a mistake of the program. Since: 1.0
 *
 * Error codes of the %MP_ERROR domain.
 *
 * Since: 1.0
 */
typedef enum {
  MP_ERROR_DATA_CLONE,
  MP_ERROR_INVALID_STATE,
  MP_ERROR_CLOSED,
} MpError;

MP_AVAILABLE_IN_ALL
GQuark mp_error_quark (void) G_GNUC_CONST;

G_END_DECLS
