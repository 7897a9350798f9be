"""Can a recipe fit one fixed batch? Trains a config's model on the same training batch over and
over, with the config's optimizer and step (the engine's `Setup.train_step`), and prints the loss
and count error as it goes.

  python benchmarks/fit_one_batch.py --config=configs/dkpnet_va_shanghaitech.py:va,cpu \\
      --data_dir=<built data> [--steps=100] [--every=10] [--out=fit.json]

A method that does not learn on real data either cannot fit what it is shown (a bug in the
labels, the loss or its gradient; a learning rate that diverges) or fits it and needs more data
than it was given. If the loss falls by far on one batch, the path from labels to gradients works
and the failure is one of budget or generalisation. Config overrides as train.py's
(`--config.model.head_init=small`). Methods whose training needs a preparation (DKPNet's InVA
stage II) are refused.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from crowdjax import run, sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/ is imported by name.

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where the data sets are built.")
_STEPS = flags.DEFINE_integer("steps", 100, "Steps on the one batch.")
_EVERY = flags.DEFINE_integer("every", 10, "Print every this many steps.")
_OUT = flags.DEFINE_string("out", "", "Write the curve here as JSON.")


def fit(config, steps: int, every: int, log=print) -> dict:
    """{"counts": the batch's ground-truth counts, "curve": [{"step", metrics...}]}."""
    setup = run.Setup(config)
    if setup.method.prepare is not None:
        raise ValueError(f"{config.method}: its training needs a preparation; not supported here")
    batches = run.training_batches(setup, 0, None)
    host_batch = next(batches)
    batch = sharding.host_to_global(host_batch, setup.mesh)
    state = setup.init(jax.random.key(config.seed))
    counts = [round(float(c), 1) for c in host_batch["count"]] if "count" in host_batch else []
    log(f"one batch of {config.train.global_batch_size}: ground-truth counts {counts}")
    curve, start = [], time.monotonic()
    for step in range(1, steps + 1):
        state, metrics = setup.train_step(state, batch)
        if step % every == 0 or step == 1:
            values = {k: float(v) for k, v in jax.device_get(metrics).items() if v.ndim == 0}
            curve.append({"step": step, **values})
            shown = {k: values[k] for k in ("loss", "count_mae") if k in values}
            log(f"step {step}/{steps} ({time.monotonic() - start:.0f} s): {shown}")
    return {"counts": counts, "curve": curve}


def main(argv):
    del argv
    config = _CONFIG.value
    if _DATA_DIR.value:
        config.unlock()
        config.data.data_dir = _DATA_DIR.value
    result = fit(config, _STEPS.value, _EVERY.value)
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
