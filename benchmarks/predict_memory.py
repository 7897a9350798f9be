"""Peak host memory and time of counting one large image with `crowdjax.prediction.Counter`.

  python benchmarks/predict_memory.py --config=configs/uot_shb.py --height=3000 --width=4000
  python benchmarks/predict_memory.py ... --max_pixels=0        # whole image, no tiling

Random weights (the memory does not depend on them); a random uint8 image. Prints the count,
windows, seconds and the process's peak resident memory (ru_maxrss), which includes JAX, XLA's
compiled code and the model. Run one measurement per process (the peak never goes down).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/uot_shb.py")
    parser.add_argument("--variant", default="")
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--max_pixels", type=int, default=None, help="0: the whole image")
    args = parser.parse_args()
    from crowdjax import prediction, run

    spec = importlib.util.spec_from_file_location("cfg", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(args.variant)
    setup = run.Setup(config, devices=jax.devices()[:1])
    variables = setup.init(jax.random.key(0)).variables
    max_pixels = args.max_pixels
    if max_pixels == 0:
        max_pixels = (args.height + 64) * (args.width + 64)
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    counter = prediction.Counter(config, variables, **kwargs)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)
    start = time.perf_counter()
    result = counter.count(image)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"{config.method} {args.height}x{args.width} max_pixels={counter.max_pixels}: "
        f"count {result.count:.4f}, {result.windows} windows, {seconds:.1f} s, "
        f"peak RSS {peak:.2f} GiB"
    )


if __name__ == "__main__":
    main()
