/* i18n-check.c: the MP_ERROR_DATA_CLONE message comes out in the user's language
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Usage: i18n-check LOCALEDIR EXPECTED
 *
 * Uses only the public API and <mpport/mpport.h>, so that it builds against an installed
 * mpport-1.pc as well as against the build tree. It posts a message whose transfer list holds
 * the posting port itself, and checks that the error is MP_ERROR_DATA_CLONE with the message
 * EXPECTED (in the language LANGUAGE/LC_ALL select; run it with LC_ALL=C.UTF-8, since glibc
 * ignores LANGUAGE in the "C" locale).
 *
 * LOCALEDIR "-" leaves the text domain where the library binds it (the LOCALEDIR compiled into
 * it: the installed tree). Any other LOCALEDIR is where the translations are looked up
 * instead (the build tree's po/, or a DESTDIR): the library binds its domain lazily, the first
 * time it translates a message, so the program makes it translate one first, then rebinds
 * the domain, the way an application that relocates its translations would.
 */

#include <libintl.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>

#include <mpport/mpport.h>

#define DOMAIN "mpport-1"

int
main (int   argc,
      char *argv[])
{
  g_autoptr(MpMessageChannel) channel = NULL;
  g_autoptr(GError) error = NULL;
  MpMessagePort *port1;
  MpMessagePort *transfer[1];
  gboolean posted;

  if (argc != 3)
    {
      fprintf (stderr, "usage: %s LOCALEDIR|- EXPECTED\n", argv[0]);
      return 2;
    }

  setlocale (LC_ALL, "");

  if (strcmp (argv[1], "-") != 0)
    {
      g_autoptr(MpMessageChannel) closed = mp_message_channel_new ();
      g_autoptr(GError) first = NULL;

      /* Any translated error binds the library's domain; ours then replaces that binding. */
      mp_message_port_close (mp_message_channel_get_port1 (closed));
      posted = mp_message_port_post_message (mp_message_channel_get_port1 (closed),
                                             NULL, NULL, 0, &first);
      g_assert_false (posted);
      g_assert_error (first, MP_ERROR, MP_ERROR_INVALID_STATE);

      if (bindtextdomain (DOMAIN, argv[1]) == NULL)
        {
          perror ("bindtextdomain");
          return 1;
        }
    }

  channel = mp_message_channel_new ();
  port1 = mp_message_channel_get_port1 (channel);
  transfer[0] = port1;

  posted = mp_message_port_post_message (port1, g_variant_new_string ("x"), transfer, 1, &error);

  if (posted || error == NULL || !g_error_matches (error, MP_ERROR, MP_ERROR_DATA_CLONE))
    {
      fprintf (stderr, "expected MP_ERROR_DATA_CLONE, got %s\n",
               error != NULL ? error->message : "success");
      return 1;
    }

  printf ("LANGUAGE=%s: %s\n", g_getenv ("LANGUAGE") ? g_getenv ("LANGUAGE") : "",
          error->message);

  if (strcmp (error->message, argv[2]) != 0)
    {
      fprintf (stderr, "expected the message \"%s\"\n", argv[2]);
      return 1;
    }

  /* Nothing changed: the port is still usable. */
  if (!mp_message_port_post_message (port1, NULL, NULL, 0, NULL))
    {
      fprintf (stderr, "the port is no longer usable after the refused post\n");
      return 1;
    }

  return 0;
}
