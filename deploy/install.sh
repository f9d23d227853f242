#!/usr/bin/env bash
# Install (or upgrade) Ponder on this host from a `make dist` directory, offline. Run as root.
#
#   deploy/install.sh [--dist DIR] [--destdir DIR] [--python PYTHON]
#   deploy/install.sh --rollback [--destdir DIR]
#   deploy/install.sh --uninstall [--purge] [--destdir DIR]
#
# Lays out, creating what is missing and leaving what is there:
#   user/group ponder          system account, no login shell, home /var/lib/ponder (not created by useradd)
#   /opt/ponder/releases/ID    a virtualenv per dist build, installed with pip --no-index from DIST
#   /opt/ponder/current        symlink to the release in service (the units run current/bin/...)
#   /opt/ponder/previous       the one before it: `--rollback` swaps the two
#   /etc/ponder/ponder.toml    every setting with its default, commented (python -m ponderd.sample_config)
#   /etc/ponder/policy.toml    policies/default.toml
#   /etc/ponder/tls/           for certificates (0750 root:ponder)
#   /var/lib/ponder            state: 0700 ponder:ponder, and backups/ in it
#   /etc/systemd/system/       ponderd.service, ponder-backup.service, ponder-backup.timer (where
#                              units an administrator installs belong; /usr/lib/systemd/system is the
#                              distribution packages')
#
# A file in /etc/ponder that exists is never overwritten: if the shipped one
# differs it is written beside it as FILE.new, and this says so. Units are
# replaced (they are the release's; local changes belong in drop-ins:
# `systemctl edit ponderd`). Running it twice changes nothing the second time.
#
# DESTDIR (or --destdir) stages everything under a directory instead of /, for
# tests and image builds: the user is added to DESTDIR/etc/passwd (which must
# exist), nothing touches systemd, and the virtualenv's scripts name the staged
# path (a venv is not relocatable: install on the host itself to run it).
#
# --uninstall stops and disables the units and removes what install put there:
# the units, /opt/ponder, and the files in /etc/ponder it wrote that nobody
# changed (an edited ponder.toml or policy.toml, and tls/, stay, and it says
# so). The state directory /var/lib/ponder (the ledger, keys, backups) and
# the ponder user stay. --purge removes those too, and all of /etc/ponder.
set -euo pipefail
# The release is built from the dist alone: a PYTHONPATH here (a checkout, a developer shell)
# would make pip count packages found there as installed and leave them out.
unset PYTHONPATH PYTHONHOME PYTHONUSERBASE

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
DIST=dist
ROOT=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
ROLLBACK=0
UNINSTALL=0
PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    --dist) DIST=$2; shift 2 ;;
    --destdir) ROOT=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --rollback) ROLLBACK=1; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument $1" >&2; usage ;;
  esac
done
ROOT=${ROOT%/}
PREFIX=/opt/ponder
ETC=/etc/ponder
STATE=/var/lib/ponder
UNITS=/etc/systemd/system
USER_NAME=ponder

