"""One train step on 1 device vs the same global batch sharded over 8 (run with 8 CPU devices).

  python tests/engine/one_vs_eight.py DATA_DIR [CONFIG[:VARIANT] [key=value ...]]

CONFIG defaults to quickstart (tiny variant unless a variant is given); `key=value` pairs override
config fields, with `8:key=value` applying to the 8-device run only. Prints the max absolute
difference of parameters and model state and the two losses as JSON.
"""

import importlib
import json
import sys

import jax
import numpy as np

from crowdjax import sharding, trainer
from crowdjax.data import pipeline


def one_step(config, devices):
    setup = trainer.Setup(config, devices=devices)
    state = setup.init(jax.random.key(config.seed))
    stride = setup.method.output_stride(config)
    batch = next(
        pipeline.train_iterator(config.data, global_batch_size=8, seed=0, output_stride=stride)
    )
    state, metrics = setup.train_step(state, sharding.host_to_global(batch, setup.mesh))
    return jax.device_get((state.params, state.model_state)), jax.device_get(metrics)


def _override(config, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *path, last = key.split(".")
    node = config
    for part in path:
        node = node[part]
    node[last] = type(node[last])(value) if not isinstance(node[last], bool) else value == "True"


def main():
    assert jax.device_count() == 8, jax.devices()
    name, _, variant = (sys.argv[2] if len(sys.argv) > 2 else "quickstart").partition(":")
    config = importlib.import_module(f"configs.{name}").get_config(variant or "tiny")
    config.data.data_dir = sys.argv[1]
    only_eight = [a[2:] for a in sys.argv[3:] if a.startswith("8:")]
    for assignment in sys.argv[3:]:
        if not assignment.startswith("8:"):
            _override(config, assignment)
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
    for assignment in only_eight:
        _override(config, assignment)
    p8, m8 = one_step(config, jax.devices())
    diff = max(
        float(np.max(np.abs(np.float64(a) - np.float64(b))))
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
