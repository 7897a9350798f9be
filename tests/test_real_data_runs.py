"""benchmarks/real_data_runs.py: its recipes load, it skips finished workdirs, and its table is
built from fake finished workdirs (MAE, ratio and comparisons checked by hand)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys

import pytest

from tests.engine.conftest import REPO


@pytest.fixture(scope="module")
def runner():
    path = os.path.join(REPO, "benchmarks", "real_data_runs.py")
    spec = importlib.util.spec_from_file_location("real_data_runs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Its dataclasses look their module up.
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _fake_run(root, name, *, data, target="", steps=300, batch=4, results, step, walls):
    workdir = os.path.join(root, name)
    os.makedirs(workdir)
    config = {"data": {"name": data, "target": target}, "train": {"num_steps": steps}}
    config["train"]["global_batch_size"] = batch
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config, f)
    final = {"checkpoint": {"kind": "best", "step": step, "val/mae": 1.0}, "results": results}
    with open(os.path.join(workdir, "final.json"), "w") as f:
        json.dump(final, f)
    attempts = [{"started": 0.0, "wall_s": w, "returncode": 0, "command": []} for w in walls]
    with open(os.path.join(workdir, "real_data_run.json"), "w") as f:
        json.dump({"attempts": attempts}, f)


def _result(dataset, split, mae, rmse, baseline):
    return {"dataset": dataset, "split": split, "mae": mae, "rmse": rmse, "baseline_mae": baseline}


B = "shanghaitech/part_b_512"
A = "shanghaitech/part_a_512"


def test_table_from_finished_workdirs(runner, tmp_path):
    root = str(tmp_path)
    _fake_run(
        root,
        "uot",
        data=B,
        results={
            "val": _result("", "validation", 30.0, 40.0, 70.0),
            "test": _result(B, "test", 20.0, 30.0, 80.0),
        },
        step=225,
        walls=[1200.0, 1500.0],  # Killed once, then resumed: 45 minutes in all.
    )
    _fake_run(
        root,
        "uot_l2",
        data=B,
        results={"test": _result(B, "test", 50.0, 60.0, 80.0)},
        step=300,
        walls=[2400.0],
    )
    _fake_run(
        root,
        "dkpnet_va",
        data=[A, B],
        results={
            "test_sha": _result(A, "test", 100.0, 150.0, 125.0),
            "test_shb": _result(B, "test", 40.0, 50.0, 80.0),
        },
        step=150,
        walls=[60.0],
    )
    table = runner.write_table(root)
    test_rows = {(r["run"], r["evaluation"]): r for r in table["rows"] if r["evaluation"] != "val"}
    uot = test_rows[("uot", "test")]
    assert uot["trained_on"] == "B" and uot["evaluated_on"] == "B test"
    assert uot["wall_min"] == 45.0 and uot["steps"] == 300 and uot["selected_step"] == 225
    assert uot["ratio"] == pytest.approx(20.0 / 80.0)
    dkp = test_rows[("dkpnet_va", "test_sha")]
    assert dkp["trained_on"] == "A + B" and dkp["ratio"] == pytest.approx(0.8)
    assert test_rows[("dkpnet_va", "test_shb")]["evaluated_on"] == "B test"
    # The UOT claim: 20 against 50 on part B's test split; DKPNet's JT is missing.
    assert table["comparisons"] == [
        {
            "claim": "UOT loss vs pixel-wise L2 (same VGG19)",
            "evaluated_on": "B test",
            "with": "uot",
            "with_mae": 20.0,
            "without": "uot_l2",
            "without_mae": 50.0,
            "difference": -30.0,
        }
    ]
    assert "dkpnet_jt" in table["unfinished"] and "uot" not in table["unfinished"]
    with open(tmp_path / (runner.TABLE + ".md")) as f:
        md = f.read()
    assert "| uot | B | B test | 300 (4) | 45.0 | 20.00 | 30.00 | 80.00 | 0.25 | 225 (best) |" in md
    assert "validation" not in md  # Selection rows stay in the JSON only.
    assert "| UOT loss vs pixel-wise L2 (same VGG19) | B test | uot 20.00 | uot_l2 50.00 |" in md
    assert json.load(open(tmp_path / (runner.TABLE + ".json"))) == json.loads(json.dumps(table))


def test_finished_workdirs_are_skipped(runner, tmp_path, monkeypatch):
    root = str(tmp_path)
    _fake_run(root, "uot", data=B, results={"test": _result(B, "test", 1, 1, 2)}, step=1, walls=[1])
    os.makedirs(tmp_path / "uot_l2")  # Started, never finished: launched again (resumes).
    launched = []
    monkeypatch.setattr(runner, "build_data", lambda data_dir, manual_dir: None)
    monkeypatch.setattr(runner, "launch", lambda run, *args: launched.append(run.name))
    runner.main([f"--root={root}", "--only=uot,uot_l2,l2sm", "--data_dir=/nowhere"])
    assert sorted(launched) == ["l2sm", "uot_l2"]
    with pytest.raises(SystemExit):
        runner.main([f"--root={root}", "--only=uot,typo", "--table_only"])


def test_every_run_is_a_cpu_recipe_on_the_halved_shanghaitech(runner):
    names = [run.name for run in runner.RUNS]
    assert len(set(names)) == len(names)
    for claim, with_piece, without in runner.PAIRS:
        assert with_piece in names and without in names, claim
    for run in runner.RUNS:
        config = importlib.import_module(f"configs.{run.config}").get_config(run.variant)
        data = config.data.name if isinstance(config.data.name, list) else [config.data.name]
        assert set(data) <= set(runner.DATA_SETS), run
        evaluated = {spec.dataset for spec in config.evals.values() if spec.dataset}
        assert evaluated <= set(runner.DATA_SETS), run


def test_wall_time_counts_every_attempt_in_the_log(runner, tmp_path):
    """A runner killed with its session records no attempt; the run's log has them all."""
    lines = [
        "2026-12-06 07:39:00.000 I console.py:93] command: train.py --config=a (pid 1)",
        "2026-12-06 07:40:00.500 I trainer.py:249] step 10/220",
        "  a continuation line without a time",
        "2026-12-06 10:15:00.000 I trainer.py:249] step 220/220",  # Killed here: 156 minutes.
        "2026-12-06 10:43:00.000 I console.py:93] command: train.py --config=a (pid 2)",
        "2026-12-06 12:10:00.000 I eval_writer.py:62] eval test",  # Resumed: 87 minutes.
    ]
    (tmp_path / "log.txt").write_text("\n".join(lines) + "\n")
    assert runner.log_wall_s(str(tmp_path)) == pytest.approx((156 + 87) * 60)
    assert runner.log_wall_s(str(tmp_path / "missing")) is None


