"""Recompile guard: a run compiles its train step once per batch shape and its prediction once per
size bucket (`crowdjax/data/eval_stream.py` and `crowdjax/evaluation.py` promise it), however
many steps and images there are.

Each `Setup` a run builds is recorded with the input shapes of every call of its jitted
`train_step` and `predict`; the number of programs the jit cache holds (`_cache_size()`) must equal
the number of distinct shapes. A retrace (a Python scalar in the step, a weak type, a changing
static argument) adds programs without adding shapes and fails the test.
"""

from __future__ import annotations

import collections

import pytest

from configs import common
from crowdjax import run, trainer
from tests.engine import toy_configs

# Two evaluation buckets for the 16-71 px images of pipeline_test_crowd: small ones go to 40 x 40,
# the others to 72 x 72 (both divisible by the output stride 8).
BUCKETS = ((40, 40), (72, 72))
OTHER = "pipeline_test_crowd/a"


def _record_calls(setup, name: str, shape_of) -> None:
    """Replaces `setup.<name>` by a wrapper that counts the shapes it is called with."""
    jitted = getattr(setup, name)
    shapes = collections.Counter()

    def recorded(*args):
        shapes[shape_of(*args)] += 1
        return jitted(*args)

    setup.recorded[name] = (jitted, shapes)
    setattr(setup, name, recorded)


@pytest.fixture
def setups(monkeypatch):
    """Every `run.Setup` built while the test runs, its jitted functions' calls recorded."""
    built = []
    init = run.Setup.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.recorded = {}
        _record_calls(self, "train_step", lambda state, batch: batch["image"].shape)
        _record_calls(self, "predict", lambda variables, images, mask: images.shape)
        built.append(self)

    monkeypatch.setattr(run.Setup, "__init__", recording_init)
    return built


def _config(data_dir):
    config = toy_configs.get_config("constant")
    config.data.data_dir = data_dir
    config.toy.stride = 8
    config.train.num_steps = 6
    config.train.eval_every = 2  # validation at steps 2 and 4, then at the end
    config.data.eval_buckets = BUCKETS
    config.evals.other = common.eval_entry(OTHER, "test", during_training=True)
    return config


def _compiles_and_shapes(built, name):
    """[(programs compiled, distinct shapes, calls)] of each Setup that called `name`."""
    out = []
    for setup in built:
        jitted, shapes = setup.recorded[name]
        if shapes:
            out.append((jitted._cache_size(), len(shapes), sum(shapes.values())))
    return out


def _check_once_per_shape(built, name, *, buckets):
    """One program per shape, and no more shapes than `buckets` (the padding to buckets works)."""
    rows = _compiles_and_shapes(built, name)
    assert rows, f"no Setup called {name}"
    for compiled, distinct, calls in rows:
        assert compiled == distinct, f"{name}: {compiled} programs for {distinct} shapes"
        assert calls > distinct  # several calls per shape, so a retrace would show
    assert max(distinct for _, distinct, _ in rows) == buckets


def test_crop_training_compiles_once_and_evaluation_once_per_bucket(
    extra_data_dir, tmp_path, setups
):
    trainer.train_and_evaluate(_config(extra_data_dir), str(tmp_path))
    _check_once_per_shape(setups, "train_step", buckets=1)
    # The tiny data's 96 x 128 images fit no bucket (padded to 128 x 128); the other data set's
    # images fill both buckets: three shapes, each compiled once over three evaluations.
    _check_once_per_shape(setups, "predict", buckets=3)


def test_whole_image_training_compiles_once_per_bucket(extra_data_dir, tmp_path, setups):
    config = _config(extra_data_dir)
    config.data.name = OTHER
    config.data.whole_image = True
    config.data.train_buckets = BUCKETS
    config.train.num_steps = 8
    config.train.eval_every = 0
    del config.evals.other  # the training data set is evaluated already
    trainer.train_and_evaluate(config, str(tmp_path))
    _check_once_per_shape(setups, "train_step", buckets=2)
    _check_once_per_shape(setups, "predict", buckets=2)
