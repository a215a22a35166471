/* scenario-churn.c: mp-bench's churn: a channel's whole life, one message long (mpport only,
 * and the peers)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include <gio/gio.h>
#include <mpport/mpport.h>

#include "scenarios.h"

/* ------------------------------------------------------------------------------------------ */
/* churn: new channel, post one, receive it, close both                                       */
/* ------------------------------------------------------------------------------------------ */

void
scenario_churn (const Scenario *scenario,
                Impl            impl,
                Sample         *out)
{
  guint64 n = scaled (scenario->count);
  gint64 start;

  measure_begin ();
  start = now_ns ();
  for (guint64 i = 0; i < n; i++)
    {
      MpMessageChannel *channel = mp_message_channel_new ();
      MpMessagePort *p1 = mp_message_channel_get_port1 (channel);
      MpMessagePort *p2 = mp_message_channel_get_port2 (channel);
      MpMessage *message;

      mp_message_port_post_message (p1, g_variant_new_int32 ((gint32) i), NULL, 0, NULL);
      message = mp_message_port_receive (p2);
      if (G_UNLIKELY (message == NULL || g_variant_get_int32 (mp_message_get_data (message)) != (gint32) i))
        g_error ("churn: lost message %" G_GUINT64_FORMAT, i);
      mp_message_unref (message);
      mp_message_port_close (p1);
      mp_message_port_close (p2);
      g_object_unref (channel);
    }
  out->seconds = (now_ns () - start) / 1e9;
  measure_end ();

  out->messages = n;
  out->value = n / out->seconds;
}
