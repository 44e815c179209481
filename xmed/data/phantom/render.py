"""Rendering one phantom eye from its cause: anatomy, findings with pixel masks, distractors,
camera.

Everything is drawn in fractions of the image size, so one seed gives the same eye at every
size. Randomness comes from separate streams (cause, appearance, camera, shortcut), so turning
the shortcut marker on, or changing how something looks, never changes the labels.

Local disc coordinates: ``u`` points temporally (towards the fovea), ``v`` downwards in the
image; the polar angle ``phi`` is 0 temporal, +90° superior, -90° inferior, 180° nasal — the
same for OD and OS, so every finding is placed by anatomy, not by image side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from xmed.data.phantom.cause import LARGE_CUP_VCDR, Cause

SUPERIOR, INFERIOR = math.pi / 2, -math.pi / 2
_CUP_PROFILE_SAMPLES = 720


@dataclass
class Canvas:
    """Per-size pixel grids, cached: rendering thousands of eyes reuses them."""

    size: int
    x: np.ndarray
    y: np.ndarray


@lru_cache(maxsize=8)
def _canvas(size: int) -> Canvas:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return Canvas(size, x, y)


def _smooth_noise(rng: np.random.Generator, grid: int, size: int) -> np.ndarray:
    """Band-limited noise in [-1, 1]: a small random grid upsampled (size-independent draws)."""
    small = rng.uniform(-1, 1, (grid, grid)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def _blend(image: np.ndarray, colour, alpha: np.ndarray) -> None:
    """In place: image = image·(1−α) + colour·α, α an H×W weight map."""
    a = alpha[..., None]
    image *= 1 - a
    image += a * np.asarray(colour, np.float32)


def _soft(mask: np.ndarray, sigma_px: float) -> np.ndarray:
    m = mask.astype(np.float32)
    if sigma_px <= 0.3:
        return m
    return cv2.GaussianBlur(m, (0, 0), sigma_px)


@dataclass
class Geometry:
    """Where things are, in pixels."""

    size: int
    fov_cx: float
    fov_cy: float
    fov_r: float
    side: int           # +1: OD, the disc lies right of the fovea in the image; -1: OS
    fovea: tuple[float, float]
    disc: tuple[float, float]
    disc_a: float       # vertical semi-axis
    disc_b: float       # horizontal semi-axis

    def to_image(self, u, v):
        """Local disc (temporal u, downward v) to image (x, y)."""
        return self.disc[0] - self.side * u, self.disc[1] + v

    def direction(self, phi: float) -> tuple[float, float]:
        """Image direction (dx, dy) of the local polar angle ``phi``."""
        return -self.side * math.cos(phi), -math.sin(phi)


@dataclass
class CupShape:
    """Cup outline as a radius per angle, in disc-normalised units (disc boundary = 1)."""

    profile: np.ndarray         # radius at angles linspace(-pi, pi, N, endpoint=False)
    base_profile: np.ndarray    # the same without rim notches
    centre_u: float             # cup centre offset, disc-normalised
    centre_v: float

    def radius(self, phi: np.ndarray, base: bool = False) -> np.ndarray:
        prof = self.base_profile if base else self.profile
        idx = ((phi + math.pi) / (2 * math.pi) * len(prof)).astype(np.int32) % len(prof)
        return prof[idx]


def _cup_shape(rng: np.random.Generator, vcdr: float, notch_sup: bool, notch_inf: bool) -> CupShape:
    """A cup whose vertical extent is exactly ``vcdr`` of the disc's.

    Rim thinning (ANRS/ANRI) is a localised notch at the pole that removes a fraction of the
    rim there; the base radius is then solved so that the vertical cup/disc ratio stays the
    drawn vCDR — the vCDR is a cause, the notch only reshapes the cup around it.
    """
    phi = np.linspace(-math.pi, math.pi, _CUP_PROFILE_SAMPLES, endpoint=False)
    aspect = rng.uniform(0.85, 1.05)                       # horizontal / vertical cup axis
    ellipse = 1.0 / np.sqrt((np.cos(phi) / aspect) ** 2 + np.sin(phi) ** 2)
    width = math.radians(rng.uniform(18, 28))
    bumps = []
    for present, pole in ((notch_sup, SUPERIOR), (notch_inf, INFERIOR)):
        frac = rng.uniform(0.55, 0.8)                      # drawn always: same stream either way
        d = np.angle(np.exp(1j * (phi - pole)))
        bumps.append((frac if present else 0.0) * np.exp(-0.5 * (d / width) ** 2))
    centre_v = rng.uniform(-0.04, 0.0)                     # superior rim a little thinner (ISNT)
    centre_u = rng.uniform(0.02, 0.10)                     # cup sits slightly temporal
    sin = np.sin(phi)

    def profile_for(c):
        base = c * ellipse
        rim = np.clip(0.97 - base, 0, None)
        return base + rim * (bumps[0] + bumps[1]), base

    def extent(c):
        prof, _ = profile_for(c)
        return (prof * sin).max() - (prof * sin).min()

    # bisection on the base radius so that the vertical extent equals 2·vCDR
    lo, hi = 0.0, 0.97
    target = 2 * vcdr
    if extent(lo) > target:  # notches alone exceed the vCDR: shrink them (rare; small cups)
        scale = 0.9 * target / max(extent(lo), 1e-6)
        bumps = [b * scale for b in bumps]
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if extent(mid) < target:
            lo = mid
        else:
            hi = mid
    prof, base = profile_for(0.5 * (lo + hi))
    return CupShape(prof.astype(np.float32), base.astype(np.float32), centre_u, centre_v)


@dataclass
class Rendered:
    image: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def render_eye(cause: Cause, eye: str, size: int, seed: int, *, shortcut: bool,
               camera: bool = True, distractors: bool = True, cup_vcdr: float | None = None) -> Rendered:
    """Render the eye of ``cause``; ``seed`` drives every appearance draw.

    ``cup_vcdr`` draws the cup at that vCDR instead of the cause's, everything else as drawn (the
    disc too, which the cause's vCDR sizes): the same eye with a smaller or larger cup.
    """
    look = np.random.default_rng([seed, 1])
    cam = np.random.default_rng([seed, 2])
    cv = _canvas(size)
    S = float(size)
    side = 1 if eye == "OD" else -1
    f = cause.findings

    # ---------------------------------------------------------------- geometry
    fov_cx = S / 2 + look.uniform(-0.01, 0.01) * S
    fov_cy = S / 2 + look.uniform(-0.01, 0.01) * S
    fov_r = look.uniform(0.44, 0.48) * S
    fovea = (fov_cx - side * look.uniform(0.0, 0.04) * S, fov_cy + look.uniform(-0.02, 0.02) * S)
    disc_scale = float(np.clip(1.0 + 0.55 * (cause.vcdr - 0.45) + look.normal(0, 0.06), 0.8, 1.35))
    disc_a = 0.068 * S * disc_scale
    disc_b = disc_a * look.uniform(0.86, 0.96)
    disc = (fovea[0] + side * look.uniform(0.20, 0.23) * S, fovea[1] - look.uniform(0.0, 0.03) * S)
    g = Geometry(size, fov_cx, fov_cy, fov_r, side, fovea, disc, disc_a, disc_b)

    # local disc coordinates for every pixel
    u = (cv.x - disc[0]) * -side
    v = cv.y - disc[1]
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(-v, u)                       # image-space polar angle around the disc
    un, vn = u / disc_b, v / disc_a
    rho_n = np.sqrt(un * un + vn * vn)
    fov = (cv.x - fov_cx) ** 2 + (cv.y - fov_cy) ** 2 <= fov_r ** 2
    masks: dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------- background
    pigment = look.uniform(0, 1)
    base = np.array([0.86, 0.42, 0.20]) * (1 - pigment) + np.array([0.60, 0.22, 0.10]) * pigment
    texture = 0.06 * _smooth_noise(look, 10, size) + 0.025 * _smooth_noise(look, 48, size)
    r_fov = np.sqrt((cv.x - fov_cx) ** 2 + (cv.y - fov_cy) ** 2) / fov_r
    shade = (1.0 - 0.45 * np.clip(r_fov, 0, 1) ** 2.5) * (1 + texture)
    # macula: darker, with a small bright foveal reflex
    d2_fovea = ((cv.x - fovea[0]) ** 2 + (cv.y - fovea[1]) ** 2) / S ** 2
    shade *= 1 - 0.32 * np.exp(-d2_fovea / (2 * 0.065 ** 2))
    image = shade[..., None] * base.astype(np.float32)[None, None, :]
    image += (0.18 * np.exp(-d2_fovea / (2 * 0.006 ** 2)))[..., None] * np.float32([1, 0.9, 0.7])

    # ---------------------------------------------------------------- RNFL striations and defects
    outside_disc = np.clip((rho_n - 1.0) * 4, 0, 1)
    decay = np.exp(-np.clip(rho - disc_a, 0, None) / (0.22 * S)) * outside_disc
    bundles = np.exp(-((theta - 1.05) / 0.55) ** 2) + np.exp(-((theta + 1.05) / 0.55) ** 2)
    stria = 0.5 + 0.5 * np.sin(theta * (0.55 * S) + 3 * _smooth_noise(look, 24, size))
    rnfl = bundles * decay * stria
    for code, pole_sign in (("RNFLDS", 1), ("RNFLDI", -1)):
        centre0 = pole_sign * look.uniform(0.75, 1.25)      # wedge starts supero/infero-temporal
        length = look.uniform(0.24, 0.34) * S
        half0, spread = look.uniform(0.07, 0.12), look.uniform(0.25, 0.45)
        if not f[code]:
            continue
        t = np.clip(rho - disc_a, 0, None) / S
        centre = centre0 - pole_sign * 0.9 * t                # arcuate: bends towards the raphe
        half = half0 + spread * t
        dphi = np.abs(np.angle(np.exp(1j * (theta - centre))))
        inside = (dphi <= half) & (rho > disc_a * 0.9) & (rho < disc_a + length) & fov
        masks[code] = inside
        depth = _soft(inside, 0.006 * S)
        rnfl *= 1 - depth
        image *= (1 - 0.16 * depth)[..., None]
    image += (0.075 * rnfl)[..., None] * np.float32([1.0, 0.95, 0.8])

    # ---------------------------------------------------------------- disc and cup
    # Disc-level work happens in a window around the disc: most of the frame never sees it.
    half = int(math.ceil(2.0 * disc_a)) + 2
    x0, y0 = max(int(disc[0]) - half, 0), max(int(disc[1]) - half, 0)
    win = np.s_[y0:int(disc[1]) + half, x0:int(disc[0]) + half]
    local = image[win]                                   # a view: blends write through
    un_w, vn_w = un[win], vn[win]

    def full(mask_w: np.ndarray) -> np.ndarray:
        out = np.zeros((size, size), bool)
        out[win] = mask_w
        return out

    # peripapillary atrophy: a label-free distractor
    ppa_draw, ppa_extent = look.random(), look.uniform(1.15, 1.35)
    if ppa_draw < 0.3 and distractors:
        ppa = (rho_n[win] > 1.0) & (rho_n[win] < ppa_extent) & (np.cos(theta[win]) > 0.3)
        _blend(local, (0.80, 0.62, 0.45), 0.55 * _soft(ppa, 0.004 * S))

    cup = _cup_shape(look, cause.vcdr if cup_vcdr is None else float(cup_vcdr), bool(f["ANRS"]), bool(f["ANRI"]))
    disc_mask = rho_n[win] <= 1.0
    cu, cvv = un_w - cup.centre_u, vn_w - cup.centre_v
    cup_rho = np.sqrt(cu * cu + cvv * cvv)
    cup_phi = np.arctan2(-cvv, cu)
    cup_radius = cup.radius(cup_phi)
    cup_mask = (cup_rho <= cup_radius) & disc_mask
    masks["disc"], masks["cup"] = full(disc_mask), full(cup_mask)
    rim_colour = np.array([0.92, 0.50, 0.34]) * look.uniform(0.92, 1.05)
    cup_colour = np.array([1.0, 0.93, 0.80]) * look.uniform(0.95, 1.02)
    _blend(local, rim_colour, _soft(disc_mask, 0.05 * disc_a))
    depth = np.clip(1 - cup_rho / np.maximum(cup_radius, 1e-3), 0, 1)
    _blend(local, cup_colour, _soft(cup_mask, 0.04 * disc_a) * (0.8 + 0.2 * depth))
    for code, pole in (("ANRS", SUPERIOR), ("ANRI", INFERIOR)):
        if f[code]:
            near_pole = np.abs(np.angle(np.exp(1j * (cup_phi - pole)))) < math.radians(40)
            masks[code] = full(disc_mask & near_pole & (cup_rho > cup.radius(cup_phi, base=True)))
    if f["LC"] if cup_vcdr is None else cup_vcdr >= LARGE_CUP_VCDR:
        masks["LC"] = masks["cup"].copy()

    # laminar dots: grey pores in the cup floor
    n_dots = int(look.integers(4, 11))
    dot_pos = look.uniform(-1, 1, (n_dots, 2))
    dot_r = look.uniform(0.05, 0.08, n_dots)
    if f["LD"]:
        dots = np.zeros((size, size), np.uint8)
        for (du, dv), r in zip(dot_pos, dot_r):
            ang = math.atan2(-dv, du)
            rr = 0.7 * math.hypot(du, dv) / math.sqrt(2) * float(cup.radius(np.array([ang]))[0])
            cx_u = (cup.centre_u + rr * math.cos(ang)) * disc_b
            cy_v = (cup.centre_v - rr * math.sin(ang)) * disc_a
            x, y = g.to_image(cx_u, cy_v)
            cv2.circle(dots, (int(round(x * 16)), int(round(y * 16))), max(int(round(r * disc_a * 16)), 8),
                       1, -1, cv2.LINE_AA, 4)
        dots_m = dots[win] > 0
        _blend(local, (0.55, 0.47, 0.42), 0.75 * _soft(dots_m, 0.15 * dot_r.mean() * disc_a))
        masks["LD"] = full(cv2.dilate(dots_m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & cup_mask)

    # ---------------------------------------------------------------- vessels
    veins = np.zeros((size, size), np.uint8)
    arteries = np.zeros((size, size), np.uint8)
    trunk_u = -(look.uniform(0.45, 0.65) if f["NVT"] else look.uniform(0.0, 0.15)) * disc_b
    trunk_v = look.uniform(-0.1, 0.1) * disc_a
    trunk = g.to_image(trunk_u, trunk_v)
    if f["NVT"]:
        r_trunk = 0.35 * disc_a
        masks["NVT"] = full(((cv.x[win] - trunk[0]) ** 2 + (cv.y[win] - trunk[1]) ** 2 <= r_trunk ** 2) & disc_mask)
    # (start angle, turn per step, canvas, width) for the four arcades; veins wider than arteries
    arcades = []
    for pole_sign in (1, -1):
        for canvas, width, jitter in ((veins, 0.0072, 0.08), (arteries, 0.0055, -0.12)):
            arcades.append((pole_sign * (1.45 + jitter), -pole_sign * 0.075, canvas, width, 48))   # temporal arcade
            arcades.append((pole_sign * (2.05 + jitter), pole_sign * 0.012, canvas, width * 0.75, 30))  # nasal
    for phi0, turn, canvas, width, steps in arcades:
        _draw_vessel(look, canvas, trunk, g, phi0, turn, width * S, steps, depth=2)
    # circumlinear vessels at the poles: on the rim normally, bared (on the cup floor) in BCLV
    bclv_draw = look.random(2)
    for (code, pole), draw in zip((("BCLVS", SUPERIOR), ("BCLVI", INFERIOR)), bclv_draw):
        bared = bool(f[code])
        if not bared and draw > 0.6:
            continue
        phis = pole + np.linspace(-0.6, 0.6, 24)
        r_cup = cup.radius(phis)
        radial = r_cup - 0.10 if bared else np.minimum(r_cup + 0.08, 0.93)
        pu = (cup.centre_u + radial * np.cos(phis)) * disc_b
        pv = (cup.centre_v - radial * np.sin(phis)) * disc_a
        xs, ys = g.to_image(pu, pv)
        pts = np.stack([xs, ys], 1)
        cv2.polylines(veins, [np.round(pts * 16).astype(np.int32)], False, 200,
                      max(1, int(round(0.004 * S))), cv2.LINE_AA, 4)
        if bared:
            near = np.abs(np.angle(np.exp(1j * (cup_phi - pole)))) < 0.7
            band = near & (cup_rho > cup.radius(cup_phi) - 0.2) & (cup_rho < cup.radius(cup_phi) + 0.05)
            masks[code] = full(band & disc_mask)
    vein_a = _soft(veins > 0, 0.0015 * S) * (veins.astype(np.float32) / 255.0 + 0.2).clip(0, 1)
    art_a = _soft(arteries > 0, 0.0015 * S) * (arteries.astype(np.float32) / 255.0 + 0.2).clip(0, 1)
    _blend(image, (0.42, 0.07, 0.05), 0.85 * vein_a)
    _blend(image, (0.66, 0.14, 0.08), 0.75 * art_a)

    # disc haemorrhage: a flame at the disc margin, along the nerve fibres
    dh_phi = (-1 if look.random() < 0.65 else 1) * look.uniform(0.5, 1.2)
    dh_len, dh_wid = look.uniform(0.45, 0.75) * disc_a, look.uniform(0.12, 0.2) * disc_a
    if f["DH"]:
        ru = math.cos(dh_phi) * disc_b * 1.02
        rv = -math.sin(dh_phi) * disc_a * 1.02
        x, y = g.to_image(ru, rv)
        dx, dy = g.direction(dh_phi)
        flame = np.zeros((size, size), np.uint8)
        cv2.ellipse(flame, (int(round(x * 16)), int(round(y * 16))),
                    (int(round(dh_len / 2 * 16)), int(round(dh_wid / 2 * 16))),
                    math.degrees(math.atan2(dy, dx)), 0, 360, 1, -1, cv2.LINE_AA, 4)
        masks["DH"] = flame > 0
        _blend(local, (0.45, 0.04, 0.03), 0.9 * _soft(masks["DH"][win], 0.04 * disc_a))

    # ---------------------------------------------------------------- distractors (label-free)
    n_drusen = int(look.integers(3, 16)) if look.random() < 0.15 else 0
    drusen_xy = look.normal(0, 0.05, (16, 2))
    n_dust = int(look.integers(1, 4)) if look.random() < 0.3 else 0
    dust_xy = look.uniform(-0.7, 0.7, (3, 2))
    dust_sigma = look.uniform(0.008, 0.02, 3)
    gradient_dir = look.uniform(0, 2 * math.pi)
    gradient_amp = look.uniform(0.0, 0.25)
    glare = look.random() < 0.3
    if distractors:
        if n_drusen:
            spots = np.zeros((size, size), np.float32)
            for dx_, dy_ in drusen_xy[:n_drusen]:
                centre = (int(round((fovea[0] + dx_ * S) * 16)), int(round((fovea[1] + dy_ * S) * 16)))
                cv2.circle(spots, centre, max(int(0.006 * S * 16), 8), 1.0, -1, cv2.LINE_AA, 4)
            _blend(image, (0.95, 0.85, 0.45), 0.7 * _soft(spots > 0, 0.002 * S))
        if n_dust:
            dust = np.zeros((size, size), np.float32)
            for (dx_, dy_), sig in zip(dust_xy[:n_dust], dust_sigma[:n_dust]):
                centre = (int(round((fov_cx + dx_ * fov_r) * 16)), int(round((fov_cy + dy_ * fov_r) * 16)))
                cv2.circle(dust, centre, max(int(sig * S * 16), 8), 1.0, -1, cv2.LINE_AA, 4)
            image *= (1 - 0.25 * _soft(dust > 0, 0.008 * S))[..., None]
        ramp = ((cv.x - fov_cx) * math.cos(gradient_dir) + (cv.y - fov_cy) * math.sin(gradient_dir)) / fov_r
        image *= (1 + gradient_amp * 0.5 * ramp)[..., None]
        if glare:
            image += (0.12 * np.clip((r_fov - 0.85) / 0.15, 0, 1) ** 2)[..., None] * np.float32([0.9, 0.8, 0.7])

    # ---------------------------------------------------------------- shortcut marker
    if shortcut:
        ang = math.radians(225)
        mx, my = fov_cx + 0.82 * fov_r * math.cos(ang), fov_cy - 0.82 * fov_r * math.sin(ang)
        half = 0.018 * S
        marker = (np.abs(cv.x - mx) <= half) & (np.abs(cv.y - my) <= half)
        _blend(image, (0.97, 0.97, 0.92), marker.astype(np.float32))
        masks["shortcut"] = marker

    # ---------------------------------------------------------------- camera
    image *= np.float32(cam.uniform(0.8, 1.15) if camera else 1.0)
    if camera:
        image *= cam.normal(1.0, 0.05, 3).astype(np.float32)
        image = np.clip(image, 0, 1) ** np.float32(cam.uniform(0.85, 1.15))
        blur = cam.uniform(0.0, 1.2) * S / 512
        if blur > 0.3:
            image = cv2.GaussianBlur(image, (0, 0), blur)
        image += cam.normal(0, cam.uniform(0.004, 0.02), (size, size, 1)).astype(np.float32)
    fov_soft = np.clip(fov_r - np.sqrt((cv.x - fov_cx) ** 2 + (cv.y - fov_cy) ** 2) + 0.5, 0, 1)
    image *= fov_soft[..., None]
    out = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if camera and cam.random() < 0.7:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(cam.integers(70, 96))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    masks["fov"] = fov
    return Rendered(out, masks)


def _draw_vessel(rng, canvas, start, g: Geometry, phi0, turn, width, steps, depth):
    """A vessel as a curving random walk from ``start``, branching ``depth`` more times."""
    S = g.size
    step = 0.011 * S
    x, y = start
    phi = phi0
    branch_at = set(rng.choice(np.arange(6, steps - 4), size=min(2, steps - 10), replace=False).tolist()) if depth else set()
    pts = [(x, y)]
    widths = []
    for i in range(steps):
        phi += turn * 0.95 ** i + rng.normal(0, 0.05)
        dx, dy = g.direction(phi)
        x, y = x + dx * step, y + dy * step
        pts.append((x, y))
        widths.append(width * (0.985 ** i))
        if i in branch_at:
            sign = 1 if rng.random() < 0.5 else -1
            _draw_vessel(rng, canvas, (x, y), g, phi + sign * rng.uniform(0.4, 0.8), turn * 0.5,
                         width * 0.65, int(steps * 0.5), depth - 1)
        if (x - g.fov_cx) ** 2 + (y - g.fov_cy) ** 2 > (g.fov_r * 1.05) ** 2:
            break
    for (x0, y0), (x1, y1), w in zip(pts[:-1], pts[1:], widths):
        cv2.line(canvas, (int(x0 * 16), int(y0 * 16)), (int(x1 * 16), int(y1 * 16)), 255,
                 max(1, int(round(w))), cv2.LINE_AA, 4)
