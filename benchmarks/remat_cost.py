"""What `config.model.remat` saves and costs, at the paper's crop and batch: the activations the
model's forward pass keeps for the backward pass (JAX's saved residuals, traced, not compiled),
XLA's temp bytes of the whole training step (compiled on this machine's backend, not run), with
and without remat, and the step time ratio at a small size.

  python benchmarks/remat_cost.py [--rows=dkpnet:dkpnet_3joint_inva,uot:uot_shb]
      [--small_crop=128] [--small_batch=2] [--steps=5] [--residuals_only]

The residuals are what any backend must keep between the forward and the backward pass before
its own scheduling (XLA reuses and fuses buffers: its temp bytes are the number a device sees,
and depend on the backend's scheduler). The step time is measured on this machine at
`--small_crop` and `--small_batch` (full width), best of `--steps` after a warm-up step, both
variants in this process one after the other.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
from jax._src.ad_checkpoint import saved_residuals  # Public: only print_saved_residuals.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/ and benchmarks/ are imported by name.

from benchmarks import paper_steps  # noqa: E402
from crowdjax import registry, sharding, step_cost  # noqa: E402
from crowdjax import run as run_setup  # noqa: E402
from crowdjax.data import settings  # noqa: E402


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


def small_batch(config, batch: int) -> int:
    """`batch` rounded up to what the config's batch must divide by: a batch of tiled crops
    (L2SM on UCF-QNRF: `data.train_tiles`) counts tiles**2 per image."""
    tiles = settings.train_tiles(config.data) ** 2
    return -(-batch // tiles) * tiles


def residual_bytes(config) -> int:
    """Bytes the model's forward pass on one global batch keeps for its backward pass (JAX's
    saved residuals of a scalar function of the outputs, less the parameters and inputs)."""
    method = registry.get_method(config.method)
    model = method.make_model(config)
    h, w = settings.crop_shape(config.data)
    init = lambda: method.init_variables(model, jax.random.key(0), config, input_shape=(h, w))
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(init))
    kwargs = {}
    if config.method.startswith("dkpnet"):  # Training mode: batch statistics, a latent sample.
        kwargs = {"train": True, "mutable": ["batch_stats"], "rngs": {"latent": jax.random.key(1)}}

    def loss(params, images):
        out = model.apply({**variables, "params": params}, images, **kwargs)
        return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(out))

    images = jax.ShapeDtypeStruct((int(config.train.global_batch_size), h, w, 3), jnp.float32)
    residuals = saved_residuals(loss, variables["params"], images)
    return sum(
        math.prod(a.shape) * a.dtype.itemsize
        for a, source in residuals
        if "from the argument" not in source
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="dkpnet:dkpnet_3joint_inva,uot:uot_shb")
    parser.add_argument("--small_crop", type=int, default=128)
    parser.add_argument("--small_batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--residuals_only", action="store_true", help="only the residuals: compile nothing"
    )
    args = parser.parse_args(argv)
    print(
        "| row | batch x crop | residuals GiB | with remat | saved | XLA temp GiB | with remat "
        "| step s | with remat |"
    )
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    gib = lambda n: f"{n / 2**30:.2f}"
    for spec in args.rows.split(","):
        numbers = {}
        for remat in (False, True):
            config = paper_steps.row_config(spec, "paper")
            config.model.remat = remat
            numbers["residuals", remat] = residual_bytes(config)
            if args.residuals_only:
                continue
            numbers["temp", remat] = step_cost.measure(config)["temp_bytes"]
            small = paper_steps.row_config(spec, "paper")
            small.model.remat = remat
            small.data.crop_size = args.small_crop
            if small.data.whole_image:  # Whole images are padded to a bucket, not cropped.
                small.data.train_buckets = ((args.small_crop, args.small_crop),)
            small.train.global_batch_size = small_batch(small, args.small_batch)
            numbers["time", remat] = step_seconds(small, steps=args.steps)
        config = paper_steps.row_config(spec, "paper")
        h, w = settings.crop_shape(config.data)
        res = [numbers["residuals", r] for r in (False, True)]
        cells = [f"{config.train.global_batch_size} x {h}x{w}", gib(res[0]), gib(res[1])]
        cells.append(f"{1 - res[1] / res[0]:.0%}")
        if args.residuals_only:
            cells += ["n/a"] * 4
        else:
            times = [numbers["time", r] for r in (False, True)]
            cells += [gib(numbers["temp", False]), gib(numbers["temp", True])]
            cells += [f"{times[0]:.3f}", f"{times[1]:.3f} (x{times[1] / times[0]:.2f})"]
        print(f"| {spec} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
