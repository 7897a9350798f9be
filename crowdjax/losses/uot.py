"""Semi-dual entropic unbalanced OT loss between a density map and point annotations.

Ma et al., "Learning to count via unbalanced optimal transport", AAAI 2021, Eq. 6-13. Per image,
with ``u_i`` the density mass at the N output-pixel centres ``x_i``, M points ``y_j`` of mass 1
and cost ``C_ij = c(x_i, y_j)`` in coordinates divided by ``coord_scale``::

    alpha_i(beta) = -eps * logsumexp_j((beta_j - C_ij) / eps)                (Eq. 8)
    G(beta; u)    = -sum_i u_i phi*(-alpha_i) - sum_j phi*(-beta_j)           (Eq. 7)
    loss          = G(stop_gradient(beta*); u),  beta* = argmax_beta G       (Alg. 1)

``phi*`` is the conjugate of the marginal penalty ``rho * phi``: KL ``rho (exp(t / rho) - 1)``
(Eq. 10) or QR ``t + t^2 / (4 rho)`` for ``t >= -2 rho``, else ``-rho`` (Eq. 13). ``G`` is concave,
so beta* is unique up to points no mass can reach. By the envelope theorem the gradient of the loss
w.r.t. the density is ``dG/du_i = -phi*(-alpha_i(beta*))``; no gradient reaches points or scales.

Solvers:
  * ``"lbfgs"`` (default): batched L-BFGS on beta from 0 (:mod:`crowdjax.losses.lbfgs`; the
    reference code runs torch's L-BFGS, 20 iterations, strong Wolfe). Evaluations use the
    stabilised kernel of :mod:`crowdjax.losses.uot_kernel`: exact to float rounding, with one
    ``N x M`` exponential pass only when beta has moved by more than ~55 eps (relative).
  * ``"sinkhorn"``: ott-jax's unbalanced Sinkhorn (``tau = rho / (rho + eps)``) solves the primal
    Eq. 6 exactly; its potential ``g`` is used as beta (:mod:`crowdjax.losses.uot_sinkhorn`).
    Relation: Eq. 8 is the *balanced* soft c-transform, whereas the exact dual of Eq. 6 maximises
    over alpha as well (``alpha_i = tau (eps ln u_i - eps lse_i)``); so ``G(beta) + eps N (M - 1)``
    equals the Eq. 6 dual at ``(alpha(beta), beta)``, a lower bound, and ``G(g_ott) < max G`` with a
    relative gap of O(eps^2) (about 2.6e-3, 6e-4, 1.5e-4 at eps = 0.02, 0.01, 0.005 on a 16 x 16
    grid with 30 points; tested). KL penalty only.

Edge cases: an image without points gets the exact limit ``rho * sum(u)`` for both penalties
(``phi*(-inf) = -rho``: all mass destroyed at cost ``phi(0) = 1`` per unit); forbidden transport
(WFR beyond ``pi delta / 2``) is ``+inf`` cost, handled in log domain. A point that no mass can
reach has ``beta* = +inf``; solvers stop at ``|dG/dbeta_j| <= tol`` (KL: ``beta = rho ln(1/tol)``),
which keeps ``dG/du`` finite, e.g. for an all-zero density.

Stopping (**choice**): ``max_iters = 20`` L-BFGS iterations as the reference (torch's default), or
earlier when ``max_j |dG/dbeta_j| <= tol = 1e-4`` (mass units: each point has mass 1). Twenty
iterations do not always reach ``tol`` at eps = 0.01; raise ``max_iters`` for a closer solve.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from crowdjax.losses import lbfgs, uot_kernel, uot_sinkhorn

SOLVERS = ("lbfgs", "sinkhorn")
_DEFAULT_ITERS = {"lbfgs": 20, "sinkhorn": 2000}


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=("delta", "tol"),
    meta_fields=("epsilon", "rho", "cost", "penalty", "solver", "max_iters", "history"),
)
@dataclasses.dataclass(frozen=True)
class UOTOptions:
    """Settings of the UOT problem and its inner solver, validated once when built.

    A pytree: ``delta`` and ``tol`` are its leaves (they may be traced, so changing them does
    not recompile); the other fields are static (hashable Python values; ott needs a concrete
    ``tau``), and a new value of one compiles a new program. The names are the paper's where
    it has one.

    Attributes:
      epsilon: entropic regularisation eps of Eq. 6 (> 0; float32-stable down to 1e-3; the
        paper uses 0.01). Relative to ``coord_scale``.
      rho: strength of the marginal penalty ``rho * phi`` on the predicted density (> 0);
        ott-jax's ``tau = rho / (rho + epsilon)``.
      cost: ``"l2"`` (Eq. 11), ``"l1"``, or ``"wfr"`` (Eq. 12).
      penalty: ``"kl"`` (Eq. 10) or ``"qr"`` (Eq. 13).
      delta: WFR scale in scaled units (``cost = -2 ln cos(d / delta)``); the paper does not
        give it, 0.1 is a **choice**.
      solver: ``"lbfgs"`` (semi-dual) or ``"sinkhorn"`` (ott-jax, KL only).
      max_iters: iteration cap; None: 20 (L-BFGS, as the reference) or 2000 (Sinkhorn).
      tol: stop when ``max_j |dG/dbeta_j| <= tol`` (L-BFGS) / ott marginal error (Sinkhorn).
      history: L-BFGS memory.
    """

    epsilon: float = 0.01
    rho: float = 1.0
    cost: str = "l2"
    penalty: str = "kl"
    delta: float = 0.1
    solver: str = "lbfgs"
    max_iters: int | None = None
    tol: float = 1e-4
    history: int = 20

    def __post_init__(self):
        if not (self.epsilon > 0 and self.rho > 0):
            raise ValueError(f"epsilon and rho must be > 0, got {self.epsilon!r} and {self.rho!r}")
        if self.cost not in uot_kernel.COSTS:
            raise ValueError(f"cost must be one of {uot_kernel.COSTS}, got {self.cost!r}")
        if self.penalty not in uot_kernel.PENALTIES:
            raise ValueError(f"penalty must be one of {uot_kernel.PENALTIES}, got {self.penalty!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.solver == "sinkhorn" and self.penalty != "kl":
            raise ValueError("solver='sinkhorn' (ott-jax) supports penalty='kl' only")

    @property
    def iterations(self) -> int:
        """The iteration cap, with the solver's default when ``max_iters`` is None."""
        return _DEFAULT_ITERS[self.solver] if self.max_iters is None else self.max_iters


