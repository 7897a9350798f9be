"""Source images/s of the ASNet train step, FineAdapt and CoarseAdapt against NoAdapt, in one
process.

NoAdapt is G's step alone (source only); CoarseAdapt adds G on the target batch, the D1 and D2
steps and the adversarial terms; FineAdapt adds the four scores. Ratios are against NoAdapt, at
the paper's map resolution (`model.map_stride=1`) and, for comparison, at the coarsest stride
whose D2 patches keep 16 px (size / 64: 8 for 512 crops).

  python benchmarks/asnet_step.py                            # width 1, 512 crops, batch 4
  python benchmarks/asnet_step.py --width=0.125 --size=256 --batch=4 --steps=3
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.train_step import images_per_second  # noqa: E402
from configs import asnet_common  # noqa: E402
from crowdjax.data import labels  # noqa: E402


def paired_batch(batch: int, size: int, points: int, stride: int, seed: int = 0) -> dict:
    """A source batch (random heads, density at `stride`) and a target batch of images."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, size - 1e-3, (batch, points, 2)).astype(np.float32)
    density = np.stack(
        [labels.sum_pool(labels.density_map(p, (size, size), sigma=4.0), stride) for p in pts]
    )
    mask = np.ones((batch, size, size), bool)
    source = {
        "image": rng.standard_normal((batch, size, size, 3)).astype(np.float32),
        "image_mask": mask,
        "density": density.astype(np.float32),
        "points": pts,
        "point_mask": np.ones((batch, points), bool),
        "count": np.full((batch,), points, np.float32),
        "domain": np.zeros((batch,), np.int32),
    }
    target = {
        "image": rng.standard_normal((batch, size, size, 3)).astype(np.float32),
        "image_mask": mask,
    }
    return {"source": source, "target": target}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    for stride in (1, args.size // 64):  # The coarsest maps whose D2 patches are 16 px.
        batch = paired_batch(args.batch, args.size, args.points, stride)
        results = {}
        for variant in ("noadapt", "coarse", "fine"):
            config = asnet_common.apply_variant(asnet_common.asnet_config("sha", "shb"), variant)
            config.data.crop_size = args.size
            config.model.width = args.width
            config.model.map_stride = stride
            config.train.global_batch_size = args.batch
            results[variant] = images_per_second(config, batch, args.steps)
        base = results["noadapt"]
        print(
            f"asnet, {args.size}x{args.size}, batch {args.batch}, width {args.width}, "
            f"map stride {stride}:"
        )
        for name, ips in results.items():
            print(f"  {name:8s} {ips:8.2f} source img/s (time x{base / ips:.2f})")


if __name__ == "__main__":
    main()
