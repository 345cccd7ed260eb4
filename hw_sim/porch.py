"""Rendered porch scenes with labelled visits, written apart from the motion detector.

``hw_sim.scenes`` scripts flat porches whose light is one global gain; a
detector built on them learns their shortcuts.  This module renders what a
doorbell camera sees from beside a front door, looking out:

* **Geometry**: a pinhole camera at a random height, field of view and
  horizon, over a ground plane in perspective: porch boards, a path, lawn, a
  hedge with a gap, the street and the houses opposite, sky.  Every texture is
  laid out in world metres, so it shrinks with distance.
* **Light** that varies across the picture: sun and sky with cast shadows, a
  porch roof's shade, moving cloud shadows, a porch lamp, a car's headlights
  sweeping the street, and at night an IR illuminator that falls off with
  distance (vegetation is bright in IR); the IR-cut filter switches between the two.
* **A sensor**: auto-exposure that follows the picture, noise that grows
  with gain (shot and read noise, fresh every frame), and JPEG compression.
* **People** with articulated, textured limbs, walking in perspective from
  the street to the door and back, casting shadows; they shift their weight
  and breathe while they stand.
* What doorbell owners report as false alerts: insects flying close to the lens
  (defocused, fast, erratic, bright under IR), a spider crawling over it, a
  cobweb swaying in front of it, cloud shadows, snow, rain, swaying plants,
  the shadow of a passer-by walking behind the hedge.

Labels come from the script: a *visit* lasts while a visitor is in the
picture.  Every parameter (camera, layout, textures, people, timing, weather,
sensor) is drawn from the seed, so two seeds share nothing but the ranges::

    scene = make_porch("visitor_still", 320, 240, seed=10_001)
    scene.visits                     # [(2.6, 44.1)]
    frame = scene.render(3.0)        # SceneFrame(rgb, truth)
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hw_sim.scenes import Scene, SceneFrame

FPS = 15

# Seeds for tuning and for reporting never overlap: tune on TUNE_SEEDS, report on HELD_OUT_SEEDS.
TUNE_SEEDS = range(0, 1000)
HELD_OUT_SEEDS = range(10_000, 11_000)


# ---------------------------------------------------------------------------- textures


def _upsample_wrap(g: np.ndarray, n: int) -> np.ndarray:
    k = g.shape[0]
    c = np.arange(n) * k / n
    i0 = np.floor(c).astype(int)
    fr = (c - i0).astype(np.float32)
    i1 = (i0 + 1) % k
    rows = g[i0] * (1 - fr)[:, None] + g[i1] * fr[:, None]
    return rows[:, i0] * (1 - fr)[None] + rows[:, i1] * fr[None]


def _noise_tex(
    rng: np.random.Generator, n: int = 128, octaves: int = 4, base: int = 4
) -> np.ndarray:
    """A tileable n x n smooth noise field in [0, 1]."""
    f = np.zeros((n, n), np.float32)
    amp, tot = 1.0, 0.0
    for o in range(octaves):
        f += amp * _upsample_wrap(rng.random((base << o, base << o)).astype(np.float32), n)
        tot += amp
        amp *= 0.55
    f -= f.min()
    f /= f.max() + 1e-6
    return f


def _sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup of ``tex`` at texel coordinates (u across, v down)."""
    n = tex.shape[0]
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = (u - u0).astype(np.float32)
    fv = (v - v0).astype(np.float32)
    iu = u0.astype(np.int64) % n
    iv = v0.astype(np.int64) % n
    iu1 = (iu + 1) % n
    iv1 = (iv + 1) % n
    top = tex[iv, iu] * (1 - fu) + tex[iv, iu1] * fu
    bot = tex[iv1, iu] * (1 - fu) + tex[iv1, iu1] * fu
    return top * (1 - fv) + bot * fv