_DEFAULTS = UOTOptions()


class UOTSolution(NamedTuple):
    """Inner solution per image: ``beta [B, M]`` (0 on padding), ``t = -alpha [B, N]``,
    ``grad = dG/dbeta [B, M]``, ``num_iters [B]``, ``num_evals`` (batched evaluations; L-BFGS),
    ``num_anchors`` (exponential passes; L-BFGS) and ``converged [B]``."""

    beta: jax.Array
    t: jax.Array
    grad: jax.Array
    num_iters: jax.Array
    num_evals: jax.Array
    num_anchors: jax.Array
    converged: jax.Array


def _problem(density, points, point_mask, coord_scale, *, stride, options):
    """Flattened density u [B, N], cost [B, N, M] (+inf on padding) and valid [B, M]."""
    if density.ndim == 4 and density.shape[-1] == 1:
        density = density[..., 0]
    if density.ndim != 3:
        raise ValueError(f"density must be [B, H, W] or [B, H, W, 1], got {density.shape}")
    b, h, w = density.shape
    if points.ndim != 3 or points.shape[0] != b or points.shape[2] != 2:
        raise ValueError(f"points must be [B, P, 2] with B = {b}, got {points.shape}")
    if point_mask.shape != points.shape[:2]:
        raise ValueError(f"point_mask must be [B, P] = {points.shape[:2]}, got {point_mask.shape}")
    dtype = jnp.result_type(density.dtype, jnp.float32)
    scale = jnp.asarray(coord_scale, dtype)
    if scale.ndim > 1 or (scale.ndim == 1 and scale.shape[0] != b):
        raise ValueError(f"coord_scale must be a scalar or [B] = ({b},), got {scale.shape}")
    scale = jnp.broadcast_to(scale, (b,))
    # Output pixel (r, c) is centred at (stride c + stride / 2, stride r + stride / 2).
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=dtype), jnp.arange(w, dtype=dtype), indexing="ij")
    centres = (jnp.stack([xs.ravel(), ys.ravel()], axis=-1) + 0.5) * stride
    valid = point_mask > 0
    pts = jnp.where(valid[..., None], points.astype(dtype), 0.0)
    pixels = centres[None] / scale[:, None, None]
    points_scaled = pts / scale[:, None, None]
    c = uot_kernel.cost_matrix(pixels, points_scaled, cost=options.cost, delta=options.delta)
    c = jnp.where(valid[:, None, :], c, jnp.inf)
    return density.reshape(b, h * w).astype(dtype), c, valid


