"""Runs that survive what happens to runs: re-run when finished, killed during the final
evaluation, evaluated from the workdir alone, and started from another run (`init_from`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import quickstart
from crowdjax import checkpointing, evaluation, preemption, run, trainer, workdir
from tests.engine import toy_configs
from tests.engine.conftest import run_script

TRAIN = ["train.py", "--config=configs/quickstart.py:tiny"]


def _test_line(stdout: str) -> str:
    (line,) = [x for x in stdout.splitlines() if x.startswith("test (")]
    return line


def test_a_finished_workdir_reruns_and_reports_the_same(tiny_data_dir, tmp_path):
    workdir = str(tmp_path)
    args = [*TRAIN, f"--workdir={workdir}", f"--config.data.data_dir={tiny_data_dir}"]
    first = run_script(args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert re.search(r"final evaluation of the best checkpoint: .*'step': \d", first.stdout)
    again = run_script(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained 4 steps" in again.stdout
    assert _test_line(again.stdout) == _test_line(first.stdout)
    # Killed during its final evaluation: what is left is the checkpoint without the report.
    test_json = json.load(open(tmp_path / "eval_test.json"))
    os.remove(tmp_path / "final.json")
    os.remove(tmp_path / "eval_test.json")
    finished = run_script(args)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert _test_line(finished.stdout) == _test_line(first.stdout)
    assert json.load(open(tmp_path / "eval_test.json"))["mae"] == test_json["mae"]
    with open(tmp_path / "metrics.jsonl") as f:
        finals = [(r["split"], r["step"]) for r in map(json.loads, f) if r.get("final")]
    assert sorted(finals) == sorted(set(finals)) and len(finals) == 2  # test and val, once each


def _final_lines(workdir) -> list[str]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r["split"] for r in map(json.loads, f) if r.get("final")]


def test_sigterm_during_the_final_evaluation_stops_the_run_and_the_rerun_finishes_it(
    tiny_data_dir, tmp_path, monkeypatch, capsys
):
    """A finished 2-step run resumed to 4 steps gets SIGTERM once its final evaluation has
    written its first entry: it stops before the next batch with preemption.EXIT_STATUS, saying
    why, and leaves no final.json (the 2-step report no longer describes the run). eval.py on
    that workdir writes no report either; the same command then evaluates every entry, as
    eval.py did, and writes it."""
    config = toy_configs.get_config("constant")
    config.data.data_dir = tiny_data_dir
    config.train.num_steps, config.train.eval_every = 2, 0
    workdir = str(tmp_path)
    trainer.train_and_evaluate(config, workdir)
    assert json.load(open(tmp_path / "final.json"))["checkpoint"]["step"] == 2
    config.train.num_steps = 4
    write = trainer.eval_writer.write

    def write_then_sigterm(result, config, **kwargs):
        write(result, config, **kwargs)
        if kwargs.get("final"):
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer.eval_writer, "write", write_then_sigterm)
    unhandled = []  # Where a SIGTERM the run does not take lands (not pytest's death).
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: unhandled.append(signum))
    capsys.readouterr()
    try:
        with pytest.raises(preemption.Preempted) as stop:
            trainer.train_and_evaluate(config, workdir, allow_config_change=["train.num_steps"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stop.value.code == preemption.EXIT_STATUS and not unhandled
    out = capsys.readouterr().out
    assert (
        "preempted: SIGTERM during the final evaluation; The last committed checkpoint is " in out
    )
    assert "re-run the same command to finish the final evaluation" in out
    assert not os.path.exists(tmp_path / "final.json")
    assert len(_final_lines(workdir)) == 1  # The first entry's (the 2-step run's were dropped).

    monkeypatch.undo()
    evaluated = evaluation.evaluate_checkpoint(config, workdir)  # eval.py: the best checkpoint
    assert not os.path.exists(tmp_path / "final.json")
    results = trainer.train_and_evaluate(config, workdir)
    assert "already trained 4 steps" in capsys.readouterr().out
    final = json.load(open(tmp_path / "final.json"))
    assert sorted(final["results"]) == sorted(results) == ["test", "val"]
    assert sorted(_final_lines(workdir)) == ["test", "val"]  # Each once.
    for prefix in ("test", "val"):
        assert final["results"][prefix]["mae"] == evaluated[prefix]["mae"]


@pytest.mark.slow  # Two more train.py processes (about 70 s of CPU).
def test_a_finished_workdir_with_other_eval_settings_is_evaluated_again(tiny_data_dir, tmp_path):
    args = [*TRAIN, f"--workdir={tmp_path}", f"--config.data.data_dir={tiny_data_dir}"]
    first = run_script(args)
    assert first.returncode == 0, first.stderr[-3000:]
    # Other evaluation settings: the stored report no longer applies, it is evaluated again.
    changed = run_script([*args, "--config.eval.peak_threshold=0.5"])
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "already done" not in changed.stdout and "eval test (" in changed.stdout


@pytest.mark.slow  # 97 s in the suite; eval.py on a workdir runs by default in test_configs.
def test_eval_py_needs_only_the_workdir_of_a_run_with_optimizer_overrides(tiny_data_dir, tmp_path):
    # SGD with weight decay has another optimizer state than the config file's Adam: eval.py
    # reads config.json and restores the variables only.
    workdir = str(tmp_path)
    proc = run_script(
        [
            *TRAIN,
            f"--workdir={workdir}",
            f"--config.data.data_dir={tiny_data_dir}",
            "--config.train.num_steps=2",
            "--config.optimizer.name=sgd",
            "--config.optimizer.weight_decay=0.5",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.load(open(tmp_path / "eval_test.json"))
    os.remove(tmp_path / "eval_test.json")
    proc = run_script(["eval.py", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.load(open(tmp_path / "eval_test.json"))
    assert evaluated["mae"] == trained["mae"]  # the same (best) checkpoint as train.py's report
    assert evaluated["checkpoint"]["kind"] == "best" and evaluated["checkpoint"]["step"] == 2


def test_init_from_takes_variables_only_so_a_second_stage_may_change_its_optimizer(
    tiny_data_dir, tmp_path
):
    first = quickstart.get_config("tiny")
    first.data.data_dir = tiny_data_dir
    first.train.num_steps = 2
    first.eval_at_end = False
    trainer.run_main(first, str(tmp_path / "stage1"))
    second = quickstart.get_config("tiny")
    second.data.data_dir = tiny_data_dir
    second.train.num_steps = 2
    second.init_from = str(tmp_path / "stage1")
    second.optimizer.name = "sgd"  # another optimizer state structure
    second.optimizer.learning_rate = 0.0  # so the second stage keeps the first's variables
    second.eval_at_end = False
    trainer.run_main(second, str(tmp_path / "stage2"))
    setup = run.Setup(second)
    one, _ = checkpointing.restore_variables(str(tmp_path / "stage1"), setup.abstract_variables())
    two, info = checkpointing.restore_variables(
        str(tmp_path / "stage2"), setup.abstract_variables()
    )
    assert info["step"] == 2  # stage 2 counts its own steps from 0
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_best_record_is_that_of_the_committed_checkpoint(tiny_data_dir, tmp_path):
    config = quickstart.get_config("tiny")
    config.data.data_dir = tiny_data_dir
    tmp_path = tmp_path / "3"  # a workdir named like a step directory
    trainer.run_main(config, str(tmp_path))
    record = json.load(open(tmp_path / "best_metrics.json"))
    directory, step, kind = checkpointing.find_checkpoint(str(tmp_path))
    assert directory == str(tmp_path / "best")
    assert kind == "best" and step == record["step"] and record["metric"] == "val/mae"
    assert os.path.exists(os.path.join(directory, str(step), "commit_success.txt"))
    evals = [
        r
        for r in map(json.loads, open(tmp_path / "metrics.jsonl"))
        if r["split"] == "val" and not r.get("final")
    ]
    assert record["value"] == min(r["mae"] for r in evals)


def test_the_run_config_is_read_back_for_one_process(tmp_path):
    config = quickstart.get_config()
    config.distributed.coordinator_address = "127.0.0.1:1234"
    config.distributed.num_processes = 2
    workdir.write_run_info(config, str(tmp_path))
    loaded = workdir.load_config(str(tmp_path))
    assert loaded.distributed.num_processes == 1 and not loaded.distributed.coordinator_address
    assert loaded.data.crop_size == config.data.crop_size and loaded.evals.val.split == "validation"
    assert loaded.optimizer.to_dict() == config.optimizer.to_dict()


def test_evaluation_does_not_import_the_trainer():
    code = "import sys, crowdjax.evaluation; print('crowdjax.trainer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
