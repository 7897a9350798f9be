"""File-layout helpers shared by the manual-download builders.

Release folders are matched image by image with their annotation files; an image without its
annotation file, or an annotation file without its image, is an error naming the file, so nothing
is skipped silently.
"""

from __future__ import annotations

import collections
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np

from crowdjax.data import io
from crowdjax.data.io import natural_key  # noqa: F401  (used as _files.natural_key)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def require_dir(path: str | os.PathLike, *, what: str) -> str:
    """Returns `path`, raising `DataError` naming it when it is not a directory."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise io.DataError(f"{path}: {what} directory not found")
    return path


def find_child(parent: str, names: tuple[str, ...]) -> str | None:
    """First entry of `parent` whose name matches one of `names` case-insensitively, else None."""
    if not os.path.isdir(parent):
        return None
    wanted = [n.lower() for n in names]
    entries = {e.lower(): e for e in sorted(os.listdir(parent))}
    for name in wanted:
        if name in entries and os.path.isdir(os.path.join(parent, entries[name])):
            return os.path.join(parent, entries[name])
    return None


def list_images(directory: str) -> list[str]:
    """Image file names (not paths) in `directory`, in natural order; hidden files ignored."""
    names = [
        n
        for n in os.listdir(directory)
        if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES)
    ]
    return sorted(names, key=natural_key)


def pair_files(
    image_dir: str,
    ann_dir: str,
    *,
    ann_name: Callable[[str], str],
    ann_pattern: str,
) -> list[tuple[str, str]]:
    """Matches each image of `image_dir` with its annotation file in `ann_dir`.

    Args:
      image_dir: folder of the images.
      ann_dir: folder of the annotation files (may equal `image_dir`).
      ann_name: image file name -> annotation file name.
      ann_pattern: regular expression that every annotation file name of `ann_dir` matches.

    Returns:
      [(image_path, annotation_path)] in natural order of the image names.

    Raises:
      DataError: an image has no annotation file, or an annotation file has no image.
    """
    images = list_images(image_dir)
    expected = {ann_name(n): n for n in images}
    pairs = []
    for name in images:
        ann = os.path.join(ann_dir, ann_name(name))
        if not os.path.isfile(ann):
            raise io.DataError(
                f"{ann}: annotation file not found for image {os.path.join(image_dir, name)}"
            )
        pairs.append((os.path.join(image_dir, name), ann))
    pattern = re.compile(ann_pattern)
    for name in sorted(os.listdir(ann_dir), key=natural_key):
        if pattern.fullmatch(name) and name not in expected:
            raise io.DataError(
                f"{os.path.join(ann_dir, name)}: annotation file without its image in {image_dir}"
            )
    return pairs


def unwrap(value):
    """Unwraps MATLAB cells/structs loaded by scipy: object arrays of one element."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    return value


def as_int(value, *, name: str, what: str) -> int:
    """A MATLAB/JSON scalar as int, raising `DataError` naming the file otherwise."""
    array = np.asarray(unwrap(value))
    if array.size != 1 or not np.isfinite(array.astype(np.float64)).all():
        raise io.DataError(f"{name}: {what} must be one finite number, got {array!r}")
    number = float(array.reshape(()))
    if number != int(number):
        raise io.DataError(f"{name}: {what} must be an integer, got {number}")
    return int(number)


def read_bytes(path: str) -> bytes:
    """Raw bytes of an existing file (`DataError` naming it if missing); decoded later."""
    with open(io.require_file(path), "rb") as f:
        return f.read()


def default_workers() -> int:
    """Threads that make examples: `$CROWDJAX_BUILD_WORKERS`, else the CPU count (at most 8)."""
    return int(os.environ.get("CROWDJAX_BUILD_WORKERS", min(8, os.cpu_count() or 1)))


def ordered_map(fn: Callable, items: Iterable, *, workers: int | None = None) -> Iterator:
    """`map(fn, items)` on worker threads, in order, with at most 2 * workers in flight.

    The heavy parts of an example (decoding, Gaussian filtering, distance transform) run in
    OpenCV/numpy code that releases the GIL, so threads overlap them with the serialisation in
    the main thread. An exception of `fn` is raised here, for its item, in order.
    """
    workers = default_workers() if workers is None else workers
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as executor:
        pending = collections.deque()
        try:
            for item in items:
                pending.append(executor.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def record_count_mismatch(builder, split: str, name: str, declared: int, annotated: int) -> None:
    """Logs a declared head count that differs from the number of annotated points.

    The points are the ground truth (GT count = number of annotated points); the images whose
    files disagree are counted per split in the metadata (`count_mismatch`, 0 when none).
    """
    builder.count_in_metadata("count_mismatch", split, int(declared != annotated))
    if declared != annotated:
        logging.warning(
            "%s: the file declares %d heads but annotates %d points; the points are kept",
            name,
            declared,
            annotated,
        )


def struct_field(value: Any, field: str, *, name: str) -> Any:
    """`field` of a MATLAB struct as loaded by scipy (1x1 cells around it are unwrapped)."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    names = value.dtype.names if isinstance(value, np.ndarray) else None
    if not names or field not in names or value.size != 1:
        raise io.DataError(f"{name}: malformed .mat file, expected a struct with field {field!r}")
    return value[field].flat[0]


def resize_like(array: np.ndarray, shape: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resamples a [h, w] map to `shape` (H, W); unchanged when the shapes agree."""
    if array.shape == tuple(shape):
        return array
    return cv2.resize(array, (shape[1], shape[0]), interpolation=interpolation)
