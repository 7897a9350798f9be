"""Fake data-set files in the real on-disk formats, written by the builder tests.

Images are small smooth JPEG/PNG pictures; .mat files are written with scipy.io.savemat in the
nesting the real releases use (ShanghaiTech: `image_info` a 1x1 cell holding a 1x1 struct with
fields `location` [N, 2] double and `number` 1x1 integer), or as MATLAB v7.3 (HDF5) with h5py.
"""

from __future__ import annotations

import json
import os
import struct

import cv2
import h5py
import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from crowdjax.data import labels


def write_image(path, height: int, width: int, *, gray: bool = False, seed: int = 0) -> str:
    """Writes a smooth random image (JPEG or PNG by the extension); returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 1 if gray else 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    if not cv2.imwrite(os.fspath(path), image):
        raise OSError(f"could not write {path}")
    return os.fspath(path)


def exif_orientation_jpeg(rgb: np.ndarray, orientation: int) -> bytes:
    """A JPEG of `rgb` (its stored pixel grid) with an APP1 EXIF block holding only the
    orientation tag (1-8: how viewers turn the grid to show the picture upright)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = buf.tobytes()
    return data[:2] + app1 + data[2:]


def random_points(n: int, height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """[n, 2] float64 (x, y) strictly inside a width x height image."""
    rng = np.random.default_rng(seed)
    return rng.uniform([0.01, 0.01], [width - 0.01, height - 0.01], (n, 2))


def write_shanghaitech_mat(path, points, *, number: int | None = None) -> str:
    """Writes `GT_IMG_n.mat` as the release does: image_info{1}.location / .number."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    number = len(points) if number is None else number
    record = np.empty((1, 1), dtype=[("location", object), ("number", object)])
    record[0, 0]["location"] = points
    record[0, 0]["number"] = np.array([[number]], np.uint16 if number > 255 else np.uint8)
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = record
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.savemat(os.fspath(path), {"image_info": cell})
    return os.fspath(path)


def write_points_mat(path, points, *, key: str = "annPoints", v73: bool = False) -> str:
    """Writes a .mat with one [N, 2] double array (UCF-QNRF / UCF_CC_50 `annPoints`).

    With `v73`, writes MATLAB v7.3: HDF5 with the 512-byte MATLAB user block, the array stored
    column-major (dataset shape [2, N]) as MATLAB does.
    """
    points = np.asarray(points, np.float64).reshape(-1, 2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not v73:
        scipy.io.savemat(os.fspath(path), {key: points})
        return os.fspath(path)
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset(key, data=points.T)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: fake HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02" + b"IM")
    return os.fspath(path)


def write_json(path, payload) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f)
    return os.fspath(path)


def write_text(path, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return os.fspath(path)


def corrupt(path) -> None:
    """Truncates an image file so that it no longer decodes."""
    with open(path, "r+b") as f:
        f.truncate(64)


def build(builder_cls, manual_dir, data_dir, *, config=None):
    """Prepares a builder from `manual_dir` into `data_dir` (array_record) and returns it."""
    builder = builder_cls(config=config, data_dir=os.fspath(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    )
    return builder


def read_split(builder, split: str) -> dict[str, dict]:
    """All examples of a split, keyed by image_id."""
    source = builder.as_data_source(split=split)
    examples = [source[i] for i in range(len(source))]
    out = {}
    for ex in examples:
        image_id = ex["image_id"]
        out[image_id.decode() if isinstance(image_id, bytes) else image_id] = ex
    return out


# Stored density maps are float16 (`tfds_builders.base.DensityMap`), read as float32: each value is
# the float32 map rounded to float16, so within 2^-11 of it (relative, normal range) or 2^-25
# (absolute: half the subnormal step, below 6.1e-5).
F16_RTOL, F16_ATOL = 2.0**-11, 2.0**-25


def assert_stored_density(density, want) -> None:
    """`density` (as read) is float32 and equals `want` (float32 map) up to float16 rounding."""
    density = np.asarray(density)
    assert density.dtype == np.float32
    np.testing.assert_allclose(density, want, rtol=F16_RTOL, atol=F16_ATOL)


def check_example(ex, points, recipe) -> None:
    """Common checks: points, count, shapes, and both ground-truth maps whole, against the maps
    that the builder config's recipe (kernel, distance edges) gives for the stored points."""
    image = np.asarray(ex["image"])
    h, w = image.shape[:2]
    assert image.shape == (h, w, 3) and image.dtype == np.uint8
    got = np.asarray(ex["points"])
    np.testing.assert_allclose(got, np.asarray(points, np.float32).reshape(-1, 2), atol=1e-4)
    assert int(ex["count"]) == len(got)
    density = np.asarray(ex["density"])
    assert density.shape == (h, w) and density.dtype == np.float32
    # Sum of the per-pixel float16 bounds (plus the float32 map's own 1e-5): a map concentrated on
    # a few pixels can be off by 2^-11 of the count (measured on real ShanghaiTech B: <= 9e-6).
    np.testing.assert_allclose(
        density.sum(dtype=np.float64), len(got), rtol=F16_RTOL + 1e-5, atol=h * w * F16_ATOL
    )
    want = labels.density_map(
        got, (h, w), sigma=recipe.sigma, adaptive=recipe.adaptive, beta=recipe.beta, k=recipe.k
    )
    assert_stored_density(density, want)
    classes = np.asarray(ex["distance_label"])
    assert classes.shape == (h, w) and classes.dtype == np.uint8
    want = labels.distance_label_map(got, (h, w), edges=recipe.distance_edges)
    np.testing.assert_array_equal(classes, want)
    if len(got):  # heads are class 0; the map is not constant unless the image is empty
        rows, cols = np.floor(got[:, 1]).astype(int), np.floor(got[:, 0]).astype(int)
        assert np.all(classes[rows, cols] == 0)
    else:
        assert np.all(classes == len(recipe.distance_edges) - 1)