say() { echo "install: $*"; }
die() { echo "install: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it creates a system user and writes /opt, /etc and /var/lib)"
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall"

# --- uninstall: what install put here goes; the state stays unless --purge ----
if [ "$UNINSTALL" = 1 ]; then
  if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now ponderd.service ponder-backup.timer ponder-backup.service 2>/dev/null || true
  fi
  for unit in ponderd.service ponder-backup.service ponder-backup.timer; do
    if [ -e "$ROOT$UNITS/$unit" ]; then
      rm -f "$ROOT$UNITS/$unit" && say "removed $UNITS/$unit"
    fi
  done
  if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
  if [ -d "$ROOT$UNITS/ponderd.service.d" ]; then
    say "kept $UNITS/ponderd.service.d (your drop-ins): remove it yourself if you no longer want them"
  fi
  # /etc/ponder: what install wrote and nobody changed goes (compared while the release can still render it).
  if [ -d "$ROOT$ETC" ]; then
    if [ "$PURGE" = 1 ]; then
      rm -rf "$ROOT$ETC" && say "removed $ETC (--purge)"
    else
      shipped=$(mktemp)
      trap 'rm -f "$shipped"' EXIT
      rm -f "$ROOT$ETC/ponder.toml.new" "$ROOT$ETC/policy.toml.new"
      if [ -x "$ROOT$PREFIX/current/bin/python" ] \
        && "$ROOT$PREFIX/current/bin/python" -m ponderd.sample_config --state-dir "$STATE" \
             --policy-file "$ETC/policy.toml" --output "$shipped" 2>/dev/null \
        && cmp -s "$shipped" "$ROOT$ETC/ponder.toml"; then
        rm -f "$ROOT$ETC/ponder.toml"
      fi
      if cmp -s "$REPO/policies/default.toml" "$ROOT$ETC/policy.toml"; then
        rm -f "$ROOT$ETC/policy.toml"
      fi
      rmdir "$ROOT$ETC/tls" 2>/dev/null || true
      rmdir "$ROOT$ETC" 2>/dev/null && say "removed $ETC" \
        || say "kept $ETC: it holds files you changed or added ($(cd "$ROOT$ETC" && ls -A | tr '\n' ' '))"
    fi
  fi
  if [ -d "$ROOT$PREFIX" ]; then
    rm -rf "$ROOT$PREFIX" && say "removed $PREFIX (every release)"
  fi
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ROOT$STATE" && say "removed $STATE: the ledger, keys and backups (--purge)"
    if grep -q "^$USER_NAME:" "$ROOT/etc/passwd" 2>/dev/null; then
      userdel ${ROOT:+--prefix "$ROOT"} "$USER_NAME" && say "removed user $USER_NAME"
    fi
    if grep -q "^$USER_NAME:" "$ROOT/etc/group" 2>/dev/null; then
      groupdel ${ROOT:+--prefix "$ROOT"} "$USER_NAME" 2>/dev/null && say "removed group $USER_NAME" || true
    fi
  else
    [ -d "$ROOT$STATE" ] && say "kept $STATE (the ledger, keys and backups) and the $USER_NAME user: --uninstall --purge removes them"
  fi
  say "uninstalled${ROOT:+ (from $ROOT)}"
  exit 0
fi

# Swap `current` and `previous`: the release before the last install is back in service.
if [ "$ROLLBACK" = 1 ]; then
  cur=$(readlink "$ROOT$PREFIX/current" || true)
  prev=$(readlink "$ROOT$PREFIX/previous" || true)
  [ -n "$prev" ] && [ -d "$ROOT$PREFIX/$prev" ] || die "no previous release to roll back to in $ROOT$PREFIX"
  ln -sfn "$prev" "$ROOT$PREFIX/current.tmp" && mv -T "$ROOT$PREFIX/current.tmp" "$ROOT$PREFIX/current"
  ln -sfn "$cur" "$ROOT$PREFIX/previous.tmp" && mv -T "$ROOT$PREFIX/previous.tmp" "$ROOT$PREFIX/previous"
  say "current is now ${prev#releases/} (was ${cur#releases/}); run: systemctl restart ponderd"
  say "a database the newer release migrated stays migrated: restore the backup taken before the upgrade if the older one refuses it"
  exit 0
fi

# --- the dist directory ---------------------------------------------------
[ -f "$DIST/BUILD-INFO" ] && [ -f "$DIST/requirements.txt" ] || die "$DIST is not a dist directory: build one with \`make dist\`"
info() { sed -n "s/^$1=//p" "$DIST/BUILD-INFO"; }
release=$(info release)
want_python=$(info python)
have_python=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || die "no $PYTHON here: install Python $want_python (and its venv module), or pass --python"
[ "$have_python" = "$want_python" ] \
  || die "$DIST was built for Python $want_python but $PYTHON is $have_python: build the dist with the hosts' Python, or pass --python"
[ "$(info machine)" = "$(uname -m)" ] || die "$DIST was built for $(info machine), this host is $(uname -m)"
(cd "$DIST" && sha256sum --check --quiet SHA256SUMS) || die "$DIST: a wheel does not match SHA256SUMS; copy the dist again"

# --- user and group -------------------------------------------------------
passwd="$ROOT/etc/passwd"
[ -f "$passwd" ] || die "no $passwd: a DESTDIR install needs the image's etc/passwd and etc/group"
if ! grep -q "^$USER_NAME:" "$ROOT/etc/group"; then
  groupadd --system ${ROOT:+--prefix "$ROOT"} "$USER_NAME"
  say "created group $USER_NAME"
fi
if ! grep -q "^$USER_NAME:" "$passwd"; then
  nologin=$(command -v nologin || echo /usr/sbin/nologin)
  useradd --system ${ROOT:+--prefix "$ROOT"} --gid "$USER_NAME" --home-dir "$STATE" --no-create-home \
    --shell "$nologin" --comment "Ponder daemon" "$USER_NAME"
  say "created system user $USER_NAME (no login shell)"
fi
# Numeric ids from the (staged) passwd file: chown by name would ask the running system's.
uid=$(awk -F: -v u="$USER_NAME" '$1 == u { print $3 }' "$passwd")
gid=$(awk -F: -v g="$USER_NAME" '$1 == g { print $3 }' "$ROOT/etc/group")

# --- the release ------------------------------------------------------------
install -d -m 0755 -o 0 -g 0 "$ROOT$PREFIX" "$ROOT$PREFIX/releases" "$ROOT$PREFIX/doc"
rel="$ROOT$PREFIX/releases/$release"
if [ -f "$rel/BUILD-INFO" ]; then
  say "release $release is installed already"
else
  rm -rf "$rel"
  say "installing release $release into $PREFIX/releases (offline, from $DIST)"
  "$PYTHON" -m venv "$rel"
  # No pip configuration from this host: only the dist's wheels may be installed.
  PIP_CONFIG_FILE=/dev/null "$rel/bin/python" -m pip install --quiet --no-index --disable-pip-version-check \
    --find-links "$DIST" -r "$DIST/requirements.txt"
  if [ -s "$DIST/no-deps.txt" ]; then
    PIP_CONFIG_FILE=/dev/null "$rel/bin/python" -m pip install --quiet --no-index --disable-pip-version-check \
      --no-deps --find-links "$DIST" -r "$DIST/no-deps.txt"
  fi
  "$rel/bin/python" -c 'import ponderd.serve.server, ponderd.backup' || die "release $release does not import; nothing switched"
  cp "$DIST/BUILD-INFO" "$rel/BUILD-INFO"  # last: its presence marks a whole release
fi
cur=$(readlink "$ROOT$PREFIX/current" || true)
if [ "$cur" != "releases/$release" ]; then
  if [ -n "$cur" ]; then
    ln -sfn "$cur" "$ROOT$PREFIX/previous.tmp" && mv -T "$ROOT$PREFIX/previous.tmp" "$ROOT$PREFIX/previous"
  fi
  ln -sfn "releases/$release" "$ROOT$PREFIX/current.tmp" && mv -T "$ROOT$PREFIX/current.tmp" "$ROOT$PREFIX/current"
  say "current -> $release${cur:+ (previous: ${cur#releases/})}"
fi
# Keep the release in service and the one before it; older ones go.
prev=$(readlink "$ROOT$PREFIX/previous" || true)
for dir in "$ROOT$PREFIX"/releases/*; do
  name="releases/$(basename "$dir")"
  if [ "$name" != "releases/$release" ] && [ "$name" != "$prev" ]; then
    rm -rf "$dir" && say "removed old release ${name#releases/}"
  fi
done
install -m 0644 -o 0 -g 0 "$REPO/docs/operations.md" "$ROOT$PREFIX/doc/operations.md"

# --- /etc/ponder: the operator's files, never overwritten --------------------
# place SOURCE TARGET: install 0640 root:ponder, or write TARGET.new beside a different one.
place() {
  if [ ! -e "$2" ]; then
    install -m 0640 -o 0 -g "$gid" "$1" "$2" && say "wrote ${2#"$ROOT"}"
  elif cmp -s "$1" "$2"; then
    :
  else
    install -m 0640 -o 0 -g "$gid" "$1" "$2.new"
    say "kept ${2#"$ROOT"} (yours); the shipped one is ${2#"$ROOT"}.new: compare with diff and merge what you want"
  fi
}
install -d -m 0750 -o 0 -g "$gid" "$ROOT$ETC" "$ROOT$ETC/tls"
generated=$(mktemp)
trap 'rm -f "$generated"' EXIT
"$rel/bin/python" -m ponderd.sample_config --state-dir "$STATE" --policy-file "$ETC/policy.toml" --output "$generated"
place "$generated" "$ROOT$ETC/ponder.toml"
place "$REPO/policies/default.toml" "$ROOT$ETC/policy.toml"

# --- state ------------------------------------------------------------------
install -d -m 0755 -o 0 -g 0 "$ROOT/var/lib"
install -d -m 0700 -o "$uid" -g "$gid" "$ROOT$STATE" "$ROOT$STATE/backups"

# --- units ------------------------------------------------------------------
install -d -m 0755 "$ROOT$UNITS"
for unit in ponderd.service ponder-backup.service ponder-backup.timer; do
  if ! cmp -s "$REPO/systemd/$unit" "$ROOT$UNITS/$unit"; then
    install -m 0644 -o 0 -g 0 "$REPO/systemd/$unit" "$ROOT$UNITS/$unit" && say "installed ${UNITS}/$unit"
  fi
done

if [ -n "$ROOT" ]; then
  say "done (staged in $ROOT; systemd not touched)"
  exit 0
fi
if [ ! -d /run/systemd/system ]; then
  say "done; systemd is not running here: once it is, systemctl enable --now ponder-backup.timer ponderd"
  exit 0
fi
systemctl daemon-reload
systemctl enable --now ponder-backup.timer
if systemctl is-active --quiet ponderd; then
  say "done; ponderd still runs the release it started with: systemctl restart ponderd (it drains first)"
else
  say "done; set [model] path and [tls] in $ETC/ponder.toml, then: systemctl enable --now ponderd"
fi
