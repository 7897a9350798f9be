"""benchmarks/fit_one_batch.py: the engine's step on one fixed batch, the diagnostic that tells a
recipe that cannot fit its labels from one that needs more data."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from configs import dkpnet_synthetic, quickstart
from tests.engine.conftest import REPO


@pytest.fixture(scope="module")
def fit_one_batch():
    path = os.path.join(REPO, "benchmarks", "fit_one_batch.py")
    spec = importlib.util.spec_from_file_location("fit_one_batch", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_the_quickstart_fits_one_batch(fit_one_batch):
    lines = []
    result = fit_one_batch.fit(quickstart.get_config(), steps=20, every=10, log=lines.append)
    assert [p["step"] for p in result["curve"]] == [1, 10, 20]
    assert len(result["counts"]) == quickstart.get_config().train.global_batch_size
    first, last = result["curve"][0], result["curve"][-1]
    # Measured: loss 43.7 -> 6.1 and count MAE 58.4 -> 8.8 in 20 steps.
    assert last["loss"] < 0.25 * first["loss"]
    assert last["count_mae"] < 0.25 * first["count_mae"]
    assert len(lines) == 4 and "ground-truth counts" in lines[0]


def test_a_method_that_needs_a_preparation_is_refused(fit_one_batch):
    config = dkpnet_synthetic.get_config("inva,tiny")
    with pytest.raises(ValueError, match="preparation"):
        fit_one_batch.fit(config, steps=1, every=1)
