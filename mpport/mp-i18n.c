/* mp-i18n.c: gettext for the library, bound lazily
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include "mp-i18n-private.h"

/* Binds the "mpport-1" text domain the first time a string is translated, the way
 * GLib's own ggettext.c does: no constructor, no init call for users. */
const char *
mp_i18n_gettext (const char *msgid)
{
  static gsize bound = 0;

  if (g_once_init_enter (&bound))
    {
      bindtextdomain (GETTEXT_PACKAGE, LOCALEDIR);
      bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
      g_once_init_leave (&bound, 1);
    }

  return g_dgettext (GETTEXT_PACKAGE, msgid);
}
