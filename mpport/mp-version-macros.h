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

/**
 * MP_VERSION_1_0:
 *
 * The version number of mpport 1.0, encoded with G_ENCODE_VERSION(), for
 * %MP_VERSION_MIN_REQUIRED and %MP_VERSION_MAX_ALLOWED.
 *
 * Since: 1.0
 */
#define MP_VERSION_1_0 (G_ENCODE_VERSION (1, 0))

/**
 * MP_VERSION_MIN_REQUIRED:
 *
 * Define it, before including `<mpport/mpport.h>`, to the oldest mpport version
 * (such as %MP_VERSION_1_0) the code must build against; API deprecated in later
 * versions then emits no deprecation warning. Defaults to %MP_VERSION_1_0.
 *
 * Since: 1.0
 */
#ifndef MP_VERSION_MIN_REQUIRED
# define MP_VERSION_MIN_REQUIRED MP_VERSION_1_0
#endif

/**
 * MP_VERSION_MAX_ALLOWED:
 *
 * Define it, before including `<mpport/mpport.h>`, to the newest mpport version
 * whose API the code may use; API added later is then a compile-time warning.
 * Defaults to %MP_VERSION_1_0.
 *
 * Since: 1.0
 */
#ifndef MP_VERSION_MAX_ALLOWED
# define MP_VERSION_MAX_ALLOWED MP_VERSION_1_0
#endif

/**
 * MP_DEPRECATED:
 *
 * Marks a declaration as deprecated, and exports it. Define
 * `MP_DISABLE_DEPRECATION_WARNINGS` to silence the warnings.
 *
 * Since: 1.0
 */

/**
 * MP_DEPRECATED_FOR:
 * @f: the replacement of the deprecated symbol
 *
 * Marks a declaration as deprecated in favour of @f, and exports it. Define
 * `MP_DISABLE_DEPRECATION_WARNINGS` to silence the warnings.
 *
 * Since: 1.0
 */

/**
 * MP_UNAVAILABLE:
 * @maj: the major version that added the symbol
 * @min: the minor version that added the symbol
 *
 * Marks a declaration as added in mpport @maj.@min, and exports it: using it
 * warns when %MP_VERSION_MAX_ALLOWED is older.
 *
 * Since: 1.0
 */
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
/**
 * MP_AVAILABLE_IN_ALL:
 *
 * Exports a declaration that is part of every mpport version.
 *
 * Since: 1.0
 */
#define MP_AVAILABLE_IN_ALL _MP_EXTERN

/**
 * MP_AVAILABLE_IN_1_0:
 *
 * Exports a declaration added in mpport 1.0.
 *
 * Since: 1.0
 */

#if MP_VERSION_MAX_ALLOWED < MP_VERSION_1_0
# define MP_AVAILABLE_IN_1_0 MP_UNAVAILABLE(1, 0)
#else
# define MP_AVAILABLE_IN_1_0 _MP_EXTERN
#endif
