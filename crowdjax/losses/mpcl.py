"""Multipolar center loss (MPCL) of L2SM (Xu et al., ICCV 2019, Sec 3.3-3.4, Eq. 1-2).

Every image is divided into K x K regions; a selected (dense) region i of density group c has
average density D_i and learned scale ratio r_i. Its relative density level is ``d_i = D_i /
r_i**2`` (zooming by r spreads the same people over r**2 times the area). MPCL pulls every d_i to
the center d_c of its group:

* :func:`multipolar_center_loss`: ``L_c = sum_c sum_{i in c} (D_i / r_i**2 - d_c)**2`` (Eq. 2,
  no 1/2), per image.
* :func:`update_multipolar_centers`: Eq. 1 over a batch, per center,
  ``delta_c = sum_{i in c} (d_c - D_i / r_i**2) / (1 + n_c)``, ``d_c <- d_c - alpha delta_c``
  (n_c regions of center c in the batch; a center with no region keeps its value).

Regions are given as ``[B, R]`` arrays (R = K * K) with ``group [B, R]`` int: the index of the
region's center in ``0..C-1``, or -1 for a region that is not selected (sparse, padding, outside
the image). Both functions are pure and work under ``jax.jit``, ``jax.grad`` and ``jax.vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _checked(region_density, scale, group, centers):
    region_density = jnp.asarray(region_density, jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)
    group = jnp.asarray(group)
    centers = jnp.asarray(centers, jnp.float32)
    if region_density.ndim != 2:
        raise ValueError(f"region_density must be [B, R], got shape {tuple(region_density.shape)}")
    for name, value in (("scale", scale), ("group", group)):
        if value.shape != region_density.shape:
            raise ValueError(
                f"{name} must have the shape of region_density {tuple(region_density.shape)}, "
                f"got {tuple(value.shape)}"
            )
    if not jnp.issubdtype(group.dtype, jnp.integer):
        raise ValueError(f"group must be an integer array, got dtype {group.dtype}")
    if centers.ndim != 1 or centers.shape[0] < 1:
        raise ValueError(f"centers must be [C] with C >= 1, got shape {tuple(centers.shape)}")
    return region_density, scale, group, centers


def _one_hot(group, num_centers):
    """[B, R, C] float membership; -1 (not selected) is all zeros."""
    return jax.nn.one_hot(group, num_centers, dtype=jnp.float32)


def relative_density(region_density: jax.Array, scale: jax.Array) -> jax.Array:
    """``d_i = D_i / r_i**2`` [B, R]: the average density of a region zoomed by r_i."""
    return region_density / jnp.square(scale)


def multipolar_center_loss(
    region_density: jax.Array, scale: jax.Array, group: jax.Array, centers: jax.Array
) -> jax.Array:
    """Per-image multipolar center loss (Eq. 2).

    Args:
      region_density: [B, R] average density D_i of every region (persons per unit area, the
        unit of the centers).
      scale: [B, R] scale ratios r_i > 0.
      group: [B, R] int, center index 0..C-1 of a selected region, -1 for a region not selected.
      centers: [C] density centers d_c.

    Returns:
      [B] ``sum_{i selected} (D_i / r_i**2 - d_{group_i})**2``; 0 for an image without selected
      regions. Differentiable w.r.t. the densities, the scales and the centers (wrap the centers
      in ``stop_gradient`` to move them only by :func:`update_multipolar_centers`).
    """
    region_density, scale, group, centers = _checked(region_density, scale, group, centers)
    member = _one_hot(group, centers.shape[0])
    target = member @ centers  # [B, R]: d_c of the region's center (0 where not selected)
    selected = member.sum(-1)
    # Not-selected regions get scale 1 inside the square, so that no 0/0 enters the gradient.
    safe_scale = jnp.where(selected > 0, scale, 1.0)
    diff = relative_density(region_density, safe_scale) - target
    return jnp.sum(selected * jnp.square(diff), axis=-1)


def update_multipolar_centers(
    centers: jax.Array,
    region_density: jax.Array,
    scale: jax.Array,
    group: jax.Array,
    alpha: float | jax.Array,
) -> jax.Array:
    """Eq. 1 over a batch: new centers [C] (no gradient flows through the update).

    Args:
      centers: [C] current centers d_c^t.
      region_density, scale, group: [B, R] as in :func:`multipolar_center_loss`.
      alpha: the centers' learning rate.

    Returns:
      [C] ``d_c - alpha * sum_{i in c} (d_c - D_i / r_i**2) / (1 + n_c)``; centers without
      regions in the batch are returned unchanged.
    """
    region_density, scale, group, centers = _checked(region_density, scale, group, centers)
    centers, region_density, scale = jax.lax.stop_gradient((centers, region_density, scale))
    member = _one_hot(group, centers.shape[0]).reshape(-1, centers.shape[0])  # [B R, C]
    safe_scale = jnp.where(member.sum(-1) > 0, scale.reshape(-1), 1.0)
    d = relative_density(region_density.reshape(-1), safe_scale)  # [B R]
    n = member.sum(0)  # [C]
    delta = (n * centers - member.T @ d) / (1.0 + n)
    return centers - alpha * delta
