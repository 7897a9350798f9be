"""Count people with a model exported by `python -m crowdjax.export`, without crowdjax.

  python examples/run_exported.py exported/ crowd.jpg [more.jpg ...]

Needs only jax (with flatbuffers), numpy and opencv-python. Reads exported/manifest.json and
exported/model.jax_exported, feeds each image as the manifest says (RGB float32 in [0, 255],
NHWC, scaled up first if its short side is below the manifest's `min_short_side`, as crowdjax
does) and prints one JSON line per image: file, count, the density's shape.
"""

from __future__ import annotations

import json
import os
import sys

import cv2
import jax
import numpy as np


def load(folder: str):
    """(manifest, the deserialized jax.export.Exported) of an export folder."""
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(folder, manifest["files"]["stablehlo"]), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    return manifest, exported


def read_rgb(path: str) -> np.ndarray:
    """An image file -> RGB uint8 [H, W, 3] (gray and RGBA files included)."""
    data = np.fromfile(path, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not an image OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def scale_up(rgb: np.ndarray, min_short_side: int) -> np.ndarray:
    """The image scaled up (aspect kept, bilinear) so its short side is at least
    `min_short_side`, as crowdjax predicts it (0: unchanged)."""
    h, w = rgb.shape[:2]
    if min_short_side <= 0 or min(h, w) >= min_short_side:
        return rgb
    scale = min_short_side / min(h, w)
    size = (max(min_short_side, round(w * scale)), max(min_short_side, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)


def count(manifest: dict, exported, rgb: np.ndarray) -> tuple[float, np.ndarray]:
    """(people, density [h, w]) of one RGB uint8 image."""
    rgb = scale_up(rgb, int(manifest["min_short_side"]))
    out = exported.call(rgb[None].astype(np.float32))
    return float(out["count"][0]), np.asarray(out["density"][0])


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    manifest, exported = load(argv[1])
    for path in argv[2:]:
        people, density = count(manifest, exported, read_rgb(path))
        record = {"file": path, "count": people, "density_shape": list(density.shape)}
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
