"""AutoScale: learning to scale for crowd counting (Xu et al., IJCV 2022), two methods.

* ``autoscale_reg``: density regression (Sec 3.4), sum-MSE on the full-resolution density.
* ``autoscale_loc``: localization (Sec 3.5), 11 distance classes per pixel, dynamic CE (Eq. 7);
  heads are the 4-connected regional minima of the predicted class map.

One training step (jitted, static shapes), per image:
  1. Initial prediction Y on the crop, loss against the stored GT (fused + side outputs).
  2. Dense region R_d: regression, pixels above ``factor`` (2) x the mean density; localization,
     pixels of predicted class < ``max_class`` (8); the largest 8-connected region's box, used only
     when its area exceeds J of the image (J = 0.1 / 0.02). Selected on the device
     (``l2s.selection="device"``, jnp connected components) or on the host through
     ``jax.pure_callback`` (``"host"``, scipy); both give identical boxes.
  3. r = L2S(feature cropped to R_d) in [0.5, 3]; center loss Ls = 1/2 sum (S_i r_i^2 - S)^2
     with S_i the GT closeness of the heads in R_d (Eq. 1-3).
  4. R_d rescaled by r onto a fixed canvas (``l2s.canvas_factor`` x the input size) with the
     differentiable sampler, re-predicted by the same network, loss against GT regenerated
     online from the scaled points (same kernel / distance classes). A box that would not fit
     the canvas once scaled is shrunk about its centre (nothing is lost: the rest of the region
     is counted from the initial prediction).
  5. Loss = mean over images of (L_initial + L_rescaled) + lambda * Ls / B (Eq. 6 / Eq. 8).
  6. The center S (``model_state["center"]``) follows Eq. 4 with rate alpha every T steps.

Choices the paper leaves open (docs/methods/autoscale.md):
  * Ls trains the L2S module only: the backbone feature is given to L2S under stop_gradient
    (``l2s.feature_gradient``), and the rescaled loss does not reach r (``l2s.rescale_gradient``).
  * S starts at the mean closeness of the first regions seen (``l2s.center_init=0``) or at a
    given value in px; Eq. 4's "random initialisation" leaves the scale of S undefined.
  * T (``l2s.center_update_every``) counts steps; the configs set it to one epoch.

Both methods are the functions below with a `Head` bound (`crowdjax.methods.autoscale.heads`:
the output, ground truth, losses, dense-region rule and prediction of each): `REGRESSION` and
`LOCALIZATION`, registered as `autoscale_reg` and `autoscale_loc`.

Counting: regression N_f = sum Y - sum Y_d + sum Y'_d, returned as one density map (the
re-prediction's mass moved back to the image pixels under the box). Localization: minima of the
initial map outside the box plus minima of the re-prediction mapped back to the image
(``points_fn``, on the host).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from crowdjax.losses import center as center_lib
from crowdjax.methods.autoscale import dense_regions
from crowdjax.methods.autoscale.heads import (
    LOCALIZATION_HEAD,
    REGRESSION_HEAD,
    Head,
    Repredicted,
    distance_edges,
)
from crowdjax.methods.autoscale.model import AutoScaleNet
from crowdjax.methods.base import Method
from crowdjax.models import importers, layers, rescale

OUTPUT_STRIDE = 1


# ----------------------------------------------------------------------------------------------
# Model.


def make_model(config, *, head: Head) -> AutoScaleNet:
    return AutoScaleNet(
        head=head.name,
        num_classes=len(distance_edges(config)),
        width=config.model.width,
        use_l2s=bool(config.model.use_l2s),
        feature_stride=config.model.feature_stride,
        l2s_output=config.model.l2s_output,
        fpn_layout=config.model.fpn_layout,
        input_convention=importers.model_input_convention(config.model.pretrained),
        dtype=layers.compute_dtype(config.model.dtype),
        remat=bool(config.model.remat),
    )


def initial_center_state(config) -> dict:
    """The closeness center S of Eq. 2-4 and its accumulators over the update period T."""
    init = float(config.l2s.center_init)
    return {
        "value": jnp.asarray(init, jnp.float32),
        "initialized": jnp.asarray(init > 0),
        "delta_sum": jnp.zeros((), jnp.float32),  # sum_i (S - S_i r_i^2) since the last update
        "regions": jnp.zeros((), jnp.float32),  # M
        "steps": jnp.zeros((), jnp.int32),  # steps since the last update
    }


def init_variables(model, rng, config, *, input_shape):
    h, w = input_shape
    variables = model.init(rng, jnp.zeros((1, h, w, 3), jnp.float32), method=model.init_all)
    variables = dict(variables)
    if config.model.use_l2s:
        variables["center"] = initial_center_state(config)
    return variables


# ----------------------------------------------------------------------------------------------
# Dense regions and rescaling (shared by training and prediction).


def canvas_shape(input_shape, config) -> tuple[int, int]:
    """Static canvas (H_c, W_c): ``canvas_factor`` x the input, rounded up to a multiple of 8."""
    factor = float(config.l2s.canvas_factor)
    return tuple(max(8, -(-round(s * factor) // 8) * 8) for s in input_shape)


def dense_masks(out: dict, image_mask: jax.Array, config, *, head: Head) -> jax.Array:
    """Candidate dense pixels [B, H, W] bool of the initial prediction (no gradient)."""
    mask = image_mask.astype(bool)
    return mask & head.dense_mask(jax.lax.stop_gradient(out[head.output]), mask, config)


def select_boxes(masks: jax.Array, image_mask: jax.Array, config, *, head: Head):
    """Largest region's box [B, 4] (x0, y0, w, h) and whether it is used [B] (area > J)."""
    connectivity = int(config.l2s.connectivity)
    how = config.l2s.selection
    if how == "device":
        fn = functools.partial(dense_regions.largest_region_box, connectivity=connectivity)
        boxes, found = jax.vmap(fn)(masks)
    elif how == "host":
        b = masks.shape[0]
        shapes = (
            jax.ShapeDtypeStruct((b, 4), jnp.int32),
            jax.ShapeDtypeStruct((b,), jnp.bool_),
        )
        boxes, found = jax.pure_callback(
            functools.partial(dense_regions.largest_region_boxes_host, connectivity=connectivity),
            shapes,
            masks,
            vmap_method="sequential",
        )
    else:
        raise ValueError(f"l2s.selection must be 'device' or 'host', got {how!r}")
    ratio = float(config.l2s.area_ratio or head.area_ratio)
    area = image_mask.astype(jnp.float32).sum(axis=(1, 2))  # real pixels, not the padding
    used = found & (boxes[:, 2] * boxes[:, 3] > ratio * area)
    return boxes, used