def _smooth(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


# ---------------------------------------------------------------------------- camera + set


@dataclass
class Camera:
    w: int
    h: int
    f: float  # focal length in pixels
    cx: float
    yh: float  # horizon row
    height: float  # metres above the ground

    def ground_to_px(self, x: float, z: float, y: float = 0.0) -> tuple[float, float]:
        z = max(z, 0.05)
        return self.cx + self.f * x / z, self.yh + self.f * (self.height - y) / z


class Porch:
    """The static set: albedo (day colour and IR), depth and world coordinates per pixel."""

    def __init__(self, rng: np.random.Generator, w: int, h: int) -> None:
        hfov = math.radians(rng.uniform(70, 120))
        f = (w / 2) / math.tan(hfov / 2)
        self.cam = cam = Camera(
            w, h, f, w / 2 + rng.uniform(-0.05, 0.05) * w, h * rng.uniform(0.22, 0.5),
            rng.uniform(1.1, 1.6),
        )  # fmt: skip
        self.porch_d = rng.uniform(1.6, 3.5)
        self.roof = rng.random() < 0.6  # the porch floor is in shade
        self.path_w = rng.uniform(0.5, 0.9)
        self.path_x = rng.uniform(-0.8, 0.8)
        self.hedge_z = rng.uniform(5.0, 11.0)
        self.hedge_h = rng.uniform(1.8, 2.3)
        self.street_z = self.hedge_z + rng.uniform(1.5, 3.0)
        self.far_z = self.street_z + rng.uniform(8.0, 14.0)
        self.house_h = rng.uniform(5.0, 12.0)
        self.post_x = rng.choice([-1, 1]) * rng.uniform(0.9, 1.6)

        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        below = ys > cam.yh + 0.5
        zg_inf = np.where(below, f * cam.height / np.maximum(ys - cam.yh, 0.5), np.inf)
        zg = np.where(below, zg_inf, 1e3).astype(np.float32)  # finite, for texture maths
        xg = ((xs - cam.cx) * zg / f).astype(np.float32)
        tex_a, tex_b, tex_c = (_noise_tex(rng) for _ in range(3))
        alb = np.zeros((h, w, 3), np.float32)
        depth = np.full((h, w), np.inf, np.float32)
        kind = np.zeros((h, w), np.int8)  # 0 sky, 1 ground, 2 vertical
        veg = np.zeros((h, w), np.float32)  # vegetation: bright under IR

        def paint(mask: np.ndarray, colour: np.ndarray, shade: np.ndarray) -> None:
            alb[mask] = colour[None, :] * shade[mask][:, None]

        board = rng.uniform(0.3, 0.55) * np.array(rng.uniform(0.7, 1.1, 3), np.float32)
        concrete = rng.uniform(0.45, 0.65) * np.array([1, 1, 0.97], np.float32)
        lawn = np.array([0.16, rng.uniform(0.25, 0.35), 0.1], np.float32)
        asphalt = np.array([0.16, 0.16, 0.17], np.float32) * rng.uniform(0.8, 1.3)
        ground = below & (zg < self.far_z)
        porch = ground & (zg < self.porch_d)
        path = ground & ~porch & (np.abs(xg - self.path_x) < self.path_w / 2) & (zg < self.hedge_z)
        street = ground & (zg >= self.hedge_z)
        grass = ground & ~porch & ~path & ~street
        gap = 0.6
        scale = 128 / 4.0  # texels per metre
        grain = _sample(tex_a, xg * scale * 4, zg * scale * 0.5)
        boards = 0.85 + 0.15 * np.cos(zg * 2 * math.pi / 0.14) ** 8
        paint(porch, board, (0.75 + 0.4 * grain) * boards)
        joints = 1 - 0.25 * (np.abs(((zg - self.porch_d) % 0.9) - 0.45) > 0.43)
        paint(path, concrete, (0.85 + 0.3 * _sample(tex_b, xg * scale, zg * scale)) * joints)
        grass_t = _sample(tex_c, xg * scale * 2, zg * scale * 2)
        paint(grass, lawn, 0.6 + 0.8 * grass_t)
        veg[grass] = 1
        paint(street, asphalt, 0.8 + 0.4 * _sample(tex_b, xg * scale * 3, zg * scale * 3))
        depth[ground] = zg[ground]
        kind[ground] = 1
        # The hedge, with a gap for the path; the houses opposite; the sky.
        yrow = cam.height - (ys - cam.yh) * self.hedge_z / f  # height of the ray at the hedge
        xh = (xs - cam.cx) * self.hedge_z / f
        hedge = (yrow >= 0) & (yrow <= self.hedge_h) & (np.abs(xh - self.path_x) > gap)
        hedge &= ~(ground & (zg < self.hedge_z))
        leaves = _sample(tex_c, xh * 40, yrow * 40)
        paint(hedge, np.array([0.08, 0.2, 0.07], np.float32), 0.5 + leaves)
        veg[hedge] = 1
        depth[hedge] = self.hedge_z
        kind[hedge] = 2
        yf = cam.height - (ys - cam.yh) * self.far_z / f
        xf = (xs - cam.cx) * self.far_z / f
        far = (yf <= self.house_h) & (yf >= 0) & ~hedge & ~(ground & (zg < self.far_z))
        wall = np.array(rng.uniform(0.25, 0.75, 3), np.float32)
        win = ((xf % 4.0) > 2.6) & ((yf % 3.0) > 1.2) & ((yf % 3.0) < 2.4)
        paint(far, wall, 0.85 + 0.3 * _sample(tex_a, xf * 20, yf * 20) - 0.6 * win)
        depth[far] = self.far_z
        kind[far] = 2
        sky = kind == 0
        sky &= ~far
        # A porch post near the camera.
        px, py = cam.ground_to_px(self.post_x, self.porch_d)
        half = 0.07 * f / self.porch_d
        post = (np.abs(xs - px) < half) & (ys < py)
        paint(post, np.array([0.8, 0.78, 0.72], np.float32), 0.9 + 0.1 * (xs - px) / half)
        depth[post] = self.porch_d
        kind[post] = 2
        veg[post] = 0
        self.sky = sky & ~post
        self.alb = alb
        self.ir_alb = alb.mean(axis=2) * (1 - veg) + 0.55 * veg * (0.7 + 0.6 * grass_t)
        self.depth = depth
        self.kind = kind
        self.xg, self.zg = xg, zg_inf
        self.ground = ground & ~post
        self.porch = porch & ~post
        ray = np.sqrt(((xs - cam.cx) / f) ** 2 + ((ys - cam.yh) / f) ** 2 + 1)
        self.dist = np.where(np.isfinite(depth), depth * ray, np.inf).astype(np.float32)
        self.vignette = (1 / ray**4).astype(np.float32)
        self.xs, self.ys = xs, ys
        self.sky_grad = (0.7 + 0.5 * np.clip((cam.yh - ys) / max(cam.yh, 1), 0, 1)).astype(
            np.float32
        )


# ---------------------------------------------------------------------------- capsules


def _capsule(
    acc: np.ndarray, x0: float, y0: float, x1: float, y1: float, r: float, soft: float = 0.7
) -> tuple[slice, slice, np.ndarray] | None:
    """Coverage of a thick segment: writes max(acc, coverage) and returns its window."""
    h, w = acc.shape
    r = max(r, 0.5)
    m = r + soft / 2 + 2  # the soft edge reaches this far from the axis
    a = max(0, int(min(x0, x1) - m))
    b = min(w, int(max(x0, x1) + m + 1))
    c = max(0, int(min(y0, y1) - m))
    d = min(h, int(max(y0, y1) + m + 1))
    if a >= b or c >= d:
        return None
    ys, xs = np.mgrid[c:d, a:b].astype(np.float32)
    dx, dy = x1 - x0, y1 - y0
    ll = dx * dx + dy * dy
    t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / ll, 0, 1) if ll > 1e-6 else 0.0
    dist = np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy))
    cov = np.clip((r - dist) / soft + 0.5, 0, 1)
    win = (slice(c, d), slice(a, b))
    np.maximum(acc[win], cov, out=acc[win])
    return win[0], win[1], cov


