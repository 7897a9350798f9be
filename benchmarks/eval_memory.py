"""Peak host memory of a whole evaluation against the number of images (streaming metrics).

  python benchmarks/eval_memory.py                  # synthetic_crowd/street test, 25..100 images
  python benchmarks/eval_memory.py --sizes 25 100 --data_dir ~/crowdjax_data

A stub model (a constant density at output stride 1, so maps are as large as the images) is
evaluated with every metric (counting, GAME(0-3), localization) on the first N test images; the
peak of Python-tracked memory (numpy arrays included, tracemalloc) during `evaluate` is printed
for each N, next to what holding every image's density map would add. The model compiles in a
warm-up pass first, so only the evaluator's own memory is measured. The peak includes the input
pipeline's prefetched batches (`data.prefetch` = 4 batches of 8 images, about 25 MiB), so it is
lower for splits of fewer batches than that.
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc

import jax
import jax.numpy as jnp
from flax import linen as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import quickstart  # noqa: E402
from crowdjax import evals, evaluation, registry, run  # noqa: E402
from crowdjax.data import datasets  # noqa: E402
from crowdjax.methods.base import Method  # noqa: E402

NAME = "synthetic_crowd/street"


class _Constant(nn.Module):
    @nn.compact
    def __call__(self, images):
        c = self.param("c", nn.initializers.constant(1e-3), ())
        return jnp.full(images.shape[:3], c)


STUB = Method(
    name="constant_stub",
    make_model=lambda config: _Constant(),
    init_variables=lambda model, rng, config, *, input_shape: model.init(
        rng, jnp.zeros((1, 8, 8, 3))
    ),
    loss_fn=None,
    predict_fn=lambda variables, images, *, model, config, image_mask=None: model.apply(
        variables, images
    ),
    output_stride=lambda config: 1,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 75, 100])
    parser.add_argument("--data_dir", default="")
    args = parser.parse_args()
    if not datasets.is_prepared(NAME, data_dir=args.data_dir or None):
        datasets.build(NAME, data_dir=args.data_dir or None)
    config = quickstart.get_config()
    config.data.data_dir = args.data_dir
    config.data.eval_bucket_multiple = 8
    config.eval.global_batch_size = 8
    original = registry.get_method
    registry.get_method = lambda name: STUB
    try:
        setup = run.Setup(config)
    finally:
        registry.get_method = original
    variables = setup.init(jax.random.key(0)).variables
    entry = lambda n: evals.EvalEntry("test", NAME, f"test[:{n}]")  # noqa: E731
    evaluation.evaluate(setup, variables, entry(max(args.sizes)), detailed=True)  # compile, caches
    print(f"{NAME} test images at 256x256, density maps at stride 1 (256 kB each, float32)")
    first = None
    for n in args.sizes:
        tracemalloc.start()
        result = evaluation.evaluate(setup, variables, entry(n), detailed=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert result.metrics["num_images"] == n
        first = first or (n, peak)
        print(
            f"  {n:4d} images: peak {peak / 2**20:6.2f} MiB  (+{(peak - first[1]) / 2**20:5.2f} "
            f"MiB over {first[0]} images; holding the maps would add "
            f"{(n - first[0]) * 256 * 256 * 4 / 2**20:5.2f} MiB)"
        )


if __name__ == "__main__":
    main()
