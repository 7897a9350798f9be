"""DKPNet's step (Eq. 9), its attention baselines, InVA's sub-centers and the stage-II
preparation (Gaussian-mixture clusters of the stage-I attention, reused on resume), against
independent computations."""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import dkpnet_synthetic
from crowdjax import preparation, trainer
from crowdjax.data import decode, settings, sources
from crowdjax.losses import select_sub_centers, variational_attention_regularizer
from crowdjax.methods.dkpnet import method
from crowdjax.methods.dkpnet.model import masked_mean

B, SIZE, DOMAINS = 4, 64, 3
TINY = "synthetic_crowd/tiny"


def _config(variant="va", **dkpnet):
    config = dkpnet_synthetic.get_config(f"{variant},tiny")
    config.data.name = ["a", "b", "c"]  # Three domains (the model only reads their number).
    config.dkpnet.clusters = DOMAINS
    for key, value in dkpnet.items():
        config.dkpnet[key] = value
    return config


_VARIABLES = {}


def _model_and_variables(config):
    model = _make(config)
    key = (config.dkpnet.attention, int(config.dkpnet.sub_centers))
    if key not in _VARIABLES:
        init = jax.jit(
            functools.partial(
                method.init_variables,
                model,
                config=config,
                input_shape=settings.crop_shape(config.data),
            )
        )
        _VARIABLES[key] = init(jax.random.key(0))
    return model, _VARIABLES[key]