# ---------------------------------------------------------------------------- people


@dataclass
class Walker:
    """An articulated person walking a path of ground points (x, z) with pauses."""

    rng: np.random.Generator
    path: list[tuple[float, float, float]]  # (t, x, z) keyframes; position is interpolated
    height: float = 1.75
    visible: bool = True
    top: np.ndarray = field(default_factory=lambda: np.array([0.2, 0.3, 0.6], np.float32))
    legs: np.ndarray = field(default_factory=lambda: np.array([0.15, 0.15, 0.2], np.float32))
    skin: np.ndarray = field(default_factory=lambda: np.array([0.7, 0.5, 0.4], np.float32))
    pattern: int = 0  # 0 plain, 1 stripes, 2 checks
    phase0: float = 0.0

    def __post_init__(self) -> None:
        self.sway = self.rng.uniform(0.01, 0.03)
        self.sway_f = self.rng.uniform(0.15, 0.4)
        self.breath_f = self.rng.uniform(0.2, 0.35)
        self.width = self.rng.uniform(0.34, 0.48)

    def where(self, t: float) -> tuple[float, float, float, float] | None:
        """(x, z, speed, lateral fraction of the velocity) at t, or None before/after the path."""
        p = self.path
        if t < p[0][0] or t > p[-1][0]:
            return None
        for (t0, x0, z0), (t1, x1, z1) in itertools.pairwise(p):
            if t0 <= t <= t1:
                k = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
                dist = math.hypot(x1 - x0, z1 - z0)
                speed = dist / (t1 - t0) if t1 > t0 else 0.0
                lat = abs(x1 - x0) / dist if dist > 0 else 0.0
                return x0 + k * (x1 - x0), z0 + k * (z1 - z0), speed, lat
        return None

    def parts(self, t: float) -> list[tuple[str, tuple[float, float], tuple[float, float], float]]:
        """Body capsules in body coordinates (metres, x across, y up from the feet)."""
        pos = self.where(t)
        assert pos is not None
        _, _, speed, lat = pos
        H = self.height
        walking = speed > 0.05
        ph = 2 * math.pi * 0.9 * speed * t / 0.75 + self.phase0 if walking else 0.0
        swing = (0.45 if walking else 0.0) * (0.3 + 0.7 * lat)
        sway = 0.0 if walking else self.sway * math.sin(2 * math.pi * self.sway_f * t)
        breath = 0.006 * math.sin(2 * math.pi * self.breath_f * t)
        bob = 0.02 * abs(math.sin(ph)) if walking else 0.0
        hip_y, sh_y = 0.52 * H + bob, 0.8 * H + bob + breath
        out = []
        for side, sgn in ((-1, 1), (1, -1)):
            a = swing * math.sin(ph) * sgn
            hx = sway + side * 0.09
            kx, ky = hx + math.sin(a) * 0.26 * H, hip_y - math.cos(a) * 0.26 * H
            bend = max(0.0, -a) * 0.8 if walking else 0.0
            fx = kx + math.sin(a - bend) * 0.26 * H
            fy = max(0.03, ky - math.cos(a - bend) * 0.26 * H)
            out.append(("legs", (hx, hip_y), (kx, ky), 0.075))
            out.append(("legs", (kx, ky), (fx, fy), 0.06))
            arm = -0.8 * swing * math.sin(ph) * sgn
            sx = sway + side * (self.width / 2 - 0.04)
            ex, ey = sx + math.sin(arm) * 0.17 * H + side * 0.03, sh_y - math.cos(arm) * 0.17 * H
            wx, wy = ex + math.sin(arm * 1.3) * 0.15 * H, ey - math.cos(arm * 1.3) * 0.15 * H
            out.append(("top", (sx, sh_y), (ex, ey), 0.05))
            out.append(("skin", (ex, ey), (wx, wy), 0.04))
        out.append(("top", (sway, hip_y + 0.05), (sway, sh_y - 0.02), self.width / 2 - 0.05))
        out.append(("skin", (sway * 1.2, 0.93 * H), (sway * 1.2, 0.93 * H + 0.03), 0.1))
        return out


