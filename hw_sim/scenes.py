"""Scene sources for the simulated camera: scripted porches and video files.

A scene renders the RGB frame seen at time ``t`` (seconds since the scene began)
and says whether that frame holds motion that matters (a person or object
entering or moving), so that detectors can be scored against the truth.

Scripted scenes are deterministic for a given seed::

    scene = make_scene("person", 640, 480, seed=1)
    frame = scene.render(3.0)
    frame.rgb.shape, frame.truth     # ((480, 640, 3), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class SceneFrame:
    rgb: np.ndarray  # uint8 (h, w, 3)
    truth: bool  # motion that matters is in view


class Scene:
    """Base class: ``render(t)`` gives the frame at ``t`` seconds into the scene."""

    name: str = "scene"
    description: str = ""

    def render(self, t: float) -> SceneFrame:
        raise NotImplementedError

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------
# Scripted scenes


@dataclass
class Lighting:
    """Global light: a gain on the whole picture and whether colour is lost (IR mode)."""

    gain: Callable[[float], float] = lambda t: 1.0
    grey: Callable[[float], bool] = lambda t: False


class Actor:
    """Something drawn on top of the porch.  ``draw`` returns True if it is motion that matters."""

    def draw(self, img: np.ndarray, t: float) -> bool:
        raise NotImplementedError


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


@dataclass
class Person(Actor):
    """Walks in from one side to the door, stands there, then (optionally) leaves."""

    arrive_at: float = 2.0
    walk_s: float = 3.0
    stand_s: float = 8.0
    leave: bool = True
    from_left: bool = True
    colour: tuple[int, int, int] = (40, 60, 150)
    contrast: float = 1.0  # < 1: a person in dim light, close to the background
    height_frac: float = 0.62

    def _x(self, t: float) -> float | None:
        """Centre x (fraction of width) at t, or None when out of view."""
        start = -0.12 if self.from_left else 1.12
        door = 0.5
        t1 = self.arrive_at
        t2 = t1 + self.walk_s
        t3 = t2 + self.stand_s
        t4 = t3 + self.walk_s
        if t < t1:
            return None
        if t < t2:
            return start + (door - start) * _smoothstep((t - t1) / self.walk_s)
        if t < t3 or not self.leave:
            return door + 0.004 * math.sin(2 * math.pi * 0.5 * t)  # shifting weight
        if t < t4:
            return door + (start - door) * _smoothstep((t - t3) / self.walk_s)
        return None

    def moving(self, t: float) -> bool:
        t1 = self.arrive_at
        t2 = t1 + self.walk_s
        t3 = t2 + self.stand_s
        walking_in = t1 <= t < t2
        walking_out = self.leave and t3 <= t < t3 + self.walk_s
        return walking_in or walking_out

    def draw(self, img: np.ndarray, t: float) -> bool:
        x = self._x(t)
        if x is None:
            return False
        h, w, _ = img.shape
        ph = int(h * self.height_frac)
        pw = max(4, ph // 4)
        cx = int(x * w)
        bottom = int(h * 0.92)
        top = bottom - ph
        head = pw // 2 + 2
        self._rect(img, cx - pw // 2, top + head, cx + pw // 2, bottom, self.colour)
        self._rect(img, cx - head // 2, top, cx + head // 2, top + head, (190, 150, 120))
        return self.moving(t) and -0.05 < x < 1.05

    def _rect(self, img: np.ndarray, x0: int, y0: int, x1: int, y1: int, col: tuple) -> None:
        h, w, _ = img.shape
        x0, x1 = max(0, x0), min(w, x1)
        y0, y1 = max(0, y0), min(h, y1)
        if x0 >= x1 or y0 >= y1:
            return
        region = img[y0:y1, x0:x1]
        target = np.array(col, dtype=np.float32)
        if self.contrast >= 1.0:
            region[:] = target
        else:
            region[:] = region + (target - region) * self.contrast


@dataclass
class HeadlightSweep(Actor):
    """A bright band crossing the porch, as a car turning in the street at night.

    Light multiplies what surfaces reflect, so the band scales the picture
    (brighter where it shines) instead of painting over it.
    """

    at: float = 4.0
    duration: float = 1.5
    strength: float = 1.2  # peak extra light, as a multiple of the ambient light

    def draw(self, img: np.ndarray, t: float) -> bool:
        if not self.at <= t < self.at + self.duration:
            return False
        w = img.shape[1]
        pos = (t - self.at) / self.duration * 1.6 - 0.3
        xs = np.arange(w, dtype=np.float32) / w
        band = 1.0 + np.exp(-(((xs - pos) / 0.18) ** 2)) * self.strength
        img *= band[np.newaxis, :, np.newaxis]
        return False


@dataclass
class Foliage(Actor):
    """Leaves moving in one region (the top-right corner by default)."""

    region: tuple[float, float, float, float] = (0.72, 0.0, 1.0, 0.35)
    seed: int = 0
    _cells: np.ndarray | None = field(default=None, repr=False)

    def draw(self, img: np.ndarray, t: float) -> bool:
        h, w, _ = img.shape
        x0, y0, x1, y1 = (
            int(self.region[0] * w),
            int(self.region[1] * h),
            int(self.region[2] * w),
            int(self.region[3] * h),
        )
        rh, rw = y1 - y0, x1 - x0
        if self._cells is None:
            rng = np.random.default_rng(self.seed)
            self._cells = rng.uniform(0, 2 * math.pi, size=(-(-rh // 8), -(-rw // 8)))
        phase = np.sin(self._cells + t * 7.0) * 0.5 + 0.5
        tile = np.kron(phase, np.ones((8, 8), dtype=np.float64))[:rh, :rw]
        leaves = 45 + 70 * tile
        img[y0:y1, x0:x1, 0] = leaves * 0.5
        img[y0:y1, x0:x1, 1] = leaves
        img[y0:y1, x0:x1, 2] = leaves * 0.4
        return False


@dataclass
class Precipitation(Actor):
    """Rain streaks or snowflakes: many small bright marks, new every frame."""

    density: float = 0.0015  # marks per pixel per frame
    snow: bool = False
    seed: int = 0
    _rng: np.random.Generator | None = field(default=None, repr=False)

    def draw(self, img: np.ndarray, t: float) -> bool:
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed + 99)
        h, w, _ = img.shape
        n = int(self.density * h * w / (1 if self.snow else 6))
        ys = self._rng.integers(0, h, n)
        xs = self._rng.integers(0, w, n)
        if self.snow:
            for dy in (0, 1):
                for dx in (0, 1):
                    img[np.minimum(ys + dy, h - 1), np.minimum(xs + dx, w - 1)] += 70
        else:
            length = max(3, h // 40)
            for k in range(length):
                img[np.minimum(ys + k, h - 1), xs] += 45
        return False


@dataclass
class Animal(Actor):
    """A cat-sized animal trotting across the bottom of the frame (not a visitor)."""

    at: float = 3.0
    duration: float = 4.0
    size_frac: float = 0.07
    from_left: bool = True

    def draw(self, img: np.ndarray, t: float) -> bool:
        if not self.at <= t < self.at + self.duration:
            return False
        h, w, _ = img.shape
        f = (t - self.at) / self.duration
        x = f if self.from_left else 1 - f
        bw, bh = int(w * self.size_frac * 1.3), int(h * self.size_frac)
        cx, bottom = int(x * (w + bw)) - bw, int(h * 0.95)
        x0, x1 = max(0, cx), min(w, cx + bw)
        if x0 < x1:
            img[bottom - bh : bottom, x0:x1] = (60, 50, 45)
        return False


@dataclass
class Parcel(Actor):
    """A box that appears on the step and stays (the courier's visit is a Person)."""

    at: float = 6.0

    def draw(self, img: np.ndarray, t: float) -> bool:
        if t < self.at:
            return False
        h, w, _ = img.shape
        img[int(h * 0.72) : int(h * 0.8), int(w * 0.45) : int(w * 0.55)] = (170, 130, 80)
        return False


def _porch(width: int, height: int, seed: int) -> np.ndarray:
    """A static porch: wall, door, step, ground, in float32 RGB."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = (150, 140, 125)  # wall
    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    # A little brick texture so motion detection has something real to ignore.
    img += ((((ys // 12) + (xs // 24 + (ys // 12) % 2)) % 2) * 8)[:, :, None]
    ground = int(height * 0.85)
    img[ground:] = (95, 90, 85)
    step = int(height * 0.8)
    img[step:ground, int(width * 0.3) : int(width * 0.7)] = (120, 115, 110)
    # The door
    img[int(height * 0.2) : step, int(width * 0.42) : int(width * 0.58)] = (110, 60, 35)
    # A window on the left
    img[int(height * 0.25) : int(height * 0.5), int(width * 0.08) : int(width * 0.25)] = (
        70,
        85,
        100,
    )
    img += rng.normal(0, 3, size=(height, width, 1)).astype(np.float32)
    return img


class ScriptedScene(Scene):
    """A porch, a lighting script, actors and sensor noise."""

    def __init__(
        self,
        name: str,
        description: str,
        width: int,
        height: int,
        lighting: Lighting | None = None,
        actors: list[Actor] | None = None,
        noise: float = 3.0,
        seed: int = 0,
    ) -> None:
        self.name, self.description = name, description
        self.width, self.height = width, height
        self.lighting = lighting or Lighting()
        self.actors = actors or []
        self._base = _porch(width, height, seed)
        rng = np.random.default_rng(seed + 1)
        # A few noise fields, picked per frame: real sensor noise changes every
        # frame; this costs a fraction of drawing fresh Gaussian noise.
        self._noise = [
            (rng.normal(0, noise, size=(height, width, 1))).astype(np.float32) for _ in range(7)
        ]
        self._rng = np.random.default_rng(seed + 2)

    def render(self, t: float) -> SceneFrame:
        img = self._base.copy()
        truth = False
        for actor in self.actors:
            truth |= actor.draw(img, t)
        img *= self.lighting.gain(t)
        if self.lighting.grey(t):
            img[:] = img.mean(axis=2, keepdims=True)
        img += self._noise[int(self._rng.integers(len(self._noise)))]
        np.clip(img, 0, 255, out=img)
        return SceneFrame(img.astype(np.uint8), truth)


def _step(at: float, before: float, after: float) -> Callable[[float], float]:
    return lambda t: before if t < at else after


def _ramp(t0: float, t1: float, a: float, b: float) -> Callable[[float], float]:
    return lambda t: a + (b - a) * min(1.0, max(0.0, (t - t0) / (t1 - t0)))


SceneFactory = Callable[[int, int, int], Scene]


def _porch_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene("porch", "empty porch with sensor noise", w, h, seed=seed)


def _person_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene(
        "person",
        "a person walks up, stands at the door, and leaves",
        w,
        h,
        actors=[Person(arrive_at=2.0 + seed % 3)],
        seed=seed,
    )


def _dusk_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene(
        "dusk",
        "light fades slowly to a third over 40 s",
        w,
        h,
        lighting=Lighting(gain=_ramp(2.0, 42.0, 1.0, 0.33)),
        noise=4.0,
        seed=seed,
    )


def _light_switch_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene(
        "light_switch",
        "the porch light switches on at 5 s",
        w,
        h,
        lighting=Lighting(gain=_step(5.0, 0.45, 1.1)),
        seed=seed,
    )


def _ir_cut_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene(
        "ir_cut",
        "the IR-cut filter flips at 5 s: colour to grey and brighter",
        w,
        h,
        lighting=Lighting(gain=_step(5.0, 0.35, 0.8), grey=lambda t: t >= 5.0),
        noise=5.0,
        seed=seed,
    )


def _headlights_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene(
        "headlights",
        "a car's headlights sweep the porch at night",
        w,
        h,
        lighting=Lighting(gain=lambda t: 0.4),
        actors=[HeadlightSweep(at=4.0), HeadlightSweep(at=12.0, duration=2.0)],
        noise=5.0,
        seed=seed,
    )


def _foliage_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene(
        "foliage",
        "leaves flicker in the top-right corner",
        w,
        h,
        actors=[Foliage(seed=seed)],
        seed=seed,
    )


def _rain_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene(
        "rain",
        "rain (or, for odd seeds, snow) falls in front of the porch",
        w,
        h,
        actors=[Precipitation(snow=seed % 2 == 1, seed=seed)],
        noise=4.0,
        seed=seed,
    )


def _dim_person_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene(
        "dim_person",
        "a person in dark clothes walks up at night: low contrast",
        w,
        h,
        lighting=Lighting(gain=lambda t: 0.45),
        actors=[
            Person(
                arrive_at=2.0 + seed % 3,
                colour=(70, 65, 60),
                contrast=0.55,
                from_left=seed % 2 == 0,
            )
        ],
        noise=5.0,
        seed=seed,
    )


def _animal_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene(
        "animal",
        "a cat crosses the bottom of the frame (not a visitor)",
        w,
        h,
        actors=[Animal(at=2.0 + seed % 4, from_left=seed % 2 == 0)],
        seed=seed,
    )


def _parcel_scene(w: int, h: int, seed: int) -> Scene:
    courier = Person(arrive_at=2.0, walk_s=2.5, stand_s=3.0, colour=(150, 120, 40))
    return ScriptedScene(
        "parcel",
        "a courier leaves a parcel on the step; it stays there",
        w,
        h,
        actors=[Parcel(at=2.0 + 2.5 + 1.5), courier],
        seed=seed,
    )


def _person_light_switch_scene(w: int, h: int, seed: int) -> Scene:
    return ScriptedScene(
        "person_light_switch",
        "a person walks up as the porch light switches on",
        w,
        h,
        lighting=Lighting(gain=_step(3.0 + seed % 2, 0.45, 1.1)),
        actors=[Person(arrive_at=2.5)],
        seed=seed,
    )


SCENES: dict[str, tuple[str, SceneFactory]] = {
    "porch": ("empty porch with sensor noise", _porch_scene),
    "person": ("a person walks up, stands at the door, and leaves", _person_scene),
    "dusk": ("light fades slowly to a third over 40 s", _dusk_scene),
    "light_switch": ("the porch light switches on at 5 s", _light_switch_scene),
    "ir_cut": ("the IR-cut filter flips at 5 s: colour to grey and brighter", _ir_cut_scene),
    "headlights": ("a car's headlights sweep the porch at night", _headlights_scene),
    "foliage": ("leaves flicker in the top-right corner", _foliage_scene),
    "rain": ("rain (or, for odd seeds, snow) falls in front of the porch", _rain_scene),
    "dim_person": ("a person in dark clothes walks up at night: low contrast", _dim_person_scene),
    "animal": ("a cat crosses the bottom of the frame (not a visitor)", _animal_scene),
    "parcel": ("a courier leaves a parcel on the step; it stays there", _parcel_scene),
    "person_light_switch": (
        "a person walks up as the porch light switches on",
        _person_light_switch_scene,
    ),
}


class UnknownScene(ValueError):
    pass


def make_scene(name: str, width: int, height: int, seed: int = 0) -> Scene:
    try:
        _, factory = SCENES[name]
    except KeyError:
        known = ", ".join(sorted(SCENES))
        raise UnknownScene(f"unknown scene {name!r} (known: {known})") from None
    return factory(width, height, seed)


# --------------------------------------------------------------------------------------
# Video files


class VideoUnreadable(ValueError):
    pass


def load_labels(path: str | Path) -> list[tuple[float, float]]:
    """Intervals of motion that matters, from a CSV of ``start,end`` seconds.

    A header line and ``#`` comments are allowed::

        start,end
        3.0,9.5
    """
    spans = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line or line.replace(" ", "").lower() == "start,end":
            continue
        try:
            a, b = (float(x) for x in line.split(","))
        except ValueError:
            raise ValueError(f"{path}:{n}: expected 'start,end' in seconds, got {line!r}") from None
        if b <= a:
            raise ValueError(f"{path}:{n}: end {b} is not after start {a}")
        spans.append((a, b))
    return spans


class VideoScene(Scene):
    """Plays a video file (anything FFmpeg decodes), scaled to the camera's size.

    Frames are shown at the file's own timing; after the last frame the video
    loops.  Truth comes from ``labels``, a list of ``(start, end)`` seconds.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        labels: list[tuple[float, float]] | None = None,
    ) -> None:
        import av

        self.name = Path(path).name
        self.description = f"video file {path}"
        self.width, self.height = width, height
        self.labels = labels or []
        try:
            container = av.open(str(path))
            stream = container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as err:
            raise VideoUnreadable(f"cannot read video {path}: {err}") from None
        self._frames: list[tuple[float, np.ndarray]] = []
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else len(self._frames) / 25
                img = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
                self._frames.append((t, img))
        except av.FFmpegError as err:
            raise VideoUnreadable(f"cannot decode video {path}: {err}") from None
        finally:
            container.close()
        if not self._frames:
            raise VideoUnreadable(f"video {path} has no frames")
        t0 = self._frames[0][0]
        self._times = np.array([t - t0 for t, _ in self._frames])
        step = float(np.median(np.diff(self._times))) if len(self._times) > 1 else 1 / 25
        self.duration = float(self._times[-1] + step)

    def render(self, t: float) -> SceneFrame:
        local = t % self.duration
        i = max(0, int(np.searchsorted(self._times, local, side="right")) - 1)
        truth = any(a <= local < b for a, b in self.labels)
        return SceneFrame(self._frames[i][1].copy(), truth)
