"""Training input-pipeline throughput: 512x512 crops of ShanghaiTech part B with density maps.

Prepares `shanghaitech/part_b` from the original release into `--data_dir` on first use, then
times `train_stream.train_iterator` with and without random scaling and prints crops/s (wall clock,
best of `--repeats` runs: other load on a shared machine only ever lowers it) and the CPU time
per crop of this process (all threads), with the rate it allows on idle cores.

  python benchmarks/input_pipeline.py [--manual_dir=../shared/data/ShanghaiTech]
      [--data_dir=...] [--batch_size=8] [--steps=40] [--repeats=3] [--threads=0]
      [--processes=0]
      [--profile]   # also a single-thread cProfile of one crop transform
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

import numpy as np

from crowdjax.data import datasets, settings, train_stream

NAME = "shanghaitech/part_b"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = {"no scaling": (1.0, 1.0), "random scaling 0.7-1.3": (0.7, 1.3)}


def measure(config, *, batch_size: int, steps: int, warmup: int = 3) -> tuple[float, float]:
    """(crops/s wall clock, CPU ms per crop) over `steps` batches after `warmup` batches."""
    iterator = train_stream.train_iterator(config, global_batch_size=batch_size, seed=0)
    for _ in range(warmup):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        batch = next(iterator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert batch["image"].shape == (batch_size, config.crop_size, config.crop_size, 3)
    if hasattr(iterator, "close"):
        iterator.close()
    crops = steps * batch_size
    return crops / wall, cpu / crops * 1e3


def profile_transform(config, *, crops: int = 40) -> None:
    """cProfile of the per-crop transform alone, in this thread."""
    source = datasets.raw_source(NAME, config.train_split, data_dir=config.data_dir)
    transform = train_stream._train_transform(config, NAME, int(config.output_stride))
    rng = np.random.default_rng(0)
    records = [source[i % len(source)] for i in range(crops)]
    profiler = cProfile.Profile()
    profiler.enable()
    for record in records:
        transform(record, rng)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--manual_dir", default=os.path.join(REPO, "..", "shared", "data", "ShanghaiTech")
    )
    parser.add_argument("--data_dir", default=datasets.default_data_dir())
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--crop_size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: one per CPU core")
    parser.add_argument("--processes", type=int, default=0, help="grain worker processes")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    if not datasets.is_prepared(NAME, data_dir=args.data_dir):
        print(f"preparing {NAME} from {args.manual_dir} into {args.data_dir} (once) ...")
        datasets.build(NAME, data_dir=args.data_dir, manual_dir=os.path.abspath(args.manual_dir))

    config = settings.default_data_config()
    config.update(
        dict(
            name=NAME,
            data_dir=args.data_dir,
            crop_size=args.crop_size,
            hflip=True,
            max_points=1024,
            output_stride=8,
            worker_threads=args.threads,
            worker_processes=args.processes,
            prefetch=4,
        )
    )
    print(
        f"{NAME}: {args.crop_size}x{args.crop_size} crops + density (stride 8), hflip, batch "
        f"{args.batch_size}, threads {args.threads or os.cpu_count()}, processes "
        f"{args.processes}, {os.cpu_count()} CPU cores"
    )
    for mode, scale_range in MODES.items():
        config.scale_range = scale_range
        runs = [
            measure(config, batch_size=args.batch_size, steps=args.steps)
            for _ in range(args.repeats)
        ]
        rate, cpu_ms = max(r[0] for r in runs), float(np.median([r[1] for r in runs]))
        cores = os.cpu_count() or 1
        print(
            f"  {mode:24s} {rate:6.1f} crops/s   {cpu_ms:5.1f} CPU ms/crop "
            f"(= {cores * 1e3 / cpu_ms:.0f} crops/s on {cores} idle cores)"
            + ("" if not args.processes else "  [CPU: main process only]")
        )
        if args.profile:
            profile_transform(config)


if __name__ == "__main__":
    main()
