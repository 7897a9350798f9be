"""crowdjax.precise_bn: re-estimated BatchNorm statistics, against numpy and against the layer's
own running-average update; and the engine evaluating and keeping the best checkpoint with them."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from configs import dkpnet_synthetic, quickstart
from crowdjax import checkpointing, precise_bn, run, trainer
from crowdjax.models.batch_norm import MaskedBatchNorm
from tests.engine import toy_configs

EPS = 1e-5


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x, *, train, mask):
        return nn.relu(MaskedBatchNorm(name="norm")(x, train=train, mask=mask))


class _TwoNorms(nn.Module):
    """BatchNorm (nested in a block) -> ReLU -> 2x2 average pool -> BatchNorm at half size."""

    @nn.compact
    def __call__(self, x, *, train, mask):
        y = _Block(name="block")(x, train=train, mask=mask)
        b, h, w, c = y.shape
        y = y.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
        return MaskedBatchNorm(name="top")(y, train=train, mask=mask)


def _moments_np(x, mask):
    real = x[mask]  # [N, C]
    return real.mean(0), real.var(0)


def _reference(batches, params):
    """Equal-weight average over the batches of each layer's real-pixel batch moments, with
    training-mode normalisation between the layers, all in numpy."""
    sums = {"first": [0.0, 0.0], "top": [0.0, 0.0]}
    for x, mask in batches:
        mean, var = _moments_np(x, mask)
        p = params["block"]["norm"]
        y = np.maximum((x - mean) / np.sqrt(var + EPS) * p["scale"] + p["bias"], 0.0)
        b, h, w, c = y.shape
        pooled = y.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
        half_mask = mask.reshape(b, h // 2, 2, w // 2, 2).any(axis=(2, 4))
        top = _moments_np(pooled, half_mask)
        for name, (m, v) in (("first", (mean, var)), ("top", top)):
            sums[name][0] += m / len(batches)
            sums[name][1] += v / len(batches)
    return sums


def _batches(count, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        x = rng.normal(rng.uniform(-1, 2), rng.uniform(0.5, 3), (3, 8, 6, 4)).astype(np.float32)
        mask = np.zeros((3, 8, 6), bool)
        mask[0] = True
        mask[1, :5, :3] = True  # a padded image; the third is all padding
        x[~mask] = 100.0  # garbage where no real pixel is
        out.append((x, mask))
    return out


def _tiny_model():
    model = _TwoNorms()
    x = jnp.zeros((3, 8, 6, 4))
    variables = model.init(jax.random.key(0), x, train=False, mask=None)
    rng = np.random.default_rng(5)
    params = jax.tree.map(
        lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32), variables["params"]
    )
    stale = jax.tree.map(lambda a: a + 7.0, variables["batch_stats"])
    return model, {"params": params, "batch_stats": stale}


def _moments_of(model):
    @jax.jit
    def moments(variables, batch, index):
        del index
        x, mask = batch
        _, found = precise_bn.recorded_moments(
            lambda: model.apply(variables, x, train=True, mask=mask, mutable=["batch_stats"])
        )
        return found

    return moments


def test_the_statistics_are_the_average_batch_moments_of_real_pixels():
    model, variables = _tiny_model()
    batches = _batches(3)
    new = precise_bn.average_batch_stats(_moments_of(model), variables, batches)
    expected = _reference(batches, jax.tree.map(np.asarray, variables["params"]))
    stats = new["batch_stats"]
    for name, layer in (("first", stats["block"]["norm"]), ("top", stats["top"])):
        np.testing.assert_allclose(layer["mean"], expected[name][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer["var"], expected[name][1], rtol=1e-5, atol=1e-6)
    # The parameters are kept; the stale statistics do not enter (estimating again: the same).
    assert new["params"] is variables["params"]
    again = precise_bn.average_batch_stats(_moments_of(model), new, batches)
    jax.tree.map(np.testing.assert_array_equal, again["batch_stats"], stats)
    # The input is not modified.
    np.testing.assert_array_equal(variables["batch_stats"]["top"]["mean"], 7.0)


def test_a_layer_that_training_never_runs_and_a_model_without_batch_norm_are_errors():
    model, variables = _tiny_model()
    stats = dict(variables["batch_stats"])
    stats["unused"] = {"mean": jnp.zeros(4), "var": jnp.ones(4)}
    with pytest.raises(ValueError, match="did not run in training mode.*unused"):
        precise_bn.average_batch_stats(
            _moments_of(model), {**variables, "batch_stats": stats}, _batches(1)
        )
    with pytest.raises(ValueError, match="no batches"):
        precise_bn.average_batch_stats(_moments_of(model), variables, [])
    config = quickstart.get_config("tiny")  # UOT's VGG19: no BatchNorm
    config.eval.recompute_batch_stats = 4
    with pytest.raises(ValueError, match="recompute_batch_stats=4.*no BatchNorm"):
        precise_bn.BatchStatsEstimator(run.Setup(config))


def _by_running_update(setup, params, batches, seed):
    """Each BatchNorm's batch moments from the layer's own update, independently of the
    interceptor: from running statistics at 0, momentum m gives m * mean and m * var."""
    zeros = jax.tree.map(jnp.zeros_like, setup.abstract_variables()["batch_stats"])
    model_state = {"batch_stats": zeros}

    @jax.jit
    def updated(batch, rng):
        _, (_, new_state) = setup.method.loss_fn(
            params, model_state, batch, rng, model=setup.model, config=setup.config
        )
        return new_state["batch_stats"]

    total = None
    for index, batch in enumerate(batches):
        stats = updated(batch, jax.random.fold_in(jax.random.key(seed), index))
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    momentum = 0.1  # Every BatchNorm of DKPNet's model (HRNet's bn_momentum default, the head's).
    return jax.tree.map(lambda a: np.asarray(a) / (momentum * len(batches)), total)


def test_the_engine_selects_and_keeps_the_best_checkpoint_with_re_estimated_statistics(
    tiny_data_dir, tmp_path
):
    config = dkpnet_synthetic.get_config("va,tiny")
    config.data.data_dir = tiny_data_dir
    config.data.eval_buckets = ((128, 128),)
    config.train.num_steps = 2
    config.train.eval_every = 1
    config.train.checkpoint_every = 1
    config.eval_at_end = False
    config.eval.recompute_batch_stats = 2
    workdir = str(tmp_path / "run")
    trainer.run_main(config, workdir)
    setup = run.Setup(config)
    abstract = setup.abstract_variables()
    best, info = checkpointing.restore_variables(workdir, abstract, prefer="best", config=config)
    latest, _ = checkpointing.restore_variables(
        f"{workdir}/checkpoints/{info['step']}", abstract, prefer="latest", config=config
    )
    # The same parameters; the statistics of the first 2 training batches, not the running ones.
    jax.tree.map(np.testing.assert_array_equal, best["params"], latest["params"])
    batches = run.training_batches(setup, 0, None)
    batches = [jax.tree.map(jnp.asarray, next(batches)) for _ in range(2)]
    expected = _by_running_update(setup, best["params"], batches, config.seed)
    got = jax.tree.map(np.asarray, best["batch_stats"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5), got, expected)
    differs = jax.tree.map(
        lambda a, b: not np.allclose(a, b, rtol=1e-3), got, jax.device_get(latest["batch_stats"])
    )
    assert any(jax.tree.leaves(differs))


def test_a_final_report_written_before_the_field_existed_is_reused(tiny_data_dir, tmp_path, capsys):
    config = toy_configs.get_config("constant")
    config.data.data_dir = tiny_data_dir
    config.train.num_steps = 2
    config.eval_at_end = True
    workdir = str(tmp_path)
    trainer.train_and_evaluate(config, workdir)
    final_file = tmp_path / "final.json"
    final = json.loads(final_file.read_text())
    # At its default the field is left out of the report, as an older run wrote it.
    assert "recompute_batch_stats" not in final["evaluated"]["eval"]
    assert final["evaluated"]["eval"]["peak_window"] == config.eval.peak_window
    capsys.readouterr()
    trainer.train_and_evaluate(config, workdir)
    assert "final evaluation of this checkpoint already done" in capsys.readouterr().out
    assert json.loads(final_file.read_text()) == final  # Not written again.
