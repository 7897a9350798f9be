"""L2SM's rescale path, scaled ground truth, prediction and preparation against independent
computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import l2sm_synthetic
from crowdjax.data import labels, settings
from crowdjax.methods.l2sm import method, regions
from crowdjax.methods.l2sm import model as model_lib
from crowdjax.models import rescale


def _config(**l2sm):
    config = l2sm_synthetic.get_config("tiny")
    for key, value in l2sm.items():
        config.l2sm[key] = value
    return config


_VARIABLES = {}


def _init(model, config, seed=0):
    """Jitted init, once per architecture (init and its compilation take ~30 s on a CPU; the
    config variants of these tests share the parameter shapes)."""
    key = (config.model.use_l2sm, seed)
    if key not in _VARIABLES:
        shape = settings.crop_shape(config.data)
        init = jax.jit(lambda rng: method.init_variables(model, rng, config, input_shape=shape))
        _VARIABLES[key] = init(jax.random.PRNGKey(seed))
    return jax.tree.map(lambda x: x, _VARIABLES[key])  # a fresh dict tree per test


def _model_and_variables(config, seed=0):
    model = method.make_model(config)
    variables = _init(model, config, seed)
    variables["l2sm"] = {
        "thresholds": jnp.array([-1.0, -1.0, -1.0, -1.0]),  # every valid region is dense
        "group_means": jnp.array([0.0, 0.1, 0.2, 0.3, 0.4]),
        "centers": jnp.array([0.1, 0.2, 0.3]),
    }
    return model, variables


_PREDICT = {}


def _predict(variables, images, model, config, mask=None):
    """The jitted prediction, compiled once per config (eager execution is many times slower)."""
    if mask is None:
        mask = np.ones(images.shape[:3], bool)
    if id(config) not in _PREDICT:
        _PREDICT[id(config)] = (
            config,  # kept alive, so that its id is not reused
            jax.jit(
                lambda v, x, m: method.predict_fn(v, x, model=model, config=config, image_mask=m)
            ),
        )
    return _PREDICT[id(config)][1](variables, images, mask)


def _random_regions(seed, size=(53, 61), k=4, b=2):
    rng = np.random.default_rng(seed)
    sizes = jnp.array([size] * b, jnp.int32)
    boxes, _, valid = regions.region_boxes(sizes, k)
    scale = jnp.asarray(rng.uniform(0.5, 2.99, boxes.shape[:2]), jnp.float32)
    return rng, sizes, boxes, valid, scale


def test_move_back_preserves_each_regions_count():
    config = _config()
    rng, sizes, boxes, valid, scale = _random_regions(0)
    features = jnp.asarray(rng.random((2, 8, 8, 3)), jnp.float32)
    _, mask = method.sample_regions(features, boxes, scale, config)
    canvas = jnp.asarray(rng.random(mask.shape), jnp.float32) * mask
    for m in range(boxes.shape[1]):  # one region at a time: its mass lands inside its box
        only = canvas * (jnp.arange(boxes.shape[1]) == m)[None, :, None, None]
        moved = np.asarray(method.move_back(only, mask, boxes, sizes, (16, 16)))
        want = np.asarray(only.sum(axis=(1, 2, 3)))
        np.testing.assert_allclose(moved.sum(axis=(1, 2)), want, rtol=1e-5)
        cover = np.asarray(
            method.region_cover(boxes[:, m : m + 1], valid[:, m : m + 1], sizes, (16, 16))
        )
        assert np.all(moved[cover == 0] == 0)
    # Nothing lands on padding: the real D̂ cells of a 53 x 61 image are 14 x 16.
    moved = np.asarray(method.move_back(canvas, mask, boxes, sizes, (16, 16)))
    assert np.all(moved[:, 14:, :] == 0)
    np.testing.assert_allclose(moved.sum(axis=(1, 2)), np.asarray(canvas.sum((1, 2, 3))), rtol=1e-5)


def test_scaled_ground_truth_equals_labels_density_map_of_scaled_points():
    config = _config(sigma=2.0)
    rng, sizes, boxes, valid, scale = _random_regions(1)
    pts = np.concatenate(
        [rng.uniform(0, 1, (2, 70, 2)) * [61, 53], [[[0.0, 0.0], [60.99, 52.99]]] * 2], axis=1
    ).astype(np.float32)
    pmask = np.ones(pts.shape[:2], bool)
    pmask[1, 30:] = False
    features = jnp.zeros((2, 8, 8, 1))
    _, mask = method.sample_regions(features, boxes, scale, config)
    got = np.asarray(method.scaled_ground_truth(pts, pmask, boxes, scale, mask, config))
    h_c, w_c = mask.shape[2:]
    for b in range(2):
        for m in range(boxes.shape[1]):
            x0, y0, w, h = (int(v) for v in boxes[b, m])
            r = float(scale[b, m])
            rows = int(np.asarray(mask[b, m, :, 0]).sum())
            cols = int(np.asarray(mask[b, m, 0, :]).sum())
            p = pts[b][pmask[b]]
            inside = (
                (p[:, 0] >= 8 * x0)
                & (p[:, 0] < 8 * (x0 + w))
                & (p[:, 1] >= 8 * y0)
                & (p[:, 1] < 8 * (y0 + h))
            )
            scaled = (p[inside] - [8 * x0, 8 * y0]) * np.float32(r)
            scaled = np.minimum(scaled, [8 * cols - 1e-3, 8 * rows - 1e-3])
            want = np.zeros((h_c, w_c))
            if rows and cols:
                dens = labels.density_map(scaled, (8 * rows, 8 * cols), sigma=2.0)
                want[:rows, :cols] = labels.sum_pool(dens, 8)
            np.testing.assert_allclose(got[b, m], want, atol=1e-5, rtol=1e-4)
            np.testing.assert_allclose(got[b, m].sum(), inside.sum(), atol=1e-4)


def test_prediction_count_is_initial_outside_plus_repredicted_inside():
    config = _config()
    model, variables = _model_and_variables(config)
    rng = np.random.default_rng(2)
    images = jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32)
    mask = np.zeros((2, 64, 64), bool)
    mask[0, :64, :64] = True
    mask[1, :40, :56] = True
    out = _predict(variables, images, model, config, mask)
    params = variables["params"]
    size = regions.real_size(jnp.asarray(mask))
    spn = jax.jit(model.apply)({"params": params}, images, size)
    initial = np.asarray(spn["density"]) * np.asarray(method.cell_mask(size, (16, 16), 4))
    boxes, _, valid = regions.region_boxes(size, 4)
    canvas, canvas_mask = method.sample_regions(
        spn["features"], boxes, np.asarray(out["scale"]), config
    )
    again = np.asarray(method.repredict(params, model, canvas, canvas_mask))
    sel = np.asarray(out["selected"])
    np.testing.assert_array_equal(sel, np.asarray(valid))  # thresholds -1: every valid region
    cover = np.asarray(method.region_cover(boxes, jnp.asarray(sel), size, (16, 16)))
    want = (initial * (1 - cover)).sum((1, 2)) + (again.sum((2, 3)) * sel).sum(1)
    np.testing.assert_allclose(np.asarray(out["density"]).sum((1, 2)), want, rtol=1e-4, atol=1e-4)
    # No region selected: the prediction is SPN's.
    variables["l2sm"]["thresholds"] = jnp.full((4,), 1e9)
    none = _predict(variables, images, model, config, mask)
    assert not np.asarray(none["selected"]).any()
    np.testing.assert_allclose(np.asarray(none["density"]), initial, atol=1e-6)
    # At initialisation the scale map is 1 everywhere (zero conv, bias at r = 1).
    np.testing.assert_allclose(np.asarray(out["scale"]), 1.0, rtol=1e-6)


def test_max_regions_keeps_the_densest_selected():
    config = _config(max_regions=3)
    model, variables = _model_and_variables(config)
    images = jnp.asarray(np.random.default_rng(3).normal(size=(1, 64, 64, 3)), jnp.float32)
    out = _predict(variables, images, model, config)
    sel = np.asarray(out["selected"])[0]
    assert sel.sum() == 3
    size = jnp.array([[64, 64]])
    boxes, area, _ = regions.region_boxes(size, 4)
    spn = jax.jit(model.apply)({"params": variables["params"]}, images, size)
    avg = np.asarray(regions.average_density(regions.region_sums(spn["density"], boxes, 4), area))
    np.testing.assert_array_equal(np.sort(np.argsort(-avg[0])[:3]), np.flatnonzero(sel))


def test_loss_terms_gradients_and_center_update():
    config = _config(region_density="gt")
    model, variables = _model_and_variables(config)
    rng = np.random.default_rng(4)
    pts = rng.uniform(0, 64, (2, 64, 2)).astype(np.float32)
    pmask = np.ones((2, 64), bool)
    dens = np.stack([labels.sum_pool(labels.density_map(p, (64, 64), sigma=2.0), 4) for p in pts])
    batch = {
        "image": jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32),
        "image_mask": np.ones((2, 64, 64), bool),
        "density": dens,
        "points": pts,
        "point_mask": pmask,
        "count": np.full((2,), 64.0, np.float32),
    }
    state = {k: v for k, v in variables.items() if k != "params"}
    fn = jax.jit(lambda p: method.loss_fn(p, state, batch, None, model=model, config=config))
    loss, (metrics, new_state) = fn(variables["params"])
    assert np.isfinite(float(loss)) and float(metrics["selected"]) == 1.0
    # MPCL on the GT region densities, r = 1 at init: L_c = sum (D_i - d_c)^2 (Eq. 2).
    size = jnp.array([[64, 64]] * 2)
    boxes, area, valid = regions.region_boxes(size, 4)
    gt = np.asarray(regions.average_density(regions.region_sums(dens, boxes, 4), area))
    want = np.sum((gt - 0.3) ** 2, axis=1).mean()  # thresholds -1: all in the densest group
    np.testing.assert_allclose(float(metrics["center_loss"]), want, rtol=1e-4)
    # Eq. 1 moved only the densest center.
    new = np.asarray(new_state["l2sm"]["centers"])
    np.testing.assert_array_equal(new[:2], np.float32([0.1, 0.2]))
    np.testing.assert_allclose(new[2], 0.3 - 0.5 * (0.3 * 32 - gt.sum()) / 33, rtol=1e-5)
    grads = jax.jit(jax.grad(lambda p: fn(p)[0]))(variables["params"])
    for part in ("backbone", "deconv", "repredict1", "scale_conv"):
        assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads[part])) > 0, part
    # S2AD: no MPCL, no gradient to the scale conv, centers unchanged.
    s2ad = _config(scaling="average")
    loss2, (metrics2, state2) = jax.jit(
        lambda p: method.loss_fn(p, state, batch, None, model=model, config=s2ad)
    )(variables["params"])
    assert float(metrics2["center_loss"]) == 0.0
    np.testing.assert_array_equal(state2["l2sm"]["centers"], state["l2sm"]["centers"])


def test_spn_alone_has_no_l2sm_parts():
    config = _config()
    config.model.use_l2sm = False
    model = method.make_model(config)
    # Shapes only (tracing, no compilation).
    variables = jax.eval_shape(
        lambda r: method.init_variables(model, r, config, input_shape=(64, 64)), jax.random.key(0)
    )
    assert "l2sm" not in variables
    assert not any(k.startswith(("repredict", "scale")) for k in variables["params"])
    out = jax.eval_shape(
        lambda v, x: method.predict_fn(v, x, model=model, config=config),
        variables,
        jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),
    )
    assert out.shape == (1, 16, 16)


def test_rescale_triangle_weights_normalise_both_ways():
    w = rescale.triangle_weights(12, jnp.array(7), 20, jnp.array(3), jnp.array(9))
    w = np.asarray(w)
    assert np.all(w[:3] == 0) and np.all(w[12:] == 0) and np.all(w[:, 7:] == 0)
    rows = np.asarray(rescale.normalize_weights(jnp.asarray(w), -1))
    np.testing.assert_allclose(rows[3:12].sum(1), 1.0, rtol=1e-6)
    cols = np.asarray(rescale.normalize_weights(jnp.asarray(w), -2))
    np.testing.assert_allclose(cols[:, :7].sum(0), 1.0, rtol=1e-6)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="l2sm.centers"):
        config = _config(centers=6)
        model = method.make_model(config)
        method.init_variables(model, jax.random.PRNGKey(0), config, input_shape=(64, 64))
    config = _config(scaling="zoom")
    model, variables = _model_and_variables(config)
    with pytest.raises(ValueError, match="l2sm.scaling"):
        method.predict_fn(variables, jnp.zeros((1, 64, 64, 3)), model=model, config=config)
    with pytest.raises(ValueError, match="multiples of 8"):
        model.apply({"params": variables["params"]}, jnp.zeros((1, 60, 64, 3)))


def _random_scale_conv(variables, model, images, seed=7):
    """Scale-conv weights that give scales spread around 1 on `images` (the init gives exactly
    1 everywhere): a random kernel and the bias that centres its output."""
    params = dict(variables["params"])
    rng = np.random.default_rng(seed)
    kernel = jnp.asarray(rng.normal(0, 1.0, params["scale_conv"]["kernel"].shape), jnp.float32)
    params["scale_conv"] = {"kernel": kernel, "bias": jnp.zeros((1,), jnp.float32)}
    size = jnp.array([images.shape[1:3]] * images.shape[0])
    pooled = model.apply({"params": params}, images, size)["pooled"]
    r0 = model.apply({"params": params}, pooled, method=model.scale_map)
    z0 = np.log((r0 - 0.5) / (3.0 - r0))  # the conv output without bias
    params["scale_conv"]["bias"] = jnp.array([np.log(0.5 / 2.0) - float(np.mean(z0))])
    return {**variables, "params": params}


def _crowd_batch(seed=5, b=2):
    rng = np.random.default_rng(seed)
    pts = (
        np.concatenate([rng.normal(20, 6, (b, 40, 2)), rng.uniform(0, 64, (b, 24, 2))], axis=1)
        .clip(0, 63.9)
        .astype(np.float32)
    )
    pmask = np.ones(pts.shape[:2], bool)
    pmask[1, 50:] = False
    dens = np.stack(
        [
            labels.sum_pool(labels.density_map(p[m], (64, 64), sigma=2.0), 4)
            for p, m in zip(pts, pmask, strict=True)
        ]
    )
    return {
        "image": jnp.asarray(rng.normal(size=(b, 64, 64, 3)), jnp.float32),
        "image_mask": np.ones((b, 64, 64), bool),
        "density": dens,
        "points": pts,
        "point_mask": pmask,
        "count": pmask.sum(1).astype(np.float32),
    }


def test_repredicted_loss_against_loops_with_learned_scales():
    config = _config(region_density="gt", max_regions=5)
    model, variables = _model_and_variables(config)
    batch = _crowd_batch()
    variables = _random_scale_conv(variables, model, batch["image"])
    variables["l2sm"]["thresholds"] = jnp.array([0.0, 0.02, 0.05, 0.1])
    state = {k: v for k, v in variables.items() if k != "params"}
    params = variables["params"]
    _, (metrics, _) = jax.jit(
        lambda p: method.loss_fn(p, state, batch, None, model=model, config=config)
    )(params)
    # Independently: GT region densities, groups, the 5 densest dense regions, their canvases.
    size = jnp.array([[64, 64]] * 2)
    out = jax.jit(model.apply)({"params": params}, batch["image"], size)
    r_all = np.asarray(model.apply({"params": params}, out["pooled"], method=model.scale_map))
    r_all = r_all.reshape(2, 16)
    assert np.ptp(r_all) > 0.1  # the scales really differ
    boxes, area, _ = regions.region_boxes(size, 4)
    boxes = np.asarray(boxes)
    total = np.zeros(2)
    for b in range(2):
        gt = []
        for m in range(16):
            x0, y0, w, h = boxes[b, m]
            gt.append(
                batch["density"][b, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)].sum()
                * 64
                / (64 * w * h)
            )
        gt = np.array(gt)
        dense = gt > 0.02  # groups 2..4 of 5 are the 3 dense ones
        chosen = [
            m for m in np.argsort(-np.where(dense, gt, -np.inf), kind="stable")[:5] if dense[m]
        ]
        for m in chosen:
            box, r = (
                jnp.asarray(boxes[b : b + 1, m : m + 1]),
                jnp.asarray(r_all[b : b + 1, m : m + 1]),
            )
            canvas, cmask = method.sample_regions(out["features"][b : b + 1], box, r, config)
            pred = np.asarray(method.repredict(params, model, canvas, cmask))[0, 0]
            cmask = np.asarray(cmask)[0, 0]
            rows, cols = int(cmask[:, 0].sum()), int(cmask[0, :].sum())
            x0, y0, w, h = boxes[b, m]
            p = batch["points"][b][batch["point_mask"][b]]
            inside = (
                (p[:, 0] >= 8 * x0)
                & (p[:, 0] < 8 * (x0 + w))
                & (p[:, 1] >= 8 * y0)
                & (p[:, 1] < 8 * (y0 + h))
            )
            scaled = np.minimum(
                (p[inside] - [8 * x0, 8 * y0]) * r_all[b, m], [8 * cols - 1e-3, 8 * rows - 1e-3]
            )
            want = np.zeros_like(pred)
            want[:rows, :cols] = labels.sum_pool(
                labels.density_map(scaled, (8 * rows, 8 * cols), sigma=2.0), 8
            )
            total[b] += np.sum(cmask * (pred - want) ** 2)
    np.testing.assert_allclose(float(metrics["repredicted"]), total.mean(), rtol=2e-4)


def test_gradient_switches():
    config = _config(region_density="gt")
    model, variables = _model_and_variables(config)
    batch = _crowd_batch(6)
    variables = _random_scale_conv(variables, model, batch["image"])
    state = {k: v for k, v in variables.items() if k != "params"}

    def grads(cfg):
        fn = lambda p: method.loss_fn(p, state, batch, None, model=model, config=cfg)[0]
        return jax.jit(jax.grad(fn))(variables["params"])

    def biggest(tree):
        return max(float(jnp.abs(g).max()) for g in jax.tree.leaves(tree))

    with_center = grads(config)
    no_center = _config(region_density="gt")
    no_center.loss.center_weight = 0.0
    without = grads(no_center)
    # L_c reaches the scale conv only: the rest of the gradient is the same without it.
    for part in ("backbone", "pyramid1", "pyramid5", "reg_conv1", "repredict1"):
        diff = jax.tree.map(lambda a, b: a - b, with_center[part], without[part])
        assert biggest(diff) <= 1e-6 * max(1.0, biggest(without[part])), part
    # L_r and L_D do not reach r; L_c does.
    assert biggest(without["scale_conv"]) == 0.0
    assert biggest(with_center["scale_conv"]) > 0.0
    # With both switches on, L_c trains the pyramid too and L_r reaches the scale conv.
    leaky = _config(region_density="gt", feature_gradient=True, rescale_gradient=True)
    leaky.loss.center_weight = 0.0
    assert biggest(grads(leaky)["scale_conv"]) > 0.0


def test_move_back_at_scale_two_places_the_canvas_on_the_region():
    # r = 2: a canvas cell (8 / r px) is a D̂ cell (4 px): the move back is a plain placement.
    config = _config()
    sizes = jnp.array([[64, 64]])
    boxes, _, valid = regions.region_boxes(sizes, 4)
    scale = jnp.full(boxes.shape[:2], 2.0)
    _, mask = method.sample_regions(jnp.zeros((1, 8, 8, 1)), boxes, scale, config)
    rng = np.random.default_rng(8)
    canvas = jnp.asarray(rng.random(mask.shape), jnp.float32) * mask
    moved = np.asarray(method.move_back(canvas, mask, boxes, sizes, (16, 16)))[0]
    for m in range(16):
        x0, y0, w, h = (int(v) for v in boxes[0, m])
        np.testing.assert_allclose(
            moved[2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)],
            np.asarray(canvas)[0, m, : 2 * h, : 2 * w],
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.parametrize(("n_in", "n_out"), [(4, 13), (16, 4), (7, 7), (5, 16)])
def test_resampling_weights_are_jax_image_resize(n_in, n_out):
    # Row-normalised triangle weights over the whole extents = jax.image.resize "linear"
    # (antialiased when downsampling): the pyramid upsampling and the move back's weights.
    x = np.random.default_rng(n_in * n_out).random((1, n_in, n_in, 2)).astype(np.float32)
    want = jax.image.resize(x, (1, n_out, n_out, 2), "linear", antialias=True)
    full = jnp.array([[n_out, n_out]])
    got = model_lib.upsample_to_extent(jnp.asarray(x), full, (n_out, n_out))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # On a larger output, only the extent is filled.
    got = model_lib.upsample_to_extent(jnp.asarray(x), full, (n_out + 3, n_out + 2))
    np.testing.assert_allclose(got[:, :n_out, :n_out], want, atol=1e-5)
    assert np.all(np.asarray(got)[:, n_out:] == 0) and np.all(np.asarray(got)[:, :, n_out:] == 0)
