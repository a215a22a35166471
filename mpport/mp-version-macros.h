/* mp-version-macros.h: symbol export and availability macros
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Modelled on GLib's gversionmacros.h and GTK's gdkversionmacros.h. An
 * application defines MP_VERSION_MIN_REQUIRED and MP_VERSION_MAX_ALLOWED
 * before including <mpport/mpport.h>; every public declaration is marked with
 * one of the MP_AVAILABLE_IN_* or MP_DEPRECATED_IN_* macros below, which turn
 * those two into compiler warnings. docs/versioning.md is the user's guide.
 *
 * This header is installed but not given to g-ir-scanner (mpport/meson.build):
 * the macros are no API of their own and must not become pages of the
 * reference; tests/packaging/check-gir.py keeps them out of Mp-1.gir.
 *
 * Adding mpport X.Y: define MP_VERSION_X_Y, and MP_AVAILABLE_IN_X_Y,
 * MP_DEPRECATED_IN_X_Y and MP_DEPRECATED_IN_X_Y_FOR in the pattern of 1.0.
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
 * MP_VERSION_CUR_STABLE:
 *
 * The major.minor version of the mpport headers in use, encoded with
 * G_ENCODE_VERSION(): the default of %MP_VERSION_MIN_REQUIRED and
 * %MP_VERSION_MAX_ALLOWED.
 *
 * Since: 1.0
 */
#define MP_VERSION_CUR_STABLE (G_ENCODE_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION))

/**
 * MP_VERSION_MIN_REQUIRED:
 *
 * Define it, before including `<mpport/mpport.h>`, to the oldest mpport version
 * (such as %MP_VERSION_1_0) the code must build against. API deprecated in that
 * version or earlier then warns when used; API deprecated later does not, since
 * its replacement may not exist in the oldest version. Defaults to
 * %MP_VERSION_CUR_STABLE. Must be %MP_VERSION_1_0 or later, and no later than
 * %MP_VERSION_CUR_STABLE.
 *
 * Since: 1.0
 */
#ifndef MP_VERSION_MIN_REQUIRED
# define MP_VERSION_MIN_REQUIRED (MP_VERSION_CUR_STABLE)
#endif

/**
 * MP_VERSION_MAX_ALLOWED:
 *
 * Define it, before including `<mpport/mpport.h>`, to the newest mpport version
 * whose API the code may use: using API added later then warns. Defaults to
 * %MP_VERSION_CUR_STABLE. Must not be older than %MP_VERSION_MIN_REQUIRED.
 *
 * Since: 1.0
 */
#ifndef MP_VERSION_MAX_ALLOWED
# define MP_VERSION_MAX_ALLOWED (MP_VERSION_CUR_STABLE)
#endif

/* The same sanity checks as GLib's. */
#if MP_VERSION_MIN_REQUIRED > MP_VERSION_CUR_STABLE
# error "MP_VERSION_MIN_REQUIRED must be <= MP_VERSION_CUR_STABLE"
#endif
#if MP_VERSION_MAX_ALLOWED < MP_VERSION_MIN_REQUIRED
# error "MP_VERSION_MAX_ALLOWED must be >= MP_VERSION_MIN_REQUIRED"
#endif
#if MP_VERSION_MIN_REQUIRED < MP_VERSION_1_0
# error "MP_VERSION_MIN_REQUIRED must be >= MP_VERSION_1_0"
#endif

/**
 * MP_DEPRECATED:
 *
 * Marks a declaration as deprecated, and exports it. Define
 * `MP_DISABLE_DEPRECATION_WARNINGS` to silence the warnings. Public
 * declarations use the versioned MP_DEPRECATED_IN_* instead.
 *
 * Since: 1.0
 */

/**
 * MP_DEPRECATED_FOR:
 * @f: the replacement of the deprecated symbol
 *
 * Marks a declaration as deprecated in favour of @f, and exports it. Define
 * `MP_DISABLE_DEPRECATION_WARNINGS` to silence the warnings. Public
 * declarations use the versioned MP_DEPRECATED_IN_*_FOR instead.
 *
 * Since: 1.0
 */

/**
 * MP_UNAVAILABLE:
 * @maj: the major version that added the symbol
 * @min: the minor version that added the symbol
 *
 * Marks a declaration as added in mpport @maj.@min, and exports it: using it
 * warns. MP_AVAILABLE_IN_* expand to it when %MP_VERSION_MAX_ALLOWED is older.
 * Define `MP_DISABLE_DEPRECATION_WARNINGS` to silence the warnings.
 *
 * Since: 1.0
 */
#ifdef MP_DISABLE_DEPRECATION_WARNINGS
# define MP_DEPRECATED _MP_EXTERN
# define MP_DEPRECATED_FOR(f) _MP_EXTERN
# define MP_UNAVAILABLE(maj,min) _MP_EXTERN
#else
# define MP_DEPRECATED G_DEPRECATED _MP_EXTERN
# define MP_DEPRECATED_FOR(f) G_DEPRECATED_FOR (f) _MP_EXTERN
# define MP_UNAVAILABLE(maj,min) G_UNAVAILABLE (maj, min) _MP_EXTERN
#endif

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
 * Exports a declaration added in mpport 1.0; using it warns when
 * %MP_VERSION_MAX_ALLOWED is older.
 *
 * Since: 1.0
 */
#if MP_VERSION_MAX_ALLOWED < MP_VERSION_1_0
# define MP_AVAILABLE_IN_1_0 MP_UNAVAILABLE (1, 0)
#else
# define MP_AVAILABLE_IN_1_0 _MP_EXTERN
#endif

/**
 * MP_DEPRECATED_IN_1_0:
 *
 * Exports a declaration deprecated in mpport 1.0; using it warns when
 * %MP_VERSION_MIN_REQUIRED is 1.0 or later.
 *
 * Since: 1.0
 */

/**
 * MP_DEPRECATED_IN_1_0_FOR:
 * @f: the replacement of the deprecated symbol
 *
 * Exports a declaration deprecated in mpport 1.0 in favour of @f; using it
 * warns, naming @f, when %MP_VERSION_MIN_REQUIRED is 1.0 or later.
 *
 * Since: 1.0
 */
#if MP_VERSION_MIN_REQUIRED >= MP_VERSION_1_0
# define MP_DEPRECATED_IN_1_0 MP_DEPRECATED
# define MP_DEPRECATED_IN_1_0_FOR(f) MP_DEPRECATED_FOR (f)
#else
# define MP_DEPRECATED_IN_1_0 _MP_EXTERN
# define MP_DEPRECATED_IN_1_0_FOR(f) _MP_EXTERN
#endif
