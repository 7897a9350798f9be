"""One train step on 1 device vs the same global batch sharded over 8 (run with 8 CPU devices).

Prints the max absolute parameter difference and the loss difference as JSON.
"""

import json
import sys

import jax
import numpy as np

from configs import quickstart
from crowdjax import sharding, trainer
from crowdjax.data import pipeline


def one_step(config, devices):
    setup = trainer.Setup(config, devices=devices)
    state = setup.init(jax.random.key(config.seed))
    batch = next(pipeline.train_iterator(config.data, global_batch_size=8, seed=0, output_stride=8))
    state, metrics = setup.train_step(state, sharding.host_to_global(batch, setup.mesh))
    return jax.device_get(state.params), jax.device_get(metrics)


def main():
    assert jax.device_count() == 8, jax.devices()
    config = quickstart.get_config("tiny")
    config.data.data_dir = sys.argv[1]
    config.train.global_batch_size = 8
    # SGD: the parameter change is lr * gradient, so this compares the gradients themselves (Adam's
    # first step is lr * sign(g) and would amplify float rounding of near-zero gradients).
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 1e-2
    try:  # A global batch that does not divide over the devices fails before any work.
        sharding.check_batch_size(12, sharding.make_mesh())
        raise AssertionError("batch 12 over 8 devices was accepted")
    except ValueError as e:
        assert "divisible" in str(e)
    p1, m1 = one_step(config, jax.devices()[:1])
    p8, m8 = one_step(config, jax.devices())
    diff = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8), strict=True)
    )
    scale = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(p1))
    print(
        json.dumps(
            {
                "param_diff": diff,
                "param_scale": scale,
                "loss_1": float(m1["loss"]),
                "loss_8": float(m8["loss"]),
            }
        )
    )


if __name__ == "__main__":
    main()
