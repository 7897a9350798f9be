"""benchmarks/vs_torch.py: every PyTorch twin computes its crowdjax network's function on the
same parameters (what makes the timings comparable), and the benchmark runs end to end."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import vs_torch  # noqa: E402  (needs torch)

TINY_WIDTH = 1 / 16
TINY_HRNET = ("model.hrnet_blocks=1", "model.hrnet_stage3_modules=1")


def _random_like(abstract, seed):
    """Random values for every variable, biases and BatchNorm statistics included (crowdjax's
    initial zero biases, unit variances and zero means would hide a twin that drops them)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if name == "scale":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if len(leaf.shape) >= 2:
            fan_in = math.prod(leaf.shape[:-1])
            return rng.normal(0, math.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
        return rng.normal(0, 0.1, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def _net(name, seed=0):
    network = vs_torch.NETWORKS[name]
    overrides = TINY_HRNET if name == "dkpnet" else ()
    config = vs_torch.benchmark_config(network, width=TINY_WIDTH, overrides=overrides)
    return vs_torch.CrowdjaxNet(network, config, variables=lambda a: _random_like(a, seed))


# Sizes: multiples of 16 (VGG stride 16), AutoScale at 48 x 32 (non-square, multiples of 8),
# L2SM at least 128 a side (see SPNTwin), the discriminators at least 16 a side.
SIZES = {
    "uot": (32, 48),
    "autoscale": (48, 32),
    "l2sm": (128, 136),
    "asnet_g": (32, 48),
    "asnet_d1": (32, 48),
    "asnet_d2": (16, 16),
    "dkpnet": (40, 24),
}


@pytest.mark.parametrize("name", [n for n in vs_torch.NETWORKS if n != "dkpnet"])
def test_twin_forward_equals_crowdjax_forward(name):
    net = _net(name)
    work = vs_torch.Work("predict", *SIZES[name], batch=2)
    result = vs_torch.time_predict(net, work, repeats=0, name=name)  # Asserts 2e-3 itself.
    assert result["max_rel_diff"] < 1e-4, result["max_rel_diff"]


def test_dkpnet_twin_equals_crowdjax_in_eval_and_train_mode():
    net = _net("dkpnet", seed=3)
    x = vs_torch.random_inputs(net.network, vs_torch.Work("train", *SIZES["dkpnet"], 2))
    params, state = net.initial["params"], {"batch_stats": net.initial["batch_stats"]}

    @jax.jit  # Both modes in one program: one compile.
    def forward(params, state, x):
        eval_out, _ = net.apply(params, state, x, train=False)
        return eval_out, *net.apply(params, state, x, train=True)

    got_eval, got_train, new_state = forward(params, state, jnp.asarray(x))
    twin = net.network.twin(net.initial, net.config)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        want_eval = twin.eval()(x_torch).numpy()
    want_train = twin.train()(x_torch).detach().numpy()
    assert vs_torch.check_close("eval", got_eval, want_eval, rtol=1e-4) < 1e-4
    assert vs_torch.check_close("train", got_train, want_train, rtol=1e-4) < 1e-4
    # Train mode normalises by the batch's statistics, not the running ones: the outputs differ.
    assert np.abs(want_eval - want_train).max() > 1e-2 * np.abs(want_train).max()
    # Both sides move the running means the same way (momentum 0.1).
    got_mean = new_state["batch_stats"]["reduce_bn"]["mean"]
    want_mean = twin.reduce_bn.running_mean.numpy()
    np.testing.assert_allclose(got_mean, want_mean, rtol=1e-4, atol=1e-6)


def test_a_twin_with_one_wrong_parameter_is_caught():
    net = _net("uot")
    x = vs_torch.random_inputs(net.network, vs_torch.Work("predict", 32, 48, 1))
    got = net.predict()(net.initial, jnp.asarray(x))
    wrong = jax.tree.map(np.copy, net.initial)
    wrong["params"]["reg_conv2"]["bias"][3] += 0.5
    twin = net.network.twin(wrong, net.config).eval()
    with torch.inference_mode():
        want = twin(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    with pytest.raises(AssertionError, match="differ by"):
        vs_torch.check_close("uot", got, want, rtol=vs_torch.PREDICT_RTOL)


def test_main_times_one_network_end_to_end(tmp_path):
    out = tmp_path / "vs_torch.json"
    lines = []
    rows = vs_torch.main(
        ["--quick", "--networks=asnet_d1", "--sizes=train:32x48:2", f"--json={out}"],
        log=lines.append,
    )
    (row,) = rows
    assert (row["network"], row["work"], row["size"], row["batch"]) == (
        "asnet_d1",
        "train",
        "32x48",
        2,
    )
    assert row["width"] == vs_torch.QUICK_WIDTH
    assert len(row["crowdjax_s"]) == len(row["torch_s"]) == 1
    assert row["ratio"] == pytest.approx(row["crowdjax_min_s"] / row["torch_min_s"])
    assert "\n| asnet_d1 | train | 32x48 | 2 | 0.125 |" in "\n".join(lines)
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["network"] == "asnet_d1" and "loadavg_before" in saved["facts"]


def test_bad_options_are_refused():
    with pytest.raises(SystemExit, match="unknown"):
        vs_torch.main(["--networks=vgg"])
    with pytest.raises(SystemExit, match="kind:HxW:batch"):
        vs_torch.parse_works("train:512:1")
    config = vs_torch.benchmark_config(vs_torch.NETWORKS["uot"], width=None, overrides=())
    with pytest.raises(SystemExit, match="key=value"):
        vs_torch.apply_overrides(config, ["width"])
    with pytest.raises(SystemExit, match="no 'modle'"):
        vs_torch.apply_overrides(config, ["modle.width=1"])
    vs_torch.apply_overrides(config, ["width=0.25", "model.dtype=bfloat16", "train.num_steps=7"])
    assert (config.model.width, config.model.dtype, config.train.num_steps) == (0.25, "bfloat16", 7)
