"""Data-set-wide preparation: what a method computes over the whole training set before training.

Some methods need a pass over the training set before (or between stages of) training: L2SM's
density-group thresholds, DKPNet's clustering of stage-I attention outputs into new domain labels.
A method gives `Method.prepare(context) -> Preparation`; the trainer runs it once per workdir and
stores the result in `<workdir>/preparation/`. A resumed run, and any later run in the same
workdir, reads the stored result and never recomputes it (so it cannot come out differently).
The result can
  * fill the model state of a fresh run (`Preparation.model_state`: arrays at paths that the
    method's `init_variables` creates, e.g. thresholds),
  * replace the data-set domain id of training batches with a label per image
    (`Preparation.domain_labels`: {data set: {image_id: label}}).

It is also a command of its own (it starts from the same variables a training run would: the
workdir's checkpoint, `init_from`, the pretrained backbone, or a fresh init):

  python -m crowdjax.preparation --config=configs/<config>.py --workdir=workdirs/<run>
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
from collections.abc import Iterator

import jax
import numpy as np
from flax import traverse_util

from crowdjax import sharding
from crowdjax.data import decode, settings, sources, splits
from crowdjax.metric_writers import log

DIRECTORY = "preparation"


@dataclasses.dataclass
class Preparation:
    """The result of a method's preparation.

    Attributes:
      model_state: nested dict of arrays; each replaces the model-state leaf at the same path
        (same shape) of a fresh run.
      domain_labels: {data set: {image_id: int label}}: the `domain` of every training image.
      info: JSON-serialisable summary for people (e.g. the thresholds, cluster sizes).
    """

    model_state: dict = dataclasses.field(default_factory=dict)
    domain_labels: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PrepareContext:
    """What a method's `prepare` may use.

    Attributes:
      config: the run's config.
      setup: the run's `crowdjax.run.Setup` (model, mesh, jitted `predict`).
      variables: the variables the run starts from.
    """

    config: object
    setup: object
    variables: dict

    def training_splits(self) -> list[splits.SplitView]:
        """The training split of every training data set (held-out validation images excluded)."""
        data = self.config.data
        return [
            splits.resolve(data, name, data.train_split) for name in settings.dataset_names(data)
        ]

    def examples(self, dataset: str, split: str | None = None, *, images: bool = False):
        """Every example of a split once, decoded: {"image_id", "points" [N, 2], "density"
        [H, W] (the builder's map), "image" RGB uint8 [H, W, 3] when `images`}.

        `split` defaults to the training split (without its held-out part)."""
        data = self.config.data
        source = sources.split_source(data, dataset, split or data.train_split)
        for i in range(len(source)):
            record = source[i]
            name = decode.text(record["image_id"])
            example = {
                "image_id": name,
                "points": np.asarray(record["points"], np.float32).reshape(-1, 2),
                "density": decode.decode_tensor(record["density"], np.float32),
            }
            if images:
                example["image"] = decode.decode_rgb(record["image"], apply_exif=False, name=name)
            yield example

    def predictions(self, dataset: str, split: str | None = None, variables=None) -> Iterator:
        """The method's predictions on whole images: yields (image_id, outputs) per image, the
        outputs of `setup.predict` (batch axis removed, numpy), with `variables` (default: the
        run's starting variables). Every process must iterate (the prediction is sharded)."""
        from crowdjax import evaluation

        split = split or self.config.data.train_split
        variables = self.variables if variables is None else variables
        for batch, fetched, i in evaluation.stream_predictions(
            self.setup, variables, dataset, split
        ):
            yield decode.text(batch["image_id"][i]), {k: v[i] for k, v in fetched.items()}


def directory(workdir: str) -> str:
    return os.path.join(workdir, DIRECTORY)


def save(preparation: Preparation, workdir: str, *, method: str) -> None:
    """Writes `<workdir>/preparation/` atomically (a half-written result is never read)."""
    final = directory(workdir)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    flat = traverse_util.flatten_dict(preparation.model_state, sep="/")
    np.savez(os.path.join(tmp, "model_state.npz"), **{k: np.asarray(v) for k, v in flat.items()})
    record = {
        "method": method,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "info": preparation.info,
        "domain_labels": {
            dataset: {str(k): int(v) for k, v in labels.items()}
            for dataset, labels in preparation.domain_labels.items()
        },
    }
    with open(os.path.join(tmp, "result.json"), "w") as f:
        json.dump(record, f, indent=1, default=float)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def load(workdir: str) -> Preparation | None:
    """The stored preparation of a workdir, or None."""
    path = os.path.join(directory(workdir), "result.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        record = json.load(f)
    with np.load(os.path.join(directory(workdir), "model_state.npz")) as arrays:
        flat = {k: arrays[k] for k in arrays.files}
    return Preparation(
        model_state=traverse_util.unflatten_dict(flat, sep="/") if flat else {},
        domain_labels=record["domain_labels"],
        info=record["info"],
    )


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def load_or_run(setup, workdir: str, variables: dict) -> Preparation | None:
    """The workdir's stored preparation; computed and stored first if there is none yet.

    Every process computes it (a preparation may run the sharded model), process 0 writes it,
    and all read the stored copy back, so every process and every later run uses the same.
    Returns None for methods without a preparation.
    """
    method = setup.method
    if method.prepare is None:
        return None
    stored = os.path.exists(os.path.join(directory(workdir), "result.json"))
    if sharding.process_0_decides(stored):  # Every process takes the same branch.
        log(f"preparation: reusing {directory(workdir)}")
        return load(workdir)
    log(f"preparation: running {method.name}'s preparation over the training set")
    result = method.prepare(PrepareContext(setup.config, setup, variables))
    if jax.process_index() == 0:
        save(result, workdir, method=method.name)
    _barrier("crowdjax-preparation")
    log(f"preparation: stored in {directory(workdir)}")
    return load(workdir)


def fill_model_state(setup, state, preparation: Preparation):
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
    del argv
    from absl import flags

    from crowdjax import checkpointing, run, trainer

    config = flags.FLAGS["config"].value
    workdir = flags.FLAGS["workdir"].value or trainer.default_workdir(
        flags.FLAGS["config"].config_filename
    )
    sharding.maybe_initialize_distributed(config)
    trainer.prepare_data(config)
    setup = run.Setup(config)
    if setup.method.prepare is None:
        log(f"method {config.method!r} has no preparation: nothing to do")
        return
    ckpts = checkpointing.Checkpoints(workdir, keep=config.train.keep_checkpoints)
    state, origin = checkpointing.initial_state(setup, ckpts)
    log(f"preparing from the {origin} variables")
    load_or_run(setup, workdir, state.variables)
    ckpts.close()


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory (default: workdirs/<config name>).")
    flags.mark_flags_as_required(["config"])
    app.run(main)
