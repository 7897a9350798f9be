"""Runs that survive damage: a metrics line cut short, a damaged latest checkpoint, a state that
went non-finite, an exception right after an asynchronous save, and the temporary directories
of a save that never committed. In-process runs of the toy CONSTANT method (seconds each)."""

from __future__ import annotations

import asyncio
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.path import atomicity

from crowdjax import checkpointing, evaluation, prediction, run, trainer
from crowdjax.metric_writers import MetricWriter
from tests.engine import toy_configs

LONGER = ("train.num_steps",)  # A resumed run trained further: a config change, named.


def _config(data_dir: str, steps: int, *, checkpoint_every: int = 2, method: str = ""):
    config = toy_configs.get_config("constant")
    if method:
        config.method = method
    config.data.data_dir = data_dir
    config.train.num_steps = steps
    config.train.checkpoint_every = checkpoint_every
    config.train.eval_every = 0
    config.train.log_every = 1
    config.eval_at_end = False
    return config


def _inf_at_step(data_dir: str, steps: int, inf_step: int, **kwargs):
    config = _config(data_dir, steps, method="tests.engine.nan_method:INF_AT_STEP", **kwargs)
    config.toy.inf_step = inf_step
    return config


def _committed(workdir) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _temporaries(workdir) -> list[str]:
    return [
        n
        for d in ("checkpoints", "best")
        if os.path.isdir(os.path.join(workdir, d))
        for n in os.listdir(os.path.join(workdir, d))
        if ".orbax-checkpoint-tmp" in n
    ]


def _logged_train_steps(workdir) -> list[int]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r["step"] for r in map(json.loads, f) if r["split"] == "train"]


@pytest.fixture
def slow_commits(monkeypatch):
    """Every checkpoint commits (its temporary directories are renamed) 1 s late, so an exception
    right after an asynchronous save comes before the save has committed."""
    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        await asyncio.sleep(1)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)


# ---------------------------------------------------------------------------------- metrics.jsonl


def _write_lines(path, lines: list[str]) -> None:
    with open(path, "w") as f:
        f.write("".join(lines))


def test_a_metrics_line_cut_short_at_the_end_is_dropped_with_a_warning(tmp_path, capsys):
    record = lambda step: json.dumps({"step": step, "split": "train", "loss": 0.5}) + "\n"
    path = tmp_path / "metrics.jsonl"
    _write_lines(path, [record(1), record(2), record(3)[:17]])  # killed while writing step 3
    writer = MetricWriter(str(tmp_path), tensorboard=False)
    assert writer.drop(lambda r: r["step"] > 1) == 1  # step 2; the cut line goes too
    writer.write(2, {"loss": 0.25})
    writer.close()
    assert [r["step"] for r in map(json.loads, open(path))] == [1, 2]
    assert f"{path}: its last line was cut short" in capsys.readouterr().out


def test_a_complete_last_metrics_line_without_its_line_end_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_lines(path, ['{"step": 1, "split": "train"}\n', '{"step": 2, "split": "train"}'])
    writer = MetricWriter(str(tmp_path), tensorboard=False)
    assert writer.drop(lambda r: False) == 0
    writer.write(3, {"loss": 0.25})
    writer.close()
    assert [r["step"] for r in map(json.loads, open(path))] == [1, 2, 3]


def test_a_damaged_metrics_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_lines(path, ['{"step": 1}\n', '{"step": 2, "spl\n', '{"step": 3}\n'])
    writer = MetricWriter(str(tmp_path), tensorboard=False)
    with pytest.raises(ValueError, match=rf"{path}:2: damaged line"):
        writer.drop(lambda r: r["step"] > 1)


# ---------------------------------------------------------------------------------- checkpoints


def _damage(workdir, step: int, how: str) -> None:
    """Truncates or deletes the array data of a committed checkpoint's variables."""
    data = os.path.join(workdir, "checkpoints", str(step), "variables", "d")
    for name in os.listdir(data):
        if how == "truncated":
            os.truncate(os.path.join(data, name), 10)
        else:
            os.remove(os.path.join(data, name))


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_latest_checkpoint_is_skipped_and_the_run_resumes_from_the_one_before(
    tiny_data_dir, tmp_path, capsys, damage
):
    straight, damaged = str(tmp_path / "straight"), str(tmp_path / "damaged")
    trainer.train_and_evaluate(_config(tiny_data_dir, 6), straight)
    trainer.train_and_evaluate(_config(tiny_data_dir, 4), damaged)
    # A kill or a full disk took the array data of step 4, and the last metrics line.
    _damage(damaged, 4, damage)
    with open(os.path.join(damaged, "metrics.jsonl"), "a") as f:
        f.write('{"step": 5, "spl')
    capsys.readouterr()

    trainer.train_and_evaluate(_config(tiny_data_dir, 6), damaged, allow_config_change=LONGER)
    out = capsys.readouterr().out
    assert f"skipping the damaged checkpoint {damaged}/checkpoints/4" in out
    assert "resuming from step 2" in out
    assert os.path.isdir(os.path.join(damaged, "damaged_checkpoints", "4"))  # kept to inspect
    assert _committed(damaged) == [2, 4, 6]
    assert _logged_train_steps(damaged) == _logged_train_steps(straight) == list(range(1, 7))
    setup = run.Setup(_config(tiny_data_dir, 6))
    a, _ = checkpointing.restore_variables(straight, setup.abstract_variables(), prefer="latest")
    b, _ = checkpointing.restore_variables(damaged, setup.abstract_variables(), prefer="latest")
    np.testing.assert_array_equal(np.asarray(a["params"]["c"]), np.asarray(b["params"]["c"]))


