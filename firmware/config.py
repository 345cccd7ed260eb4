"""The doorbell's configuration: one TOML file, every key documented with its default.

Load with :func:`load_config`; a bad value raises :class:`ConfigError` whose message
names the key and what is wrong, e.g.::

    clips.pre_roll_s: must be greater than 0 (got -1)

See ``deploy/pi/doorbell.example.toml`` for a commented file.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.config import format_validation_error, load_toml
from common.mqtt import BrokerSettings

# BCM numbers that exist on the 40-pin header.
_BCM = Annotated[int, Field(ge=2, le=27)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(_Section):
    id: str = Field("doorbell-sim", pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    """Device id: lower-case letters, digits and dashes (it is part of MQTT topics)."""
    data_dir: Path = Path("/var/lib/doorbell")
    """Where clips, snapshots and the outbox live."""


class GpioConfig(_Section):
    button_pin: _BCM = 17
    """BCM pin of the push button (wired to ground; the internal pull-up is used)."""
    chime_pin: _BCM = 27
    """BCM pin driving the chime relay."""
    chime_active_high: bool = True
    """True: the relay closes when the pin is high.  Most 5 V relay modules close when
    their input is pulled low: set false for those (see deploy/pi/README.md)."""
    pir_pin: _BCM | None = None
    """BCM pin of an optional PIR sensor (active high); leave out for none."""
    chime_pulse_s: float = Field(0.4, gt=0, le=5)
    """How long the chime relay closes for one ring."""
    debounce_s: float = Field(0.05, ge=0, le=1)
    """Edges closer together than this are one contact's chatter, not a new press."""
    ring_cooldown_s: float = Field(5.0, ge=0, le=600)
    """After a ring, further presses within this time extend the clip but do not ring."""


class CameraConfig(_Section):
    main_size: tuple[int, int] = (1280, 720)
    """Recorded stream, width x height (even numbers)."""
    lores_size: tuple[int, int] = (320, 240)
    """Low-resolution luma stream used for motion detection."""
    fps: float = Field(15.0, ge=1, le=60)
    keyframe_interval_s: float = Field(1.0, gt=0, le=10)
    """One keyframe every this many seconds: the pre-roll granularity."""
    bitrate: int = Field(2_000_000, ge=100_000, le=25_000_000)
    """Target bitrate of the hardware encoder, bits per second."""
    autofocus: Literal["continuous", "off"] = "continuous"
    """Cameras with a focus motor (Camera Module 3): keep refocusing, or leave the lens
    where it is.  Fixed-focus cameras ignore it."""

    @field_validator("main_size", "lores_size")
    @classmethod
    def _even_and_sane(cls, v: tuple[int, int]) -> tuple[int, int]:
        w, h = v
        if not (16 <= w <= 4096 and 16 <= h <= 4096):
            raise ValueError(f"each side must be between 16 and 4096 (got {w}x{h})")
        if w % 2 or h % 2:
            raise ValueError(f"width and height must be even (got {w}x{h})")
        return v


