#!/usr/bin/env bash
# Builds .tools/venv (barman-cloud 3.19, WAL-E 1.1.1) on /usr/bin/python3 so the postgres user can run them
# from archive_command / restore_command (it cannot enter /root; see shared FIELD-NOTES.md). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="$ROOT/.tools/venv"
SYS_PY=/usr/bin/python3
BARMAN_SPEC='barman[cloud]>=3.19,<3.20'
WALE_SPEC='wal-e==1.1.1'
STAMP="$VENV/.tools-ok"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi

if [ ! -x "$SYS_PY" ]; then
  echo "setup-tools: $SYS_PY is missing (install Debian python3)" >&2
  exit 1
fi

# venv + ensurepip come from Debian's python3-venv
if ! "$SYS_PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup-tools: installing Debian python3-venv"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$BARMAN_SPEC $WALE_SPEC" ] \
   && [ -x "$VENV/bin/barman-cloud-backup" ] && [ -x "$VENV/bin/wal-e" ]; then
  echo "tools venv: up to date ($VENV)"
else
  echo "tools venv: building $VENV"
  rm -rf "$VENV"
  mkdir -p "$ROOT/.tools"
  "$SYS_PY" -m venv "$VENV"
  # (grep drops pip's notes about absent local index mirrors configured on some machines)
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip 2>&1 | { grep -v "is ignored: it is neither" || true; }
  "$VENV/bin/pip" install -q --disable-pip-version-check "$BARMAN_SPEC" boto3 "$WALE_SPEC" boto gevent \
    2>&1 | { grep -v "is ignored: it is neither" || true; }
  echo "$BARMAN_SPEC $WALE_SPEC" > "$STAMP"
fi

# Every directory from / down to the venv must be searchable by postgres, and the venv readable.
dir="$VENV"
while [ "$dir" != "/" ]; do
  if [ "$(( 0$(stat -c %a "$dir") & 01 ))" = 0 ]; then
    echo "setup-tools: making $dir searchable (o+x) for the postgres user"
    chmod o+x "$dir"
  fi
  dir="$(dirname "$dir")"
done
chmod -R o+rX "$ROOT/.tools"

if id postgres >/dev/null 2>&1; then
  for tool in barman-cloud-wal-archive wal-e; do
    if ! runuser -u postgres -- "$VENV/bin/$tool" --help >/dev/null 2>&1; then
      echo "setup-tools: postgres cannot run $VENV/bin/$tool" >&2
      exit 1
    fi
  done
fi
echo "tools venv: ok ($("$VENV/bin/barman-cloud-backup" --version 2>&1 | tail -1); wal-e $("$VENV/bin/pip" show wal-e 2>/dev/null | sed -n 's/^Version: //p'))"
