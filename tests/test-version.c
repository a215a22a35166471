/* test-version.c: the version the library reports at run time
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * mp_get_major_version() and its siblings report the version of the library the
 * program runs with; built from the same tree, that is the version of the headers
 * (MP_*_VERSION, MP_VERSION_S) and what MP_CHECK_VERSION() accepts.
 */

#include <mpport/mpport.h>

static void
test_runtime_matches_headers (void)
{
  g_assert_cmpuint (mp_get_major_version (), ==, MP_MAJOR_VERSION);
  g_assert_cmpuint (mp_get_minor_version (), ==, MP_MINOR_VERSION);
  g_assert_cmpuint (mp_get_micro_version (), ==, MP_MICRO_VERSION);
}

static void
test_string_matches_numbers (void)
{
  g_autofree char *runtime = g_strdup_printf ("%u.%u.%u",
                                              mp_get_major_version (),
                                              mp_get_minor_version (),
                                              mp_get_micro_version ());

  g_assert_cmpstr (runtime, ==, MP_VERSION_S);
}

/* MP_CHECK_VERSION() is meant for #if, with constants: with unsigned variables, -Wextra
 * rightly warns of comparisons that are always false for version 1.0. */
static void
test_check_version (void)
{
  g_assert_true (MP_CHECK_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION, MP_MICRO_VERSION));
  g_assert_true (MP_CHECK_VERSION (1, 0, 0));
  g_assert_true (MP_CHECK_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION, MP_MICRO_VERSION - 1));
  g_assert_true (MP_CHECK_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION - 1, MP_MICRO_VERSION + 1));
  g_assert_true (MP_CHECK_VERSION (MP_MAJOR_VERSION - 1,
                                   MP_MINOR_VERSION + 1,
                                   MP_MICRO_VERSION + 1));

  g_assert_false (MP_CHECK_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION, MP_MICRO_VERSION + 1));
  g_assert_false (MP_CHECK_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION + 1, 0));
  g_assert_false (MP_CHECK_VERSION (MP_MAJOR_VERSION + 1, 0, 0));
}

static void
test_encoded_versions (void)
{
  /* The defaults of an application that sets neither macro. */
  g_assert_cmpuint (MP_VERSION_CUR_STABLE, ==,
                    G_ENCODE_VERSION (mp_get_major_version (), mp_get_minor_version ()));
  g_assert_cmpuint (MP_VERSION_MIN_REQUIRED, ==, MP_VERSION_CUR_STABLE);
  g_assert_cmpuint (MP_VERSION_MAX_ALLOWED, ==, MP_VERSION_CUR_STABLE);
  g_assert_cmpuint (MP_VERSION_1_0, <=, MP_VERSION_CUR_STABLE);
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/mpport/version/runtime-matches-headers", test_runtime_matches_headers);
  g_test_add_func ("/mpport/version/string-matches-numbers", test_string_matches_numbers);
  g_test_add_func ("/mpport/version/check-version", test_check_version);
  g_test_add_func ("/mpport/version/encoded-defaults", test_encoded_versions);

  return g_test_run ();
}