class MotionConfig(_Section):
    source: Literal["camera", "pir", "either", "both"] = "camera"
    """What counts as motion: the camera, the PIR, either of them, or both together."""
    both_window_s: float = Field(2.0, gt=0, le=30)
    """With source = "both": camera and PIR must fire within this many seconds."""
    sensitivity: int = Field(5, ge=1, le=10)
    """1 = only large, obvious movement; 10 = the smallest changes.  5 suits a porch."""
    min_frames: int = Field(3, ge=1, le=60)
    """An object must look like a visitor for this many low-res frames before it counts."""
    alpha: float = Field(0.015, gt=0, le=0.5)
    """How fast the background learns, per frame, where no object is (0.015: a change
    fades in about 4 s at 15 fps; faster, and someone walking straight at the camera
    fades before they are close).  Under an object the background does not learn."""
    max_speed: float = Field(0.2, gt=0, le=5.0)
    """Fastest plausible object, in its own sizes (square root of its area) per frame.
    Insects close to the lens dart several sizes a frame; a person moves a fraction of one."""
    min_aspect: float = Field(1.6, ge=0, le=5.0)
    """An object becomes a visitor only while upright: its changed pixels spread at least
    this many times more up and down than across (standard deviations), or it is close
    (half the picture high, reaching its bottom edge).  A spider's disc on the lens, a pool
    of lamp light, headlight beams and shadows on the ground are round or wide; 0 turns
    this off."""
    min_travel: float = Field(0.065, ge=0, le=1.0)
    """A visitor arrives: an object must have moved this fraction of the picture's height
    from where it was first seen before it counts.  A cobweb or a plant swaying, a pool
    of light, stay put; 0 turns this off (someone already at the door when the camera
    starts is then found without walking in)."""
    max_width: float = Field(0.6, gt=0, le=1.0)
    """An object wider than this fraction of the picture is not a visitor (unless close,
    below): someone walking up fills well under half of it, while an IR-cut switch, a
    headlight beam across the street or falling snow changes edges right across it.
    1 turns this off."""
    close_max_width: float = Field(0.9, gt=0, le=1.0)
    """The same for someone close to the camera (an object at least half the picture
    high reaching its bottom edge): they may fill most of the width, never all of it."""
    steady_frames: int = Field(2, ge=1, le=5)
    """Objects are built only from pixels changed this many frames running: a snowflake
    or a raindrop crosses a pixel in a frame or two, a visitor stays on it.  1 turns this
    off; more misses quick movement."""
    max_texture_kept: float = Field(0.75, ge=-1.0, le=1.0)
    """Light and shade are not visitors: where the picture differs from the background,
    if the background's own texture is still there (the correlation of the log-luma
    gradients with the background's reaches this), the change is light or shade (a
    lamp's pool, a passer-by's shadow, a beam) and the object is not confirmed.  A
    visitor hides the texture behind them (mostly under 0.6).  1 turns this off."""
    max_sideways: float = Field(0.2, ge=0, le=5.0)
    """An object that has crossed a quarter of the picture sideways while moving up or
    down less than this fraction of that is passing by (a headlight beam on the street, a
    shadow cast from the pavement), not arriving; it is not confirmed while so.  0 turns
    this off."""
    live_frac: float = Field(0.05, ge=0, le=1.0)
    """Movement inside an object (what keeps a still object from becoming background
    after ``still_absorb_s``) must cover this fraction of its box over a second: noise
    alone marks a few pixels of any box, and kept a parcel "alive" and alerting."""
    still_absorb_s: float = Field(3.0, ge=1, le=600)
    """An object with no movement inside it for this long becomes background (a parcel,
    a moved chair).  A person standing at the door breathes and shifts, so stays; a
    parcel left on the step stops alerting this long after the courier has gone."""
    grow: float = Field(0.5, gt=0, le=1.0)
    """Next to a strong edge change, a weaker one counts too: at this fraction of the
    usual threshold (hysteresis, as Canny links edges).  A visitor's faint outline in
    snow, at night or in shade joins its strong parts and the object is whole; weak
    changes away from any strong one (noise, flakes) still count for nothing.  1 turns
    this off."""


class ClipsConfig(_Section):
    pre_roll_s: float = Field(5.0, ge=0, le=30)
    """Seconds recorded before the trigger."""
    post_roll_s: float = Field(5.0, ge=0, le=120)
    """Recording goes on until motion has been quiet this long."""
    max_length_s: float = Field(60.0, gt=0, le=600)
    """A clip ends this many seconds after its trigger, motion or not."""
    buffer_max_bytes: int = Field(32 << 20, ge=1 << 20)
    """Upper bound on the memory held by the pre-roll buffer."""


class RetentionConfig(_Section):
    max_age_days: float = Field(30.0, gt=0)
    """Clips older than this are deleted."""
    max_total_mb: float = Field(2048.0, gt=0)
    """When clips take more than this, the oldest are deleted first."""


