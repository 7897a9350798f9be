"""Differentiable rescaling of a box onto a fixed canvas, and back (learning to scale: AutoScale
Sec 3.3, L2SM Sec 3.3).

Geometry (whole module). A box is ``(x0, y0, w, h)`` in pixels of the map it refers to (integer
valued, as :mod:`~crowdjax.methods.autoscale.dense_regions` returns). Rescaling the box by ``r``
maps an image point (x, y) to the canvas point ``(r (x - x0), r (y - y0))``: pixel edges map to
pixel edges, so canvas pixel (i, j), centred at (j + 0.5, i + 0.5), samples the image at
``(x0 + (j + 0.5) / r, y0 + (i + 0.5) / r)``: the half-pixel convention of ``cv2.resize`` and of
the project's point coordinates. The reference code instead crops and resizes with
``align_corners=True`` to ``int(r h) x int(r w)``; we keep half-pixel so that
:func:`rescale_points` is the exact pre-image of :func:`affine_sample` (online GT, Sec 3.4).
Samples are clamped to the box (crop-then-resize, replicate border, as ``cv2.resize`` of the
crop). The canvas has a static shape; pixels whose centre maps outside the box are zero and
masked out.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def check_boxes(x, box, scale):
    if x.ndim != 4:
        raise ValueError(f"expected [B, H, W, C] inputs, got shape {tuple(x.shape)}")
    batch = x.shape[0]
    if box.shape != (batch, 4):
        raise ValueError(f"box must be [B, 4] = ({batch}, 4), got shape {tuple(box.shape)}")
    if scale is not None and scale.shape != (batch,):
        raise ValueError(f"scale must be [B] = ({batch},), got shape {tuple(scale.shape)}")


def _axis_sampling(start, length, size, n_out, scale):
    """Bilinear taps along one axis: indices i0, i1 [n_out] int32, weight t [n_out], valid."""
    j = jnp.arange(n_out, dtype=scale.dtype)
    pre = (j + 0.5) / scale  # canvas pixel centre in box coordinates (px)
    valid = pre < length
    src = start + pre - 0.5  # continuous index (pixel centres at integers)
    lo = jnp.clip(start, 0.0, size - 1.0)
    hi = jnp.clip(start + length - 1.0, lo, size - 1.0)
    src = jnp.clip(src, lo, hi)
    i0 = jnp.floor(src)
    t = src - i0
    i0 = i0.astype(jnp.int32)
    i1 = jnp.minimum(i0 + 1, hi.astype(jnp.int32))
    return i0, i1, t, valid


def affine_sample(
    x: jax.Array, box: jax.Array, scale: jax.Array, out_shape: Sequence[int]
) -> tuple[jax.Array, jax.Array]:
    """Crops ``box`` and rescales it by ``scale`` onto a fixed canvas (bilinear, differentiable).

    A spatial transformer restricted to an axis-aligned scale + translation (STN with the scale
    entry set to r, Sec 3.3), differentiable w.r.t. ``x`` and ``scale``.

    Args:
      x: [B, H, W, C] images or features.
      box: [B, 4] (x0, y0, w, h) in pixels of ``x`` (integer valued, w, h >= 1).
      scale: [B] scale factors r > 0.
      out_shape: static canvas size (H_c, W_c); content beyond it is dropped.

    Returns:
      canvas: [B, H_c, W_c, C] (dtype of ``x``), zero outside the valid area.
      mask: [B, H_c, W_c] float32, 1 on the ~(r h) x (r w) valid top-left area.
    """
    check_boxes(x, box, scale)
    hc, wc = (int(s) for s in out_shape)
    dtype = jnp.promote_types(scale.dtype, jnp.float32)  # positions in >= float32
    box = box.astype(dtype)
    scale = scale.astype(dtype)

    def one(img, b, r):
        iy0, iy1, ty, vy = _axis_sampling(b[1], b[3], img.shape[0], hc, r)
        ix0, ix1, tx, vx = _axis_sampling(b[0], b[2], img.shape[1], wc, r)
        ty = ty.astype(img.dtype)[:, None, None]
        rows = img[iy0] + (img[iy1] - img[iy0]) * ty  # [H_c, W, C]
        tx = tx.astype(img.dtype)[None, :, None]
        out = rows[:, ix0] + (rows[:, ix1] - rows[:, ix0]) * tx  # [H_c, W_c, C]
        mask = (vy[:, None] & vx[None, :]).astype(jnp.float32)
        return out * mask[..., None].astype(img.dtype), mask

    return jax.vmap(one)(x, box, scale)


def rescale_points(
    points: jax.Array,
    point_mask: jax.Array,
    box: jax.Array,
    scale: jax.Array,
    *,
    canvas_shape: Sequence[int] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Maps head points into the rescaled canvas: ``(r (x - x0), r (y - y0))``.

    Args:
      points: [B, P, 2] (x, y) image pixels.
      point_mask: [B, P] validity.
      box: [B, 4] (x0, y0, w, h); scale: [B].
      canvas_shape: optional (H_c, W_c): also drop points that land beyond the canvas.

    Returns:
      canvas_points: [B, P, 2] float32; canvas_mask: [B, P] bool = valid and inside
      [x0, x0 + w) x [y0, y0 + h) (and the canvas).
    """
    if points.ndim != 3 or points.shape[-1] != 2 or point_mask.shape != points.shape[:2]:
        raise ValueError(
            f"expected points [B, P, 2] and point_mask [B, P], got {tuple(points.shape)} "
            f"and {tuple(point_mask.shape)}"
        )
    box = box.astype(jnp.float32)
    origin, size = box[:, None, :2], box[:, None, 2:]
    rel = points.astype(jnp.float32) - origin
    inside = jnp.all((rel >= 0) & (rel < size), axis=-1)
    out = rel * scale.astype(jnp.float32)[:, None, None]
    if canvas_shape is not None:
        hc, wc = (float(s) for s in canvas_shape)
        inside &= (out[..., 0] < wc) & (out[..., 1] < hc)
    return out, point_mask.astype(bool) & inside


