"""Costs, penalties and the stabilised kernel (crowdjax.losses.uot_kernel) against float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.losses import uot_kernel as uk
from tests.losses import uot_reference as ref

B, N, M, EPS = 2, 40, 7, 0.01


@pytest.mark.parametrize("cost", ["l2", "l1", "wfr"])
def test_cost_matrix(cost):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (N, 2)), rng.uniform(0, 1, (B, M, 2))
    got = np.asarray(
        uk.cost_matrix(
            jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), cost=cost, delta=0.2
        )
    )
    for b in range(B):
        want = ref.cost(x, y[b], cost, delta=0.2)
        np.testing.assert_array_equal(np.isinf(got[b]), np.isinf(want))
        np.testing.assert_allclose(
            got[b][np.isfinite(want)], want[np.isfinite(want)], rtol=2e-5, atol=1e-6
        )
    if cost == "wfr":  # reach pi * delta / 2 = 0.314: some pairs are forbidden.
        assert np.isinf(got).any() and np.isfinite(got).any()


@pytest.mark.parametrize("penalty", ["kl", "qr"])
def test_penalty_conjugates(penalty):
    t = np.array([-np.inf, -5.0, -1.2, -0.3, 0.0, 0.4, 2.0])
    for rho in [1.0, 0.5]:
        np.testing.assert_allclose(
            uk.phi_star(jnp.asarray(t), penalty=penalty, rho=rho),
            ref.conj(t, penalty, rho),
            rtol=1e-6,
        )
        np.testing.assert_allclose(
            uk.phi_star_grad(jnp.asarray(t), penalty=penalty, rho=rho),
            ref.conj_grad(t, penalty, rho),
            rtol=1e-6,
        )
        # phi*(t) = sup_x>=0 (t x - rho phi(x)), checked on a grid of x.
        xs = np.linspace(0, 80, 800001)[1:]
        phi = xs * np.log(xs) - xs + 1 if penalty == "kl" else (xs - 1) ** 2
        finite = t[np.isfinite(t)]
        sup = np.max(finite[:, None] * xs - rho * phi, axis=1)
        sup = np.maximum(sup, -rho)  # x = 0: phi(0) = 1 for both
        np.testing.assert_allclose(ref.conj(finite, penalty, rho), sup, atol=1e-4)


def problem(seed):
    rng = np.random.default_rng(seed)
    cost = rng.uniform(0, 1.0, (B, N, M))
    cost[0, :5] = np.inf  # rows without any finite cost
    cost[1, :, 3] = np.inf  # a point no pixel can reach
    valid = np.ones((B, M), bool)
    valid[1, -1] = False
    cost[~valid[:, None, :].repeat(N, 1)] = np.inf
    u = rng.gamma(1.0, 0.2, (B, N))
    u[0, 7] = 0.0
    return u, cost, valid


@pytest.mark.parametrize("penalty", ["kl", "qr"])
def test_anchored_evaluation_is_exact_within_the_spread(penalty):
    u, cost, valid = problem(1)
    active = valid & np.isfinite(cost).any(1)
    spread = uk.max_spread(jnp.float32)
    rng = np.random.default_rng(2)
    beta0 = rng.normal(0, 0.2, (B, M))
    # Moves up to the exact spread, plus a large uniform shift (free).
    moves = rng.uniform(0, spread * EPS, (B, M)) + 0.7
    beta = np.where(valid, beta0 + moves, 0.0)
    args = [jnp.asarray(a, jnp.float32) for a in (beta0, cost, u)]
    kernel = jax.jit(uk.anchor)(args[0], args[1], EPS)
    assert not np.any(uk.needs_anchor(jnp.asarray(beta, jnp.float32), kernel, active, EPS, spread))
    ev = jax.jit(uk.evaluate, static_argnames=("penalty",))(
        jnp.asarray(beta, jnp.float32),
        kernel,
        args[2],
        valid,
        active,
        EPS,
        penalty=penalty,
        rho=1.0,
    )
    for b in range(B):
        cols = valid[b]
        g_value, d_beta, _ = ref.semi_dual(beta[b][cols], u[b], cost[b][:, cols], EPS, 1.0, penalty)
        np.testing.assert_allclose(-ev.value[b], g_value, rtol=1e-5)
        np.testing.assert_allclose(-ev.grad[b][cols], d_beta, rtol=2e-4, atol=1e-5)
        t = ref.lse_rows(beta[b][cols], cost[b][:, cols], EPS)
        np.testing.assert_array_equal(np.isinf(ev.t[b]), np.isinf(t))
        np.testing.assert_allclose(ev.t[b][np.isfinite(t)], t[np.isfinite(t)], atol=1e-5)
    # Relative moves beyond the spread require a new anchor.
    far = beta.copy()
    far[0, 0] += 1.5 * spread * EPS
    assert np.asarray(
        uk.needs_anchor(jnp.asarray(far, jnp.float32), kernel, active, EPS, spread)
    ).tolist() == [True, False]
