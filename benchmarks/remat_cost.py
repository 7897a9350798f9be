"""What `config.model.remat` saves and costs: XLA's temp bytes of the training step at the paper's
crop and batch with and without it (compiled, not run), and the step time ratio at a small size.

  python benchmarks/remat_cost.py [--rows=dkpnet:dkpnet_3joint_inva,uot:uot_shb]
      [--small_crop=128] [--small_batch=2] [--steps=5]

The temp bytes are the activations kept for the backward pass plus scratch (XLA's buffer
assignment on this machine's backend); the step time is measured on this machine at
`--small_crop` and `--small_batch` (full width), best of `--steps` after a warm-up step, both
variants in this process one after the other.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/ and benchmarks/ are imported by name.

from benchmarks import paper_steps  # noqa: E402
from crowdjax import run as run_setup  # noqa: E402
from crowdjax import sharding, step_cost  # noqa: E402


def step_seconds(config, *, steps: int) -> float:
    """Best wall seconds of the config's jitted training step over `steps` (after one)."""
    setup = run_setup.Setup(config, devices=jax.devices()[:1])
    batches = step_cost.train_batches(config)
    batch = jax.device_put(next(batches), sharding.batch_sharded(setup.mesh))
    if hasattr(batches, "close"):
        batches.close()
    state = setup.init(jax.random.key(0))
    state, metrics = setup.train_step(state, batch)
    jax.block_until_ready(metrics)
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = setup.train_step(state, batch)
        jax.block_until_ready((state, metrics))
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="dkpnet:dkpnet_3joint_inva,uot:uot_shb")
    parser.add_argument("--small_crop", type=int, default=128)
    parser.add_argument("--small_batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--skip_paper", action="store_true", help="only the small-size timing")
    args = parser.parse_args(argv)
    print("| row | batch x crop | temp GiB | temp GiB, remat | saved | step s | step s, remat |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for spec in args.rows.split(","):
        temp = {}
        for remat in (False, True):
            config = paper_steps.row_config(spec, "paper")
            config.model.remat = remat
            if not args.skip_paper:
                temp[remat] = step_cost.measure(config)["temp_bytes"]
            small = paper_steps.row_config(spec, "paper")
            small.model.remat = remat
            small.data.crop_size = args.small_crop
            small.train.global_batch_size = args.small_batch
            temp[("time", remat)] = step_seconds(small, steps=args.steps)
        config = paper_steps.row_config(spec, "paper")
        shape = f"{config.train.global_batch_size} x {config.data.crop_size}"
        gib = {k: f"{temp[k] / 2**30:.2f}" if k in temp else "n/a" for k in (False, True)}
        saved = f"{1 - temp[True] / temp[False]:.0%}" if not args.skip_paper else "n/a"
        print(
            f"| {spec} | {shape} | {gib[False]} | {gib[True]} | {saved} "
            f"| {temp[('time', False)]:.3f} | {temp[('time', True)]:.3f} "
            f"(x{temp[('time', True)] / temp[('time', False)]:.2f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
