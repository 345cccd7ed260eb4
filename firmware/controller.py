"""The doorbell's brain: one thread, one queue, all the state.

Hardware callbacks (gpiozero's threads, the camera's thread) only put events on
:attr:`Controller.queue`.  The controller takes them one at a time, on the clock
it was given, and runs a small state machine::

    idle ──ring/motion──▶ recording ──quiet for post-roll, or max length──▶ idle
                                          └─▶ finaliser: MP4 + snapshot + metadata

A button press rings the chime and emits ``ring`` before anything else happens
(the latency that matters), then takes a snapshot and starts (or extends) a clip
whose first packets come from the pre-roll buffer.  Writing a clip happens on a
finaliser (a worker thread on the device, inline in simulation) that hands the
result back through the same queue.

Outbound events go to ``emit`` as :class:`DoorbellEvent`; the sink must not block
(on the device it is the MQTT outbox).
"""

from __future__ import annotations

import logging
import queue
import secrets
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from common.cli import disk_full
from firmware.camera.base import CameraBackend
from firmware.clock import Clock
from firmware.config import Config
from firmware.events import (
    ApplyMasks,
    ButtonEdge,
    ClipFailed,
    ClipWritten,
    PirEdge,
    Stop,
)
from firmware.masks import rasterize
from firmware.motion import MotionDetector
from firmware.mp4 import write_mp4
from firmware.owner_masks import OwnerMasks
from firmware.packet_spool import PacketSpool
from firmware.packets import EncodedPacket, LoresFrame
from firmware.ringbuffer import PacketRing
from firmware.store import ClipStore
from protocol.decisions import MaskUpdate

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 600.0


@dataclass(frozen=True)
class DoorbellEvent:
    """Something the doorbell announces: ring, motion_start/end, clip_saved, clip_deleted."""

    kind: str
    id: str
    t: float  # the controller's monotonic clock
    at: float  # UTC seconds
    data: dict[str, Any] = field(default_factory=dict)


