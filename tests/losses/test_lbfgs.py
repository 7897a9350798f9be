"""Batched L-BFGS (crowdjax.losses.lbfgs) against scipy on small convex problems."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize as scipy_minimize

from crowdjax.losses import lbfgs

B, D, K = 3, 6, 10


def logistic_problems(seed=0):
    """f_b(x) = sum_k softplus(A_bk . x) - c_b . x + 0.05 |x|^2 (strictly convex)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 2.0, (B, K, D)).astype(np.float32)
    c = rng.normal(0, 1.0, (B, D)).astype(np.float32)
    return a, c


def make_fun(a, c):
    def fun(x, carry):
        z = jnp.einsum("bkd,bd->bk", a, x)
        terms = jnp.concatenate([jax.nn.softplus(z), -c * x, 0.05 * x * x], axis=-1)
        grad = jnp.einsum("bkd,bk->bd", a, jax.nn.sigmoid(z)) - c + 0.1 * x
        # extra: a per-image quantity at the evaluated point; carry: an evaluation counter.
        return terms.sum(-1), grad, jnp.abs(terms).sum(-1), {"twice": 2 * x}, carry + 1

    return fun


def scipy_solution(a, c, b):
    def f(x):
        z = a[b].astype(float) @ x
        value = np.logaddexp(0, z).sum() - c[b] @ x + 0.05 * x @ x
        return value, a[b].T.astype(float) @ (1 / (1 + np.exp(-z))) - c[b] + 0.1 * x

    return scipy_minimize(
        f, np.zeros(D), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-16}
    ).x


@jax.jit
def solve(a, c, x0):
    return lbfgs.minimize(make_fun(a, c), x0, jnp.asarray(0), max_iters=100, tol=1e-5)


def test_matches_scipy_and_threads_carry_and_extra():
    a, c = logistic_problems()
    res = solve(a, c, jnp.zeros((B, D)))
    for b in range(B):
        np.testing.assert_allclose(res.x[b], scipy_solution(a, c, b), atol=1e-4)
    assert bool(res.converged.all()) and float(jnp.abs(res.grad).max()) <= 1e-5
    assert int(res.carry) == int(res.num_evals)  # one evaluation per loop step
    np.testing.assert_array_equal(res.extra["twice"], 2 * res.x)  # extra at the accepted iterate
    assert np.all(res.num_iters >= 3) and np.all(res.num_iters <= 100)


def test_started_at_the_optimum_does_not_move():
    a, c = logistic_problems(seed=1)
    first = solve(a, c, jnp.zeros((B, D)))
    x0 = jnp.asarray(first.x).at[1].set(0.0)
    res = solve(a, c, x0)
    np.testing.assert_array_equal(res.x[0], first.x[0])
    assert int(res.num_iters[0]) == 0 and int(res.num_iters[2]) == 0
    assert int(res.num_iters[1]) > 0


def test_iteration_cap_and_infinite_trials():
    """A barrier objective (inf outside |x| < 1): trial points there are rejected, never NaN."""

    def fun(x, carry):
        inside = jnp.abs(x) < 1
        safe = jnp.where(inside, x, 0.0)
        terms = jnp.where(inside, -jnp.log1p(-safe * safe) - 3.0 * safe, jnp.inf)
        grad = jnp.where(inside, 2 * safe / (1 - safe * safe) - 3.0, jnp.nan)
        return terms.sum(-1), grad, jnp.abs(terms).sum(-1), (), carry

    res = jax.jit(lambda x: lbfgs.minimize(fun, x, (), max_iters=50, tol=1e-5))(jnp.zeros((2, 3)))
    # Optimum of -log(1 - x^2) - 3x: 2x / (1 - x^2) = 3, 3x^2 + 2x - 3 = 0, x = (sqrt(10) - 1) / 3.
    np.testing.assert_allclose(res.x, (np.sqrt(10) - 1) / 3, rtol=1e-5)
    capped = jax.jit(lambda x: lbfgs.minimize(fun, x, (), max_iters=2, tol=0.0))(jnp.zeros((2, 3)))
    assert np.all(capped.num_iters == 2) and np.isfinite(np.asarray(capped.x)).all()
