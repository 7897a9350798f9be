"""One train step on 1 device vs the same global batch sharded over 8 (run with 8 CPU devices).

  python tests/engine/one_vs_eight.py DATA_DIR CASE [CASE ...]

CASE = "CONFIG[:VARIANT][;key=value...]": CONFIG is a module of `configs/` or a dotted module
path (e.g. tests.engine.toy_configs:two_player); `key=value` overrides a config field, and
`8:key=value` applies to the 8-device run only. Prints one JSON line per case: the two losses, the
largest parameter and model-state differences, and the size of the 1-device update they are
compared with.
"""

import importlib
import json
import sys

import jax
import numpy as np

from crowdjax import run, sharding


def one_step(config, devices):
    setup = run.Setup(config, devices=devices)
    state = setup.init(jax.random.key(config.seed))
    before = jax.device_get((state.params, state.model_state))
    batch = next(run.training_batches(setup, 0, None))
    state, metrics = setup.train_step(state, sharding.host_to_global(batch, setup.mesh))
    return before, jax.device_get((state.params, state.model_state)), jax.device_get(metrics)


def _override(config, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *path, last = key.split(".")
    node = config
    for part in path:
        node = node[part]
    node[last] = type(node[last])(value) if not isinstance(node[last], bool) else value == "True"


def _max_diff(a, b) -> float:
    leaves = [
        float(np.max(np.abs(np.float64(x) - np.float64(y)), initial=0.0))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return max(leaves, default=0.0)


def compare(data_dir: str, case: str) -> dict:
    spec, *assignments = case.split(";")
    name, _, variant = spec.partition(":")
    module = importlib.import_module(name if "." in name else f"configs.{name}")
    config = module.get_config(variant or "tiny")
    config.data.data_dir = data_dir
    for assignment in assignments:
        if not assignment.startswith("8:"):
            _override(config, assignment)
    config.train.global_batch_size = 8
    # SGD: the parameter change is lr * gradient, so this compares the gradients themselves (Adam's
    # first step is lr * sign(g) and would amplify float rounding of near-zero gradients).
    for group in [config.optimizer, *config.optimizers.values()]:
        group.name, group.learning_rate, group.weight_decay = "sgd", 1e-2, 0.0
    (p0, s0), (p1, s1), m1 = one_step(config, jax.devices()[:1])
    for assignment in assignments:
        if assignment.startswith("8:"):
            _override(config, assignment[2:])
    _, (p8, s8), m8 = one_step(config, jax.devices())
    # Per top-level part (e.g. each player, each backbone stage, batch_stats), the difference
    # against the size of that part's own update, so a part that barely moves is checked too.
    ratios = {
        f"{kind}/{key}": _max_diff(one[key], eight[key])
        / max(_max_diff(start[key], one[key]), 1e-30)
        for kind, start, one, eight in (("params", p0, p1, p8), ("state", s0, s1, s8))
        for key in one
        if _max_diff(start[key], one[key]) > 0
    }
    return {
        "case": case,
        "loss_1": float(m1["loss"]),
        "loss_8": float(m8["loss"]),
        "param_diff": _max_diff(p1, p8),
        "param_update": _max_diff(p0, p1),
        "state_diff": _max_diff(s1, s8),
        "state_update": _max_diff(s0, s1),
        "worst_part": max(ratios, key=ratios.get),
        "worst_ratio": max(ratios.values()),
        "parts": sorted(ratios),
    }


def main():
    assert jax.device_count() == 8, jax.devices()
    try:  # A global batch that does not divide over the devices fails before any work.
        sharding.check_batch_size(12, sharding.make_mesh())
        raise AssertionError("batch 12 over 8 devices was accepted")
    except ValueError as e:
        assert "divisible" in str(e)
    for case in sys.argv[2:]:
        print(json.dumps(compare(sys.argv[1], case)), flush=True)


if __name__ == "__main__":
    main()
