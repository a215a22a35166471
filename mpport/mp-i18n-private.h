/* mp-i18n-private.h: gettext for the library, bound lazily
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include "config.h"

#include <glib/gi18n-lib.h>

G_BEGIN_DECLS

const char *mp_i18n_gettext (const char *msgid) G_GNUC_FORMAT (1);

/* gi18n-lib.h's _() would translate before the text domain is bound; ours binds it on first
 * use so users never need an init call. xgettext still sees the usual _() keyword. */
#undef _
#define _(String) mp_i18n_gettext (String)

G_END_DECLS
