"""Point-annotation readers of the `user_crowd` builder: JSON, CSV and ShanghaiTech `.mat`.

Every reader returns float64 points [N, 2] as (x, y) pixels of the original image (N may be 0: an
image without people) and raises `DataError` naming the file (and the line or image) when a file
does not parse or a point is not two finite numbers. Accepted shapes:

  JSON, one file per image (`<stem>.json`), any of
    [[x, y], ...]                       a list of points ([x, y, ...]: extra values ignored)
    [{"x": x, "y": y}, ...]             a list of objects
    {"points": [...]}                   an object with a list as above (NWPU-Crowd style; a
                                        numeric "human_num" or "count" is the declared count)
    {"shapes": [{"shape_type": "point", "points": [[x, y]]}, ...]}   a LabelMe file: every shape
                                        must be a point (a box or polygon is an error)
  JSON, one file for all (`annotations.json`): {"IMG_1.jpg": <any per-image shape>, ...}
  CSV, one file per image (`<stem>.csv`): columns x,y (header optional; with a header, the
    columns named x and y, others ignored); an empty or header-only file: no people
  CSV, one file for all (`annotations.csv`): header with an image column (image, file, filename
    or image_id) and x, y; one row per point; a row with x and y empty: an image without people
  MATLAB (`GT_<stem>.mat`): ShanghaiTech's image_info{1}.location [N, 2] (and .number), or a
    plain [N, 2] array `annPoints` (UCF-QNRF style)
"""

from __future__ import annotations

import csv
import math
import numbers
import os
from typing import Any

import numpy as np

from crowdjax.data import io
from tfds_builders import shanghaitech

IMAGE_COLUMNS = ("image", "file", "filename", "image_id")


def parse_points(value: Any, *, name: str) -> np.ndarray:
    """A JSON list of points ([x, y] lists or {"x", "y"} objects) as float64 [N, 2]."""
    if not isinstance(value, list):
        raise io.DataError(f"{name}: expected a list of points, got {type(value).__name__}")
    points = np.zeros((len(value), 2), np.float64)
    for i, item in enumerate(value):
        if isinstance(item, dict):
            if "x" not in item or "y" not in item:
                raise io.DataError(f"{name}: point {i} {item!r} has no 'x' and 'y'")
            pair = [item["x"], item["y"]]
        elif isinstance(item, list | tuple) and len(item) >= 2:
            pair = list(item[:2])
        else:
            raise io.DataError(f"{name}: point {i} is {item!r}, expected [x, y] or {{x, y}}")
        for v in pair:  # bool is a Number in Python; a JSON true is not a coordinate.
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise io.DataError(f"{name}: point {i} {item!r} is not two finite numbers")
        points[i] = pair
    return points


def _declared(payload: dict, *, name: str) -> int | None:
    for key in ("human_num", "count"):
        if key in payload:
            value = payload[key]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise io.DataError(f"{name}: {key!r} must be an integer, got {value!r}")
            return int(value)
    return None


def points_from_json_value(payload: Any, *, name: str) -> tuple[np.ndarray, int | None]:
    """Points of one image's JSON value (module doc); returns (points, declared count or None)."""
    if isinstance(payload, list):
        return parse_points(payload, name=name), None
    if isinstance(payload, dict) and "points" in payload:
        return parse_points(payload["points"], name=name), _declared(payload, name=name)
    if isinstance(payload, dict) and "shapes" in payload:
        return _labelme_points(payload["shapes"], name=name), None
    raise io.DataError(
        f"{name}: expected a list of [x, y] points, an object with 'points', or a LabelMe file "
        f"with 'shapes', got {type(payload).__name__}"
        + (f" with keys {sorted(payload)[:8]}" if isinstance(payload, dict) else "")
    )


def _labelme_points(shapes: Any, *, name: str) -> np.ndarray:
    if not isinstance(shapes, list):
        raise io.DataError(f"{name}: LabelMe 'shapes' must be a list")
    points = []
    for i, shape in enumerate(shapes):
        kind = shape.get("shape_type") if isinstance(shape, dict) else None
        if kind != "point":  # LabelMe writes polygons with shape_type null or "polygon".
            raise io.DataError(
                f"{name}: LabelMe shape {i} is a {kind or 'polygon'!s}, not a point; only point "
                "annotations (one per head) are read"
            )
        pts = parse_points(shape.get("points"), name=f"{name} shape {i}")
        if len(pts) != 1:
            raise io.DataError(f"{name}: LabelMe point shape {i} has {len(pts)} points, not 1")
        points.append(pts[0])
    return np.asarray(points, np.float64).reshape(-1, 2)