def _make(config):
    allowed = ("inva",) if config.dkpnet.attention == "inva" else method.STAGE_ONE
    return method._model(config, allowed)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((B, SIZE, SIZE), bool)
    mask[1, 40:] = False  # a padded crop
    density = rng.uniform(size=(B, SIZE // 4, SIZE // 4)).astype(np.float32) / 100
    density[1, 10:] = 0.0
    return {
        "image": rng.normal(size=(B, SIZE, SIZE, 3)).astype(np.float32),
        "image_mask": mask,
        "density": density,
        "count": density.sum(axis=(1, 2)),
        "domain": np.array([0, 2, 1, 2], np.int32),
    }


@functools.lru_cache
def _loss(variant):
    # InVA without dropout: its sub-center choice is then each cluster's closest to mu.
    config = _config(variant, **({"sub_center_dropout": 0.0} if variant == "inva" else {}))
    model, variables = _model_and_variables(config)
    fn = functools.partial(method.loss_fn, model=model, config=config)
    return config, model, variables, jax.jit(fn)


@functools.cache
def _train_apply(model):
    def apply(variables, images, mask, rng):
        return model.apply(
            variables, images, train=True, mask=mask, rngs={"latent": rng}, mutable=["batch_stats"]
        )

    return jax.jit(apply)


def _split(variables):
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def _kl(mu_q, var_q, mu_p, var_p):
    return 0.5 * np.sum(np.log(var_p / var_q) - 1 + var_q / var_p + (mu_p - mu_q) ** 2 / var_p)


@pytest.mark.parametrize("variant", [pytest.param("va", marks=pytest.mark.slow), "inva"])
def test_loss_is_eq9_against_numpy(variant):
    config, model, variables, loss_fn = _loss(variant)
    params, state = _split(variables)
    batch = _batch()
    rng = jax.random.key(3)
    loss, (metrics, new_state) = loss_fn(params, state, batch, rng)
    # The same forward pass, outside the method: its latent key is the first split of rng.
    latent_rng, _ = jax.random.split(rng)
    out, _ = _train_apply(model)(variables, batch["image"], batch["image_mask"], latent_rng)
    out = jax.tree.map(np.float64, out)
    real = np.zeros((B, SIZE // 4, SIZE // 4))
    real[:] = 1.0
    real[1, 10:] = 0.0
    scale = config.loss.density_scale
    target = batch["density"] * scale
    density = [0.5 * np.sum(real[b] * (out["density"][b] - target[b]) ** 2) for b in range(B)]
    prior = jax.tree.map(np.float64, params["prior"])
    prior_var = np.exp(prior["log_var"])
    reg = []
    for b in range(B):
        if variant == "inva":  # Without dropout: each cluster's closest sub-center.
            centers = np.stack([c[np.argmax(c @ out["mu"][b])] for c in prior["mu"]])
        else:
            centers = prior["mu"]
        c = batch["domain"][b]
        z = out["z"][b]
        margin = np.log(np.sum(np.exp(centers @ z - centers[c] @ z)))
        reg.append(
            _kl(out["mu"][b], out["var"][b], centers[c], prior_var[c])
            + margin
            + np.sum(np.log(prior_var[c])) ** 2
        )
    want = np.mean(density) + config.loss.regularizer_weight * np.mean(reg)
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)
    np.testing.assert_allclose(float(metrics["density_loss"]), np.mean(density), rtol=2e-5)
    # BatchNorm's running statistics moved.
    before = traverse_util.flatten_dict(state["batch_stats"])
    after = traverse_util.flatten_dict(jax.device_get(new_state["batch_stats"]))
    assert any(np.abs(after[k] - before[k]).max() > 0 for k in before)


def test_inva_loss_draws_its_sub_center_dropout_from_the_step_rng():
    _, model, variables, _ = _loss("inva")
    config = _config("inva")  # dropout 0.2
    params, state = _split(variables)
    batch = _batch()
    fn = jax.jit(functools.partial(method.loss_fn, model=model, config=config))
    latent = jax.random.key(0)
    out, _ = _train_apply(model)(variables, batch["image"], batch["image_mask"], latent)
    closest = select_sub_centers(params["prior"]["mu"], out["mu"])[1]
    differs = 0
    for seed in range(4):
        # The loss splits its key into the latent and the dropout keys (mu does not depend on
        # either: `closest` holds for every seed).
        rng = jax.random.key(seed)
        latent_rng, dropout_rng = jax.random.split(rng)
        out, _ = _train_apply(model)(variables, batch["image"], batch["image_mask"], latent_rng)
        chosen, index = select_sub_centers(
            params["prior"]["mu"], out["mu"], rng=dropout_rng, rate=0.2
        )
        prior_var = jnp.exp(params["prior"]["log_var"])
        reg = variational_attention_regularizer(
            out["z"], out["mu"], out["var"], batch["domain"], chosen, prior_var
        )
        _, (metrics, _) = fn(params, state, batch, rng)
        np.testing.assert_allclose(metrics["regularizer"], reg.mean(), rtol=1e-5)
        differs += int(np.any(np.asarray(index) != np.asarray(closest)))
    assert differs > 0  # Dropout changed some choice.


@pytest.mark.slow  # Its own compiles; the default suite keeps the Eq. 9 and stage-II tests.
def test_attention_baselines():
    batch = _batch(1)
    images, mask = jnp.asarray(batch["image"]), jnp.asarray(batch["image_mask"])
    outs = {}
    for variant in ("jt", "se", "va"):
        config = _config(variant)
        model, variables = _model_and_variables(config)
        apply = jax.jit(lambda v, x, m, model=model: model.apply(v, x, train=False, mask=m))
        outs[variant] = apply(variables, images, mask)
        params = variables["params"]
        assert ("prior" in params) == (variant == "va")
        assert ("se" in params) == (variant == "se")
    assert np.all(np.asarray(outs["jt"]["attention"]) == 1.0)  # JT: no attention
    for variant in ("se", "va"):
        y = np.asarray(outs[variant]["attention"])
        assert y.shape == (B, 32) and np.all((y > 0) & (y < 1))
    assert "mu" in outs["va"] and "mu" not in outs["se"]
    # Evaluation: z is the mean (deterministic).
    np.testing.assert_array_equal(outs["va"]["z"], outs["va"]["mu"])
    # JT's loss has no regulariser; SE's neither (traced only: shapes).
    for variant in ("jt", "se", "va"):
        config = _config(variant)
        model, variables = _model_and_variables(config)
        fn = functools.partial(method.loss_fn, model=model, config=config)
        _, (metrics, _) = jax.eval_shape(fn, *_split(variables), batch, jax.random.key(0))
        assert ("regularizer" in metrics) == (variant == "va")


@pytest.mark.slow  # Its own compiles; the default suite keeps the Eq. 9 and stage-II tests.
def test_gradients_reach_the_prior_encoder_and_backbone():
    config, model, variables, _ = _loss("inva")
    params, state = _split(variables)
    batch = _batch()
    fn = functools.partial(method.loss_fn, model=model, config=config)
    grads = jax.jit(jax.grad(lambda p: fn(p, state, batch, jax.random.key(1))[0]))(params)
    flat = traverse_util.flatten_dict(grads)
    norm = lambda prefix: sum(float(jnp.abs(v).sum()) for k, v in flat.items() if k[0] == prefix)
    for part in ("backbone", "encoder", "decoder", "prior", "reduce", "out"):
        assert norm(part) > 0, part
    # Exactly the sub-centers chosen by some image (each cluster's closest to its mu) receive a
    # gradient.
    out, _ = _train_apply(model)(variables, batch["image"], batch["image_mask"], jax.random.key(0))
    mu, sub = np.asarray(out["mu"]), np.asarray(params["prior"]["mu"])  # [B, d], [C, k, d]
    chosen = np.zeros(sub.shape[:2], bool)
    for b in range(B):
        for c in range(DOMAINS):
            chosen[c, np.argmax(sub[c] @ mu[b])] = True
    touched = np.abs(np.asarray(grads["prior"]["mu"])).sum(axis=-1) > 0
    np.testing.assert_array_equal(touched, chosen)
    assert not chosen.all()  # the test would pass for a selection-free gradient otherwise


def test_masked_mean_ignores_padding():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    mask = np.ones((2, 32, 32), bool)
    mask[1, 20:, :] = False  # rows 5..7 of the stride-4 features are padding
    got = np.asarray(masked_mean(jnp.asarray(x), jnp.asarray(mask)))
    np.testing.assert_allclose(got[0], x[0].mean(axis=(0, 1)), atol=1e-6)
    np.testing.assert_allclose(got[1], x[1, :5].mean(axis=(0, 1)), atol=1e-6)


@pytest.mark.slow  # Its own compiles; the default suite keeps the Eq. 9 and stage-II tests.
def test_predict_gives_density_at_stride_4_and_attention():
    config = _config("va")
    model, variables = _model_and_variables(config)
    images = jnp.zeros((1, 72, 88, 3))
    mask = jnp.ones((1, 72, 88), bool).at[:, 60:].set(False)
    out = method.predict_fn(variables, images, model=model, config=config, image_mask=mask)
    assert out["density"].shape == (1, 18, 22)
    assert np.all(np.asarray(out["density"])[:, 15:] == 0)  # padded cells
    assert out["attention"].shape == (1, 32) and out["mu"].shape == (1, 16)


def test_the_method_names_check_the_attention():
    with pytest.raises(ValueError, match="dkpnet_inva"):
        method._model(_config("va", attention="inva"), method.STAGE_ONE)


# ---------------------------------------------------------------- stage II's preparation


def test_cluster_and_agreement_against_sklearn_free_checks():
    rng = np.random.default_rng(0)
    # Three well separated groups: the mixture recovers them up to a permutation.
    groups = [rng.normal(loc, 0.05, size=(20, 4)) for loc in (0.0, 1.0, 2.0)]
    labels = method.cluster(np.concatenate(groups), 3, seed=0)
    for g in range(3):
        assert len(set(labels[20 * g : 20 * (g + 1)])) == 1
    assert len(set(labels)) == 3
    datasets = ["a"] * 20 + ["b"] * 20 + ["c"] * 20
    info = method.agreement(datasets, labels, 3)
    assert info["purity"] == 1.0 and info["adjusted_rand"] == pytest.approx(1.0)
    assert sorted(map(sorted, info["contingency"])) == [[0, 0, 20]] * 3
    # A cluster mixing two data sets halves their purity.
    info = method.agreement(["a", "b", "a", "b"], np.array([0, 0, 1, 1]), 2)
    assert info["purity"] == 0.5 and info["contingency"] == [[1, 1], [1, 1]]
    with pytest.raises(ValueError, match="clusters"):
        method.cluster(np.zeros((2, 3)), 3, seed=0)


SECOND = "pipeline_test_crowd/a"  # Bright random images of 16-71 px (tests/data).


def _tiny(variant, data_dir, steps, **dkpnet):
    config = dkpnet_synthetic.get_config(f"{variant},tiny")
    config.data.name = [TINY, SECOND]  # Two domains.
    config.data.eval_buckets = ((128, 128),)  # One prediction shape: one compile.
    config.data.data_dir = data_dir
    config.train.num_steps = steps
    config.eval_at_end = False
    for key, value in dkpnet.items():
        config.dkpnet[key] = value
    return config


def _training_ids(config, name):
    """Image ids of a data set's training split without its held-out validation images."""
    source = sources.split_source(config.data, name, config.data.train_split)
    return {decode.text(source[i]["image_id"]) for i in range(len(source))}


def test_stage_two_clusters_stage_one_and_reuses_the_labels_on_resume(extra_data_dir, tmp_path):
    stage1 = str(tmp_path / "va")
    va = _tiny("va", extra_data_dir, 2)
    va.eval_at_end = True  # Stage I end to end: trained, selected on validation, tested.
    results = trainer.run_main(va, stage1)
    assert set(results) == {"val", "test"} and np.isfinite(results["test"]["mae"])
    workdir = str(tmp_path / "inva")
    config = _tiny("inva", extra_data_dir, 2, stage1=stage1)
    trainer.run_main(config, workdir)
    stored = preparation.load(workdir)
    # Every training image of both data sets has a label, held-out validation images none.
    for name in (TINY, SECOND):
        ids = _training_ids(config, name)
        held_out = sources.split_source(config.data, name, "validation")
        assert len(held_out) > 0 and not ids & {
            decode.text(held_out[i]["image_id"]) for i in range(len(held_out))
        }
        assert set(stored.domain_labels[name]) == ids
    labels = {(d, k): v for d, ls in stored.domain_labels.items() for k, v in ls.items()}
    assert set(labels.values()) <= {0, 1}
    assert stored.info["images"] == len(labels) == sum(stored.info["cluster_sizes"])
    assert np.sum(stored.info["contingency"]) == len(labels)
    assert stored.info["stage1"] == os.path.abspath(stage1)
    assert stored.info["stage1_checkpoint"]["kind"] == "best"
    # The stage-I attention outputs, clustered again here, give the stored labels.
    from crowdjax import run as run_lib

    context = preparation.context(run_lib.Setup(config), None)
    keys, attention, _ = method.attention_outputs(context)
    again = method.cluster(attention, 2, seed=config.seed)
    assert dict(zip(keys, (int(v) for v in again), strict=True)) == labels
    # Resumed without the stage-I run, stage II reads its stored labels (it never clusters
    # again) and continues.
    os.rename(stage1, stage1 + ".gone")
    with open(os.path.join(workdir, "preparation", "result.json")) as f:
        before = json.load(f)
    trainer.run_main(
        _tiny("inva", extra_data_dir, 4, stage1=stage1),
        workdir,
        allow_config_change=("train.num_steps",),
    )
    with open(os.path.join(workdir, "preparation", "result.json")) as f:
        assert json.load(f) == before
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        steps = [r["step"] for r in map(json.loads, f) if r["split"] == "train"]
    assert steps == [2, 4]
    # A fresh stage II without a stage-I run says what is missing.
    with pytest.raises(FileNotFoundError, match="stage-I run"):
        trainer.run_main(_tiny("inva", extra_data_dir, 2, stage1=stage1), str(tmp_path / "x"))
