"""Tests of the AutoScale methods: each piece of the train step and of the prediction against an
independent host computation (numpy / scipy / crowdjax.data.labels)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import autoscale_common
from crowdjax import registry
from crowdjax.data import labels, online_gt
from crowdjax.losses import dce
from crowdjax.methods.autoscale import dense_regions, heads
from crowdjax.methods.autoscale import method as autoscale
from crowdjax.models import rescale
from tests.models import reference

H, W = 48, 40


REG, LOC = heads.REGRESSION_HEAD, heads.LOCALIZATION_HEAD
HEADS = {"regression": REG, "localization": LOC}
METHODS = {"regression": autoscale.REGRESSION, "localization": autoscale.LOCALIZATION}


def _config(head="regression", **l2s_options):
    config = autoscale_common.autoscale_config(head, "synthetic")
    config.data.name = "synthetic_crowd/tiny"
    config.data.density_sigma = 3.0
    config.data.crop_size = (H, W)
    config.model.width = 1 / 16
    config.model.feature_stride = 2
    config.loss.side_weight = 0.5
    for key, value in l2s_options.items():
        config.l2s[key] = value
    return config


def _variables(model, config, seed=0):
    """Random He-scaled variables (eval_shape + numpy: no per-shape init compiles)."""
    x = jnp.zeros((1, H, W, 3))
    params = reference.random_variables(model, x, seed, method=model.init_all)["params"]
    variables = {"params": params}
    if config.model.use_l2s:
        variables["center"] = autoscale.initial_center_state(config)
    return variables


def _apply(model):
    """Jitted forward pass and scale predictor (eager op-by-op execution is slow on CPU)."""
    forward = jax.jit(lambda v, x, f=False: model.apply(v, x, return_features=f), static_argnums=2)
    scale = jax.jit(lambda v, feats, boxes: model.apply(v, feats, boxes, method=model.scale))
    return forward, scale


def _batch(seed=0, b=2, pad_cols=0):
    """A training batch whose GT comes from crowdjax.data.labels (the host reference)."""
    rng = np.random.default_rng(seed)
    p = 40
    points = np.zeros((b, p, 2), np.float32)
    mask = np.zeros((b, p), bool)
    density = np.zeros((b, H, W), np.float32)
    dist = np.zeros((b, H, W), np.uint8)
    for i in range(b):
        n = [25, 1, 0, 12][i % 4]
        # A dense cluster plus a few scattered heads.
        pts = np.concatenate(
            [
                rng.normal((14, 20), 3.0, (n * 2 // 3, 2)),
                rng.uniform((0, 0), (W - pad_cols, H), (n - n * 2 // 3, 2)),
            ]
        )
        pts = np.clip(pts, 0, [W - pad_cols - 1e-3, H - 1e-3]).astype(np.float32)
        points[i, :n], mask[i, :n] = pts, True
        density[i] = labels.density_map(pts, (H, W), sigma=3.0)
        dist[i] = labels.distance_label_map(pts, (H, W))
    image_mask = np.ones((b, H, W), bool)
    if pad_cols:
        image_mask[:, :, W - pad_cols :] = False
    return {
        "image": rng.normal(size=(b, H, W, 3)).astype(np.float32),
        "image_mask": image_mask,
        "points": points,
        "point_mask": mask,
        "count": mask.sum(1).astype(np.float32),
        "density": density,
        "distance_label": dist,
    }


def test_registry_has_both_methods():
    assert {"autoscale_reg", "autoscale_loc"} <= set(registry.method_names())
    assert registry.get_method("autoscale_loc").points_fn is not None
    assert registry.get_method("autoscale_reg").output_stride(None) == 1


# ----------------------------------------------------------------------------------------------
# Geometry helpers.


@pytest.mark.parametrize(
    "box,r", [((5, 6, 20, 10), 2.5), ((0, 0, 40, 48), 1.0), ((3, 2, 7, 9), 0.6)]
)
def test_fit_box_to_canvas_keeps_the_centre_and_fits(box, r):
    canvas = (40, 32)
    fitted = np.asarray(rescale.fit_box_to_canvas(jnp.array([box]), jnp.array([r]), canvas))[0]
    x0, y0, w, h = box
    want_w, want_h = min(w, math.floor(canvas[1] / r)), min(h, math.floor(canvas[0] / r))
    assert tuple(fitted[2:]) == (want_w, want_h)
    assert fitted[2] * r <= canvas[1] and fitted[3] * r <= canvas[0]
    assert tuple(fitted[:2]) == (x0 + (w - want_w) // 2, y0 + (h - want_h) // 2)


def test_canvas_mass_to_image_matches_a_pixel_loop():
    rng = np.random.default_rng(3)
    box, r, shape = np.array([4, 7, 11, 9]), 1.7, (20, 25)
    canvas_shape = (18, 20)
    _, mask = rescale.affine_sample(
        jnp.zeros((1, *shape, 1)), jnp.array([box]), jnp.array([r]), canvas_shape
    )
    canvas = rng.random(canvas_shape).astype(np.float32) * np.asarray(mask[0])
    got = np.asarray(
        rescale.canvas_mass_to_image(
            jnp.asarray(canvas)[None], jnp.array([box]), jnp.array([r]), shape
        )
    )[0]
    want = np.zeros(shape)
    for i in range(canvas_shape[0]):
        for j in range(canvas_shape[1]):
            if canvas[i, j]:
                want[int(box[1] + (i + 0.5) / r), int(box[0] + (j + 0.5) / r)] += canvas[i, j]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert got[: box[1]].sum() == 0 and got[:, box[0] + box[2] :].sum() == 0  # stays in the box


def test_box_mask_matches_slicing():
    boxes = np.array([[2, 3, 5, 4], [0, 0, 7, 6], [6, 5, 1, 1]])
    got = np.asarray(rescale.box_mask(jnp.asarray(boxes), (6, 7)))
    for m, (x0, y0, w, h) in zip(got, boxes, strict=True):
        want = np.zeros((6, 7))
        want[y0 : y0 + h, x0 : x0 + w] = 1
        np.testing.assert_array_equal(m, want)


def test_online_density_with_extent_equals_host_map_of_the_area():
    rng = np.random.default_rng(4)
    pts = rng.uniform((0, 0), (17, 13), (30, 2)).astype(np.float32)  # inside a 13 x 17 area
    pts[0] = (16.9, 12.95)  # on the last row / column of the area
    got = online_gt.density_map(
        jnp.asarray(pts)[None],
        jnp.ones((1, 30), bool),
        (24, 32),
        sigma=2.0,
        extent=jnp.array([[13, 17]]),
    )[0]
    want = np.zeros((24, 32))
    want[:13, :17] = labels.density_map(pts, (13, 17), sigma=2.0)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
    assert abs(float(got.sum()) - 30) < 1e-3


# ----------------------------------------------------------------------------------------------
# Dense-region selection inside the step.


@pytest.mark.parametrize("head", ["regression", "localization"])
def test_select_boxes_device_and_host_agree_and_use_the_real_area(head):
    rng = np.random.default_rng(5)
    masks = rng.random((6, H, W)) > 0.7
    masks[0] = False  # no region
    masks[1, 10:30, 5:25] = True  # one big blob
    image_mask = np.ones((6, H, W), bool)
    image_mask[2:, :, 20:] = False  # padded images: J is relative to the real area
    masks &= image_mask
    cfg_dev, cfg_host = _config(head, selection="device"), _config(head, selection="host")
    select = lambda config: lambda m, im: autoscale.select_boxes(m, im, config, head=HEADS[head])
    dev = jax.jit(select(cfg_dev))(masks, image_mask)
    host = jax.jit(select(cfg_host))(masks, image_mask)
    np.testing.assert_array_equal(np.asarray(dev[0]), np.asarray(host[0]))
    np.testing.assert_array_equal(np.asarray(dev[1]), np.asarray(host[1]))
    ratio = 0.1 if head == "regression" else 0.02
    for m, im, box, used in zip(masks, image_mask, *map(np.asarray, dev), strict=True):
        want_box, found = dense_regions.largest_region_box_host(m)
        np.testing.assert_array_equal(box, want_box)
        assert used == (found and want_box[2] * want_box[3] > ratio * im.sum())


def test_dense_masks_follow_the_paper_rules():
    rng = np.random.default_rng(6)
    density = rng.random((2, H, W)).astype(np.float32)
    logits = rng.normal(size=(2, H, W, 11)).astype(np.float32)
    image_mask = np.ones((2, H, W), bool)
    image_mask[1, :, 30:] = False
    got = autoscale.dense_masks(
        {"density": jnp.asarray(density)}, jnp.asarray(image_mask), _config(), head=REG
    )
    for d, m, g in zip(density, image_mask, np.asarray(got), strict=True):
        np.testing.assert_array_equal(g, m & (d > 2 * d[m].mean()))
    got = autoscale.dense_masks(
        {"logits": jnp.asarray(logits)}, jnp.asarray(image_mask), _config("localization"), head=LOC
    )
    np.testing.assert_array_equal(np.asarray(got), image_mask & (logits.argmax(-1) < 8))


# ----------------------------------------------------------------------------------------------
# Center update (Eq. 4).


def test_center_state_follows_eq4_over_a_period():
    config = _config(center_update_every=3, center_alpha=0.1)
    state = autoscale.initial_center_state(config)
    rng = np.random.default_rng(7)
    history, value = [], None
    for step in range(6):
        r = rng.uniform(0.5, 3, 4).astype(np.float32)
        s = rng.uniform(2, 20, 4).astype(np.float32)
        m = rng.random(4) > 0.3
        if step == 0:
            m[:] = [True, True, False, False]
            value = float(s[:2].mean())  # data-driven start: mean closeness of the first regions
        history.append((r, s, m))
        state = autoscale.update_center_state(
            state, jnp.asarray(r), jnp.asarray(s), jnp.asarray(m), config
        )
        if step % 3 == 2:  # Eq. 4 with the center fixed over the period
            rr, ss, mm = (np.concatenate(x) for x in zip(*history, strict=True))
            delta = np.sum((value - ss * rr**2)[mm]) / (1 + mm.sum())
            value = value - 0.1 * delta
            history = []
        np.testing.assert_allclose(float(state["value"]), value, rtol=1e-5)
    assert int(state["steps"]) == 0 and float(state["regions"]) == 0


# ----------------------------------------------------------------------------------------------
# The loss against an independent recomputation.


def _numpy_pixel_loss(out, target, mask, config):
    """Sum-MSE / DCE of the fused and side outputs, with numpy (DCE: Eq. 7 directly)."""
    side = config.loss.side_weight

    def reg(pred):
        return ((np.asarray(pred) - target) ** 2 * mask).sum(axis=(1, 2))

    def dce_np(logits):
        logits = np.asarray(logits, np.float64)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        k = np.arange(logits.shape[-1])
        weight = ((np.abs(target[..., None] - k) + 1) * p).sum(-1)
        pc = np.take_along_axis(p, target[..., None].astype(int), -1)[..., 0]
        return (-weight * np.log(pc) * mask).sum(axis=(1, 2))

    fn = reg if "density" in out else dce_np
    main = out["density"] if "density" in out else out["logits"]
    return fn(main) + side * sum(fn(s) for s in out["side_outputs"])


@pytest.mark.parametrize("head", ["regression", "localization"])
def test_loss_without_l2s_is_the_initial_loss(head):
    config = _config(head)
    config.model.use_l2s = False
    method = METHODS[head]
    model = method.make_model(config)
    variables = _variables(model, config)
    batch = _batch(pad_cols=6)
    loss, (metrics, state) = jax.jit(
        lambda p, b: method.loss_fn(p, {}, b, None, model=model, config=config)
    )(variables["params"], batch)
    out = _apply(model)[0](variables, batch["image"])
    target = batch["density"] if head == "regression" else batch["distance_label"].astype(int)
    want = _numpy_pixel_loss(out, target, batch["image_mask"], config).mean()
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    assert state == {}


@pytest.mark.parametrize("head", ["regression", "localization"])
def test_loss_with_l2s_matches_an_independent_recomputation(head):
    config = _config(head, area_ratio=0.01)
    method = METHODS[head]
    model = method.make_model(config)
    variables = _variables(model, config, seed=1)
    batch = _batch(seed=2, b=4)
    params, state = variables["params"], {"center": variables["center"]}
    loss, (metrics, new_state) = jax.jit(
        lambda p, s, b: method.loss_fn(p, s, b, None, model=model, config=config)
    )(params, state, batch)

    # Recompute every term step by step on the host.
    forward, scale = _apply(model)
    out = forward(variables, batch["image"], True)
    target = batch["density"] if head == "regression" else batch["distance_label"].astype(int)
    initial = _numpy_pixel_loss(out, target, batch["image_mask"], config)
    dense = autoscale.dense_masks(out, jnp.asarray(batch["image_mask"]), config, head=HEADS[head])
    dense = np.asarray(dense)
    boxes, found = [], []
    for m in dense:
        box, ok = dense_regions.largest_region_box_host(m)
        boxes.append(box)
        found.append(ok and box[2] * box[3] > 0.01 * H * W)
    boxes, used = np.stack(boxes), np.array(found)
    assert used.any(), "the test needs at least one selected region"
    r = np.asarray(scale(variables, out["features"], jnp.asarray(boxes)))
    assert np.all((r > 0.5) & (r < 3))

    rescaled = np.zeros(4)
    closeness = np.zeros(4)
    has_region = np.zeros(4, bool)
    for i in np.flatnonzero(used):
        x0, y0, w, h = boxes[i]
        pts = batch["points"][i][batch["point_mask"][i]]
        inside = (pts[:, 0] >= x0) & (pts[:, 0] < x0 + w) & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + h)
        if inside.sum() >= 2:
            has_region[i] = True
            closeness[i] = labels.closeness(pts[inside])
        fitted = np.asarray(
            rescale.fit_box_to_canvas(jnp.array([boxes[i]]), jnp.array([r[i]]), (H, W))
        )[0]
        fx, fy, fw, fh = fitted
        canvas, cmask = rescale.affine_sample(
            jnp.asarray(batch["image"][i : i + 1]), jnp.array([fitted]), jnp.array([r[i]]), (H, W)
        )
        eh, ew = int(np.asarray(cmask)[0, :, 0].sum()), int(np.asarray(cmask)[0, 0].sum())
        keep = (pts[:, 0] >= fx) & (pts[:, 0] < fx + fw) & (pts[:, 1] >= fy) & (pts[:, 1] < fy + fh)
        scaled = (pts[keep] - [fx, fy]) * r[i]
        if head == "regression":  # same kernel, count-preserving inside the rescaled area
            scaled = np.minimum(scaled, [ew - 1e-3, eh - 1e-3])
            gt = np.zeros((H, W))
            gt[:eh, :ew] = labels.density_map(scaled, (eh, ew), sigma=3.0)
        else:
            gt = labels.distance_label_map(scaled, (H, W))
        out2 = forward(variables, canvas)
        rescaled[i] = _numpy_pixel_loss(out2, gt[None], np.asarray(cmask), config)[0]
    center = closeness[has_region].mean()  # data-driven start of S
    center_loss = 0.5 * np.sum(((closeness * r**2 - center) ** 2)[has_region])
    want = (initial + rescaled).mean() + center_loss / 4
    np.testing.assert_allclose(float(loss), want, rtol=2e-4)
    np.testing.assert_allclose(float(metrics["center"]), center, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["selected"]), used.mean())
    assert bool(new_state["center"]["initialized"])


@pytest.mark.slow  # 67 s in the suite: the gradient split by L2S, on top of the loss checks above.
def test_center_loss_alone_trains_l2s_and_not_the_counting_network():
    config = _config("regression", area_ratio=0.01)
    method = autoscale.REGRESSION
    model = method.make_model(config)
    variables = _variables(model, config, seed=1)
    batch = _batch(seed=2, b=4)
    state = {"center": variables["center"]}
    grads = jax.jit(
        jax.grad(lambda p: method.loss_fn(p, state, batch, None, model=model, config=config)[0])
    )(variables["params"])
    config.loss.center_weight = 0.0
    grads_no_center = jax.jit(
        jax.grad(lambda p: method.loss_fn(p, state, batch, None, model=model, config=config)[0])
    )(variables["params"])
    # The FPN sees the same gradient with or without Ls (features go to L2S under stop_gradient).
    for a, b in zip(
        jax.tree.leaves(grads["fpn"]), jax.tree.leaves(grads_no_center["fpn"]), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)
    # L2S learns from Ls only (the rescaled loss does not reach r).
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads_no_center["l2s"]))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["l2s"]))


# ----------------------------------------------------------------------------------------------
# Prediction and counting.


def test_regression_prediction_counts_n_f():
    config = _config("regression", area_ratio=0.01)
    model = autoscale.REGRESSION.make_model(config)
    variables = _variables(model, config, seed=1)
    batch = _batch(seed=2, b=4, pad_cols=8)
    images, image_mask = jnp.asarray(batch["image"]), jnp.asarray(batch["image_mask"])
    predict = jax.jit(
        functools.partial(autoscale.REGRESSION.predict_fn, model=model, config=config)
    )
    density = predict(variables, images, image_mask=image_mask)
    forward, scale = _apply(model)
    out = forward(variables, images, True)
    y = np.asarray(out["density"]) * batch["image_mask"]
    boxes, used = autoscale.select_boxes(
        autoscale.dense_masks(out, image_mask, config, head=REG), image_mask, config, head=REG
    )
    r = scale(variables, out["features"], boxes)
    fitted, canvas, cmask = autoscale.rescale_region(images, boxes, r, config)
    y2 = np.asarray(forward(variables, canvas)["density"]) * np.asarray(cmask)
    assert np.asarray(used).any()
    for i in range(4):
        x0, y0, w, h = np.asarray(fitted[i])
        n_f = (
            y[i].sum() - y[i, y0 : y0 + h, x0 : x0 + w].sum() + y2[i].sum()
            if used[i]
            else y[i].sum()
        )
        np.testing.assert_allclose(float(density[i].sum()), n_f, rtol=1e-4, atol=1e-4)
        assert float(jnp.abs(density[i] * ~image_mask[i]).max()) == 0  # nothing in the padding


def test_localization_points_recover_heads_outside_and_inside_the_box():
    # Class maps made from known heads: the initial map sees merged heads in the dense box, the
    # re-prediction (the box zoomed by r) separates them; points_fn maps them back.
    config = _config("localization")
    rng = np.random.default_rng(8)
    sparse = np.array([[5.5, 5.5], [34.5, 40.5], [30.5, 8.5]], np.float32)
    box, r = np.array([10, 16, 16, 16]), 2.0
    dense = (box[:2] + 1 + rng.choice(14, (6, 2), replace=False) + 0.5).astype(np.float32)
    classes = labels.distance_label_map(np.concatenate([sparse, dense]), (H, W))
    classes[box[1] : box[1] + box[3], box[0] : box[0] + box[2]] = 0  # merged heads
    canvas_pts = (dense - box[:2]) * r
    canvas = np.full((H, W), 10, np.int8)
    canvas[:32, :32] = labels.distance_label_map(canvas_pts, (32, 32))
    outputs = {
        "classes": classes.astype(np.int8),
        "canvas_classes": canvas,
        "box": box,
        "scale": np.float32(r),
        "used": np.bool_(True),
        "canvas_extent": np.array([32, 32]),
    }
    got = heads.points_fn(outputs, (H, W), config)
    want = np.concatenate([sparse, box[:2] + (np.floor(canvas_pts) + 0.5) / r])
    assert len(got) == len(want)
    d = np.linalg.norm(got[:, None] - want[None], axis=-1)
    assert np.all(d.min(1) < 1e-4) and np.all(d.min(0) < 1e-4)
    outputs["used"] = np.bool_(False)  # no region: the initial map alone
    np.testing.assert_allclose(
        heads.points_fn(outputs, (H, W), config),
        labels.local_minima(classes, max_label=config.eval.minima_max_class),
    )


def test_localization_predict_outputs_and_padding():
    config = _config("localization")
    model = autoscale.LOCALIZATION.make_model(config)
    variables = _variables(model, config)
    batch = _batch(pad_cols=8)
    predict = jax.jit(
        functools.partial(autoscale.LOCALIZATION.predict_fn, model=model, config=config)
    )
    out = predict(
        variables, jnp.asarray(batch["image"]), image_mask=jnp.asarray(batch["image_mask"])
    )
    assert set(out) == {"classes", "canvas_classes", "box", "scale", "used", "canvas_extent"}
    assert np.all(np.asarray(out["classes"])[:, :, W - 8 :] == 10)  # padding is background
    for i in range(2):
        pts = autoscale.LOCALIZATION.points_fn(
            {k: np.asarray(v[i]) for k, v in out.items()}, (H, W - 8), config
        )
        assert pts.shape[1] == 2 and np.all(pts[:, 0] < W - 8 + 1e-6)


def test_dce_is_the_localization_loss():
    # The loc loss uses crowdjax.losses.dce_loss (itself tested against numpy): CE and focal too.
    for kind, fn in (
        ("dce", dce.dce_loss),
        ("ce", dce.cross_entropy_loss),
        ("focal", dce.focal_loss),
    ):
        config = _config("localization")
        config.loss.classification = kind
        config.loss.side_weight = 0.0
        rng = np.random.default_rng(9)
        logits = jnp.asarray(rng.normal(size=(2, 8, 8, 11)), jnp.float32)
        target = jnp.asarray(rng.integers(0, 11, (2, 8, 8)))
        mask = jnp.ones((2, 8, 8))
        outputs = {"logits": logits, "side_outputs": ()}
        got = autoscale._pixel_loss(outputs, target, mask, config, head=LOC)
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(fn(logits, target, mask=mask)), rtol=1e-6
        )


def test_imagenet_vgg16_weights_load_into_the_fpn_backbone(tmp_path):
    config = _config("localization")
    model = autoscale.LOCALIZATION.make_model(config)
    variables = _variables(model, config)
    convs = reference.random_vgg_convs("vgg16", config.model.width)
    path = str(tmp_path / "vgg16.npz")
    np.savez(path, **reference.torchvision_state_dict(convs, "vgg16"))
    loaded = autoscale.LOCALIZATION.load_pretrained(jax.device_get(variables), path, config)
    params = loaded["params"]
    backbone = params["fpn"]["backbone"]
    for name in ("conv1_1", "conv3_2", "conv4_3"):
        np.testing.assert_array_equal(np.asarray(backbone[name]["kernel"]), convs[name][0])
        np.testing.assert_array_equal(np.asarray(backbone[name]["bias"]), convs[name][1])
    # Heads, L2S and the center state keep their values.
    np.testing.assert_array_equal(loaded["center"]["value"], variables["center"]["value"])
    np.testing.assert_array_equal(
        np.asarray(params["l2s"]["fc1"]["kernel"]),
        np.asarray(variables["params"]["l2s"]["fc1"]["kernel"]),
    )


def test_evaluation_uses_the_methods_own_head_locations():
    from crowdjax import evaluation

    gt = np.array([[3.5, 4.5], [10.5, 2.5], [7.5, 7.5]], np.float32)
    pred = gt[:2] + [[1.0, 0.0], [5.0, 0.0]]  # one head 1 px off, one 5 px off, one missed
    density = evaluation.points_to_map(pred, (12, 16), 1)
    assert density.shape == (12, 16) and density.sum() == 2 and density[4, 4] == 1
    stream = evaluation.StreamingMetrics(peak_threshold=0.5, detailed=True)
    # The peaks of an empty map would find no head at all: the method's points are matched,
    # and the count comes from the map (0 here, against 3 heads).
    empty = np.zeros_like(density)
    region = np.ones((12, 16), np.uint8)
    stream.add(
        image_id="a", gt_points=gt, pred_map=empty, stride=1, region=region, pred_points=pred
    )
    results = stream.result()
    assert results["mae"] == 3.0
    np.testing.assert_allclose(results["precision@4"], 0.5)
    np.testing.assert_allclose(results["recall@8"], 2 / 3)
