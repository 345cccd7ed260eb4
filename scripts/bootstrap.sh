#!/usr/bin/env bash
# Make this checkout runnable: the Debian packages the project needs, then a .venv
# with the project and its dependencies.  Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# Debian package -> a command it provides (what we check for).
declare -A DEB_PACKAGES=(
    [ffmpeg]=ffprobe
    [mosquitto]=mosquitto
    [redis-server]=redis-server
    [systemd]=systemd-analyze
    # The boot test (tests/test_pi_boot.py): a Debian root booted with systemd as PID 1.
    [debootstrap]=debootstrap
    [systemd-container]=systemd-nspawn
    [iproute2]=ip
    [chromium]=chromium
    [npm]=npm
)

missing=()
for pkg in "${!DEB_PACKAGES[@]}"; do
    # Daemons live in /usr/sbin, which a non-root PATH may not include.
    PATH="$PATH:/usr/sbin:/sbin" command -v "${DEB_PACKAGES[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
        echo "bootstrap: install them with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"bootstrap: Python 3.11 or newer is needed, found {sys.version.split()[0]}")
PY

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "bootstrap: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    echo "bootstrap: installing the project and its dependencies into $VENV" >&2
    log="$VENV/pip-install.log"
    # pip's output goes to a log; it is shown only if the install fails.
    if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
           "$VENV/bin/python" -m pip install -e '.[dev]'; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "bootstrap: pip install failed; the full log is $log" >&2
        exit 1
    fi
    touch "$stamp"
fi
# The owners' web app's libsodium.js (npm, pinned by relay/web/package-lock.json).
./scripts/web_assets.sh
