"""Density-map storage options on disk: bytes per pixel, errors and decode time per crop.

Regenerates the float32 maps of `--images` training images of a prepared data set from their
points (the builder's kernel, `labels.density_map`) and encodes each as the builders could store
it (ZLIB level 6, as TFDS's Tensor encoding), then reports for each option: compressed bytes per
map pixel, the max abs error per pixel, the max |count error| / count, and the time to decode
the rows of one crop window and cast it to float32. The chosen storage (float16) is
`tfds_builders.base.DensityMap`; "points only" is the regeneration the input pipeline does after
random scaling (`transforms.density_crop`).

  python benchmarks/density_storage.py [--name=shanghaitech/part_b] [--data_dir=...]
      [--images=60] [--crop=512]
"""

from __future__ import annotations

import argparse
import time
import zlib

import numpy as np

from crowdjax.data import datasets, labels, transforms


def _planes(array: np.ndarray) -> bytes:
    """Bytes of each row split into byte planes (all first bytes, then all second ...)."""
    h, w = array.shape
    return array.view(np.uint8).reshape(h, w, array.itemsize).transpose(0, 2, 1).tobytes()


def _unplanes(buf: bytes, width: int, dtype) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    planes = np.frombuffer(buf, np.uint8).reshape(-1, size, width)
    return np.ascontiguousarray(planes.transpose(0, 2, 1)).view(dtype).reshape(-1, width)


def _linear(density: np.ndarray, levels: int, dtype):
    step = float(density.max()) / levels if density.max() > 0 else 1.0
    return np.round(density / step).astype(dtype), np.float32(step)


def encode(option: str, density: np.ndarray):
    """(ZLIB blob, decode(blob, rows) -> float32 [rows, W], the stored map as float32)."""
    width = density.shape[1]
    if option in ("float32", "float16"):
        stored = density.astype(option)
        return (
            zlib.compress(stored.tobytes()),
            lambda blob, rows: np.frombuffer(
                zlib.decompressobj().decompress(blob, rows * width * stored.itemsize), stored.dtype
            ).reshape(rows, width),
            stored.astype(np.float32),
        )
    if option == "float16 byte planes":
        stored = density.astype(np.float16)
        return (
            zlib.compress(_planes(stored)),
            lambda blob, rows: _unplanes(
                zlib.decompressobj().decompress(blob, rows * width * 2), width, np.float16
            ),
            stored.astype(np.float32),
        )
    if option in ("uint16 linear", "uint8 linear"):
        dtype = np.uint16 if option.startswith("uint16") else np.uint8
        q, step = _linear(density, np.iinfo(dtype).max, dtype)
        return (
            zlib.compress(q.tobytes()),
            lambda blob, rows: (
                np.frombuffer(
                    zlib.decompressobj().decompress(blob, rows * width * q.itemsize), dtype
                ).reshape(rows, width)
                * step
            ),
            q.astype(np.float32) * step,
        )
    raise ValueError(option)


OPTIONS = ("float32", "float16", "float16 byte planes", "uint16 linear", "uint8 linear")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="shanghaitech/part_b")
    parser.add_argument("--data_dir", default=datasets.default_data_dir())
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--crop", type=int, default=512)
    args = parser.parse_args(argv)

    recipe = datasets.get_builder(args.name, data_dir=args.data_dir).builder_config
    kernel = dict(sigma=recipe.sigma, adaptive=recipe.adaptive, beta=recipe.beta, k=recipe.k)
    source = datasets.raw_source(args.name, "train", data_dir=args.data_dir)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(source), min(args.images, len(source)), replace=False)
    size = dict.fromkeys(OPTIONS, 0)
    err, count_err, ms = dict.fromkeys(OPTIONS, 0.0), dict.fromkeys(OPTIONS, 0.0), {}
    pixels = image_bytes = label_bytes = point_bytes = 0
    regen_s = 0.0
    for i in picks:
        record = source[int(i)]
        points = np.asarray(record["points"], np.float32).reshape(-1, 2)
        shape = tuple(int(s) for s in record["density"]["shape"])
        density = labels.density_map(points, shape, **kernel)
        pixels += density.size
        image_bytes += len(record["image"])
        label_bytes += len(record["distance_label"]["value"])
        point_bytes += points.nbytes
        window = transforms.random_window(rng, *shape, (args.crop, args.crop))
        y0, x0, h, w = window
        for option in OPTIONS:
            blob, decode, stored = encode(option, density)
            size[option] += len(blob)
            err[option] = max(err[option], float(np.abs(stored - density).max()))
            n = max(len(points), 1)
            count_err[option] = max(
                count_err[option], abs(float(stored.sum(dtype=np.float64)) - len(points)) / n
            )
            start = time.perf_counter()
            np.asarray(decode(blob, y0 + h)[y0:, x0 : x0 + w], np.float32)
            ms[option] = ms.get(option, 0.0) + (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        transforms.density_crop(points, shape, window, **kernel)
        regen_s += time.perf_counter() - start

    n = len(picks)
    print(
        f"{args.name}: {n} training maps, {pixels / n:.0f} px each; image "
        f"{image_bytes / pixels:.4f} B/px, distance_label {label_bytes / pixels:.4f} B/px, points "
        f"{point_bytes / pixels:.5f} B/px"
    )
    for option in OPTIONS:
        print(
            f"  {option:20s} {size[option] / pixels:.4f} B/px   max |error| {err[option]:.2e}   "
            f"max count error {count_err[option]:.1e} x count   "
            f"decode {ms[option] / n:5.2f} ms/crop"
        )
    print(
        f"  {'points only':20s} {0:.4f} B/px   max |error| 0 (regenerated)             "
        f"regenerate {regen_s / n * 1e3:5.2f} ms/crop"
    )


if __name__ == "__main__":
    main()
