"""Tests of the density regression loss against numpy, with masks, jit, vmap and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.losses import density_mse_loss


def _inputs(seed=0, b=3, h=6, w=5):
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0, 0.2, (b, h, w)).astype(np.float32)
    target = rng.uniform(0, 0.2, (b, h, w)).astype(np.float32)
    mask = rng.uniform(size=(b, h, w)) > 0.4
    mask[-1] = False  # an image without valid pixels (all padding)
    return pred, target, mask


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_matches_numpy(reduction):
    pred, target, mask = _inputs()
    got = np.asarray(density_mse_loss(pred, target, mask=mask, reduction=reduction))
    err = (pred.astype(np.float64) - target) ** 2
    want = (err * mask).sum(axis=(1, 2))
    if reduction == "mean":
        want = want / np.maximum(mask.sum(axis=(1, 2)), 1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[-1] == 0.0  # all padding: no loss, no NaN
    full = np.asarray(density_mse_loss(pred, target, reduction=reduction))
    np.testing.assert_allclose(full, err.sum((1, 2)) / (1 if reduction == "sum" else 30), rtol=1e-5)


def test_padding_never_leaks_a_non_finite_value():
    pred, target, mask = _inputs()
    pred = np.where(mask, pred, np.inf).astype(np.float32)
    assert np.all(np.isfinite(density_mse_loss(pred, target, mask=mask)))


def test_jit_vmap_and_gradient():
    pred, target, mask = _inputs(1)
    loss = lambda p: density_mse_loss(p, target, mask=mask).sum()
    np.testing.assert_allclose(jax.jit(loss)(pred), loss(pred), rtol=1e-6)
    per_image = jax.vmap(lambda p, t, m: density_mse_loss(p[None], t[None], mask=m[None])[0])
    np.testing.assert_allclose(
        per_image(pred, target, mask), density_mse_loss(pred, target, mask=mask), rtol=1e-6
    )
    grad = np.asarray(jax.grad(loss)(jnp.asarray(pred)))
    np.testing.assert_allclose(grad, 2 * (pred - target) * mask, rtol=1e-5, atol=1e-7)


def test_shape_errors_show_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4, 4\) and \(2, 4, 5\)"):
        density_mse_loss(jnp.zeros((2, 4, 4)), jnp.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="mask must be"):
        density_mse_loss(jnp.zeros((2, 4, 4)), jnp.zeros((2, 4, 4)), mask=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="reduction"):
        density_mse_loss(jnp.zeros((2, 4, 4)), jnp.zeros((2, 4, 4)), reduction="max")
