"""Boot what ``doorbell provision`` writes, with systemd as PID 1, and watch it install.

A Debian Bookworm root (debootstrap, cached: testing/pi_root.py) stands in for the
Raspberry Pi OS card's root partition; the provisioned boot partition is bound at
/boot/firmware.  As on a Pi flashed with Imager's settings, Imager's firstrun.sh
runs first with no network (here: ``systemd-nspawn`` running it as a command), then
the card boots (``systemd-nspawn --boot``) with a veth to this host as its only
network, where a Mosquitto with the project's ACL listens.  The installer must run
once after network-online.target, install from the card (nothing else is
reachable), and start the doorbell (on simulated camera and pins: the test flag),
which announces ``online``.  A second boot must not reinstall; a broken card must
leave the system running with the reason in install.log on the boot partition.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from firmware.provision import build_wheel
from protocol.crypto import OwnerKeys
from relay.broker import ACL_FILE
from testing.localstack import LocalMosquitto
from testing.pi_root import (
    Container,
    Overlay,
    RootUnavailable,
    Veth,
    configure_cloud_init,
    enable_networkd,
    ensure_root,
    ensure_wheelhouse,
)

ROOT = Path(__file__).parent.parent
REQUIREMENTS = ROOT / "firmware" / "deploy" / "requirements-pi.txt"
DEVICE, PASSWORD = "front-door", "s3cret-" + secrets.token_hex(4)

# What Raspberry Pi Imager's OS customisation writes (its template's first and last
# lines; the middle sets the user, Wi-Fi and locale).
IMAGER_FIRSTRUN = """#!/bin/bash

set +e

