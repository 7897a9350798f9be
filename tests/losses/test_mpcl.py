"""Multipolar center loss and center update (L2SM Eq. 1-2) against explicit numpy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.losses import multipolar_center_loss, update_multipolar_centers


def _inputs(seed=0, b=3, r=16, c=3):
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.0, 2.0, (b, r)).astype(np.float32)
    scale = rng.uniform(0.5, 3.0, (b, r)).astype(np.float32)
    group = rng.integers(-1, c, (b, r)).astype(np.int32)
    centers = np.sort(rng.uniform(0.1, 1.0, c)).astype(np.float32)
    return density, scale, group, centers


def _loss_loop(density, scale, group, centers):
    out = np.zeros(density.shape[0])
    for b in range(density.shape[0]):
        for i in range(density.shape[1]):
            g = group[b, i]
            if g >= 0:
                out[b] += (float(density[b, i]) / float(scale[b, i]) ** 2 - centers[g]) ** 2
    return out


def _update_loop(centers, density, scale, group, alpha):
    new = np.array(centers, np.float64)
    for c in range(len(centers)):
        members = [
            (float(density[b, i]), float(scale[b, i]))
            for b in range(density.shape[0])
            for i in range(density.shape[1])
            if group[b, i] == c
        ]
        delta = sum(centers[c] - d / s**2 for d, s in members) / (1 + len(members))
        new[c] = centers[c] - alpha * delta
    return new


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_and_update_match_loops(seed):
    density, scale, group, centers = _inputs(seed)
    np.testing.assert_allclose(
        multipolar_center_loss(density, scale, group, centers),
        _loss_loop(density, scale, group, centers),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        update_multipolar_centers(centers, density, scale, group, 0.1),
        _update_loop(centers, density, scale, group, 0.1),
        rtol=1e-5,
    )


def test_hand_value():
    # One region of center 1: D = 2, r = 2 -> d = 0.5; d_1 = 0.3: (0.2)^2 = 0.04.
    loss = multipolar_center_loss([[2.0, 5.0]], [[2.0, 1.0]], [[1, -1]], [0.1, 0.3])
    np.testing.assert_allclose(loss, [0.04], rtol=1e-5)
    # Eq. 1: delta_1 = (0.3 - 0.5) / 2 = -0.1; alpha = 0.5 -> 0.35; center 0 unchanged.
    new = update_multipolar_centers([0.1, 0.3], [[2.0, 5.0]], [[2.0, 1.0]], [[1, -1]], 0.5)
    np.testing.assert_allclose(new, [0.1, 0.35], rtol=1e-6)


def test_no_region_selected_and_empty_groups():
    density, scale, _, centers = _inputs(3)
    none = -np.ones(density.shape, np.int32)
    np.testing.assert_array_equal(multipolar_center_loss(density, scale, none, centers), 0.0)
    np.testing.assert_array_equal(
        update_multipolar_centers(centers, density, scale, none, 0.5), centers
    )
    # Only center 2 has regions: centers 0 and 1 stay exactly where they are.
    only2 = np.where(np.arange(density.shape[1]) % 2 == 0, 2, -1)[None].repeat(3, 0)
    new = np.asarray(update_multipolar_centers(centers, density, scale, only2, 0.5))
    np.testing.assert_array_equal(new[:2], centers[:2])
    assert new[2] != centers[2]
    # A not-selected region with scale 0 does not poison the values or the gradient.
    scale0 = scale.copy()
    scale0[only2 < 0] = 0.0
    g = jax.grad(lambda s: multipolar_center_loss(density, s, only2, centers).sum())(scale0)
    assert np.isfinite(np.asarray(g)).all()
    np.testing.assert_array_equal(np.asarray(g)[only2 < 0], 0.0)


def test_gradient_matches_finite_differences():
    density, scale, group, centers = _inputs(4, b=2, r=6)
    d64, s64, c64 = (x.astype(np.float64) for x in (density, scale, centers))
    g = jax.grad(lambda s: multipolar_center_loss(density, s, group, centers).sum())(scale)
    eps = 1e-6
    fd = np.zeros_like(s64)
    for idx in np.ndindex(s64.shape):
        e = np.zeros_like(s64)
        e[idx] = eps
        fd[idx] = (
            _loss_loop(d64, s64 + e, group, c64).sum() - _loss_loop(d64, s64 - e, group, c64).sum()
        ) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-5)
    # Analytic: dL/dr_i = -4 D_i / r_i^3 (D_i / r_i^2 - d_c).
    sel = group >= 0
    analytic = np.where(sel, -4 * d64 / s64**3 * (d64 / s64**2 - c64[np.maximum(group, 0)]), 0.0)
    np.testing.assert_allclose(g, analytic, rtol=1e-4, atol=1e-6)


def test_jit_vmap_and_update_has_no_gradient():
    density, scale, group, centers = _inputs(5)
    loss = jax.jit(multipolar_center_loss)(density, scale, group, centers)
    per_image = jax.vmap(
        lambda d, s, g: multipolar_center_loss(d[None], s[None], g[None], centers)
    )(density, scale, group)
    np.testing.assert_allclose(per_image[:, 0], loss, rtol=1e-6)
    new = jax.jit(update_multipolar_centers)(centers, density, scale, group, 0.2)
    np.testing.assert_allclose(new, _update_loop(centers, density, scale, group, 0.2), rtol=1e-5)
    grad = jax.grad(lambda s: update_multipolar_centers(centers, density, s, group, 0.2).sum())(
        jnp.asarray(scale)
    )
    np.testing.assert_array_equal(grad, 0.0)


def test_bad_shapes_are_named():
    density, scale, group, centers = _inputs(6)
    with pytest.raises(ValueError, match="scale must have the shape"):
        multipolar_center_loss(density, scale[:, :3], group, centers)
    with pytest.raises(ValueError, match="integer"):
        multipolar_center_loss(density, scale, group.astype(np.float32), centers)
    with pytest.raises(ValueError, match="centers must be"):
        update_multipolar_centers(centers[None], density, scale, group, 0.1)
