"""A Debian root file system that stands in for a Raspberry Pi OS card, for the boot test.

``debootstrap`` builds it once from Debian's packages (the suite Raspberry Pi OS is
built on) and caches it under ``/var/cache/open-doorbell/roots``; every test boots
an overlay of the cached root, so the cache is never changed and repeat runs skip
the download.  Only root can build or boot one.

Example::

    root = ensure_root("bookworm")      # minutes the first time, instant afterwards
    print(root)                         # /var/cache/open-doorbell/roots/bookworm-3f2a…

Run ``python -m testing.pi_root bookworm`` to warm the cache by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("OPEN_DOORBELL_CACHE", "/var/cache/open-doorbell")) / "roots"
MIRROR = os.environ.get("OPEN_DOORBELL_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# What a Raspberry Pi OS Lite card already has that the doorbell relies on: systemd
# as PID 1, Python with venv, numpy from the distribution (picamera2's simplejpeg is
# built against it), and a network stack that can tell when the network is up.
PACKAGES = {
    "bookworm": [
        "systemd",
        "systemd-sysv",
        "dbus",
        "iproute2",
        "python3",
        "python3-venv",
        "python3-numpy",
    ],
}
# Trixie's Raspberry Pi OS images configure the first boot through cloud-init.
# debootstrap does not resolve virtual packages: python3-cryptography (cloud-init's)
# needs python3-cffi-backend-api-*, which python3-cffi-backend provides.
PACKAGES["trixie"] = [*PACKAGES["bookworm"], "cloud-init", "python3-cffi-backend"]


class RootUnavailable(RuntimeError):
    """The root cannot be built here; the message says why."""


def root_path(suite: str) -> Path:
    digest = hashlib.sha256(" ".join([suite, MIRROR, *PACKAGES[suite]]).encode()).hexdigest()
    return CACHE / f"{suite}-{digest[:10]}"


def ensure_root(suite: str = "bookworm") -> Path:
    """The cached root for ``suite``, built with debootstrap if it is not there yet."""
    if suite not in PACKAGES:
        raise RootUnavailable(f"no package list for suite {suite!r}")
    root = root_path(suite)
    if (root / ".complete").exists():
        return root
    if os.geteuid() != 0:
        raise RootUnavailable("building a Debian root needs root (debootstrap)")
    exe = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin")
    if not exe:
        raise RootUnavailable("debootstrap is not installed (scripts/bootstrap.sh installs it)")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        exe,
        "--variant=minbase",
        f"--include={','.join(PACKAGES[suite])}",
        suite,
        str(partial),
        MIRROR,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        log = partial / "debootstrap" / "debootstrap.log"
        detail = log.read_text()[-800:] if log.exists() else (r.stdout + r.stderr)[-800:]
        raise RootUnavailable(f"debootstrap {suite} failed: {detail.strip()}")
    # A machine id is made per boot by the overlay's upper layer; an empty file here
    # makes systemd treat every boot of an overlay as a first boot ("uninitialized").
    (partial / "etc" / "machine-id").write_text("")
    (partial / ".complete").write_text(" ".join(cmd) + "\n")
    partial.rename(root)
    return root


if __name__ == "__main__":
    for name in sys.argv[1:] or ["bookworm"]:
        print(ensure_root(name))


def ensure_wheelhouse(requirements: Path, python_version: str = "3.11") -> Path:
    """The pinned dependency wheels for this machine's architecture, cached.

    The boot test's root is x86-64, so it installs the same pins (same hash list)
    for x86-64 that a Pi installs for aarch64.
    """
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:10]
    arch = os.uname().machine
    house = CACHE.parent / "wheels" / f"{arch}-cp{python_version.replace('.', '')}-{digest}"
    if (house / ".complete").exists():
        return house
    partial = house.with_name(house.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    platforms = [f"manylinux2014_{arch}", f"manylinux_2_28_{arch}"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *(arg for p in platforms for arg in ("--platform", p)),
        "--require-hashes",
        "--no-deps",
        "-r",
        str(requirements),
        "-d",
        str(partial),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RootUnavailable(f"pip download of the pinned wheels failed: {r.stderr[-500:]}")
    (partial / ".complete").write_text(" ".join(cmd) + "\n")
    partial.rename(house)
    return house


class Overlay:
    """A writable overlay of a cached root: the cache stays as debootstrap left it."""

    def __init__(self, lower: Path, folder: Path) -> None:
        self.lower, self.folder = lower, folder
        self.upper, self.work, self.merged = folder / "upper", folder / "work", folder / "merged"

    def __enter__(self) -> Overlay:
        for d in (self.upper, self.work, self.merged):
            d.mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(self.merged)],
            check=True,
            capture_output=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "--lazy", str(self.merged)], capture_output=True)


class Veth:
    """A veth pair made here: the host end gets ``host_ip``, the container gets the peer.

    Nothing routes beyond the pair, so the container reaches only the host's end.
    """

    def __init__(self, tag: str, subnet: int) -> None:
        self.host, self.peer = f"odbh{tag}", f"odbc{tag}"
        self.host_ip, self.peer_ip = f"10.231.{subnet}.1", f"10.231.{subnet}.2"

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def __enter__(self) -> Veth:
        self._ip("link", "add", self.host, "type", "veth", "peer", "name", self.peer)
        self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.host)
        self._ip("link", "set", self.host, "up")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host], capture_output=True)

    def network_file(self) -> str:
        """systemd-networkd's config for the container end (the Pi's network)."""
        return (
            f"[Match]\nName={self.peer}\n\n[Network]\nAddress={self.peer_ip}/30\n"
            # Nothing to wait for beyond the static address: no RA, no link-local.
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )


def enable_networkd(root: Path, network: str) -> None:
    """Let the root's systemd-networkd bring the link up and tell network-online.target."""
    etc = root / "etc" / "systemd"
    (etc / "network").mkdir(parents=True, exist_ok=True)
    (etc / "network" / "10-doorbell-test.network").write_text(network)
    links = {
        "multi-user.target.wants/systemd-networkd.service": "systemd-networkd.service",
        "sockets.target.wants/systemd-networkd.socket": "systemd-networkd.socket",
        "network-online.target.wants/systemd-networkd-wait-online.service": (
            "systemd-networkd-wait-online.service"
        ),
    }
    for link, unit in links.items():
        path = etc / "system" / link
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():
            path.symlink_to(f"/lib/systemd/system/{unit}")


