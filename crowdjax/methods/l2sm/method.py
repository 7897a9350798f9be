"""L2SM: learn to scale with multipolar normalized density maps (Xu et al., ICCV 2019).

Registered as ``l2sm``. One training step (one jit, static shapes), per image:
  1. SPN predicts the initial density D̂ (stride 4) of the whole (padded) image; L_D = sum of
     squared errors against the GT density over the real cells.
  2. The image's real area is cut into K x K regions (`regions`); each region's average density
     and its density group come from the thresholds of the data-set grouping (Sec 4.2), computed
     once by the preparation (`prepare`) and kept in ``model_state["l2sm"]``. Regions of the
     densest C groups are selected (at most ``l2sm.max_regions`` per image, densest first).
  3. The scale map gives r_i per region. MPCL (Eq. 2) pulls D_i / r_i^2 to the center of the
     region's group; the centers move by Eq. 1 with rate ``l2sm.center_alpha`` every step.
  4. Each selected region's conv5 features are upsampled by r_i onto a fixed canvas (``max_scale``
     x the largest region) and re-predicted by the five-conv head; L_r = sum of squared errors
     against the GT recomputed from the head points scaled by r_i (Fig. 4: the same fixed kernel,
     ``l2sm.sigma``), pooled to the canvas cells.
  5. L = mean over images of L_D + lambda_1 L_r + lambda_2 L_c (``loss.repredict_weight``,
     ``loss.center_weight``).

Prediction: D̂, then every region whose predicted average density exceeds the threshold of the
dense groups is re-predicted and its D̂ replaced by the re-prediction moved back onto the region
(a mass-preserving splat: the paper's "resize back and multiply by r^2", exact in the count).

Choices the paper leaves open (each a config field, docs/methods/l2sm.md):
  * Training groups regions by their GT average density (``l2sm.region_density="gt"``: the
    data-set grouping of Sec 4.2 is on the GT; the initial prediction is uninformative early in
    training), or by D̂ ("predicted"). L_c always uses that density under stop_gradient, so MPCL
    trains r and not the density (it would pull D̂ towards the centers).
  * L_c reaches the scale conv only (``l2sm.feature_gradient=False``), and L_r does not reach r
    (``l2sm.rescale_gradient=False``: a smaller canvas would lower a summed L_r for free).
  * Centers start at increasing random values, center c drawn uniformly between the lower edge
    of dense group c and its mean GT density (seeded; the paper gives no scale for them): most
    dense regions start by zooming in, as Sec 3.3 intends. They move by Eq. 1 only (the loss
    sees them under stop_gradient), the standard center-loss update the paper describes; its
    "the centers are also updated" by optimising L is read as that update.
  * The groups come from the maps that training sees: the kernel of ``data.density_sigma`` when
    training regenerates the GT, and the tiles of a tiled run (QNRF).
  * ``l2sm.scaling="average"`` is the S2AD ablation of Table 2: no learned r, each region scaled
    to its group's mean GT density (r = sqrt(D_i / mean_c)), no MPCL.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from crowdjax.data import online_gt, train_stream
from crowdjax.losses.density import density_mse_loss
from crowdjax.losses.mpcl import multipolar_center_loss, update_multipolar_centers
from crowdjax.methods.base import Method, Preparation
from crowdjax.methods.l2sm import regions
from crowdjax.methods.l2sm.model import OUTPUT_STRIDE, L2SMNet
from crowdjax.models import importers, layers, rescale

CELL = regions.CELL


# ----------------------------------------------------------------------------------------------
# Model and variables.


def _use_l2sm(config) -> bool:
    return bool(config.model.use_l2sm)


def make_model(config) -> L2SMNet:
    return L2SMNet(
        width=config.model.width,
        pyramid_channels=int(config.model.pyramid_channels),
        regions=int(config.l2sm.regions),
        min_scale=float(config.l2sm.min_scale),
        max_scale=float(config.l2sm.max_scale),
        use_l2sm=_use_l2sm(config),
        input_convention=importers.model_input_convention(config.model.pretrained),
        head_init=config.model.head_init,
        dtype=layers.compute_dtype(config.model.dtype),
        remat=bool(config.model.remat),
    )


def _check_grouping(config) -> tuple[int, int]:
    groups, centers = int(config.l2sm.groups), int(config.l2sm.centers)
    if not 1 <= centers <= groups:
        raise ValueError(f"l2sm.centers (C={centers}) must be in 1..l2sm.groups (G={groups})")
    return groups, centers


def init_variables(model, rng, config, *, input_shape):
    h, w = input_shape
    groups, centers = _check_grouping(config)
    variables = dict(model.init(rng, jnp.zeros((1, h, w, 3), jnp.float32), method=model.init_all))
    if _use_l2sm(config):
        # Filled by the preparation (thresholds over the training set) before training.
        variables["l2sm"] = {
            "thresholds": jnp.zeros((groups - 1,), jnp.float32),
            "group_means": jnp.zeros((groups,), jnp.float32),
            "centers": jnp.zeros((centers,), jnp.float32),
        }
    return variables


load_pretrained = importers.vgg_backbone_loader("vgg16", make_model)


# ----------------------------------------------------------------------------------------------
# Regions, scales and the rescaled canvases (shared by training and prediction).


def cell_mask(size: jax.Array, shape, stride: int) -> jax.Array:
    """[B, h, w] float32: the map cells (at ``stride``) that hold real pixels."""
    cells = -(-size // stride)
    rows = jnp.arange(shape[0])[None, :] < cells[:, :1]
    cols = jnp.arange(shape[1])[None, :] < cells[:, 1:]
    return (rows[:, :, None] & cols[:, None, :]).astype(jnp.float32)


def canvas_shape(feature_shape, config) -> tuple[int, int]:
    """Static canvas (cells): ``max_scale`` x the largest region of a feature map."""
    k, top = int(config.l2sm.regions), float(config.l2sm.max_scale)
    return tuple(max(1, math.ceil(math.ceil(s / k) * top)) for s in feature_shape)


def _max_regions(config) -> int:
    k = int(config.l2sm.regions)
    m = int(config.l2sm.max_regions)
    return k * k if m <= 0 else min(m, k * k)


def region_scales(params, model, out, region_density, group, state, config):
    """Scale ratios r [B, R]: the learned scale map, or S2AD's sqrt(D_i / mean of the group)."""
    how = config.l2sm.scaling
    if how == "average":
        return average_scales(region_density, group, state, config)
    if how != "learned":
        raise ValueError(f"l2sm.scaling must be 'learned' or 'average', got {how!r}")
    pooled = out["pooled"]
    if not config.l2sm.feature_gradient:
        pooled = jax.lax.stop_gradient(pooled)
    r = model.apply({"params": params}, pooled, method=model.scale_map)
    return r.reshape(group.shape[0], -1)


