"""A gs:// workdir and --output, through a GCS emulator on the loopback address
(`tests/gcs_emulator.py`): every file lands in the bucket (read back through the emulator's own
HTTP API), none on the local disk; a run preempted there resumes there, and eval and predict read
it from there and write there."""

from __future__ import annotations

import json
import os
import signal

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
    storage,
    trainer,
    workdir,
    workdir_lock,
)
from crowdjax.data import datasets, io
from tests import gcs_emulator
from tests.engine.conftest import TINY

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
