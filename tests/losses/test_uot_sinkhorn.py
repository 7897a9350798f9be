"""The ott-jax solver against the float64 reference: Eq. 6 duality and the semi-dual gap."""

from __future__ import annotations

import numpy as np
import pytest

from crowdjax.losses.uot import UOTOptions, uot_loss, uot_solve
from tests.losses import uot_reference as ref

SIZE, STRIDE, POINTS = 16, 8, 30
SCALE = float(SIZE * STRIDE)
SINKHORN = {"solver": "sinkhorn", "tol": 1e-4, "max_iters": 3000}
CLOSE = UOTOptions(max_iters=300, tol=1e-6)  # an L-BFGS solve close to the optimum


def problem(seed=0, batch=2):
    """16 x 16 densities (some pixels exactly 0) and 30 points per image."""
    rng = np.random.default_rng(seed)
    density = rng.gamma(1.0, POINTS / SIZE**2, (batch, SIZE, SIZE)).astype(np.float32)
    density[rng.uniform(size=density.shape) < 0.1] = 0.0
    points = rng.uniform(0, SCALE, (batch, POINTS, 2)).astype(np.float32)
    return density, points, np.ones((batch, POINTS), bool)


def test_ott_potential_is_the_exact_eq6_dual():
    density, points, mask = problem()
    sol = uot_solve(
        density, points, mask, coord_scale=SCALE, options=UOTOptions(epsilon=0.01, **SINKHORN)
    )
    assert np.isfinite(np.asarray(sol.beta)).all()
    g_max = uot_loss(density, points, mask, coord_scale=SCALE, options=CLOSE)
    for b in range(len(mask)):
        u, c = ref.problem(density[b], points[b], mask[b], SCALE)
        alpha, beta = ref.eq6_dual_sinkhorn(u, c, 0.01, 1.0)
        np.testing.assert_allclose(np.asarray(sol.beta[b]), beta, atol=2e-4)
        # Strong duality in float64: the plan of these potentials is optimal for Eq. 6...
        with np.errstate(divide="ignore", invalid="ignore"):
            plan = np.exp((alpha[:, None] + beta[None, :] - c) / 0.01)
            rows = np.where(u > 0, u * np.expm1(-alpha), 0.0)
        dual = (
            -rows.sum()
            - np.expm1(-beta).sum()
            - 0.01 * np.expm1((alpha[:, None] + beta[None, :] - c) / 0.01).sum()
        )
        optimum = ref.eq6_primal(plan, u, c, 0.01, 1.0)
        np.testing.assert_allclose(optimum, dual, rtol=1e-10)
        # ... while shifting the cost by eps ln u_i (entropy relative to u x 1) solves another
        # problem, whose plan is worse for Eq. 6.
        live = u > 0
        a_s, b_s = ref.eq6_dual_sinkhorn(
            u[live], c[live] + 0.01 * np.log(u[live])[:, None], 0.01, 1.0
        )
        shifted = np.zeros_like(plan)
        shifted[live] = np.exp(
            (a_s[:, None] + b_s[None, :] - c[live] - 0.01 * np.log(u[live])[:, None]) / 0.01
        )
        assert ref.eq6_primal(shifted, u, c, 0.01, 1.0) > optimum + 1e-3
        # Semi-dual: G(beta) + eps N (M - 1) is the Eq. 6 dual at (alpha(beta), beta) <= optimum.
        n, m = c.shape
        assert g_max[b] + 0.01 * n * (m - 1) < optimum


