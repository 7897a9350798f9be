"""Images/s of the UOT train step (VGG19 regressor + UOT loss + Adam) at 512x512.

Runs the trainer's own jitted step on random images and points, after warm-up, and the same
step with a plain pixel-wise MSE density loss as the in-process baseline: the ratio is the cost of
the UOT solve inside a full training step.

  python benchmarks/train_step.py                       # full width, batch 8 (GPU)
  python benchmarks/train_step.py --width=0.125 --batch=2 --steps=3   # CPU smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import uot_shb  # noqa: E402
from crowdjax import registry, run, sharding  # noqa: E402
from crowdjax.methods.uot import method as uot  # noqa: E402


def _mse_loss_fn(params, model_state, batch, rng, *, model, config):
    density = model.apply({"params": params, **model_state}, batch["image"])
    loss = jnp.mean(jnp.sum((density - batch["density"]) ** 2, axis=(1, 2)))
    return loss, ({"mse": loss}, model_state)


def random_batch(batch: int, size: int, points: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, size, (batch, points, 2)).astype(np.float32)
    return {
        "image": rng.standard_normal((batch, size, size, 3)).astype(np.float32),
        "density": rng.uniform(0, 0.01, (batch, size // 8, size // 8)).astype(np.float32),
        "points": pts,
        "point_mask": np.ones((batch, points), bool),
        "count": np.full((batch,), points, np.float32),
        "image_mask": np.ones((batch, size, size), bool),
        "domain": np.zeros((batch,), np.int32),
    }


def images_per_second(config, batch: dict, steps: int) -> float:
    setup = run.Setup(config)
    state = setup.init(jax.random.key(0))
    global_batch = sharding.host_to_global(batch, setup.mesh)
    state, metrics = setup.train_step(state, global_batch)  # Compile + warm-up.
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = setup.train_step(state, global_batch)
    jax.block_until_ready(metrics)
    images = batch["source" if "source" in batch else "image"]  # Paired: source images.
    images = images["image"] if isinstance(images, dict) else images
    return steps * images.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()

    config = uot_shb.get_config()
    config.data.crop_size = args.size
    config.model.width = args.width
    config.model.dtype = "bfloat16" if args.bf16 else "float32"
    config.train.global_batch_size = args.batch
    batch = random_batch(args.batch, args.size, args.points)
    print(f"devices: {jax.devices()}")
    uot_ips = images_per_second(config, batch, args.steps)

    mse_method = dataclasses.replace(uot.METHOD, name="mse_baseline", loss_fn=_mse_loss_fn)
    original = registry.get_method
    registry.get_method = lambda name: mse_method if name == "uot" else original(name)
    try:
        mse_ips = images_per_second(config, batch, args.steps)
    finally:
        registry.get_method = original
    print(
        f"{args.size}x{args.size}, batch {args.batch}, {args.points} points, width {args.width}: "
        f"UOT step {uot_ips:.2f} img/s | MSE-loss step {mse_ips:.2f} img/s | "
        f"UOT/MSE time ratio {mse_ips / uot_ips:.2f}"
    )


if __name__ == "__main__":
    main()
