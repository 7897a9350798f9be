"""Images/s of the L2SM train step and prediction, against SPN alone, in one process.

Runs the trainer's jitted step (SPN + scale map + re-prediction of the selected regions + Adam)
and the jitted prediction on a clustered random crowd. The thresholds are left at zero, so every
region with a head is re-predicted: the worst case (the paper re-predicts the densest C of G
groups, 60% of the regions at C = 3, G = 5). Ratios are against SPN alone.

  python benchmarks/l2sm_step.py                                     # width 1, 768x1024, batch 1
  python benchmarks/l2sm_step.py --width=0.125 --height=256 --width_px=256 --batch=4 --steps=3
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.train_step import images_per_second  # noqa: E402
from configs import l2sm_common  # noqa: E402
from crowdjax import run, sharding  # noqa: E402
from crowdjax.data import labels  # noqa: E402


def crowd_batch(batch: int, shape, points: int, sigma: float, seed: int = 0) -> dict:
    """Half the heads in one tight cluster, half uniform; density at stride 4."""
    rng = np.random.default_rng(seed)
    h, w = shape
    out = {k: [] for k in ("image", "density", "points")}
    for _ in range(batch):
        centre = rng.uniform(0.25, 0.75, 2) * [w, h]
        pts = np.concatenate(
            [
                rng.normal(centre, 0.06 * min(h, w), (points // 2, 2)),
                rng.uniform(0, 1, (points - points // 2, 2)) * [w, h],
            ]
        )
        pts = np.clip(pts, 0, [w - 1e-3, h - 1e-3]).astype(np.float32)
        out["points"].append(pts)
        out["density"].append(labels.sum_pool(labels.density_map(pts, shape, sigma=sigma), 4))
        out["image"].append(rng.standard_normal((h, w, 3)).astype(np.float32))
    out = {k: np.stack(v) for k, v in out.items()}
    out.update(
        point_mask=np.ones((batch, points), bool),
        count=np.full((batch,), points, np.float32),
        image_mask=np.ones((batch, h, w), bool),
        domain=np.zeros((batch,), np.int32),
    )
    return out


def predictions_per_second(config, batch: dict, steps: int) -> float:
    setup = run.Setup(config)
    state = setup.init(jax.random.key(0))
    images = sharding.host_to_global(
        {"image": batch["image"], "image_mask": batch["image_mask"]}, setup.mesh
    )
    out = setup.predict(state.variables, images["image"], images["image_mask"])
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    for _ in range(steps):
        out = setup.predict(state.variables, images["image"], images["image_mask"])
    jax.block_until_ready(out)
    return steps * batch["image"].shape[0] / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width_px", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    shape = (args.height, args.width_px)
    config = l2sm_common.l2sm_config("shb")
    config.data.crop_size = shape
    config.model.width = args.width
    config.l2sm.sigma = 4.0
    config.train.global_batch_size = args.batch
    config.eval.global_batch_size = args.batch
    batch = crowd_batch(args.batch, shape, args.points, sigma=4.0)
    print(f"devices: {jax.devices()}")
    results = {}
    for name, use, regions in (
        ("SPN alone", False, 0),
        ("L2SM, up to all 16 regions", True, 0),
        ("L2SM, at most 4 regions", True, 4),
    ):
        config.model.use_l2sm = use
        config.l2sm.max_regions = regions
        results[name] = (
            images_per_second(config, batch, args.steps),
            predictions_per_second(config, batch, args.steps),
        )
    base_train, base_pred = results["SPN alone"]
    print(f"l2sm, {shape[0]}x{shape[1]}, batch {args.batch}, width {args.width}:")
    for name, (train, pred) in results.items():
        print(
            f"  {name:28s} train {train:8.2f} img/s (time x{base_train / train:.2f})   "
            f"predict {pred:8.2f} img/s (time x{base_pred / pred:.2f})"
        )


if __name__ == "__main__":
    main()