def fit_box_to_canvas(box: jax.Array, scale: jax.Array, canvas_shape: Sequence[int]) -> jax.Array:
    """Shrinks each box (x0, y0, w, h) [B, 4] so that it fits the canvas once rescaled by r.

    The kept part is centred in the box (the middle of a dense region) and has integer sides
    ``min(w, floor(W_c / r))`` x ``min(h, floor(H_c / r))``. Counting with the fitted box loses
    nothing: the part of the dense region left out is counted by the initial prediction
    (N_f = sum Y - sum Y_d + sum Y'_d over the fitted box).
    """
    hc, wc = (int(s) for s in canvas_shape)
    box = box.astype(jnp.int32)
    r = scale.astype(jnp.float32)

    def largest(n):  # floor(n / r), lowered by one where float32 rounding gives r * m > n
        m = jnp.floor(n / r)
        return jnp.where(m * r > n, m - 1, m).astype(jnp.int32)

    max_w, max_h = largest(wc), largest(hc)
    w = jnp.clip(jnp.minimum(box[:, 2], max_w), 1, None)
    h = jnp.clip(jnp.minimum(box[:, 3], max_h), 1, None)
    x0 = box[:, 0] + (box[:, 2] - w) // 2
    y0 = box[:, 1] + (box[:, 3] - h) // 2
    return jnp.stack([x0, y0, w, h], axis=1)


def canvas_extent(mask: jax.Array) -> jax.Array:
    """(rows, cols) [..., 2] int32 of the valid top-left area of canvas masks [..., h_c, w_c]."""
    return jnp.stack([mask[..., :, 0].sum(-1), mask[..., 0, :].sum(-1)], axis=-1).astype(jnp.int32)


def box_mask(box: jax.Array, shape: Sequence[int]) -> jax.Array:
    """[B, H, W] float32 indicator of the pixels inside each box (x0, y0, w, h) [B, 4]."""
    h, w = (int(s) for s in shape)
    box = box.astype(jnp.int32)
    rows = jnp.arange(h)[None, :]
    cols = jnp.arange(w)[None, :]
    in_y = (rows >= box[:, 1:2]) & (rows < box[:, 1:2] + box[:, 3:4])
    in_x = (cols >= box[:, 0:1]) & (cols < box[:, 0:1] + box[:, 2:3])
    return (in_y[:, :, None] & in_x[:, None, :]).astype(jnp.float32)