def test_when_no_checkpoint_restores_the_error_is_raised_and_nothing_is_moved(
    tiny_data_dir, tmp_path
):
    trainer.train_and_evaluate(_config(tiny_data_dir, 4), str(tmp_path))
    _damage(tmp_path, 2, "truncated")
    _damage(tmp_path, 4, "deleted")
    with pytest.raises(ValueError, match=r"no checkpoint restores; the newest, step 4, fails"):
        trainer.train_and_evaluate(
            _config(tiny_data_dir, 6), str(tmp_path), allow_config_change=LONGER
        )
    assert _committed(tmp_path) == [2, 4] and not os.path.exists(tmp_path / "damaged_checkpoints")


def test_stale_temporary_checkpoint_directories_are_removed_on_start(tmp_path, capsys):
    stale = [
        tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-1765",
        tmp_path / "best" / "2.orbax-checkpoint-tmp-1764",
    ]
    for path in stale:
        os.makedirs(path / "variables")
    ckpts = checkpointing.Checkpoints(str(tmp_path), async_save=False)
    ckpts.close()
    assert not _temporaries(tmp_path)
    out = capsys.readouterr().out
    assert all(f"removing {path}: a checkpoint save that never committed" in out for path in stale)


# ---------------------------------------------------------------------------------- NaN


def _tiny_state(c: float) -> run.TrainState:
    return run.TrainState(
        step=jnp.array(2, jnp.int32),
        params={"c": jnp.array(c, jnp.float32)},
        model_state={"counts": {"seen": jnp.array(3, jnp.int32)}},
        opt_state={"sgd": {"count": jnp.array(0, jnp.int32)}},
        rng=jax.random.key(0),
    )


@pytest.mark.parametrize("where", ["latest", "best"])
def test_a_non_finite_state_is_refused_by_both_kinds_of_save(tmp_path, where):
    ckpts = checkpointing.Checkpoints(str(tmp_path), async_save=False)
    with pytest.raises(FloatingPointError, match="non-finite parameter or model-state value"):
        if where == "latest":
            ckpts.save(2, _tiny_state(np.inf))
        else:
            ckpts.save_if_best(2, _tiny_state(np.nan), value=1.0)
    ckpts.save(3, _tiny_state(0.5))  # A finite state (with an integer model state) is saved.
    ckpts.close()
    assert _committed(tmp_path) == [3] and not os.listdir(tmp_path / "best")


def test_a_parameter_that_overflows_at_a_save_step_is_never_saved(tiny_data_dir, tmp_path):
    # The step-4 update makes c inf from finite metrics; step 4 is a save step.
    config = _inf_at_step(tiny_data_dir, 6, inf_step=4, checkpoint_every=2)
    with pytest.raises(FloatingPointError) as stop:
        trainer.train_and_evaluate(config, str(tmp_path))
    message = str(stop.value)
    assert "non-finite parameter or model-state value at step 4: not saved" in message
    assert f"The last committed checkpoint is step 2 ({tmp_path}/checkpoints/2)" in message
    assert _committed(tmp_path) == [2] and not _temporaries(tmp_path)


def test_the_nan_stop_right_after_an_asynchronous_save_commits_it_and_names_it(
    tiny_data_dir, tmp_path, slow_commits
):
    # c is inf after step 4, so the loss of step 5 is not finite; step 3's save is still
    # committing (slow_commits) when the NaN stop comes.
    config = _inf_at_step(tiny_data_dir, 6, inf_step=4, checkpoint_every=3)
    with pytest.raises(FloatingPointError, match=r"non-finite c \(inf\) at step 5") as stop:
        trainer.train_and_evaluate(config, str(tmp_path))
    assert f"The last committed checkpoint is step 3 ({tmp_path}/checkpoints/3)" in str(stop.value)
    assert _committed(tmp_path) == [3] and not _temporaries(tmp_path)


