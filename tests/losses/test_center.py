"""Tests of the closeness center loss (AutoScale Eq. 1-4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.data import labels
from crowdjax.losses import center


def _regions(seed=0, m=6):
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.5, 3.0, m).astype(np.float32)
    s_i = rng.uniform(2.0, 30.0, m).astype(np.float32)
    mask = np.ones(m, np.float32)
    mask[[1, 4]] = 0.0
    return r, s_i, mask


def test_value_hand_and_numpy():
    # One region: S_1 = 4, r = 2, S = 10: 1/2 (4 * 4 - 10)^2 = 18.
    np.testing.assert_allclose(center.center_loss(jnp.array([2.0]), jnp.array([4.0]), 10.0), 18.0)
    r, s_i, mask = _regions()
    s = 12.5
    want = 0.5 * np.sum(mask * (s_i * r.astype(np.float64) ** 2 - s) ** 2)
    np.testing.assert_allclose(center.center_loss(r, s_i, s, mask=mask), want, rtol=1e-5)
    np.testing.assert_allclose(center.center_loss(r, s_i, s, mask=np.zeros_like(mask)), 0.0)


def test_gradient_eq3_and_finite_differences():
    r, s_i, mask = _regions(1)
    s = 9.0
    g_r, g_s = jax.grad(lambda r_, s_: center.center_loss(r_, s_i, s_, mask=mask), (0, 1))(
        jnp.asarray(r), jnp.asarray(s)
    )
    r64, si64 = r.astype(np.float64), s_i.astype(np.float64)
    eq3 = 2 * si64 * (si64 * r64**3 - s * r64)  # Eq. 3 = 2 S_i r_i (S_i r_i^2 - S)
    np.testing.assert_allclose(g_r, mask * eq3, rtol=1e-5)
    np.testing.assert_allclose(g_s, -np.sum(mask * (si64 * r64**2 - s)), rtol=1e-5)

    def f(rr):
        return 0.5 * np.sum(mask * (si64 * rr**2 - s) ** 2)

    eps = 1e-6
    fd = np.array([(f(r64 + eps * e) - f(r64 - eps * e)) / (2 * eps) for e in np.eye(len(r))])
    np.testing.assert_allclose(g_r, fd, rtol=1e-4, atol=1e-4)


def test_update_center_eq4():
    r, s_i, mask = _regions(2)
    s, alpha = 7.0, 0.1
    valid = mask > 0
    delta = np.sum(s - s_i[valid] * r[valid].astype(np.float64) ** 2) / (1 + valid.sum())
    got = center.update_center(s, r, s_i, alpha=alpha, mask=mask)
    np.testing.assert_allclose(got, s - alpha * delta, rtol=1e-6)
    # No valid region: unchanged; no gradient flows through the update.
    np.testing.assert_allclose(center.update_center(s, r, s_i, mask=0 * mask), s)
    g = jax.grad(lambda c: center.update_center(c, r, s_i))(jnp.float32(s))
    assert float(g) == 0.0
    # Fixed point of repeated updates: S = mean_i S_i r_i^2 over the valid regions.
    c = jnp.float32(0.0)
    for _ in range(300):
        c = center.update_center(c, r, s_i, alpha=0.5, mask=mask)
    np.testing.assert_allclose(c, np.mean(s_i[valid] * r[valid] ** 2), rtol=1e-4)


def test_center_loss_jit_and_errors():
    r, s_i, mask = _regions(3)
    eager = center.center_loss(r, s_i, 5.0, mask=mask)
    np.testing.assert_allclose(jax.jit(center.center_loss)(r, s_i, 5.0, mask=mask), eager)
    with pytest.raises(ValueError, match="shape"):
        center.center_loss(r, s_i[:-1], 5.0)
    with pytest.raises(ValueError, match="scalar"):
        center.center_loss(r, s_i, jnp.ones(2))
    with pytest.raises(ValueError, match="mask"):
        center.update_center(5.0, r, s_i, mask=mask[:-1])


def test_closeness_matches_labels():
    rng = np.random.default_rng(4)
    sets = [
        np.zeros((0, 2)),
        np.array([[3.0, 4.0]]),
        np.array([[0.0, 0.0], [3.0, 4.0]]),  # 5 px apart
        np.array([[1.0, 1.0], [1.0, 1.0], [9.0, 1.0]]),  # duplicate head: distance 0
        rng.uniform(0, 100, (40, 2)),
        rng.uniform(0, 10, (17, 2)),
    ]
    p = 48
    pts = np.full((len(sets), p, 2), 1e3, np.float32)  # padding far away: must be ignored
    mask = np.zeros((len(sets), p), bool)
    for b, s in enumerate(sets):
        idx = rng.permutation(p)[: len(s)]  # padded and shuffled slots
        pts[b, idx] = s
        mask[b, idx] = True
    got = jax.jit(center.closeness)(pts, mask)
    want = [labels.closeness(s) for s in sets]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[2], 5.0, rtol=1e-6)
    with pytest.raises(ValueError, match="point_mask"):
        center.closeness(pts, mask[:, :-1])
