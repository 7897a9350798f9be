"""Building blocks of the semi-dual UOT loss: costs, marginal penalties and the stabilised kernel.

Notation (Ma et al., AAAI 2021, Eq. 6-13): ``u [B, N]`` density mass at N pixel centres, M points
of mass 1, cost ``C [B, N, M]``, potentials ``beta [B, M]``,
``lse_i = logsumexp_j((beta_j - C_ij) / eps)`` so that ``alpha_i = -eps * lse_i`` (Eq. 8) and
``t_i = -alpha_i = eps * lse_i``. The inner solver minimises ``F = -G``::

    F(beta) = sum_i u_i phi*(t_i) + sum_j phi*(-beta_j)                      (Eq. 7)
    dF/dbeta_j = sum_i u_i phi*'(t_i) softmax_ij - phi*'(-beta_j)           (mass in - mass out)

Stabilised kernel ("absorption", as in log-domain Sinkhorn): at an anchor ``beta0`` we store
``K_ij = exp(z_ij - m_i)`` with ``z = (beta0 - C) / eps`` and the row maximum ``m_i`` (one
exponential per entry). For ``beta = beta0 + eps * d`` the row sums are a matrix-vector product,
``sum_j exp((beta_j - C_ij) / eps) = exp(m_i + h) * (K @ exp(d - h))_i`` with ``h = max_j d_j``, so
an evaluation of ``F`` and its gradient costs two matvecs and no ``N x M`` exponentials. It is exact
up to float rounding while the spread ``max_j d_j - min_j d_j`` stays below ``max_spread``: entries
lost to underflow in ``K`` (``< tiny``) are then at most ``M * eps_mach**2`` of their row sum. A
uniform shift of ``beta`` is free; beyond the spread the caller re-anchors (one exp pass).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

COSTS = ("l2", "l1", "wfr")
PENALTIES = ("kl", "qr")


def cost_matrix(pixels, points, *, cost: str, delta=None):
    """Ground cost between pixel centres and points in scaled coordinates.

    Args:
      pixels: [B, N, 2] or [N, 2] pixel centres (x, y), already divided by the coordinate scale.
      points: [B, M, 2] points (x, y) in the same units.
      cost: "l2" (Eq. 11, p = 2, not squared), "l1" (p = 1), or "wfr" (Eq. 12:
        ``-2 ln cos(d / delta)`` for ``d < pi * delta / 2``, ``+inf`` beyond; d the l2 distance).
      delta: WFR length scale in scaled units (used by "wfr" only).

    Returns:
      [B, N, M] float cost, ``+inf`` where transport is forbidden.
    """
    diff = pixels[..., :, None, :] - points[:, None, :, :]
    if cost == "l1":
        return jnp.sum(jnp.abs(diff), axis=-1)
    dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
    if cost == "l2":
        return dist
    if cost == "wfr":
        ratio = dist / delta
        inside = ratio < jnp.pi / 2
        # Clip the argument so that the untaken branch stays finite (no NaN in where).
        safe = jnp.where(inside, ratio, 0.0)
        return jnp.where(inside, -2.0 * jnp.log(jnp.cos(safe)), jnp.inf)
    raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")


def phi_star(t, *, penalty: str, rho):
    """Conjugate ``phi*`` of the marginal penalty ``rho * phi`` (Eq. 9, 10, 13); finite at -inf.

    KL: ``phi(x) = x ln x - x + 1``, ``(rho phi)*(t) = rho (exp(t / rho) - 1)``.
    QR: ``phi(x) = (x - 1)^2``, ``(rho phi)*(t) = t + t^2 / (4 rho)`` for ``t >= -2 rho``, else
    ``-rho`` (Eq. 13 with rho = 1).
    """
    if penalty == "kl":
        return rho * jnp.expm1(t / rho)
    if penalty == "qr":
        inside = t >= -2.0 * rho
        safe = jnp.where(inside, t, 0.0)
        return jnp.where(inside, safe + safe * safe / (4.0 * rho), -rho)
    raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")


def phi_star_grad(t, *, penalty: str, rho):
    """Derivative of :func:`phi_star` (the mass multiplier, >= 0); 0 at -inf."""
    if penalty == "kl":
        return jnp.exp(t / rho)
    if penalty == "qr":
        return jnp.where(t >= -2.0 * rho, 1.0 + jnp.maximum(t, -2.0 * rho) / (2.0 * rho), 0.0)
    raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")


def max_spread(dtype) -> float:
    """Largest exact spread (in units of eps) of ``beta - beta0`` for a kernel of this dtype."""
    info = jnp.finfo(dtype)
    return -math.log(float(info.tiny)) + 2.0 * math.log(float(info.eps))  # 55.5 for float32


class Kernel(NamedTuple):
    """Stabilised kernel at an anchor (module docstring): [B, M], [B, N], [B, N, M]."""

    beta0: jax.Array
    row_max: jax.Array
    k: jax.Array


def anchor(beta, cost, epsilon):
    """Kernel anchored at ``beta`` (one exponential per entry). ``epsilon``: scalar or [B]."""
    eps = jnp.reshape(epsilon, (-1, 1, 1))
    z = (beta[:, None, :] - cost) / eps  # -inf where the cost is +inf (masked or forbidden).
    row_max = jnp.max(z, axis=-1)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    return Kernel(beta, row_max, jnp.exp(z - row_max[..., None]))


def needs_anchor(beta, kernel, active, epsilon, spread):
    """[B] bool: the spread of ``(beta - beta0) / eps`` over active points exceeds ``spread``."""
    d = (beta - kernel.beta0) / jnp.reshape(epsilon, (-1, 1))
    hi = jnp.max(jnp.where(active, d, -jnp.inf), axis=-1)
    lo = jnp.min(jnp.where(active, d, jnp.inf), axis=-1)
    return hi - lo > spread


class Evaluation(NamedTuple):
    """``F = -G`` [B], its gradient [B, M], ``t = eps * lse`` [B, N] (``-inf`` on empty rows) and
    ``scale`` [B], the sum of the absolute terms of F (sets its float rounding floor)."""

    value: jax.Array
    grad: jax.Array
    t: jax.Array
    scale: jax.Array


def evaluate(beta, kernel, u, valid, active, epsilon, *, penalty: str, rho):
    """``F(beta)``, its gradient and ``t`` from an anchored kernel: two matvecs, no N x M exp.

    Args:
      beta: [B, M] potentials. kernel: :class:`Kernel` with ``beta`` within the exact spread.
      u: [B, N] non-negative density. valid: [B, M] real (unpadded) points. active: [B, M] valid
        points with at least one finite cost. epsilon, rho: scalars or [B].
    """
    eps = jnp.reshape(epsilon, (-1, 1))
    rho_ = jnp.reshape(rho, (-1, 1))
    d = jnp.where(active, (beta - kernel.beta0) / eps, -jnp.inf)
    h = jnp.max(d, axis=-1, keepdims=True)
    h = jnp.where(jnp.isfinite(h), h, 0.0)
    e = jnp.exp(d - h)  # <= 1, 0 on inactive points (so 0 * inf never occurs in the matvec).
    s = jnp.einsum("bnm,bm->bn", kernel.k, e)
    has_mass = s > 0
    t = eps * (kernel.row_max + h + jnp.log(jnp.where(has_mass, s, 1.0)))
    t = jnp.where(has_mass, t, -jnp.inf)
    phi_rows = phi_star(t, penalty=penalty, rho=rho_)
    phi_cols = phi_star(-beta, penalty=penalty, rho=rho_)
    rows = jnp.where(u > 0, u * phi_rows, 0.0)
    cols = jnp.where(valid, phi_cols, 0.0)
    value = jnp.sum(rows, axis=-1) + jnp.sum(cols, axis=-1)
    scale = jnp.sum(jnp.abs(rows), axis=-1) + jnp.sum(jnp.abs(cols), axis=-1)
    # Row weights u_i phi*'(t_i) / s_i; the softmax is K_ij e_j / s_i.
    w = jnp.where(has_mass & (u > 0), u * phi_star_grad(t, penalty=penalty, rho=rho_), 0.0)
    w = w / jnp.where(has_mass, s, 1.0)
    mass_in = e * jnp.einsum("bnm,bn->bm", kernel.k, w)
    grad = mass_in - phi_star_grad(-beta, penalty=penalty, rho=rho_)
    grad = jnp.where(valid, grad, 0.0)
    return Evaluation(value, grad, t, scale)


def dense_t(beta, cost, epsilon):
    """``t = eps * logsumexp_j((beta_j - C_ij) / eps)`` [B, N] directly (log-domain, no kernel)."""
    eps = jnp.reshape(epsilon, (-1, 1, 1))
    z = (beta[:, None, :] - cost) / eps
    m = jnp.max(z, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    s = jnp.sum(jnp.exp(z - m), axis=-1)
    lse = jnp.where(s > 0, m[..., 0] + jnp.log(jnp.where(s > 0, s, 1.0)), -jnp.inf)
    return jnp.reshape(epsilon, (-1, 1)) * lse
