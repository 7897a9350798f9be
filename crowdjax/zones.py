"""Counting per zone of a scene: named polygons drawn on the image (an entrance, a stand).

The zones file (`predict.py --zones=zones.json`; the same file for images, videos and streams):

  {
    "zones": [
      {"name": "entrance", "polygon": [[10, 20], [300, 20], [300, 200], [10, 200]],
       "area_m2": 24.0},
      {"name": "stand", "polygon": [[320, 40], [600, 40], [460, 380]]}
    ],
    "homography": [[0.02, 0, -1.5], [0, 0.05, -3.0], [0, 0.0004, 1]]
  }

`polygon`: at least 3 (x, y) vertices in the pixels of the input image as read (EXIF rotation
applied), x to the right and y down, pixel (c, r) covering the square [c, c + 1) x [r, r + 1)
(the convention of predicted head points); concave polygons are fine, self-intersecting ones are
refused. `area_m2` (optional): the zone's ground area in square metres, giving people per m^2.
`homography` (optional): a 3 x 3 matrix mapping image pixels (x, y, 1) to ground-plane metres;
a zone without `area_m2` then gets the area of its visible part mapped through it. An `area_m2`
is the zone's area as drawn, so keep such a zone inside the image (a zone partly outside is
counted over its visible part only).

How a zone counts (`count_in_zones`):
  density methods: each density cell of a stride-s map covers an s x s block of the predicted
    image, i.e. an s / scale square of input pixels; its density is weighted by the exact
    fraction of that block's area inside the image that the polygon covers, area(cell ∩ polygon
    ∩ image) / area(cell ∩ image), computed in closed form (no pixel sampling). A zone covering
    the whole image thus counts the image's count, and zones that tile the image sum to it.
  localization methods: the predicted heads inside the polygon.
A zone that lies entirely outside an image is an error naming the file and the zone.
"""

from __future__ import annotations

import dataclasses
import json
import math

import cv2
import numpy as np

ZONE_COLORS = ((255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 128, 0), (0, 255, 0))


class ZoneError(ValueError):
    """A zones file that cannot be used, or a zone that does not fit an image."""


@dataclasses.dataclass(frozen=True)
class Zone:
    """One named polygon.

    Attributes:
      name: the zone's name (the column of the tables).
      polygon: float64 [N, 2] (x, y) vertices in input-image pixels, N >= 3.
      area_m2: the zone's ground area in m^2, if the file gives it.
    """

    name: str
    polygon: np.ndarray
    area_m2: float | None = None


@dataclasses.dataclass(frozen=True)
class ZoneSet:
    """The zones of one file (`load_zones`); `source` names the file in every error."""

    zones: tuple[Zone, ...]
    source: str
    homography: np.ndarray | None = None
    # Weights per image geometry, computed once (a video's frames share one).
    _cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def names(self) -> list[str]:
        return [zone.name for zone in self.zones]

    @property
    def has_area(self) -> bool:
        """Whether counts per m^2 are given (an area or a homography for every zone)."""
        return self.homography is not None or all(z.area_m2 is not None for z in self.zones)

    def _fail(self, zone: str | None, message: str) -> ZoneError:
        where = f"{self.source}: zone {zone!r}" if zone is not None else self.source
        return ZoneError(f"{where}: {message}")


# ----------------------------------------------------------------------------------------------
# Reading and checking the file.


