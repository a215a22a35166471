/* mp-runtime-version.c: the version of the mpport library in use at run time
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include "mp-runtime-version.h"

/**
 * mp_get_major_version:
 *
 * Returns the major version of the mpport library the program runs with: 1
 * for mpport 1.2.3. Callable from any thread.
 *
 * This is the library loaded at run time; %MP_MAJOR_VERSION is the version of
 * the headers the program was compiled against, which may differ.
 *
 * Returns: the major version of the library
 *
 * Since: 1.0
 */
guint
mp_get_major_version (void)
{
  return MP_MAJOR_VERSION;
}

/**
 * mp_get_minor_version:
 *
 * Returns the minor version of the mpport library the program runs with: 2
 * for mpport 1.2.3. Callable from any thread.
 *
 * This is the library loaded at run time; %MP_MINOR_VERSION is the version of
 * the headers the program was compiled against, which may differ.
 *
 * Returns: the minor version of the library
 *
 * Since: 1.0
 */
guint
mp_get_minor_version (void)
{
  return MP_MINOR_VERSION;
}

/**
 * mp_get_micro_version:
 *
 * Returns the micro version of the mpport library the program runs with: 3
 * for mpport 1.2.3. Callable from any thread.
 *
 * This is the library loaded at run time; %MP_MICRO_VERSION is the version of
 * the headers the program was compiled against, which may differ.
 *
 * Returns: the micro version of the library
 *
 * Since: 1.0
 */
guint
mp_get_micro_version (void)
{
  return MP_MICRO_VERSION;
}