def _render_walker(
    wk: Walker, t: float, cam: Camera, porch: Porch, day: bool, light: float
) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]] | None:
    """Radiance (h, w, 3) and coverage of a walker in a window, or None if out of view."""
    pos = wk.where(t)
    if pos is None or not wk.visible:
        return None
    x, z, _, _ = pos
    cov_all = np.zeros((cam.h, cam.w), np.float32)
    rad = np.zeros((cam.h, cam.w, 3), np.float32)
    k = cam.f / z
    any_part = False
    for part, (ax, ay), (bx, by), r in wk.parts(t):
        x0, y0 = cam.ground_to_px(x + ax, z, ay)
        x1, y1 = cam.ground_to_px(x + bx, z, by)
        res = _capsule(cov_all, x0, y0, x1, y1, r * k)
        if res is None:
            continue
        any_part = True
        sy, sx, cov = res
        colour = {"top": wk.top, "legs": wk.legs, "skin": wk.skin}[part]
        yy, xx = porch.ys[sy, sx], porch.xs[sy, sx]
        wy = cam.height - (yy - cam.yh) / k  # height on the body, metres
        wx = (xx - cam.cx) / k - x
        if part == "top" and wk.pattern == 1:
            tex = 0.7 + 0.3 * (np.sin(wy * 2 * math.pi / 0.09) > 0)
        elif part == "top" and wk.pattern == 2:
            tex = 0.7 + 0.3 * ((np.floor(wy / 0.08) + np.floor(wx / 0.08)) % 2)
        else:
            tex = 0.9 + 0.1 * np.sin(wy * 37.0 + wx * 23.0)
        shade = (0.75 + 0.25 * np.clip(1 - ((xx - (x0 + x1) / 2) / max(r * k, 1)) ** 2, 0, 1)) * tex
        val = colour[None, None, :] * (shade * light)[..., None]
        if not day:
            val = val.mean(axis=2, keepdims=True).repeat(3, axis=2)
        rad[sy, sx] = np.where(cov[..., None] > 0, val, rad[sy, sx])
    if not any_part:
        return None
    # Occlusion by nearer parts of the set (the porch post).
    cov_all *= porch.depth > z
    return rad, cov_all, (slice(0, cam.h), slice(0, cam.w))


def _walker_shadow(
    wk: Walker, t: float, cam: Camera, sun: tuple[float, float]
) -> np.ndarray | None:
    """Coverage of the walker's shadow on the ground; shadows run (sx, sz) per metre of height."""
    pos = wk.where(t)
    if pos is None:
        return None
    x, z, _, _ = pos
    sx, sz = sun
    acc = np.zeros((cam.h, cam.w), np.float32)
    for _, (ax, ay), (bx, by), r in wk.parts(t):
        gx0, gz0 = x + ax + ay * sx, z + ay * sz
        gx1, gz1 = x + bx + by * sx, z + by * sz
        if min(gz0, gz1) < 0.3:
            continue
        p0 = cam.ground_to_px(gx0, gz0)
        p1 = cam.ground_to_px(gx1, gz1)
        _capsule(acc, *p0, *p1, r * cam.f / ((gz0 + gz1) / 2), soft=1.5)
    return acc


# ---------------------------------------------------------------------------- scene


@dataclass
class NearThing:
    """Something a few centimetres from the lens: seen as a defocused blob."""

    kind: str  # insect, spider, flake, drop
    path: Callable[[float], tuple[float, float] | None]  # centre in pixels at t
    radius: float  # blur radius in pixels
    bright: float  # radiance under the IR illuminator (night) as a multiple of scene white
    opacity: float


