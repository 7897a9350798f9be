"""ASNet's BCE, adversarial losses, scores (Eq. 1-6) and weighted density loss (Eq. 8) against
numpy loops over images, patches and pixels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.losses import adversarial_scores, domain_bce, scored_density_loss
from crowdjax.losses.adversarial import (
    merge_patches,
    output_mask,
    split_patches,
    upsample_nearest,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


# ---------------------------------------------------------------------------------- BCE


def test_domain_bce_is_eq1_per_image():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    # Eq. 1 (standard BCE): -1/Nb (sum log O^s + sum log(1 - O^t)).
    expected = -(np.log(_sigmoid(source)).sum() + np.log(1 - _sigmoid(target)).sum()) / 3
    got = domain_bce(source, source=True).mean() + domain_bce(target, source=False).mean()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for i in range(3):
        np.testing.assert_allclose(
            domain_bce(source, source=True)[i], -np.log(_sigmoid(source[i])).sum(), rtol=1e-5
        )


def test_domain_bce_sums_patches_eq2_and_adversarial_eq3():
    rng = np.random.default_rng(1)
    o2 = rng.normal(size=(2, 4, 4, 3, 3))
    expected = [
        -sum(np.log(_sigmoid(o2[i, a, b])).sum() for a in range(4) for b in range(4))
        for i in range(2)
    ]
    np.testing.assert_allclose(domain_bce(o2, source=True), expected, rtol=1e-5)
    # L_adv (Eq. 3-4): the target maps labelled as source.
    np.testing.assert_allclose(
        domain_bce(o2, source=True).mean(), -np.log(_sigmoid(o2)).sum() / 2, rtol=1e-5
    )


def test_domain_bce_is_stable_and_differentiable():
    logits = jnp.array([[-200.0, 0.0, 200.0]])
    np.testing.assert_allclose(domain_bce(logits, source=True), [200.0 + np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(domain_bce(logits, source=False), [200.0 + np.log(2)], rtol=1e-6)
    grad = jax.grad(lambda x: domain_bce(x, source=True).sum())(logits)
    np.testing.assert_allclose(grad, [[-1.0, -0.5, 0.0]], atol=1e-6)  # d/dx -log s(x) = s(x)-1
    batched = jax.vmap(lambda x: domain_bce(x[None], source=False)[0])(jnp.ones((4, 2, 2)))
    np.testing.assert_allclose(batched, 4 * np.log1p(np.e), rtol=1e-6)


# ---------------------------------------------------------------------------------- patches


def test_patches_split_and_merge():
    maps = jnp.arange(2 * 8 * 12, dtype=jnp.float32).reshape(2, 8, 12)
    p = split_patches(maps, 4)
    assert p.shape == (2, 4, 4, 2, 3)
    np.testing.assert_array_equal(p[1, 2, 3], maps[1, 4:6, 9:12])
    np.testing.assert_array_equal(merge_patches(p), maps)
    with pytest.raises(ValueError, match="divisible by the patch number"):
        split_patches(maps, 5)


def test_upsample_nearest_is_pytorch_nearest():
    x = np.arange(3 * 3, dtype=np.float32).reshape(3, 3)
    up = np.asarray(upsample_nearest(jnp.asarray(x), (7, 5)))
    # torch.nn.functional.interpolate(mode="nearest"): src = floor(dst * in / out).
    expected = np.array([[x[i * 3 // 7, j * 3 // 5] for j in range(5)] for i in range(7)])
    np.testing.assert_array_equal(up, expected)


@pytest.mark.parametrize(
    "shape_in,shape_out", [((2, 3), (82, 7)), ((33, 9), (512, 128)), ((5, 11), (64, 160))]
)
def test_upsample_nearest_equals_torch(shape_in, shape_out):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(2, *shape_in)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x)[:, None], size=shape_out, mode="nearest"
    )
    np.testing.assert_array_equal(
        upsample_nearest(jnp.asarray(x), shape_out), expected[:, 0].numpy()
    )


def _cells_loop(o, real):
    """For one output map o [h, w] on a map with real pixels `real` [H, W]: the nearest-upsampled
    P [H, W], each pixel's cell, and which cells have only real pixels."""
    (h, w), (big_h, big_w) = o.shape, real.shape
    cell = {(y, x): (y * h // big_h, x * w // big_w) for y in range(big_h) for x in range(big_w)}
    valid = np.ones((h, w), bool)
    for (y, x), (i, j) in cell.items():
        valid[i, j] &= bool(real[y, x])
    p = np.array([[o[cell[y, x]] for x in range(big_w)] for y in range(big_h)])
    use = np.array([[valid[cell[y, x]] and real[y, x] for x in range(big_w)] for y in range(big_h)])
    return p, valid, use


def _scores_loop(o1, o2, h, w, s, real=None):
    b = o1.shape[0]
    real = np.ones((b, h, w), bool) if real is None else real
    w1, w2 = np.zeros(b), np.zeros((b, s, s))
    w3, w4 = np.zeros((b, h, w)), np.zeros((b, h, w))
    ph, pw = h // s, w // s
    for i in range(b):
        p, valid, use = _cells_loop(o1[i], real[i])
        w1[i] = float(valid.any() and o1[i][valid].mean() < 0.5)
        w3[i] = use & (p < p[use].mean()) if use.any() else 0
        for a in range(s):
            for c in range(s):
                rows, cols = slice(a * ph, (a + 1) * ph), slice(c * pw, (c + 1) * pw)
                o = o2[i, a, c]
                q, valid, use = _cells_loop(o, real[i, rows, cols])
                w2[i, a, c] = float(valid.any() and o[valid].mean() < 0.5)
                w4[i, rows, cols] = use & (q < q[use].mean()) if use.any() else 0
    return w1, w2, w3, w4


@pytest.mark.parametrize(
    "shape,o1_shape,o2_shape", [((16, 24), (3, 3), (2, 2)), ((32, 32), (3, 4), (3, 2))]
)
def test_scores_match_loops(shape, o1_shape, o2_shape):
    rng = np.random.default_rng(2)
    b, s = 3, 4
    o1 = rng.uniform(size=(b, *o1_shape)).astype(np.float32)
    o2 = rng.uniform(size=(b, s, s, *o2_shape)).astype(np.float32)
    o1[0] *= 0.3  # a source image that looks like the target: W1 = 1
    o1[1] = 0.5 + 0.5 * o1[1]  # one that does not
    got = adversarial_scores(o1, o2, map_shape=shape, patches=s)
    expected = _scores_loop(o1, o2, *shape, s)
    for g, e, name in zip(got, expected, ("w1", "w2", "w3", "w4"), strict=True):
        np.testing.assert_array_equal(np.asarray(g), e, err_msg=name)
    assert got[0][0] == 1 and got[0][1] == 0


def test_scores_of_padded_maps_leave_the_padding_out():
    rng = np.random.default_rng(7)
    b, s, shape = 3, 4, (32, 48)
    o1 = rng.uniform(size=(b, 3, 4)).astype(np.float32)
    o2 = rng.uniform(size=(b, s, s, 2, 3)).astype(np.float32)
    real = np.ones((b, *shape), bool)
    real[0, 25:] = False  # padded at the bottom: D1's last row of outputs, D2's last patch row
    real[1, :, 40:] = False
    real[2, 9:, 13:] = False  # most of the map: several patches entirely padding
    real[1, 0, 0] = False  # one pixel: its cells of D1 and D2 are left out too
    got = adversarial_scores(o1, o2, map_shape=shape, patches=s, map_mask=real)
    expected = _scores_loop(o1, o2, *shape, s, real)
    for g, e, name in zip(got, expected, ("w1", "w2", "w3", "w4"), strict=True):
        np.testing.assert_array_equal(np.asarray(g), e, err_msg=name)
    assert np.all(np.asarray(got[2])[~real] == 0) and np.all(np.asarray(got[3])[~real] == 0)
    assert np.asarray(got[1])[2, 3, 3] == 0  # an all-padding patch scores nothing
    # The outputs over padding take no part in the BCE either.
    mask1 = output_mask(real, o1.shape[1:])
    _, valid, _ = _cells_loop(o1[0], real[0])
    np.testing.assert_array_equal(mask1[0], valid)
    assert np.asarray(mask1)[1, 0, 0] == 0 and np.asarray(mask1)[1, 1, 1] == 1
    logits = np.log(o1 / (1 - o1))
    expected_bce = [-np.log(o1[i][np.asarray(mask1[i]) > 0]).sum() for i in range(b)]
    np.testing.assert_allclose(domain_bce(logits, source=True, mask=mask1), expected_bce, rtol=1e-5)
    # All real: the same as without a mask.
    unmasked = adversarial_scores(o1, o2, map_shape=shape, patches=s)
    ones = adversarial_scores(o1, o2, map_shape=shape, patches=s, map_mask=np.ones((b, *shape)))
    for u, o in zip(unmasked, ones, strict=True):
        np.testing.assert_array_equal(u, o)


def test_scores_of_constant_outputs_select_nothing_at_pixel_level():
    o1 = jnp.full((2, 3, 3), 0.7)
    o2 = jnp.full((2, 4, 4, 2, 2), 0.2)
    w1, w2, w3, w4 = adversarial_scores(o1, o2, map_shape=(16, 16))
    np.testing.assert_array_equal(w1, 0)
    np.testing.assert_array_equal(w2, 1)
    np.testing.assert_array_equal(w3, 0)  # strict "<" of the mean
    np.testing.assert_array_equal(w4, 0)


def test_scores_jit_vmap_and_shapes():
    rng = np.random.default_rng(3)
    o1 = jnp.asarray(rng.uniform(size=(5, 2, 3, 3)), jnp.float32)
    o2 = jnp.asarray(rng.uniform(size=(5, 2, 4, 4, 2, 2)), jnp.float32)
    f = jax.jit(jax.vmap(lambda a, b: adversarial_scores(a, b, map_shape=(16, 32))))
    w1, w2, w3, w4 = f(o1, o2)
    assert (
        w1.shape == (5, 2) and w2.shape == (5, 2, 4, 4) and w3.shape == w4.shape == (5, 2, 16, 32)
    )
    direct = adversarial_scores(o1[4], o2[4], map_shape=(16, 32))
    np.testing.assert_array_equal(w4[4], direct[3])
    with pytest.raises(ValueError, match="o2 must be"):
        adversarial_scores(o1[0], o2[0, :, :2], map_shape=(16, 32))


# ---------------------------------------------------------------------------------- Eq. 8


def _eq8_loop(pred, gt, w1, w2, w3, w4, s, residual=True):
    f = (lambda x: 1 + x) if residual else (lambda x: x)
    b, h, w = pred.shape
    ph, pw = h // s, w // s
    out = np.zeros(b)
    for i in range(b):
        total = 0.0
        for a in range(s):
            for c in range(s):
                inner = 0.0
                for y in range(a * ph, (a + 1) * ph):
                    for x in range(c * pw, (c + 1) * pw):
                        inner += (
                            f(w3[i, y, x]) * f(w4[i, y, x]) * (pred[i, y, x] - gt[i, y, x]) ** 2
                        )
                total += f(w2[i, a, c]) * inner
        out[i] = f(w1[i]) * total
    return out


@pytest.mark.parametrize("residual", [True, False])
def test_scored_density_loss_matches_eq8_loop(residual):
    rng = np.random.default_rng(4)
    b, h, w, s = 2, 8, 12, 4
    pred, gt = rng.normal(size=(b, h, w)), rng.uniform(size=(b, h, w))
    w1 = rng.integers(0, 2, b).astype(np.float32)
    w2 = rng.integers(0, 2, (b, s, s)).astype(np.float32)
    w3 = rng.integers(0, 2, (b, h, w)).astype(np.float32)
    w4 = rng.integers(0, 2, (b, h, w)).astype(np.float32)
    got = scored_density_loss(pred, gt, w1, w2, w3, w4, patches=s, residual=residual)
    np.testing.assert_allclose(got, _eq8_loop(pred, gt, w1, w2, w3, w4, s, residual), rtol=1e-5)


def test_scored_density_loss_off_levels_and_plain_mse():
    rng = np.random.default_rng(5)
    pred, gt = rng.normal(size=(3, 8, 8)), rng.normal(size=(3, 8, 8))
    plain = ((pred - gt) ** 2).sum(axis=(1, 2))
    np.testing.assert_allclose(
        scored_density_loss(pred, gt, None, None, None, None), plain, rtol=1e-5
    )
    w1 = np.array([1.0, 0.0, 1.0])
    np.testing.assert_allclose(
        scored_density_loss(pred, gt, w1, None, None, None), (1 + w1) * plain, rtol=1e-5
    )
    zeros = np.zeros((3, 4, 4))
    np.testing.assert_allclose(
        scored_density_loss(pred, gt, None, zeros, None, None), plain, rtol=1e-5
    )
    with pytest.raises(ValueError, match="w3 must have shape"):
        scored_density_loss(pred, gt, None, None, np.zeros((3, 4, 4)), None)


def test_scored_density_loss_gradient_finite_differences():
    rng = np.random.default_rng(6)
    pred = rng.normal(size=(2, 8, 8))
    gt = rng.normal(size=(2, 8, 8))
    ws = [
        rng.integers(0, 2, shape).astype(np.float32)
        for shape in ((2,), (2, 4, 4), (2, 8, 8), (2, 8, 8))
    ]
    f = lambda p: scored_density_loss(p, jnp.asarray(gt), *ws).sum()
    grad = np.asarray(jax.jit(jax.grad(f))(jnp.asarray(pred, jnp.float32)))
    weight = (
        (1 + ws[0])[:, None, None]
        * np.kron(1 + ws[1], np.ones((1, 2, 2)))
        * (1 + ws[2])
        * (1 + ws[3])
    )
    np.testing.assert_allclose(grad, 2 * weight * (pred - gt), rtol=1e-4, atol=1e-5)
    eps, idx = 1e-3, (1, 5, 2)
    bump = np.zeros_like(pred)
    bump[idx] = eps
    p64 = lambda p: _eq8_loop(p, gt, *ws, 4).sum()
    fd = (p64(pred + bump) - p64(pred - bump)) / (2 * eps)
    np.testing.assert_allclose(grad[idx], fd, rtol=1e-3)
    # The scores get no gradient.
    gw = jax.grad(lambda w: scored_density_loss(pred, gt, w, None, None, None).sum())(ws[0])
    np.testing.assert_array_equal(gw, 0)
