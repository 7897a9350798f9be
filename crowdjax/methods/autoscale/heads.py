"""AutoScale's two heads as data: what tells `autoscale_reg` from `autoscale_loc`.

`crowdjax.methods.autoscale.method` writes the training step and the prediction once; a `Head`
gives it what differs between density regression (Sec 3.4) and localization (Sec 3.5): the
model's output and the ground truth it is compared with, the loss of one map, the dense-region
rule, the online GT of the rescaled regions, the count metrics and how a prediction is composed.
`REGRESSION_HEAD` and `LOCALIZATION_HEAD` are bound into the registered methods.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crowdjax.data import labels, online_gt
from crowdjax.losses import dce as dce_lib
from crowdjax.losses import density as density_lib
from crowdjax.methods.autoscale import dense_regions
from crowdjax.models import rescale


class Repredicted(NamedTuple):
    """The re-prediction of the rescaled dense regions (step 4 of `autoscale.method`).

    Attributes:
      box: [B, 4] int32 (x0, y0, w, h), the dense boxes as fitted to the canvas.
      scale: [B] the L2S scale r of each box.
      used: [B] bool, whether the box was re-predicted (area > J).
      canvas_mask: [B, H_c, W_c] float32, the canvas pixels the rescaled box covers.
      out: the model's outputs on the canvas.
    """

    box: jax.Array
    scale: jax.Array
    used: jax.Array
    canvas_mask: jax.Array
    out: dict


@dataclasses.dataclass(frozen=True)
class Head:
    """What tells AutoScale's two methods apart: the rest of the step and prediction is shared.

    Attributes:
      name: "regression" (Sec 3.4, density maps) or "localization" (Sec 3.5, distance classes):
        the model's head (`AutoScaleNet.head`) and the dense-region rule of `dense_regions`.
      method_name: the registered method ("autoscale_reg" / "autoscale_loc").
      label: the ground-truth map of a batch ("density" / "distance_label").
      label_dtype: its dtype in the losses.
      output: the model output the loss reads ("density" [B, H, W] / "logits" [B, H, W, K]).
      area_ratio: the paper's J (Table 1): dense boxes of at most J of the image are skipped.
      map_loss: config -> (prediction, target, mask) -> [B], the loss of one output map.
      dense_mask: (the initial `output` map, image_mask [B, H, W] bool, config) -> [B, H, W]
        bool, the candidate dense pixels (the caller clears the padding).
      online_target: (points, point_mask, canvas_mask, config) -> the GT of the rescaled regions.
      count_metrics: (outputs, image_mask, batch, Repredicted or None) -> the step's count
        metrics (regression: the count error of N_f; localization: none).
      predict: (outputs, image_mask, config) -> the initial prediction.
      repredict: (initial prediction, Repredicted, image shape, config) -> the final prediction.
      points_fn: the method's `points_fn` (localization: heads from class maps), or None.
    """

    name: str
    method_name: str
    label: str
    label_dtype: Any
    output: str
    area_ratio: float
    map_loss: Callable[..., Callable]
    dense_mask: Callable[..., jax.Array]
    online_target: Callable[..., jax.Array]
    count_metrics: Callable[..., dict]
    predict: Callable[..., Any]
    repredict: Callable[..., Any]
    points_fn: Callable[..., np.ndarray] | None = None


def distance_edges(config) -> tuple[float, ...]:
    """The distance-class edges of the localization labels (config, else the paper's 11)."""
    return tuple(config.loss.distance_edges or labels.DEFAULT_DISTANCE_EDGES)


# ----------------------------------------------------------------------------------------------
# The regression head (Sec 3.4): density maps.


def _density_loss(config):
    reduction = config.loss.reduction
    return lambda pred, target, mask: density_lib.density_mse_loss(
        pred, target, mask=mask, reduction=reduction
    )


def _dense_density(density, mask, config) -> jax.Array:
    """Pixels above ``factor`` x the mean density over the real pixels."""
    density = density * mask
    mean = density.sum(axis=(1, 2), keepdims=True) / jnp.maximum(
        mask.sum(axis=(1, 2), keepdims=True), 1
    )
    return density > config.l2s.factor * mean


def _online_density(points, point_mask, canvas_mask, config) -> jax.Array:
    """Density GT of the rescaled regions, the data's kernel, mass kept in the rescaled area."""
    sigma = float(config.data.density_sigma or 0.0)
    return online_gt.density_map(
        points,
        point_mask,
        canvas_mask.shape[1:],
        sigma=sigma,
        extent=rescale.canvas_extent(canvas_mask),
    )


def _count_error(out, image_mask, batch, again: Repredicted | None) -> dict:
    """|N_f - N| of the step: the initial count with the dense box's part re-predicted."""
    count = (out["density"] * image_mask).sum(axis=(1, 2))
    if again is not None:
        inside = out["density"] * rescale.box_mask(again.box, image_mask.shape[1:3])
        repredicted = (again.out["density"] * again.canvas_mask).sum(axis=(1, 2))
        count = jnp.where(again.used, count - inside.sum(axis=(1, 2)) + repredicted, count)
    return {"count_mae": jnp.abs(count - batch["count"]).mean()}


def _predict_density(out, mask, config) -> jax.Array:
    del config
    return out["density"] * mask


def _repredict_density(initial, again: Repredicted, image_shape, config) -> jax.Array:
    """The initial density with the dense box's pixels replaced by the re-prediction."""
    del config
    density = again.out["density"] * again.canvas_mask
    moved = _move_back(density, again.canvas_mask, again.box, again.scale, image_shape)
    inside = rescale.box_mask(again.box, image_shape[1:3])
    composed = initial * (1.0 - inside) + moved
    return jnp.where(again.used[:, None, None], composed, initial)


def _move_back(density, canvas_mask, box, scale, image_shape):
    """The re-predicted density on image pixels: the mean of the canvas pixels landing on each
    image pixel, rescaled so that the box holds exactly the canvas mass (sum Y'_d).

    Summing the canvas pixels per image pixel alone (``canvas_mass_to_image``) also preserves the
    mass, but at a non-integer r the number of canvas pixels per image pixel alternates (e.g. 2, 3,
    2, ...), which draws a grid of false density peaks.
    """
    shape = image_shape[1:3]
    mass = rescale.canvas_mass_to_image(density, box, scale, shape)
    hits = rescale.canvas_mass_to_image(canvas_mask, box, scale, shape)
    mean = mass / jnp.maximum(hits, 1.0)
    total, spread = mass.sum(axis=(1, 2)), mean.sum(axis=(1, 2))
    factor = jnp.where(spread != 0, total / jnp.where(spread != 0, spread, 1.0), 0.0)
    return mean * factor[:, None, None]


# ----------------------------------------------------------------------------------------------
# The localization head (Sec 3.5): distance classes, heads at the regional minima.


def _classification_loss(config):
    cfg = config.loss
    kind = cfg.classification
    if kind == "dce":
        fn = functools.partial(dce_lib.dce_loss, weight_gradient=bool(cfg.dce_weight_gradient))
    elif kind == "ce":
        fn = dce_lib.cross_entropy_loss
    elif kind == "focal":
        fn = functools.partial(dce_lib.focal_loss, gamma=float(cfg.focal_gamma))
    else:
        raise ValueError(f"loss.classification must be dce, ce or focal, got {kind!r}")
    reduction = cfg.reduction
    return lambda logits, target, mask: fn(logits, target, mask=mask, reduction=reduction)


def _dense_classes(logits, mask, config) -> jax.Array:
    """Pixels of predicted class below ``max_class`` (the padding is left to the caller)."""
    del mask
    classes = jnp.argmax(logits, axis=-1)
    return dense_regions.dense_mask_localization(classes, max_class=config.l2s.max_class)


def _online_distance_label(points, point_mask, canvas_mask, config) -> jax.Array:
    """Distance-class GT of the rescaled regions (the configured class edges)."""
    shape = canvas_mask.shape[1:]
    return online_gt.distance_label_map(points, point_mask, shape, edges=distance_edges(config))


def _no_count_metrics(out, image_mask, batch, again) -> dict:
    del out, image_mask, batch, again  # Counts are the heads found on the host.
    return {}


def _predict_classes(out, mask, config) -> dict:
    """The class map [B, H, W] int8, the last class (background) on the padding."""
    last = len(distance_edges(config)) - 1
    classes = jnp.where(mask, jnp.argmax(out["logits"], axis=-1), last)
    return {"classes": classes.astype(jnp.int8)}


def _repredict_classes(initial, again: Repredicted, image_shape, config) -> dict:
    """The initial class map plus the canvas's, with its box and scale for :func:`points_fn`."""
    del image_shape
    last = len(distance_edges(config)) - 1
    canvas_classes = jnp.where(
        again.canvas_mask > 0, jnp.argmax(again.out["logits"], axis=-1), last
    )
    return {
        **initial,
        "canvas_classes": canvas_classes.astype(jnp.int8),
        "box": again.box,
        "scale": again.scale,
        "used": again.used,
        "canvas_extent": rescale.canvas_extent(again.canvas_mask),
    }


def heads_from_classes(classes: np.ndarray, max_class: int) -> np.ndarray:
    """Head points [N, 2] (x, y): centroids of the regional minima of class <= ``max_class``."""
    return labels.local_minima(np.asarray(classes, np.int32), max_label=max_class)


def points_fn(outputs: dict, image_shape, config) -> np.ndarray:
    """Predicted heads [N, 2] (x, y) of one image from :func:`predict_fn`'s outputs (numpy).

    Minima of the initial class map outside the fitted dense box, plus minima of the
    re-prediction (its valid area) mapped back to the image: ``x0 + x' / r``.
    """
    h, w = image_shape
    max_class = int(config.eval.minima_max_class)
    points = heads_from_classes(outputs["classes"][:h, :w], max_class)
    if "canvas_classes" not in outputs or not bool(outputs["used"]):
        return points
    x0, y0, bw, bh = (int(v) for v in outputs["box"])
    r = float(outputs["scale"])
    inside = (
        (points[:, 0] >= x0)
        & (points[:, 0] < x0 + bw)
        & (points[:, 1] >= y0)
        & (points[:, 1] < y0 + bh)
    )
    rows, cols = (int(v) for v in outputs["canvas_extent"])
    zoomed = heads_from_classes(outputs["canvas_classes"][:rows, :cols], max_class)
    mapped = np.stack([x0 + zoomed[:, 0] / r, y0 + zoomed[:, 1] / r], axis=1).astype(np.float32)
    return np.concatenate([points[~inside], mapped.reshape(-1, 2)], axis=0)


# ----------------------------------------------------------------------------------------------
# The two heads.

REGRESSION_HEAD = Head(
    name="regression",
    method_name="autoscale_reg",
    label="density",
    label_dtype=jnp.float32,
    output="density",
    area_ratio=dense_regions.REGRESSION_MIN_AREA_RATIO,
    map_loss=_density_loss,
    dense_mask=_dense_density,
    online_target=_online_density,
    count_metrics=_count_error,
    predict=_predict_density,
    repredict=_repredict_density,
)
LOCALIZATION_HEAD = Head(
    name="localization",
    method_name="autoscale_loc",
    label="distance_label",
    label_dtype=jnp.int32,
    output="logits",
    area_ratio=dense_regions.LOCALIZATION_MIN_AREA_RATIO,
    map_loss=_classification_loss,
    dense_mask=_dense_classes,
    online_target=_online_distance_label,
    count_metrics=_no_count_metrics,
    predict=_predict_classes,
    repredict=_repredict_classes,
    points_fn=points_fn,
)
