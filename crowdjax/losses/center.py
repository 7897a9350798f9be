"""Center loss on closeness levels for learning to scale (AutoScale Sec 3.3, Eq. 1-4).

A dense region R_i with closeness S_i (Eq. 1: mean distance from each person to its nearest
neighbour in R_i, in pixels) rescaled by r_i has closeness S_i * r_i. The L2S module learns r_i so
that every rescaled region approaches one learned closeness center S. Note that Eq. 2 compares
``S_i * r_i**2`` (not ``S_i * r_i``) with S; we follow the paper's formula literally, and its
derivative Eq. 3, ``dLs/dr_i = 2 S_i r_i (S_i r_i**2 - S)``. (The public reference evaluation
reads its rate network's output as r**2, clamps it to [0.5, 5] and rescales by its square root;
we follow the paper: r itself is clamped to [0.5, 3] and used as the scale.)

* :func:`center_loss`: ``Ls = 1/2 sum_i (S_i r_i**2 - S)**2`` (Eq. 2), gradient to r and S.
* :func:`update_center`: the explicit center update of Eq. 4,
  ``dS = sum_i (S - S_i r_i**2) / (1 + M)``, ``S <- S - alpha * dS`` (Wen et al. 2016 style; M =
  number of regions since the last update, Table 1: T = 1 epoch, alpha = 1e-3).
* :func:`closeness`: Eq. 1 on padded points in jnp (the numpy twin is
  :func:`crowdjax.data.labels.closeness`).

The public reference code instead trains the center with Adam on the loss gradient; the caller
chooses between that (differentiate :func:`center_loss` w.r.t. S) and Eq. 4 (wrap S in
``stop_gradient`` and call :func:`update_center`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _flat_inputs(scales, closeness, mask):
    scales = jnp.asarray(scales, jnp.float32)
    closeness = jnp.asarray(closeness, jnp.float32)
    if scales.shape != closeness.shape:
        raise ValueError(
            f"scales and closeness must have one shape [M], got {tuple(scales.shape)} "
            f"and {tuple(closeness.shape)}"
        )
    if mask is None:
        mask = jnp.ones(scales.shape, jnp.float32)
    else:
        mask = jnp.asarray(mask, jnp.float32)
        if mask.shape != scales.shape:
            raise ValueError(f"mask must be {tuple(scales.shape)}, got {tuple(mask.shape)}")
    return scales.reshape(-1), closeness.reshape(-1), mask.reshape(-1)


def center_loss(
    scales: jax.Array,
    closeness: jax.Array,
    center: jax.Array,
    *,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Closeness center loss ``Ls = 1/2 sum_i mask_i (S_i r_i**2 - S)**2`` (Eq. 2).

    Args:
      scales: [M] scale factors r_i of the selected dense regions (any shape, e.g. [B]).
      closeness: [M] closeness levels S_i (Eq. 1) of the regions before rescaling, in pixels.
      center: scalar learned closeness center S.
      mask: optional [M] region validity (0 for images with no selected region).

    Returns:
      Scalar float32 loss (summed over regions, as Eq. 2).
    """
    r, s_i, mask = _flat_inputs(scales, closeness, mask)
    center = jnp.asarray(center, jnp.float32)
    if center.ndim != 0:
        raise ValueError(f"center must be a scalar, got shape {tuple(center.shape)}")
    diff = s_i * jnp.square(r) - center
    return 0.5 * jnp.sum(jnp.where(mask > 0, mask * jnp.square(diff), 0.0))


def update_center(
    center: jax.Array,
    scales: jax.Array,
    closeness: jax.Array,
    *,
    alpha: float = 1e-3,
    mask: jax.Array | None = None,
) -> jax.Array:
    """One center update of Eq. 4 (no gradient flows through it).

    ``dS = sum_i (S - S_i r_i**2) / (1 + M)`` and ``S' = S - alpha * dS``, with M the number of
    valid regions gathered over the update period (T iterations; pass them all at once).

    Args:
      center: scalar current center S^t.
      scales: [M] scale factors r_i.
      closeness: [M] closeness levels S_i.
      alpha: center learning rate (Table 1: 1e-3).
      mask: optional [M] region validity; M counts the valid ones.

    Returns:
      Scalar float32 S^{t+T}; equal to S^t when no region is valid.
    """
    r, s_i, mask = _flat_inputs(scales, closeness, mask)
    center = jnp.asarray(center, jnp.float32)
    if center.ndim != 0:
        raise ValueError(f"center must be a scalar, got shape {tuple(center.shape)}")
    valid = mask > 0
    diff = jnp.where(valid, center - s_i * jnp.square(r), 0.0)
    delta = jnp.sum(diff) / (1.0 + jnp.sum(valid))
    return jax.lax.stop_gradient(center - alpha * delta)


def closeness(points: jax.Array, point_mask: jax.Array) -> jax.Array:
    """Closeness level of Eq. 1: mean distance from each point to its nearest other point.

    Args:
      points: [B, P, 2] (x, y) pixels (padded).
      point_mask: [B, P] validity (e.g. the points inside the selected box).

    Returns:
      [B] float32 closeness in pixels; 0 for images with fewer than two valid points (as
      :func:`crowdjax.data.labels.closeness`).
    """
    if points.ndim != 3 or points.shape[-1] != 2 or point_mask.shape != points.shape[:2]:
        raise ValueError(
            f"expected points [B, P, 2] and point_mask [B, P], got {tuple(points.shape)} "
            f"and {tuple(point_mask.shape)}"
        )
    p = points.astype(jnp.float32)
    valid = point_mask.astype(bool)
    d2 = jnp.sum(jnp.square(p[:, :, None, :] - p[:, None, :, :]), axis=-1)  # [B, P, P]
    p_count = p.shape[1]
    pair = valid[:, :, None] & valid[:, None, :] & ~jnp.eye(p_count, dtype=bool)[None]
    nearest2 = jnp.min(jnp.where(pair, d2, jnp.inf), axis=-1)  # [B, P]
    has_nn = valid & jnp.isfinite(nearest2)
    # sqrt after the min, and only on finite values: no inf/NaN in the graph.
    nearest = jnp.sqrt(jnp.where(has_nn, nearest2, 0.0))
    count = jnp.sum(has_nn, axis=1)
    return jnp.where(count > 1, jnp.sum(nearest, axis=1) / jnp.maximum(count, 1), 0.0)
