"""Result files in the formats the benchmarks publish: NWPU-Crowd's test server, JHU-Crowd++'s
per-category table.

NWPU-Crowd (the benchmark's submission guideline, https://www.crowdbenchmark.com): one
``*.txt`` line per test image (1,500 for the test split), the image id first:
  * counting: ``<id> <count>``, e.g. ``3610 100.0000``;
  * localization: ``<id> <N> x1 y1 x2 y2 ... xN yN``, every number an integer, the points at the
    original image's resolution (the release image, before the builder's resize rule), e.g.
    ``3612 3 1 1 2 2 3 3``; an image without heads is ``<id> 0``.
JHU-Crowd++ (Sindagi et al., TPAMI 2020; the columns of UOT Table 2): MAE and MSE (a root mean
square, crowdjax's RMSE) of the test images overall and of the categories low (0-50 people),
medium (51-500), high (> 500) and weather (degraded: weather other than none); crowdjax adds
each weather class (fog/haze, rain, snow) on its own.

Per-image records are the eval JSON's ``per_image`` entries (``image_id``, ``gt_count``,
``pred_count``, ``categories``; `crowdjax.evaluation`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from crowdjax import storage

JHU_DENSITY_LEVELS = ("low", "medium", "high")  # tfds_builders.jhu_crowd's ClassLabel order.
JHU_WEATHER = ("none", "fog_haze", "rain", "snow")
JHU_COLUMNS = ("overall", "low", "medium", "high", "weather")


def nwpu_id(image_id: str) -> str:
    """The NWPU id of an image ("3610.jpg" -> "3610"); raises on a name that is not one."""
    stem = os.path.splitext(os.path.basename(str(image_id)))[0]
    if not stem.isdigit():
        raise ValueError(f"{image_id!r} is not an NWPU-Crowd image name (NNNN.jpg)")
    return stem


def _check_ids(ids: Sequence[str], expected: Iterable[str] | None, what: str) -> None:
    seen = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what}: image {i} given twice")
        seen.add(i)
    if expected is not None:
        expected = {nwpu_id(i) for i in expected}
        missing, extra = sorted(expected - seen), sorted(seen - expected)
        if missing or extra:
            raise ValueError(
                f"{what}: the file must list every test image once; missing {missing[:5]} "
                f"({len(missing)}), not in the split {extra[:5]} ({len(extra)})"
            )


def nwpu_counting_lines(per_image: Sequence[Mapping], *, expected_ids=None) -> list[str]:
    """``<id> <count>`` lines (4 decimals), sorted by id.

    Args:
      per_image: records with ``image_id`` and ``pred_count``.
      expected_ids: the split's image ids (names); when given, each must appear exactly once.
    """
    rows = sorted((nwpu_id(r["image_id"]), float(r["pred_count"])) for r in per_image)
    _check_ids([i for i, _ in rows], expected_ids, "NWPU counting submission")
    for image_id, count in rows:
        if not np.isfinite(count):
            raise ValueError(f"NWPU counting submission: image {image_id} count is {count}")
    return [f"{image_id} {count:.4f}" for image_id, count in rows]


def to_original_pixels(points, *, stored_size, original_size) -> np.ndarray:
    """Integer (x, y) of stored-image points at the release image's resolution ([N, 2] int64).

    A stored point is scaled by original / stored per axis (the inverse of the builder's resize),
    rounded to the nearest integer (the format's integers; NWPU's own points are 0-based floats)
    and kept in [0, W0 - 1] x [0, H0 - 1].
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    (h, w), (h0, w0) = (np.asarray(s, np.float64).reshape(2) for s in (stored_size, original_size))
    if min(h, w, h0, w0) <= 0:
        raise ValueError(
            f"image sizes must be positive: stored {stored_size}, original {original_size}"
        )
    scaled = np.rint(points * [w0 / w, h0 / h])
    return np.clip(scaled, 0, [w0 - 1, h0 - 1]).astype(np.int64)


def nwpu_localization_lines(predictions: Sequence[Mapping], *, expected_ids=None) -> list[str]:
    """``<id> <N> x1 y1 ... xN yN`` lines (integers, original resolution), sorted by id.

    Args:
      predictions: per image ``image_id``, ``points`` [N, 2] (x, y) of the stored image,
        ``stored_size`` (H, W) and ``original_size`` (H0, W0) (the builder's `original_size`).
      expected_ids: the split's image ids; when given, each must appear exactly once.
    """
    rows = []
    for p in predictions:
        xy = to_original_pixels(
            p["points"], stored_size=p["stored_size"], original_size=p["original_size"]
        )
        rows.append((nwpu_id(p["image_id"]), xy))
    rows.sort(key=lambda row: row[0])
    _check_ids([i for i, _ in rows], expected_ids, "NWPU localization submission")
    return [" ".join([i, str(len(xy)), *map(str, xy.reshape(-1).tolist())]) for i, xy in rows]


def write_lines(path: str, lines: Sequence[str]) -> str:
    """Writes one line each (newline-terminated); returns the path."""
    storage.makedirs(os.path.dirname(storage.absolute(path)))
    storage.write_atomic(path, "".join(line + "\n" for line in lines))
    return path


def _label(value, names: Sequence[str], key: str, image_id: str) -> str:
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"image {image_id}: {key} {value!r} is not one of {list(names)}")
        return value
    index = int(value)
    if not 0 <= index < len(names):
        raise ValueError(f"image {image_id}: {key} {index} is not in 0..{len(names) - 1}")
    return names[index]


def jhu_category_table(per_image: Sequence[Mapping]) -> dict:
    """MAE / MSE (root mean square) / image count of JHU-Crowd++'s categories.

    Args:
      per_image: records with ``image_id``, ``gt_count``, ``pred_count`` and ``categories``
        holding ``density_level`` and ``weather`` (the builder's labels, as indices or names).

    Returns:
      {column: {"mae", "mse", "images"}} for the columns of ``JHU_COLUMNS`` and for each weather
      class ``weather/<name>``; a column without images has NaN errors.
    """
    groups: dict[str, list[float]] = {c: [] for c in JHU_COLUMNS}
    groups.update({f"weather/{w}": [] for w in JHU_WEATHER[1:]})
    for r in per_image:
        image_id, categories = r["image_id"], r.get("categories", {})
        for key in ("density_level", "weather"):
            if key not in categories:
                raise ValueError(f"image {image_id}: no {key} label (is this JHU-Crowd++?)")
        error = float(r["pred_count"]) - float(r["gt_count"])
        level = _label(categories["density_level"], JHU_DENSITY_LEVELS, "density_level", image_id)
        weather = _label(categories["weather"], JHU_WEATHER, "weather", image_id)
        groups["overall"].append(error)
        groups[level].append(error)
        if weather != "none":
            groups["weather"].append(error)
            groups[f"weather/{weather}"].append(error)
    table = {}
    for column, errors in groups.items():
        e = np.asarray(errors, np.float64)
        table[column] = {
            "mae": float(np.mean(np.abs(e))) if e.size else float("nan"),
            "mse": float(np.sqrt(np.mean(e**2))) if e.size else float("nan"),
            "images": int(e.size),
        }
    return table


def jhu_table_lines(table: Mapping[str, Mapping]) -> list[str]:
    """The table as text: a header, then one ``column images MAE MSE`` line per column."""
    lines = ["category images MAE MSE"]
    for column, row in table.items():
        lines.append(f"{column} {row['images']} {row['mae']:.2f} {row['mse']:.2f}")
    return lines
