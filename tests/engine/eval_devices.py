"""Evaluation on 1 device vs 8 (run with 8 CPU devices), eval batch size 1.

  python tests/engine/eval_devices.py DATA_DIR

Prints the per-image sums of the predicted density of the quickstart's tiny model (random
init) on the tiny test split, and the effective batch sizes, as JSON.
"""

import json
import sys

import jax

from configs import quickstart
from crowdjax import evals, evaluation, run, whole_images


def counts(config, devices):
    setup = run.Setup(config, devices=devices)
    variables = setup.init(jax.random.key(0)).variables
    entry = evals.EvalEntry("test", "synthetic_crowd/tiny", "test")
    stream = []
    for batch, fetched, i in whole_images.stream(setup, variables, entry.dataset, "test"):
        stream.append((str(batch["image_id"][i]), float(fetched["density"][i].sum())))
    result = evaluation.evaluate(setup, variables, entry)
    assert result.metrics["num_images"] == len(stream)
    return setup.eval_batch_size(), dict(stream)


def main():
    assert jax.device_count() == 8, jax.devices()
    config = quickstart.get_config("tiny")
    config.data.data_dir = sys.argv[1]
    config.eval.global_batch_size = 1
    b1, c1 = counts(config, jax.devices()[:1])
    b8, c8 = counts(config, jax.devices())
    print(json.dumps({"batch_size_1": b1, "batch_size_8": b8, "counts_1": c1, "counts_8": c8}))


if __name__ == "__main__":
    main()