def canvas_mass_to_image(
    canvas: jax.Array, box: jax.Array, scale: jax.Array, image_shape: Sequence[int]
) -> jax.Array:
    """Moves a canvas map's mass back to image pixels (mass preserving; inverse of the sampler).

    Canvas pixel (i, j) lands in the image pixel containing its pre-image centre
    ``(x0 + (j + 0.5) / r, y0 + (i + 0.5) / r)``; its whole value is added there. Used to compose
    the final density map: the sum over the box equals the sum of the re-prediction.

    Args:
      canvas: [B, H_c, W_c] map on the canvas (zero outside its valid area).
      box: [B, 4] (x0, y0, w, h) of the rescaled region (as given to :func:`affine_sample`).
      scale: [B] scale factors r.
      image_shape: static (H, W).

    Returns:
      [B, H, W] float32.
    """
    h, w = (int(s) for s in image_shape)
    hc, wc = canvas.shape[1:3]

    def one(c, b, r):
        b = b.astype(jnp.float32)
        ys = jnp.floor(b[1] + (jnp.arange(hc, dtype=jnp.float32) + 0.5) / r).astype(jnp.int32)
        xs = jnp.floor(b[0] + (jnp.arange(wc, dtype=jnp.float32) + 0.5) / r).astype(jnp.int32)
        ys = jnp.clip(ys, 0, h - 1)
        xs = jnp.clip(xs, 0, w - 1)
        flat = (ys[:, None] * w + xs[None, :]).reshape(-1)
        out = jax.ops.segment_sum(c.reshape(-1).astype(jnp.float32), flat, num_segments=h * w)
        return out.reshape(h, w)

    return jax.vmap(one)(canvas, box, scale.astype(jnp.float32))


def triangle_weights(
    n_in: int, in_valid: jax.Array, n_out: int, out_start: jax.Array, out_len: jax.Array
) -> jax.Array:
    """Unnormalised linear-resampling weights [..., n_out, n_in] between traced extents.

    Maps the valid input cells ``[0, in_valid)`` onto the output cells ``[out_start, out_start +
    out_len)`` (half-pixel centres; the triangle widens to the input spacing when downsampling,
    as antialiased ``jax.image.resize``); weights are zero outside both extents. Normalise the
    rows for an interpolation (each output a weighted mean of inputs), or the columns for a
    mass-preserving splat (each input's mass spread over outputs, sums kept exactly).

    Args:
      n_in, n_out: static sizes of the input and output axes.
      in_valid, out_start, out_len: int arrays of one shape [...] (broadcast together).
    """
    in_valid = jnp.asarray(in_valid, jnp.float32)[..., None, None]
    out_start = jnp.asarray(out_start, jnp.float32)[..., None, None]
    out_len = jnp.asarray(out_len, jnp.float32)[..., None, None]
    o = jnp.arange(n_out, dtype=jnp.float32)[:, None]
    j = jnp.arange(n_in, dtype=jnp.float32)[None, :]
    ratio = in_valid / jnp.maximum(out_len, 1.0)
    u = (o - out_start + 0.5) * ratio - 0.5  # output centre in input cells
    support = jnp.maximum(ratio, 1.0)
    w = jnp.clip(1.0 - jnp.abs(u - j) / support, 0.0, None)
    inside = (o >= out_start) & (o < out_start + out_len) & (j < in_valid)
    return jnp.where(inside, w, 0.0)


def normalize_weights(w: jax.Array, axis: int) -> jax.Array:
    """``w`` divided by its sums along ``axis`` (-1: rows, interpolation; -2: columns, splat)."""
    total = w.sum(axis=axis, keepdims=True)
    return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)


def _adaptive_weights(start, length, size, n_out):
    """[n_out, size] averaging weights of torch adaptive_avg_pool over [start, start + length)."""
    i = jnp.arange(n_out)
    lo = (i * length) // n_out  # torch: floor(i L / n), ceil((i + 1) L / n)
    hi = -(-((i + 1) * length) // n_out)
    pos = jnp.arange(size)[None, :] - start
    inside = (pos >= lo[:, None]) & (pos < hi[:, None])
    return inside / jnp.maximum(hi - lo, 1)[:, None].astype(jnp.float32)


def roi_adaptive_avg_pool(features: jax.Array, box: jax.Array, out_size: int = 14) -> jax.Array:
    """``F.adaptive_avg_pool2d(features[:, :, y0:y0+h, x0:x0+w], out_size)`` with a traced box.

    Exact torch bins, as two small averaging matrices (static shapes, differentiable in
    ``features``).

    Args:
      features: [B, H, W, C].
      box: [B, 4] int (x0, y0, w, h) in feature pixels.
      out_size: output side n.

    Returns:
      [B, n, n, C] float32.
    """
    check_boxes(features, box, None)
    h, w = features.shape[1:3]
    box = box.astype(jnp.int32)
    # Clip the box to the map (e.g. after box_at_stride): every bin averages real pixels.
    origin = jnp.clip(box[:, :2], 0, jnp.array([w - 1, h - 1]))
    size = jnp.clip(box[:, 2:], 1, jnp.array([w, h]) - origin)
    box = jnp.concatenate([origin, size], axis=1)

    def one(f, b):
        wy = _adaptive_weights(b[1], b[3], h, out_size)
        wx = _adaptive_weights(b[0], b[2], w, out_size)
        return jnp.einsum("ih,hwc,jw->ijc", wy, f.astype(jnp.float32), wx)

    return jax.vmap(one)(features, box)
