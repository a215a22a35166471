/* mp-error.c: the MP_ERROR domain
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include "mp-error.h"

/**
 * mp_error_quark:
 *
 * The quark of the %MP_ERROR domain. Callable from any thread.
 *
 * Returns: the error domain quark
 *
 * Since: 1.0
 */
GQuark
mp_error_quark (void)
{
  /* G_DEFINE_QUARK's cache is a plain static read and written unlocked: a data race (benign
   * in practice, but ThreadSanitizer rightly reports it when two threads fail their first
   * post at once). g_once_init_enter() publishes the quark safely. */
  static gsize quark = 0;

  if (g_once_init_enter (&quark))
    g_once_init_leave (&quark, g_quark_from_static_string ("mp-error-quark"));

  return (GQuark) quark;
}
