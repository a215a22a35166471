/* mpport.h: the one header to include
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include <glib-object.h>

#define MPPORT_INSIDE
# include "mp-version.h"
# include "mp-version-macros.h"
# include "mp-runtime-version.h"
# include "mp-error.h"
# include "mp-enums.h"
# include "mp-message.h"
# include "mp-message-port.h"
# include "mp-message-channel.h"
# include "mp-broadcast-channel.h"
#undef MPPORT_INSIDE
