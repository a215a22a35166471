# shellcheck shell=bash
# scripts/lib.sh: helpers shared by scripts/test and scripts/demo.
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Sourced, not run.  Defines MPPORT_ROOT (the repository root) and
# MPPORT_BUILDDIR (the meson build directory: $MPPORT_BUILDDIR if set,
# relative to the repository root unless absolute, else "build"), then cds
# to the repository root so the scripts work from any directory.

# Debian packages needed to configure, build and test mpport.  Add new build
# or test dependencies here; both scripts install whatever is missing.
MPPORT_DEBIAN_PACKAGES=(
  meson
  ninja-build
  pkg-config
  gcc
  libc6-dev
  libglib2.0-dev
  libgirepository1.0-dev
  gobject-introspection
  valac
  gettext
  python3
  valgrind
  dpkg-dev
  gjs
  python3-gi
  gir1.2-glib-2.0
  libgtk-4-dev
  gir1.2-gtk-4.0
  xvfb
  xauth
  gi-docgen
  git
  spin
  clang
  libclang-rt-14-dev
  dbus-daemon
)

MPPORT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MPPORT_BUILDDIR="${MPPORT_BUILDDIR:-build}"
cd "$MPPORT_ROOT" || return 1

mpport_log ()
{
  printf '==> %s\n' "$*" >&2
}

# Install the packages of MPPORT_DEBIAN_PACKAGES that dpkg does not list as
# installed.  Nothing touches apt when everything is there already.
mpport_install_deps ()
{
  local pkg status
  local -a missing=() sudo=()

  if ! command -v dpkg-query >/dev/null 2>&1; then
    mpport_log "no dpkg-query: not a Debian system, skipping package installation"
    mpport_log "make sure these (or your system's equivalents) are installed: ${MPPORT_DEBIAN_PACKAGES[*]}"
    return 0
  fi

  for pkg in "${MPPORT_DEBIAN_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}\n' "$pkg" 2>/dev/null || true)"
    if ! grep -qx 'installed' <<<"$status"; then
      missing+=("$pkg")
    fi
  done

  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi

  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      mpport_log "missing Debian packages: ${missing[*]}; run as root or install them first"
      return 1
    fi
  fi

  mpport_log "installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
}

# Configure MPPORT_BUILDDIR: a fresh setup, or a reconfigure of an existing
# build directory (wiped and set up again if the reconfigure fails, e.g.
# after a meson upgrade).  A build directory of another checkout is refused:
# the wipe would silently turn it into one of this checkout (to compare two
# builds, give the other one's mp-bench to scripts/bench --versus instead).
mpport_setup_build ()
{
  local info="$MPPORT_BUILDDIR/meson-info/meson-info.json" source
  local -a options=(-Ddocumentation=true)

  # werror is off by default (the top-level meson.build): a newer compiler's new
  # warning must not break a distribution's or a parent project's build. CI
  # (which exports CI=true) and MPPORT_WERROR=1 turn it on, for a fresh build
  # directory and a reconfigured one alike; otherwise the build directory keeps
  # whatever it was configured with.
  if [ "${CI:-}" = true ] || [ "${MPPORT_WERROR:-}" = 1 ]; then
    options+=(-Dwerror=true)
  fi

  if [ -f "$info" ]; then
    source="$(sed -n 's/.*"source": *"\([^"]*\)".*/\1/p' "$info")"
    if [ -n "$source" ] && [ "$(cd "$source" 2>/dev/null && pwd -P)" != "$(pwd -P)" ]; then
      mpport_log "$MPPORT_BUILDDIR is a build directory of $source, not of $MPPORT_ROOT: refusing to reconfigure it"
      return 1
    fi
  fi
  if [ -f "$MPPORT_BUILDDIR/meson-private/coredata.dat" ]; then
    meson setup --reconfigure "${options[@]}" "$MPPORT_BUILDDIR" ||
      meson setup --wipe "${options[@]}" "$MPPORT_BUILDDIR"
  else
    meson setup "${options[@]}" "$MPPORT_BUILDDIR"
  fi
}
