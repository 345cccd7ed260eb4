#!/bin/bash
# First boot of a provisioned doorbell (Raspberry Pi OS Lite, Bookworm).
# Written to the boot partition by `doorbell provision`; run once as root by
# systemd.run from cmdline.txt, then it removes itself from cmdline.txt.
set -euo pipefail
BOOT=$(dirname "$(readlink -f "$0")")
SRC="$BOOT/doorbell"
log() { echo "doorbell-firstboot: $*" | tee -a /var/log/doorbell-firstboot.log; }

log "installing packages"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-picamera2 python3-venv ffmpeg

log "creating the doorbell user"
id doorbell >/dev/null 2>&1 || useradd --system --home-dir /var/lib/doorbell --shell /usr/sbin/nologin doorbell
usermod -aG gpio,video doorbell

log "installing the firmware"
# picamera2 and libcamera come from Debian: the venv must see system packages.
python3 -m venv --system-site-packages /opt/doorbell/venv
if compgen -G "$SRC/dist/*.whl" >/dev/null; then
    /opt/doorbell/venv/bin/pip install -q "$SRC"/dist/*.whl
else
    /opt/doorbell/venv/bin/pip install -q open-doorbell
fi

log "installing the configuration (secrets 0600, owned by the doorbell user)"
install -d -m 0750 -o root -g doorbell /etc/doorbell
install -m 0640 -o root -g doorbell "$SRC/doorbell.toml" /etc/doorbell/doorbell.toml
install -m 0600 -o doorbell -g doorbell "$SRC/broker-password" /etc/doorbell/broker-password
[ -f "$SRC/ca.crt" ] && install -m 0644 "$SRC/ca.crt" /etc/doorbell/ca.crt
[ -f "$SRC/client.crt" ] && install -m 0644 "$SRC/client.crt" /etc/doorbell/client.crt
if [ -f "$SRC/client.key" ]; then
    install -m 0600 -o doorbell -g doorbell "$SRC/client.key" /etc/doorbell/client.key
    shred -u "$SRC/client.key" 2>/dev/null || rm -f "$SRC/client.key"
fi
install -m 0644 "$SRC/doorbell.service" /etc/systemd/system/doorbell.service
# The FAT boot partition is readable by anyone with the card: remove the secret.
shred -u "$SRC/broker-password" 2>/dev/null || rm -f "$SRC/broker-password"

systemctl daemon-reload
systemctl enable doorbell.service

log "removing the first-boot hook"
sed -i 's| systemd.run=[^ ]*firstboot.sh[^ ]*||; s| systemd.run_success_action=[^ ]*||; s| systemd.unit=kernel-command-line.target||' "$BOOT/cmdline.txt"
log "done; rebooting into the doorbell"
