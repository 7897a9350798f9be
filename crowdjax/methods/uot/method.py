"""UOT: learning to count via unbalanced optimal transport (Ma et al., AAAI 2021).

The Bayesian-loss VGG19 regressor (output stride 8) trained with the semi-dual entropic UOT loss
between the predicted density and the annotated points (Eq. 6-10; `crowdjax.losses.uot_loss`),
or, as the baseline of the comparison (`loss.kind = "l2"`), the same network trained with the
pixel-wise squared error to the ground-truth density map (summed over the stride-8 cells).
Config fields used: `model.{width, activation, upsample, pretrained, vgg16_to_vgg19, dtype}`,
`loss.{kind, epsilon, rho, cost, penalty, delta, solver, max_iters, coord_scale}`.
"""

from __future__ import annotations

import jax.numpy as jnp

from crowdjax.losses.density import density_mse_loss
from crowdjax.losses.uot import UOTOptions, uot_loss
from crowdjax.methods.base import Method
from crowdjax.methods.uot.model import UOTRegressor
from crowdjax.models import importers, layers

OUTPUT_STRIDE = 8
LOSS_KINDS = ("uot", "l2")


def make_model(config) -> UOTRegressor:
    return UOTRegressor(
        width=config.model.width,
        activation=config.model.activation,
        upsample=config.model.upsample,
        input_convention=importers.model_input_convention(config.model.pretrained),
        dtype=layers.compute_dtype(config.model.dtype),
        remat=bool(config.model.remat),
    )


def init_variables(model, rng, config, *, input_shape):
    h, w = input_shape
    return model.init(rng, jnp.zeros((1, h, w, 3), jnp.float32))


def loss_options(config) -> UOTOptions:
    """The UOT settings of `config.loss` (validated here: a bad value fails at the first step)."""
    cfg = config.loss
    return UOTOptions(
        epsilon=cfg.epsilon,
        rho=cfg.rho,
        cost=cfg.cost,
        penalty=cfg.penalty,
        delta=cfg.delta,
        solver=cfg.solver,
        max_iters=cfg.max_iters,
    )


def loss_terms(density, batch, config):
    """Per-image UOT values [B] for a predicted density [B, h, w] and a batch's points.

    Every `config.loss` field of `configs/uot_common.py` reaches `uot_loss`; coordinates are
    divided by `coord_scale`, 0 meaning the crop's longer side (as the reference code).
    """
    h, w = batch["image"].shape[1:3]
    return uot_loss(
        density,
        batch["points"],
        batch["point_mask"],
        stride=OUTPUT_STRIDE,
        coord_scale=float(config.loss.coord_scale) or float(max(h, w)),
        options=loss_options(config),
    )


def loss_fn(params, model_state, batch, rng, *, model, config):
    del rng
    kind = config.loss.kind
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown UOT loss.kind {kind!r}; valid: {LOSS_KINDS}")
    density = model.apply({"params": params, **model_state}, batch["image"])
    if kind == "uot":
        per_image = loss_terms(density, batch, config)
    else:  # The baseline: the density map's squared error (people per stride-8 cell).
        per_image = density_mse_loss(density, batch["density"], reduction="sum")
    count_error = jnp.abs(density.sum(axis=(1, 2)) - batch["count"])
    loss = per_image.mean()
    return loss, ({kind: loss, "count_mae": count_error.mean()}, model_state)


def predict_fn(variables, images, *, model, config, image_mask=None):
    del config, image_mask  # The evaluator masks the padding of the density.
    return model.apply(variables, images)


# A VGG16 file (e.g. HED) starts the VGG19 with identity fourth convs when the config asks.
load_pretrained = importers.vgg_backbone_loader(
    "vgg19", make_model, from_vgg16=lambda config: config.model.vgg16_to_vgg19
)


METHOD = Method(
    name="uot",
    make_model=make_model,
    init_variables=init_variables,
    loss_fn=loss_fn,
    predict_fn=predict_fn,
    output_stride=lambda config: OUTPUT_STRIDE,
    load_pretrained=load_pretrained,
)