def _metrics_line(step, dataset, mae, baseline, split="validation"):
    return {
        "step": step,
        "split": "val",
        "dataset": dataset,
        "data_split": split,
        "mae": mae,
        "baseline_mae": baseline,
    }


def test_validation_curves_of_finished_and_unfinished_runs(runner, tmp_path):
    """Every validation, per data set, as MAE over the mean count; training lines, test lines
    and a resumed run's repeated step (the last wins) are handled; an unfinished run counts."""
    root = str(tmp_path)
    workdir = os.path.join(root, "dkpnet_va")
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"train": {"num_steps": 200}}, f)
    lines = [
        {"step": 10, "split": "train", "loss": 3.0},
        _metrics_line(100, A, 150.0, 300.0),
        _metrics_line(100, B, 40.0, 80.0),
        _metrics_line(200, A, 90.0, 300.0),
        _metrics_line(200, A, 60.0, 300.0),  # Evaluated again after a preemption.
        _metrics_line(200, B, 50.0, 0.0),  # No baseline: no ratio.
        _metrics_line(200, B, 10.0, 80.0, split="test"),
    ]
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(line) for line in lines) + "\n")
    curves = runner.validation_curves(workdir)
    assert curves == {"A": [(100, 0.5), (200, 0.2)], "B": [(100, 0.5)]}
    assert runner.validation_curves(os.path.join(root, "nothing")) == {}
    table = runner.write_table(root, runs=(runner.Run("dkpnet_va", "x", "cpu", "A + B"),))
    assert table["unfinished"] == ["dkpnet_va"]
    assert table["validation"] == {"dkpnet_va": {"steps": 200, "curves": curves}}
    text = open(os.path.join(root, runner.TABLE + ".md")).read()
    assert "| dkpnet_va (A) | 100 (0.50), 200 (0.20) |" in text
    pytest.importorskip("matplotlib")
    assert os.path.getsize(os.path.join(root, runner.TABLE + ".png")) > 1000
