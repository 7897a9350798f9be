"""DKPNet's variational-attention losses (Eq. 3, 6-8) against numpy: the KL's closed form as the
paper writes it (determinants, trace, quadratic form), a Monte Carlo estimate, a per-image loop
for the regulariser and empirical frequencies for the sub-center dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from crowdjax.losses import (
    diag_gaussian_kl,
    select_sub_centers,
    variational_attention_regularizer,
)


def _kl_closed_form(mu_q, var_q, mu_p, var_p):
    """Eq. 3 literally, with full (diagonal) matrices, in float64."""
    sq, sp = np.diag(var_q), np.diag(var_p)
    d = len(mu_q)
    diff = mu_p - mu_q
    return 0.5 * (
        np.log(np.linalg.det(sp) / np.linalg.det(sq))
        - d
        + np.trace(np.linalg.inv(sp) @ sq)
        + diff @ np.linalg.inv(sp) @ diff
    )


def _gaussians(rng, shape):
    mu_q, mu_p = rng.normal(size=shape), rng.normal(size=shape)
    var_q, var_p = rng.uniform(0.2, 2.0, shape), rng.uniform(0.2, 2.0, shape)
    return mu_q, var_q, mu_p, var_p


def test_kl_matches_the_closed_form():
    rng = np.random.default_rng(0)
    args = _gaussians(rng, (5, 6))
    got = np.asarray(jax.jit(diag_gaussian_kl)(*args))
    want = [_kl_closed_form(*(a[i] for a in args)) for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_kl_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(1)
    mu_q, var_q, mu_p, var_p = _gaussians(rng, (4,))
    z = mu_q + np.sqrt(var_q) * rng.normal(size=(400_000, 4))

    def log_density(x, mu, var):
        return -0.5 * np.sum(np.log(2 * np.pi * var) + (x - mu) ** 2 / var, axis=-1)

    samples = log_density(z, mu_q, var_q) - log_density(z, mu_p, var_p)
    estimate, error = samples.mean(), samples.std() / np.sqrt(len(samples))
    got = float(diag_gaussian_kl(mu_q, var_q, mu_p, var_p))
    assert abs(got - estimate) < 4 * error + 1e-3, (got, estimate, error)


def test_kl_of_equal_gaussians_is_zero_and_broadcasts():
    mu = jnp.array([[0.3, -1.0, 2.0]])
    var = jnp.array([[0.5, 1.0, 3.0]])
    np.testing.assert_allclose(diag_gaussian_kl(mu, var, mu, var), [0.0], atol=1e-7)
    # A prior [d] broadcasts against q's [B, d].
    rng = np.random.default_rng(2)
    mu_q, var_q = rng.normal(size=(3, 3)), rng.uniform(0.5, 1.5, (3, 3))
    got = diag_gaussian_kl(mu_q, var_q, mu[0], var[0])
    want = [
        _kl_closed_form(mu_q[i], var_q[i], np.asarray(mu[0]), np.asarray(var[0])) for i in range(3)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_kl_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    args = [jnp.asarray(a, jnp.float32) for a in _gaussians(rng, (2, 3))]
    check_grads(
        lambda *a: diag_gaussian_kl(*a).sum(),
        args,
        order=1,
        modes=["rev"],
        eps=1e-3,
        atol=2e-2,
        rtol=2e-2,
    )


# ------------------------------------------------------------------------ the regulariser


def _regularizer_loop(z, mu, var, domain, prior_mu, prior_var):
    """Eq. 3 + Eq. 6 + log^2 det, one image at a time, in float64."""
    out = []
    for b in range(len(z)):
        c = int(domain[b])
        centers = prior_mu[b] if prior_mu.ndim == 3 else prior_mu
        kl = _kl_closed_form(mu[b], var[b], centers[c], prior_var[c])
        margin = np.log(
            sum(np.exp(z[b] @ centers[i] - z[b] @ centers[c]) for i in range(len(centers)))
        )
        log_det = np.log(np.linalg.det(np.diag(prior_var[c])))
        out.append(kl + margin + log_det**2)
    return np.array(out)


def _regularizer_inputs(rng, b=6, c=3, d=5, *, per_image=False):
    mu = rng.normal(size=(b, d))
    var = rng.uniform(0.3, 1.5, (b, d))
    z = mu + np.sqrt(var) * rng.normal(size=(b, d))
    domain = rng.integers(0, c, b)
    prior_mu = rng.normal(size=(b, c, d) if per_image else (c, d))
    prior_var = rng.uniform(0.3, 1.5, (c, d))
    return z, mu, var, domain, prior_mu, prior_var


@pytest.mark.parametrize("per_image", [False, True])
def test_regularizer_matches_a_numpy_loop(per_image):
    args = _regularizer_inputs(np.random.default_rng(4), per_image=per_image)
    got = np.asarray(jax.jit(variational_attention_regularizer)(*args))
    np.testing.assert_allclose(got, _regularizer_loop(*args), rtol=1e-5, atol=1e-5)


def test_regularizer_edge_cases():
    rng = np.random.default_rng(5)
    # One domain: the margin is log 1 = 0; unit prior variance: log det = 0; q = p: KL = 0.
    mu = rng.normal(size=(1, 4))
    out = variational_attention_regularizer(
        mu, mu, np.ones((1, 4)), np.zeros(1, int), mu, np.ones((1, 4))
    )
    np.testing.assert_allclose(out, [0.0], atol=1e-6)
    # The margin is >= 0 and the log-sum-exp upper bound of Eq. 5's max (Eq. 6).
    z, mu, var, domain, prior_mu, prior_var = _regularizer_inputs(rng, b=8)
    unit = np.ones_like(prior_var)
    got = np.asarray(
        variational_attention_regularizer(z, z, np.ones_like(var), domain, prior_mu, unit)
    )
    kl = 0.5 * np.sum((prior_mu[domain] - z) ** 2, axis=-1)
    margin = got - kl
    gaps = z @ prior_mu.T - np.sum(z * prior_mu[domain], axis=-1, keepdims=True)
    assert np.all(margin >= gaps.max(axis=-1) - 1e-5) and np.all(margin >= -1e-6)


def test_regularizer_under_grad_and_vmap():
    rng = np.random.default_rng(6)
    z, mu, var, domain, prior_mu, prior_var = (
        a if a.dtype.kind == "i" else jnp.asarray(a, jnp.float32)
        for a in _regularizer_inputs(rng, b=3, c=2, d=3)
    )
    f = lambda z, mu, var, pm, pv: variational_attention_regularizer(
        z, mu, var, domain, pm, pv
    ).sum()
    check_grads(
        f, (z, mu, var, prior_mu, prior_var), order=1, modes=["rev"], eps=1e-3, atol=3e-2, rtol=3e-2
    )
    # vmap over a leading axis of independent problems equals the loop.
    stack = lambda a: jnp.stack([a, 2 * a])
    batched = jax.vmap(variational_attention_regularizer, in_axes=(0, 0, 0, None, 0, 0))(
        stack(z), stack(mu), stack(var), domain, stack(prior_mu), stack(prior_var)
    )
    for i in range(2):
        one = variational_attention_regularizer(
            (i + 1) * z,
            (i + 1) * mu,
            (i + 1) * var,
            domain,
            (i + 1) * prior_mu,
            (i + 1) * prior_var,
        )
        np.testing.assert_allclose(batched[i], one, rtol=1e-6)


def test_regularizer_rejects_bad_shapes():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="domain"):
        variational_attention_regularizer(z, z, z + 1, np.zeros(3, int), z, z + 1)
    with pytest.raises(ValueError, match="prior_var"):
        variational_attention_regularizer(z, z, z + 1, np.zeros(2, int), z, np.ones((3, 3)))


# ------------------------------------------------------------------ sub-center selection


def test_sub_center_selection_without_dropout_is_the_argmax():
    rng = np.random.default_rng(7)
    sub = rng.normal(size=(3, 4, 5))
    mu = rng.normal(size=(6, 5))
    chosen, index = jax.jit(select_sub_centers)(sub, mu)
    for b in range(6):
        for c in range(3):
            k = int(np.argmax(sub[c] @ mu[b]))
            assert index[b, c] == k
            np.testing.assert_allclose(chosen[b, c], sub[c, k], rtol=1e-6)


def test_sub_center_dropout_frequencies():
    # k = 2, scores (3, 1): the second is chosen iff the first is dropped (to 0) and the second
    # kept: P = 0.2 * 0.8.
    mu = np.ones((20_000, 2))
    _, index = select_sub_centers(
        np.array([[[2.0, 1.0], [0.5, 0.5]]]), mu, rng=jax.random.key(0), rate=0.2
    )
    assert abs(float(np.mean(np.asarray(index) == 1)) - 0.16) < 0.01
    # k = 3, scores (-1, -2, -3): a dropped score becomes 0 and beats every kept negative one,
    # so the last is chosen iff it alone is dropped: P = 0.2 * 0.8 * 0.8 (it would be
    # 0.8 * 0.2 * 0.2 if dropped scores were removed from the argmax instead).
    sub = np.array([[[-0.5, -0.5], [-1.0, -1.0], [-1.5, -1.5]]])
    _, index = select_sub_centers(sub, mu, rng=jax.random.key(1), rate=0.2)
    assert abs(float(np.mean(np.asarray(index) == 2)) - 0.128) < 0.01


def test_sub_center_gradient_reaches_only_the_chosen_sub_centers():
    sub = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, -1.0]]])
    mu = jnp.array([[0.0, 3.0]])
    grad = jax.grad(lambda s: select_sub_centers(s, mu)[0].sum())(sub)
    # Cluster 0 picks k=1 ([0, 1]: score 3), cluster 1 picks k=0 (score 0 > -3).
    want = np.zeros((2, 2, 2))
    want[0, 1] = 1.0
    want[1, 0] = 1.0
    np.testing.assert_array_equal(grad, want)
