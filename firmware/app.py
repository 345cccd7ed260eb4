"""The doorbell's one composition root: every way of running it is wired here.

``doorbell run`` on a Pi, ``doorbell run --sim``, ``doorbell sim``, the demo and the
tests all call :func:`build` with their own camera, pins, clock and event sink; the
parts and the way they are connected are the same everywhere.

Example::

    bell = build(config, camera, MockFactory(), SimClock(), sink=print)
    bell.start()            # camera callbacks flow, the uplink (if configured) connects
    ...
    bell.close()            # the clip in progress is finished, nothing recorded is lost
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from firmware.camera.base import CameraBackend
from firmware.clock import Clock
from firmware.config import Config
from firmware.controller import Controller, DoorbellEvent
from firmware.gpio import DoorbellIO
from firmware.local_link import HomeAssistantLink, SnapshotTap
from firmware.log_proof import LogProofs
from firmware.owner_masks import OwnerMasks
from firmware.store import ClipStore
from firmware.uplink import Uplink
from firmware.witness import LogWitness
from protocol.crypto import unb64
from protocol.topics import LOG_HEAD

Sink = Callable[[DoorbellEvent], None]


class MissingOwner(ValueError):
    """The config names no owner to encrypt clips to."""


@dataclass
class Doorbell:
    """The wired doorbell: what :func:`build` returns."""

    config: Config
    clock: Clock
    camera: CameraBackend
    io: DoorbellIO
    store: ClipStore
    controller: Controller
    uplink: Uplink | None
    witness: LogWitness | None = None
    home: HomeAssistantLink | None = None
    _closed: bool = field(default=False, repr=False)

    def start(self) -> None:
        """Start the camera's callbacks, then the relay link (commands need the store)."""
        self.controller.start()
        if self.witness is not None:
            self.witness.start()
        if self.uplink is not None:
            self.uplink.start(self.store, apply_masks=self.controller.submit)
        if self.home is not None:
            self.home.start()

    def run_forever(self, heartbeat: Callable[[], None] | None = None) -> None:
        """The controller thread, until a :class:`~firmware.events.Stop` is submitted."""
        self.controller.run_forever(heartbeat=heartbeat)

    def close(self) -> None:
        """Finish the clip in progress, then release the camera, pins and the link."""
        if self._closed:
            return
        self._closed = True
        self.controller.shutdown()
        self.camera.stop()
        self.io.close()
        if self.uplink is not None:
            self.uplink.stop()
        if self.witness is not None:
            self.witness.stop()
        if self.home is not None:
            self.home.stop()


def build(
    config: Config,
    camera: CameraBackend,
    pins: Any,
    clock: Clock,
    sink: Sink,
    *,
    owner_box_public: bytes | None = None,
    finaliser: Executor | None = None,
) -> Doorbell:
    """Wire a doorbell from its config and its hardware.

    ``pins`` is a gpiozero pin factory (``None``: gpiozero's default on a Pi).
    ``sink`` sees every event; when ``config.mqtt.enabled`` the uplink's durable
    announcer sees it first.  ``owner_box_public`` overrides the config's owner key
    (the simulator makes an owner up when none is provisioned).
    """
    box_public = owner_box_public
    if box_public is None:
        if config.owner.box_public is None:
            raise MissingOwner(
                "owner.box_public is not set: provisioning writes the owner's public keys "
                "(make them with: footage keys new)"
            )
        box_public = unb64(config.owner.box_public)
    store = ClipStore(config.device.data_dir, box_public)
    uplink = Uplink(config) if config.mqtt.enabled else None
    emit = sink
    if uplink is not None:
        announce = uplink.announce

        def emit(ev: DoorbellEvent) -> None:
            announce(ev)
            sink(ev)

    home, ctl_camera = None, camera
    if config.home_assistant.enabled:
        # The owner's broker: its own link, first in line (no disk on its way).
        home = HomeAssistantLink(
            config.device.id,
            config.home_assistant,
            config.device.data_dir,
            relay_connected=_relay_state(uplink) if uplink is not None else None,
        )
        ctl_camera = SnapshotTap(camera, home.on_snapshot)  # type: ignore[assignment]
        relay_emit, on_home = emit, home.on_event

        def emit(ev: DoorbellEvent) -> None:
            on_home(ev)
            relay_emit(ev)

    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    io = DoorbellIO(config.gpio, events.put, clock, pin_factory=pins)
    owner_masks = None
    if config.owner.sign_public is not None:
        owner_masks = OwnerMasks(
            config.device.data_dir, unb64(config.owner.sign_public), config.device.id
        )
    controller = Controller(
        config,
        clock,
        ctl_camera,
        io,
        store,
        emit,
        finaliser=finaliser,
        events=events,
        owner_masks=owner_masks,
    )
    witness = None
    if uplink is not None and config.log.relay_url:
        key = unb64(config.log.key) if config.log.key else None
        state = config.device.data_dir / "witness.json"
        witness = LogWitness(
            state,
            config.log.relay_url,
            key,
            sink,
            refuse_s=config.log.refuse_s,
            poll_s=config.log.poll_s,
            max_age_s=config.log.max_age_s,
        )
        uplink.taps[LOG_HEAD] = witness.on_head
        if key is not None:  # log entries are proven only against the pinned key
            proofs = LogProofs(uplink.outbox, witness, key, bound_s=config.log.refuse_s)
            witness.after.append(proofs.poll)
    return Doorbell(config, clock, camera, io, store, controller, uplink, witness, home)


def _relay_state(uplink: Uplink) -> Callable[[], bool]:
    """The relay link's connected flag, read only (the relay link owns it)."""
    return lambda: uplink.link is not None and uplink.link.connected.is_set()
