"""K x K region division, region densities and density groups of L2SM (Sec 3.3, Sec 4.2).

Geometry. Regions are cut on the grid of the backbone features (``CELL`` = 8 px cells), so a
region is a whole number of feature cells and of density-map cells (stride 4). An image with
``h`` real pixel rows has ``n = ceil(h / CELL)`` real cell rows; region row ``i`` of ``K`` spans
cells ``[floor(i n / K), floor((i + 1) n / K))`` (columns alike), i.e. pixel rows ``[CELL
floor(i n / K), min(CELL floor((i + 1) n / K), h))``. Regions are numbered row-major, ``R = K * K``
per image; a region with no cell (an image narrower than K cells) is invalid.

Density. The average density of a region is its people (the density map summed over it) per
``AREA_UNIT`` = 64 px^2 of its real area (an 8 x 8 block: numbers of order 1 on crowd images,
the unit of the thresholds and of the MPCL centers).

Groups (Sec 4.2). All regions of the training set, sorted by ground-truth average density, are
cut into G groups of equal size: with the N densities sorted ascending a_0 <= ... <= a_{N-1},
group g holds positions ``[floor(g N / G), floor((g + 1) N / G))``, its threshold is the largest
density below it, ``t_g = a_{floor(g N / G) - 1}`` (g = 1 .. G-1), and a region of density ``a``
is in group ``#{g : t_g < a}`` (equal sizes for distinct densities; ties go to the lower
group). The densest C groups are dense: center index ``group - (G - C)``; the other regions are
not selected (-1). An empty region (a = 0) is therefore never dense unless C = G (UCF_CC_50:
every region is centralised).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

CELL = 8  # px per feature cell (the SPN backbone's stride).
AREA_UNIT = 64.0  # px^2: region densities are people per 8 x 8 px.


def real_size(image_mask: jax.Array) -> jax.Array:
    """(rows, cols) [B, 2] int32 of real pixels of top-left aligned masks [B, H, W]."""
    mask = image_mask.astype(bool)
    return jnp.stack([mask[:, :, 0].sum(1), mask[:, 0, :].sum(1)], axis=1).astype(jnp.int32)


def region_boxes(size: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The K x K regions of images of real pixel size ``size`` [B, 2] (rows, cols).

    Returns:
      boxes: [B, R, 4] int32 (x0, y0, w, h) in feature cells (R = K * K, row-major).
      area: [B, R] float32 real pixel area of each region.
      valid: [B, R] bool (a region of at least one cell).
    """
    size = jnp.asarray(size, jnp.int32)
    cells = -(-size // CELL)  # [B, 2]
    edges = (jnp.arange(k + 1)[None, None, :] * cells[:, :, None]) // k  # [B, 2, K + 1]
    y0, y1 = edges[:, 0, :-1], edges[:, 0, 1:]  # [B, K]
    x0, x1 = edges[:, 1, :-1], edges[:, 1, 1:]
    rows_px = jnp.clip(jnp.minimum(y1 * CELL, size[:, :1]) - y0 * CELL, 0, None)
    cols_px = jnp.clip(jnp.minimum(x1 * CELL, size[:, 1:]) - x0 * CELL, 0, None)
    b = size.shape[0]
    grid = lambda v, axis: jnp.broadcast_to(jnp.expand_dims(v, axis), (b, k, k)).reshape(b, -1)
    boxes = jnp.stack(
        [grid(x0, 1), grid(y0, 2), grid(x1 - x0, 1), grid(y1 - y0, 2)], axis=-1
    ).astype(jnp.int32)
    area = (grid(rows_px, 2) * grid(cols_px, 1)).astype(jnp.float32)
    return boxes, area, area > 0


def region_sums(density: jax.Array, boxes: jax.Array, stride: int) -> jax.Array:
    """Sums [B, R] of a map [B, h, w] at ``stride`` px (CELL a multiple of it) over the boxes.

    Exact integral-image sums with traced boxes (cells beyond the map count as zero).
    """
    if CELL % stride:
        raise ValueError(f"the map stride {stride} must divide the region cell {CELL}")
    f = CELL // stride
    cum = jnp.pad(
        jnp.cumsum(jnp.cumsum(density.astype(jnp.float32), 1), 2), ((0, 0), (1, 0), (1, 0))
    )
    h, w = density.shape[1:]
    x0 = jnp.clip(boxes[..., 0] * f, 0, w)
    y0 = jnp.clip(boxes[..., 1] * f, 0, h)
    x1 = jnp.clip((boxes[..., 0] + boxes[..., 2]) * f, 0, w)
    y1 = jnp.clip((boxes[..., 1] + boxes[..., 3]) * f, 0, h)
    at = jax.vmap(lambda c, y, x: c[y, x])
    return at(cum, y1, x1) - at(cum, y0, x1) - at(cum, y1, x0) + at(cum, y0, x0)


def average_density(sums: jax.Array, area: jax.Array) -> jax.Array:
    """People per AREA_UNIT [B, R] (0 for invalid regions)."""
    return jnp.where(area > 0, sums * AREA_UNIT / jnp.maximum(area, 1.0), 0.0)


def assign_groups(
    density: jax.Array, valid: jax.Array, thresholds: jax.Array, num_centers: int
) -> jax.Array:
    """Center index [B, R] int32 of each region (0 .. C-1 for the densest C groups, else -1).

    Args:
      density: [B, R] average densities.
      valid: [B, R] region validity.
      thresholds: [G - 1] increasing group thresholds (from :func:`grouping_thresholds`).
      num_centers: C <= G.
    """
    groups = thresholds.shape[0] + 1
    if not 1 <= num_centers <= groups:
        raise ValueError(f"the number of centers must be in 1..G={groups}, got {num_centers}")
    group = jnp.sum(thresholds[None, None, :] < density[..., None], axis=-1)
    center = group - (groups - num_centers)
    return jnp.where(valid & (center >= 0), center, -1).astype(jnp.int32)


def grouping_thresholds(densities: np.ndarray, groups: int) -> np.ndarray:
    """Thresholds [G - 1] cutting sorted densities [N] into G groups of equal size (module doc)."""
    a = np.sort(np.asarray(densities, np.float64).reshape(-1))
    if groups < 1:
        raise ValueError(f"the number of groups G must be >= 1, got {groups}")
    if a.size < groups:
        raise ValueError(f"{a.size} regions cannot make {groups} groups")
    return np.array([a[(g * a.size) // groups - 1] for g in range(1, groups)], np.float32)


def group_means(densities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Mean density [G] of each group of the densities (the regions' ``#{t_g < a}`` groups).

    A group left empty by ties takes its lower threshold (0 for the first group)."""
    a = np.asarray(densities, np.float64).reshape(-1)
    t = np.asarray(thresholds, np.float64)
    group = np.sum(t[None, :] < a[:, None], axis=1)
    lower = np.concatenate([[0.0], t])
    means = [a[group == g].mean() if np.any(group == g) else lower[g] for g in range(len(t) + 1)]
    return np.array(means, np.float32)
