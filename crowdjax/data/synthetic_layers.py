"""Drawing layers of the synthetic crowds: backgrounds, distractors, people and their placement.

Used by `crowdjax.data.synthetic.render_scene`. Canvases are float32 RGB [H, W, 3] in grey levels
0-255. cv2 puts pixel centres on integer coordinates while crowdjax puts pixel (r, c) at
(c + 0.5, r + 0.5), so every shape is drawn at (x - 0.5, y - 0.5), with 4 bits of sub-pixel
precision.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

SKIN_TONES = ((255, 219, 177), (238, 190, 140), (220, 168, 110), (190, 130, 80), (140, 90, 55))
SKIN_TONES += ((95, 60, 40),)
HAIR_COLORS = ((25, 20, 18), (60, 40, 25), (105, 70, 40), (165, 125, 75), (200, 195, 185))
CASUAL_CLOTHING = (
    (200, 40, 40), (40, 80, 190), (40, 150, 70), (230, 200, 60), (240, 240, 240), (30, 30, 35),
    (120, 60, 150), (240, 130, 40), (90, 160, 200), (150, 150, 150), (110, 80, 50),
)  # fmt: skip
TEAM_CLOTHING = ((200, 30, 30), (245, 245, 245), (30, 60, 180), (250, 210, 40), (30, 30, 30))
DARK_CLOTHING = ((40, 40, 50), (70, 40, 40), (40, 60, 80), (90, 90, 95), (60, 70, 50))

_SHIFT = 4
_ONE = 1 << _SHIFT


@dataclasses.dataclass
class Background:
    """canvas [H, W, 3] float32; top: first row people stand on; rows: stand row y's (or None);
    light: [H, W] float32 illumination multiplied into the finished scene."""

    canvas: np.ndarray
    top: float
    rows: np.ndarray | None
    light: np.ndarray


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(math.floor((float(x) - 0.5) * _ONE + 0.5)), int(
        math.floor((float(y) - 0.5) * _ONE + 0.5)
    )


def circle(canvas, x, y, r, color, thickness=-1) -> None:
    """Anti-aliased disc (or ring) of radius r px centred on (x, y) in crowdjax pixels."""
    cv2.circle(canvas, _pt(x, y), int(r * _ONE + 0.5), _c(color), thickness, cv2.LINE_AA, _SHIFT)


def ellipse(canvas, x, y, ax, ay, color, start=0, end=360) -> None:
    """Filled anti-aliased ellipse (or sector from `start` to `end` degrees)."""
    axes = (int(ax * _ONE + 0.5), int(ay * _ONE + 0.5))
    cv2.ellipse(canvas, _pt(x, y), axes, 0, start, end, _c(color), -1, cv2.LINE_AA, _SHIFT)


def rect(canvas, x0, y0, x1, y1, color) -> None:
    """Filled rectangle from corner (x0, y0) to (x1, y1)."""
    cv2.rectangle(canvas, _pt(x0, y0), _pt(x1, y1), _c(color), -1, cv2.LINE_8, _SHIFT)


def line(canvas, x0, y0, x1, y1, color) -> None:
    """One-pixel anti-aliased line."""
    cv2.line(canvas, _pt(x0, y0), _pt(x1, y1), _c(color), 1, cv2.LINE_AA, _SHIFT)


def _c(color) -> tuple[float, float, float]:
    values = color.tolist() if isinstance(color, np.ndarray) else color
    return tuple(min(255.0, max(0.0, float(v))) for v in values)


def _jitter(rng, palette, spread) -> np.ndarray:
    base = np.asarray(palette[rng.integers(len(palette))], np.float32)
    return np.clip(base + rng.uniform(-spread, spread, 3), 0, 255)


def fractal_noise(rng, h, w, *, octaves=4, base=3) -> np.ndarray:
    """Smooth value noise in [-1, 1], [H, W] float32: octaves of upsampled random grids."""
    out = np.zeros((h, w), np.float32)
    for o in range(octaves):
        n = base * 2**o
        grid = rng.uniform(-1, 1, (n, n)).astype(np.float32)
        out += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * 0.5**o
    return np.clip(out / 1.5, -1, 1)


def _paving(rng, canvas, base, radius_at, contrast) -> None:
    """Slab joints: rows spaced like the perspective, columns converging above the image."""
    h, w = canvas.shape[:2]
    joint = base * (1 - contrast)
    y = rng.uniform(0, 3) * float(radius_at(0))
    while y < h:
        line(canvas, 0, y, w, y, joint)
        y += 3.2 * float(radius_at(y)) * rng.uniform(0.9, 1.1)
    vx, vy = rng.uniform(0.2, 0.8) * w, -rng.uniform(0.6, 1.5) * h
    step = 3.5 * float(radius_at(h))
    for x0 in np.arange(-w + rng.uniform(0, step), 2 * w, step):
        x_top = vx + (x0 - vx) * (0 - vy) / (h - vy)
        line(canvas, x_top, 0, x0, h, joint)


def _facade(rng, canvas, bottom) -> None:
    """A building front across the top of the image: wall and a grid of windows."""
    w = canvas.shape[1]
    wall = rng.uniform(90, 210, 3) * np.array([1.0, 0.95, 0.85])
    canvas[: int(bottom)] = wall * (1 + 0.1 * fractal_noise(rng, int(bottom), w)[..., None])
    win_w, win_h = rng.uniform(8, 18), rng.uniform(8, 16)
    window = rng.uniform(20, 90, 3) if rng.random() < 0.5 else np.array([90, 130, 170])
    for y in np.arange(rng.uniform(2, 6), bottom - win_h, win_h * 1.8):
        for x in np.arange(rng.uniform(0, win_w), w, win_w * 1.8):
            rect(canvas, x, y, x + win_w, y + win_h, window)


def street(rng, style, h, w, radius_at) -> Background:
    """Daylight paving with joints and soft shadows; half the scenes have a building at the top."""
    base = _jitter(rng, style.ground, 15)
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = base * (1 + 0.12 * fractal_noise(rng, h, w)[..., None])
    _paving(rng, canvas, base, radius_at, contrast=rng.uniform(0.15, 0.3))
    top = 0.0
    if rng.random() < 0.5:
        top = rng.uniform(0.1, 0.3) * h
        _facade(rng, canvas, top)
    light = style.brightness * (1 + 0.1 * fractal_noise(rng, h, w, octaves=2))
    return Background(canvas, top, None, light.astype(np.float32))


def stadium(rng, style, h, w, radius_at) -> Background:
    """Stand rows (spaced like the perspective) in section colours, seat backs, risers, stairs."""
    colors = [_jitter(rng, style.ground, 20) for _ in range(2)]
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = 0.5 * colors[0]
    sections = np.sort(rng.uniform(0, w, rng.integers(1, 4)))
    rows = []
    y = -rng.uniform(0, 2) * float(radius_at(0))
    while y < h:
        step = 2.3 * float(radius_at(max(y, 0)))
        for i, (x0, x1) in enumerate(zip([0, *sections], [*sections, w], strict=True)):
            seat = colors[i % 2]
            rect(canvas, x0, y, x1, y + 0.65 * step, seat)
            rect(canvas, x0, y + 0.65 * step, x1, y + step, seat * 0.55)
        y0, y1 = max(int(y), 0), max(int(y + 0.6 * step), 0)
        canvas[y0:y1, np.arange(rng.uniform(0, 2), w, 1.05 * step).astype(int)] = colors[0] * 0.7
        rows.append(y + 0.3 * step)
        y += step
    for x in sections:  # stairs between sections widen towards the camera
        pts = np.array([_pt(x - 2, 0), _pt(x + 2, 0), _pt(x + 6, h), _pt(x - 6, h)], np.int32)
        cv2.fillConvexPoly(canvas, pts, _c((140, 140, 140)), cv2.LINE_AA, _SHIFT)
    canvas *= 1 + 0.1 * fractal_noise(rng, h, w)[..., None]
    light = style.brightness * (1 + 0.08 * fractal_noise(rng, h, w, octaves=2))
    return Background(canvas, 0.0, np.asarray(rows), light.astype(np.float32))


def night(rng, style, h, w, radius_at) -> Background:
    """Dark paving lit by lamps: glowing bulbs on posts, pools of light, dim ambient light."""
    base = _jitter(rng, style.ground, 10)
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = base * (1 + 0.2 * fractal_noise(rng, h, w)[..., None])
    _paving(rng, canvas, base, radius_at, contrast=0.3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    light = np.full((h, w), 0.55, np.float32)
    for _ in range(rng.integers(2, 5)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = float(radius_at(y))
        rect(canvas, x - 0.3 * r, y, x + 0.3 * r, y + 8 * r, base * 0.5)
        circle(canvas, x, y, 1.1 * r, (255, 235, 170))
        sigma = rng.uniform(6, 14) * r
        light += 0.9 * np.exp(-((xx - x) ** 2 + (yy - y - 4 * r) ** 2) / (2 * sigma**2))
    light = style.brightness * np.minimum(light, 1.4)
    return Background(canvas, 0.0, None, light.astype(np.float32))


BACKGROUNDS = {"street": street, "stadium": stadium, "night": night}


def draw_distractors(canvas, rng, style, top, radius_at) -> None:
    """Shapes that are not people: discs (some skin or hair coloured), rings, boxes, bollards,
    bushes."""
    h, w = canvas.shape[:2]
    for _ in range(rng.integers(style.distractors[0], style.distractors[1] + 1)):
        x, y = rng.uniform(0, w), rng.uniform(top, h)
        r = float(radius_at(y)) * rng.uniform(0.8, 2.2)
        if rng.random() < style.head_like_distractors:
            circle(canvas, x, y, r, _jitter(rng, SKIN_TONES + HAIR_COLORS, 10))
            continue
        color = rng.uniform(0, 255, 3)
        kind = rng.integers(4)
        if kind == 0:  # ring (a tyre, a hoop)
            circle(canvas, x, y, r, color, thickness=max(1, int(r / 3)))
        elif kind == 1:  # box or sign
            ax, ay = r * rng.uniform(1, 3), r * rng.uniform(1, 3)
            rect(canvas, x - ax, y - ay, x + ax, y + ay, color)
        elif kind == 2:  # bollard: a post with a round top
            rect(canvas, x - 0.5 * r, y, x + 0.5 * r, y + 4 * r, color)
            circle(canvas, x, y, 0.6 * r, color * 0.8)
        else:  # bush: an irregular green star
            t = np.sort(rng.uniform(0, 2 * np.pi, 9))
            rad = r * rng.uniform(1.0, 2.5, 9)
            poly = np.stack([x + rad * np.cos(t), y + rad * np.sin(t)], 1)
            green = np.array([40, 110, 40]) * rng.uniform(0.6, 1.3)
            pts = [np.array([_pt(px, py) for px, py in poly], np.int32)]
            cv2.fillPoly(canvas, pts, _c(green), cv2.LINE_AA, _SHIFT)


def person_colors(rng, style, n) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Samples n people's clothing, head-centre and hair-cap colours, [n, 3] float32 each, and
    which heads have a face ([n] bool; the others are seen from behind: a hair disc, no cap)."""

    def pick(palette, spread):
        base = np.asarray(palette, np.float32)[rng.integers(len(palette), size=n)]
        return np.clip(base + rng.uniform(-spread, spread, (n, 3)), 0, 255).astype(np.float32)

    cloth, skin, hair = pick(style.clothing, 18), pick(SKIN_TONES, 8), pick(HAIR_COLORS, 8)
    hat = pick(style.clothing, 18)
    front = rng.random(n) >= style.back_view_fraction
    face = np.where(front[:, None], skin, hair)
    cap = np.where((rng.random(n) < style.hat_fraction)[:, None], hat, hair)
    return cloth, face, cap, front