CURRENT_HOSTNAME=`cat /etc/hostname | tr -d " \\t\\n\\r"`
echo doorbell >/etc/hostname
rm -f /boot/firstrun.sh
sed -i 's| systemd.run.*||g' /boot/cmdline.txt
exit 0
"""
CMDLINE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=abc-02 rootfstype=ext4 fsck.repair=yes "
    "rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot "
    "systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot "
    "systemd.unit=kernel-command-line.target\n"
)


IMAGER_USER_DATA = """#cloud-config
hostname: doorbell
manage_etc_hosts: true
"""


def _why_not() -> str | None:
    if sys.platform != "linux":
        return "the boot test needs Linux"
    if os.geteuid() != 0:
        return "the boot test needs root (debootstrap, overlay mounts, systemd-nspawn)"
    for exe in ("systemd-nspawn", "nsenter", "ip"):
        if not shutil.which(exe) and not shutil.which(exe, path="/usr/sbin:/sbin"):
            return f"{exe} is missing (scripts/bootstrap.sh installs systemd-container)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


@pytest.fixture(scope="module")
def roots() -> dict[str, Future[Path]]:
    # A cold cache builds both roots at once (each is minutes of download and dpkg).
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {suite: pool.submit(ensure_root, suite) for suite in ("bookworm", "trixie")}
        yield futures


def _root(roots: dict[str, Future[Path]], suite: str) -> Path:
    try:
        return roots[suite].result()
    except RootUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def debian_root(roots) -> Path:
    return _root(roots, "bookworm")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # What provision does without --wheel; built once for both boots.
    name, data = build_wheel()
    out = tmp_path_factory.mktemp("wheel") / name
    out.write_bytes(data)
    return out


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    try:
        return ensure_wheelhouse(REQUIREMENTS)
    except RootUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture
def veth():
    tag = secrets.token_hex(3)
    with Veth(tag, int(tag[:2], 16) % 250 + 2) as v:
        yield v


@pytest.fixture
def broker(tmp_path, veth):
    b = LocalMosquitto(tmp_path / "mosquitto")
    # A second listener on this host's end of the veth: the only address the card sees.
    with open(b.conf, "a") as f:
        # per_listener_settings: this listener names its accounts and ACL like the other
        # doorbell listener (relay.broker.render_config).
        f.write(
            f"\nlistener {b.port} {veth.host_ip}\nprotocol mqtt\n"
            f"password_file {b.password_file}\nallow_anonymous false\n"
            f"acl_file {ACL_FILE}\nuse_username_as_clientid true\n"
        )
    b.add_user(DEVICE, PASSWORD)
    b.add_user("relay", "relay-pw")
    b.start()
    yield b
    b.stop()


class StatusWatch:
    """Live (not retained) status messages of the doorbell, as the relay sees them."""

    def __init__(self, port: int) -> None:
        self.q: queue.Queue[dict] = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watch-" + DEVICE)
        self.c.username_pw_set("relay", "relay-pw")
        self.c.on_message = lambda _c, _u, m: (
            None if m.retain else self.q.put(json.loads(m.payload))
        )
        subscribed = queue.Queue()
        self.c.on_subscribe = lambda *_a: subscribed.put(True)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe(f"doorbell/{DEVICE}/status", qos=1)
        subscribed.get(timeout=10)

    def wait_for(self, state: str, timeout: float, alive: Container) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert alive.proc is not None and alive.proc.poll() is None, "the container stopped"
            try:
                msg = self.q.get(timeout=1)
            except queue.Empty:
                continue
            if msg.get("state") == state:
                return msg
        raise AssertionError(f"no live {state!r} status within {timeout} s")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def provision_card(
    tmp: Path, broker_host: str, port: int, wheel: Path, wheelhouse: Path, cloud_init: bool = False
) -> Path:
    boot = tmp / "bootfs"
    boot.mkdir()
    if cloud_init:
        # A Trixie image's boot partition after Imager 2 (cloud-init files, no firstrun.sh).
        (boot / "cmdline.txt").write_text(CMDLINE.split(" init=")[0] + "\n")
        (boot / "user-data").write_text(IMAGER_USER_DATA)
        (boot / "meta-data").write_text("instance-id: rpi-imager-1\n")
    else:
        (boot / "cmdline.txt").write_text(CMDLINE)
        (boot / "firstrun.sh").write_text(IMAGER_FIRSTRUN)
    bundle = tmp / "bundle.json"
    bundle.write_text(
        json.dumps(
            {
                "device": DEVICE,
                "owner": "Alice",
                "broker": {"host": broker_host, "port": port, "password": PASSWORD},
            }
        )
    )
    OwnerKeys.generate().save(tmp / "owner")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware.cli",
            "provision",
            "--bundle",
            str(bundle),
            "--boot",
            str(boot),
            "--owner-keys",
            str(tmp / "owner"),
            "--wheel",
            str(wheel),
            "--wheelhouse",
            str(wheelhouse),
            "--test-simulated-hardware",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return boot


def imager_first_run(root: Path, boot: Path, log: Path) -> None:
    """What the kernel command line's systemd.run does on the first power-on."""
    r = Container(root, boot, None, log).run("/bin/bash", "/boot/firmware/firstrun.sh")
    assert r.returncode == 0, r.stdout + r.stderr


def install_log(boot: Path) -> str:
    p = boot / "doorbell" / "install.log"
    return p.read_text() if p.exists() else ""


def test_first_boot_installs_from_the_card_once_and_the_doorbell_comes_online(
    tmp_path, debian_root, wheel, wheelhouse, veth, broker
):
    boot = provision_card(tmp_path, veth.host_ip, broker.port, wheel, wheelhouse)
    watch = StatusWatch(broker.relay_port)
    with Overlay(debian_root, tmp_path / "root") as root:
        enable_networkd(root.merged, veth.network_file())
        imager_first_run(root.merged, boot, tmp_path / "firstrun.log")
        assert "scheduled for the next boot" in install_log(boot)

        # First normal boot: install, start, announce.
        bell = Container(root.merged, boot, veth, tmp_path / "boot1.log").start()
        try:
            watch.wait_for("online", 240, bell)
            log = install_log(boot)
            assert log.count("starting") == 1, log
            assert "network-online.target: active" in log, log
            assert "trying the package index" not in log, "installed from the card"
            assert "done: doorbell.service enabled and started" in log, log
            r = bell.exec("systemctl", "is-enabled", "doorbell-install.service")
            assert r.stdout.strip() == "disabled", "the installer unhooked itself"
            r = bell.exec("stat", "-c", "%a %U", "/etc/doorbell/broker-password")
            assert r.stdout.strip() == "600 doorbell"
            assert not (boot / "doorbell" / "broker-password").exists(), "secret left the card"
            r = bell.exec(
                "/opt/doorbell/venv/bin/python", "-c", "import numpy; print(numpy.__file__)"
            )
            assert r.stdout.startswith("/usr/lib/python3/dist-packages/"), "numpy is the system's"
            # The deploy files are package data: provision works from the installed wheel.
            r = bell.exec(
                "/opt/doorbell/venv/bin/python",
                "-c",
                "from firmware.provision import DEPLOY; print((DEPLOY / 'install.sh').is_file())",
            )
            assert r.stdout.strip() == "True", r.stderr
        finally:
            assert bell.stop() is not None

        # Second boot: the doorbell starts again; nothing is installed again.
        again = Container(root.merged, boot, veth_again(veth), tmp_path / "boot2.log").start()
        try:
            watch.wait_for("online", 120, again)
            assert install_log(boot).count("starting") == 1, "the second boot reinstalled"
        finally:
            again.stop()
    watch.close()


