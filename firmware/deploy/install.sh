#!/bin/bash
# The doorbell's installer, run once as root on a provisioned card's first normal boot.
#
# Started by doorbell-install.service (Bookworm: after network-online.target) or by
# cloud-init's runcmd (Trixie: cloud-final runs after network-online.target).  It
# installs the wheels `doorbell provision` put beside it, offline first, into a venv
# that sees the system's picamera2, libcamera and numpy.
#
# Rules it keeps: it unhooks itself before doing anything else, so a failure never
# repeats on every boot; every line it says goes to install.log on the boot partition
# (readable from any computer); a failure stops the install, not the Pi (no
# `set -e`, no power-off, exit status 1 with the reason logged); run again after a
# success it does nothing.
set -uo pipefail

HERE=$(dirname "$(readlink -f "$0")")
LOG="$HERE/install.log"
VENV=/opt/doorbell/venv
STATE=/var/lib/doorbell-install
UNIT_DIR=/etc/systemd/system

log() {
    local line
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) doorbell-install: $*"
    echo "$line"
    echo "$line" >>"$LOG" 2>/dev/null || true
}
fail() {
    log "FAILED: $*"
    log "the Pi stays up; fix the cause and run: sudo bash $HERE/install.sh"
    sync
    exit 1
}
run() {
    # Run a command with its output in the log; fail with its name if it fails.
    local what=$1
    shift
    if ! "$@" >>"$LOG" 2>&1; then
        fail "$what (command: $*)"
    fi
}

log "starting (card: $HERE; network-online.target: $(systemctl is-active network-online.target 2>&1))"

# 1. Unhook first: whatever happens next, the next boot does not run us again.
if [ -e "$UNIT_DIR/multi-user.target.wants/doorbell-install.service" ]; then
    rm -f "$UNIT_DIR/multi-user.target.wants/doorbell-install.service"
    log "unhooked doorbell-install.service from later boots"
fi

# 2. Idempotent: the same artefact installed before means there is nothing to do.
digest=$(sha256sum "$HERE/SHA256SUMS" 2>/dev/null | cut -d' ' -f1)
if [ -n "$digest" ] && [ "$(cat "$STATE/installed" 2>/dev/null)" = "$digest" ]; then
    log "already installed from this card; nothing to do"
    exit 0
fi

# 3. The card's files are what provisioning wrote (a half-copied card stops here).
[ -f "$HERE/SHA256SUMS" ] || fail "no SHA256SUMS on the card: provision it again"
(cd "$HERE" && sha256sum --quiet --check SHA256SUMS) >>"$LOG" 2>&1 ||
    fail "the card's files do not match SHA256SUMS (copied incompletely?): provision it again"

SIM=0
if [ -f "$HERE/test-simulated-hardware" ]; then
    # Test-only: the boot test has no camera or pins; the service runs --hardware sim.
    SIM=1
    log "TEST FLAG: the doorbell will run on simulated camera and pins"
fi

# 4. Debian packages: only what is missing, so an image that has them needs no network.
need=(python3-venv)
[ "$SIM" = 1 ] || need+=(python3-picamera2 python3-lgpio)
missing=()
for pkg in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run "apt-get update (is the network up?)" apt-get update -q
    run "apt-get install ${missing[*]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "Debian packages present: ${need[*]}"
fi

# 5. The service account, in the groups that own /dev/gpiochip* and the camera
#    (Raspberry Pi OS has both; the unit's SupplementaryGroups= needs them to exist).
if ! id doorbell >/dev/null 2>&1; then
    run "create the doorbell user" useradd --system --home-dir /var/lib/doorbell \
        --shell /usr/sbin/nologin doorbell
fi
for group in gpio video; do
    getent group "$group" >/dev/null || run "create group $group" groupadd --system "$group"
    run "add doorbell to $group" usermod -aG "$group" doorbell
done

# 6. The firmware: a venv over the system's packages (picamera2, libcamera, numpy,
#    lgpio come from apt; a pip numpy would break picamera2's simplejpeg).
if [ ! -x "$VENV/bin/python" ]; then
    run "create the venv" python3 -m venv --system-site-packages "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
log "installing the pinned dependencies from the card"
if ! "${PIP[@]}" install --no-index --find-links "$HERE/wheels" --require-hashes --no-deps \
    -r "$HERE/requirements.txt" >>"$LOG" 2>&1; then
    log "the card lacks a wheel for this Pi; trying the package index (same hashes)"
    run "pip install the pinned dependencies" "${PIP[@]}" install --require-hashes --no-deps \
        -r "$HERE/requirements.txt"
fi
wheel=$(ls "$HERE"/wheels/open_doorbell-*.whl 2>/dev/null | head -n 1)
[ -n "$wheel" ] || fail "no open_doorbell wheel on the card: provision it again"
run "pip install $(basename "$wheel")" "${PIP[@]}" install --no-index --no-deps --force-reinstall "$wheel"
run "the firmware imports (numpy from the system?)" "$VENV/bin/python" -c \
    "import numpy, av, gpiozero, paho.mqtt, firmware.app"
log "firmware $("$VENV/bin/doorbell" --version 2>&1) installed in $VENV"

# 7. Configuration: the password leaves the card (FAT has no permissions).
run "create /etc/doorbell" install -d -m 0750 -o root -g doorbell /etc/doorbell
run "install the config" install -m 0640 -o root -g doorbell "$HERE/doorbell.toml" /etc/doorbell/doorbell.toml
if [ -f "$HERE/broker-password" ]; then
    run "install the broker password" install -m 0600 -o doorbell -g doorbell \
        "$HERE/broker-password" /etc/doorbell/broker-password
fi
if [ -f "$HERE/ca.crt" ]; then
    run "install the CA certificate" install -m 0644 "$HERE/ca.crt" /etc/doorbell/ca.crt
fi
# relay devices add --cert: the certificate is the doorbell's broker identity.
if [ -f "$HERE/client.crt" ] && [ -f "$HERE/client.key" ]; then
    run "install the client certificate" install -m 0644 "$HERE/client.crt" /etc/doorbell/client.crt
    run "install the client key" install -m 0600 -o doorbell -g doorbell \
        "$HERE/client.key" /etc/doorbell/client.key
fi

# 8. The service; started now, no reboot needed.
run "install doorbell.service" install -m 0644 "$HERE/doorbell.service" "$UNIT_DIR/doorbell.service"
dropin="$UNIT_DIR/doorbell.service.d"
rm -f "$dropin/test-simulated-hardware.conf"
if [ "$SIM" = 1 ]; then
    mkdir -p "$dropin"
    printf '%s\n' '[Service]' 'Environment=DOORBELL_HARDWARE=sim' \
        >"$dropin/test-simulated-hardware.conf"
fi
run "systemctl daemon-reload" systemctl daemon-reload
run "enable doorbell.service" systemctl enable doorbell.service
run "start doorbell.service" systemctl start --no-block doorbell.service

# 9. Done: remember which artefact, then remove the secret from the card.
mkdir -p "$STATE"
echo "$digest" >"$STATE/installed"
for secret in broker-password client.key; do
    if [ -f "$HERE/$secret" ]; then
        shred -u "$HERE/$secret" 2>/dev/null || rm -f "$HERE/$secret"
    fi
done
log "done: doorbell.service enabled and started"
sync
exit 0
