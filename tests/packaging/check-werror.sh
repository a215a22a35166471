#!/usr/bin/env bash
# check-werror.sh: warnings are errors in CI, and only there
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A newer compiler's new warning must not break a distribution's build, nor a
# parent project's that uses mpport as a subproject; CI must still fail on it.
# Checks that
#   - the project's default is werror=false (meson introspect of meson.build);
#   - scripts/lib.sh's mpport_setup_build, which scripts/test and scripts/demo
#     use, passes -Dwerror=true when CI=true or MPPORT_WERROR=1, both to a
#     fresh `meson setup` and to the --reconfigure of an existing build
#     directory (and to the --wipe that follows a failed reconfigure), and
#     passes no -Dwerror otherwise.
# mpport_setup_build runs with `meson` stubbed out: nothing is configured.
#
# Environment: MPPORT_MESON, MPPORT_SOURCE_ROOT.

set -euo pipefail

status=0
fail () { printf 'FAIL: %s\n' "$*"; status=1; }
ok () { printf 'ok: %s\n' "$*"; }

werror="$("$MPPORT_MESON" introspect --buildoptions "$MPPORT_SOURCE_ROOT/meson.build" |
          python3 -c 'import json, sys
print([o["value"] for o in json.load(sys.stdin) if o["name"] == "werror"][0])')"
if [ "$werror" = False ]; then
  ok "werror defaults to false"
else
  fail "werror defaults to $werror in the default_options of meson.build"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mpport-werror.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# The meson commands mpport_setup_build runs, one per line, with CI and
# MPPORT_WERROR as given; FRESH=1 for a new build directory, else one whose
# reconfigure fails (so that the --wipe runs too).
setup_commands () {
  local ci="$1" mpport_werror="$2" fresh="$3" builddir="$tmp/build-$RANDOM"

  if [ "$fresh" != 1 ]; then
    mkdir -p "$builddir/meson-private"
    touch "$builddir/meson-private/coredata.dat"
  fi
  (
    export MPPORT_BUILDDIR="$builddir"
    # shellcheck disable=SC1091  # the tree under test's, not this file's
    . "$MPPORT_SOURCE_ROOT/scripts/lib.sh"
    # shellcheck disable=SC2317  # called by mpport_setup_build
    meson () {
      printf '%s\n' "$*"
      [[ " $* " != *" --reconfigure "* ]]
    }
    if [ -n "$ci" ]; then export CI="$ci"; else unset CI; fi
    if [ -n "$mpport_werror" ]; then
      export MPPORT_WERROR="$mpport_werror"
    else
      unset MPPORT_WERROR
    fi
    mpport_setup_build
  )
}

expect () {
  local what="$1" want="$2" commands line
  shift 2
  commands="$(setup_commands "$@")"
  while IFS= read -r line; do
    if [ "$want" = on ] && [[ " $line " != *" -Dwerror=true "* ]]; then
      fail "$what: no -Dwerror=true in: meson $line"
    elif [ "$want" = off ] && [[ "$line" == *-Dwerror* ]]; then
      fail "$what: -Dwerror set in: meson $line"
    else
      ok "$what: meson $line"
    fi
  done <<<"$commands"
  if [ -z "$commands" ]; then
    fail "$what: mpport_setup_build ran no meson command"
  fi
}

expect "CI=true, fresh build directory" on true '' 1
expect "CI=true, existing build directory" on true '' 0
expect "MPPORT_WERROR=1, fresh build directory" on '' 1 1
expect "MPPORT_WERROR=1, existing build directory" on '' 1 0
expect "no CI, fresh build directory" off '' '' 1
expect "no CI, existing build directory" off '' '' 0
expect "CI=false" off false '' 1

exit "$status"
