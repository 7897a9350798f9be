"""UOT: learning to count via unbalanced optimal transport (Ma et al., AAAI 2021).

The Bayesian-loss VGG19 regressor (output stride 8) trained with the semi-dual entropic UOT loss
between the predicted density and the annotated points (Eq. 6-10; `crowdjax.losses.uot_loss`).
Config fields used: `model.{width, activation, pretrained, dtype}`,
`loss.{epsilon, rho, cost, penalty, delta, solver, max_iters, coord_scale}`.
"""

from __future__ import annotations

import jax.numpy as jnp

from crowdjax.losses.uot import uot_loss
from crowdjax.methods.base import Method
from crowdjax.models import importers
from crowdjax.models.uot_regressor import UOTRegressor

OUTPUT_STRIDE = 8


def make_model(config) -> UOTRegressor:
    pretrained = config.model.get("pretrained")
    convention = importers.input_convention_for_file(pretrained).name if pretrained else "imagenet"
    return UOTRegressor(
        width=config.model.get("width", 1.0),
        activation=config.model.get("activation", "abs"),
        input_convention=convention,
        dtype=jnp.bfloat16 if config.model.get("dtype") == "bfloat16" else jnp.float32,
    )


def init_variables(model, rng, config):
    size = config.data.crop_size
    h, w = (size, size) if isinstance(size, int) else size
    return model.init(rng, jnp.zeros((1, h, w, 3), jnp.float32))


def loss_terms(density, batch, config):
    """Per-image UOT values [B] for a predicted density [B, h, w] and a batch's points."""
    cfg = config.loss
    h, w = batch["image"].shape[1:3]
    coord_scale = cfg.get("coord_scale") or float(max(h, w))  # Crop size, as the reference.
    options = {
        k: cfg[k] for k in ("epsilon", "rho", "cost", "penalty", "solver", "max_iters") if k in cfg
    }
    if cfg.get("delta") is not None:
        options["delta"] = cfg.delta
    return uot_loss(
        density,
        batch["points"],
        batch["point_mask"],
        stride=OUTPUT_STRIDE,
        coord_scale=coord_scale,
        **options,
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


def load_pretrained(params, path, config):
    new_params, _ = importers.load_pretrained(
        params, path, arch="vgg19", input_convention=make_model(config).input_convention
    )
    return new_params


METHOD = Method(
    name="uot",
    make_model=make_model,
    init_variables=init_variables,
    loss_fn=loss_fn,
    predict_fn=predict_fn,
    output_stride=lambda config: OUTPUT_STRIDE,
    load_pretrained=load_pretrained,
)
