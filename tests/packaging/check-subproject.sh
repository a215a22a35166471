#!/usr/bin/env bash
# check-subproject.sh: an application builds against mpport as a meson subproject
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Writes a tiny application project into a temporary directory, with this
# source tree as subprojects/mpport (a symlink) and a subprojects/mpport.wrap
# that provides mpport-1, as a GNOME application would ship it. The app:
#   - finds mpport with a plain dependency('mpport-1') (configured with
#     --force-fallback-for=mpport-1, so an installed mpport-1.pc cannot answer
#     instead of the subproject);
#   - builds a small GObject library of its own, AppRelay, whose method takes
#     an MpMessagePort, and generates its GIR with
#     includes: ['GObject-2.0', 'Gio-2.0', <mpport's Mp-1.gir>], the GIR taken
#     from subproject('mpport').get_variable('mpport_gir');
#   - builds and runs app.c: mp_message_channel_new(), mp_message_port_post()
#     and app_relay_forward() on port1, mp_message_port_receive() on port2.
# Then checks:
#   1. the subproject built no tests, examples, benchmarks or docs:
#      `meson introspect --targets` lists no target defined under
#      subprojects/mpport/{tests,examples,bench,docs}, and the app's build
#      directory has no tests or benchmarks at all (the app registers none);
#   2. App-1.0.gir was generated, includes Mp-1 and names Mp.MessagePort as
#      the method's parameter type; App-1.0.typelib compiled;
#   3. where /usr/bin/python3 has python3-gi: the App and Mp typelibs load
#      together and a message forwarded through App.Relay arrives.
#
# Skips (77) when g-ir-scanner is absent. tests/packaging/meson.build passes
# MPPORT_MESON and MPPORT_SOURCE_ROOT (and CC, which meson reads) in the
# environment.

set -euo pipefail

if ! command -v g-ir-scanner >/dev/null 2>&1 || ! command -v g-ir-compiler >/dev/null 2>&1; then
  echo "SKIP: no g-ir-scanner/g-ir-compiler (gobject-introspection): the app's GIR cannot be generated"
  exit 77
fi

