"""A doorbell's connection to its relay: outbox, announcer, MQTT link and command handler.

One object wires them the same way for ``doorbell run``, the demo and the tests::

    uplink = Uplink(config)                 # config.mqtt and config.owner must be set
    controller = Controller(..., emit=uplink.announce, ...)
    uplink.start(store)                     # commands need the store that holds the clips
"""

from __future__ import annotations

from collections.abc import Callable

from firmware.announce import Announcer
from firmware.config import Config
from firmware.consent import CommandHandler, NonceLedger
from firmware.controller import DoorbellEvent
from firmware.events import ApplyMasks
from firmware.mqtt_link import MqttLink
from firmware.outbox import Outbox
from firmware.spool import OutboxWriter
from firmware.store import ClipStore
from protocol.crypto import unb64


class Uplink:
    def __init__(self, config: Config) -> None:
        if config.owner.sign_public is None:
            raise ValueError("owner.sign_public is needed to check the owner's commands")
        self.config = config
        data = config.device.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(data / "outbox.sqlite", config.mqtt.confirm_timeout_s)
        # The controller's announcements go through a bounded memory queue and a
        # writer thread: a full disk delays them, never loses or blocks them.
        self.writer = OutboxWriter(self.outbox)
        self.writer.start()
        box = config.owner.box_public
        self.announcer = Announcer(config.device.id, self.writer, unb64(box) if box else None)
        self._ledger = NonceLedger(data / "approvals.sqlite")
        self.commands: CommandHandler | None = None
        self.link: MqttLink | None = None
        self.taps: dict[str, Callable[[bytes], None]] = {}
        """Topics the link follows besides commands (the log witness adds the log head)."""

    def announce(self, ev: DoorbellEvent) -> None:
        """The controller's event sink: durable in the outbox, then sent."""
        self.announcer(ev)

    def start(
        self, store: ClipStore, apply_masks: Callable[[ApplyMasks], None] | None = None
    ) -> None:
        """``apply_masks``: the controller's queue, which owns the privacy masks."""
        cfg = self.config
        assert cfg.owner.sign_public is not None
        self.commands = CommandHandler(
            cfg.device.id,
            unb64(cfg.owner.sign_public),
            store,
            self.announcer.message,
            self._ledger,
            apply_masks=apply_masks,
        )
        self.link = MqttLink(
            cfg.device.id, cfg.mqtt, self.outbox, self.commands.submit, data_dir=cfg.device.data_dir
        )
        self.link.taps.update(self.taps)
        self.commands.start()
        self.link.start()

    def stop(self) -> None:
        self.writer.stop()
        if self.link is not None:
            self.link.stop()
        if self.commands is not None:
            self.commands.stop()
