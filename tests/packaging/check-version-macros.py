#!/usr/bin/env python3
# check-version-macros.py: MP_VERSION_MIN_REQUIRED, MP_VERSION_MAX_ALLOWED and
# the availability macros do what docs/versioning.md says
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Usage: check-version-macros.py
#
# Compiles small programs against the public headers of this build tree, with
# the flags `pkg-config --cflags mpport-1` gives (tests/packaging/meson.build
# points PKG_CONFIG_PATH at meson-uninstalled/, so these are the build tree's
# headers, as an application building against it would see them), and checks
# the outcome of each: compiles cleanly, compiles with a given warning, or
# fails with a given error. What they cover:
#
#   - the defaults: both macros are MP_VERSION_CUR_STABLE, which is the
#     version of the headers, and the whole API compiles without a warning;
#   - the #error checks, as GLib's gversionmacros.h has them: MAX_ALLOWED
#     older than MIN_REQUIRED, MIN_REQUIRED older than 1.0 or newer than the
#     headers;
#   - MP_DEPRECATED_IN_1_0 and MP_DEPRECATED_IN_1_0_FOR(f) warn once
#     MIN_REQUIRED is 1.0 or later, and MP_DISABLE_DEPRECATION_WARNINGS
#     silences them;
#   - MP_AVAILABLE_IN_1_0 is silent while MAX_ALLOWED is 1.0 or later, and
#     MP_UNAVAILABLE(maj, min), what MP_AVAILABLE_IN_maj_min expands to when
#     MAX_ALLOWED is older, warns;
#   - MP_CHECK_VERSION() in #if and the runtime mp_get_*_version() prototypes.
#
# Environment: CC (the compiler command, a word list), PKG_CONFIG. Prints one
# line per case; exits 1 if any case does not turn out as expected.

import os
import re
import shlex
import subprocess
import sys
import tempfile

# Stricter than the library's own flags, so a header that warns cannot hide.
WARNINGS = ['-std=c11', '-Wall', '-Wextra', '-Wundef', '-Wstrict-prototypes',
            '-Wmissing-prototypes']

PROLOGUE = '#include <mpport/mpport.h>\n'

# A function in the style of the public headers, marked with an availability
# macro; the case calls it from use().
def marked(macro):
    return (PROLOGUE +
            f'{macro}\nvoid mp_test_marked (void);\n'
            'void use (void);\n'
            'void use (void) { mp_test_marked (); }\n')


