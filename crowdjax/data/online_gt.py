"""Online ground truth for the rescaled dense region in jnp (AutoScale Sec 3.4-3.5).

The rescaled region's GT is regenerated from the scaled head points with the same kernel
(regression) or the same distance classes (localization). These are jittable twins of
:func:`crowdjax.data.labels.density_map` (fixed sigma) and
:func:`crowdjax.data.labels.distance_label_map`, with identical conventions: a head at (x, y)
belongs to pixel (floor(y), floor(x)); points outside the map or masked out are ignored.
They let the whole AutoScale step run under one jit; the host functions remain the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crowdjax.data.labels import DEFAULT_DISTANCE_EDGES, gaussian_kernel1d


def _head_pixels(points, point_mask, shape):
    """(rows, cols) int32 [B, P] and validity [B, P] of the head pixels inside ``shape``."""
    if points.ndim != 3 or points.shape[-1] != 2 or point_mask.shape != points.shape[:2]:
        raise ValueError(
            f"expected points [B, P, 2] and point_mask [B, P], got {tuple(points.shape)} "
            f"and {tuple(point_mask.shape)}"
        )
    h, w = shape
    x, y = points[..., 0], points[..., 1]
    valid = point_mask.astype(bool) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    rows = jnp.floor(jnp.where(valid, y, 0.0)).astype(jnp.int32)
    cols = jnp.floor(jnp.where(valid, x, 0.0)).astype(jnp.int32)
    return rows, cols, valid


def _profiles(centres, size, kernel, extent=None):
    """[B, P, size] truncated kernel profiles, each renormalised to sum 1 inside [0, size)
    (or inside [0, extent) per map, ``extent`` [B, 1])."""
    radius = kernel.shape[0] // 2
    pos = jnp.arange(size, dtype=jnp.int32)
    offset = pos - centres[..., None]
    idx = jnp.clip(offset + radius, 0, 2 * radius)
    keep = jnp.abs(offset) <= radius
    if extent is not None:
        keep &= pos < extent[..., None]
    prof = jnp.where(keep, jnp.asarray(kernel)[idx], 0.0)
    return prof / jnp.sum(prof, axis=-1, keepdims=True)  # centre is inside: sum > 0


def _pooled_profiles(centres, cells, stride, kernel, extent=None):
    """[B, P, cells] kernel mass of each ``stride``-px cell, renormalised to sum 1 inside
    [0, cells * stride) (or [0, extent)): :func:`_profiles` summed over each cell, computed from
    the kernel's cumulative sums (memory P x cells instead of P x pixels)."""
    radius = kernel.shape[0] // 2
    cum = jnp.asarray(np.concatenate([[0.0], np.cumsum(kernel, dtype=np.float64)]), jnp.float32)

    def below(t):  # kernel mass at offsets < t
        return cum[jnp.clip(t + radius, 0, 2 * radius + 1)]

    limit = cells * stride if extent is None else extent[..., None]  # [B, 1, 1]
    lo = jnp.minimum(jnp.arange(cells, dtype=jnp.int32) * stride, limit)
    hi = jnp.minimum(lo + stride, limit)
    c = centres[..., None]
    mass = below(hi - c) - below(lo - c)
    total = below(limit - c) - below(-c)
    return mass / total  # the centre is inside: total > 0


