"""A workdir belongs to one run: a second launch is refused, a resumed run keeps its config, a
checkpoint that does not fit the model is named before orbax reads it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from configs import quickstart
from crowdjax import checkpointing, trainer, workdir, workdir_lock
from tests.engine.conftest import REPO, run_script


def _write_lock(path, **holder) -> None:
    os.makedirs(path, exist_ok=True)
    with open(workdir_lock.lock_path(str(path)), "w") as f:
        json.dump({"started": "2026-01-01T00:00:00+00:00", **holder}, f)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, capsys):
    pid = _dead_pid()
    _write_lock(tmp_path, host=socket.gethostname(), pid=pid)
    with workdir_lock.hold(str(tmp_path)):
        with open(workdir_lock.lock_path(str(tmp_path))) as f:
            assert json.load(f)["pid"] == os.getpid()
    stale = f"taking over a stale lock, its run is gone (host {socket.gethostname()!r}, PID {pid},"
    assert stale in capsys.readouterr().out
    assert not os.path.exists(workdir_lock.lock_path(str(tmp_path)))  # released at the end


def test_a_live_or_foreign_lock_refuses_and_names_its_holder(tmp_path):
    _write_lock(tmp_path, host="pod-7.example", pid=_dead_pid())  # another host: never stale
    with pytest.raises(workdir_lock.WorkdirLockedError) as raised:
        workdir_lock.acquire(str(tmp_path))
    message = str(raised.value)
    assert "host 'pod-7.example'" in message and "started 2026-01-01T00:00:00+00:00" in message
    assert f"rm {workdir_lock.lock_path(str(tmp_path))}" in message
    _write_lock(tmp_path, host=socket.gethostname(), pid=os.getppid())  # alive on this host
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"PID {os.getppid()}, started"):
        workdir_lock.acquire(str(tmp_path))
    with open(workdir_lock.lock_path(str(tmp_path))) as f:
        assert json.load(f)["pid"] == os.getppid()  # the holder's lock is left alone


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(KeyError), workdir_lock.hold(str(tmp_path)):
        raise KeyError("a run that fails")
    assert not os.path.exists(workdir_lock.lock_path(str(tmp_path)))


def test_a_second_train_py_on_a_live_workdir_is_refused(tiny_data_dir, tmp_path):
    args = [
        "train.py",
        "--config=configs/quickstart.py:tiny",
        f"--workdir={tmp_path}",
        f"--config.data.data_dir={tiny_data_dir}",
        "--config.train.num_steps=8",
        "--config.train.eval_every=4",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": REPO}
    first = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The first run is paused once it has a checkpoint and metrics (however fast it trains,
        # it is mid-run while the second starts), and goes on once the second has ended.
        deadline = time.time() + 300
        while not os.path.isdir(tmp_path / "checkpoints" / "2"):
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.time() < deadline
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, "the first run ended before the second started"
        second = run_script(args)
    finally:
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode != 0
    holder = f"another run holds this workdir (host {socket.gethostname()!r}, PID {first.pid}, "
    assert holder in second.stderr + second.stdout
    # The first run's files are whole: every step logged once, its checkpoints committed, its
    # final report written, its lock released.
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6, 8]
    assert sorted(os.listdir(tmp_path / "checkpoints"), key=int) == ["4", "6", "8"]
    assert os.path.exists(tmp_path / "checkpoints" / "8" / "commit_success.txt")
    assert "final evaluation of the best checkpoint" in out
    assert workdir.read_final(str(tmp_path))["checkpoint"]["kind"] == "best"
    assert not os.path.exists(workdir_lock.lock_path(str(tmp_path)))


def _config(data_dir, **overrides):
    config = quickstart.get_config("tiny")
    config.data.data_dir = data_dir
    config.train.num_steps = 2
    config.train.eval_every = 0
    config.eval_at_end = False
    for field, value in overrides.items():
        section, name = field.split("__")
        config[section][name] = value
    return config


def test_a_resumed_run_keeps_its_config_unless_a_change_is_allowed(tiny_data_dir, tmp_path):
    run = str(tmp_path)
    trainer.run_main(_config(tiny_data_dir), run)
    stored = (tmp_path / "config.json").read_bytes()
    revision_time = os.stat(tmp_path / "git_revision.txt").st_mtime_ns
    changed = _config(tiny_data_dir, train__num_steps=4, optimizer__learning_rate=0.002)
    with pytest.raises(workdir.ConfigChangeError) as raised:
        trainer.run_main(changed, run)
    message = str(raised.value)
    assert "optimizer.learning_rate: 0.001 -> 0.002" in message
    assert "train.num_steps: 2 -> 4" in message
    assert "--allow_config_change=optimizer.learning_rate,train.num_steps" in message
    # Refused before anything was written.
    assert (tmp_path / "config.json").read_bytes() == stored
    assert os.stat(tmp_path / "git_revision.txt").st_mtime_ns == revision_time
    assert not os.path.exists(tmp_path / "config_changes.jsonl")
    # Where the data lives is not the run's: a moved data directory needs no flag.
    assert workdir.check_resume_config(_config(tiny_data_dir + "/"), run) == [
        workdir.FieldChange("data.data_dir", tiny_data_dir, tiny_data_dir + "/")
    ]
    # Allowed: it takes effect from the step it resumes at, and config.json is the new config.
    trainer.run_main(changed, run, allow_config_change=("train.num_steps", "optimizer"))
    with open(tmp_path / "config_changes.jsonl") as f:
        (record,) = map(json.loads, f)
    assert record["from_step"] == 2
    assert record["changes"] == [
        {"field": "optimizer.learning_rate", "old": 0.001, "new": 0.002},
        {"field": "train.num_steps", "old": 2, "new": 4},
    ]
    assert workdir.load_config(run).train.num_steps == 4
    assert os.path.isdir(tmp_path / "checkpoints" / "4")


def test_a_checkpoint_that_does_not_fit_is_named_before_orbax_reads_it(tiny_data_dir, tmp_path):
    run = str(tmp_path)
    trainer.run_main(_config(tiny_data_dir), run)
    wider = _config(tiny_data_dir, model__width=1 / 8)
    with pytest.raises(checkpointing.CheckpointMismatchError) as raised:
        trainer.run_main(wider, run, allow_config_change=("model.width",))
    message = str(raised.value)
    assert "tree structures" not in message and "stored shape" not in message
    # A 3x3 convolution of the first layer: 4 channels at width 1/16, 8 at 1/8.
    assert (
        "variables/params/" in message and "checkpoint shape (3, 3, 3, 4), config shape" in message
    )
    counts = re.search(r"differing arrays: (\d+) in variables, (\d+) in opt_state\)", message)
    assert int(counts[2]) == 2 * int(counts[1])  # Adam's two moments of every parameter.
    sgd = _config(tiny_data_dir, optimizer__name="sgd")
    with pytest.raises(checkpointing.CheckpointMismatchError, match="only in the checkpoint"):
        trainer.run_main(sgd, run, allow_config_change=("optimizer",))
