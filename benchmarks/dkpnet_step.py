"""Images/s of the DKPNet train step: SE, VA and InVA attention against JT (no attention), in one
process, on the 3-joint config (truncated HRNet-W40, 400 crops, three domains).

  python benchmarks/dkpnet_step.py                                  # width 1, 400 crops, batch 8
  python benchmarks/dkpnet_step.py --width=0.25 --size=256 --batch=4 --steps=3
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.train_step import images_per_second  # noqa: E402
from configs import dkpnet_inva_3joint, dkpnet_va_3joint  # noqa: E402
from crowdjax.data import labels  # noqa: E402


def batch_of(batch: int, size: int, points: int, domains: int, seed: int = 0) -> dict:
    """Random heads, their density at stride 4 and a domain id per image."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, size - 1e-3, (batch, points, 2)).astype(np.float32)
    density = np.stack(
        [labels.sum_pool(labels.density_map(p, (size, size), sigma=4.0), 4) for p in pts]
    )
    return {
        "image": rng.standard_normal((batch, size, size, 3)).astype(np.float32),
        "image_mask": np.ones((batch, size, size), bool),
        "density": density.astype(np.float32),
        "points": pts,
        "point_mask": np.ones((batch, points), bool),
        "count": np.full((batch,), points, np.float32),
        "domain": (np.arange(batch) % domains).astype(np.int32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    batch = batch_of(args.batch, args.size, args.points, 3)
    results = {}
    for variant in ("jt", "se", "va", "inva"):
        module = dkpnet_inva_3joint if variant == "inva" else dkpnet_va_3joint
        config = module.get_config(variant)
        config.data.crop_size = args.size
        config.model.width = args.width
        config.train.global_batch_size = args.batch
        results[variant] = images_per_second(config, batch, args.steps)
    base = results["jt"]
    print(f"dkpnet 3-joint, {args.size}x{args.size}, batch {args.batch}, width {args.width}:")
    for name, ips in results.items():
        print(f"  {name:5s} {ips:8.2f} img/s (time x{base / ips:.2f})")


if __name__ == "__main__":
    main()
