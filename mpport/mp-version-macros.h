/* mp-version-macros.h: symbol export and availability macros
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#if !defined(MPPORT_INSIDE) && !defined(MPPORT_COMPILATION)
# error "Only <mpport/mpport.h> can be included directly."
#endif

#include <glib.h>

#include "mp-version.h"

#ifndef _MP_EXTERN
# define _MP_EXTERN extern
#endif

#define MP_VERSION_1_0 (G_ENCODE_VERSION (1, 0))

#ifndef MP_VERSION_MIN_REQUIRED
# define MP_VERSION_MIN_REQUIRED MP_VERSION_1_0
#endif

#ifndef MP_VERSION_MAX_ALLOWED
# define MP_VERSION_MAX_ALLOWED MP_VERSION_1_0
#endif

#ifdef MP_DISABLE_DEPRECATION_WARNINGS
# define MP_DEPRECATED _MP_EXTERN
# define MP_DEPRECATED_FOR(f) _MP_EXTERN
# define MP_UNAVAILABLE(maj,min) _MP_EXTERN
#else
# define MP_DEPRECATED G_DEPRECATED _MP_EXTERN
# define MP_DEPRECATED_FOR(f) G_DEPRECATED_FOR(f) _MP_EXTERN
# define MP_UNAVAILABLE(maj,min) G_UNAVAILABLE(maj,min) _MP_EXTERN
#endif

/* Every symbol of the first stable API. */
#define MP_AVAILABLE_IN_ALL _MP_EXTERN

#if MP_VERSION_MAX_ALLOWED < MP_VERSION_1_0
# define MP_AVAILABLE_IN_1_0 MP_UNAVAILABLE(1, 0)
#else
# define MP_AVAILABLE_IN_1_0 _MP_EXTERN
#endif
