"""A gs:// workdir and --output, through a GCS emulator on the loopback address
(`tests/gcs_emulator.py`): every file lands in the bucket (read back through the emulator's own
HTTP API), none on the local disk; a run preempted there resumes there, and eval and predict read
it from there and write there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import quickstart
from crowdjax import (
    checkpointing,
    console,
    evaluation,
    file_prediction,
    metric_writers,
    prediction,
    preemption,
    preparation,
    storage,
    trainer,
    workdir,
    workdir_lock,
)
from crowdjax.data import datasets, io
from crowdjax.methods.base import Preparation
from tests import gcs_emulator
from tests.engine.conftest import REPO, TINY, run_script

STEPS = 4


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The emulator, and this process's GCS clients pointed at it (for the module: epath and
    tensorstore keep the endpoint they first used)."""
    log_path = str(tmp_path_factory.mktemp("gcs") / "emulator.log")
    with gcs_emulator.running(log_path) as emulator, pytest.MonkeyPatch.context() as mp:
        gcs_emulator.use(mp, emulator)
        yield emulator


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Runs the test in an empty directory: a gs:// path taken as a local one shows there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _no_local_copy(directory) -> None:
    assert not os.path.exists(os.path.join(directory, "gs:")), sorted(os.listdir(directory))


def test_a_runs_own_files_land_in_the_bucket(gcs, in_tmp):
    root = f"gs://{gcs_emulator.BUCKET}/files"
    config = quickstart.get_config("tiny")
    with workdir_lock.hold(root):
        assert "files/lock.json" in gcs.objects("files/")
        console.setup(root)
        workdir.write_run_info(config, root, changes=[workdir.FieldChange("a", 1, 2)])
        writer = metric_writers.MetricWriter(root, tensorboard=False)
        writer.write(1, {"loss": 0.5})
        writer.close()
        workdir.write_final(root, {"results": {"test": {"mae": 1.0}}})
    _no_local_copy(in_tmp)
    names = gcs.objects("files/")
    for name in ("config.json", "git_revision.txt", "config_changes.jsonl", "final.json"):
        assert f"files/{name}" in names, names
    assert "files/lock.json" not in names  # Released.
    assert json.loads(gcs.read("files/config.json"))["method"] == config.method
    assert json.loads(gcs.read("files/metrics.jsonl")) == {"step": 1, "split": "train", "loss": 0.5}
    assert json.loads(gcs.read("files/final.json")) == {"results": {"test": {"mae": 1.0}}}
    assert workdir.read_final(root) == {"results": {"test": {"mae": 1.0}}}
    assert workdir.load_config(root).method == config.method
    for handler in console.LINES.handlers:  # What logging does at exit: uploads the log.
        handler.close()
    assert b"command:" in gcs.read("files/log.txt")


def test_appended_lines_reach_the_bucket_while_the_file_is_open(gcs, monkeypatch):
    monkeypatch.setattr(storage.AppendedFile, "upload_every", 0.05)
    name = "appended/metrics.jsonl"
    appended = storage.AppendedFile(f"gs://{gcs_emulator.BUCKET}/{name}")
    assert gcs.read(name) == b""  # Exists from the start, as a file opened to append.
    appended.write("1\n")
    deadline = time.time() + 30
    while gcs.read(name) != b"1\n":  # Uploaded by the background thread, not by close.
        assert time.time() < deadline
        time.sleep(0.05)
    appended.write("2\n")
    appended.close()
    assert gcs.read(name) == b"1\n2\n"
    again = storage.AppendedFile(f"gs://{gcs_emulator.BUCKET}/{name}")  # Appends after them.
    again.write("3\n")
    again.close()
    assert gcs.read(name) == b"1\n2\n3\n"