def average_scales(density, group, state, config) -> jax.Array:
    """S2AD (Table 2): r_i = sqrt(D_i / mean density of its group), within the scale range."""
    groups, centers = _check_grouping(config)
    means = state["group_means"][groups - centers :]
    target = jnp.maximum(means[jnp.maximum(group, 0)], 1e-12)
    r = jnp.sqrt(jnp.maximum(density, 0.0) / target)
    r = jnp.clip(r, float(config.l2sm.min_scale), float(config.l2sm.max_scale) - 1e-3)
    return jax.lax.stop_gradient(jnp.where(group >= 0, r, 1.0))


def pick(score: jax.Array, count: int) -> jax.Array:
    """Indices [B, M] of the ``count`` highest scores per image (-inf: not selected)."""
    return jax.lax.top_k(score, count)[1]


def gather(x: jax.Array, idx: jax.Array) -> jax.Array:
    """``x[b, idx[b, m], ...]`` for [B, R, ...] arrays."""
    idx = idx.reshape(*idx.shape, *([1] * (x.ndim - 2)))
    return jnp.take_along_axis(x, idx, axis=1)


def sample_regions(features, boxes, scale, config):
    """Region features rescaled onto the canvas: [B, M, h_c, w_c, C] and masks [B, M, h_c, w_c]."""
    shape = canvas_shape(features.shape[1:3], config)
    one = lambda box, r: rescale.affine_sample(features, box, r, shape)
    return jax.vmap(one, in_axes=(1, 1), out_axes=1)(boxes, scale)


def repredict(params, model, canvas, canvas_mask):
    """Re-predicted densities [B, M, h_c, w_c] of the canvases (zero outside their masks)."""
    b, m = canvas.shape[:2]
    flat = canvas.reshape(b * m, *canvas.shape[2:])
    out = model.apply({"params": params}, flat, method=model.repredict)
    return out.reshape(b, m, *out.shape[1:]) * canvas_mask


