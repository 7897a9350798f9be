"""Tests of the DCE / CE / focal losses against numpy references, optax and hand values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crowdjax.losses import dce

K = 11


def _inputs(seed=0, b=2, h=5, w=7, k=K, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=(b, h, w, k))).astype(np.float32)
    labels = rng.integers(0, k, size=(b, h, w))
    labels.flat[:k] = np.arange(k)  # every class occurs
    mask = (rng.random((b, h, w)) > 0.3).astype(np.float32)
    return logits, labels, mask


def _np_log_softmax(logits):
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_dce_pixels(logits, labels):
    """Eq. 7 per pixel, with explicit loops over the classes."""
    logp = _np_log_softmax(logits)
    p = np.exp(logp)
    weight = np.zeros(labels.shape)
    for i in range(logits.shape[-1]):
        weight += (np.abs(labels - i) + 1) * p[..., i]
    at_label = np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    return -weight * at_label


def _reduce(per_pixel, mask, reduction):
    m = np.ones(per_pixel.shape) if mask is None else mask
    total = (per_pixel * m).sum((1, 2))
    return total / np.maximum(m.sum((1, 2)), 1) if reduction == "mean" else total


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_dce_matches_numpy(use_mask, reduction):
    logits, labels, mask = _inputs()
    m = mask if use_mask else None
    got = dce.dce_loss(jnp.asarray(logits), jnp.asarray(labels), mask=m, reduction=reduction)
    want = _reduce(_np_dce_pixels(logits, labels), m, reduction)
    assert got.shape == (2,)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_dce_hand_value():
    # K = 3, uniform logits, label 0: Pr_i = 1/3, w = (1 + 2 + 3) / 3 = 2, loss = 2 ln 3.
    logits = jnp.zeros((1, 1, 1, 3))
    labels = jnp.zeros((1, 1, 1), jnp.int32)
    np.testing.assert_allclose(dce.dce_loss(logits, labels), [2 * np.log(3)], rtol=1e-6)
    # Label 1 (middle): w = (2 + 1 + 2) / 3 = 5 / 3.
    np.testing.assert_allclose(dce.dce_loss(logits, labels + 1), [5 / 3 * np.log(3)], rtol=1e-6)


def test_dce_weight_at_least_one_and_equals_ce_for_a_confident_correct_pixel():
    logits, labels, _ = _inputs(1)
    w = dce.dce_weight(jnp.asarray(logits), jnp.asarray(labels))
    assert float(w.min()) >= 1.0
    # A confident prediction on the label gives w -> 1: DCE -> CE. Logits 8 * one-hot keep CE
    # clearly non-zero (log(1 + 10 e^-8) ~ 3.4e-3 per pixel, not float32's exact 0), and the
    # weight w = 1 + sum_i |C - i| p_i exceeds 1 by ~3e-2, which DCE must show.
    sure = 8.0 * jax.nn.one_hot(labels, K)
    ce = np.asarray(dce.cross_entropy_loss(sure, labels), np.float64)
    probs = np.exp(_np_log_softmax(np.asarray(sure)))
    w = ((np.abs(labels[..., None] - np.arange(K)) + 1) * probs).sum(-1)
    per_pixel_ce = -np.log(np.take_along_axis(probs, labels[..., None], -1)[..., 0])
    assert ce.min() > 1e-3 and np.allclose(ce, per_pixel_ce.sum((1, 2)), rtol=1e-4)
    np.testing.assert_allclose(
        dce.dce_loss(sure, labels), (w * per_pixel_ce).sum((1, 2)), rtol=1e-4
    )
    assert np.all(np.asarray(dce.dce_loss(sure, labels)) > 1.005 * ce)


def test_dce_gradient_stop_and_flow():
    logits, labels, mask = _inputs(2, b=1, h=3, w=4)
    # Stop-gradient weight: d/dz [-w log p_C] = w (p - onehot) with w constant.
    g = jax.grad(lambda z: dce.dce_loss(z, labels, mask=mask).sum())(jnp.asarray(logits))
    p = np.exp(_np_log_softmax(logits))
    w = ((np.abs(labels[..., None] - np.arange(K)) + 1) * p).sum(-1)
    want = w[..., None] * (p - np.eye(K)[labels]) * mask[..., None]
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6)
    # Flowing weight: central finite differences in float64.
    f = lambda z: _reduce(_np_dce_pixels(z, labels), mask, "sum").sum()
    g2 = jax.grad(lambda z: dce.dce_loss(z, labels, mask=mask, weight_gradient=True).sum())(
        jnp.asarray(logits)
    )
    z0 = logits.astype(np.float64)
    eps = 1e-6
    fd = np.zeros_like(z0)
    for idx in np.ndindex(z0.shape):
        zp, zm = z0.copy(), z0.copy()
        zp[idx] += eps
        zm[idx] -= eps
        fd[idx] = (f(zp) - f(zm)) / (2 * eps)
    np.testing.assert_allclose(g2, fd, rtol=1e-3, atol=1e-4)
    assert not np.allclose(g, g2)


def test_cross_entropy_matches_optax():
    logits, labels, mask = _inputs(3)
    ref = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), labels)
    np.testing.assert_allclose(
        dce.cross_entropy_loss(jnp.asarray(logits), labels), ref.sum((1, 2)), rtol=1e-5
    )
    np.testing.assert_allclose(
        dce.cross_entropy_loss(jnp.asarray(logits), labels, mask=mask, reduction="mean"),
        (ref * mask).sum((1, 2)) / mask.sum((1, 2)),
        rtol=1e-5,
    )


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.0])
def test_focal_matches_numpy(gamma):
    logits, labels, mask = _inputs(4)
    logp = np.take_along_axis(_np_log_softmax(logits), labels[..., None], -1)[..., 0]
    want = (-((1 - np.exp(logp)) ** gamma) * logp * mask).sum((1, 2))
    got = dce.focal_loss(jnp.asarray(logits), labels, mask=mask, gamma=gamma)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    if gamma == 0.0:
        np.testing.assert_allclose(
            got, dce.cross_entropy_loss(jnp.asarray(logits), labels, mask=mask), rtol=1e-6
        )


@pytest.mark.parametrize("fn", [dce.dce_loss, dce.cross_entropy_loss, dce.focal_loss])
def test_jit_eager_mask_zero_and_bf16(fn):
    logits, labels, mask = _inputs(5)
    eager = fn(jnp.asarray(logits), labels, mask=mask)
    jitted = jax.jit(lambda z, y, m: fn(z, y, mask=m))(logits, labels, mask)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6)
    np.testing.assert_array_equal(fn(jnp.asarray(logits), labels, mask=0 * mask), 0.0)
    np.testing.assert_array_equal(
        fn(jnp.asarray(logits), labels, mask=0 * mask, reduction="mean"), 0.0
    )
    low = fn(jnp.asarray(logits, jnp.bfloat16), labels, mask=mask)
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, eager, rtol=5e-2)


def test_errors():
    logits, labels, mask = _inputs(6)
    with pytest.raises(ValueError, match="B, H, W, K"):
        dce.dce_loss(jnp.asarray(logits[0]), labels)
    with pytest.raises(ValueError, match="labels"):
        dce.dce_loss(jnp.asarray(logits), labels[:, :-1])
    with pytest.raises(ValueError, match="mask"):
        dce.dce_loss(jnp.asarray(logits), labels, mask=mask[0])
    with pytest.raises(ValueError, match="reduction"):
        dce.dce_loss(jnp.asarray(logits), labels, reduction="none")
    with pytest.raises(ValueError, match="gamma"):
        dce.focal_loss(jnp.asarray(logits), labels, gamma=-1.0)


@pytest.mark.parametrize("bad_label", [-1, K, 2 * K])
@pytest.mark.parametrize("name", ["dce_loss", "cross_entropy_loss", "focal_loss"])
def test_out_of_range_labels_give_nan_not_a_wrong_loss(name, bad_label):
    logits, labels, mask = _inputs(4)
    bad = labels.copy()
    bad[0, 0, 0] = bad_label
    fn = getattr(dce, name)
    out = np.asarray(fn(jnp.asarray(logits), bad))
    assert np.isnan(out[0]) and np.all(np.isfinite(out[1:]))  # only the image with the label
    mask = np.ones_like(mask)
    mask[0, 0, 0] = 0  # masked out, the pixel does not count
    masked = np.asarray(fn(jnp.asarray(logits), bad, mask=mask))
    np.testing.assert_allclose(masked, fn(jnp.asarray(logits), labels, mask=mask), rtol=1e-6)