class PorchScene(Scene):
    """A rendered porch with a script; ``visits`` are the labelled (start, end) seconds."""

    def __init__(self, name: str, w: int, h: int, seed: int, duration: float) -> None:
        self.name = name
        self.description = DESCRIPTIONS.get(name, name)
        self.width, self.height = w, h
        self.duration = duration
        self.rng = rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        self.set = Porch(rng, w, h)
        self.scale = w / 320
        self.walkers: list[Walker] = []
        self.shadow_only: list[Walker] = []
        self.near: list[NearThing] = []
        self.visits: list[tuple[float, float]] = []
        self.night = False
        self.ir_at: float | None = None  # the IR-cut filter switches to night at this time
        self.sun = rng.uniform(0.6, 1.0) * (1 if rng.random() < 0.7 else 0.2)
        ang = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.4, 2.5)
        self.sun_dir = (length * math.cos(ang), length * math.sin(ang))
        self.sky = rng.uniform(0.25, 0.45)
        self.clouds: tuple[np.ndarray, float, float, float, float] | None = None
        self.lamp: tuple[float, float, float, float] | None = None  # x, z, power, on_at
        self.headlights: list[tuple[float, float, int]] = []  # start, duration, direction
        self.plants: list[tuple[float, float, float, float, float]] = []
        self.web: list[tuple[float, float, float, float, float, float]] = []
        self.parcel: tuple[float, float, float, np.ndarray] | None = None
        self.ir_power = rng.uniform(0.6, 1.4)
        self.dusk = rng.uniform(0.02, 0.08)
        self.exposure = 1.0
        self.exp_rate = rng.uniform(0.08, 0.2)
        # Noise as a Pi's ISP-downscaled lores stream has it: small at base gain.
        self.read_noise = rng.uniform(0.4, 1.0)
        self.shot = rng.uniform(0.004, 0.02)
        self.night_gain = rng.uniform(4.0, 12.0)
        self.jpeg = int(rng.integers(25, 85)) if rng.random() < 0.7 else None
        self._nrng = np.random.default_rng([seed, 7])
        self._ae_t = -1.0

    # ---------------------------------------------------------------- script helpers

    def add_visitor(
        self, arrive: float, stand_s: float, leaves: bool = True, parcel: bool = False
    ) -> Walker:
        """A visitor walks from the street through the hedge gap to the door, and back."""
        rng, p = self.rng, self.set
        side = rng.choice([-1, 1])
        speed = rng.uniform(0.9, 1.5)
        x_street = side * rng.uniform(3, 7)
        z_street = p.street_z + rng.uniform(0.3, 1.5)
        stand = (p.path_x * 0.5 + rng.uniform(-0.35, 0.35), rng.uniform(0.9, 1.8))
        pts = [(x_street, z_street), (p.path_x, z_street), (p.path_x, p.hedge_z), stand]
        keys = [(arrive, *pts[0])]
        t = arrive
        for a, b in itertools.pairwise(pts):
            t += math.hypot(b[0] - a[0], b[1] - a[1]) / speed
            keys.append((t, *b))
        t_stand = t
        t += stand_s
        keys.append((t, *stand))
        if leaves:
            for a, b in zip(pts[::-1], pts[-2::-1], strict=False):
                t += math.hypot(b[0] - a[0], b[1] - a[1]) / speed
                keys.append((t, *b))
            self.duration = max(self.duration, t + 6.0)  # some quiet after they have gone
        wk = self._walker(keys)
        self.walkers.append(wk)
        # The visit: from the first to the last frame the visitor is in the picture.
        times = np.arange(keys[0][0], keys[-1][0] if leaves else self.duration, 1 / FPS)
        seen = [tt for tt in times if self._in_view(wk, tt)]
        if seen:
            self.visits.append((float(seen[0]), float(seen[-1]) + 1 / FPS))
        if parcel:
            c = np.array(rng.uniform([0.45, 0.3, 0.15], [0.7, 0.5, 0.3]), np.float32)
            self.parcel = (t_stand + stand_s * 0.5, stand[0] + 0.3 * side, stand[1] + 0.4, c)
        return wk

    def _walker(self, keys: list[tuple[float, float, float]]) -> Walker:
        rng = self.rng

        def colour(lo: float, hi: float) -> np.ndarray:
            return np.array(rng.uniform(lo, hi, 3), np.float32)

        skin = np.array([0.75, 0.55, 0.45], np.float32) * rng.uniform(0.3, 1.1)
        return Walker(
            np.random.default_rng(rng.integers(1 << 32)),
            keys,
            height=rng.uniform(1.5, 1.95),
            top=colour(0.05, 0.8),
            legs=colour(0.05, 0.6),
            skin=skin,
            pattern=int(rng.integers(3)),
            phase0=rng.uniform(0, 6.3),
        )

    def _in_view(self, wk: Walker, t: float) -> bool:
        pos = wk.where(t)
        if pos is None:
            return False
        x, z, _, _ = pos
        cam = self.set.cam
        px, _ = cam.ground_to_px(x, z)
        half = 0.2 * cam.f / z
        return -half < px < cam.w + half and z < self.set.far_z

    def add_passer_shadow(self, at: float) -> None:
        """Someone walks along the pavement behind the hedge; the low sun throws their shadow in."""
        rng, p = self.rng, self.set
        self.sun = max(self.sun, 0.8)
        self.sun_dir = (rng.uniform(-0.6, 0.6), -rng.uniform(2.5, 4.5))  # long, toward us
        z = p.hedge_z + rng.uniform(0.4, 1.0)
        span = 2 * z * (p.cam.w / 2) / p.cam.f + 4
        d = rng.choice([-1, 1])
        speed = rng.uniform(1.0, 1.6)
        wk = self._walker([(at, -d * span / 2, z), (at + span / speed, d * span / 2, z)])
        wk.visible = False  # behind the hedge; only the shadow reaches the picture
        self.shadow_only.append(wk)

    def add_insect(self, erratic: float = 1.0, crawl: bool = False) -> None:
        rng = self.rng
        w, h, s = self.width, self.height, self.scale
        n = 2000
        dt = 1 / FPS
        pos = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        vel = rng.normal(0, 1, 2)
        speed = rng.uniform(8, 40) * s if crawl else rng.uniform(120, 450) * s * erratic
        out = np.zeros((n, 2))
        away = np.zeros(n, bool)
        lure = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.6) * h])
        gone = 0
        for i in range(n):
            if crawl:
                vel += rng.normal(0, 0.4, 2)
                if rng.random() < 0.01:
                    vel *= 0.0  # pauses
            else:
                vel += rng.normal(0, 1.2 * erratic, 2) + 0.004 * (lure - pos) / s
            norm = np.linalg.norm(vel) + 1e-6
            vel = vel / norm * min(norm, 1.5)
            pos = pos + vel * speed * dt
            if not crawl and gone == 0 and rng.random() < 0.004:
                gone = int(rng.integers(5, 60))  # flies off for a moment
            if gone:
                gone -= 1
                away[i] = True
            out[i] = pos
        if crawl:
            out = np.clip(out, [-0.1 * w, -0.1 * h], [1.1 * w, 1.1 * h])
        radius = rng.uniform(10, 22) * s if crawl else rng.uniform(4, 16) * s

        def path(t: float, out: np.ndarray = out, away: np.ndarray = away) -> tuple | None:
            i = min(int(t * FPS), n - 1)
            return None if away[i] else (float(out[i, 0]), float(out[i, 1]))

        self.near.append(
            NearThing(
                "spider" if crawl else "insect",
                path,
                radius,
                rng.uniform(0.6, 2.0),
                rng.uniform(0.5, 0.9),
            )
        )

    def add_snow(self, n: int, rain: bool = False) -> None:
        rng = self.rng
        w, h, s = self.width, self.height, self.scale
        wind = rng.uniform(-30, 30) * s
        for _ in range(n):
            near = rng.random() < 0.08
            r = rng.uniform(3, 9) * s if near else rng.uniform(0.5, 1.6) * s
            fall = (rng.uniform(150, 400) if near else rng.uniform(20, 80)) * s
            if rain:
                fall *= 6
            x0, t0 = rng.uniform(-0.2 * w, 1.2 * w), rng.uniform(0, h / fall)
            wob, wf = rng.uniform(2, 10) * s, rng.uniform(0.3, 1.2)

            def path(t, x0=x0, t0=t0, fall=fall, wob=wob, wf=wf, period=(h + 40) / fall):
                tt = (t + t0) % period
                return (x0 + wind * tt + wob * math.sin(wf * 6.28 * t), tt * fall - 20)

            kind = "drop" if rain else "flake"
            self.near.append(NearThing(kind, path, r, rng.uniform(0.8, 1.6), 0.8 if near else 0.6))

    def add_web(self) -> None:
        rng = self.rng
        w, h = self.width, self.height
        corner = (rng.choice([0, w]), rng.choice([0, h]))
        for _ in range(int(rng.integers(3, 8))):
            a = rng.uniform(0, 2 * math.pi)
            ln = rng.uniform(0.2, 0.6) * w
            self.web.append(
                (
                    corner[0] + math.cos(a) * 10,
                    corner[1] + math.sin(a) * 10,
                    corner[0] + math.cos(a) * ln,
                    corner[1] + math.sin(a) * ln,
                    rng.uniform(0.2, 1.2),  # sway frequency
                    rng.uniform(3, 18) * self.scale,  # sway amplitude
                )
            )

    def add_plants(self) -> None:
        rng, p = self.rng, self.set
        cam = p.cam
        side = -np.sign(p.post_x) if p.post_x else 1
        for _ in range(int(rng.integers(4, 9))):
            x = side * rng.uniform(0.5, 1.2)
            z = rng.uniform(0.8, min(1.5, p.porch_d))
            bx, by = cam.ground_to_px(x, z, rng.uniform(0.2, 0.6))
            ln = rng.uniform(0.2, 0.5) * cam.f / z
            self.plants.append((bx, by, ln, rng.uniform(0.5, 2.0), rng.uniform(0.1, 0.35)))

    def add_clouds(self) -> None:
        rng = self.rng
        tex = _noise_tex(rng, 128, 3, 2)
        cover = rng.uniform(0.35, 0.65)
        field_ = np.clip((tex - cover) * rng.uniform(3, 8) + 0.5, 0, 1)
        self.sun = max(self.sun, 0.8)
        ang = rng.uniform(0, 2 * math.pi)
        v = rng.uniform(2.0, 8.0)  # metres per second on the ground
        self.clouds = (field_, rng.uniform(40, 120), v * math.cos(ang), v * math.sin(ang), 0)

    # ---------------------------------------------------------------- rendering

    def _light(self, t: float, night: bool) -> np.ndarray:
        """Illumination of the set (h, w) at t."""
        p = self.set
        if night:
            ir = self.ir_power * p.vignette / np.maximum(p.dist, 0.5) ** 2 * 6
            ill = ir.astype(np.float32)
        else:
            sun = np.full(p.depth.shape, self.sun, np.float32)
            if p.set_roof_shade is not None:
                sun *= p.set_roof_shade
            if self.clouds is not None:
                tex, size, vx, vz, _ = self.clouds
                n = tex.shape[0]
                k = n / size
                cl = _sample(tex, (p.xg_f + vx * t) * k, (p.zg_f + vz * t) * k)
                sun *= np.where(p.kind == 0, 1.0, cl)
            shadow = np.zeros_like(sun)
            if self.sun > 0.3:
                for wk in self.walkers + self.shadow_only:
                    sh = _walker_shadow(wk, t, p.cam, self.sun_dir)
                    if sh is not None:
                        np.maximum(shadow, sh, out=shadow)
                sun *= 1 - 0.9 * shadow * p.ground
            ill = sun + self.sky
        if self.lamp is not None and t >= self.lamp[3]:
            lx, lz, power, _ = self.lamp
            d2 = (p.xg_f - lx) ** 2 + (p.zg_f - lz) ** 2 + 1.5
            ill = ill + np.where(p.kind == 1, power / d2, power * 0.3 / (p.dist_f**2 + 1))
        for start, dur, d in self.headlights:
            if start <= t < start + dur:
                k = (t - start) / dur
                cx = -d * 12 + d * 24 * k
                beam = np.exp(-(((p.xg_f - cx) / 3.0) ** 2)) * (p.zg_f > p.hedge_z - 3)
                beam += 0.5 * np.exp(-(((p.xf_f - cx * 1.5) / 5.0) ** 2)) * (p.kind == 2)
                ill = ill + 2.5 * beam.astype(np.float32) * np.sin(math.pi * k)
        return ill

    def render(self, t: float) -> SceneFrame:
        p = self.set
        cam = p.cam
        night = self.night or (self.ir_at is not None and t >= self.ir_at)
        ill = self._light(t, night)
        if night:
            rad = (p.ir_alb * ill)[..., None].repeat(3, axis=2)
        else:
            rad = p.alb * ill[..., None]
            rad[p.sky] = (np.array([0.55, 0.65, 0.85], np.float32) * 1.4)[None, :] * (
                p.sky_grad[p.sky][:, None] * (self.sun + self.sky)
            )
        if night:
            rad[p.sky] = 0.01
        # The parcel, once put down.
        if self.parcel is not None and t >= self.parcel[0]:
            _, bx, bz, col = self.parcel
            x0, y0 = cam.ground_to_px(bx - 0.2, bz, 0.3)
            x1, y1 = cam.ground_to_px(bx + 0.2, bz, 0.0)
            a, b = max(0, int(x0)), min(cam.w, int(x1))
            c, d = max(0, int(y0)), min(cam.h, int(y1))
            if a < b and c < d:
                lit = ill[c:d, a:b].mean()
                rad[c:d, a:b] = col * lit * (0.3 if night else 1)
                rad[c:d, (a + b) // 2 - 1 : (a + b) // 2 + 1] *= 1.4
        # People, far to near.
        order = sorted(
            (wk for wk in self.walkers if wk.where(t) is not None),
            key=lambda wk: -wk.where(t)[1],  # type: ignore[index]
        )
        for wk in order:
            _x, z, _, _ = wk.where(t)  # type: ignore[misc]
            if night:
                light = self.ir_power * 6 / max(z, 0.5) ** 2
            else:
                shade = 0.35 if (p.set_roof_shade is not None and z < p.porch_d) else 1.0
                light = self.sun * shade + self.sky
            r = _render_walker(wk, t, cam, p, not night, light)
            if r is None:
                continue
            prad, cov, _ = r
            rad += (prad - rad) * cov[..., None]
        # Plants and cobweb near the camera.
        if self.plants:
            cov = np.zeros((cam.h, cam.w), np.float32)
            for bx, by, ln, fq, amp in self.plants:
                gust = 1 + 0.8 * math.sin(0.37 * t + bx)
                a = -math.pi / 2 + amp * gust * math.sin(2 * math.pi * fq * t + by)
                _capsule(cov, bx, by, bx + ln * math.cos(a), by + ln * math.sin(a), ln * 0.12)
            leaf = 0.5 if night else 0.12
            lum = (ill * 0 + (6 * self.ir_power if night else self.sun + self.sky)) * leaf
            rad += (np.stack([lum * 0.5, lum, lum * 0.4], -1) - rad) * cov[..., None]
        if self.web:
            cov = np.zeros((cam.h, cam.w), np.float32)
            for x0, y0, x1, y1, fq, amp in self.web:
                off = (
                    amp * math.sin(2 * math.pi * fq * t + x1 * 0.01) * (1 + 0.5 * math.sin(t * 0.3))
                )
                _capsule(cov, x0, y0, x1 + off, y1 - off * 0.5, 1.2 * self.scale, soft=3.0)
            bright = 2.5 if night else 0.25
            rad += bright * cov[..., None] * (0.6 if night else 1.0)
        # Insects, flakes, drops: defocused discs close to the lens, one layer per kind.
        layers: dict[str, tuple[np.ndarray, list[float]]] = {}
        for th in self.near:
            c = th.path(t)
            if c is None:
                continue
            cov, vals = layers.setdefault(th.kind, (np.zeros((cam.h, cam.w), np.float32), []))
            vals.append(th.bright * th.opacity)
            if th.kind == "drop":
                _capsule(cov, c[0], c[1], c[0] + 1, c[1] + th.radius * 4, th.radius * 0.4, 1.0)
            else:
                soft = max(1.0, th.radius * 1.2)
                _capsule(cov, c[0], c[1], c[0], c[1], th.radius, soft=soft)
        for kind, (cov, vals) in layers.items():
            bright = float(np.mean(vals))
            if night:
                val = bright * (1.0 if kind != "drop" else 0.4)
                rad += (val - rad) * cov[..., None]
            else:
                val = 0.05 if kind in ("insect", "spider") else 0.9 * (self.sun + self.sky)
                rad += (val - rad) * (cov * 0.7)[..., None]
        # The sensor: auto-exposure, gain-dependent noise, JPEG.
        # Metering on the bright end, as a camera does to keep highlights.
        level = float(np.percentile(rad[::4, ::4], 90))
        want = 0.8 / max(level, 1e-3)
        if self._ae_t < 0:
            self.exposure = want
        else:
            self.exposure *= (want / self.exposure) ** self.exp_rate
        self.exposure = min(max(self.exposure, 0.2), 60.0)
        self._ae_t = t
        sig = np.clip(rad * (self.exposure * 255), 0, 255)
        gain = min(16.0, (self.night_gain if night else 1.0) * max(1.0, self.exposure / 1.5))
        std = np.sqrt(self.read_noise**2 * gain**2 + self.shot * gain * sig[..., 1])
        noise = self._nrng.standard_normal(std.shape, dtype=np.float32) * std
        sig += noise[..., None]
        if not night:
            sig += self._nrng.standard_normal(sig.shape, dtype=np.float32) * (0.2 * gain)
        img = np.clip(sig, 0, 255).astype(np.uint8)
        if self.jpeg is not None:
            img = _jpeg(img, self.jpeg)
        truth = any(a <= t < b for a, b in self.visits)
        return SceneFrame(img, truth)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    try:
        import cv2
    except ImportError:  # the generator works without OpenCV, only without compression
        return img
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1] if ok else img


