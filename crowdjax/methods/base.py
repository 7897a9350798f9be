"""What a counting method gives the generic trainer: a bundle of pure functions.

A method never subclasses the trainer. It provides:
  make_model(config) -> flax.linen.Module
  init_variables(model, rng, config) -> {"params": ..., other collections...}
  loss_fn(params, model_state, batch, rng, *, model, config) -> (loss, (metrics, new_model_state))
      loss: scalar mean over the (global) batch; metrics: dict of scalars, every loss term;
      model_state: the non-parameter collections (e.g. batch_stats, learnable centers).
  predict_fn(variables, images, *, model, config, image_mask=None)
      -> density [B, h, w] at `output_stride(config)`, or a dict of arrays with a leading batch
      axis (with or without "density") for `points_fn`; image_mask [B, H, W] marks real pixels
      of padded evaluation images.
  output_stride(config) -> int
and optionally:
  train_step: its own update (e.g. a two-player adversarial step) with the signature of
      `crowdjax.trainer.default_train_step`;
  load_pretrained(params, path, config) -> params: ImageNet backbone weights;
  points_fn(outputs, image_shape, config) -> [N, 2] (x, y): head locations of one image from
      `predict_fn`'s outputs (numpy, batch axis removed) for localization methods; the
      predicted count is then the number of points.
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
    load_pretrained: Callable[..., Any] | None = None
    points_fn: Callable[..., Any] | None = None