def test_a_preparation_is_stored_in_the_bucket_and_read_back(gcs):
    root = f"gs://{gcs_emulator.BUCKET}/prepared"
    state = {"attention": {"centers": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    result = Preparation(model_state=state, domain_labels={"a": {"x.jpg": 1}}, info={"k": 2})
    for _ in range(2):  # Computed again: the stored result is replaced.
        preparation.save(result, root, method="m", computed_for={"method": "m"})
    assert gcs.objects("prepared/") == [
        "prepared/preparation/model_state.npz",
        "prepared/preparation/result.json",
    ]
    loaded = preparation.load(root, expected={"method": "m"})
    np.testing.assert_array_equal(
        loaded.model_state["attention"]["centers"], state["attention"]["centers"]
    )
    assert loaded.domain_labels == {"a": {"x.jpg": 1}} and loaded.info == {"k": 2}
    with pytest.raises(ValueError, match="method"):
        preparation.load(root, expected={"method": "other"})


def test_a_checkpoint_directory_moves_within_the_bucket(gcs):
    root = f"gs://{gcs_emulator.BUCKET}/moved"
    for name in ("checkpoints/4/_CHECKPOINT_METADATA", "checkpoints/4/variables/manifest.ocdbt"):
        storage.path(f"{root}/{name}").write_text(name)
    storage.move(f"{root}/checkpoints/4", f"{root}/damaged_checkpoints/4")  # A new folder.
    assert gcs.objects("moved/") == [
        "moved/damaged_checkpoints/4/_CHECKPOINT_METADATA",
        "moved/damaged_checkpoints/4/variables/manifest.ocdbt",
    ]
    assert gcs.read("moved/damaged_checkpoints/4/_CHECKPOINT_METADATA") == (
        b"checkpoints/4/_CHECKPOINT_METADATA"
    )


def test_a_lock_of_another_host_in_a_bucket_is_refused_naming_its_holder(gcs):
    root = f"gs://{gcs_emulator.BUCKET}/locked"
    holder = {"host": "another-host", "pid": 1, "started": "2026-01-01T00:00:00+00:00"}
    assert storage.create_new(f"{root}/lock.json", json.dumps(holder))
    assert not storage.create_new(f"{root}/lock.json", "{}")  # The first one stays.
    with pytest.raises(workdir_lock.WorkdirLockedError) as refused:
        workdir_lock.acquire(root)
    message = str(refused.value)
    assert "'another-host', PID 1" in message and f"delete the object {root}/lock.json" in message
    assert json.loads(gcs.read("locked/lock.json")) == holder


def test_a_data_dir_in_a_bucket_is_read_as_the_local_one(gcs, tiny_data_dir):
    """TFDS finds the data set through epath; array_record reads its records through its own
    GCS client (`tests/gcs_emulator.py`)."""
    for folder, _, files in os.walk(tiny_data_dir):
        for name in files:
            local = os.path.join(folder, name)
            inside = os.path.relpath(local, tiny_data_dir)
            with open(local, "rb") as f:
                storage.path(f"gs://{gcs_emulator.BUCKET}/data/{inside}").write_bytes(f.read())
    bucket = datasets.data_source(TINY, "test", data_dir=f"gs://{gcs_emulator.BUCKET}/data")
    local = datasets.data_source(TINY, "test", data_dir=tiny_data_dir)
    assert len(bucket) == len(local) > 0
    for index in range(len(local)):
        a, b = bucket[index], local[index]
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_train_preempt_resume_evaluate_predict_in_a_bucket(gcs, in_tmp, tiny_data_dir, monkeypatch):
    root = f"gs://{gcs_emulator.BUCKET}/run"
    config = quickstart.get_config("tiny")
    config.data.data_dir = tiny_data_dir
    config.train.update(num_steps=STEPS, checkpoint_every=100, eval_every=0, log_every=1)
    config.eval_at_end = False  # eval.py's evaluation below reads the bucket instead.

    # Preempted (SIGTERM, as a scheduler sends) once step 1 is logged: step 2 is saved there.
    write = metric_writers.MetricWriter.write

    def write_then_preempt(self, step, metrics, **kw):
        write(self, step, metrics, **kw)
        if kw.get("split", "train") == "train" and step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as mp:
        mp.setattr(metric_writers.MetricWriter, "write", write_then_preempt)
        with pytest.raises(preemption.Preempted) as stopped:
            trainer.run_main(config, root)
    step = stopped.value.step
    assert 1 <= step < STEPS
    names = gcs.objects("run/")
    assert f"run/checkpoints/{step}/commit_success.txt" in names, names
    assert not any(checkpointing.TEMPORARY_MARK in n for n in names)

    trainer.run_main(config, root)  # Resumes from the bucket.
    _no_local_copy(in_tmp)
    names = gcs.objects("run/")
    assert f"run/checkpoints/{STEPS}/commit_success.txt" in names, names
    for name in ("config.json", "metrics.jsonl", "git_revision.txt"):
        assert f"run/{name}" in names, names
    assert "run/lock.json" not in names  # Released.
    logged = [json.loads(line) for line in gcs.read("run/metrics.jsonl").splitlines()]
    assert [r["step"] for r in logged if r["split"] == "train"] == list(range(1, STEPS + 1))

    # eval.py's evaluation, from the bucket's config.json and latest checkpoint.
    loaded = workdir.load_config(root)
    results = evaluation.evaluate_checkpoint(loaded, root, checkpoint="latest", split="test")
    stored = json.loads(gcs.read("run/eval_test.json"))
    assert stored["checkpoint"]["step"] == STEPS and stored["mae"] == results["test"]["mae"]

    # predict.py's counting: the checkpoint and the output in the bucket.
    picture = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    image = str(in_tmp / "crowd.png")
    with open(image, "wb") as f:
        f.write(io.encode_image(picture, ext=".png"))
    counter = prediction.Counter.load(root)
    output = f"gs://{gcs_emulator.BUCKET}/predicted"
    rows, failures = file_prediction.predict_files(counter, [image], output, overlays=True)
    assert not failures and len(rows) == 1
    names = gcs.objects("predicted/")
    for name in ("counts.csv", "counts.json", "counts.jsonl", "failed.json", "overlays/crowd.png"):
        assert f"predicted/{name}" in names, names
    table = json.loads(gcs.read("predicted/counts.json"))
    assert table[0]["count"] == pytest.approx(rows[0]["count"])
    assert table[0]["count"] == pytest.approx(counter.count(picture).count, rel=1e-5)
    assert counter.checkpoint_info["path"] == f"{root}/checkpoints/{STEPS}"  # No best: latest.
    _no_local_copy(in_tmp)


@pytest.mark.slow  # Four commands in fresh processes (train.py twice, eval.py, predict.py).
def test_train_py_killed_resumed_then_eval_py_and_predict_py_on_a_bucket(
    gcs, tiny_data_dir, tmp_path
):
    """The commands as a user runs them on a bucket: train.py killed with SIGKILL once its
    step-2 checkpoint is committed, the same command again (it takes over the dead run's lock
    and resumes), eval.py and predict.py reading the bucket and writing to it."""
    root = f"gs://{gcs_emulator.BUCKET}/cli"
    args = [
        "train.py",
        "--config=configs/quickstart.py:tiny",
        f"--workdir={root}",
        f"--config.data.data_dir={tiny_data_dir}",
        "--config.train.checkpoint_every=2",
        "--config.train.eval_every=0",
        "--config.train.log_every=1",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": REPO, **gcs.env}
    with open(tmp_path / "killed.out", "w") as out:
        child = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=out, stderr=out)
        deadline = time.time() + 600
        while "cli/checkpoints/2/commit_success.txt" not in gcs.objects("cli/checkpoints/"):
            assert child.poll() is None, (tmp_path / "killed.out").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert "cli/lock.json" in gcs.objects("cli/")  # Left by the killed run.

    resumed = run_script(args, env_extra=gcs.env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over a stale lock" in resumed.stdout
    assert "resuming from step" in resumed.stdout
    names = gcs.objects("cli/")
    assert "cli/checkpoints/4/commit_success.txt" in names and "cli/lock.json" not in names
    logged = [json.loads(line) for line in gcs.read("cli/metrics.jsonl").splitlines()]
    assert [r["step"] for r in logged if r["split"] == "train"] == [1, 2, 3, 4]

    evaluated = run_script(
        ["eval.py", f"--workdir={root}", "--checkpoint=latest"], env_extra=gcs.env
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(gcs.read("cli/eval_test.json"))
    assert report["checkpoint"]["step"] == 4
    assert gcs.read("cli/log.txt").count(b"command:") >= 2  # The resumed run's and eval.py's.

    image = tmp_path / "crowd.png"
    picture = np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    image.write_bytes(io.encode_image(picture, ext=".png"))
    output = f"gs://{gcs_emulator.BUCKET}/cli_counted"
    counted = run_script(
        ["predict.py", f"--checkpoint={root}", f"--output={output}", str(image)],
        env_extra=gcs.env,
    )
    assert counted.returncode == 0, counted.stderr[-3000:]
    rows = json.loads(gcs.read("cli_counted/counts.json"))
    assert [r["file"] for r in rows] == [str(image)]
    assert "cli_counted/log.txt" in gcs.objects("cli_counted/")
    _no_local_copy(REPO)