class InlineExecutor(Executor):
    """Runs jobs at once, in the caller's thread: deterministic finalising for simulation."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as err:  # the job reports its own failures
            fut.set_exception(err)
        return fut


class Chime(Protocol):
    """The chime output as the controller sees it: on, off (DoorbellIO is one)."""

    def chime_on(self) -> None: ...
    def chime_off(self) -> None: ...


@dataclass
class _ActiveClip:
    id: str
    trigger: str
    trigger_t: float
    last_activity: float
    packets: PacketSpool  # on disk while recording: memory stays small at any bitrate
    snapshot: bytes | None = None
    clock_synced: bool = True


class Controller:
    """Owns the doorbell's state; see the module doc."""

    # Whether the wall clock is synchronised (firmware.timesync on a Pi; a simulated
    # clock always is).  A clip that started or ended without it is marked.
    clock_synced: Callable[[], bool] = staticmethod(lambda: True)

    def __init__(
        self,
        config: Config,
        clock: Clock,
        camera: CameraBackend,
        chime: Chime,
        store: ClipStore,
        emit: Callable[[DoorbellEvent], None],
        finaliser: Executor | None = None,
        detector: MotionDetector | None = None,
        events: queue.SimpleQueue[object] | None = None,
        owner_masks: OwnerMasks | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.camera = camera
        self.chime = chime
        self.store = store
        self._emit = emit
        self.finaliser = finaliser or InlineExecutor()
        # The one queue: pass it in to let GPIO devices made earlier feed it.
        self.queue: queue.SimpleQueue[object] = (
            events if events is not None else queue.SimpleQueue()
        )
        lores_mask = rasterize([m.polygon for m in config.masks], *config.camera.lores_size)
        self.detector = detector or MotionDetector.from_config(
            config.motion, config.camera.fps, mask=lores_mask
        )
        self.ring = PacketRing(config.ring_seconds, config.clips.buffer_max_bytes)
        # Privacy masks: the config's, plus the owner's signed set (firmware.owner_masks).
        self.owner_masks = owner_masks
        self.mask_update: MaskUpdate | None = None  # the owner's signed set in force
        self.masks_hash: str | None = None
        # After the masks change at time t, no packet captured before t may start a
        # pre-roll: the ring is emptied and refills from the first keyframe after t.
        self._mask_gate: float | None = None
        # Button debouncing and cooldown
        self._last_edge_t: float | None = None
        self._last_ring_t: float | None = None
        self._chime_off_at: float | None = None
        # Motion
        self._cam_active = False
        self._pir_active = False
        self._cam_seen_t = -1e18
        self._pir_seen_t = -1e18
        self.motion_active = False
        self._motion_id = ""
        # Clips
        self.clip: _ActiveClip | None = None
        self._finalising = 0
        self._next_retention = 0.0
        self._stopped = False
        self.counters: dict[str, int] = {
            "rings": 0,
            "presses_cooled_down": 0,
            "edges": 0,
            "clips_saved": 0,
            "clips_failed": 0,
            "clips_deleted": 0,
        }

    # ---------------------------------------------------------------- plumbing

    def submit(self, event: object) -> None:
        """Thread-safe: the only thing hardware callbacks call."""
        self.queue.put(event)

    def start(self) -> None:
        self._load_owner_masks()
        self.camera.start(on_packet=self.submit, on_lores=self.submit)
        self._enforce_retention(self.clock.monotonic())

    # ---------------------------------------------------------------- masks

    def effective_masks(self) -> list[list[tuple[float, float]]]:
        """The config's polygons and the owner's signed ones: what is never recorded."""
        polys = [list(m.polygon) for m in self.config.masks]
        if self.mask_update is not None:
            polys += self.mask_update.polygons()
        return polys

    def _apply_masks(self) -> None:
        """From the next frame on: camera (main stream before encoding, snapshots), motion,
        and the pre-roll (nothing encoded under the old masks starts a later clip)."""
        polys = self.effective_masks()
        self.camera.set_masks(polys)
        self.detector.set_mask(rasterize(polys, *self.config.camera.lores_size))
        self.ring.clear()
        self._mask_gate = self.clock.monotonic()
        self.camera.request_keyframe()

    def _load_owner_masks(self) -> None:
        """Before the first frame: the persisted signed set, re-verified (never a forged one)."""
        if self.owner_masks is None:
            return
        loaded = self.owner_masks.load()
        t = self.clock.monotonic()
        for why, code in loaded.problems:
            # Loud: on the record through the refusal path, and in the log.
            self.emit("masks_refused", t, command=None, code=code, reason=why)
        if loaded.update is None:
            # Nothing kept: never set, or both files deleted from the card.  The doorbell
            # cannot tell which, so it says what is in force, at every boot: no owner set
            # (a null hash).  A record whose last applied hash was a real set then shows
            # the masks went without a signed decision.
            self.emit("masks_applied", t, hash=None, masks=0)
        else:
            self.mask_update, self.masks_hash = loaded.update, loaded.hash
            self._apply_masks()
            self._mask_gate = None  # before the first frame: nothing to hold back
            self.emit(
                "masks_applied",
                t,
                hash=loaded.hash,
                masks=len(loaded.update.masks),
                update=loaded.signed,
            )
            if loaded.problems and loaded.signed is not None:
                try:  # the good copy replaces the refused one (it was reported above)
                    self.owner_masks.save(loaded.signed)
                except OSError as err:
                    log.error("could not repair the kept owner masks: %s", err)

    def _on_apply_masks(self, ev: ApplyMasks) -> None:
        t = self.clock.monotonic()
        held = self.mask_update
        if held is not None and ev.update.issued <= held.issued:
            why = (
                f"mask update issued at {ev.update.issued} is not newer than the one in "
                f"force ({held.issued}): refused, the masks are unchanged"
            )
            log.warning("%s", why)
            self.emit("masks_refused", t, command=ev.command_id, code="rollback", reason=why)
            return
        if ev.update.previous != self.masks_hash:
            # Continuity: the update must be built on the set in force.  One built on an
            # older set (another client's change not seen, or an older set a relay chose
            # to serve) would silently drop the masks added since; the owner's client
            # fetches the set in force and builds again.
            why = (
                "the doorbell holds a newer mask set than the one this change was built "
                f"on (held {self.masks_hash}, built on {ev.update.previous}): refused, "
                "the masks are unchanged"
            )
            log.warning("%s", why)
            self.emit("masks_refused", t, command=ev.command_id, code="stale", reason=why)
            return
        if self.owner_masks is not None:
            try:
                self.owner_masks.save(ev.signed)
            except OSError as err:
                why = f"the mask update could not be stored ({err}); the masks are unchanged"
                log.error("%s", why)
                self.emit("masks_refused", t, command=ev.command_id, code="other", reason=why)
                return
        self.mask_update, self.masks_hash = ev.update, ev.hash
        self._apply_masks()
        log.info("owner masks applied: %d polygons, %s", len(ev.update.masks), ev.hash)
        self.emit(
            "masks_applied",
            t,
            hash=ev.hash,
            masks=len(ev.update.masks),
            command=ev.command_id,
            update=ev.signed,
        )

    def process_pending(self) -> None:
        """Handle everything queued so far, then run due timers (used by simulation)."""
        while True:
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                break
            self._handle(event)
        self._tick(self.clock.monotonic())

    def run_forever(self, heartbeat: Callable[[], None] | None = None) -> None:
        """The controller thread: handle events until a :class:`Stop` arrives."""
        while not self._stopped:
            try:
                event = self.queue.get(timeout=0.02)
            except queue.Empty:
                event = None
            if event is not None:
                self._handle(event)
            self._tick(self.clock.monotonic())
            if heartbeat is not None:
                heartbeat()

    def shutdown(self) -> None:
        """Finish the clip in progress (nothing recorded is lost) and stop."""
        self.process_pending()
        if self.clip is not None:
            self._end_clip(self.clock.monotonic(), reason="shutdown")
        self.process_pending()
        self.chime.chime_off()
        self._stopped = True

    def _wall(self, t: float) -> float:
        return self.clock.wall() - (self.clock.monotonic() - t)

    def emit(self, kind: str, t: float, **data: Any) -> DoorbellEvent:
        ev = DoorbellEvent(kind, uuid.uuid4().hex, t, self._wall(t), data)
        try:
            self._emit(ev)
        except Exception:  # a broken sink must never stop the doorbell
            log.exception("event sink failed on %s", kind)
        return ev

    # ---------------------------------------------------------------- events

    def _handle(self, event: object) -> None:
        if isinstance(event, EncodedPacket):
            self._on_packet(event)
        elif isinstance(event, LoresFrame):
            self._on_lores(event)
        elif isinstance(event, ButtonEdge):
            self._on_button(event)
        elif isinstance(event, PirEdge):
            self._pir_active = event.active
            if event.active:
                self._pir_seen_t = event.t
            self._update_motion(event.t)
        elif isinstance(event, ClipWritten):
            self._on_clip_written(event)
        elif isinstance(event, ClipFailed):
            self._finalising -= 1
            self.counters["clips_failed"] += 1
            self.emit("clip_failed", self.clock.monotonic(), clip=event.clip_id, error=event.error)
        elif isinstance(event, ApplyMasks):
            self._on_apply_masks(event)
        elif isinstance(event, Stop):
            self.shutdown()
        else:
            log.error("controller: unknown event %r", event)

    def _on_button(self, ev: ButtonEdge) -> None:
        self.counters["edges"] += 1
        last_edge, self._last_edge_t = self._last_edge_t, ev.t
        if not ev.pressed:
            return
        # A contact chatters for a few ms on press and release: an edge that
        # follows another within the debounce time belongs to the same press.
        if last_edge is not None and ev.t - last_edge < self.config.gpio.debounce_s:
            return
        g = self.config.gpio
        if self._last_ring_t is None or ev.t - self._last_ring_t >= g.ring_cooldown_s:
            self._last_ring_t = ev.t
            self.chime.chime_on()
            self._chime_off_at = ev.t + g.chime_pulse_s
            self.counters["rings"] += 1
            ring = self.emit("ring", ev.t)
            snapshot = self._snapshot()
            if snapshot is not None:
                # For the owner's open page: sealed to the owner by the announcer.
                self.emit("ring_snapshot", ev.t, ring=ring.id, jpeg=snapshot)
            self._start_or_extend("ring", ev.t, snapshot)
        else:
            self.counters["presses_cooled_down"] += 1
            self._start_or_extend("ring", ev.t, None)

    def _snapshot(self) -> bytes | None:
        try:
            return self.camera.snapshot_jpeg()
        except Exception:
            log.exception("snapshot failed")
            return None

    def _on_lores(self, frame: LoresFrame) -> None:
        result = self.detector.update(frame.luma)
        self._cam_active = result.active
        if result.active:
            self._cam_seen_t = frame.t
        self._update_motion(frame.t)

    def _update_motion(self, t: float) -> None:
        m = self.config.motion
        if m.source == "camera":
            active = self._cam_active
        elif m.source == "pir":
            active = self._pir_active
        elif m.source == "either":
            active = self._cam_active or self._pir_active
        else:  # both, within a window of each other
            active = (self._cam_active or self._pir_active) and (
                t - self._cam_seen_t <= m.both_window_s and t - self._pir_seen_t <= m.both_window_s
            )
        if active and not self.motion_active:
            self.motion_active = True
            self._motion_id = self.emit("motion_start", t).id
            self._start_or_extend("motion", t, None)
        elif not active and self.motion_active:
            self.motion_active = False
            self.emit("motion_end", t, motion=self._motion_id)
        if active and self.clip is not None:
            self.clip.last_activity = max(self.clip.last_activity, t)

    def _on_packet(self, packet: EncodedPacket) -> None:
        gate = self._mask_gate
        if gate is not None and packet.keyframe and packet.t > gate:
            self._mask_gate = gate = None  # the first keyframe under the new masks
        if gate is None:
            self.ring.push(packet)
        clip = self.clip
        if clip is None:
            return
        # Packets already taken from the pre-roll must not be added twice.
        if clip.packets and packet.t <= clip.packets.last_t:
            return
        if not clip.packets and (not packet.keyframe or gate is not None):
            return  # nothing decodable (under the masks in force) yet; a keyframe was requested
        clip.packets.append(packet)

    # ---------------------------------------------------------------- clips

    def _start_or_extend(self, trigger: str, t: float, snapshot: bytes | None) -> None:
        clip = self.clip
        if clip is not None:
            clip.last_activity = max(clip.last_activity, t)
            if snapshot is not None and clip.snapshot is None:
                clip.snapshot = snapshot
            return
        packets = self.ring.preroll(self.config.clips.pre_roll_s, now=t)
        if not packets:
            self.camera.request_keyframe()
        stamp = datetime.fromtimestamp(self._wall(t), UTC).strftime("%Y%m%dT%H%M%S")
        self.clip = _ActiveClip(
            id=f"{stamp}-{secrets.token_hex(3)}",
            trigger=trigger,
            trigger_t=t,
            last_activity=t,
            packets=PacketSpool(self.config.device.data_dir / "spool", packets),
            snapshot=snapshot,
            clock_synced=self.clock_synced(),
        )

    def _tick(self, now: float) -> None:
        if self._chime_off_at is not None and now >= self._chime_off_at:
            self._chime_off_at = None
            self.chime.chime_off()
        clip = self.clip
        if clip is not None:
            c = self.config.clips
            if now - clip.trigger_t >= c.max_length_s:
                self._end_clip(now, reason="max_length")
                if self.motion_active:
                    # Still busy at the door: keep recording in a new clip.
                    self._start_or_extend("continuation", now, None)
            elif not self.motion_active and now - clip.last_activity >= c.post_roll_s:
                self._end_clip(now, reason="quiet")
        if now >= self._next_retention:
            self._enforce_retention(now)

    def _end_clip(self, now: float, reason: str) -> None:
        clip, self.clip = self.clip, None
        assert clip is not None
        if clip.packets.error is not None:
            err = clip.packets.error
            clip.packets.close()
            log.error("recording clip %s failed: %s", clip.id, err)
            self.counters["clips_failed"] += 1
            self.emit("clip_failed", now, clip=clip.id, error=f"{type(err).__name__}: {err}")
            return
        packets = clip.packets.until(now)
        if not packets:
            clip.packets.close()
            log.warning("clip %s ended before any keyframe arrived; nothing to save", clip.id)
            return
        cam = self.config.camera
        frame_s = 1.0 / cam.fps
        meta = {
            "id": clip.id,
            "device": self.config.device.id,
            "trigger": clip.trigger,
            "start": self._wall(packets[0].t),
            "end": self._wall(packets[-1].t + frame_s),
            "trigger_at": self._wall(clip.trigger_t),
            "preroll_s": round(max(0.0, clip.trigger_t - packets[0].t), 6),
            "duration_s": round(packets[-1].t + frame_s - packets[0].t, 6),
            "width": cam.main_size[0],
            "height": cam.main_size[1],
            "fps": cam.fps,
            "codec": "h264",
            "clock_synced": clip.clock_synced and self.clock_synced(),
        }
        self._finalising += 1
        log.info("finalising clip %s (%s, %d packets)", clip.id, reason, len(packets))
        self.finaliser.submit(self._finalise, meta, packets, clip.snapshot, clip.trigger_t)

    def _finalise(
        self,
        meta: dict[str, Any],
        packets: Sequence[EncodedPacket],
        snapshot: bytes | None,
        trigger_t: float,
    ) -> None:
        """Runs on the finaliser: remux, write, and report back through the queue."""
        try:
            record = self.store.save(meta, lambda f: write_mp4(packets, f), snapshot)  # type: ignore[arg-type]
        except Exception as err:
            if disk_full(err):  # expected on a full card: one line, not a traceback
                log.error("saving clip %s failed: %s", meta["id"], err)
            else:
                log.exception("saving clip %s failed", meta["id"])
            self.submit(ClipFailed(str(meta["id"]), f"{type(err).__name__}: {err}"))
            return
        finally:
            close = getattr(packets, "close", None)
            if close is not None:
                close()  # the spool file (unlinked) is freed
        self.submit(ClipWritten(record, trigger_t))

    def _on_clip_written(self, ev: ClipWritten) -> None:
        self._finalising -= 1
        self.counters["clips_saved"] += 1
        r = ev.record
        self.emit(
            "clip_saved",
            self.clock.monotonic(),
            clip=r.id,
            path=str(self.store.path(r)),
            snapshot=str(self.store.dir / r.snapshot) if r.snapshot else None,
            start=r.start,
            end=r.end,
            trigger=r.trigger,
            trigger_at=r.trigger_at,
            preroll_s=r.preroll_s,
            duration_s=r.duration_s,
            size=r.size,
            sha256=r.sha256,
            owner_key=r.wrapped_key,
            width=r.width,
            height=r.height,
            fps=r.fps,
        )
        self._enforce_retention(self.clock.monotonic())

    def _enforce_retention(self, now: float) -> None:
        self._next_retention = now + RETENTION_EVERY_S
        r = self.config.retention
        deleted = self.store.enforce_retention(
            self._wall(now), r.max_age_days * 86400, int(r.max_total_mb * 1024 * 1024)
        )
        for clip_id in deleted:
            self.counters["clips_deleted"] += 1
            self.emit("clip_deleted", now, clip=clip_id, reason="retention")

    @property
    def idle(self) -> bool:
        return self.clip is None and self._finalising == 0