def read_json_file(path: str) -> tuple[np.ndarray, int | None]:
    """One image's `<stem>.json`."""
    return points_from_json_value(io.load_json(path), name=path)


def read_json_all(path: str) -> dict[str, tuple[np.ndarray, int | None]]:
    """`annotations.json`: {image file name: per-image value} -> {name: (points, declared)}."""
    payload = io.load_json(path)
    if not isinstance(payload, dict):
        raise io.DataError(
            f"{path}: expected an object {{image file name: points}}, got {type(payload).__name__}"
        )
    return {
        str(key): points_from_json_value(value, name=f"{path} [{key!r}]")
        for key, value in payload.items()
    }


def _csv_rows(path: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows of a CSV file with their 1-based line numbers, fields stripped."""
    io.require_file(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: Excel's BOM
            rows = [(n, [v.strip() for v in row]) for n, row in enumerate(csv.reader(f), 1)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise io.DataError(f"{path}: malformed CSV ({e})") from e
    return [(n, row) for n, row in rows if any(row)]


def _number(text: str, *, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise io.DataError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise io.DataError(f"{where}: {text!r} is not a finite number")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _columns(header: list[str], wanted: dict[str, tuple[str, ...]], *, where: str) -> dict:
    lower = [h.lower() for h in header]
    out = {}
    for key, names in wanted.items():
        found = [lower.index(n) for n in names if n in lower]
        if not found:
            raise io.DataError(f"{where}: header {header} has no column {' / '.join(names)}")
        out[key] = found[0]
    return out


def read_csv_file(path: str) -> np.ndarray:
    """One image's `<stem>.csv`: x, y per row (header optional)."""
    rows = _csv_rows(path)
    cols = {"x": 0, "y": 1}
    if rows and not all(_is_number(v) for v in rows[0][1]):
        cols = _columns(rows[0][1], {"x": ("x",), "y": ("y",)}, where=f"{path}:{rows[0][0]}")
        rows = rows[1:]
    points = np.zeros((len(rows), 2), np.float64)
    for i, (lineno, row) in enumerate(rows):
        where = f"{path}:{lineno}"
        if len(row) <= max(cols.values()):
            raise io.DataError(f"{where}: expected x,y, got {','.join(row)!r}")
        points[i] = [_number(row[cols[k]], where=where) for k in ("x", "y")]
    return points


def read_csv_all(path: str) -> dict[str, tuple[np.ndarray, None]]:
    """`annotations.csv`: rows image,x,y -> {image name: (points, None)}, in first-row order."""
    rows = _csv_rows(path)
    if not rows:
        raise io.DataError(f"{path}: empty CSV, expected a header image,x,y")
    wanted = {"image": IMAGE_COLUMNS, "x": ("x",), "y": ("y",)}
    cols = _columns(rows[0][1], wanted, where=f"{path}:{rows[0][0]}")
    points: dict[str, list] = {}
    for lineno, row in rows[1:]:
        where = f"{path}:{lineno}"
        if len(row) <= max(cols.values()):
            raise io.DataError(f"{where}: expected image,x,y, got {','.join(row)!r}")
        image, x, y = (row[cols[k]] for k in ("image", "x", "y"))
        if not image:
            raise io.DataError(f"{where}: empty image name")
        entry = points.setdefault(image, [])
        if not x and not y:  # An image listed without people.
            continue
        entry.append([_number(x, where=where), _number(y, where=where)])
    return {k: (np.asarray(v, np.float64).reshape(-1, 2), None) for k, v in points.items()}


def read_mat_file(path: str) -> tuple[np.ndarray, int | None]:
    """`GT_<stem>.mat`: ShanghaiTech's image_info (points, number), or `annPoints` (points)."""
    mat = io.load_mat(path)
    if "image_info" in mat:
        points, number = shanghaitech.read_annotation(path)
        return points.astype(np.float64), number
    array = io.mat_field(mat, ["annPoints"], name=path)
    return io.as_points(array, name=path).astype(np.float64), None


# Per-image annotation file name of an image stem, and its reader; an image must have exactly one.
PER_IMAGE = {
    "json": (lambda stem: stem + ".json", read_json_file),
    "csv": (lambda stem: stem + ".csv", lambda path: (read_csv_file(path), None)),
    "mat": (lambda stem: "GT_" + stem + ".mat", read_mat_file),
}
PER_IMAGE_SUFFIXES = (".json", ".csv", ".mat")


def stem(image_name: str) -> str:
    return os.path.splitext(image_name)[0]
