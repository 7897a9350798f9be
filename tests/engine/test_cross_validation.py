"""K-fold cross-validation: per-fold configs, one run per fold, the mean over folds."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest

from configs import l2sm_ucf_cc_50, quickstart
from crowdjax import cross_validation, workdir_lock
from tests.engine.conftest import run_script


def _folded(config, folds):
    config.cross_validation = ml_collections.ConfigDict({"folds": folds})
    return config


def test_fold_config_trains_on_the_other_folds():
    config = _folded(quickstart.get_config(), ("fold1", "fold2", "fold3"))
    config.evals.test.split = config.data.test_split
    folded = cross_validation.fold_config(config, "fold2")
    assert folded.data.train_split == "fold1+fold3"
    assert folded.data.test_split == "fold2" and folded.evals.test.split == "fold2"
    assert folded.evals.val.split == "validation"  # held out of the training folds
    assert config.data.train_split == "train"  # the original is unchanged
    with pytest.raises(ValueError, match="unknown fold"):
        cross_validation.fold_config(config, "fold9")
    # The UCF_CC_50 config: fold k of five; its variants pick the fold.
    ucf = l2sm_ucf_cc_50.get_config("fold4")
    assert ucf.data.train_split == "fold1+fold2+fold3+fold5" and ucf.evals.test.split == "fold4"
    assert ucf.l2sm.centers == 5 == ucf.l2sm.groups


def test_every_fold_runs_and_the_mean_is_reported(tiny_data_dir, tmp_path):
    config = _folded(quickstart.get_config("tiny"), ("test", "train"))
    config.data.data_dir = tiny_data_dir
    config.train.num_steps = 2
    summary = cross_validation.run(config, str(tmp_path))
    stored = json.load(open(tmp_path / cross_validation.RESULT_FILE))
    assert stored["folds"].keys() == {"test", "train"}
    maes = []
    for fold, other in (("test", "train"), ("train", "test")):
        run = json.load(open(tmp_path / fold / "config.json"))
        assert run["data"]["train_split"] == other and run["data"]["test_split"] == fold
        result = json.load(open(tmp_path / fold / "eval_test.json"))
        assert result["split"] == fold
        maes.append(result["mae"])
    np.testing.assert_allclose(stored["mean"]["mae"], np.mean(maes), rtol=1e-9)
    assert summary["mean"]["mae"] == stored["mean"]["mae"]
    assert stored["protocol"]["folds"] == ["test", "train"]
    # A second run resumes: finished folds only report (no new checkpoint).
    before = sorted(os.listdir(tmp_path / "test" / "checkpoints"))
    again = cross_validation.run(config, str(tmp_path))
    assert again["mean"] == summary["mean"]
    assert sorted(os.listdir(tmp_path / "test" / "checkpoints")) == before


def test_summary_means_and_pooled_errors_and_the_protocol():
    # Folds of 10 and 30 images: MAE 2 and 4, RMSE 3 and 5.
    # mean: MAE (2 + 4) / 2 = 3, RMSE (3 + 5) / 2 = 4; pooled: MAE (10*2 + 30*4) / 40 = 3.5,
    # RMSE sqrt((10*9 + 30*25) / 40) = sqrt(21).
    per_fold = {
        "fold1": {"test": {"mae": 2.0, "rmse": 3.0, "num_images": 10}},
        "fold2": {"test": {"mae": 4.0, "rmse": 5.0, "num_images": 30}},
    }
    summary = cross_validation.summarize(per_fold)
    assert summary["mean"] == {"mae": 3.0, "rmse": 4.0}
    assert summary["pooled"]["mae"] == pytest.approx(3.5)
    assert summary["pooled"]["rmse"] == pytest.approx(np.sqrt(21))
    described = cross_validation.protocol(l2sm_ucf_cc_50.get_config())
    assert described["folds"] == [f"fold{k}" for k in range(1, 6)]
    assert described["dataset"] == "ucf_cc_50/clip" and described["selection"] == "val/mae"


@pytest.mark.slow
def test_l2sm_ucf_cc_50_command(tiny_data_dir, tmp_path):
    proc = run_script(
        ["-m", "crowdjax.cross_validation", "--config=configs/l2sm_ucf_cc_50.py:tiny"]
        + [f"--workdir={tmp_path}", f"--config.data.data_dir={tiny_data_dir}"]
        + ["--config.train.num_steps=2"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cross-validation over 2 folds: mean MAE" in proc.stdout + proc.stderr
    assert json.load(open(tmp_path / "cross_validation.json"))["folds"].keys() == {"test", "train"}


def test_a_second_cross_validation_on_a_live_workdir_is_refused(tiny_data_dir, tmp_path):
    """The command holds its workdir: a second one is refused before it starts a fold."""
    config = _folded(quickstart.get_config("tiny"), ("test", "train"))
    config.data.data_dir = tiny_data_dir
    with workdir_lock.hold(str(tmp_path)):  # A live cross-validation on this workdir.
        with pytest.raises(workdir_lock.WorkdirLockedError, match="another run holds"):
            cross_validation.run(config, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == []  # No fold started, the lock released.