def configure_cloud_init(root: Path) -> None:
    """cloud-init as Raspberry Pi OS's cloud-init images configure it (pi-gen's
    stage2/04-cloud-init/files/99_raspberry-pi.cfg: NoCloud seeded from the boot
    partition).  The test's network is systemd-networkd's, not netplan's, so
    cloud-init's network stage is turned off here (a test-only file)."""
    cfg = root / "etc" / "cloud" / "cloud.cfg.d"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "99_raspberry-pi.cfg").write_text(
        "datasource_list: [ NoCloud, None ]\n"
        "datasource:\n  NoCloud:\n    seedfrom: file:///boot/firmware\n"
    )
    (cfg / "99_doorbell-test-network.cfg").write_text("network: {config: disabled}\n")


class Container:
    """``systemd-nspawn --boot`` of a root with the card at /boot/firmware."""

    def __init__(self, root: Path, boot: Path, veth: Veth | None, log: Path) -> None:
        self.root, self.boot, self.veth, self.log = root, boot, veth, log
        self.proc: subprocess.Popen[bytes] | None = None

    def _base(self) -> list[str]:
        exe = shutil.which("systemd-nspawn") or "systemd-nspawn"
        return [
            exe,
            "--quiet",
            "--register=no",
            "--keep-unit",
            "-D",
            str(self.root),
            f"--bind={self.boot}:/boot/firmware",
        ]

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run one command in the root without booting it and without a network
        (as Imager's firstrun.sh runs, from the kernel command line)."""
        return subprocess.run(
            [*self._base(), "--private-network", *command],
            capture_output=True,
            text=True,
            timeout=300,
        )

    def start(self) -> Container:
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it until it exits
        self.proc = subprocess.Popen(
            [*self._base(), "--boot", "--private-network"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        if self.veth is not None:
            # nspawn's --network-interface= wants udev to have seen the link, and this
            # machine may have no udev: move the peer into the new namespace instead.
            # networkd in the container picks it up as a hot-plugged link.
            try:
                subprocess.run(
                    ["ip", "link", "set", self.veth.peer, "netns", str(self.leader())],
                    check=True,
                    capture_output=True,
                )
            except BaseException:
                self.stop()
                raise
        return self

    def leader(self, timeout: float = 30) -> int:
        """The container's PID 1 once it runs systemd (nspawn's child after its setup)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RootUnavailable(f"systemd-nspawn exited: {self.log.read_text()[-500:]}")
            for pid in children.read_text().split():
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return int(pid)
                except OSError:
                    continue  # an intermediate child that just exited
            time.sleep(0.01)
        raise RootUnavailable("systemd-nspawn started no container")

    def exec(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command inside the booted container (its namespaces, its PID 1)."""
        return subprocess.run(
            ["nsenter", "-t", str(self.leader()), "-m", "-u", "-i", "-n", "-p", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.exec("systemctl", "poweroff", "--no-block", timeout=10)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, OSError, IndexError, ValueError):
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