def load_zones(path: str) -> ZoneSet:
    """Reads and checks a zones file (module doc).

    Raises:
      ZoneError: naming the file (and the zone): unreadable JSON, missing keys, fewer than 3
        vertices, non-finite or non-numeric coordinates, a self-intersecting or zero-area
        polygon, a duplicate name, a bad area or homography.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ZoneError(f"{path}: cannot read the zones file ({e.strerror or e})") from e
    except ValueError as e:
        raise ZoneError(f"{path}: not a JSON zones file ({e})") from e
    return parse_zones(data, source=path)


def parse_zones(data, *, source: str = "<zones>") -> ZoneSet:
    """A ZoneSet from the decoded JSON of a zones file (see `load_zones`)."""
    empty = ZoneSet((), source)
    if not isinstance(data, dict) or not isinstance(data.get("zones"), list) or not data["zones"]:
        raise empty._fail(None, 'expected {"zones": [{"name": ..., "polygon": [[x, y], ...]}]}')
    unknown = set(data) - {"zones", "homography"}
    if unknown:
        raise empty._fail(None, f"unknown keys {sorted(unknown)} (known: zones, homography)")
    homography = None
    if data.get("homography") is not None:
        homography = _numbers(data["homography"], (3, 3), empty, None, "homography")
        if abs(np.linalg.det(homography)) < 1e-12:
            raise empty._fail(None, "the homography is singular")
    zones, seen = [], set()
    for number, entry in enumerate(data["zones"], 1):
        label = entry.get("name") if isinstance(entry, dict) else None
        label = label if isinstance(label, str) and label else f"#{number}"
        if not isinstance(entry, dict) or "name" not in entry or "polygon" not in entry:
            raise empty._fail(label, 'each zone needs "name" and "polygon"')
        unknown = set(entry) - {"name", "polygon", "area_m2"}
        if unknown:
            raise empty._fail(label, f"unknown keys {sorted(unknown)}")
        if not isinstance(entry["name"], str) or not entry["name"].strip():
            raise empty._fail(label, "its name must be a non-empty string")
        if label in seen:
            raise empty._fail(label, "a second zone has this name")
        seen.add(label)
        polygon = _numbers(entry["polygon"], (None, 2), empty, label, "polygon")
        if len(polygon) < 3:
            raise empty._fail(label, f"a polygon needs at least 3 vertices, got {len(polygon)}")
        crossing = self_intersection(polygon)
        if crossing is not None:
            raise empty._fail(label, f"its polygon intersects itself (edges {crossing})")
        if abs(signed_area(polygon)) <= 0:
            raise empty._fail(label, "its polygon has zero area")
        area = entry.get("area_m2")
        if area is not None:
            if isinstance(area, bool) or not isinstance(area, int | float):
                raise empty._fail(label, f"area_m2 must be a number, got {area!r}")
            if not math.isfinite(area) or area <= 0:
                raise empty._fail(label, f"area_m2 must be > 0, got {area}")
            area = float(area)
        zones.append(Zone(label, polygon, area))
    return ZoneSet(tuple(zones), source, homography)


def _numbers(value, shape, zone_set: ZoneSet, zone, what: str) -> np.ndarray:
    flat = value if isinstance(value, list) else None
    ok = flat is not None and all(isinstance(row, list) for row in flat)
    ok = ok and all(
        not isinstance(x, bool) and isinstance(x, int | float) for row in flat for x in row
    )
    array = np.asarray(flat, np.float64) if ok else None
    if array is not None and array.ndim == 2 and array.size == 0:
        array = array.reshape(0, 2)
    fits = array is not None and array.ndim == 2
    fits = fits and all(n is None or n == m for n, m in zip(shape, array.shape, strict=True))
    if not fits:
        want = "[[x, y], ...]" if shape[0] is None else "a 3 x 3 list of numbers"
        raise zone_set._fail(zone, f"{what} must be {want}, got {json.dumps(value)[:80]}")
    if not np.isfinite(array).all():
        raise zone_set._fail(zone, f"{what} holds a value that is not finite")
    return array


def signed_area(polygon: np.ndarray) -> float:
    """The shoelace area of [N, 2] (x, y) vertices (its sign gives the orientation)."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def self_intersection(polygon: np.ndarray) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges (i, j) that touch or cross, or None (a simple
    polygon). Edge i joins vertex i to vertex i + 1 (mod N)."""
    n = len(polygon)
    starts, ends = polygon, np.roll(polygon, -1, axis=0)
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            if _segments_meet(starts[i], ends[i], starts[j], ends[j]):
                return i, j
    return None


def _segments_meet(p1, p2, q1, q2) -> bool:
    def orient(a, b, c):
        value = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return 0 if value == 0 else (1 if value > 0 else -1)

    def on_segment(a, b, c):  # c collinear with a-b: within its bounding box?
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(
            a[1], b[1]
        )

    o1, o2, o3, o4 = orient(p1, p2, q1), orient(p1, p2, q2), orient(q1, q2, p1), orient(q1, q2, p2)
    if o1 != o2 and o3 != o4:
        return True
    return (
        (o1 == 0 and on_segment(p1, p2, q1))
        or (o2 == 0 and on_segment(p1, p2, q2))
        or (o3 == 0 and on_segment(q1, q2, p1))
        or (o4 == 0 and on_segment(q1, q2, p2))
    )


# ----------------------------------------------------------------------------------------------
# Exact areas of a polygon inside the cells of a grid.


def _positive_part_integral(g0, g1, length):
    """∫ max(g, 0) over an interval of `length` on which g runs linearly from g0 to g1."""
    both = length * 0.5 * (np.maximum(g0, 0) + np.maximum(g1, 0))
    high, low = np.maximum(g0, g1), np.minimum(g0, g1)
    span = np.where(high - low > 0, high - low, 1.0)
    # One sign change: the triangle of the positive part (stable: high / span <= 1).
    mixed = length * 0.5 * high * np.clip(high / span, 0.0, 1.0)
    return np.where((g0 >= 0) & (g1 >= 0), both, np.where((g0 <= 0) & (g1 <= 0), 0.0, mixed))


def _quadrant_areas(polygon: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """[len(ys), len(xs)]: the polygon's signed area left of x = a and above y = b for every
    (a, b) of the grid lines (Green's theorem: the winding number integrated edge by edge,
    each edge's part with y <= b giving ∫ max(a - x(y), 0) dy in closed form)."""
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    dx, dy = x2 - x1, y2 - y1
    moving = dy != 0
    b = ys[:, None]  # [B, 1] against edges [E]
    t_b = np.clip((b - y1) / np.where(moving, dy, 1.0), 0.0, 1.0)
    t0 = np.where(dy > 0, 0.0, t_b)  # The edge's parameters with y <= b.
    t1 = np.where(dy > 0, t_b, 1.0)
    t0 = np.where(moving, t0, 0.0)[:, None, :]
    t1 = np.where(moving, t1, 0.0)[:, None, :]
    a = xs[None, :, None]  # [1, A, 1]
    g0 = a - (x1 + t0 * dx)
    g1 = a - (x1 + t1 * dx)
    return (dy * _positive_part_integral(g0, g1, t1 - t0)).sum(-1)


def rectangle_areas(polygon: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Area of the polygon inside each rectangle [xs[j], xs[j+1]) x [ys[i], ys[i+1]): a
    [len(ys) - 1, len(xs) - 1] float64 array, exact up to float rounding (any simple polygon,
    convex or not)."""
    polygon = np.asarray(polygon, np.float64)
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    far = np.asarray([polygon[:, 0].max() + 1.0]), np.asarray([polygon[:, 1].max() + 1.0])
    orientation = np.sign(_quadrant_areas(polygon, *far)[0, 0])
    f = _quadrant_areas(polygon, xs, ys) * orientation
    return np.maximum(f[1:, 1:] - f[1:, :-1] - f[:-1, 1:] + f[:-1, :-1], 0.0)


def cell_weights(
    polygon: np.ndarray, cells: tuple[int, int], cell_size: float, image: tuple[int, int]
) -> np.ndarray:
    """[h, w] share of each density cell's area inside the image that the polygon covers.

    Args:
      polygon: [N, 2] (x, y) input-image pixels.
      cells: (h, w) of the density map.
      cell_size: side of a cell in input pixels (stride / scale).
      image: (H, W) of the input image; cells are clipped to it.
    """
    ys = np.minimum(np.arange(cells[0] + 1) * cell_size, image[0])
    xs = np.minimum(np.arange(cells[1] + 1) * cell_size, image[1])
    inside = rectangle_areas(polygon, xs, ys)
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return np.divide(inside, area, out=np.zeros_like(inside), where=area > 0)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """bool [P]: each (x, y) point inside the polygon (even-odd rule)."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    x, y = points[:, :1], points[:, 1:]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    crosses = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return ((crosses & (x < at)).sum(1) % 2) == 1


def clip_to_image(polygon: np.ndarray, image: tuple[int, int]) -> np.ndarray:
    """The polygon clipped to [0, W] x [0, H] (Sutherland-Hodgman; a concave polygon may keep
    zero-area edges along the border, which change no area)."""
    h, w = image
    out = np.asarray(polygon, np.float64)
    for axis, limit, keep_below in ((0, 0.0, False), (0, w, True), (1, 0.0, False), (1, h, True)):
        if len(out) == 0:
            break
        inside = out[:, axis] <= limit if keep_below else out[:, axis] >= limit
        kept = []
        for k in range(len(out)):
            a, b = out[k - 1], out[k]
            a_in, b_in = inside[k - 1], inside[k]
            if a_in != b_in:
                t = (limit - a[axis]) / (b[axis] - a[axis])
                kept.append(a + t * (b - a))
            if b_in:
                kept.append(b)
        out = np.asarray(kept, np.float64).reshape(-1, 2)
    return out


# ----------------------------------------------------------------------------------------------
# Counting.


def ground_area(zone_set: ZoneSet, zone: Zone, image: tuple[int, int]) -> float | None:
    """The zone's ground area in m^2: its `area_m2`, else its visible part mapped through the
    homography, else None."""
    if zone.area_m2 is not None:
        return zone.area_m2
    if zone_set.homography is None:
        return None
    visible = clip_to_image(zone.polygon, image)
    mapped = np.c_[visible, np.ones(len(visible))] @ zone_set.homography.T
    if not ((mapped[:, 2] > 0).all() or (mapped[:, 2] < 0).all()):
        raise zone_set._fail(zone.name, "it reaches the homography's horizon (w = 0)")
    return abs(signed_area(mapped[:, :2] / mapped[:, 2:]))


def _geometry(zone_set: ZoneSet, prediction) -> dict:
    image = tuple(int(s) for s in prediction.shape)
    density = prediction.density
    key = (image, None if density is None else density.shape, prediction.stride, prediction.scale)
    if key in zone_set._cache:
        return zone_set._cache[key]
    geometry = {}
    for zone in zone_set.zones:
        if abs(signed_area(clip_to_image(zone.polygon, image))) <= 0:
            raise zone_set._fail(
                zone.name, f"it lies entirely outside the {image[0]} x {image[1]} image"
            )
        weights = None
        if density is not None:
            cell = prediction.stride / prediction.scale
            weights = cell_weights(zone.polygon, density.shape, cell, image)
        geometry[zone.name] = (weights, ground_area(zone_set, zone, image))
    zone_set._cache[key] = geometry
    return geometry


def count_in_zones(prediction, zone_set: ZoneSet) -> dict[str, dict]:
    """People per zone of one image or frame (module doc).

    Args:
      prediction: a `crowdjax.prediction.Prediction` (its density or its points).
      zone_set: the zones (`load_zones`).

    Returns:
      {zone name: {"count": float, "per_m2": float (only with an area or homography)}}, in the
      file's order: what the tables' zone columns and the records' "zones" field hold.

    Raises:
      ZoneError: a zone lies entirely outside the image (naming the file and the zone), or
        reaches the homography's horizon.
    """
    geometry = _geometry(zone_set, prediction)
    out = {}
    for zone in zone_set.zones:
        weights, area = geometry[zone.name]
        if prediction.points is not None:
            count = float(points_in_polygon(prediction.points, zone.polygon).sum())
        else:
            count = float((prediction.density.astype(np.float64) * weights).sum())
        out[zone.name] = {"count": count}
        if area is not None:
            out[zone.name]["per_m2"] = count / area
    return out


def draw_zones(picture: np.ndarray, zone_set: ZoneSet, counts: dict, *, factor: float = 1.0):
    """RGB uint8 picture with each zone's outline, name and count; `factor`: picture pixels
    per input pixel."""
    out = picture.copy()
    thickness = max(1, round(min(picture.shape[:2]) / 300))
    font = max(0.4, min(picture.shape[:2]) / 900)
    for k, zone in enumerate(zone_set.zones):
        color = ZONE_COLORS[k % len(ZONE_COLORS)]
        vertices = np.round(zone.polygon * factor).astype(np.int32)
        cv2.polylines(out, [vertices], True, color, thickness, cv2.LINE_AA)
        label = zone.name
        if zone.name in counts:
            label += f": {counts[zone.name]['count']:.1f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, thickness)
        top = vertices[np.argmin(vertices[:, 1])]
        x = int(np.clip(top[0], 0, max(0, out.shape[1] - tw - 2)))
        y = int(np.clip(top[1] - 4, th + 2, out.shape[0] - base))
        cv2.rectangle(out, (x, y - th - 2), (x + tw + 2, y + base), (0, 0, 0), -1)
        cv2.putText(out, label, (x + 1, y), cv2.FONT_HERSHEY_SIMPLEX, font, color, thickness)
    return out
