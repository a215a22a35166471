/* mp-runtime-version.h: the version of the mpport library in use at run time
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The numbers of the headers a program was compiled against are the macros of
 * mp-version.h; these functions give those of the library it runs with. (They
 * are not declared in mp-version.h because mp-version-macros.h, which they need
 * for MP_AVAILABLE_IN_1_0, itself includes mp-version.h.)
 */

#pragma once

#if !defined(MPPORT_INSIDE) && !defined(MPPORT_COMPILATION)
# error "Only <mpport/mpport.h> can be included directly."
#endif

#include <glib.h>

#include "mp-version-macros.h"

G_BEGIN_DECLS

MP_AVAILABLE_IN_1_0
guint mp_get_major_version (void);
MP_AVAILABLE_IN_1_0
guint mp_get_minor_version (void);
MP_AVAILABLE_IN_1_0
guint mp_get_micro_version (void);

G_END_DECLS