def _solve_lbfgs(u, c, valid, *, epsilon, rho, penalty, max_iters, tol, history):
    active = valid & jnp.any(jnp.isfinite(c), axis=1)
    spread = uot_kernel.max_spread(u.dtype)

    def fun(beta, carry):
        kernel, anchors = carry
        need = jnp.any(uot_kernel.needs_anchor(beta, kernel, active, epsilon, spread))
        kernel = jax.lax.cond(need, lambda: uot_kernel.anchor(beta, c, epsilon), lambda: kernel)
        ev = uot_kernel.evaluate(beta, kernel, u, valid, active, epsilon, penalty=penalty, rho=rho)
        return ev.value, ev.grad, ev.scale, ev.t, (kernel, anchors + need.astype(jnp.int32))

    beta0 = jnp.zeros(valid.shape, u.dtype)
    carry0 = (uot_kernel.anchor(beta0, c, epsilon), jnp.asarray(1, jnp.int32))
    res = lbfgs.minimize(fun, beta0, carry0, max_iters=max_iters, tol=tol, history=history)
    return UOTSolution(
        res.x, res.extra, -res.grad, res.num_iters, res.num_evals, res.carry[1], res.converged
    )


def _solve_sinkhorn(u, c, valid, *, epsilon, rho, penalty, max_iters, tol):
    del penalty  # KL only (checked).
    beta, t, grad, n_iters, converged = uot_sinkhorn.sinkhorn_solution(
        u, c, valid, epsilon=epsilon, rho=rho, tol=tol, max_iters=max_iters
    )
    zero = jnp.asarray(0, jnp.int32)
    return UOTSolution(beta, t, grad, n_iters, zero, zero, converged)


@functools.partial(jax.jit, static_argnames=("stride",))
def uot_solve(
    density,
    points,
    point_mask,
    *,
    coord_scale,
    stride: int = 8,
    options: UOTOptions = _DEFAULTS,
) -> UOTSolution:
    """Inner problem ``beta* = argmax_beta G(beta; u)`` per image (no gradient); see module doc.

    Arguments as :func:`uot_loss`; returns a :class:`UOTSolution`.
    """
    u, c, valid = _problem(density, points, point_mask, coord_scale, stride=stride, options=options)
    u, c = jax.lax.stop_gradient(jnp.maximum(u, 0.0)), jax.lax.stop_gradient(c)
    if valid.shape[1] == 0:  # No point slot at all: nothing to solve.
        t = jnp.full(u.shape, -jnp.inf, u.dtype)
        empty = jnp.zeros(valid.shape, u.dtype)
        zero = jnp.zeros(u.shape[:1], jnp.int32)
        return UOTSolution(empty, t, empty, zero, zero[0], zero[0], zero == 0)
    settings = dict(
        epsilon=options.epsilon,
        rho=options.rho,
        penalty=options.penalty,
        max_iters=options.iterations,
        tol=options.tol,
    )
    if options.solver == "lbfgs":
        return _solve_lbfgs(u, c, valid, history=options.history, **settings)
    return _solve_sinkhorn(u, c, valid, **settings)


