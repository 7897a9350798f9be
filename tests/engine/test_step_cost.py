"""crowdjax.step_cost's numbers against independent counts (numpy sizes of the initialised
parameters, the convolutions' multiply-adds counted by hand, the rate arithmetic), and
benchmarks/paper_costs.py's list of configs: every paper row exactly once."""

from __future__ import annotations

import sys

import jax
import numpy as np
import pytest

from configs import quickstart
from crowdjax import paper_runs, registry, run, step_cost
from crowdjax.models import conv
from crowdjax.models.vgg import vgg_channels

sys.path.insert(0, str(paper_runs.REPO_ROOT))
from benchmarks import paper_costs  # noqa: E402


def _conv_flops(c_in: int, c_out: int, k: int, h: int, w: int) -> float:
    """2 x the multiply-adds of a k x k convolution, padded to keep h x w, that touch the image:
    XLA counts no products with the zero padding ((3h - 2)(3w - 2) taps of a 3 x 3, not 9hw)."""
    taps = (k * h - (k - 1)) * (k * w - (k - 1))
    return 2.0 * c_in * c_out * taps


def _uot_conv_flops(config, h: int, w: int) -> float:
    """The UOT regressor's convolutions on one h x w image (VGG19 to stride 16, x2 upsampling,
    two 3x3 convs and a 1x1 output), counted from the layer sizes."""
    flops, c_in = 0.0, 3
    for stage, channels in enumerate(vgg_channels("vgg19", config.model.width)):
        for c in channels:
            flops += _conv_flops(c_in, c, 3, h, w)
            c_in = c
        if stage < 4:
            h, w = h // 2, w // 2
    h, w = 2 * h, 2 * w
    for c, k in ((256, 3), (128, 3)):
        c = max(1, round(c * config.model.width))
        flops += _conv_flops(c_in, c, k, h, w)
        c_in = c
    return flops + _conv_flops(c_in, 1, 1, h, w)


@pytest.mark.slow  # A train-step compile (test_reproduce's cost test has one by default).
def test_measure_counts_the_parameters_the_convolutions_and_the_buffers(tiny_data_dir, monkeypatch):
    monkeypatch.setenv("CROWDJAX_DATA_DIR", tiny_data_dir)
    config = quickstart.get_config("tiny")
    config.data.eval_buckets = ((64, 96),)  # The evaluated image: 64 x 96.
    cost = step_cost.measure(config)

    method = registry.get_method(config.method)
    variables = method.init_variables(
        method.make_model(config), jax.random.key(0), config, input_shape=(64, 64)
    )
    sizes = [np.asarray(p).size * 4 for p in jax.tree.leaves(variables["params"])]
    assert cost["param_bytes"] == sum(sizes)
    # Adam: the parameters, two moments per parameter, and a few scalars.
    assert 3 * sum(sizes) <= cost["state_bytes"] <= 3 * sum(sizes) + 1024

    # XLA's count: the convolutions plus the elementwise work around them (ReLU, upsampling).
    convs = _uot_conv_flops(config, 64, 96)
    assert convs <= cost["eval_flops"] <= 1.25 * convs
    assert cost["eval_shape"] == [64, 96]
    # A training step: forward and two backward convolutions per layer on the batch, plus the loss.
    b, ch, cw = cost["batch_shape"][:3]
    assert b == config.train.global_batch_size and (ch, cw) == (64, 64)
    assert 2.5 * b * _uot_conv_flops(config, 64, 64) <= cost["train_flops"]

    parts = cost["argument_bytes"] + cost["output_bytes"] + cost["temp_bytes"]
    assert cost["train_peak_bytes"] == parts - cost["alias_bytes"]
    assert cost["argument_bytes"] >= cost["state_bytes"]  # The state and the batch.
    assert cost["alias_bytes"] == cost["state_bytes"]  # The donated state is updated in place.
    assert cost["compile_s"] > 0 and cost["version"] == step_cost.MEASURE_VERSION


def test_measure_compiles_the_accelerators_convolutions_whatever_the_process_uses(
    tiny_data_dir, monkeypatch
):
    """On a CPU, conv "auto" may take the matmul kernel gradient, whose buffers differ from the
    convolutions a GPU or TPU runs: the cost table must not depend on it."""
    monkeypatch.setenv("CROWDJAX_DATA_DIR", tiny_data_dir)
    config = quickstart.get_config("tiny")
    config.data.eval_buckets = ((32, 32),)
    with conv.conv_impl("matmul_grad"):
        measured = step_cost.measure(config)
        assert conv.get_conv_impl() == "matmul_grad"  # Restored after the measure.
    with conv.conv_impl("xla"):
        setup = run.Setup(config, devices=jax.devices()[:1])
        batch = step_cost._abstract(step_cost._first_batch(config), setup.mesh)
        xla_step = setup.train_step.lower(setup.abstract_with_shardings(), batch).compile()
    with conv.conv_impl("matmul_grad"):
        setup = run.Setup(config, devices=jax.devices()[:1])
        matmul_step = setup.train_step.lower(setup.abstract_with_shardings(), batch).compile()
    xla_temp = xla_step.memory_analysis().temp_size_in_bytes
    assert matmul_step.memory_analysis().temp_size_in_bytes != xla_temp  # The two differ here.
    assert measured["temp_bytes"] == xla_temp and measured["conv"] == "xla"


def test_rates_and_hours_follow_from_the_peaks():
    config = quickstart.get_config("")
    cost = {"train_flops": 2e12}
    for device, peaks in step_cost.ACCELERATORS.items():
        seconds = 2e12 / (peaks["float32"] * step_cost.UTILISATION)
        assert step_cost.step_seconds(config, cost, device) == pytest.approx(seconds)
        batch = config.train.global_batch_size
        assert step_cost.crops_per_second_needed(config, cost, device) == pytest.approx(
            batch / seconds
        )
        hours = config.train.num_steps * seconds / 3600
        assert step_cost.accelerator_hours(config, cost, device) == pytest.approx(hours)
    config.model.dtype = "bfloat16"
    assert step_cost.peak_flops(config, "H100") == step_cost.ACCELERATORS["H100"]["bfloat16"]


def test_paper_costs_lists_every_paper_row_once_and_every_config_file_first():
    entries = paper_costs.entries()
    configs = {}
    for paper in paper_costs.PAPERS:
        for name, row in paper_runs.load_paper(paper).runs().items():
            run = paper_runs.row_run(paper, row, root="r", scale="paper", weights_dir="w")
            configs[name] = paper_runs.row_config(run)
    assert sorted(n for e in entries for n in e.rows) == sorted(configs)
    # An entry's rows have its cost key and schedule; no two entries share both.
    identity = lambda c: (step_cost.cache_key(c), int(c.train.num_steps))
    for e in entries:
        assert {identity(configs[n]) for n in e.rows} == {identity(e.config)}
    assert len({identity(e.config) for e in entries}) == len(entries)
    # One entry of each config file (and DKPNet / ASNet variant) before any second one.
    heads = [e.config_file for e in entries]
    distinct = len(set(heads))
    assert len(set(heads[:distinct])) == distinct


def test_remat_changes_the_cost_key_and_its_default_keeps_older_entries():
    config = quickstart.get_config("tiny")
    assert config.model.remat is False
    older = config.copy_and_resolve_references()
    del older.model["remat"]  # A config of before the field: its cached cost still applies.
    assert step_cost.cache_key(older) == step_cost.cache_key(config)
    config.model.remat = True
    assert step_cost.cache_key(config) != step_cost.cache_key(older)
