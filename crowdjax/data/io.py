"""Reading raw data-set files with errors that name the file and the problem.

Builders read images and annotation files of many formats (JPEG/PNG, MATLAB v5 and v7.3 .mat,
JSON, text; images are decoded by `crowdjax.data.decode`). Every reader here raises `DataError`
with the offending path, so a bad file in a release of thousands is found at once instead of
surfacing as a shape error deep in a pipeline.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import scipy.io


class DataError(ValueError):
    """A data-set file is missing, unreadable or malformed. The message names the file."""


def natural_key(name: str) -> tuple:
    """Sort key ordering "IMG_2" before "IMG_10" (digits compared as numbers)."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def require_file(path: str | os.PathLike) -> str:
    """Returns `path` as a string, raising `DataError` if it is not an existing file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    return path


def encode_image(image: np.ndarray, *, ext: str = ".jpg", quality: int = 95) -> bytes:
    """Encodes RGB uint8 [H, W, 3] as JPEG (default) or PNG bytes."""
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise DataError(f"could not encode an image of shape {image.shape} as {ext}")
    return buf.tobytes()


def load_mat(path: str | os.PathLike) -> dict[str, Any]:
    """Loads a MATLAB .mat file (v4-v7 with scipy, v7.3/HDF5 with h5py) into a dict.

    v7.3 datasets are returned as numpy arrays transposed back to MATLAB's (row, column) order.
    """
    path = require_file(path)
    try:
        return scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    except NotImplementedError:  # MATLAB v7.3 files are HDF5.
        return _load_mat_v73(path)
    except Exception as e:  # scipy raises several types for truncated or non-.mat files.
        raise DataError(f"{path}: malformed .mat file ({type(e).__name__}: {e})") from e


def _load_mat_v73(path: str) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    try:
        with h5py.File(path, "r") as f:
            for key, value in f.items():
                if isinstance(value, h5py.Dataset):
                    out[key] = np.asarray(value).T
    except OSError as e:
        raise DataError(f"{path}: malformed .mat file ({e})") from e
    return out


def as_points(array: Any, *, name: str) -> np.ndarray:
    """Validates an annotation array as finite float32 points [N, 2] (x, y).

    Accepts [N, 2] and [N, >2] (extra columns such as box sizes are dropped) and empty arrays of any
    shape with zero elements.
    """
    points = np.asarray(array, dtype=np.float64)
    if points.size == 0:
        return np.zeros((0, 2), np.float32)
    if points.ndim != 2 or points.shape[1] < 2:
        raise DataError(f"{name}: expected points of shape [N, 2] (x, y), got {points.shape}")
    points = points[:, :2]
    if not np.all(np.isfinite(points)):
        raise DataError(f"{name}: {int((~np.isfinite(points)).any(1).sum())} non-finite points")
    return points.astype(np.float32)


def mat_field(mat: dict[str, Any], keys: Sequence[str], *, name: str) -> np.ndarray:
    """Returns the first of `keys` present in a loaded .mat dict, or raises naming the file."""
    for key in keys:
        if key in mat:
            return mat[key]
    present = sorted(k for k in mat if not k.startswith("__"))
    raise DataError(f"{name}: malformed .mat file, none of {list(keys)} found (has {present})")


def load_json(path: str | os.PathLike) -> Any:
    """Loads a JSON file, raising `DataError` naming the file when it does not parse."""
    path = require_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: malformed JSON ({e})") from e


def load_text_rows(path: str | os.PathLike, *, min_columns: int) -> np.ndarray:
    """Loads a whitespace/comma separated numeric text file as float64 [N, C] (N may be 0)."""
    path = require_file(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.replace(",", " ").split()
            if not fields:
                continue
            try:
                values = [float(v) for v in fields]
            except ValueError as e:
                raise DataError(f"{path}:{lineno}: non-numeric value in {line.strip()!r}") from e
            if len(values) < min_columns:
                raise DataError(
                    f"{path}:{lineno}: expected at least {min_columns} columns, got {len(values)}"
                )
            rows.append(values)
    if not rows:
        return np.zeros((0, min_columns))
    width = min(len(r) for r in rows)
    return np.asarray([r[:width] for r in rows], dtype=np.float64)
