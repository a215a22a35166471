#!/usr/bin/env bash
# check-install.sh: `meson install` into a DESTDIR gives a usable mpport
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Installs the build tree into a temporary DESTDIR, checks what landed there
# (versioned library with soname libmpport-1.so.0, headers under
# include/mpport-1/, mpport-1.pc, Mp-1.gir, Mp-1.typelib, mpport-1.vapi and
# mpport-1.deps, the API reference, the .mo files), then uses the installed
# tree *alone*:
#   - builds tests/packaging/i18n-check.c with the flags of the installed
#     mpport-1.pc (relocated to the DESTDIR) and runs it against the installed
#     library: English by default, German and French from the installed .mo
#     files with LANGUAGE=de / LANGUAGE=fr;
#   - imports Mp from /usr/bin/python3 (python3-gi) with only the installed
#     typelib and library on the search paths, and checks a round trip and a
#     German MP_ERROR_DATA_CLONE message.
# tests/packaging/meson.build passes, in the environment:
#
#   MPPORT_MESON, MPPORT_BUILD_ROOT, MPPORT_SOURCE_ROOT, MPPORT_PREFIX,
#   MPPORT_LIBDIR, MPPORT_INCLUDEDIR, MPPORT_DATADIR, MPPORT_LOCALEDIR (absolute,
#   as configured), MPPORT_DOCS and MPPORT_GIR ("true"/"false"), CC, PKG_CONFIG,
#   MPPORT_MSG_C, MPPORT_MSG_DE, MPPORT_MSG_FR (the expected messages).
#
# and may pass MPPORT_VAPI ("true"/"false": whether mpport-1.vapi is built);
# without it, the build tree's install plan (`meson introspect --installed`)
# says whether it is.

set -euo pipefail

status=0
fail () { printf 'FAIL: %s\n' "$*"; status=1; }
ok () { printf 'ok: %s\n' "$*"; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mpport-install.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
dest="$tmp/dest"

"$MPPORT_MESON" install -C "$MPPORT_BUILD_ROOT" --no-rebuild --quiet --destdir "$dest" >/dev/null

libdir="$dest$MPPORT_LIBDIR"
includedir="$dest$MPPORT_INCLUDEDIR"
datadir="$dest$MPPORT_DATADIR"
localedir="$dest$MPPORT_LOCALEDIR"

need () {
  if [ -e "$1" ]; then ok "installed ${1#"$dest"}"; else fail "not installed: ${1#"$dest"}"; fi
}

# The library: real file, soname link, development link.
need "$libdir/libmpport-1.so.0.0.0"
need "$libdir/libmpport-1.so.0"
need "$libdir/libmpport-1.so"
if [ "$(readlink "$libdir/libmpport-1.so.0")" != libmpport-1.so.0.0.0 ]; then
  fail "libmpport-1.so.0 does not point at libmpport-1.so.0.0.0"
fi
if ! readelf -d "$libdir/libmpport-1.so.0.0.0" | grep -q 'Library soname: \[libmpport-1.so.0\]'; then
  fail "the installed library's soname is not libmpport-1.so.0"
fi

# Headers, including the generated ones; no private header.
for header in mpport.h mp-version.h mp-version-macros.h mp-runtime-version.h mp-enums.h \
              mp-error.h mp-message.h mp-message-port.h mp-message-channel.h \
              mp-broadcast-channel.h; do
  need "$includedir/mpport-1/mpport/$header"
done
private="$(find "$dest" -name '*-private.h' -o -name 'config.h')"
if [ -n "$private" ]; then
  fail "private headers installed: $private"
fi

need "$libdir/pkgconfig/mpport-1.pc"

if [ "$MPPORT_GIR" = true ]; then
  need "$datadir/gir-1.0/Mp-1.gir"
  need "$libdir/girepository-1.0/Mp-1.typelib"
  if ! grep -q 'shared-library="libmpport-1.so.0"' "$datadir/gir-1.0/Mp-1.gir"; then
    fail "Mp-1.gir does not name libmpport-1.so.0"
  fi
fi

# The Vala bindings (mpport/meson.build: gnome.generate_vapi, where vapigen is found).
if [ -z "${MPPORT_VAPI:-}" ]; then
  install_plan="$("$MPPORT_MESON" introspect --installed "$MPPORT_BUILD_ROOT")"
  case "$install_plan" in
    *'/mpport-1.vapi": '*) MPPORT_VAPI=true ;;
    *) MPPORT_VAPI=false ;;
  esac
fi
if [ "$MPPORT_VAPI" = true ]; then
  need "$datadir/vala/vapi/mpport-1.vapi"
  need "$datadir/vala/vapi/mpport-1.deps"
  deps="$datadir/vala/vapi/mpport-1.deps"
  if [ -f "$deps" ] && [ "$(sort "$deps" | tr '\n' ' ')" != 'gio-2.0 glib-2.0 gobject-2.0 ' ]; then
    fail "mpport-1.deps does not list exactly glib-2.0, gobject-2.0 and gio-2.0: $(tr '\n' ' ' < "$deps")"
  fi
fi

if [ "$MPPORT_DOCS" = true ]; then
  for page in index.html overview.html threading.html porting.html versioning.html \
              internals.html func.get_major_version.html \
              class.MessagePort.html class.MessageChannel.html class.BroadcastChannel.html \
              struct.Message.html error.Error.html mpport-1.devhelp2; do
    need "$datadir/doc/mpport-1/$page"
  done
  # The Website and Source rows of the index (docs/Mp.toml.in) link somewhere.
  index="$datadir/doc/mpport-1/index.html"
  if [ -f "$index" ] && grep -q 'href="" class="external"' "$index"; then
    fail "the index of the reference has an empty Website or Source link"
  fi
  if [ -f "$index" ] && ! grep -q 'href="https://[^"]*" class="external"' "$index"; then
    fail "the index of the reference has no Website or Source link"
  fi
