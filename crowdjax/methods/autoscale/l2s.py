"""Learning to scale (AutoScale Sec 3.3): the L2S module and the differentiable rescaling.

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

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from crowdjax.models import layers

MIN_SCALE = 0.5
MAX_SCALE = 3.0


def _check_boxes(x, box, scale):
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
    _check_boxes(x, box, scale)
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


def canvas_to_image(points: jax.Array, box: jax.Array, scale: jax.Array) -> jax.Array:
    """Inverse of :func:`rescale_points`: canvas (x', y') [B, P, 2] -> image ``x0 + x' / r``."""
    box = box.astype(jnp.float32)
    return box[:, None, :2] + points.astype(jnp.float32) / scale.astype(jnp.float32)[:, None, None]


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


def box_at_stride(box: jax.Array, stride: int) -> jax.Array:
    """Smallest box of a stride-``stride`` map covering an image box [B, 4] (x0, y0, w, h)."""
    box = box.astype(jnp.int32)
    lo = box[:, :2] // stride
    hi = -(-(box[:, :2] + box[:, 2:]) // stride)
    return jnp.concatenate([lo, jnp.maximum(hi - lo, 1)], axis=1)


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
    _check_boxes(features, box, None)
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


class L2S(nn.Module):
    """Scale predictor of Sec 3.3: ROI features pooled to 14 x 14, three 3x3 convs, two FC -> r.

    Layout (reference rate model): conv 3x3 -> 64, ReLU; conv 3x3 -> 32, ReLU, 2x2 avg-pool;
    conv 3x3 -> 32, ReLU, 2x2 avg-pool (14 -> 7 -> 3); FC -> 10, ReLU; FC -> 1.

    **Choice**: the last FC bias starts at 1 so that r starts at the identity scale inside
    [0.5, 3], where the clamp lets the gradient through; ``output="sigmoid"`` gives the smooth
    ``0.5 + 2.5 sigmoid(y - 1 + log(1/4))`` (also 1 at y = 1) instead of the clamp.

    Attributes:
      feature_stride: stride of ``features`` w.r.t. the image (the box is in image pixels).
      pooled_size: ROI pooling size (14).
      channels: conv widths.
      hidden: width of the first FC layer.
      output: "clamp" (paper: clip to [0.5, 3]) or "sigmoid".
      dtype: compute dtype; r is float32.
    """

    feature_stride: int = 1
    pooled_size: int = 14
    channels: tuple[int, int, int] = (64, 32, 32)
    hidden: int = 10
    output: str = "clamp"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, box: jax.Array) -> jax.Array:
        """Predicts the scale factor of each image's dense region.

        Args:
          features: [B, h, w, C] backbone features at ``feature_stride``.
          box: [B, 4] (x0, y0, w, h) dense region in image pixels.

        Returns:
          r: [B] float32 in [0.5, 3].
        """
        if self.output not in ("clamp", "sigmoid"):
            raise ValueError(f"output must be 'clamp' or 'sigmoid', got {self.output!r}")
        box = box_at_stride(box, self.feature_stride) if self.feature_stride > 1 else box
        x = roi_adaptive_avg_pool(features, box, self.pooled_size).astype(self.dtype)
        init = nn.initializers.normal(0.01)  # reference: conv weights N(0, 0.01), bias 0
        for k, c in enumerate(self.channels):
            conv = nn.Conv(
                c, (3, 3), padding=1, kernel_init=init, dtype=self.dtype, name=f"conv{k}"
            )
            x = nn.relu(conv(x))
            if k > 0:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(self._dense(self.hidden, 0.0, "fc0")(x))
        y = self._dense(1, 1.0, "fc1")(x)[:, 0].astype(jnp.float32)
        if self.output == "sigmoid":
            # Shifted so that y = 1 (the initial bias) also gives r = 1: sigmoid(log 1/4) = 0.2.
            z = y - 1.0 + math.log(0.25)
            return MIN_SCALE + (MAX_SCALE - MIN_SCALE) * jax.nn.sigmoid(z)
        return jnp.clip(y, MIN_SCALE, MAX_SCALE)

    def _dense(self, features, bias, name):
        # torch Linear default kernel init; the bias is a constant (see the class doc).
        return nn.Dense(
            features,
            kernel_init=layers.torch_conv_kernel_init(),
            bias_init=nn.initializers.constant(bias),
            dtype=self.dtype,
            name=name,
        )
