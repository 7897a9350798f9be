"""Second solver for the UOT potentials: ott-jax's unbalanced Sinkhorn on the primal of Eq. 6.

Eq. 6 is ``min_pi <C, pi> + rho KL(pi 1 | u) + rho KL(pi^T 1 | v) + eps sum(pi ln pi - pi + 1)``
(entropy relative to the counting measure). ott's iterations in log domain,
``f <- tau (eps ln a - eps lse_j((g_j - C_ij) / eps))`` and the same for ``g`` with
``tau = rho / (rho + eps)``, with the plan ``exp((f + g - C) / eps)``, are exactly the block-ascent
steps of the dual of this problem. Checked in float64 (tests): primal = dual, and ``g`` equals an
independent solution of that dual, with the plain cost C. (ott's *reported* ``reg_ot_cost`` is
written with ``KL(pi | a b^T)``; shifting the cost by ``eps ln u_i`` would instead solve that
other problem and move ``g`` away from the Eq. 6 optimum, so no shift is applied.) Pixels with
``u_i = 0`` only enter as ``ln a_i = -inf`` inside ott (potential ``-inf``, no mass), which ott
handles without NaN.

ott's ``g`` is the exact Eq. 6 dual potential; :func:`crowdjax.losses.uot.uot_loss` evaluates the
paper's semi-dual ``G`` at it, which lies slightly below ``max G`` (see that docstring).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

from crowdjax.losses import uot_kernel


def unreachable_beta(rho, tol):
    """KL potential of a point that no mass can reach: where ``|dG/dbeta_j| = tol``.

    The exact maximiser is ``+inf`` (``G`` tends to ``+rho`` per such point); this finite value
    matches the L-BFGS stopping rule and keeps ``dG/du`` finite.
    """
    return rho * jnp.log(1.0 / tol)


def sinkhorn_beta(u, cost, valid, *, epsilon, rho, tol, max_iters: int):
    """Dual potentials of Eq. 6 for each image with ott's unbalanced Sinkhorn (KL penalty).

    Args:
      u: [B, N] non-negative density masses. cost: [B, N, M], ``+inf`` where forbidden.
      valid: [B, M] real points (padding excluded). epsilon, rho: scalars.
      tol: ott threshold on the marginal error. max_iters: Sinkhorn iteration cap.

    Returns:
      ``(beta [B, M], num_iters [B], converged [B])``; beta is 0 on padded points and
      :func:`unreachable_beta` on points with no reachable mass.
    """
    tau = rho / (rho + epsilon)
    finite = jnp.isfinite(cost)
    reach_mass = jnp.einsum("bn,bnm->bm", u, finite.astype(u.dtype))
    reachable = valid & (reach_mass > 0)
    # ott sees a dummy problem where nothing can be transported (no mass or no reachable point).
    live = jnp.any(reachable, axis=-1)
    a = jnp.where(live[:, None], u, 1.0)
    b = jnp.where(live[:, None], reachable.astype(u.dtype), 1.0)
    big = jnp.max(jnp.where(finite, cost, 0.0)) + 1e4 * epsilon  # exp(-1e4) = 0: same as +inf.
    c = jnp.where(finite, cost, big)

    def solve_one(a_i, b_i, c_i):
        geom = geometry.Geometry(cost_matrix=c_i, epsilon=epsilon)
        prob = linear_problem.LinearProblem(geom, a=a_i, b=b_i, tau_a=tau, tau_b=tau)
        out = sinkhorn.Sinkhorn(threshold=tol, max_iterations=max_iters, lse_mode=True)(prob)
        return out.g, out.n_iters, out.converged

    g, n_iters, converged = jax.vmap(solve_one)(a, b, c)
    g = jnp.where(jnp.isfinite(g), g, 0.0)
    beta = jnp.where(reachable, g, jnp.where(valid, unreachable_beta(rho, tol), 0.0))
    return beta, n_iters, converged | ~live


def sinkhorn_solution(u, cost, valid, *, epsilon, rho, tol, max_iters: int):
    """:func:`sinkhorn_beta` plus ``t = -alpha(beta) [B, N]`` (Eq. 8) and ``dG/dbeta [B, M]``.

    Returns ``(beta, t, grad, num_iters, converged)``.
    """
    beta, n_iters, converged = sinkhorn_beta(
        u, cost, valid, epsilon=epsilon, rho=rho, tol=tol, max_iters=max_iters
    )
    t = uot_kernel.dense_t(beta, cost, epsilon)
    # softmax_j((beta_j - C_ij) / eps), 0 on rows without a finite cost.
    soft = jnp.exp((beta[:, None, :] - cost - t[..., None]) / epsilon)
    soft = jnp.where(jnp.isfinite(t)[..., None], soft, 0.0)
    row_weight = jnp.where(u > 0, u * uot_kernel.phi_star_grad(t, penalty="kl", rho=rho), 0.0)
    mass_in = jnp.einsum("bn,bnm->bm", row_weight, soft)
    grad = uot_kernel.phi_star_grad(-beta, penalty="kl", rho=rho) - mass_in
    return beta, t, jnp.where(valid, grad, 0.0), n_iters, converged