class MaskConfig(_Section):
    name: str = "mask"
    polygon: list[tuple[float, float]]
    """Vertices as fractions of the frame: [0, 0] top left, [1, 1] bottom right."""

    @field_validator("polygon")
    @classmethod
    def _valid_polygon(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(v) < 3:
            raise ValueError(f"a polygon needs at least 3 points (got {len(v)})")
        for x, y in v:
            if not (0 <= x <= 1 and 0 <= y <= 1):
                raise ValueError(f"points are fractions of the frame in [0, 1] (got [{x}, {y}])")
        return v


class MqttConfig(BrokerSettings):
    enabled: bool = False
    """Announce events and clips to the relay's broker (off: events go to stdout only)."""
    confirm_timeout_s: float = Field(30.0, gt=0, le=3600)
    """Send a message again if the relay has not confirmed it this long after the broker
    acknowledged it (doubling each time, up to 64x)."""


class HomeAssistantConfig(BrokerSettings):
    """The owner's own broker, the one Home Assistant uses (see docs/home-assistant.md).

    The broker settings (host, port, username, password_file, tls_*) mean what they
    mean under [mqtt]; username defaults to the device id.  Nothing is sent anywhere
    but this broker.
    """

    enabled: bool = False
    """Publish presses, motion and status to Home Assistant on this broker."""
    discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    """Home Assistant's discovery prefix (its MQTT integration's setting); its birth
    message is expected on <prefix>/status."""
    snapshot_image: bool = False
    """Publish each press's snapshot (privacy masks applied) as an image entity.  Off:
    no picture leaves the doorbell through this link."""
    pending_presses: int = Field(20, ge=1, le=1000)
    """Presses kept in memory while this broker is unreachable, sent when it returns
    (the oldest are dropped beyond this; a restart forgets them)."""
    max_press_age_s: float = Field(60.0, gt=0, le=86400)
    """A press still unsent after this many seconds (the broker was away) is dropped:
    Home Assistant's event entity fires on arrival, so a late press looks like a new one."""
    status_every_s: float = Field(60.0, ge=1, le=3600)
    """How often free storage is re-published (relay connectivity is sent on change)."""


def _key32(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        raw = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    if len(raw) != 32:
        raise ValueError(f"must be a 32-byte key in base64 (got {len(raw)} bytes)")
    return v


class OwnerConfig(_Section):
    """The owner's public keys, written at provisioning; the relay cannot change them."""

    sign_public: str | None = None
    """Ed25519 key (base64) that must sign every release and deletion."""
    box_public: str | None = None
    """X25519 key (base64) every clip key is wrapped to."""

    @field_validator("sign_public", "box_public")
    @classmethod
    def _is_key(cls, v: str | None) -> str | None:
        return _key32(v)


class LogConfig(_Section):
    """The relay's public audit log, which the doorbell witnesses (``firmware/witness.py``)."""

    relay_url: str | None = Field(None, pattern=r"^https?://")
    """The relay's HTTP API, for consistency proofs; unset: the doorbell does not witness."""
    key: str | None = None
    """The relay's log key (base64), written at provisioning; unset: pinned on first use."""
    refuse_s: float = Field(6 * 3600.0, gt=0)
    """How long the relay may fail to give a consistency proof before the alarm is raised."""
    poll_s: float = Field(3600.0, gt=0)
    """How often the doorbell fetches the relay's head itself (not only the retained one)."""
    max_age_s: float = Field(2 * 86400.0, gt=0)
    """The newest head seen older than this raises the stale-log flag (not the alarm)."""

    @field_validator("key")
    @classmethod
    def _is_key(cls, v: str | None) -> str | None:
        return _key32(v)


class Config(_Section):
    device: DeviceConfig = DeviceConfig()
    gpio: GpioConfig = GpioConfig()
    camera: CameraConfig = CameraConfig()
    motion: MotionConfig = MotionConfig()
    clips: ClipsConfig = ClipsConfig()
    retention: RetentionConfig = RetentionConfig()
    masks: list[MaskConfig] = []
    mqtt: MqttConfig = MqttConfig()
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()
    owner: OwnerConfig = OwnerConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.motion.source in ("pir", "either", "both") and self.gpio.pir_pin is None:
            raise ValueError(f'motion.source = "{self.motion.source}" needs gpio.pir_pin')
        if self.gpio.pir_pin is not None and self.gpio.pir_pin in (
            self.gpio.button_pin,
            self.gpio.chime_pin,
        ):
            raise ValueError("gpio.pir_pin shares a pin with the button or the chime")
        if self.mqtt.tls_cert is not None and self.mqtt.tls_key is None:
            raise ValueError("mqtt.tls_cert needs mqtt.tls_key")
        if self.mqtt.backoff_max_s < self.mqtt.backoff_min_s:
            raise ValueError("mqtt.backoff_max_s must not be below mqtt.backoff_min_s")
        if self.home_assistant.tls_cert is not None and self.home_assistant.tls_key is None:
            raise ValueError("home_assistant.tls_cert needs home_assistant.tls_key")
        if self.home_assistant.backoff_max_s < self.home_assistant.backoff_min_s:
            raise ValueError("home_assistant.backoff_max_s must not be below its backoff_min_s")
        if self.gpio.button_pin == self.gpio.chime_pin:
            raise ValueError("gpio.button_pin and gpio.chime_pin must differ")
        return self

    @property
    def ring_seconds(self) -> float:
        """Seconds the pre-roll buffer must span: pre-roll plus a whole GOP and slack."""
        return self.clips.pre_roll_s + 2 * self.camera.keyframe_interval_s + 1.0


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


def parse_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(path: Path | str | None, **overrides: Any) -> Config:
    """Read ``path`` (or use all defaults when ``None``) and validate it."""
    data: dict[str, Any] = {}
    if path is not None:
        data = load_toml(path, ConfigError)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition("__")
        data.setdefault(section, {})[key] = value
    cfg = parse_config(data)
    if path is not None:
        cfg = _relative_to(cfg, Path(path).resolve().parent)
    return cfg


def _relative_to(cfg: Config, folder: Path) -> Config:
    """Files named relative to the config file live beside it (provisioning relies on it)."""
    cfg = _home_assistant_relative_to(cfg, folder)
    m = cfg.mqtt
    fixed = {
        k: folder / v
        for k, v in (
            ("password_file", m.password_file),
            ("tls_ca", m.tls_ca),
            ("tls_cert", m.tls_cert),
            ("tls_key", m.tls_key),
        )
        if v is not None and not v.is_absolute()
    }
    if not fixed:
        return cfg
    return cfg.model_copy(update={"mqtt": m.model_copy(update=fixed)})


def _home_assistant_relative_to(cfg: Config, folder: Path) -> Config:
    h = cfg.home_assistant
    fixed = {
        k: folder / v
        for k in ("password_file", "tls_ca", "tls_cert", "tls_key")
        if (v := getattr(h, k)) is not None and not v.is_absolute()
    }
    if not fixed:
        return cfg
    return cfg.model_copy(update={"home_assistant": h.model_copy(update=fixed)})
