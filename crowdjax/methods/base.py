"""What a counting method gives the generic trainer: a bundle of pure functions.

A method never subclasses the trainer. It provides:
  make_model(config) -> flax.linen.Module
  init_variables(model, rng, config, *, input_shape) -> {"params": ..., other collections...}
      input_shape: (h, w) of the image the model is initialised on (`crowdjax.run.Setup`
      gives the training crop).
  loss_fn(params, model_state, batch, rng, *, model, config) -> (loss, (metrics, new_model_state))
      loss: scalar mean over the (global) batch; metrics: dict of scalars, every loss term;
      model_state: the non-parameter collections (e.g. batch_stats, learnable centers).
      With `config.data.target` set, `batch` is {"source": batch, "target": {"image",
      "image_mask"}}: the target data set's images, never its labels.
  predict_fn(variables, images, *, model, config, image_mask)
      -> density [B, h, w] at `output_stride(config)`, or a dict of arrays with a leading batch
      axis (with or without "density") for `points_fn`; image_mask [B, H, W] marks real pixels
      of padded evaluation images.
  output_stride(config) -> int
and optionally:
  train_step(state, batch, *, method, model, config, optimizer) -> (state, metrics): its own
      update, e.g. a two-player adversarial step; `optimizer.apply(params, opt_state, grads,
      groups=(...))` updates some parameter groups and leaves the others exactly unchanged
      (`crowdjax.run.default_train_step` is the default);
  param_group(path, config) -> str: the optimizer group of the parameter at `path` (a tuple of
      keys, e.g. ("discriminator", "conv1", "kernel")); `config.optimizers.<group>` then gives
      each group its optimizer (see `crowdjax.optimizers`);
  load_pretrained(variables, path, config) -> variables: ImageNet backbone weights (and, for
      models with BatchNorm, their running statistics in `batch_stats`);
  points_fn(outputs, image_shape, config) -> [N, 2] (x, y): head locations of one image from
      `predict_fn`'s outputs (numpy, batch axis removed) for localization methods; the
      predicted count is then the number of points;
  prepare(context: PrepareContext) -> Preparation: work over the whole training set that
      runs once before training (e.g. density-group thresholds, clustering into new domain
      labels); its result is stored in the workdir and can fill the model state and replace the
      domain ids of training batches (the engine that runs it: `crowdjax.preparation`).

`Preparation` and `PrepareContext`, the preparation's contract, are defined here beside `Method`
so that a method imports nothing of the engine (trainer, evaluation, preparation, run,
checkpointing, workdir): what a preparation may do with the run is what its context offers.

BatchNorm: models with BatchNorm follow `crowdjax.models.batch_norm` (`train` flag, real-pixel
masks, running averages in `model_state["batch_stats"]`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import ml_collections
import numpy as np

from crowdjax import whole_images
from crowdjax.data import decode, settings, sources, splits


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    make_model: Callable[[Any], Any]
    init_variables: Callable[..., Any]
    loss_fn: Callable[..., Any]
    predict_fn: Callable[..., Any]
    output_stride: Callable[[Any], int]
    train_step: Callable[..., Any] | None = None
    param_group: Callable[[tuple, Any], str] | None = None
    load_pretrained: Callable[..., Any] | None = None
    points_fn: Callable[..., Any] | None = None
    prepare: Callable[..., Any] | None = None


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


class OtherRuns(Protocol):
    """Earlier runs a preparation may read (DKPNet's stage II reads its stage-I run); the
    engine gives one (`crowdjax.preparation.WorkdirRuns`)."""

    def load_config(self, workdir: str) -> ml_collections.ConfigDict:
        """The resolved config that the run in `workdir` wrote."""

    def restore(
        self, config: ml_collections.ConfigDict, workdir: str
    ) -> tuple[whole_images.Predictor, dict, dict]:
        """(setup of `config`, variables of the workdir's best checkpoint, its info)."""


@dataclasses.dataclass
class PrepareContext:
    """What a method's `prepare` may use.

    Attributes:
      config: the run's config.
      setup: the run's `crowdjax.run.Setup` (model, mesh, jitted `predict`), or None where the
        preparation predicts nothing.
      variables: the variables the run starts from.
      runs: earlier runs, for a preparation that reads one (None: it reads none).
    """

    config: ml_collections.ConfigDict
    setup: whole_images.Predictor | None
    variables: dict | None
    runs: OtherRuns | None = None

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
        split = split or self.config.data.train_split
        variables = self.variables if variables is None else variables
        yield from whole_images.per_image(self.setup, variables, dataset, split)
