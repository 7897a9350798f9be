"""Data-set-wide preparation: running a method's pass over the whole training set, storing it.

Some methods need a pass over the training set before (or between stages of) training: L2SM's
density-group thresholds, DKPNet's clustering of stage-I attention outputs into new domain labels.
A method gives `Method.prepare(context) -> Preparation` (the contract, `Preparation` and
`PrepareContext`, is in `crowdjax.methods.base`); the trainer runs it here once per workdir
(`load_or_run`) and stores the result in `<workdir>/preparation/`. A resumed run, and any later
run in the same workdir, reads the stored result and never recomputes it (so it cannot come out
differently). The result records what it was computed for (`computed_for`: the method, the
training data and its labels, the seed, the method's own config group); a run with other values
is refused rather than given another run's result. The result can
  * fill the model state of a fresh run (`Preparation.model_state`: arrays at paths that the
    method's `init_variables` creates, e.g. thresholds; `fill_model_state`),
  * replace the data-set domain id of training batches with a label per image
    (`Preparation.domain_labels`: {data set: {image_id: label}}).
The context this module gives a method (`context`) reads earlier runs from their workdirs
(`WorkdirRuns`), so a method never imports the engine.

It is also a command of its own (it starts from the same variables a training run would: the
workdir's checkpoint, `init_from`, the pretrained backbone, or a fresh init; flags as train.py's,
`crowdjax.cli`):

  python -m crowdjax.preparation --config=configs/<config>.py --workdir=workdirs/<run>
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from crowdjax import checkpointing, cli, evals, sharding, storage, workdir_lock
from crowdjax.data import settings
from crowdjax.embedded_data import build_embedded_data
from crowdjax.methods.base import Preparation, PrepareContext
from crowdjax.metric_writers import log
from crowdjax.run import Setup, TrainState
from crowdjax.workdir import load_config

DIRECTORY = "preparation"


class WorkdirRuns:
    """Earlier runs read from their workdirs (`crowdjax.methods.base.OtherRuns`)."""

    def load_config(self, workdir: str) -> ml_collections.ConfigDict:
        return load_config(workdir)

    def restore(self, config: ml_collections.ConfigDict, workdir: str) -> tuple[Setup, dict, dict]:
        setup = Setup(config)
        variables, info = checkpointing.restore_variables(workdir, setup.abstract_variables())
        return setup, variables, info


def context(setup: Setup, variables: dict | None) -> PrepareContext:
    """The context a method's `prepare` gets in a run: its config, setup, starting variables,
    and earlier runs read from their workdirs."""
    return PrepareContext(setup.config, setup, variables, runs=WorkdirRuns())


def directory(workdir: str) -> str:
    return os.path.join(workdir, DIRECTORY)


def computed_for(config: ml_collections.ConfigDict, method: str) -> dict:
    """What a preparation of `method` (its name) depends on in `config`: the training images
    and their labels (data sets, training split and its held-out part, density settings), the
    seed, and the method's own config group (`config.<name up to its first "_">`, e.g.
    `dkpnet` for "dkpnet_inva"), as JSON values."""
    data = config.data
    group = method.split("_")[0]
    record = {
        "method": method,
        "datasets": settings.dataset_names(data),
        "train_split": data.train_split,
        "holdout": [data.holdout_fraction, data.holdout_seed, data.holdout_mode],
        "density": [data.density_sigma, data.density_truncate],
        "seed": config.seed,
        group: config[group].to_dict() if group in config else None,
    }
    return json.loads(json.dumps(record, default=list))


def save(preparation: Preparation, workdir: str, *, method: str, computed_for: dict) -> None:
    """Writes `<workdir>/preparation/` atomically (a half-written result is never read), with
    what it was `computed_for` (see `computed_for`)."""
    final = directory(workdir)
    # Locally: a temporary directory renamed into place. A cloud bucket has no atomic rename:
    # the old result is removed and result.json, the mark `load` looks for, is written last.
    local = storage.is_local(final)
    target = final + ".tmp" if local else final
    if storage.exists(target):
        storage.rmtree(target)
    storage.makedirs(target)
    flat = traverse_util.flatten_dict(preparation.model_state, sep="/")
    arrays = io.BytesIO()
    np.savez(arrays, **{k: np.asarray(v) for k, v in flat.items()})
    storage.path(os.path.join(target, "model_state.npz")).write_bytes(arrays.getvalue())
    record = {
        "method": method,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "computed_for": computed_for,
        "info": preparation.info,
        "domain_labels": {
            dataset: {str(k): int(v) for k, v in labels.items()}
            for dataset, labels in preparation.domain_labels.items()
        },
    }
    text = json.dumps(record, indent=1, default=float)
    storage.path(os.path.join(target, "result.json")).write_text(text)
    if local:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(target, final)


def _check_computed_for(path: str, stored: dict | None, expected: dict) -> None:
    if stored is None:  # Written before results recorded it: nothing to compare.
        log(f"warning: {path} does not record what it was computed for; using it as it is")
        return
    differing = [
        f"  {key}: {stored.get(key)!r} -> {expected.get(key)!r}"
        for key in sorted(stored.keys() | expected.keys())
        if stored.get(key) != expected.get(key)
    ]
    if differing:
        raise ValueError(
            f"{path}: this preparation was computed for another run (stored -> this run):\n"
            + "\n".join(differing)
            + f"\nRemove {os.path.dirname(path)} to compute it again for this config, or use "
            "another --workdir."
        )


def load(workdir: str, *, expected: dict | None = None) -> Preparation | None:
    """The stored preparation of a workdir, or None.

    Args:
      workdir: the run's directory.
      expected: what the preparation must have been computed for (`computed_for`); None
        reads it whatever it was computed for.

    Raises:
      ValueError: the stored result was computed for other values than `expected` (each
        differing key is listed).
    """
    path = os.path.join(directory(workdir), "result.json")
    if not storage.exists(path):
        return None
    record = json.loads(storage.read_text(path))
    if expected is not None:
        _check_computed_for(path, record.get("computed_for"), expected)
    stored = storage.path(os.path.join(directory(workdir), "model_state.npz")).read_bytes()
    with np.load(io.BytesIO(stored)) as arrays:
        flat = {k: arrays[k] for k in arrays.files}
    return Preparation(
        model_state=traverse_util.unflatten_dict(flat, sep="/") if flat else {},
        domain_labels=record["domain_labels"],
        info=record["info"],
    )


def load_or_run(setup: Setup, workdir: str, variables: dict) -> Preparation | None:
    """The workdir's stored preparation; computed and stored first if there is none yet.

    Every process computes it (a preparation may run the sharded model), process 0 writes it,
    and all read the stored copy back, so every process and every later run uses the same.
    Returns None for methods without a preparation.

    Raises:
      ValueError: the stored result was computed for another config (`load`).
    """
    method = setup.method
    if method.prepare is None:
        return None
    expected = computed_for(setup.config, method.name)
    stored = storage.exists(os.path.join(directory(workdir), "result.json"))
    if sharding.process_0_decides(stored):  # Every process takes the same branch.
        log(f"preparation: reusing {directory(workdir)}")
        return load(workdir, expected=expected)
    log(f"preparation: running {method.name}'s preparation over the training set")
    result = method.prepare(context(setup, variables))
    if jax.process_index() == 0:
        save(result, workdir, method=method.name, computed_for=expected)
    sharding.barrier("crowdjax-preparation")
    log(f"preparation: stored in {directory(workdir)}")
    return load(workdir, expected=expected)


def fill_model_state(setup: Setup, state: TrainState, preparation: Preparation) -> TrainState:
    """`state` with the preparation's arrays at their paths of the model state (checked)."""
    if not preparation.model_state:
        return state
    current = traverse_util.flatten_dict(jax.device_get(state.model_state))
    for path, value in traverse_util.flatten_dict(preparation.model_state).items():
        name = "/".join(path)
        if path not in current:
            raise ValueError(
                f"the preparation sets model state {name!r}, which the model does not have; "
                f"it has {['/'.join(p) for p in current]}"
            )
        if tuple(np.shape(value)) != tuple(np.shape(current[path])):
            raise ValueError(
                f"the preparation's {name!r} has shape {np.shape(value)}, the model state "
                f"{np.shape(current[path])}"
            )
        current[path] = np.asarray(value, current[path].dtype)
    model_state = setup.replicate(traverse_util.unflatten_dict(current))
    return state.replace(model_state=model_state)


def main(argv) -> None:
    """`python -m crowdjax.preparation`: the preparation of a run, without training."""
    del argv
    config, workdir = cli.config_and_workdir()
    sharding.maybe_initialize_distributed(config)
    build_embedded_data(config, evals.parse(config).datasets)
    setup = Setup(config)
    if setup.method.prepare is None:
        log(f"method {config.method!r} has no preparation: nothing to do")
        return
    with workdir_lock.hold(workdir):  # It writes the workdir, as a training run does.
        ckpts = checkpointing.Checkpoints(workdir, keep=config.train.keep_checkpoints)
        state, origin = checkpointing.initial_state(setup, ckpts)
        log(f"preparing from the {origin} variables")
        load_or_run(setup, workdir, state.variables)
        ckpts.close()


if __name__ == "__main__":
    cli.define_config_and_workdir(lock_config=True)
    cli.run(main)