def veth_again(veth: Veth) -> Veth:
    """The container end dies with the first boot's network namespace: make it anew."""
    subprocess.run(["ip", "link", "del", veth.host], capture_output=True)
    return veth.__enter__()


def test_a_broken_card_fails_the_install_but_not_the_pi(
    tmp_path, debian_root, wheel, wheelhouse, veth, broker
):
    boot = provision_card(tmp_path, veth.host_ip, broker.port, wheel, wheelhouse)
    # A card copied incompletely: one wheel is cut short.
    victim = next((boot / "doorbell" / "wheels").glob("paho_mqtt-*.whl"))
    victim.write_bytes(victim.read_bytes()[:1000])
    with Overlay(debian_root, tmp_path / "root") as root:
        enable_networkd(root.merged, veth.network_file())
        imager_first_run(root.merged, boot, tmp_path / "firstrun.log")
        bell = Container(root.merged, boot, veth, tmp_path / "boot1.log").start()
        try:
            deadline = time.monotonic() + 180
            while "doorbell-install: FAILED" not in install_log(boot):
                assert time.monotonic() < deadline, install_log(boot)
                assert bell.proc is not None and bell.proc.poll() is None, "the Pi went down"
                time.sleep(0.2)
            log = install_log(boot)
            assert "do not match SHA256SUMS" in log, log
            r = bell.exec("systemctl", "is-system-running", "--wait", timeout=120)
            # Up (degraded: one failed unit), not powering off or rebooting.
            assert r.stdout.strip() == "degraded", r.stdout + r.stderr
            r = bell.exec("systemctl", "is-enabled", "doorbell-install.service")
            assert r.stdout.strip() == "disabled", "a failure does not repeat on every boot"
        finally:
            bell.stop()


@pytest.fixture(scope="module")
def trixie_root(roots) -> Path:
    return _root(roots, "trixie")


@pytest.fixture(scope="module")
def wheelhouse_313() -> Path:
    try:
        return ensure_wheelhouse(REQUIREMENTS, "3.13")
    except RootUnavailable as err:
        pytest.skip(str(err))


def test_trixie_cloud_init_runs_the_installer_after_imagers_settings(
    tmp_path, trixie_root, wheel, wheelhouse_313, veth, broker
):
    boot = provision_card(tmp_path, veth.host_ip, broker.port, wheel, wheelhouse_313, True)
    watch = StatusWatch(broker.relay_port)
    with Overlay(trixie_root, tmp_path / "root") as root:
        enable_networkd(root.merged, veth.network_file())
        configure_cloud_init(root.merged)
        bell = Container(root.merged, boot, veth, tmp_path / "boot1.log").start()
        try:
            watch.wait_for("online", 240, bell)
            log = install_log(boot)
            assert log.count("starting") == 1, log
            assert "network-online.target: active" in log, log
            assert "trying the package index" not in log, "installed from the card"
            # Imager's part of user-data was applied too (merged, not replaced).
            r = bell.exec("hostname")
            assert r.stdout.strip() == "doorbell", r.stdout + r.stderr
        finally:
            bell.stop()
    watch.close()