def move_back(canvas_density, canvas_mask, boxes, size, out_shape) -> jax.Array:
    """The re-predictions [B, M, h_c, w_c] moved onto their regions of the D̂ grid: [B, h, w].

    Every canvas cell's mass is spread over the region's D̂ cells with linear (antialiased)
    weights normalised per canvas cell, so each region receives exactly its canvas mass (the
    paper's resize back times r^2, where the r^2 is the ratio of cell areas). Regions are
    clipped to the image's real D̂ cells, so no mass lands on padding.
    """
    f = CELL // OUTPUT_STRIDE
    h_c, w_c = canvas_density.shape[2:]
    h, w = out_shape
    extent = rescale.canvas_extent(canvas_mask)  # [B, M, 2]
    real = -(-size // OUTPUT_STRIDE)[:, None, :]  # [B, 1, 2]
    start = jnp.stack([boxes[..., 1], boxes[..., 0]], axis=-1) * f  # (row, col) [B, M, 2]
    end = jnp.minimum(start + jnp.stack([boxes[..., 3], boxes[..., 2]], axis=-1) * f, real)
    length = jnp.maximum(end - start, 1)
    wy = rescale.triangle_weights(h_c, extent[..., 0], h, start[..., 0], length[..., 0])
    wx = rescale.triangle_weights(w_c, extent[..., 1], w, start[..., 1], length[..., 1])
    wy, wx = rescale.normalize_weights(wy, -2), rescale.normalize_weights(wx, -2)
    return jnp.einsum(
        "bmyi,bmij,bmxj->byx", wy, canvas_density, wx, precision=jax.lax.Precision.HIGHEST
    )


def region_cover(boxes, selected, size, out_shape) -> jax.Array:
    """[B, h, w] float32: 1 on the real D̂ cells of the selected regions (regions are disjoint)."""
    f = CELL // OUTPUT_STRIDE
    h, w = out_shape
    rows = jnp.arange(h)[None, None, :]
    cols = jnp.arange(w)[None, None, :]
    in_y = (rows >= boxes[..., 1:2] * f) & (rows < (boxes[..., 1:2] + boxes[..., 3:4]) * f)
    in_x = (cols >= boxes[..., 0:1] * f) & (cols < (boxes[..., 0:1] + boxes[..., 2:3]) * f)
    cover = (in_y[..., :, None] & in_x[..., None, :] & selected[..., None, None]).any(axis=1)
    return cover.astype(jnp.float32) * cell_mask(size, out_shape, OUTPUT_STRIDE)


def _groups(region_density, valid, state, config):
    _, centers = _check_grouping(config)
    return regions.assign_groups(region_density, valid, state["thresholds"], centers)


# ----------------------------------------------------------------------------------------------
# Training.


def scaled_ground_truth(points, point_mask, boxes, scale, canvas_mask, config) -> jax.Array:
    """GT density [B, M, h_c, w_c] of the rescaled regions from the scaled head points (Fig. 4).

    A head p of region (x0, y0, w, h) (feature cells) lands at ``r (p - CELL (x0, y0))`` canvas
    px; each keeps mass 1 inside the canvas's valid area (a head on its last ``r`` px is moved
    onto it). The map is `labels.density_map` of those points with the fixed kernel
    ``l2sm.sigma`` (px, not scaled: the peaks keep their shape, the distances grow), sum-pooled
    to the canvas cells.
    """
    b, m = boxes.shape[:2]
    h_c, w_c = canvas_mask.shape[2:]
    extent_px = rescale.canvas_extent(canvas_mask).reshape(b * m, 2) * CELL
    box_px = (boxes * CELL).reshape(b * m, 4)
    p = jnp.repeat(points, m, axis=0)
    pm = jnp.repeat(point_mask, m, axis=0)
    canvas_points, inside = rescale.rescale_points(p, pm, box_px, scale.reshape(-1))
    limit = extent_px[:, None, ::-1].astype(jnp.float32) - 1e-3  # (x, y) upper bounds
    canvas_points = jnp.clip(canvas_points, 0.0, limit)
    target = online_gt.density_map(
        canvas_points,
        inside,
        (h_c * CELL, w_c * CELL),
        sigma=float(config.l2sm.sigma),
        extent=extent_px,
        stride=CELL,
    )
    return target.reshape(b, m, h_c, w_c)


def loss_fn(params, model_state, batch, rng, *, model, config):
    """L2SM objective L = L_D + lambda_1 L_r + lambda_2 L_c (Eq. 3); see the module doc."""
    del rng
    images, image_mask = batch["image"], batch["image_mask"]
    size = regions.real_size(image_mask)
    out = model.apply({"params": params}, images, size)
    real = cell_mask(size, out["density"].shape[1:], OUTPUT_STRIDE)
    target = batch["density"].astype(jnp.float32)
    initial = density_mse_loss(out["density"], target, mask=real, reduction="sum")
    density = out["density"] * real
    metrics = {"initial": initial.mean()}
    count = density.sum(axis=(1, 2))
    if not _use_l2sm(config):
        metrics["count_mae"] = jnp.abs(count - batch["count"]).mean()
        return initial.mean(), (metrics, model_state)

    cfg = config.l2sm
    state = model_state["l2sm"]
    boxes, area, valid = regions.region_boxes(size, int(cfg.regions))
    gt_avg = regions.average_density(regions.region_sums(target, boxes, OUTPUT_STRIDE), area)
    pred_avg = regions.average_density(
        regions.region_sums(jax.lax.stop_gradient(density), boxes, OUTPUT_STRIDE), area
    )
    if cfg.region_density == "gt":
        region_density = gt_avg
    elif cfg.region_density == "predicted":
        region_density = pred_avg
    else:
        raise ValueError(
            f"l2sm.region_density must be 'gt' or 'predicted', got {cfg.region_density!r}"
        )
    group = _groups(region_density, valid, state, config)
    selected_all = group >= 0
    scale = region_scales(params, model, out, region_density, group, state, config)
    if cfg.scaling == "average":  # S2AD: no learned r, no MPCL.
        center_loss = jnp.zeros_like(initial)
        new_centers = state["centers"]
    else:
        center_loss = multipolar_center_loss(
            region_density, scale, group, jax.lax.stop_gradient(state["centers"])
        )
        new_centers = update_multipolar_centers(
            state["centers"], region_density, scale, group, float(cfg.center_alpha)
        )

    idx = pick(jnp.where(selected_all, region_density, -jnp.inf), _max_regions(config))
    boxes_m, selected = gather(boxes, idx), gather(selected_all, idx)
    scale_m = gather(scale, idx)
    r = scale_m if cfg.rescale_gradient else jax.lax.stop_gradient(scale_m)
    canvas, canvas_mask = sample_regions(out["features"], boxes_m, r, config)
    predicted = repredict(params, model, canvas, canvas_mask)
    truth = scaled_ground_truth(
        batch["points"], batch["point_mask"], boxes_m, jax.lax.stop_gradient(r), canvas_mask, config
    )
    b, m = selected.shape
    per_region = density_mse_loss(
        predicted.reshape(b * m, *predicted.shape[2:]),
        truth.reshape(b * m, *truth.shape[2:]),
        mask=canvas_mask.reshape(b * m, *canvas_mask.shape[2:]),
        reduction="sum",
    ).reshape(b, m)
    repredicted = jnp.sum(per_region * selected, axis=1)

    lam1, lam2 = float(config.loss.repredict_weight), float(config.loss.center_weight)
    loss = (initial + lam1 * repredicted + lam2 * center_loss).mean()
    inside = regions.region_sums(density, boxes_m, OUTPUT_STRIDE)
    final = count + jnp.sum(selected * (predicted.sum(axis=(2, 3)) - inside), axis=1)
    sel_f = selected_all.astype(jnp.float32)
    metrics.update(
        repredicted=repredicted.mean(),
        center_loss=center_loss.mean(),
        selected=sel_f.sum() / jnp.maximum(valid.sum(), 1),
        scale=jnp.sum(scale * sel_f) / jnp.maximum(sel_f.sum(), 1.0),
        count_mae=jnp.abs(final - batch["count"]).mean(),
    )
    new_state = {**model_state, "l2sm": {**state, "centers": new_centers}}
    return loss, (metrics, new_state)


# ----------------------------------------------------------------------------------------------
# Prediction.


def predict_fn(variables, images, *, model, config, image_mask=None):
    """{"density": the final density [B, H/4, W/4] (D̂ with the selected regions re-predicted),
    "selected" [B, R] bool (re-predicted regions), "valid" [B, R], "scale" [B, R]}."""
    if image_mask is None:
        image_mask = jnp.ones(images.shape[:3], bool)
    params = variables["params"]
    size = regions.real_size(image_mask)
    out = model.apply({"params": params}, images, size)
    shape = out["density"].shape[1:]
    density = out["density"] * cell_mask(size, shape, OUTPUT_STRIDE)
    if not _use_l2sm(config):
        return density
    state = variables["l2sm"]
    boxes, area, valid = regions.region_boxes(size, int(config.l2sm.regions))
    avg = regions.average_density(regions.region_sums(density, boxes, OUTPUT_STRIDE), area)
    group = _groups(avg, valid, state, config)
    scale = region_scales(params, model, out, avg, group, state, config)
    idx = pick(jnp.where(group >= 0, avg, -jnp.inf), _max_regions(config))
    boxes_m, selected, scale_m = gather(boxes, idx), gather(group >= 0, idx), gather(scale, idx)
    canvas, canvas_mask = sample_regions(out["features"], boxes_m, scale_m, config)
    predicted = repredict(params, model, canvas, canvas_mask) * selected[..., None, None]
    moved = move_back(predicted, canvas_mask, boxes_m, size, shape)
    cover = region_cover(boxes_m, selected, size, shape)
    chosen = jnp.zeros_like(valid).at[jnp.arange(valid.shape[0])[:, None], idx].set(selected)
    return {
        "density": density * (1.0 - cover) + moved,
        "selected": chosen,
        "valid": valid,
        "scale": scale,
    }


# ----------------------------------------------------------------------------------------------
# Preparation: the data-set grouping of Sec 4.2.


def training_density_maps(context):
    """The GT density maps that training divides into regions, exactly as the training stream
    computes them (`train_stream.train_density_maps`: its kernel, including
    ``data.density_sigma`` and ``data.density_truncate``, and the ``data.train_tiles`` tiles of a
    tiled whole-image run), unaugmented."""
    return train_stream.train_density_maps(context.config.data, output_stride=OUTPUT_STRIDE)


def training_region_densities(context) -> np.ndarray:
    """GT average densities [N] of every valid K x K region of the training maps."""
    k = int(context.config.l2sm.regions)
    values = []
    for density in training_density_maps(context):
        size = jnp.array([density.shape], jnp.int32)
        boxes, area, valid = regions.region_boxes(size, k)
        sums = regions.region_sums(jnp.asarray(density)[None], boxes, 1)
        avg = np.asarray(regions.average_density(sums, area))[0]
        values.append(avg[np.asarray(valid)[0]])
    if not values:
        raise ValueError("the L2SM preparation found no training image")
    return np.concatenate(values)


def initial_centers(thresholds, means, densities, centers: int, seed: int) -> np.ndarray:
    """Increasing random centers [C]: center c uniform between the lower edge of dense group c
    and the group's mean, so that most of its regions start by zooming in (r > 1)."""
    groups = len(thresholds) + 1
    edges = np.concatenate([[densities.min()], thresholds])
    rng = np.random.default_rng(seed)
    lo = edges[groups - centers : groups]
    hi = np.maximum(np.asarray(means, np.float64)[groups - centers :], lo)
    return np.maximum.accumulate(rng.uniform(lo, hi)).astype(np.float32)


def prepare(context) -> Preparation:
    config = context.config
    if not _use_l2sm(config):
        return Preparation(info={"l2sm": "off: SPN alone, no grouping"})
    groups, centers = _check_grouping(config)
    densities = training_region_densities(context)
    thresholds = regions.grouping_thresholds(densities, groups)
    means = regions.group_means(densities, thresholds)
    init = initial_centers(thresholds, means, densities, centers, int(config.seed))
    dense = (
        float(np.mean(densities > thresholds[groups - centers - 1])) if centers < groups else 1.0
    )
    return Preparation(
        model_state={"l2sm": {"thresholds": thresholds, "group_means": means, "centers": init}},
        info={
            "regions": int(densities.size),
            "groups": groups,
            "centers": centers,
            "thresholds": thresholds.tolist(),
            "group_means": means.tolist(),
            "initial_centers": init.tolist(),
            "dense_share": dense,
            "density_unit": f"people per {regions.AREA_UNIT:g} px^2",
        },
    )


METHOD = Method(
    name="l2sm",
    make_model=make_model,
    init_variables=init_variables,
    loss_fn=loss_fn,
    predict_fn=predict_fn,
    output_stride=lambda config: OUTPUT_STRIDE,
    load_pretrained=load_pretrained,
    prepare=prepare,
)