def _prepare(set_: Porch) -> None:
    """Finite copies of the world coordinates, for lighting arithmetic."""
    fin = np.isfinite(set_.zg)
    set_.xg_f = np.where(fin, set_.xg, 0).astype(np.float32)
    set_.zg_f = np.where(fin, set_.zg, 1e3).astype(np.float32)
    set_.dist_f = np.where(np.isfinite(set_.dist), set_.dist, 1e3).astype(np.float32)
    set_.xf_f = ((set_.xs - set_.cam.cx) * set_.far_z / set_.cam.f).astype(np.float32)
    set_.set_roof_shade = np.where(set_.porch, 0.35, 1.0).astype(np.float32) if set_.roof else None


# ---------------------------------------------------------------------------- classes


def _night(sc: PorchScene) -> None:
    sc.night = True


def _script(name: str, sc: PorchScene) -> None:
    rng = sc.rng
    d = sc.duration
    if name.endswith(("_night", "_insect")) or name in (
        "insect",
        "spider",
        "cobweb",
        "headlights",
        "lamp_on",
    ):
        _night(sc)
    if name == "ir_cut":
        sc.sun, sc.sky = 0.02, sc.dusk
        sc.ir_at = rng.uniform(5, d - 8)
    if name in ("insect", "visitor_insect"):
        for _ in range(int(rng.integers(1, 4))):
            sc.add_insect(erratic=rng.uniform(0.6, 1.4))
    if name == "spider":
        sc.add_insect(crawl=True)
    if name == "cobweb":
        sc.add_web()
    if name in ("clouds", "visitor_clouds"):
        sc.add_clouds()
    if name in ("snow_night", "snow_day", "visitor_snow"):
        sc.add_snow(int(rng.integers(80, 300)))
        sc.sun *= 0.3
    if name == "rain":
        sc.add_snow(int(rng.integers(60, 200)), rain=True)
        sc.sun *= 0.2
    if name == "plants":
        sc.add_plants()
    if name == "passer_shadow":
        for _ in range(int(rng.integers(1, 3))):
            sc.add_passer_shadow(rng.uniform(1, d - 12))
    if name == "headlights":
        for _ in range(int(rng.integers(1, 4))):
            sc.headlights.append((rng.uniform(1, d - 5), rng.uniform(1.5, 4), rng.choice([-1, 1])))
    if name == "lamp_on":
        sc.lamp = (
            rng.uniform(-1, 1),
            rng.uniform(0.3, 1.0),
            rng.uniform(1, 4),
            rng.uniform(3, d - 5),
        )
    if name.startswith("visitor") or name == "parcel":
        stand = rng.uniform(3, 10)
        if name == "visitor_still":
            stand = rng.uniform(30, 40)
        sc.add_visitor(rng.uniform(1, 4), stand, parcel=name == "parcel")


