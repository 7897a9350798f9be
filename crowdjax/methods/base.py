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
  prepare(context) -> crowdjax.preparation.Preparation: work over the whole training set that
      runs once before training (e.g. density-group thresholds, clustering into new domain
      labels); its result is stored in the workdir and can fill the model state and replace the
      domain ids of training batches (see `crowdjax.preparation`).

BatchNorm: models with BatchNorm follow `crowdjax.models.batch_norm` (`train` flag, real-pixel
masks, running averages in `model_state["batch_stats"]`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


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