def _semi_dual(u, t, beta, valid, *, penalty, rho):
    """G [B] from t = -alpha [B, N] and beta [B, M] (Eq. 7); linear in u."""
    phi_rows = uot_kernel.phi_star(t, penalty=penalty, rho=rho)
    phi_rows = jnp.minimum(phi_rows, jnp.finfo(u.dtype).max / (4 * u.shape[-1]))  # no 0 * inf
    phi_cols = uot_kernel.phi_star(-beta, penalty=penalty, rho=rho)
    return -jnp.sum(u * phi_rows, axis=-1) - jnp.sum(jnp.where(valid, phi_cols, 0.0), axis=-1)


@functools.partial(jax.jit, static_argnames=("stride",))
def uot_semi_dual(
    density,
    points,
    point_mask,
    beta,
    *,
    coord_scale,
    stride: int = 8,
    options: UOTOptions = _DEFAULTS,
):
    """Semi-dual ``G(beta; u)`` [B] of Eq. 7 at given potentials ``beta [B, P]`` (log domain).

    Differentiable w.r.t. density and beta; padded entries of beta are ignored. Only the
    problem settings of ``options`` matter (epsilon, rho, cost, penalty, delta), not the solver.
    """
    u, c, valid = _problem(density, points, point_mask, coord_scale, stride=stride, options=options)
    beta = jnp.where(valid, beta, 0.0)
    if valid.shape[1]:
        t = uot_kernel.dense_t(beta, c, options.epsilon)
    else:
        t = jnp.full(u.shape, -jnp.inf)
    return _semi_dual(u, t, beta, valid, penalty=options.penalty, rho=options.rho)


@functools.partial(jax.jit, static_argnames=("stride",))
def uot_loss(
    density,
    points,
    point_mask,
    *,
    coord_scale,
    stride: int = 8,
    options: UOTOptions = _DEFAULTS,
):
    """Per-image UOT loss ``G(stop_gradient(beta*); u)`` (Eq. 7, Alg. 1), shape [B].

    Args:
      density: [B, H, W] or [B, H, W, 1] non-negative density at output stride ``stride``;
        output pixel (r, c) is centred at (stride c + stride / 2, stride r + stride / 2) pixels.
      points: [B, P, 2] annotations as (x, y) input-image pixels.
      point_mask: [B, P] bool or 0/1; padded points are ignored (any coordinates).
      coord_scale: scalar or [B]; all coordinates are divided by it (the crop size in the paper,
        so eps is relative to the crop; per-image for whole-image evaluation). May be traced.
      stride: output stride.
      options: the problem and solver settings (:class:`UOTOptions`; default: the paper's).

    Returns:
      [B] float32 values; the gradient reaches ``density`` only.

    ``stride`` and the static fields of ``options`` select the compiled program;
    ``coord_scale``, ``options.delta`` and ``options.tol`` may be traced.
    ``functools.partial(uot_loss, options=...)`` is a training loss: call it inside a jitted
    step with ``coord_scale`` a scalar or a [B] array.
    """
    sol = uot_solve(
        density, points, point_mask, coord_scale=coord_scale, stride=stride, options=options
    )
    if density.ndim == 4:
        density = density[..., 0]
    u = density.reshape(density.shape[0], -1).astype(sol.t.dtype)
    valid = point_mask > 0
    t, beta = jax.lax.stop_gradient(sol.t), jax.lax.stop_gradient(sol.beta)
    return _semi_dual(u, t, beta, valid, penalty=options.penalty, rho=options.rho)