# name: (description, seconds, has visitors)
CLASSES: dict[str, tuple[str, float, bool]] = {
    "empty_day": ("an empty porch by day", 30, False),
    "empty_night": ("an empty porch under IR at night", 30, False),
    "insect": ("insects flying close to the lens at night, bright under IR", 30, False),
    "spider": ("a spider crawling over the lens at night", 30, False),
    "cobweb": ("a cobweb swaying in front of the lens at night", 30, False),
    "clouds": ("cloud shadows drifting over the garden", 30, False),
    "snow_night": ("snow falling at night, flakes lit by IR", 30, False),
    "snow_day": ("snow falling by day", 30, False),
    "rain": ("rain", 30, False),
    "plants": ("potted plants swaying near the camera", 30, False),
    "passer_shadow": ("a passer-by behind the hedge; only their shadow enters", 30, False),
    "headlights": ("cars' headlights sweep the street at night", 30, False),
    "lamp_on": ("the porch lamp switches on at night", 30, False),
    "ir_cut": ("dusk: the IR-cut filter switches to night mode", 30, False),
    "visitor_day": ("a visitor walks up, waits, leaves", 35, True),
    "visitor_night": ("a visitor at night, under IR", 35, True),
    "visitor_still": ("a visitor stands still at the door for 30-40 s", 60, True),
    "visitor_clouds": ("a visitor while cloud shadows drift", 35, True),
    "visitor_snow": ("a visitor in falling snow", 35, True),
    "visitor_insect": ("a visitor at night with insects at the lens", 35, True),
    "parcel": ("a courier leaves a parcel and goes", 35, True),
}
DESCRIPTIONS = {k: v[0] for k, v in CLASSES.items()}


class UnknownPorch(ValueError):
    pass


def make_porch(name: str, width: int = 320, height: int = 240, seed: int = 0) -> PorchScene:
    """A rendered porch scene of class ``name``; every parameter comes from ``seed``."""
    if name not in CLASSES:
        raise UnknownPorch(f"unknown porch scene {name!r} (known: {', '.join(CLASSES)})")
    sc = PorchScene(name, width, height, seed, CLASSES[name][1])
    _prepare(sc.set)
    _script(name, sc)
    return sc
