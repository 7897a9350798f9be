"""Batched L-BFGS for B independent smooth convex minimisation problems, jit-safe.

Each image of the batch has its own iterate, history, line search and stopping state; one batched
evaluation serves all of them (a finished image is frozen and re-evaluated at its iterate). The
objective threads a carry (e.g. a cache it may refresh) through every evaluation::

    fun(x, carry) -> (value [B], grad [B, D], scale [B], extra, carry)

``scale`` is the sum of the absolute terms added up in ``value`` (it sets the float rounding floor
of value differences); ``extra`` is a pytree of per-image arrays ([B, ...]) kept at the accepted
iterate. The loop is one ``while_loop`` with one evaluation per step (``fun`` is traced once):
each step either accepts the trial point of an image (and proposes the next one) or backtracks.

The iteration follows ``torch.optim.LBFGS`` (Nocedal & Wright, Alg. 7.4/7.5): two-loop recursion
with ``H0 = (s.y / y.y) I`` from the newest pair, first step ``t = min(1, 1 / |g|_1)``, then
``t = 1``. The line search is Armijo backtracking with safeguarded quadratic interpolation
(``c1 = 1e-4``) instead of torch's strong-Wolfe search: for a convex objective ``s.y > 0`` holds
for any step, so the curvature condition is not needed to keep the update positive definite, and
unit steps are accepted as often as under strong Wolfe. Near the float rounding floor value
differences are noise; a step is then also accepted under the approximate Wolfe condition of Hager
& Zhang (2005), ``g(t).d <= (2 c1 - 1) g(0).d`` with the value not above
``f + floor * eps_mach * scale``, which relies on the (accurate) gradient. A pair is stored when
``s.y > eps_mach |s| |y|``. An image stops when ``max |grad| <= tol``, after ``max_iters``
accepted iterations, or when ``max_linesearch`` trials in a row fail.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class LBFGSResult(NamedTuple):
    """Per image: ``x [B, D]``, ``value [B]``, ``grad [B, D]``, ``extra`` at ``x``, the last
    ``carry``, ``num_iters [B]``, ``num_evals`` (batched evaluations, scalar) and ``converged [B]``
    (``max |grad| <= tol``)."""

    x: jax.Array
    value: jax.Array
    grad: jax.Array
    extra: Any
    carry: Any
    num_iters: jax.Array
    num_evals: jax.Array
    converged: jax.Array


class _State(NamedTuple):
    accepted: tuple  # (x, value, grad, scale, extra) at the current iterate.
    carry: Any
    s_hist: jax.Array  # [B, m, D], oldest first.
    y_hist: jax.Array
    filled: jax.Array  # [B, m] bool.
    gamma: jax.Array  # [B], H0 scale.
    direction: jax.Array  # [B, D]
    slope: jax.Array  # [B], grad . direction
    step: jax.Array  # [B], trial step t.
    trials: jax.Array  # [B], failed trials in a row.
    iters: jax.Array
    done: jax.Array
    num_evals: jax.Array


def _select(mask, new, old):
    """Per-image where over a pytree of [B, ...] arrays."""

    def pick(a, b):
        return jnp.where(jnp.reshape(mask, mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


def _two_loop(grad, s_hist, y_hist, filled, gamma):
    """``H grad`` by the two-loop recursion over the stored pairs (empty slots drop out)."""
    sy = jnp.sum(s_hist * y_hist, axis=-1)
    rho = jnp.where(filled, 1.0 / jnp.where(filled, sy, 1.0), 0.0)
    slots = (jnp.moveaxis(s_hist, 1, 0), jnp.moveaxis(y_hist, 1, 0), rho.T)

    def backward(q, slot):
        s, y, r = slot
        a = r * jnp.sum(s * q, axis=-1)
        return q - a[:, None] * y, a

    q, alphas = jax.lax.scan(backward, grad, slots, reverse=True)

    def forward(r_vec, slot):
        s, y, r, a = slot
        b = r * jnp.sum(y * r_vec, axis=-1)
        return r_vec + (a - b)[:, None] * s, None

    r_vec, _ = jax.lax.scan(forward, gamma[:, None] * q, slots + (alphas,))
    return r_vec


def _propose(grad, s_hist, y_hist, filled, gamma):
    """Quasi-Newton direction, its slope and first trial step; restart on loss of descent."""
    direction = -_two_loop(grad, s_hist, y_hist, filled, gamma)
    slope = jnp.sum(grad * direction, axis=-1)
    restart = ~(slope < 0)
    direction = jnp.where(restart[:, None], -grad, direction)
    slope = jnp.where(restart, -jnp.sum(grad * grad, axis=-1), slope)
    filled = filled & ~restart[:, None]
    first = jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(grad), axis=-1))
    step = jnp.where(restart | ~filled[:, -1], first, 1.0)
    return direction, slope, jnp.where(jnp.isfinite(step), step, 1.0), filled


def minimize(
    fun,
    x0,
    carry0,
    *,
    max_iters: int,
    tol,
    history: int = 20,
    max_linesearch: int = 20,
    c1: float = 1e-4,
    floor: float = 10.0,
) -> LBFGSResult:
    """Minimise ``B`` problems ``fun(x, carry)`` from ``x0 [B, D]``; see the module docstring."""
    batch, dim = x0.shape
    eps_mach = jnp.finfo(x0.dtype).eps
    _, _, _, extra_shape, _ = jax.eval_shape(fun, x0, carry0)
    zeros = jnp.zeros((batch,), x0.dtype)
    extra0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), extra_shape)
    state = _State(
        # The first step "accepts" x0 from value +inf: it is the initial evaluation.
        accepted=(x0, zeros + jnp.inf, jnp.zeros_like(x0), zeros, extra0),
        carry=carry0,
        s_hist=jnp.zeros((batch, history, dim), x0.dtype),
        y_hist=jnp.zeros((batch, history, dim), x0.dtype),
        filled=jnp.zeros((batch, history), bool),
        gamma=zeros + 1.0,
        direction=jnp.zeros_like(x0),
        slope=zeros,
        step=zeros,
        trials=jnp.zeros((batch,), jnp.int32),
        iters=jnp.zeros((batch,), jnp.int32),
        done=jnp.zeros((batch,), bool),
        num_evals=jnp.asarray(0, jnp.int32),
    )

    def body(st):
        x, value, grad, scale, _ = st.accepted
        first = st.num_evals == 0
        x_try = x + st.step[:, None] * st.direction
        val, g, sc, ex, carry = fun(x_try, st.carry)
        armijo = val <= value + c1 * st.step * st.slope
        approx = (jnp.sum(g * st.direction, axis=-1) <= (2 * c1 - 1) * st.slope) & (
            val <= value + floor * eps_mach * scale
        )
        ok = ~st.done & (first | (jnp.isfinite(val) & (armijo | approx)))
        accepted = _select(ok, (x_try, val, g, sc, ex), st.accepted)

        # New curvature pair (not for the initial evaluation).
        s, y = x_try - x, g - grad
        sy = jnp.sum(s * y, axis=-1)
        yy = jnp.sum(y * y, axis=-1)
        store = ok & ~first & (sy > eps_mach * jnp.sqrt(jnp.sum(s * s, axis=-1) * yy))
        pushed = (
            jnp.concatenate([st.s_hist[:, 1:], s[:, None]], axis=1),
            jnp.concatenate([st.y_hist[:, 1:], y[:, None]], axis=1),
            jnp.concatenate([st.filled[:, 1:], store[:, None]], axis=1),
            sy / jnp.where(store, yy, 1.0),
        )
        s_hist, y_hist, filled, gamma = _select(
            store, pushed, (st.s_hist, st.y_hist, st.filled, st.gamma)
        )
        iters = st.iters + (ok & ~first).astype(jnp.int32)
        trials = jnp.where(ok, 0, st.trials + (~st.done).astype(jnp.int32))
        converged = jnp.max(jnp.abs(accepted[2]), axis=-1) <= tol
        done = st.done | (trials >= max_linesearch) | (ok & (converged | (iters >= max_iters)))

        # Next trial: a new direction where accepted, else backtrack (quadratic interpolation).
        direction, slope, step0, restarted = _propose(accepted[2], s_hist, y_hist, filled, gamma)
        filled = jnp.where(ok[:, None], restarted, filled)
        curv = val - value - st.slope * st.step
        t_quad = -st.slope * st.step**2 / (2.0 * jnp.where(curv > 0, curv, 1.0))
        backtrack = jnp.where(
            jnp.isfinite(val) & (curv > 0),
            jnp.clip(t_quad, 0.1 * st.step, 0.5 * st.step),
            0.1 * st.step,
        )
        direction, slope, step = _select(
            ok, (direction, slope, step0), (st.direction, st.slope, backtrack)
        )
        step = jnp.where(done, 0.0, step)  # A finished image is re-evaluated at its iterate.
        return _State(
            accepted,
            carry,
            s_hist,
            y_hist,
            filled,
            gamma,
            direction,
            slope,
            step,
            trials,
            iters,
            done,
            st.num_evals + 1,
        )

    state = jax.lax.while_loop(lambda st: jnp.any(~st.done), body, state)
    x, value, grad, _, extra = state.accepted
    converged = jnp.max(jnp.abs(grad), axis=-1) <= tol
    return LBFGSResult(x, value, grad, extra, state.carry, state.iters, state.num_evals, converged)