meson="${MPPORT_MESON:-meson}"
status=0
fail () { printf 'FAIL: %s\n' "$*"; status=1; }
ok () { printf 'ok: %s\n' "$*"; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mpport-subproject.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
app="$tmp/app"
build="$app/_build"
mkdir -p "$app/subprojects"
ln -s "$MPPORT_SOURCE_ROOT" "$app/subprojects/mpport"

# Runs "$@" with its output in $tmp/$1.log; prints the log and stops on failure.
step () {
  local name="$1" start=$SECONDS
  shift
  if ! "$@" >"$tmp/$name.log" 2>&1; then
    cat "$tmp/$name.log"
    printf 'FAIL: %s failed (output above)\n' "$name"
    exit 1
  fi
  ok "$name ($((SECONDS - start)) s)"
}

# With the directory present, meson uses it and never fetches the URL
# (and --wrap-mode=nodownload below makes sure of that).
cat >"$app/subprojects/mpport.wrap" <<'EOF'
[wrap-git]
url = https://gitlab.gnome.org/World/mpport.git
revision = main
depth = 1

[provide]
dependency_names = mpport-1
EOF

cat >"$app/meson.build" <<'EOF'
project('app', 'c',
  meson_version: '>= 1.0.0',
  default_options: ['c_std=c11', 'warning_level=2', 'werror=true'],
)

gnome = import('gnome')

# subprojects/mpport.wrap provides mpport-1; the subproject overrides it.
mpport_dep = dependency('mpport-1')
mpport_gir = subproject('mpport').get_variable('mpport_gir')[0]

relay_lib = shared_library('app-relay', 'app-relay.c',
  dependencies: mpport_dep,
)

gnome.generate_gir(relay_lib,
  sources: ['app-relay.h', 'app-relay.c'],
  namespace: 'App',
  nsversion: '1.0',
  symbol_prefix: 'app',
  identifier_prefix: 'App',
  header: 'app-relay.h',
  includes: ['GObject-2.0', 'Gio-2.0', mpport_gir],
  extra_args: ['--quiet', '--warn-all'],
  fatal_warnings: true,
)

executable('app', 'app.c',
  link_with: relay_lib,
  dependencies: mpport_dep,
)
EOF

cat >"$app/app-relay.h" <<'EOF'
#pragma once

#include <mpport/mpport.h>

G_BEGIN_DECLS

#define APP_TYPE_RELAY (app_relay_get_type ())

G_DECLARE_FINAL_TYPE (AppRelay, app_relay, APP, RELAY, GObject)

AppRelay *app_relay_new     (const char     *prefix) G_GNUC_WARN_UNUSED_RESULT;
gboolean  app_relay_forward (AppRelay       *self,
                             MpMessagePort  *port,
                             const char     *text,
                             GError        **error);

G_END_DECLS
EOF

cat >"$app/app-relay.c" <<'EOF'
#include "app-relay.h"

/**
 * AppRelay:
 *
 * Posts text to a port, prefixed.
 */
struct _AppRelay
{
  GObject parent_instance;
  char *prefix;
};

G_DEFINE_FINAL_TYPE (AppRelay, app_relay, G_TYPE_OBJECT)

static void
app_relay_finalize (GObject *object)
{
  AppRelay *self = APP_RELAY (object);

  g_free (self->prefix);

  G_OBJECT_CLASS (app_relay_parent_class)->finalize (object);
}

static void
app_relay_class_init (AppRelayClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = app_relay_finalize;
}

static void
app_relay_init (AppRelay *self G_GNUC_UNUSED)
{
}

/**
 * app_relay_new:
 * @prefix: what forwarded text starts with
 *
 * Returns: (transfer full): a new relay
 */
AppRelay *
app_relay_new (const char *prefix)
{
  AppRelay *self = g_object_new (APP_TYPE_RELAY, NULL);

  self->prefix = g_strdup (prefix);

  return self;
}

/**
 * app_relay_forward:
 * @self: a relay
 * @port: the port to post on
 * @text: the text to post
 * @error: return location for an error
 *
 * Posts "@prefix: @text" on @port.
 *
 * Returns: %TRUE if @port took the message
 */
gboolean
app_relay_forward (AppRelay       *self,
                   MpMessagePort  *port,
                   const char     *text,
                   GError        **error)
{
  g_autofree char *line = NULL;

  g_return_val_if_fail (APP_IS_RELAY (self), FALSE);
  g_return_val_if_fail (MP_IS_MESSAGE_PORT (port), FALSE);

  line = g_strdup_printf ("%s: %s", self->prefix, text);

  return mp_message_port_post (port, g_variant_new_string (line), error);
}
EOF

cat >"$app/app.c" <<'EOF'
#include <mpport/mpport.h>

#include "app-relay.h"

static gboolean
expect_text (MpMessage  *message,
             const char *expected)
{
  const char *text;

  if (message == NULL)
    {
      g_printerr ("app: expected \"%s\", got no message\n", expected);
      return FALSE;
    }
  text = g_variant_get_string (mp_message_get_data (message), NULL);
  if (g_strcmp0 (text, expected) != 0)
    {
      g_printerr ("app: expected \"%s\", got \"%s\"\n", expected, text);
      return FALSE;
    }
  return TRUE;
}

int
main (void)
{
  g_autoptr(MpMessageChannel) channel = mp_message_channel_new ();
  MpMessagePort *port1 = mp_message_channel_get_port1 (channel);
  MpMessagePort *port2 = mp_message_channel_get_port2 (channel);
  g_autoptr(AppRelay) relay = app_relay_new ("relayed");
  g_autoptr(MpMessage) first = NULL;
  g_autoptr(MpMessage) second = NULL;
  g_autoptr(MpMessage) third = NULL;
  g_autoptr(GError) error = NULL;

  if (!mp_message_port_post (port1, g_variant_new_string ("direct"), &error) ||
      !app_relay_forward (relay, port1, "hello", &error))
    {
      g_printerr ("app: post failed: %s\n", error->message);
      return 1;
    }

  first = mp_message_port_receive (port2);
  second = mp_message_port_receive (port2);
  third = mp_message_port_receive (port2);
  if (!expect_text (first, "direct") || !expect_text (second, "relayed: hello"))
    return 1;
  if (third != NULL)
    {
      g_printerr ("app: two messages posted, a third received\n");
      return 1;
    }

  g_print ("app: received \"direct\" then \"relayed: hello\"\n");
  return 0;
}
EOF

# Configure and build, as the app's developer would. --force-fallback-for:
# the subproject, not an installed mpport; --wrap-mode=nodownload: no network.
step configure "$meson" setup "$build" "$app" \
  --wrap-mode=nodownload --force-fallback-for=mpport-1
if grep -q 'Dependency mpport-1 found: YES .*(overridden)' "$tmp/configure.log"; then
  ok "dependency('mpport-1') resolved to the subproject's override"
else
  fail "dependency('mpport-1') did not come from subprojects/mpport's override_dependency"
fi
step build "$meson" compile -C "$build"

# The app runs against the subproject's library (the build tree's rpath).
rc=0
out="$(G_DEBUG=fatal-warnings "$build/app" 2>&1)" || rc=$?
if [ "$rc" -eq 0 ]; then
  ok "app runs: $out"
else
  printf '%s\n' "$out"
  fail "app exited with status $rc"
fi

# 1. Nothing but the library and what ships with it from the subproject.
"$meson" introspect --targets "$build" >"$tmp/targets.json"
"$meson" introspect --tests "$build" >"$tmp/tests.json"
"$meson" introspect --benchmarks "$build" >"$tmp/benchmarks.json"
if python3 - "$tmp" "$app/subprojects/mpport" <<'EOF'
import json
import os
import sys

tmp, sub = sys.argv[1], sys.argv[2]
status = 0


def load(name):
    with open(os.path.join(tmp, name + '.json')) as f:
        return json.load(f)


for target in load('targets'):
    where = os.path.relpath(target['defined_in'], sub)
    if where.startswith('..'):
        continue
    top = where.split(os.sep)[0]
    if top in ('tests', 'examples', 'bench', 'docs'):
        print(f"FAIL: the subproject defines {target['name']} ({target['type']}) "
              f"in {where}")
        status = 1
    else:
        print(f"  subproject target: {target['name']} ({target['type']}, {where})")
for kind in ('tests', 'benchmarks'):
    for test in load(kind):
        print(f"FAIL: the app's build directory has {kind[:-1]} {test['name']} "
              f"(suites {', '.join(test['suite'])})")
        status = 1
sys.exit(status)
EOF
then
  ok "the subproject built no tests, examples, benchmarks or docs"
else
  fail "the subproject builds or registers more than the library and what ships with it (see above)"
fi

# 2. The app's GIR includes mpport's and refers to its types.
app_gir="$build/App-1.0.gir"
if [ -f "$app_gir" ] && [ -f "$build/App-1.0.typelib" ]; then
  ok "App-1.0.gir generated and App-1.0.typelib compiled"
else
  fail "App-1.0.gir or App-1.0.typelib missing"
fi
if python3 - "$app_gir" <<'EOF'
import sys
import xml.etree.ElementTree as ET

ns = {'core': 'http://www.gtk.org/introspection/core/1.0'}
root = ET.parse(sys.argv[1]).getroot()
includes = {(i.get('name'), i.get('version')) for i in root.findall('core:include', ns)}
if ('Mp', '1') not in includes:
    sys.exit(f'App-1.0.gir does not include Mp-1: {sorted(includes)}')
method = root.find(".//core:class[@name='Relay']/core:method[@name='forward']", ns)
if method is None:
    sys.exit('App-1.0.gir has no method App.Relay.forward')
types = [p.find('core:type', ns).get('name')
         for p in method.findall('core:parameters/core:parameter', ns)]
if types[:1] != ['Mp.MessagePort']:
    sys.exit(f'App.Relay.forward takes {types}, not an Mp.MessagePort first')
EOF
then
  ok "App-1.0.gir includes Mp-1; App.Relay.forward takes an Mp.MessagePort"
else
  fail "App-1.0.gir does not use mpport's GIR"
fi

# 3. Both typelibs load together and work (Debian's python3-gi).
if /usr/bin/python3 -c 'import gi' 2>/dev/null; then
  typelibs="$build:$build/subprojects/mpport/mpport"
  if out="$(GI_TYPELIB_PATH="$typelibs" LD_LIBRARY_PATH="$typelibs" G_DEBUG=fatal-warnings \
            PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 - 2>&1 <<'EOF'
import gi
gi.require_version('App', '1.0')
gi.require_version('Mp', '1')
from gi.repository import App, Mp

channel = Mp.MessageChannel.new()
assert App.Relay.new('relayed').forward(channel.get_port1(), 'hello')
message = channel.get_port2().receive()
assert message.get_data().unpack() == 'relayed: hello', message.get_data()
assert channel.get_port2().receive() is None
EOF
  )"; then
    ok "Python loads App-1.0 with Mp-1 and forwards a message through App.Relay"
  else
    printf '%s\n' "$out"
    fail "App-1.0.typelib does not work with Mp-1.typelib from Python"
  fi
else
  echo "note: /usr/bin/python3 has no gi (python3-gi): typelibs not loaded"
fi

exit "$status"