# (name, source, expectation, pattern). expectation: 'clean' (compiles, no
# diagnostic at all), 'warning' (compiles, a warning matching pattern) or
# 'error' (does not compile, an error matching pattern).
CASES = [
    ('defaults are the version of the headers', PROLOGUE + '''
#if MP_VERSION_CUR_STABLE != G_ENCODE_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION)
# error "MP_VERSION_CUR_STABLE is not the version of the headers"
#endif
#if MP_VERSION_MIN_REQUIRED != MP_VERSION_CUR_STABLE
# error "MP_VERSION_MIN_REQUIRED does not default to MP_VERSION_CUR_STABLE"
#endif
#if MP_VERSION_MAX_ALLOWED != MP_VERSION_CUR_STABLE
# error "MP_VERSION_MAX_ALLOWED does not default to MP_VERSION_CUR_STABLE"
#endif
#if MP_VERSION_1_0 != G_ENCODE_VERSION (1, 0)
# error "MP_VERSION_1_0 is not 1.0"
#endif
int main (void) { return 0; }
''', 'clean', None),

    ('MIN_REQUIRED = MAX_ALLOWED = 1.0: the whole API, no warning', '''
#define MP_VERSION_MIN_REQUIRED MP_VERSION_1_0
#define MP_VERSION_MAX_ALLOWED MP_VERSION_1_0
''' + PROLOGUE + '''
int main (void)
{
  MpMessageChannel *channel = mp_message_channel_new ();
  MpBroadcastChannel *broadcast = mp_broadcast_channel_new ("x");

  mp_message_port_close (mp_message_channel_get_port1 (channel));
  mp_broadcast_channel_close (broadcast);
  g_object_unref (broadcast);
  g_object_unref (channel);
  return (int) (mp_get_major_version () + mp_get_minor_version () + mp_get_micro_version ()
                + mp_error_quark ()) & 0;
}
''', 'clean', None),

    ('MAX_ALLOWED older than MIN_REQUIRED is an error', '''
#define MP_VERSION_MIN_REQUIRED MP_VERSION_1_0
#define MP_VERSION_MAX_ALLOWED (G_ENCODE_VERSION (0, 9))
''' + PROLOGUE, 'error',
     r'error: (#error )?"?MP_VERSION_MAX_ALLOWED must be >= MP_VERSION_MIN_REQUIRED'),

    ('MIN_REQUIRED older than 1.0 is an error', '''
#define MP_VERSION_MIN_REQUIRED (G_ENCODE_VERSION (0, 9))
''' + PROLOGUE, 'error', r'error: (#error )?"?MP_VERSION_MIN_REQUIRED must be >= MP_VERSION_1_0'),

    ('MIN_REQUIRED newer than the headers is an error', '''
#define MP_VERSION_MIN_REQUIRED (G_ENCODE_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION + 2))
#define MP_VERSION_MAX_ALLOWED MP_VERSION_MIN_REQUIRED
''' + PROLOGUE, 'error',
     r'error: (#error )?"?MP_VERSION_MIN_REQUIRED must be <= MP_VERSION_CUR_STABLE'),

    ('MAX_ALLOWED newer than the headers is allowed', '''
#define MP_VERSION_MAX_ALLOWED (G_ENCODE_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION + 2))
''' + PROLOGUE + 'int main (void) { return 0; }\n', 'clean', None),

    ('MP_DEPRECATED_IN_1_0 warns with MIN_REQUIRED = 1.0',
     '#define MP_VERSION_MIN_REQUIRED MP_VERSION_1_0\n' + marked('MP_DEPRECATED_IN_1_0'),
     'warning', r"'mp_test_marked' is deprecated"),

    ('MP_DEPRECATED_IN_1_0_FOR(f) names f with MIN_REQUIRED = 1.0',
     '#define MP_VERSION_MIN_REQUIRED MP_VERSION_1_0\n'
     + marked('MP_DEPRECATED_IN_1_0_FOR (mp_test_replacement)'),
     'warning', r"'mp_test_marked' is deprecated: Use 'mp_test_replacement' instead"),

    ('MP_DISABLE_DEPRECATION_WARNINGS silences MP_DEPRECATED_IN_1_0',
     '#define MP_VERSION_MIN_REQUIRED MP_VERSION_1_0\n'
     '#define MP_DISABLE_DEPRECATION_WARNINGS\n' + marked('MP_DEPRECATED_IN_1_0'),
     'clean', None),

    ('MP_DISABLE_DEPRECATION_WARNINGS silences MP_DEPRECATED_IN_1_0_FOR(f)',
     '#define MP_DISABLE_DEPRECATION_WARNINGS\n'
     + marked('MP_DEPRECATED_IN_1_0_FOR (mp_test_replacement)'),
     'clean', None),

    ('MP_AVAILABLE_IN_1_0 is silent with MAX_ALLOWED = 1.0',
     '#define MP_VERSION_MAX_ALLOWED MP_VERSION_1_0\n' + marked('MP_AVAILABLE_IN_1_0'),
     'clean', None),

    ('MP_UNAVAILABLE(maj, min) warns', marked('MP_UNAVAILABLE (1, 2)'),
     'warning', r"'mp_test_marked' is deprecated: Not available before 1\.2"),

    ('MP_DISABLE_DEPRECATION_WARNINGS silences MP_UNAVAILABLE(maj, min)',
     '#define MP_DISABLE_DEPRECATION_WARNINGS\n' + marked('MP_UNAVAILABLE (1, 2)'),
     'clean', None),

    ('MP_CHECK_VERSION() in #if', PROLOGUE + '''
#if !MP_CHECK_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION, MP_MICRO_VERSION)
# error "MP_CHECK_VERSION() is false for the version of the headers"
#endif
#if !MP_CHECK_VERSION (1, 0, 0)
# error "MP_CHECK_VERSION (1, 0, 0) is false"
#endif
#if MP_CHECK_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION, MP_MICRO_VERSION + 1) || \\
    MP_CHECK_VERSION (MP_MAJOR_VERSION, MP_MINOR_VERSION + 1, 0) || \\
    MP_CHECK_VERSION (MP_MAJOR_VERSION + 1, 0, 0)
# error "MP_CHECK_VERSION() is true for a newer version"
#endif
int main (void) { return 0; }
''', 'clean', None),
]


def compile_case(cc, cflags, source, workdir, index):
    path = os.path.join(workdir, f'case-{index}.c')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(source)
    # LC_ALL=C: plain quotes around names in the diagnostics.
    result = subprocess.run(cc + WARNINGS + ['-c', path, '-o', path + '.o'] + cflags,
                            capture_output=True, text=True, env=dict(os.environ, LC_ALL='C'))
    return result.returncode, result.stderr


def judge(expectation, pattern, returncode, stderr):
    """Returns None if the outcome is as expected, else what went wrong."""
    if expectation == 'clean':
        if returncode != 0:
            return 'does not compile'
        if stderr.strip():
            return 'compiles with diagnostics'
        return None
    found = re.search(pattern, stderr) is not None
    if expectation == 'error':
        if returncode == 0:
            return f'compiles; expected an error matching {pattern!r}'
        return None if found else f'fails, but with no error matching {pattern!r}'
    if returncode != 0:
        return 'does not compile'
    return None if found else f'compiles with no warning matching {pattern!r}'


def main(argv):
    cc = shlex.split(os.environ.get('CC', 'cc'))
    pkg_config = os.environ.get('PKG_CONFIG', 'pkg-config')
    cflags = shlex.split(subprocess.run([pkg_config, '--cflags', 'mpport-1'],
                                        capture_output=True, text=True,
                                        check=True).stdout)
    print('# ' + ' '.join(cc + WARNINGS + cflags))

    failures = 0
    with tempfile.TemporaryDirectory(prefix='mpport-version-macros.') as workdir:
        for index, (name, source, expectation, pattern) in enumerate(CASES, 1):
            returncode, stderr = compile_case(cc, cflags, source, workdir, index)
            problem = judge(expectation, pattern, returncode, stderr)
            if problem is None:
                print(f'ok {index} - {name}')
            else:
                failures += 1
                print(f'not ok {index} - {name}: {problem}')
                print('# ' + '\n# '.join(stderr.strip().splitlines() or ['(no output)']))
    print(f'1..{len(CASES)}')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
