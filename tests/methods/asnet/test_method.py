"""ASNet's alternating step (Alg. 1), its phases, the ablation switches and the networks' shapes,
against independent computations."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import asnet_synthetic
from crowdjax import run
from crowdjax.data import settings
from crowdjax.losses import adversarial_scores, domain_bce
from crowdjax.losses.adversarial import output_mask, split_patches
from crowdjax.methods.asnet import method
from crowdjax.methods.asnet import model as model_lib
from crowdjax.optimizers import Optimizers

B, SIZE = 2, 64


def _config(variant="", **asnet):
    config = asnet_synthetic.get_config(",".join(v for v in (variant, "tiny") if v))
    for key, value in asnet.items():
        config.asnet[key] = value
    return config


def _batch(seed=0, *, target_labels=False):
    rng = np.random.default_rng(seed)
    mask = np.ones((B, SIZE, SIZE), bool)
    mask[1, 48:] = False  # a padded source crop
    source = {
        "image": rng.normal(size=(B, SIZE, SIZE, 3)).astype(np.float32),
        "image_mask": mask,
        "density": (rng.uniform(size=(B, SIZE, SIZE)) * mask / 50).astype(np.float32),
    }
    target = {
        "image": rng.normal(size=(B, SIZE, SIZE, 3)).astype(np.float32) + 0.5,
        "image_mask": np.ones((B, SIZE, SIZE), bool),
    }
    if target_labels:
        target["density"] = rng.uniform(size=(B, SIZE, SIZE)).astype(np.float32)
        target["points"] = rng.uniform(0, SIZE, (B, 5, 2)).astype(np.float32)
        target["count"] = np.full((B,), 5.0, np.float32)
    return {"source": source, "target": target}


class RecordingOptimizers(Optimizers):
    """Optimizers that record every phase: the groups, params and states before and after."""

    def __init__(self, inner: Optimizers):
        super().__init__(inner.transforms, inner._param_group)
        self.phases, self.log = [], []  # Phases: their groups (at tracing), arrays (returned).

    def apply(self, params, opt_state, grads, *, groups=None):
        new_params, new_state = super().apply(params, opt_state, grads, groups=groups)
        self.phases.append(tuple(groups))
        self.log.append(((params, opt_state), (new_params, new_state)))
        return new_params, new_state


_INIT = {}


def _setup(config):
    """(model, optimizer, initial state): the jitted init, once (shapes are shared)."""
    model = method.make_model(config)
    optimizer = Optimizers.from_config(config, total_steps=10, param_group=method.param_group)
    key = config.optimizers.to_json()  # The optimizer states' structure.
    if key not in _INIT:
        init = functools.partial(
            run.init_state,
            method.METHOD,
            model,
            optimizer,
            config,
            input_shape=settings.crop_shape(config.data),
        )
        _INIT[key] = jax.jit(init)(jax.random.key(0))
    return model, optimizer, _INIT[key]


_STEPS = {}


def _step(config, batch, *, record=False):
    """One jitted train step (compiled once per ASNet setting); with `record`, also the phases."""
    key = config.asnet.to_json() + config.optimizers.to_json()
    if key not in _STEPS:
        model, optimizer, _ = _setup(config)
        recording = RecordingOptimizers(optimizer)

        def step(state, batch):
            recording.phases.clear()  # A new trace (e.g. another batch structure) records anew.
            recording.log.clear()
            new_state, metrics = method.train_step(
                state, batch, method=method.METHOD, model=model, config=config, optimizer=recording
            )
            return new_state, metrics, recording.log

        _STEPS[key] = (jax.jit(step), recording)
    step, recording = _STEPS[key]
    state = _setup(config)[2]
    new_state, metrics, arrays = step(state, batch)
    log = [(g, *a) for g, a in zip(recording.phases, arrays, strict=True)]
    return (state, new_state, metrics, log) if record else (state, new_state, metrics)


def _groups(params):
    return {g: traverse_util.flatten_dict(params[g]) for g in params}


def _identical(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_each_phase_updates_one_network_and_freezes_the_others_bit_identical():
    state, new_state, metrics, log = _step(_config(), _batch(), record=True)
    assert [groups for groups, _, _ in log] == [("d1",), ("d2",), ("generator",)]
    for groups, (p0, s0), (p1, s1) in log:
        (updated,) = groups
        for group in method.GROUPS:
            same_params = _identical(p0[group], p1[group])
            same_state = _identical(s0[group], s1[group])
            if group == updated:
                assert not same_params and not same_state, group
            else:
                assert same_params and same_state, (updated, group)
    # The phases chain: each starts from the previous one's result, the step returns the last.
    for (_, _, after), (_, before, _) in zip(log, log[1:], strict=False):
        assert _identical(after, before)
    assert _identical(log[-1][2][0], new_state.params)
    assert int(new_state.step) == int(state.step) + 1


def test_the_three_phases_match_an_independent_computation():
    """With plain SGD (an update is lr x gradient): D1 and D2 step on the BCE of G's maps (D2's
    scaled by lambda_3), then G on Eq. 9 with the updated discriminators and the scores of the
    discriminators before their step; everything recomputed here from the networks alone."""
    config = _config()
    lr = 1e-2
    for group in method.GROUPS:
        config.optimizers[group].update(name="sgd", learning_rate=lr, momentum=0.0)
    model, _, state = _setup(config)
    batch = _batch(1)
    _, new_state, metrics = _step(config, batch)
    p = state.params
    apply = lambda params, *a, **k: model.apply({"params": params}, *a, **k)
    masks = {side: batch[side]["image_mask"].astype(np.float32) for side in ("source", "target")}
    maps = {side: apply(p, batch[side]["image"]) * masks[side] for side in masks}

    def out_mask(side, logits):  # D's outputs over real pixels (source image 1 is padded)
        if logits.ndim == 5:
            return output_mask(split_patches(masks[side], 4), logits.shape[3:])
        return output_mask(masks[side], logits.shape[1:])

    def bce(d_params, fn, group):
        full = {**p, group: d_params}
        s = apply(full, maps["source"], method=fn)
        t = apply(full, maps["target"], method=fn)
        return (
            domain_bce(s, source=True, mask=out_mask("source", s)).mean()
            + domain_bce(t, source=False, mask=out_mask("target", t)).mean()
        )

    sgd = lambda params, grads: jax.tree.map(lambda x, g: x - lr * g, params, grads)
    close = lambda a, b: [
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    for group, fn, weight, name in (
        ("d1", model.global_logits, 1.0, "d_global"),
        ("d2", model.local_logits, 0.1, "d_local"),
    ):
        loss = functools.partial(
            lambda d, fn, group, w: w * bce(d, fn, group), fn=fn, group=group, w=weight
        )
        value, grads = jax.jit(jax.value_and_grad(loss))(p[group])  # eager VGG is slow
        np.testing.assert_allclose(metrics[name], value / weight, rtol=1e-5)
        close(new_state.params[group], sgd(p[group], grads))
    # Scores from the discriminators before their step (Alg. 1).
    weight, scores = jax.jit(lambda p: _reference_weight(model, p, batch))(p)
    for level, score in scores.items():
        np.testing.assert_allclose(metrics[f"score_{level}"], score.mean(), rtol=1e-6)
    updated = {**p, "d1": new_state.params["d1"], "d2": new_state.params["d2"]}
    eq9 = lambda g: _reference_eq9(model, {**updated, "generator": g}, batch, weight, config)
    value, grads = jax.jit(jax.value_and_grad(eq9))(p["generator"])
    np.testing.assert_allclose(metrics["loss"], value, rtol=1e-5)
    close(new_state.params["generator"], sgd(p["generator"], grads))


def _masks(batch):
    return {side: batch[side]["image_mask"].astype(np.float32) for side in ("source", "target")}


def _reference_weight(model, params, batch):
    """(1+W1)(1+W2)(1+W3)(1+W4) [B, H, W] and the scores, from the discriminators in `params`
    on G's masked source maps."""
    apply = lambda *a, **k: model.apply({"params": params}, *a, **k)
    mask = _masks(batch)["source"]
    maps = apply(batch["source"]["image"]) * mask
    o1 = jax.nn.sigmoid(apply(maps, method=model.global_logits))
    o2 = jax.nn.sigmoid(apply(maps, method=model.local_logits))
    w1, w2, w3, w4 = adversarial_scores(o1, o2, map_shape=(SIZE, SIZE), map_mask=mask)
    weight = (
        (1 + w1)[:, None, None]
        * jnp.kron(1 + w2, jnp.ones((1, SIZE // 4, SIZE // 4)))
        * (1 + w3)
        * (1 + w4)
    )
    return weight, {"w1": w1, "w2": w2, "w3": w3, "w4": w4}


def _reference_eq9(model, params, batch, weight, config):
    """Eq. 9 written out: the weighted squared errors of the source maps plus lambda_1, lambda_2
    times -sum log D(G(target)) (the target images are never padded in these batches)."""
    apply = lambda *a, **k: model.apply({"params": params}, *a, **k)
    masks = _masks(batch)
    gt = batch["source"]["density"] * config.loss.density_scale
    pred = apply(batch["source"]["image"]) * masks["source"]
    dens = (weight * (pred - gt) ** 2).sum(axis=(1, 2)).mean()
    target = apply(batch["target"]["image"]) * masks["target"]
    adv1 = -jnp.log(jax.nn.sigmoid(apply(target, method=model.global_logits)))
    adv2 = -jnp.log(jax.nn.sigmoid(apply(target, method=model.local_logits)))
    return dens + 1e-3 * adv1.sum() / B + 1e-4 * adv2.sum() / B


def test_target_labels_never_reach_a_loss():
    config = _config()
    _, plain, m_plain = _step(config, _batch(2))
    _, labelled, m_labelled = _step(config, _batch(2, target_labels=True))
    assert _identical(plain.params, labelled.params)
    assert all(np.array_equal(m_plain[k], m_labelled[k]) for k in m_plain)
    # And the loss reads the target's images: other target images give another generator step.
    other = _batch(2)
    other["target"]["image"] = other["target"]["image"][::-1].copy()
    _, moved, _ = _step(config, other)
    assert not _identical(plain.params["generator"], moved.params["generator"])


def test_noadapt_trains_the_generator_alone_on_eq7():
    config = _config("noadapt")
    state, new_state, metrics, log = _step(config, _batch(3), record=True)
    assert [groups for groups, _, _ in log] == [("generator",)]
    for group in ("d1", "d2"):
        assert _identical(state.params[group], new_state.params[group])
        assert _identical(state.opt_state[group], new_state.opt_state[group])
    np.testing.assert_allclose(metrics["density"], metrics["density_mse"], rtol=1e-6)
    assert not any(k.startswith(("adv_", "d_", "score_")) for k in metrics)


def test_coarse_adapt_has_discriminators_and_no_scores():
    config = _config("coarse")
    _, _, metrics, log = _step(config, _batch(4), record=True)
    assert [groups for groups, _, _ in log] == [("d1",), ("d2",), ("generator",)]
    np.testing.assert_allclose(metrics["density"], metrics["density_mse"], rtol=1e-6)
    assert not any(k.startswith("score_") for k in metrics) and "adv_local" in metrics


@pytest.mark.slow  # 33 s in the suite: option switches of the score step (Eq. 9 is tested above).
def test_scores_after_update_differ_and_subsets_switch_levels():
    batch = _batch(5)
    _, _, before = _step(_config(), batch)
    _, _, after = _step(_config(scores_from="after_update"), batch)
    assert any(before[f"score_{k}"] != after[f"score_{k}"] for k in ("w1", "w2", "w3", "w4"))
    _, _, only = _step(_config(scores=("w1", "w3"), local_discriminator=False), batch)
    assert {k for k in only if k.startswith("score_")} == {"score_w1", "score_w3"}
    assert "d_local" not in only and "adv_local" not in only


def test_loss_fn_is_eq9_with_the_current_discriminators():
    config = _config()
    model, _, state = _setup(config)
    batch = _batch(6)
    fn = lambda p: method.loss_fn(p, {}, batch, None, model=model, config=config)[0]
    loss, grads = jax.jit(jax.value_and_grad(fn))(state.params)
    weight, _ = jax.jit(lambda p: _reference_weight(model, p, batch))(state.params)
    reference = lambda g: _reference_eq9(
        model, {**state.params, "generator": g}, batch, weight, config
    )
    value, expected = jax.jit(jax.value_and_grad(reference))(state.params["generator"])
    np.testing.assert_allclose(loss, value, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads["generator"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_the_trainer_gives_asnet_the_target_images_only(tiny_data_dir):
    config = _config()
    config.data.data_dir = tiny_data_dir
    setup = run.Setup(config)
    batch = next(run.training_batches(setup, 0, None))
    assert set(batch["target"]) == {"image", "image_mask"}
    assert {"density", "points", "count"} <= set(batch["source"])
    full = batch["source"]["density"]
    # Maps at stride 2: the ground truth comes sum-pooled to the maps, G's maps match it.
    config = _config(patches=2)
    config.model.map_stride = 2
    config.data.data_dir = tiny_data_dir
    setup = run.Setup(config)
    batch = next(run.training_batches(setup, 0, None))
    density = batch["source"]["density"]
    assert density.shape == (2, SIZE // 2, SIZE // 2)
    pooled = full.reshape(2, SIZE // 2, 2, SIZE // 2, 2).sum(axis=(2, 4))  # the same crops
    np.testing.assert_allclose(density, pooled, rtol=1e-5, atol=1e-7)
    model = method.make_model(config)
    shape = settings.crop_shape(config.data)
    params = jax.jit(lambda r: method.init_variables(model, r, config, input_shape=shape))(
        jax.random.key(0)
    )
    loss, (metrics, _) = jax.jit(
        lambda p: method.loss_fn(p["params"], {}, batch, None, model=model, config=config)
    )(params)
    assert np.isfinite(loss) and metrics["density_mse"] > 0
    config.asnet.patches = 4
    with pytest.raises(ValueError, match="D2 needs them split"):
        method.make_model(config)  # 8-px patches of 32-px maps
    bad = _config()
    bad.data.eval_bucket_multiple = 40
    with pytest.raises(ValueError, match="eval_bucket_multiple: 40 x 40 is not divisible by G's"):
        method.make_model(bad)


@pytest.mark.parametrize(
    "asnet,match",
    [
        (dict(scores=("w2",), local_discriminator=False), "asnet.local_discriminator is off"),
        (dict(scores=("w5",)), "unknown levels"),
        (dict(scores_from="later"), "scores_from"),
    ],
)
def test_config_errors_name_the_field(asnet, match):
    with pytest.raises(ValueError, match=match):
        method.make_model(_config(**asnet))


def test_network_shapes_follow_tables_8_and_9():
    config = _config()
    model, _, state = _setup(config)
    images = jnp.zeros((1, SIZE, SIZE, 3))
    apply = lambda *a, **k: model.apply({"params": state.params}, *a, **k)
    assert apply(images).shape == (1, SIZE, SIZE)  # map_stride 1: the input resolution
    assert apply(jnp.zeros((1, SIZE, SIZE)), method=model.global_logits).shape == (1, 5, 5)
    assert apply(jnp.zeros((1, SIZE, SIZE)), method=model.local_logits).shape == (1, 4, 4, 2, 2)
    d = model_lib.Discriminator(width=1 / 16)
    out = jax.eval_shape(lambda: d.init_with_output(jax.random.key(0), jnp.zeros((2, 512, 512)))[0])
    assert out.shape == (2, 33, 33)  # 512 -> 256 -> 128 -> 64 -> 32 -> 33
    with pytest.raises(ValueError, match="at least 16 px"):
        d.init(jax.random.key(0), jnp.zeros((1, 15, 64)))
    g = model_lib.Generator(width=1 / 16, map_stride=16)
    out = jax.eval_shape(
        lambda: g.init_with_output(jax.random.key(0), jnp.zeros((1, 64, 96, 3)))[0]
    )
    assert out.shape == (1, 4, 6)
    assert method.param_group(("d2", "conv1", "kernel"), config) == "d2"
    assert set(state.params) == set(method.GROUPS)


@pytest.mark.parametrize("stride", [1, 4])
def test_map_mask_of_a_non_square_crop_takes_each_cells_top_left_pixel(stride):
    # UCSD -> Mall trains on 160 x 240 crops: the stride is the height's ratio and the width's.
    rng = np.random.default_rng(0)
    image_mask = rng.random((2, 160, 240)) > 0.3
    shape = (160 // stride, 240 // stride)
    got = np.asarray(method.map_mask(jnp.asarray(image_mask), shape))
    want = np.zeros((2, *shape), np.float32)
    for i in range(shape[0]):
        for j in range(shape[1]):
            want[:, i, j] = image_mask[:, i * stride, j * stride]
    np.testing.assert_array_equal(got, want)