def density_map(
    points: jax.Array,
    point_mask: jax.Array,
    shape: Sequence[int],
    *,
    sigma: float = 4.0,
    truncate: float = 4.0,
    extent: jax.Array | None = None,
    stride: int = 1,
) -> jax.Array:
    """Count-preserving fixed-sigma Gaussian density map (jnp twin of labels.density_map).

    Args:
      points: [B, P, 2] (x, y) pixels; point_mask: [B, P].
      shape: static (H, W).
      sigma, truncate: kernel width (px) and half-width in sigmas (scipy's truncation).
      extent: optional [B, 2] int (h, w): each map's valid top-left area (e.g. the rescaled box on
        a fixed canvas). Kernels are truncated and renormalised inside it, as at the image
        border, and a head on the row/column just past it is moved onto its last row/column,
        so every valid head keeps mass 1 inside the area.
      stride: sum-pool the map by this factor (`labels.sum_pool`); H and W must be multiples
        of it. Pooled exactly and cheaply: the kernel is separable, so each head's 1-D profiles
        are summed per cell (from the kernel's cumulative sums) before their outer product.

    Returns:
      [B, H / stride, W / stride] float32; each valid head inside the map contributes mass 1.
    """
    h, w = (int(s) for s in shape)
    if stride < 1 or h % stride or w % stride:
        raise ValueError(f"map shape {(h, w)} must be a multiple of the stride {stride}")
    rows, cols, valid = _head_pixels(points, point_mask, (h, w))
    kernel = gaussian_kernel1d(sigma, truncate).astype(np.float32)
    if stride > 1:
        if extent is None:
            gy = _pooled_profiles(rows, h // stride, stride, kernel)
            gx = _pooled_profiles(cols, w // stride, stride, kernel)
        else:
            ext = jnp.clip(extent.astype(jnp.int32), 1, jnp.array([h, w]))
            gy = _pooled_profiles(
                jnp.minimum(rows, ext[:, :1] - 1), h // stride, stride, kernel, ext[:, :1]
            )
            gx = _pooled_profiles(
                jnp.minimum(cols, ext[:, 1:] - 1), w // stride, stride, kernel, ext[:, 1:]
            )
        gy = gy * valid[..., None]
        return jnp.einsum("bph,bpw->bhw", gy, gx, precision=jax.lax.Precision.HIGHEST)
    if extent is None:
        gy = _profiles(rows, h, kernel)
        gx = _profiles(cols, w, kernel)
    else:
        ext = jnp.clip(extent.astype(jnp.int32), 1, jnp.array([h, w]))
        gy = _profiles(jnp.minimum(rows, ext[:, :1] - 1), h, kernel, ext[:, :1])
        gx = _profiles(jnp.minimum(cols, ext[:, 1:] - 1), w, kernel, ext[:, 1:])
    gy = gy * valid[..., None]
    return jnp.einsum("bph,bpw->bhw", gy, gx, precision=jax.lax.Precision.HIGHEST)


def distance_label_map(
    points: jax.Array,
    point_mask: jax.Array,
    shape: Sequence[int],
    *,
    edges: Sequence[float] = DEFAULT_DISTANCE_EDGES,
    chunk: int = 64,
) -> jax.Array:
    """Distance-label map (jnp twin of labels.distance_label_map, Sec 3.5).

    Exact: the squared distance between pixel centres is an integer, compared with the squared
    class edges (class = number of edges <= distance, minus 1). Points are scanned in chunks of
    ``chunk`` (memory B x chunk x H x W).

    Args:
      points: [B, P, 2] (x, y) pixels; point_mask: [B, P].
      shape: static (H, W).
      edges: increasing lower class edges in px starting at 0 (11 classes by default).
      chunk: points per scan step.

    Returns:
      [B, H, W] int32 classes in [0, len(edges) - 1]; the last class where no head is valid.
    """
    h, w = (int(s) for s in shape)
    edges = np.asarray(edges, np.float64)
    if edges.ndim != 1 or edges.size == 0 or edges[0] > 0 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be increasing and start at <= 0, got {edges}")
    rows, cols, valid = _head_pixels(points, point_mask, (h, w))
    b, p = rows.shape
    pad = -p % chunk
    big = jnp.int32(2**30)
    rows = jnp.pad(rows, ((0, 0), (0, pad))).reshape(b, -1, chunk).transpose(1, 0, 2)
    cols = jnp.pad(cols, ((0, 0), (0, pad))).reshape(b, -1, chunk).transpose(1, 0, 2)
    valid = jnp.pad(valid, ((0, 0), (0, pad))).reshape(b, -1, chunk).transpose(1, 0, 2)
    r = jnp.arange(h, dtype=jnp.int32)
    c = jnp.arange(w, dtype=jnp.int32)

    def step(best, xs):
        rr, cc, vv = xs  # [B, chunk]
        dy2 = jnp.square(r[None, None, :] - rr[..., None])  # [B, chunk, H]
        dx2 = jnp.square(c[None, None, :] - cc[..., None])  # [B, chunk, W]
        dy2 = jnp.where(vv[..., None], dy2, big)
        d2 = jnp.min(dy2[..., :, None] + dx2[..., None, :], axis=1)
        return jnp.minimum(best, d2), None

    init = jnp.full((b, h, w), big, jnp.int32)
    d2, _ = jax.lax.scan(step, init, (rows, cols, valid))
    # e <= d  <=>  e^2 <= d^2 for e, d >= 0 (exact in int32 / float for integer edges).
    squared_edges = jnp.asarray(np.square(edges), jnp.float32)
    count = jnp.sum(squared_edges <= d2[..., None].astype(jnp.float32), axis=-1)
    return (count - 1).astype(jnp.int32)
