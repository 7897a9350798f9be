"""UOT: learning to count via unbalanced optimal transport (Ma et al., AAAI 2021).

The Bayesian-loss VGG19 regressor (output stride 8) trained with the semi-dual entropic UOT loss
between the predicted density and the annotated points (Eq. 6-10; `crowdjax.losses.uot_loss`).
Config fields used: `model.{width, activation, upsample, pretrained, dtype}`,
`loss.{epsilon, rho, cost, penalty, delta, solver, max_iters, coord_scale}`.
"""

from __future__ import annotations

import jax.numpy as jnp

from crowdjax.data import settings
from crowdjax.losses.uot import uot_loss
from crowdjax.methods.base import Method
from crowdjax.methods.uot.model import UOTRegressor
from crowdjax.models import importers, layers

OUTPUT_STRIDE = 8


def make_model(config) -> UOTRegressor:
    return UOTRegressor(
        width=config.model.width,
        activation=config.model.activation,
        upsample=config.model.get("upsample", "bilinear"),
        input_convention=importers.model_input_convention(config.model.pretrained),
        dtype=layers.compute_dtype(config.model.dtype),
    )


def init_variables(model, rng, config):
    h, w = settings.crop_shape(config.data)
    return model.init(rng, jnp.zeros((1, h, w, 3), jnp.float32))


def loss_terms(density, batch, config):
    """Per-image UOT values [B] for a predicted density [B, h, w] and a batch's points.

    Every `config.loss` field of `configs/uot_common.py` reaches `uot_loss`; coordinates are
    divided by `coord_scale`, 0 meaning the crop's longer side (as the reference code).
    """
    cfg = config.loss
    h, w = batch["image"].shape[1:3]
    return uot_loss(
        density,
        batch["points"],
        batch["point_mask"],
        stride=OUTPUT_STRIDE,
        coord_scale=float(cfg.coord_scale) or float(max(h, w)),
        epsilon=cfg.epsilon,
        rho=cfg.rho,
        cost=cfg.cost,
        penalty=cfg.penalty,
        delta=cfg.delta,
        solver=cfg.solver,
        max_iters=cfg.max_iters,
    )


def loss_fn(params, model_state, batch, rng, *, model, config):
    del rng
    density = model.apply({"params": params, **model_state}, batch["image"])
    per_image = loss_terms(density, batch, config)
    count_error = jnp.abs(density.sum(axis=(1, 2)) - batch["count"])
    loss = per_image.mean()
    return loss, ({"uot": loss, "count_mae": count_error.mean()}, model_state)


def predict_fn(variables, images, *, model, config, image_mask=None):
    del config, image_mask  # The evaluator masks the padding of the density.
    return model.apply(variables, images)


load_pretrained = importers.vgg_backbone_loader("vgg19", make_model)


METHOD = Method(
    name="uot",
    make_model=make_model,
    init_variables=init_variables,
    loss_fn=loss_fn,
    predict_fn=predict_fn,
    output_stride=lambda config: OUTPUT_STRIDE,
    load_pretrained=load_pretrained,
)
