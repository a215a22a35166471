#!/usr/bin/env bash
# check-dist.sh: `meson dist` makes a tarball that builds, passes its tests
# and installs a library that finds its own translations
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# `meson dist` archives the HEAD commit of the git repository (`git archive`),
# so uncommitted work would silently be left out. To test the tree as it
# stands, this snapshots the working tree — tracked files and untracked ones
# that are not ignored, as they would be committed — into a fresh repository,
# runs `meson dist --no-tests` there, then unpacks the tarball and, itself:
#   - configures it (-Ddocumentation as in this build) with a private prefix,
#     builds it and runs its whole test suite (in which this test skips: an
#     unpacked tarball is no git checkout);
#   - installs it into that prefix (no DESTDIR), builds
#     tests/packaging/i18n-check.c against the installed mpport-1.pc and checks
#     that with LANGUAGE=de the library finds its installed German catalogue by
#     itself (the LOCALEDIR compiled into it), with no help from the program.
# Skipped (77) when the source tree is not the top of a git work tree.
#
# Environment: MPPORT_MESON, MPPORT_SOURCE_ROOT, MPPORT_VERSION, MPPORT_DOCS,
# CC, PKG_CONFIG, MPPORT_MSG_DE; optionally MPPORT_DIST_TEST_ARGS, extra
# arguments for the tarball's `meson test` (e.g. "--no-suite model" to save the
# model checker's minutes when iterating on packaging).

set -euo pipefail

src="$MPPORT_SOURCE_ROOT"
if ! top="$(git -C "$src" rev-parse --show-toplevel 2>/dev/null)" ||
   [ "$(cd "$top" && pwd -P)" != "$(cd "$src" && pwd -P)" ]; then
  echo "$src is not the top of a git work tree (an unpacked tarball?): nothing to dist"
  exit 77
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mpport-dist.XXXXXX")"
keep=0
cleanup () { if [ "$keep" -eq 0 ]; then rm -rf "$tmp"; else echo "left for inspection: $tmp"; fi; }
trap cleanup EXIT
step () { printf '==> %s\n' "$*"; }
die () { printf 'FAIL: %s\n' "$*"; keep=1; exit 1; }

if [ -n "$(git -C "$src" status --porcelain)" ]; then
  step "the working tree differs from HEAD: testing it as it would be committed"
fi

step "snapshot of the working tree"
mkdir "$tmp/src"
git -C "$src" ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' file; do
    # Tracked files deleted in the working tree are left out, as a commit would.
    if [ -e "$src/$file" ] || [ -L "$src/$file" ]; then
      printf '%s\0' "$file"
    fi
  done |
  tar -C "$src" --null --files-from=- -cf - | tar -C "$tmp/src" -xf -
git -C "$tmp/src" init -q
git -C "$tmp/src" add -A
git -C "$tmp/src" -c user.name=mpport-dist -c user.email=mpport-dist@localhost \
  commit -q -m "snapshot for meson dist"

step "meson dist"
"$MPPORT_MESON" setup "$tmp/dist-build" "$tmp/src" >"$tmp/dist-setup.log" 2>&1 ||
  { cat "$tmp/dist-setup.log"; die "configuring the snapshot failed"; }
"$MPPORT_MESON" dist -C "$tmp/dist-build" --no-tests --formats xztar ||
  die "meson dist failed"
tarball="$tmp/dist-build/meson-dist/mpport-$MPPORT_VERSION.tar.xz"
[ -f "$tarball" ] || die "no $tarball"

step "tarball contents"
python3 - "$tarball" "mpport-$MPPORT_VERSION" <<'EOF' || die "the tarball is incomplete"
import sys
import tarfile

tarball, top = sys.argv[1], sys.argv[2]
with tarfile.open(tarball) as tar:
    names = set(tar.getnames())
required = ['meson.build', 'meson_options.txt', 'README.md', 'CONTRIBUTING.md', 'NEWS',
            'mpport.doap', 'mpport/mpport.h',
            'mpport/mpport.map', 'docs/meson.build', 'docs/Mp.toml.in', 'docs/overview.md',
            'docs/threading.md', 'docs/porting.md', 'docs/versioning.md',
            'docs/internals.md', 'mpport/mp-version-macros.h',
            'mpport/mp-runtime-version.h', 'po/POTFILES.in',
            'po/LINGUAS', 'po/de.po', 'po/fr.po', 'tests/packaging/check-dist.sh',
            'scripts/test']
missing = [f for f in required if f'{top}/{f}' not in names]
stray = [n for n in names if n.split('/')[1:2] in (['.git'], ['build'])]
print(f'{len(names)} entries')
if missing or stray:
    print('missing:', missing, 'stray:', stray)
    sys.exit(1)
EOF

step "unpack, configure, build"
mkdir "$tmp/unpack"
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
  "$tarball" "$tmp/unpack"
unpacked="$tmp/unpack/mpport-$MPPORT_VERSION"
prefix="$tmp/prefix"
"$MPPORT_MESON" setup "$tmp/build" "$unpacked" --prefix="$prefix" \
  -Ddocumentation="$MPPORT_DOCS" >"$tmp/setup.log" 2>&1 ||
  { cat "$tmp/setup.log"; die "configuring the tarball failed"; }
"$MPPORT_MESON" compile -C "$tmp/build" >"$tmp/compile.log" 2>&1 ||
  { tail -50 "$tmp/compile.log"; die "building the tarball failed"; }

step "the tarball's tests"
read -r -a test_args <<<"${MPPORT_DIST_TEST_ARGS:-}"
if ! "$MPPORT_MESON" test -C "$tmp/build" --no-rebuild --print-errorlogs "${test_args[@]}" \
     >"$tmp/test.log" 2>&1; then
  tail -80 "$tmp/test.log"
  die "the tarball's tests failed"
fi
sed -n '/^Ok:/,/^Timeout:/p' "$tmp/test.log"

step "install into $prefix"
"$MPPORT_MESON" install -C "$tmp/build" --no-rebuild --quiet >/dev/null ||
  die "installing the tarball's build failed"

step "the installed library finds its installed translations by itself"
libdir="$(PKG_CONFIG_PATH="$(dirname "$(find "$prefix" -name mpport-1.pc)")" \
          "$PKG_CONFIG" --variable=libdir mpport-1)"
flags="$(PKG_CONFIG_PATH="$libdir/pkgconfig" "$PKG_CONFIG" --cflags --libs mpport-1)"
# shellcheck disable=SC2086  # $CC and $flags are word lists
$CC -std=c11 -Wall -Werror -o "$tmp/i18n-check" "$unpacked/tests/packaging/i18n-check.c" $flags ||
  die "i18n-check.c does not build against the installed mpport-1.pc"
env -u GI_TYPELIB_PATH LD_LIBRARY_PATH="$libdir" LC_ALL=C.UTF-8 LANGUAGE=de \
  "$tmp/i18n-check" - "$MPPORT_MSG_DE" ||
  die "the installed library does not find its German catalogue"

echo "meson dist: mpport-$MPPORT_VERSION.tar.xz builds, passes its tests and installs"
