"""Data-set-wide preparation: computed once, stored, reused on resume, and a command of its own."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from crowdjax import preparation, trainer
from crowdjax.data import datasets
from crowdjax.methods.base import Preparation
from tests.engine import toy_configs, toy_methods
from tests.engine.conftest import run_script


def _config(data_dir, steps):
    config = toy_configs.get_config("prepared")
    config.data.data_dir = data_dir
    config.train.num_steps = steps
    config.train.log_every = 1
    config.eval_at_end = False
    return config


def _train_counts(data_dir):
    source = datasets.data_source("synthetic_crowd/tiny", "train", data_dir=data_dir)
    return {source[i]["image_id"].decode(): len(source[i]["points"]) for i in range(len(source))}


def _never_again(monkeypatch):
    def fail(context):
        raise AssertionError("the stored preparation should have been reused")

    monkeypatch.setattr(
        toy_methods, "PREPARED", dataclasses.replace(toy_methods.PREPARED, prepare=fail)
    )


def _logged(workdir, key):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r[key] for r in map(json.loads, f) if r["split"] == "train"]


def test_preparation_fills_the_state_labels_batches_and_is_reused_on_resume(
    tiny_data_dir, tmp_path, monkeypatch
):
    counts = _train_counts(tiny_data_dir)
    workdir = str(tmp_path)
    trainer.run_main(_config(tiny_data_dir, 2), workdir)
    stored = preparation.load(workdir)
    mean = np.mean(list(counts.values()))
    assert stored.info == {"mean_count": pytest.approx(mean), "images": 16}
    assert stored.domain_labels == {"synthetic_crowd/tiny": {k: v % 2 for k, v in counts.items()}}
    # It filled the model state of the fresh run, and labelled the training batches.
    assert _logged(workdir, "prior_mean_count") == pytest.approx([mean, mean])
    # Batches of 2 carry the labels 0/1 (the data set index would be 0 throughout).
    domain_means = _logged(workdir, "domain_mean")
    assert set(domain_means) <= {0.0, 0.5, 1.0} and max(domain_means) > 0
    # Resumed (and then finished again), the run reads the stored result, never recomputes it.
    _never_again(monkeypatch)
    os.utime(os.path.join(workdir, "preparation", "result.json"))
    trainer.run_main(_config(tiny_data_dir, 4), workdir, allow_config_change=("train.num_steps",))
    assert _logged(workdir, "prior_mean_count") == pytest.approx([mean] * 4)
    assert preparation.load(workdir).info == stored.info


def test_preparation_is_a_command_of_its_own(tiny_data_dir, tmp_path, monkeypatch):
    workdir = str(tmp_path)
    proc = run_script(
        [
            "-m",
            "crowdjax.preparation",
            "--config=tests/engine/toy_configs.py:prepared",
            f"--workdir={workdir}",
            f"--config.data.data_dir={tiny_data_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "preparation: stored in" in proc.stdout
    mean = np.mean(list(_train_counts(tiny_data_dir).values()))
    assert preparation.load(workdir).info["mean_count"] == pytest.approx(mean)
    _never_again(monkeypatch)  # training then uses what the command stored
    trainer.run_main(_config(tiny_data_dir, 2), workdir)
    assert _logged(workdir, "prior_mean_count") == pytest.approx([mean, mean])


def test_a_preparation_must_fit_the_model_state(tiny_data_dir, tmp_path, monkeypatch):
    def wrong(context):
        return Preparation(model_state={"prior": {"median": np.float32(1)}})

    monkeypatch.setattr(
        toy_methods, "PREPARED", dataclasses.replace(toy_methods.PREPARED, prepare=wrong)
    )
    with pytest.raises(ValueError, match="model state 'prior/median', which the model does not"):
        trainer.run_main(_config(tiny_data_dir, 2), str(tmp_path))


def test_a_stored_preparation_is_refused_for_another_config(tmp_path):
    config = _config("unused", 2)
    method = toy_methods.PREPARED.name
    computed_for = preparation.computed_for(config, method)
    preparation.save(
        Preparation(info={"n": 1}), str(tmp_path), method=method, computed_for=computed_for
    )
    assert preparation.load(str(tmp_path), expected=computed_for).info == {"n": 1}
    # Other training images (a held-out part drawn with another seed), another seed.
    config.data.holdout_seed = 3
    config.seed = 7
    with pytest.raises(ValueError, match="computed for another run") as raised:
        preparation.load(str(tmp_path), expected=preparation.computed_for(config, method))
    assert "holdout: [0.1, 0, 'random'] -> [0.1, 3, 'random']" in str(raised.value)
    assert "seed: 0 -> 7" in str(raised.value)
    assert f"Remove {tmp_path / 'preparation'}" in str(raised.value)
