"""Learning to scale (AutoScale Sec 3.3): the L2S module predicting a dense box's scale r.

The rescaling itself (box geometry, sampler, mass back to the image) is
:mod:`crowdjax.models.rescale`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from crowdjax.models import layers
from crowdjax.models.conv import Conv
from crowdjax.models.rescale import roi_adaptive_avg_pool

MIN_SCALE = 0.5
MAX_SCALE = 3.0


def box_at_stride(box: jax.Array, stride: int) -> jax.Array:
    """Smallest box of a stride-``stride`` map covering an image box [B, 4] (x0, y0, w, h)."""
    box = box.astype(jnp.int32)
    lo = box[:, :2] // stride
    hi = -(-(box[:, :2] + box[:, 2:]) // stride)
    return jnp.concatenate([lo, jnp.maximum(hi - lo, 1)], axis=1)


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
            conv = Conv(c, (3, 3), padding=1, kernel_init=init, dtype=self.dtype, name=f"conv{k}")
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
