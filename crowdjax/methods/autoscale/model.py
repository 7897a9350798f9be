"""AutoScale network: the VGG16-FPN counting network plus the L2S scale predictor (Fig. 2).

One module holds both parameter sets (``params["fpn"]``, ``params["l2s"]``) so that the initial
prediction and the re-prediction on the rescaled dense region share the counting network, as in
the paper. ``use_l2s=False`` is the FPN baseline of the ablation (no L2S parameters at all).

Entry points (``model.apply(variables, ..., method=...)``):
  * ``__call__(images, return_features=False)``: the FPN outputs (see
    :class:`crowdjax.methods.autoscale.fpn.AutoScaleFPN`).
  * ``scale(features, box)``: r [B] for dense boxes in image pixels (L2S, Sec 3.3).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from crowdjax.methods.autoscale.fpn import AutoScaleFPN
from crowdjax.methods.autoscale.l2s import L2S


class AutoScaleNet(nn.Module):
    """Counting network (regression or localization head) with an optional L2S module.

    Attributes:
      head: "regression" (a density map) or "localization" (11 distance classes).
      num_classes: distance classes N_c.
      width: channel multiplier of the FPN (the L2S module keeps its widths).
      use_l2s: build the L2S module (False: FPN baseline).
      feature_stride: stride of the feature given to L2S (1 as the reference).
      l2s_output: "clamp" (paper) or "sigmoid" (see :class:`crowdjax.methods.autoscale.l2s.L2S`).
      fpn_layout: "crowdjax" or "official" (:class:`~crowdjax.methods.autoscale.fpn.AutoScaleFPN`).
      input_convention: what the backbone weights expect.
      dtype: compute dtype.
      remat: recompute the backbone's activations in the backward pass (`AutoScaleFPN`).
    """

    head: str = "regression"
    num_classes: int = 11
    width: float = 1.0
    use_l2s: bool = True
    feature_stride: int = 1
    l2s_output: str = "clamp"
    fpn_layout: str = "crowdjax"
    input_convention: str = "imagenet"
    dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        self.fpn = AutoScaleFPN(
            head=self.head,
            num_classes=self.num_classes,
            width=self.width,
            feature_stride=self.feature_stride,
            layout=self.fpn_layout,
            input_convention=self.input_convention,
            dtype=self.dtype,
            remat=self.remat,
        )
        if self.use_l2s:
            self.l2s = L2S(feature_stride=self.feature_stride, output=self.l2s_output)

    def __call__(self, images: jax.Array, *, return_features: bool = False) -> dict:
        return self.fpn(images, return_features=return_features)

    def scale(self, features: jax.Array, box: jax.Array) -> jax.Array:
        """Scale factors r [B] of the boxes [B, 4] (image pixels) from FPN features."""
        return self.l2s(features, box)

    def init_all(self, images: jax.Array) -> dict:
        """Touches every submodule (for ``init``): FPN, and L2S on a whole-image box."""
        out = self.fpn(images, return_features=self.use_l2s)
        if self.use_l2s:
            b, h, w = images.shape[:3]
            box = jnp.tile(jnp.array([[0, 0, w, h]], jnp.int32), (b, 1))
            out["scale"] = self.l2s(out["features"], box)
        return out
