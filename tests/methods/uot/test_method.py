"""The UOT method's glue: every loss setting of the config reaches `uot_loss`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import uot_common
from crowdjax.losses import UOTOptions, uot_loss
from crowdjax.methods.uot import method as uot
from tests.models import reference

H, W = 48, 64  # a non-square crop: coord_scale 0 means max(H, W)


def _config(**loss):
    config = uot_common.uot_config("shb")
    config.data.crop_size = (H, W)
    config.model.width = 1 / 16
    config.loss.update(loss)
    return config


def _uot(density, batch, *, coord_scale, **options):
    """`uot_loss` called directly, the batch's points, the method's stride and these settings."""
    return uot_loss(
        density,
        batch["points"],
        batch["point_mask"],
        stride=8,
        coord_scale=coord_scale,
        options=UOTOptions(**options),
    )


def _batch(seed=0, b=2, n=12):
    rng = np.random.default_rng(seed)
    points = np.zeros((b, 16, 2), np.float32)
    mask = np.zeros((b, 16), bool)
    points[:, :n] = rng.uniform([0, 0], [W, H], (b, n, 2))
    mask[:, :n] = True
    mask[1, n // 2 :] = False  # a second image with fewer heads (padded points)
    return {
        "image": rng.normal(size=(b, H, W, 3)).astype(np.float32),
        "points": points,
        "point_mask": mask,
        "count": mask.sum(1).astype(np.float32),
    }


@pytest.mark.parametrize(
    "loss, direct",
    [
        (  # the defaults: coordinates divided by the crop's longer side
            {},
            dict(coord_scale=float(W), epsilon=0.01, rho=1.0, cost="l2", penalty="kl"),
        ),
        (
            dict(cost="wfr", penalty="qr", epsilon=0.02, rho=0.5, delta=0.3, coord_scale=50.0),
            dict(coord_scale=50.0, epsilon=0.02, rho=0.5, cost="wfr", penalty="qr", delta=0.3),
        ),
        (
            dict(cost="l1", solver="sinkhorn", max_iters=50),
            dict(coord_scale=float(W), cost="l1", solver="sinkhorn", max_iters=50),
        ),
    ],
)
def test_loss_fn_is_uot_loss_with_the_config_settings(loss, direct):
    config = _config(**loss)
    model = uot.make_model(config)
    variables = reference.random_variables(model, jnp.zeros((1, H, W, 3)))
    batch = _batch()
    value, (metrics, _) = jax.jit(
        lambda p: uot.loss_fn(p, {}, batch, None, model=model, config=config)
    )(variables["params"])
    density = model.apply(variables, batch["image"])
    assert density.shape == (2, H // 8, W // 8)
    want = _uot(density, batch, **direct).mean()
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["uot"], want, rtol=1e-5)
    # Another setting gives another value (so the comparison above can fail).
    other = _uot(density, batch, **{**direct, "rho": 2.0}).mean()
    assert abs(float(other) - float(want)) > 1e-3 * abs(float(want))


def test_l2_kind_is_the_summed_squared_error_of_the_density_map():
    """loss.kind "l2" (the baseline of the UOT comparison): per image, the squared error to the
    ground-truth stride-8 density summed over the cells, averaged over the batch (numpy)."""
    config = _config(kind="l2")
    model = uot.make_model(config)
    variables = reference.random_variables(model, jnp.zeros((1, H, W, 3)))
    batch = _batch()
    target = np.random.default_rng(1).uniform(0, 0.2, (2, H // 8, W // 8)).astype(np.float32)
    batch["density"] = target
    value, (metrics, _) = jax.jit(
        lambda p: uot.loss_fn(p, {}, batch, None, model=model, config=config)
    )(variables["params"])
    density = np.asarray(model.apply(variables, batch["image"]), np.float64)
    want = np.mean(np.sum((density - target) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["l2"], want, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown UOT loss.kind 'mse'"):
        uot.loss_fn(variables["params"], {}, batch, None, model=model, config=_config(kind="mse"))
