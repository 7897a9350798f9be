"""The generic trainer: multi-device equivalence, resume after a kill, multi-process agreement."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from crowdjax import checkpointing, preemption, run
from tests.engine.conftest import REPO, run_script, with_xla_flags

TINY_ARGS = ["train.py", "--config=configs/quickstart.py:tiny"]


def _train_args(data_dir: str, workdir: str, steps: int) -> list[str]:
    return [
        *TINY_ARGS,
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        f"--config.train.num_steps={steps}",
        "--config.train.checkpoint_every=2",
        "--config.train.eval_every=0",
        "--config.eval_at_end=False",
    ]


def _one_vs_eight(data_dir: str, *cases: str) -> list[dict]:
    proc = run_script(
        ["tests/engine/one_vs_eight.py", data_dir, *cases],
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["case"] for r in results] == list(cases)
    return results


def _assert_equal_steps(result: dict) -> None:
    assert abs(result["loss_1"] - result["loss_8"]) <= 1e-5 * max(1.0, abs(result["loss_1"]))
    # Every part of the model (and its state) moved, and 8 devices agree with 1 to 1e-3 of the
    # size of that part's update.
    assert result["param_update"] > 0
    assert result["worst_ratio"] <= 1e-3, result


def test_eight_devices_equal_one_device(tiny_data_dir):
    """UOT; a two-player method with optimizer groups on paired streams; and a BatchNorm model
    (synchronised statistics: the running averages are compared too)."""
    uot, two_player, batch_norm = _one_vs_eight(
        tiny_data_dir,
        "quickstart",
        "tests.engine.toy_configs:two_player",
        "tests.engine.toy_configs:batch_norm",
    )
    for result in (uot, two_player, batch_norm):
        _assert_equal_steps(result)
    assert {"params/critic", "params/generator"} <= set(two_player["parts"])
    assert "state/batch_stats" in batch_norm["parts"] and batch_norm["state_update"] > 0


@pytest.mark.slow
def test_autoscale_and_l2sm_steps_on_eight_devices_equal_one_device(tiny_data_dir):
    """The whole AutoScale step (selection, L2S, re-prediction, center state) on 32 x 32 crops,
    and the L2SM step on whole images cut into 2 x 2 tiles (8 tiles: regions, canvases, MPCL,
    centers). Slow: 150 s of CPU; each method's step is checked against independent
    computations in its own tests."""
    autoscale, l2sm = _one_vs_eight(
        tiny_data_dir,
        "autoscale_synthetic:tiny;l2s.area_ratio=0.01;data.crop_size=32",
        "l2sm_qnrf:tiny",
    )
    for result in (autoscale, l2sm):
        _assert_equal_steps(result)
    # Without a preparation every region with a head is dense: the centers moved and the
    # re-prediction head and the scale conv were trained.
    assert {"params/repredict1", "params/scale_conv", "state/l2sm"} <= set(l2sm["parts"])
    # Regions were selected (the center state moved) and L2S was trained.
    assert {"params/l2s", "state/center"} <= set(autoscale["parts"])


def test_dkpnet_step_on_eight_devices_equals_one_device(tiny_data_dir):
    # DKPNet's InVA step: HRNet's BatchNorm statistics over the global batch (running averages
    # compared too), latent samples and sub-center dropout. Its own test, so that a second
    # worker runs it beside the one above.
    (result,) = _one_vs_eight(tiny_data_dir, "dkpnet_synthetic:inva,tiny")
    _assert_equal_steps(result)
    assert {"params/backbone", "params/prior", "state/batch_stats"} <= set(result["parts"])
    assert result["state_update"] > 0


@pytest.mark.slow
def test_autoscale_step_on_eight_devices_equals_one_device(tiny_data_dir):
    # The whole AutoScale step (selection, L2S, re-prediction, center state) sharded over 8
    # devices, with the selection on the host (pure_callback) there and in the jit on 1 device.
    (result,) = _one_vs_eight(
        tiny_data_dir, "autoscale_synthetic:tiny;l2s.area_ratio=0.01;8:l2s.selection=host"
    )
    _assert_equal_steps(result)


@pytest.mark.slow
def test_asnet_step_on_eight_devices_equals_one_device(tiny_data_dir):
    # ASNet's D1, D2 and G phases (scores thresholded on the batch's discriminator outputs) on
    # paired source / target streams.
    (result,) = _one_vs_eight(tiny_data_dir, "asnet_synthetic:tiny")
    _assert_equal_steps(result)
    assert {"params/d1", "params/d2", "params/generator"} <= set(result["parts"])


def _final_params(workdir: str, steps: int):
    from configs import quickstart

    setup = run.Setup(quickstart.get_config("tiny"), devices=jax.devices()[:1])
    variables, info = checkpointing.restore_variables(
        os.path.join(workdir, "checkpoints", str(steps)), setup.abstract_variables()
    )
    assert info["step"] == steps
    return jax.device_get(variables["params"])


def _logged_train_steps(workdir: str) -> list[int]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r["step"] for r in map(json.loads, f) if r["split"] == "train"]


STRAIGHT_STEPS = 8


@pytest.fixture(scope="module")
def straight_run(tiny_data_dir, tmp_path_factory) -> str:
    """The workdir of an uninterrupted run of STRAIGHT_STEPS steps, logged at every step: what
    an interrupted and resumed run must reach."""
    straight = str(tmp_path_factory.mktemp("straight") / "run")
    args = [*_train_args(tiny_data_dir, straight, STRAIGHT_STEPS), "--config.train.log_every=1"]
    proc = run_script(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return straight


def test_resume_after_kill_reaches_same_parameters(tiny_data_dir, tmp_path, straight_run):
    steps = STRAIGHT_STEPS
    straight = straight_run

    # Kill the second run with SIGKILL as soon as its step-4 checkpoint is on disk.
    killed = str(tmp_path / "killed")
    args = [*_train_args(tiny_data_dir, killed, steps), "--config.train.log_every=1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not os.path.isdir(os.path.join(killed, "checkpoints", "4")):
        assert child.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not os.path.isdir(os.path.join(killed, "checkpoints", str(steps)))

    proc = run_script(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from step" in proc.stdout

    a, b = _final_params(straight, steps), _final_params(killed, steps)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    # One line per logged step, none twice, none lost (steps after the checkpoint were logged
    # by the killed run and again by the resumed one).
    assert _logged_train_steps(killed) == _logged_train_steps(straight) == list(range(1, 9))


def test_sigterm_saves_at_the_next_step_and_resumes_to_same_parameters(
    tiny_data_dir, tmp_path, straight_run
):
    """SIGTERM mid-run (as a scheduler sends before it kills): the run saves the step it is in
    though no checkpoint is due, waits for it to commit, says so and exits with
    preemption.EXIT_STATUS; the same command then ends where an uninterrupted run does."""
    steps = STRAIGHT_STEPS
    preempted = str(tmp_path / "preempted")
    args = [
        *_train_args(tiny_data_dir, preempted, steps),
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=100",  # No checkpoint is due before the last step.
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out_path = tmp_path / "preempted.out"
    with open(out_path, "w") as out:
        child = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=out, stderr=out)
        metrics = os.path.join(preempted, "metrics.jsonl")
        deadline = time.time() + 300
        while not (os.path.exists(metrics) and os.path.getsize(metrics)):  # A step is logged.
            assert child.poll() is None, "training ended before it could be preempted"
            assert time.time() < deadline
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        returncode = child.wait(timeout=300)
    output = out_path.read_text()
    assert returncode == preemption.EXIT_STATUS, output[-3000:]
    found = re.search(r"preempted: SIGTERM at step (\d+); checkpoint \1 committed", output)
    assert found, output[-3000:]
    step = int(found.group(1))
    assert 1 <= step < steps
    checkpoints = os.path.join(preempted, "checkpoints")
    assert sorted(os.listdir(checkpoints)) == [str(step)]  # Committed: no temporary directory.

    proc = run_script(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from step {step}" in proc.stdout
    a, b = _final_params(straight_run, steps), _final_params(preempted, steps)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert _logged_train_steps(preempted) == list(range(1, steps + 1))


def _start_two_processes(train_args: list[str], port_offset: int = 0) -> list[subprocess.Popen]:
    """Processes 0 and 1 of a jax.distributed run on localhost (1 CPU device each)."""
    port = 20000 + (os.getpid() + port_offset) % 20000
    procs = []
    for pid in range(2):
        args = [
            *train_args,
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            "--config.distributed.num_processes=2",
            f"--config.distributed.process_id={pid}",
        ]
        procs.append(
            subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "XLA_FLAGS": with_xla_flags("--xla_force_host_platform_device_count=1"),
                },
            )
        )
    return procs


def test_two_processes_agree_with_one(tiny_data_dir, tmp_path):
    """Two processes on localhost (jax.distributed, 1 CPU device each) train like one process
    with 2 devices: each reads its half of every global batch. They start as on a fresh pod,
    before the embedded data exists: JAX is initialized before any JAX call, process 0 builds
    the data and the other waits for it."""
    fresh_data_dir = str(tmp_path / "fresh_data")  # Rendered by the run: the same tiny data.
    procs = _start_two_processes(_train_args(fresh_data_dir, str(tmp_path / "multi"), 4))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    single = run_script(
        _train_args(tiny_data_dir, str(tmp_path / "single"), 4),
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = _final_params(str(tmp_path / "multi"), 4), _final_params(str(tmp_path / "single"), 4)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)
    # Only process 0 writes logs: each logged step once (two writers would give [2, 2, 4, 4]).
    assert _logged_train_steps(str(tmp_path / "multi")) == [2, 4]


def test_preemption_notice_to_one_process_stops_both_at_the_same_step(tiny_data_dir, tmp_path):
    """SIGTERM to process 1 of a two-process run: JAX's preemption service passes the notice on,
    both processes stop after the same step, save it together and exit with
    preemption.EXIT_STATUS."""
    steps = 12
    workdir = str(tmp_path / "multi")
    args = [
        *_train_args(tiny_data_dir, workdir, steps),
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=100",  # No checkpoint is due before the last step.
    ]
    procs = _start_two_processes(args, port_offset=1)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 400
    while not (os.path.exists(metrics) and os.path.getsize(metrics)):  # A step is logged.
        assert all(p.poll() is None for p in procs), "training ended before it could be preempted"
        assert time.time() < deadline
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == preemption.EXIT_STATUS, err[-3000:]
    # Process 0 logs for both; the only checkpoint is the step both saved together.
    found = re.search(
        r"preempted: a preemption notice at step (\d+); checkpoint \1 committed", outs[0][0]
    )
    assert found, outs[0][0][-3000:] + outs[0][1][-3000:]
    step = int(found.group(1))
    assert 1 <= step < steps
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [str(step)]


@pytest.mark.slow  # Two train.py processes, then a single-process re-run (about 60 s on 2 cores).
def test_preemption_notice_during_the_final_evaluation_stops_both_and_the_rerun_finishes_it(
    tiny_data_dir, tmp_path
):
    """SIGTERM to process 1 once the last step is the best (after the training loop): JAX's
    preemption service takes it, and both processes stop before the same batch of the final
    evaluation with preemption.EXIT_STATUS and no final.json (they evaluated on to the end
    before). The re-run (one process: `distributed` may change) finishes the evaluation."""
    workdir = str(tmp_path / "multi")
    args = [
        a if a != "--config.eval_at_end=False" else "--config.eval_at_end=True"
        for a in _train_args(tiny_data_dir, workdir, 2)
    ]
    # The first entry evaluated at the end: 8 batches of 2, time for the notice to spread.
    args.append("--config.evals.test.split=train")
    procs = _start_two_processes(args, port_offset=2)
    # The best is saved (synchronously) after the training loop, before the final evaluation.
    last = os.path.join(workdir, "best", "2")
    deadline = time.time() + 400
    while not os.path.isdir(last):
        if not all(p.poll() is None for p in procs):
            out, err = procs[0].communicate(timeout=300)
            raise AssertionError("the run ended before it could be preempted:\n" + err[-3000:])
        assert time.time() < deadline
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == preemption.EXIT_STATUS, out[-2000:] + err[-3000:]
    assert "preempted: a preemption notice during the final evaluation" in outs[0][0]
    assert not os.path.exists(os.path.join(workdir, "final.json"))

    proc = run_script(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "final.json")) as f:
        final = json.load(f)
    assert sorted(final["results"]) == ["test", "val"]
    # The two processes' evaluation of the last step (each gathers the other's image records)
    # equals the one process's final evaluation of that step, the best.
    assert final["checkpoint"]["kind"] == "best" and final["checkpoint"]["step"] == 2
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        (two,) = [r for r in map(json.loads, f) if r["split"] == "val" and not r.get("final")]
    one = final["results"]["val"]
    assert two["num_images"] == one["num_images"] == 4
    np.testing.assert_allclose(two["mae"], one["mae"], rtol=1e-5)