def draw_person(canvas, x, y, r, cloth, face, cap, front) -> None:
    """Draws shaded shoulders and a head centred on (x, y) px, radius r px.

    The head is a dark rim under a lit disc that contains the centre pixel; a face gets a hair cap
    (or cap) that stays above y - 0.5 r, so the head-centre pixel keeps the colour `face`.
    """
    ellipse(canvas, x, y + 2.0 * r, 1.55 * r, 1.4 * r, cloth * 0.6)
    ellipse(canvas, x - 0.2 * r, y + 1.9 * r, 1.25 * r, 1.15 * r, cloth)
    circle(canvas, x, y, r, face * 0.65)
    circle(canvas, x - 0.12 * r, y - 0.12 * r, 0.86 * r, face)
    if front:
        ellipse(canvas, x, y - 0.5 * r, 0.95 * r, 0.55 * r, cap, 180, 360)


def _radii(rng, style, y, radius_at) -> np.ndarray:
    jitter = rng.uniform(1 - style.size_jitter, 1 + style.size_jitter, np.shape(y))
    return np.maximum(radius_at(y) * jitter, 2.0)


def place_clusters(rng, style, n, h, w, top, radius_at) -> tuple[np.ndarray, np.ndarray]:
    """Heads in Gaussian groups (wider than deep: a ground plane in perspective) plus scattered
    ones, by rejection: a head must keep `min_separation` radii (of the larger head) from all.

    Returns:
      points [M, 2] float64 (x, y), radii [M] float64, M <= n.
    """
    if n == 0:
        return np.zeros((0, 2)), np.zeros((0,))
    k = rng.integers(style.clusters[0], style.clusters[1] + 1)
    centres = np.stack([rng.uniform(0, w, k), rng.uniform(top, h, k)], 1)
    sx = rng.uniform(2, 10, k) * radius_at(centres[:, 1])
    sy = sx * rng.uniform(0.35, 0.8, k)
    weights = rng.dirichlet(np.ones(k))
    m = 30 * n + 200
    which = rng.choice(k, m, p=weights)
    cand = centres[which] + rng.normal(size=(m, 2)) * np.stack([sx[which], sy[which]], 1)
    scatter = rng.random(m) < style.scatter_fraction
    cand[scatter] = np.stack([rng.uniform(0, w, m), rng.uniform(top, h, m)], 1)[scatter]
    radii = _radii(rng, style, cand[:, 1], radius_at)
    lo = np.array([1.0, max(top, 1.0)])
    ok = np.all((cand >= lo) & (cand <= [w - 1.0, h - 1.0]), axis=1)
    cell = style.min_separation * 1.2 * max(style.head_radius)  # >= any separation needed
    grid: dict[tuple[int, int], list[int]] = {}
    kept: list[int] = []
    for i in np.nonzero(ok)[0].tolist():
        x, y, r = cand[i, 0], cand[i, 1], radii[i]
        gx, gy = int(x // cell), int(y // cell)
        clear = True
        for key in ((gx + a, gy + b) for a in (-1, 0, 1) for b in (-1, 0, 1)):
            for j in grid.get(key, ()):
                need = style.min_separation * max(r, radii[j])
                if (x - cand[j, 0]) ** 2 + (y - cand[j, 1]) ** 2 < need * need:
                    clear = False
                    break
            if not clear:
                break
        if clear:
            grid.setdefault((gx, gy), []).append(i)
            kept.append(i)
            if len(kept) == n:
                break
    return cand[kept], radii[kept]


def place_rows(rng, style, n, h, w, rows, radius_at) -> tuple[np.ndarray, np.ndarray]:
    """Heads on stadium seats: filled sections (Gaussian weights over the seats) plus scatter.

    Returns:
      points [M, 2] float64 (x, y), radii [M] float64, M = min(n, number of seats).
    """
    seats = []
    for y in rows:
        if not 1.0 <= y <= h - 1.0:
            continue
        pitch = 2.4 * float(radius_at(y))
        xs = np.arange(rng.uniform(1.0, pitch), w - 1.0, pitch)
        seats.append(np.stack([xs, np.full_like(xs, y)], 1))
    seats = np.concatenate(seats) if seats else np.zeros((0, 2))
    n = min(n, len(seats))
    if n == 0:
        return np.zeros((0, 2)), np.zeros((0,))
    k = rng.integers(style.clusters[0], style.clusters[1] + 1)
    centres = seats[rng.integers(len(seats), size=k)]
    spread = rng.uniform(0.15, 0.5, (k, 1)) * [w, 0.5 * w]
    d2 = (((seats[None] - centres[:, None]) / spread[:, None]) ** 2).sum(-1)
    weight = np.exp(-0.5 * d2).sum(0) + style.scatter_fraction
    idx = rng.choice(len(seats), n, replace=False, p=weight / weight.sum())
    r = radius_at(seats[idx, 1])
    points = seats[idx] + rng.uniform(-0.15, 0.15, (n, 2)) * r[:, None]
    points = np.clip(points, 1.0, [w - 1.0, h - 1.0])
    return points, _radii(rng, style, points[:, 1], radius_at)