def dense_region_scale(params, model, out, image_mask, config, *, head, feature_gradient=False):
    """Boxes [B, 4], their use [B] and the L2S scale r [B] of the initial prediction ``out``."""
    masks = dense_masks(out, image_mask, config, head=head)
    boxes, used = select_boxes(masks, image_mask, config, head=head)
    features = out["features"]
    if not feature_gradient:
        features = jax.lax.stop_gradient(features)
    scale = model.apply({"params": params}, features, boxes, method=model.scale)
    return boxes, used, scale


def rescale_region(images, boxes, scale, config):
    """The fitted boxes [B, 4], the rescaled regions [B, H_c, W_c, 3] and their masks."""
    shape = canvas_shape(images.shape[1:3], config)
    fitted = rescale.fit_box_to_canvas(boxes, scale, shape)
    canvas, mask = rescale.affine_sample(images, fitted, scale, shape)
    return fitted, canvas, mask


# ----------------------------------------------------------------------------------------------
# Losses.


def _pixel_loss(out: dict, target, mask, config, *, head: Head) -> jax.Array:
    """Per-image loss [B] of the fused output plus ``side_weight`` x each side output."""
    one = head.map_loss(config)
    fused = one(out[head.output], target, mask)
    side_weight = float(config.loss.side_weight)
    if side_weight:
        fused = fused + side_weight * sum(one(side, target, mask) for side in out["side_outputs"])
    return fused


def update_center_state(state: dict, scales, closeness, mask, config) -> dict:
    """Eq. 4 over a period of T steps: accumulate sum_i (S - S_i r_i^2) and M, then update."""
    scales, closeness = jax.lax.stop_gradient((scales, closeness))
    valid = mask.astype(jnp.float32)
    regions = valid.sum()
    # Data-driven start (choice): the mean closeness of the first regions seen.
    first = jnp.sum(closeness * valid) / jnp.maximum(regions, 1.0)
    start = ~state["initialized"] & (regions > 0)
    value = jnp.where(start, first, state["value"])
    delta_sum = state["delta_sum"] + jnp.sum(valid * (value - closeness * jnp.square(scales)))
    regions = state["regions"] + regions
    steps = state["steps"] + 1
    period = int(config.l2s.center_update_every)
    due = steps >= period
    alpha = float(config.l2s.center_alpha)
    new_value = value - alpha * delta_sum / (1.0 + regions)
    return {
        "value": jnp.where(due, new_value, value),
        "initialized": state["initialized"] | start,
        "delta_sum": jnp.where(due, 0.0, delta_sum),
        "regions": jnp.where(due, 0.0, regions),
        "steps": jnp.where(due, 0, steps),
    }


