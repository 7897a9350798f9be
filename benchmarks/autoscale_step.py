"""Images/s of the AutoScale train step, and where the dense-region selection should run.

Runs the trainer's jitted step (FPN + L2S + re-prediction + Adam) on a clustered random crowd for
three settings in one process: the FPN baseline without L2S, L2S with the selection inside the jit
(`l2s.selection="device"`, jnp connected components) and L2S with the selection on the host
(`"host"`, scipy through `jax.pure_callback`). Ratios are against the baseline.

  python benchmarks/autoscale_step.py                                   # width 1, 512, batch 4
  python benchmarks/autoscale_step.py --width=0.125 --size=128 --batch=8 --steps=5   # CPU
  python benchmarks/autoscale_step.py --mode=loc
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.train_step import images_per_second  # noqa: E402
from configs import autoscale_common  # noqa: E402
from crowdjax.data import labels  # noqa: E402


def crowd_batch(batch: int, size: int, points: int, sigma: float, seed: int = 0) -> dict:
    """Half the heads in one tight cluster, half uniform: a dense region to find."""
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("image", "density", "distance_label", "points")}
    for _ in range(batch):
        centre = rng.uniform(0.25 * size, 0.75 * size, 2)
        pts = np.concatenate(
            [
                rng.normal(centre, 0.06 * size, (points // 2, 2)),
                rng.uniform(0, size, (points - points // 2, 2)),
            ]
        )
        pts = np.clip(pts, 0, size - 1e-3).astype(np.float32)
        out["points"].append(pts)
        out["density"].append(labels.density_map(pts, (size, size), sigma=sigma))
        out["distance_label"].append(labels.distance_label_map(pts, (size, size)))
        out["image"].append(rng.standard_normal((size, size, 3)).astype(np.float32))
    out = {k: np.stack(v) for k, v in out.items()}
    out.update(
        point_mask=np.ones((batch, points), bool),
        count=np.full((batch,), points, np.float32),
        image_mask=np.ones((batch, size, size), bool),
        domain=np.zeros((batch,), np.int32),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("reg", "loc"), default="reg")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    head = {"reg": "regression", "loc": "localization"}[args.mode]
    config = autoscale_common.autoscale_config(head, "synthetic")  # sigma 4
    config.data.crop_size = args.size
    config.model.width = args.width
    config.l2s.area_ratio = 0.01  # Select a region in (almost) every image.
    config.train.global_batch_size = args.batch
    batch = crowd_batch(args.batch, args.size, args.points, sigma=4.0)
    print(f"devices: {jax.devices()}")
    results = {}
    for name, use_l2s, how in (
        ("FPN baseline (no L2S)", False, "device"),
        ("L2S, selection in the jit", True, "device"),
        ("L2S, selection on the host", True, "host"),
    ):
        config.model.use_l2s = use_l2s
        config.l2s.selection = how
        results[name] = images_per_second(config, batch, args.steps)
    base = results["FPN baseline (no L2S)"]
    print(
        f"autoscale_{args.mode}, {args.size}x{args.size}, batch {args.batch}, width {args.width}:"
    )
    for name, ips in results.items():
        print(f"  {name:28s} {ips:8.2f} img/s   time x{base / ips:.2f} of the baseline")


if __name__ == "__main__":
    main()