fi

languages="$(sed -e 's/#.*//' "$MPPORT_SOURCE_ROOT/po/LINGUAS")"
for lang in $languages; do
  need "$localedir/$lang/LC_MESSAGES/mpport-1.mo"
done

# Build a program with the installed mpport-1.pc alone. The .pc says
# prefix=$MPPORT_PREFIX; relocate it to the DESTDIR, as a packager's sysroot would.
mkdir "$tmp/pkgconfig"
sed -e "s|^prefix=.*|prefix=$dest$MPPORT_PREFIX|" "$libdir/pkgconfig/mpport-1.pc" \
  > "$tmp/pkgconfig/mpport-1.pc"
flags="$(PKG_CONFIG_PATH="$tmp/pkgconfig" "$PKG_CONFIG" --cflags --libs mpport-1)"
case "$flags" in
  *"$MPPORT_BUILD_ROOT"*|*"$MPPORT_SOURCE_ROOT/mpport"*)
    fail "the installed mpport-1.pc points into the build or source tree: $flags" ;;
esac
# shellcheck disable=SC2086  # $CC and $flags are word lists
if $CC -std=c11 -Wall -Wextra -Werror -o "$tmp/i18n-check" \
     "$MPPORT_SOURCE_ROOT/tests/packaging/i18n-check.c" $flags; then
  ok "built i18n-check.c against the installed mpport-1.pc: $flags"
else
  fail "i18n-check.c does not build against the installed mpport-1.pc"
fi

run_installed () {
  env -u GI_TYPELIB_PATH LD_LIBRARY_PATH="$libdir" LC_ALL=C.UTF-8 "$@"
}

if [ -x "$tmp/i18n-check" ]; then
  resolved="$(run_installed ldd "$tmp/i18n-check" | awk '/libmpport-1.so.0/ { print $3 }')"
  if [ "$resolved" != "$libdir/libmpport-1.so.0" ]; then
    fail "i18n-check loads libmpport-1.so.0 from '$resolved', not from the DESTDIR"
  fi
  if run_installed LANGUAGE= "$tmp/i18n-check" - "$MPPORT_MSG_C"; then
    ok "untranslated message without LANGUAGE"
  else
    fail "untranslated message"
  fi
  if run_installed LANGUAGE=de "$tmp/i18n-check" "$localedir" "$MPPORT_MSG_DE"; then
    ok "German message from the installed mpport-1.mo"
  else
    fail "German message from the installed mpport-1.mo"
  fi
  if run_installed LANGUAGE=fr "$tmp/i18n-check" "$localedir" "$MPPORT_MSG_FR"; then
    ok "French message from the installed mpport-1.mo"
  else
    fail "French message from the installed mpport-1.mo"
  fi
fi

# Python, with only the installed typelib and library.
if [ "$MPPORT_GIR" = true ] && [ -x /usr/bin/python3 ]; then
  if run_installed LANGUAGE=de GI_TYPELIB_PATH="$libdir/girepository-1.0" \
       MPPORT_INSTALLED_LIBDIR="$libdir" MPPORT_INSTALLED_LOCALEDIR="$localedir" \
       MPPORT_MSG_DE="$MPPORT_MSG_DE" PYTHONDONTWRITEBYTECODE=1 \
       /usr/bin/python3 - <<'EOF'
import locale
import os
import sys

import gi
gi.require_version('GLib', '2.0')
gi.require_version('Mp', '1')
from gi.repository import GLib, Mp  # noqa: E402

libdir = os.environ['MPPORT_INSTALLED_LIBDIR']

channel = Mp.MessageChannel.new()
port1, port2 = channel.get_port1(), channel.get_port2()
port1.post_message(GLib.Variant('s', 'hello'), [])
message = port2.receive()
assert message.get_data().unpack() == 'hello', message.get_data()
assert Mp.MAJOR_VERSION == 1

with open('/proc/self/maps') as f:
    maps = f.read()
for name in ('/girepository-1.0/Mp-1.typelib', '/libmpport-1.so.0'):
    paths = {line.split()[-1] for line in maps.splitlines() if name in line}
    assert paths and all(p.startswith(libdir) for p in paths), (name, paths)

# The library binds its text domain on its first translation; then point it at
# the DESTDIR's translations, as an application relocating them would.
locale.setlocale(locale.LC_ALL, '')
port2.close()
try:
    port2.post_message(None, [])
    raise AssertionError('posting on a closed port succeeded')
except GLib.Error as e:
    assert e.matches(Mp.error_quark(), Mp.Error.INVALID_STATE), e
locale.bindtextdomain('mpport-1', os.environ['MPPORT_INSTALLED_LOCALEDIR'])

try:
    port1.post_message(GLib.Variant('s', 'x'), [port1])
    raise AssertionError('a transfer list holding the source port was accepted')
except GLib.Error as e:
    assert e.matches(Mp.error_quark(), Mp.Error.DATA_CLONE), e
    assert e.message == os.environ['MPPORT_MSG_DE'], e.message
    print('Python, LANGUAGE=de:', e.message)

print('imported Mp from', sorted({line.split()[-1] for line in maps.splitlines()
                                   if line.endswith('Mp-1.typelib')}))
sys.exit(0)
EOF
  then
    ok "Python imports Mp from the installed typelib alone"
  else
    fail "Python with the installed typelib"
  fi
fi

if [ "$status" -eq 0 ]; then
  echo "the installed tree is complete and usable"
fi
exit "$status"