def loss_fn(params, model_state, batch, rng, *, model, config, head: Head):
    """AutoScale objective (Eq. 6 / Eq. 8); see the module doc for the steps."""
    del rng
    images = batch["image"]
    image_mask = batch["image_mask"].astype(jnp.float32)
    use_l2s = bool(config.model.use_l2s)
    out = model.apply({"params": params}, images, return_features=use_l2s)
    target = batch[head.label].astype(head.label_dtype)
    initial = _pixel_loss(out, target, image_mask, config, head=head)
    metrics = {"initial": initial.mean()}
    if not use_l2s:
        metrics.update(head.count_metrics(out, image_mask, batch, None))
        return initial.mean(), (metrics, model_state)

    cfg = config.l2s
    boxes, used, scale = dense_region_scale(
        params, model, out, image_mask, config, head=head, feature_gradient=cfg.feature_gradient
    )

    # Center loss on the GT closeness of the heads inside each dense box (Eq. 1-3).
    points, point_mask = batch["points"], batch["point_mask"]
    _, in_box = rescale.rescale_points(points, point_mask, boxes, jnp.ones_like(scale))
    closeness = center_lib.closeness(points, in_box)
    regions = used & (in_box.sum(axis=1) >= 2)
    center = model_state["center"]
    s_now = jnp.where(
        center["initialized"],
        center["value"],
        jnp.sum(closeness * regions) / jnp.maximum(regions.sum(), 1),
    )
    center_loss = center_lib.center_loss(
        scale, closeness, jax.lax.stop_gradient(s_now), mask=regions
    )

    # Re-prediction on the rescaled region against online GT.
    r = scale if cfg.rescale_gradient else jax.lax.stop_gradient(scale)
    fitted, canvas, canvas_mask = rescale_region(images, boxes, r, config)
    canvas_points, canvas_point_mask = rescale.rescale_points(
        points, point_mask, fitted, r, canvas_shape=canvas_mask.shape[1:]
    )
    canvas_target = head.online_target(canvas_points, canvas_point_mask, canvas_mask, config)
    out2 = model.apply({"params": params}, canvas)
    rescaled = _pixel_loss(out2, canvas_target, canvas_mask, config, head=head) * used

    batch_size = images.shape[0]
    weight = float(config.loss.center_weight)
    loss = (initial + rescaled).mean() + weight * center_loss / batch_size
    new_state = {
        **model_state,
        "center": update_center_state(center, scale, closeness, regions, config),
    }
    used_f = used.astype(jnp.float32)
    metrics.update(
        rescaled=rescaled.mean(),
        center_loss=center_loss / batch_size,
        center=s_now,
        selected=used_f.mean(),
        scale=jnp.sum(scale * used_f) / jnp.maximum(used_f.sum(), 1.0),
    )
    again = Repredicted(box=fitted, scale=scale, used=used, canvas_mask=canvas_mask, out=out2)
    metrics.update(head.count_metrics(out, image_mask, batch, again))
    return loss, (metrics, new_state)


# ----------------------------------------------------------------------------------------------
# Prediction.


def predict_fn(variables, images, *, model, config, head: Head, image_mask=None):
    """Regression: the final density [B, H, W] (sum = N_f). Localization: a dict of class maps,
    boxes and scales for :func:`points_fn` (heads are found on the host)."""
    if image_mask is None:
        image_mask = jnp.ones(images.shape[:3], bool)
    params = variables["params"]
    use_l2s = bool(config.model.use_l2s)
    out = model.apply({"params": params}, images, return_features=use_l2s)
    mask = image_mask.astype(bool)
    initial = head.predict(out, mask, config)
    if not use_l2s:
        return initial
    boxes, used, scale = dense_region_scale(params, model, out, mask, config, head=head)
    fitted, canvas, canvas_mask = rescale_region(images, boxes, scale, config)
    out2 = model.apply({"params": params}, canvas)
    again = Repredicted(box=fitted, scale=scale, used=used, canvas_mask=canvas_mask, out=out2)
    return head.repredict(initial, again, images.shape, config)


# ----------------------------------------------------------------------------------------------
# The two methods.


def _method(head: Head) -> Method:
    """The registered method of one head: the shared functions with the head bound."""
    make = functools.partial(make_model, head=head)
    return Method(
        name=head.method_name,
        make_model=make,
        init_variables=init_variables,
        loss_fn=functools.partial(loss_fn, head=head),
        predict_fn=functools.partial(predict_fn, head=head),
        output_stride=lambda config: OUTPUT_STRIDE,
        load_pretrained=importers.vgg_backbone_loader("vgg16", make),
        points_fn=head.points_fn,
    )


REGRESSION = _method(REGRESSION_HEAD)
LOCALIZATION = _method(LOCALIZATION_HEAD)