def test_an_evaluation_error_right_after_an_asynchronous_save_loses_nothing(
    tiny_data_dir, tmp_path, slow_commits, monkeypatch
):
    def evaluate(*args, **kwargs):
        raise RuntimeError("the evaluation data went away")

    monkeypatch.setattr(trainer.evaluation, "evaluate", evaluate)
    config = _config(tiny_data_dir, 6, checkpoint_every=2)
    config.train.eval_every = 3  # right after the step-2 save
    with pytest.raises(RuntimeError, match="evaluation data went away"):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert _committed(tmp_path) == [2] and not _temporaries(tmp_path)


# ---------------------------------------------------------------------------------- best/


def _damage_best(workdir, how: str) -> str:
    """Damages the committed best checkpoint of `workdir` (its array data, or the metrics orbax
    stores with it); returns its step directory."""
    (step,) = [n for n in os.listdir(os.path.join(workdir, "best")) if n.isdigit()]
    step_dir = os.path.join(workdir, "best", step)
    if how == "metrics":
        with open(os.path.join(step_dir, "metrics", "metrics"), "w") as f:
            f.write('{"value": 0.')  # cut short
    else:
        data = os.path.join(step_dir, "variables", "d")
        for name in os.listdir(data):
            if how == "truncated":
                os.truncate(os.path.join(data, name), 10)
            else:
                os.remove(os.path.join(data, name))
    return step_dir


def _trained_with_best(data_dir: str, workdir: str):
    """A finished 4-step run of CONSTANT whose final evaluation has not run: its best/ holds
    step 2 or 4, its checkpoints/ steps 2 and 4."""
    config = _config(data_dir, 4)
    config.train.eval_every = 2
    trainer.train_and_evaluate(config, workdir)
    assert os.listdir(os.path.join(workdir, "best")) and _committed(workdir) == [2, 4]
    config.eval_at_end = True  # The same run, now evaluated at its end (a free field).
    return config


@pytest.mark.parametrize("damage", ["truncated", "metrics"])
def test_a_damaged_best_checkpoint_falls_back_to_the_latest_at_the_final_evaluation(
    tiny_data_dir, tmp_path, capsys, damage
):
    workdir = str(tmp_path)
    config = _trained_with_best(tiny_data_dir, workdir)
    damaged = _damage_best(workdir, damage)
    capsys.readouterr()

    results = trainer.train_and_evaluate(config, workdir)
    out = capsys.readouterr().out
    step = os.path.basename(damaged)
    moved = os.path.join(workdir, "damaged_checkpoints", f"best_{step}")
    assert f"warning: the best checkpoint {damaged} does not restore" in out
    assert f"skipping the damaged checkpoint {damaged}, moved to {moved}" in out
    assert os.path.isdir(moved) and not os.path.exists(damaged)  # kept to inspect
    final = json.load(open(tmp_path / "final.json"))
    assert final["checkpoint"] == {"kind": "latest", "step": 4}
    assert f"{damaged} is damaged" in final["fallback"]
    assert "final evaluation of the latest checkpoint" in out
    # The latest committed checkpoint's own evaluation (eval.py --checkpoint=latest).
    reference = evaluation.evaluate_checkpoint(config, workdir + "_eval", checkpoint=workdir)
    for prefix in ("val", "test"):
        assert results[prefix]["mae"] == reference[prefix]["mae"]
    # Re-run: the report stands, nothing is evaluated again.
    trainer.train_and_evaluate(config, workdir)
    assert "final evaluation of this checkpoint already done" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["deleted", "metrics"])
def test_eval_and_predict_on_a_damaged_best_name_it_and_the_checkpoint_to_use(
    tiny_data_dir, tmp_path, damage
):
    workdir = str(tmp_path)
    config = _trained_with_best(tiny_data_dir, workdir)
    damaged = _damage_best(workdir, damage)
    where = damaged if damage != "metrics" else os.path.join(workdir, "best")
    setup = run.Setup(config)
    for path in (workdir, os.path.join(workdir, "best")):  # What eval.py and predict.py take.
        with pytest.raises(checkpointing.DamagedCheckpointError) as raised:
            checkpointing.restore_variables(path, setup.abstract_variables())
        message = str(raised.value)
        assert message.startswith(f"{where}: damaged, it does not restore (")
        assert f"--checkpoint=latest or --checkpoint={workdir}/checkpoints" in message
    with pytest.raises(checkpointing.DamagedCheckpointError):
        prediction.Counter.load(workdir, config=config)
    # What the message offers works, and the workdir is left as it was (readers move nothing).
    results = evaluation.evaluate_checkpoint(config, workdir, checkpoint="latest")
    assert results["test"]["num_images"] == 4
    assert os.path.isdir(damaged) and not os.path.exists(tmp_path / "damaged_checkpoints")
