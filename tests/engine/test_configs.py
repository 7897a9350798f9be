"""Every config file builds, and its ":tiny" variant trains and evaluates end to end."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from crowdjax import evaluation, registry, trainer
from tests.engine.conftest import REPO, run_script

CONFIG_FILES = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if not os.path.basename(p).startswith(("_", "common")) and not p.endswith("_common.py")
)


def _load(name: str, variant: str = ""):
    module = __import__(f"configs.{name}", fromlist=["get_config"])
    return module.get_config(variant)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_full_config_is_consistent(name):
    config = _load(name)
    assert config.method in registry.method_names()
    assert config.train.num_steps > 0
    assert config.train.global_batch_size >= 1


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_tiny_variant_trains_end_to_end(name, tiny_data_dir, tmp_path):
    config = _load(name, "tiny")
    config.data.data_dir = tiny_data_dir
    results = trainer.run_main(config, str(tmp_path))
    assert np.isfinite(results["mae"]) and results["num_images"] == 4
    with open(tmp_path / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f]
    train = [r for r in lines if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    assert all(np.isfinite(r["loss"]) for r in train)
    assert os.path.isdir(tmp_path / "checkpoints" / "4") and os.path.isdir(tmp_path / "best")
    assert json.load(open(tmp_path / "config.json"))["method"] == config.method
    assert (tmp_path / "git_revision.txt").exists()
    eval_json = json.load(open(tmp_path / "eval_test.json"))
    assert eval_json["num_images"] == 4 and len(eval_json["per_image"]) == 4


def test_eval_py_writes_metrics_and_images(tiny_data_dir, tmp_path):
    workdir = str(tmp_path)
    common = [
        "--config=configs/quickstart.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.data_dir={tiny_data_dir}",
    ]
    proc = run_script(["train.py", *common, "--config.train.num_steps=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_script(["eval.py", *common, "--split=validation", "--save_images=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(tmp_path / "eval_validation.json"))
    for key in ("mae", "rmse", "nae", "num_images", "game0", "game3", "ap", "ar", "af"):
        assert key in result, key
    assert result["num_images"] == 4
    counts = [(r["gt_count"], r["pred_count"]) for r in result["per_image"]]
    mae = np.mean([abs(g - p) for g, p in counts])
    np.testing.assert_allclose(result["mae"], mae, rtol=1e-6)
    np.testing.assert_allclose(result["game0"], mae, rtol=1e-4)  # GAME(0) = |count error|.
    assert len(glob.glob(str(tmp_path / "images_validation" / "*.png"))) == 2


def test_non_finite_loss_stops_training_naming_step_and_term(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(registry._METHODS, "nan_uot", "tests.engine.nan_method")
    config = _load("quickstart", "tiny")
    config.method = "nan_uot"
    config.data.data_dir = tiny_data_dir
    config.train.log_every = 1
    with pytest.raises(FloatingPointError, match=r"non-finite uot .* at step 1"):
        trainer.train_and_evaluate(config, str(tmp_path))


def test_mean_baseline_mae(tiny_data_dir):
    from configs import quickstart

    config = quickstart.get_config("tiny")
    config.data.data_dir = tiny_data_dir
    from crowdjax.data import datasets

    train = datasets.data_source("synthetic_crowd/tiny", "train", data_dir=tiny_data_dir)
    test = datasets.data_source("synthetic_crowd/tiny", "test", data_dir=tiny_data_dir)
    mean = np.mean([train[i]["count"] for i in range(len(train))])
    expected = np.mean([abs(test[i]["count"] - mean) for i in range(len(test))])
    assert evaluation.mean_baseline_mae(config.data, "test") == pytest.approx(expected)
