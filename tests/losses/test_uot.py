"""uot_loss against the independent float64 reference (tests/losses/uot_reference.py).

Most tests share one shape (B = 4, 9 x 11 density, 12 point slots) and options, and pass the
scale, tol and delta as traced arguments, so that few configurations are compiled.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.losses.uot import UOTOptions, uot_loss, uot_semi_dual, uot_solve
from tests.losses import uot_reference as ref

H, W, STRIDE, SLOTS = 9, 11, 8, 12
SCALE = 96.0  # A 96-pixel "crop": eps = 0.01 is about one input pixel.


def random_batch(seed=0, batch=4, mean=0.15):
    """Density [B, H, W]; points [B, P, 2]: padding (garbage coordinates), border points, and for
    B > 2 an image with one point and one with no point."""
    rng = np.random.default_rng(seed)
    density = rng.gamma(1.0, mean, (batch, H, W)).astype(np.float32)
    points = rng.uniform(0, [W * STRIDE, H * STRIDE], (batch, SLOTS, 2)).astype(np.float32)
    points[0, :4] = [[0, 0], [W * STRIDE, H * STRIDE], [0, H * STRIDE], [W * STRIDE, 30]]
    mask = rng.uniform(size=(batch, SLOTS)) < 0.7
    mask[0, :4] = True
    if batch > 2:
        mask[1] = False
        mask[1, 5] = True  # one point
        mask[2] = False  # no point
    points[~mask] = rng.uniform(-1e3, 1e3, (int((~mask).sum()), 2))
    return density, points, mask


@jax.jit
def _loss_and_grad(density, points, mask, scale, options):
    def total(d):
        per_image = uot_loss(d, points, mask, coord_scale=scale, stride=STRIDE, options=options)
        return per_image.sum(), per_image

    (_, per_image), grad = jax.value_and_grad(total, has_aux=True)(density)
    return per_image, grad


def loss_and_grad(density, points, mask, scale=SCALE, *, tol=1e-6, delta=0.3, max_iters=300, **kw):
    """Per-image losses [B] and d(sum)/d(density); one signature, so the jit cache is reused:
    scale, tol and delta are traced (UOTOptions leaves), the other options select the program."""
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    options = UOTOptions(tol=f32(tol), delta=f32(delta), max_iters=max_iters, **kw)
    return _loss_and_grad(f32(density), f32(points), jnp.asarray(mask, bool), f32(scale), options)


def reference(density, points, mask, scale=SCALE, **kw):
    out = [ref.loss_and_grad(density[b], points[b], mask[b], scale, **kw) for b in range(len(mask))]
    return np.array([o[0] for o in out]), np.stack([o[1] for o in out])


@pytest.mark.parametrize("cost", ["l2", "l1", "wfr"])
@pytest.mark.parametrize("penalty", ["kl", "qr"])
def test_matches_float64_reference(cost, penalty):
    density, points, mask = random_batch(seed=len(cost) * 10 + len(penalty))
    want, want_grad = reference(density, points, mask, kind=cost, penalty=penalty, delta=0.3)
    got, got_grad = loss_and_grad(density, points, mask, cost=cost, penalty=penalty)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-3, atol=1e-3)


def test_small_epsilon_float32_stable():
    density, points, mask = random_batch(seed=3)
    want, want_grad = reference(density, points, mask, eps=1e-3)
    got, got_grad = loss_and_grad(density, points, mask, tol=1e-5, epsilon=1e-3)
    assert np.isfinite(got).all() and np.isfinite(got_grad).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-2, atol=1e-2)


def test_solution_converged_and_gradient_is_exact():
    density, points, mask = random_batch(seed=5)
    sol = uot_solve(
        density, points, mask, coord_scale=SCALE, options=UOTOptions(max_iters=300, tol=1e-6)
    )
    assert bool(sol.converged.all()), np.abs(sol.grad).max(-1)
    for b in np.flatnonzero(mask.any(1)):
        u, c = ref.problem(density[b], points[b], mask[b], SCALE)
        beta = np.asarray(sol.beta[b], float)[mask[b]]
        _, d_beta, _ = ref.semi_dual(beta, u, c, 0.01, 1.0, "kl")
        assert np.abs(d_beta).max() <= 1e-5
        np.testing.assert_allclose(np.asarray(sol.grad[b])[mask[b]], d_beta, atol=2e-6)
        assert np.all(np.asarray(sol.beta[b])[~mask[b]] == 0)


def test_envelope_gradient_matches_finite_differences():
    """dW/du_i = -phi*(-alpha_i(beta*)) for W(u) = max_beta G (reference, central differences)."""
    density, points, mask = random_batch(seed=7)
    _, got_grad = loss_and_grad(density, points, mask)
    u, c = ref.problem(density[0], points[0], mask[0], SCALE)
    for i in np.random.default_rng(0).choice(u.size, 4, replace=False):
        step = np.zeros_like(u)
        step[i] = 1e-4
        w = [
            ref.semi_dual(ref.solve(v, c, 0.01, 1.0, "kl"), v, c, 0.01, 1.0, "kl")[0]
            for v in (u + step, u - step)
        ]
        np.testing.assert_allclose(got_grad[0].reshape(-1)[i], (w[0] - w[1]) / 2e-4, atol=2e-3)


@pytest.mark.parametrize(("penalty", "rho"), [("kl", 1.0), ("qr", 0.5)])
def test_no_points_gives_exact_limit(penalty, rho):
    density, points, mask = random_batch(seed=1)
    got, grad = loss_and_grad(density, points, np.zeros_like(mask), rho=rho, penalty=penalty)
    # All mass destroyed: rho * phi(0) * u_i with phi(0) = 1 (KL and QR); dG/du_i = rho.
    np.testing.assert_allclose(got, rho * density.sum((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(grad, rho, rtol=1e-6)
    no_slot = np.zeros((len(mask), 0, 2), np.float32)
    got = uot_loss(
        density,
        no_slot,
        np.zeros((len(mask), 0)),
        coord_scale=SCALE,
        options=UOTOptions(penalty=penalty, rho=rho),
    )
    np.testing.assert_allclose(got, rho * density.sum((1, 2)), rtol=1e-6)


@pytest.mark.parametrize("penalty", ["kl", "qr"])
def test_zero_density_is_finite_and_near_limit(penalty):
    density, points, mask = random_batch(seed=2)
    density[:] = 0.0
    got, grad = loss_and_grad(density, points, mask, tol=1e-4, penalty=penalty)
    assert np.isfinite(got).all() and np.isfinite(grad).all()
    # Supremum rho * M (all point mass created), reached up to the stopping tolerance.
    np.testing.assert_allclose(got, mask.sum(1), rtol=1e-3)


@pytest.mark.parametrize("solver", ["lbfgs", "sinkhorn"])
def test_no_nan_on_degenerate_inputs(solver):
    density, points, mask = random_batch(seed=4)
    density[0] = 0.0
    density[1] = 1e4  # huge mass
    density[2] = 0.0
    density[2, 3, 4] = 1.0  # a single pixel
    points[3, :3] = [[-300, 40], [5000, 5000], [50, -20]]  # outside the image
    mask[3] = True
    points[0, -1] = np.nan  # NaN coordinates on a padded slot are ignored.
    mask[0, -1] = False
    for eps in [0.01, 1e-3] if solver == "lbfgs" else [0.01]:
        got, grad = loss_and_grad(
            density,
            points,
            mask,
            tol=1e-4,
            epsilon=eps,
            solver=solver,
            max_iters=300 if solver == "lbfgs" else 1000,
        )
        assert np.isfinite(got).all() and np.isfinite(grad).all(), (eps, got)


def test_wfr_unreachable_point_costs_rho():
    """A point out of WFR reach of every pixel adds exactly rho (its mass is created)."""
    density, points, mask = random_batch(seed=8)
    mask[0, -1] = True
    points[0, -1] = [5000.0, 5000.0]
    mask2 = mask.copy()
    mask2[0, -1] = False
    got, grad = loss_and_grad(density, points, mask, cost="wfr", delta=0.1)
    without, _ = loss_and_grad(density, points, mask2, cost="wfr", delta=0.1)
    np.testing.assert_allclose(got, without + np.eye(4)[0], rtol=1e-5, atol=1e-5)
    assert np.isfinite(grad).all()


def test_jit_matches_eager():
    density, points, mask = random_batch(seed=9)
    fn = functools.partial(
        uot_loss, coord_scale=SCALE, stride=STRIDE, options=UOTOptions(max_iters=3, history=2)
    )
    jitted = fn(density, points, mask)
    with jax.disable_jit():
        eager = fn(density, points, mask)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)


def test_order_and_padding_invariance():
    density, points, mask = random_batch(seed=10)
    base, base_grad = loss_and_grad(density, points, mask)
    rng = np.random.default_rng(0)
    perm = rng.permutation(SLOTS)
    extra = rng.uniform(-1e6, 1e6, (len(mask), 5, 2)).astype(np.float32)
    points2 = np.concatenate([points[:, perm], extra], axis=1)
    mask2 = np.concatenate([mask[:, perm], np.zeros((len(mask), 5), bool)], axis=1)
    got, got_grad = loss_and_grad(density, points2, mask2.astype(np.float32))
    np.testing.assert_allclose(got, base, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_grad, base_grad, rtol=1e-3, atol=1e-4)


def test_batch_equals_per_image_vmap_and_a_jitted_step():
    density, points, mask = random_batch(seed=11)
    scales = np.array([96.0, 80.0, 128.0, 200.0], np.float32)
    batched, _ = loss_and_grad(density, points, mask, scales)
    single = [
        loss_and_grad(density[b : b + 1], points[b : b + 1], mask[b : b + 1], scales[b])[0]
        for b in range(len(mask))
    ]
    np.testing.assert_allclose(batched, np.concatenate(single), rtol=1e-5, atol=1e-6)
    vmapped = jax.vmap(
        lambda d, p, m, s: uot_loss(
            d[None], p[None], m[None], coord_scale=s, options=UOTOptions(max_iters=300, tol=1e-6)
        )[0]
    )(density, points, mask, scales)
    np.testing.assert_allclose(vmapped, batched, rtol=1e-5, atol=1e-6)
    want = [ref.loss_and_grad(density[b], points[b], mask[b], scales[b])[0] for b in range(4)]
    np.testing.assert_allclose(batched, want, rtol=2e-5, atol=2e-5)
    # As the trainer calls it: options bound once, [B, H, W, 1] density, traced [B] scale.
    options = UOTOptions(cost="l2", penalty="kl", max_iters=300, tol=1e-6)
    loss_fn = functools.partial(uot_loss, stride=STRIDE, options=options)

    @jax.jit
    def step(d, p, m, s):
        return jax.value_and_grad(lambda x: loss_fn(x, p, m, coord_scale=s).sum())(d)

    value, grad = step(density[..., None], points, mask, jnp.asarray(scales))
    assert grad.shape == density[..., None].shape
    np.testing.assert_allclose(value, batched.sum(), rtol=1e-6)


def test_semi_dual_matches_reference():
    density, points, mask = random_batch(seed=13)
    beta = np.random.default_rng(1).normal(0, 0.05, mask.shape).astype(np.float32)
    options = UOTOptions(penalty="qr", rho=0.7)
    got = uot_semi_dual(density, points, mask, beta, coord_scale=SCALE, options=options)
    for b in range(len(mask)):
        u, c = ref.problem(density[b], points[b], mask[b], SCALE)
        want = ref.semi_dual(beta[b][mask[b]].astype(float), u, c, 0.01, 0.7, "qr")[0]
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-5)


def test_rejects_bad_shapes_and_options():
    density, points, mask = random_batch(seed=0)
    with pytest.raises(ValueError, match=r"density must be .*\(4, 11\)"):
        uot_loss(density[:, 0], points, mask, coord_scale=SCALE)
    with pytest.raises(ValueError, match=r"points must be .*\(4, 12\)"):
        uot_loss(density, points[..., 0], mask, coord_scale=SCALE)
    with pytest.raises(ValueError, match=r"point_mask must be .*\(4, 11\)"):
        uot_loss(density, points, mask[:, 1:], coord_scale=SCALE)
    with pytest.raises(ValueError, match="coord_scale"):
        uot_loss(density, points, mask, coord_scale=np.ones(3))
    with pytest.raises(ValueError, match="cost must be one of"):
        uot_loss(density, points, mask, coord_scale=SCALE, options=UOTOptions(cost="l3"))
    with pytest.raises(ValueError, match="penalty must be one of"):
        uot_loss(density, points, mask, coord_scale=SCALE, options=UOTOptions(penalty="tv"))
    with pytest.raises(ValueError, match="epsilon and rho must be > 0"):
        uot_loss(density, points, mask, coord_scale=SCALE, options=UOTOptions(epsilon=0.0))
    with pytest.raises(ValueError, match="cost must be one of"):
        UOTOptions(cost="L2")
    with pytest.raises(ValueError, match="supports penalty='kl' only"):
        UOTOptions(solver="sinkhorn", penalty="qr")