def test_semi_dual_gap_is_small_and_shrinks_like_eps_squared():
    density, points, mask = problem(seed=1)
    u, c = ref.problem(density[0], points[0], mask[0], SCALE)
    gaps = []
    for eps in [0.02, 0.01, 0.005]:
        beta_ott = np.asarray(
            uot_solve(
                density,
                points,
                mask,
                coord_scale=SCALE,
                options=UOTOptions(epsilon=eps, **SINKHORN),
            ).beta[0]
        )
        g_max = ref.semi_dual(ref.solve(u, c, eps, 1.0, "kl"), u, c, eps, 1.0, "kl")[0]
        g_ott = ref.semi_dual(beta_ott.astype(float), u, c, eps, 1.0, "kl")[0]
        gaps.append((g_max - g_ott) / abs(g_max))
        if eps == 0.01:  # The two solvers of uot_loss agree to that gap.
            lbfgs = uot_loss(density, points, mask, coord_scale=SCALE, options=CLOSE)
            np.testing.assert_allclose(lbfgs[0], g_max, rtol=1e-5)
    gaps = np.array(gaps)
    assert np.all(gaps > 0) and gaps[1] < 2e-3, gaps
    ratios = gaps[:-1] / gaps[1:]
    np.testing.assert_allclose(ratios, 4.0, rtol=0.35)  # O(eps^2)


@pytest.mark.parametrize("case", ["no_points", "zero_density", "unreachable"])
def test_degenerate_images(case):
    density, points, mask = problem(seed=2)
    kw = {"coord_scale": SCALE, "options": UOTOptions(epsilon=0.01, **SINKHORN)}
    wfr = {"coord_scale": SCALE, "options": UOTOptions(cost="wfr", delta=0.2, **SINKHORN)}
    if case == "no_points":
        mask[0] = False
        np.testing.assert_allclose(
            uot_loss(density, points, mask, **kw)[0], density[0].sum(), rtol=1e-6
        )
    elif case == "zero_density":
        density[0] = 0.0
        np.testing.assert_allclose(uot_loss(density, points, mask, **kw)[0], POINTS, rtol=1e-4)
    else:  # WFR: a point beyond pi delta / 2 of every pixel costs rho = 1.
        # Fresh arrays per call: on CPU jax may alias a numpy input and run the call after it
        # returns, so mutating an input in place could change a result still being computed.
        base = np.asarray(uot_loss(density, points, mask, **wfr))
        points[0, 0] = [1e4, 1e4]
        far = np.asarray(uot_loss(density, points.copy(), mask.copy(), **wfr))
        without_mask = mask.copy()
        without_mask[0, 0] = False
        without = np.asarray(uot_loss(density, points.copy(), without_mask, **wfr))
        np.testing.assert_allclose(far[0], without[0] + 1.0, rtol=1e-4)
        assert np.isfinite(np.asarray(base)).all()


def test_sinkhorn_outputs_t_grad_and_converged_match_float64():
    """t = -alpha(beta) (Eq. 8) and dG/dbeta at ott's beta, against the float64 semi-dual; the
    converged flag and iteration count follow the iteration cap."""
    density, points, mask = problem(seed=3)
    mask[1, 20:] = False  # padded points
    sol = uot_solve(
        density, points, mask, coord_scale=SCALE, options=UOTOptions(epsilon=0.01, **SINKHORN)
    )
    assert np.asarray(sol.converged).all() and np.all(np.asarray(sol.num_iters) < 3000)
    for b in range(len(mask)):
        u, c = ref.problem(density[b], points[b], mask[b], SCALE)
        beta = np.asarray(sol.beta[b], np.float64)[mask[b]]
        np.testing.assert_allclose(
            np.asarray(sol.t[b], np.float64), ref.lse_rows(beta, c, 0.01), rtol=1e-5, atol=1e-6
        )
        _, d_beta, _ = ref.semi_dual(beta, u, c, 0.01, 1.0, "kl")
        grad = np.asarray(sol.grad[b], np.float64)
        np.testing.assert_allclose(grad[mask[b]], d_beta, rtol=1e-3, atol=1e-4)
        assert not grad[~mask[b]].any()  # 0 on padding
    capped = uot_solve(
        density,
        points,
        mask,
        coord_scale=SCALE,
        options=UOTOptions(epsilon=0.01, solver="sinkhorn", tol=1e-9, max_iters=20),
    )
    # ott checks its error every 10 iterations: 20 iterations cannot reach 1e-9.
    assert not np.asarray(capped.converged).any() and np.all(np.asarray(capped.num_iters) <= 20)
