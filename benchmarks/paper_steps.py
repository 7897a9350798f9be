"""Images/s of every method's training step at its paper crop and batch, in float32 and
bfloat16, with the step's memory: for an accelerator's first run (benchmarks/accelerator.sh).

  python benchmarks/paper_steps.py [--rows=uot:uot_shb,...] [--dtypes=float32,bfloat16]
      [--steps=10] [--scale=paper|tiny] [--remat]

Each row is a paper table's row (configs/papers/*.py) at `--scale` ("tiny": its tiny variant, a
CPU smoke test). Its own jitted step (`crowdjax.run.Setup`) runs on a batch of its own pipeline
(the embedded tiny data in place of its data sets: the shapes, labels and padding are the run's)
from random weights. Prints, per row and dtype: compile seconds, images/s (crops x steps / wall
time after two warm-up steps), XLA's temp bytes of the step and the device's peak memory so far
(`memory_stats()["peak_bytes_in_use"]`; none on CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/ is imported by name.

from crowdjax import paper_runs, sharding, step_cost  # noqa: E402
from crowdjax import run as run_setup  # noqa: E402

# One paper row per method (and head): part B where the paper has it, at paper crop and batch.
ROWS = (
    "uot:uot_shb",
    "autoscale:autoscale_reg_shb",
    "autoscale:autoscale_loc_shb",
    "l2sm:l2sm_shb",
    "dkpnet:dkpnet_3joint_inva",
    "asnet:asnet_sha_to_shb_fine",
)


def row_config(spec: str, scale: str) -> ml_collections.ConfigDict:
    paper, name = spec.split(":")
    row = paper_runs.load_paper(paper).runs()[name]
    run = paper_runs.row_run(paper, row, root="runs", scale=scale, weights_dir="weights")
    return paper_runs.row_config(run)


def _peak_device_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def benchmark(config, *, steps: int) -> dict:
    """Compile time, images/s and memory of the config's training step on one device."""
    setup = run_setup.Setup(config, devices=jax.devices()[:1])
    batch = step_cost.train_batches(config)
    host = next(batch)
    if hasattr(batch, "close"):
        batch.close()
    batch = jax.device_put(host, sharding.batch_sharded(setup.mesh))
    state = setup.init(jax.random.key(0))
    start = time.perf_counter()
    compiled = setup.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    for _ in range(2):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    wall = time.perf_counter() - start
    crops = int(config.train.global_batch_size)
    return {
        "compile_s": compile_s,
        "images_per_s": crops * steps / wall,
        "step_ms": wall / steps * 1e3,
        "temp_bytes": compiled.memory_analysis().temp_size_in_bytes,
        "device_peak_bytes": _peak_device_bytes(),
        "batch": crops,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--scale", default="paper", choices=("paper", "tiny"))
    parser.add_argument("--remat", action="store_true", help="config.model.remat=True")
    args = parser.parse_args(argv)
    print(f"devices: {jax.devices()}", flush=True)
    print("| row | dtype | batch | compile s | step ms | images/s | XLA temp GiB | peak GiB |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for spec in args.rows.split(","):
        for dtype in args.dtypes.split(","):
            config = row_config(spec, args.scale)
            config.model.dtype = dtype
            config.model.remat = args.remat
            try:
                r = benchmark(config, steps=args.steps)
            except Exception as e:  # noqa: BLE001  One row failing (e.g. out of memory) is shown.
                print(f"| {spec} | {dtype} | error: {type(e).__name__}: {str(e)[:200]} |")
                continue
            peak = r["device_peak_bytes"]
            print(
                f"| {spec} | {dtype} | {r['batch']} | {r['compile_s']:.1f} | {r['step_ms']:.1f} "
                f"| {r['images_per_s']:.1f} | {r['temp_bytes'] / 2**30:.2f} "
                f"| {'n/a' if peak is None else f'{peak / 2**30:.2f}'} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
