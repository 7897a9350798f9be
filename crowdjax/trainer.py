"""The training loop: one jitted, data-parallel update for every method.

`run_main(config, workdir)` (what train.py runs) parses `config.evals` once
(`crowdjax.evals.parse`), builds the synthetic data the run uses on first use
(`crowdjax.embedded_data`) and calls `train_and_evaluate`, which takes the workdir's lock
(`crowdjax.workdir_lock`), refuses a config that differs from the run's stored one
(`crowdjax.workdir.check_resume_config`), builds the run setup
(`crowdjax.run.Setup`), runs the method's preparation once (`crowdjax.preparation`), trains with
progress lines and JSON-lines metrics, evaluates the `during_training` entries every
`train.eval_every` steps and keeps the best checkpoint by the selection (`EvaluateAndKeepBest`),
keeps the latest checkpoints, and ends with a final evaluation of every entry on the selected
checkpoint, each written to its own `eval_<prefix>.json` (`crowdjax.eval_writer`) and the report
to `final.json` (`crowdjax.workdir`). It resumes from the workdir after a kill (step, variables,
optimizer states and the data order: batch i is a pure function of (seed, i)), and a finished
workdir re-run reports its final evaluation again (or finishes it, if the run was killed during
it). Whatever exception stops a run, the checkpoint saves it started commit before it propagates;
a non-finite loss term or state (`_check_finite`, `checkpointing.Checkpoints.save`) stops it with
a FloatingPointError that names the last committed checkpoint. SIGTERM, or JAX's preemption notice
with several processes (`crowdjax.preemption`), saves the step it arrives in, waits for the save
to commit and raises `preemption.Preempted` (exit status `preemption.EXIT_STATUS`); during the
final evaluation it stops before the next batch, with no `final.json`. A damaged best checkpoint
is set aside and the final evaluation takes the latest state (`final.json`'s "fallback" says so).

Imports run one way: the entry points (train.py, eval.py, `crowdjax.cross_validation`) -> this
module -> {`crowdjax.evaluation`, `crowdjax.preparation`} -> `crowdjax.run` -> `crowdjax.registry`
-> the methods (`tests/test_import_graph.py` checks it).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence

import jax
import numpy as np

from crowdjax import (
    checkpointing,
    config_migration,
    eval_writer,
    evals,
    evaluation,
    precise_bn,
    preemption,
    preparation,
    run,
    sharding,
    workdir_lock,
)
from crowdjax.embedded_data import build_embedded_data
from crowdjax.evals import Evals
from crowdjax.metric_writers import MetricWriter, Progress, log
from crowdjax.run import Setup
from crowdjax.workdir import (
    FINAL_FILE,
    check_resume_config,
    read_final,
    remove_final,
    write_final,
    write_run_info,
)


def _check_finite(step: int, metrics: dict) -> None:
    # Loss terms first: a non-finite term is the cause, the total and gradient norm follow from it.
    order = sorted(metrics, key=lambda k: (k in ("loss", "grad_norm"), k == "grad_norm", k))
    for name in order:
        value = metrics[name]
        if not np.all(np.isfinite(value)):
            raise FloatingPointError(
                f"non-finite {name} ({value}) at step {step}: training stopped. Lower the learning "
                "rate, check the data, or resume from the last checkpoint with a change."
            )


def _fetch_checked(step: int, metrics) -> dict:
    values = jax.device_get(metrics)
    _check_finite(step, values)
    return values


class EvaluateAndKeepBest:
    """Evaluates the entries due during training (`Evals.during_training`) and saves the
    checkpoint when the selection metric is the best so far."""

    def __init__(self, setup, run_evals: Evals, ckpts, writer, estimate):
        self.setup, self.ckpts, self.writer = setup, ckpts, writer
        self.estimate = estimate  # BatchNorm statistics for evaluation (crowdjax.precise_bn).
        self.selection = run_evals.selection
        self.entries = run_evals.during_training
        localizes = setup.method.points_fn is not None or setup.config.eval.get("localization")
        if self.selection.metric == "af" and not localizes:
            raise ValueError(
                "config.selection.metric='af' needs localization numbers, which a density method "
                "has only under a protocol: set config.eval.localization (crowdjax.density_points)"
            )

    def __call__(self, step: int, state) -> None:
        selection, values = self.selection, []
        # The best checkpoint keeps the BatchNorm statistics it was chosen by.
        state = state.replace(model_state=run.split_variables(self.estimate(state.variables))[1])
        for entry in self.entries:
            selecting = entry in selection.entries
            result = evaluation.evaluate(
                self.setup, state.variables, entry, detailed=selection.detailed and selecting
            )
            eval_writer.write(result, self.setup.config, writer=self.writer, step=step)
            if selecting:
                values.append(result.metrics[selection.metric])
        value = float(np.mean(values))  # One entry: its value; several: their mean.
        if self.ckpts.save_if_best(step, state, value):
            log(f"step {step}: new best {selection.name}/{selection.metric} {value:.4g}")


def train_and_evaluate(
    config,
    workdir: str,
    run_evals: Evals | None = None,
    *,
    allow_config_change: Sequence[str] = (),
) -> dict:
    """Trains `config.method` and evaluates it; returns {prefix: final metrics} (empty when
    `config.eval_at_end` is False).

    The run holds the workdir's lock (`crowdjax.workdir_lock`) from before it writes anything
    until it ends, so a second run on the same workdir is refused.

    Args:
      config: the run's config.
      workdir: the run's directory (resumed from when it holds a checkpoint).
      run_evals: `config.evals` parsed (`crowdjax.evals.parse`); parsed here when None.
      allow_config_change: dotted field prefixes (e.g. "train.num_steps") that may differ
        from the workdir's stored config.json (`crowdjax.workdir.check_resume_config`).

    Raises:
      WorkdirLockedError: another run holds the workdir.
      ConfigChangeError: the config differs from the workdir's in fields not allowed.
      FloatingPointError: a loss term, the gradient norm, a parameter or a model-state value is
        not finite; the message names the step and the last committed checkpoint.
    """
    sharding.maybe_initialize_distributed(config)
    run_evals = run_evals or evals.parse(config)
    with workdir_lock.hold(workdir):
        return _run_holding_the_lock(config, workdir, run_evals, allow_config_change)


def _run_holding_the_lock(config, workdir: str, run_evals: Evals, allow_config_change) -> dict:
    changes = check_resume_config(config, workdir, allow_config_change)  # Before any write.
    setup = Setup(config)
    batch_size = int(config.train.global_batch_size)
    sharding.check_batch_size(batch_size, setup.mesh)
    selected_by = run_evals.selection.info  # Checks the protocol before any work.
    ckpts = checkpointing.Checkpoints(
        workdir,
        keep=config.train.keep_checkpoints,
        metric=f"{selected_by['eval']}/{selected_by['metric']}",
        mode=selected_by["mode"],
    )
    try:
        return _train_and_evaluate(setup, run_evals, ckpts, workdir, changes)
    except FloatingPointError as e:  # The NaN stop names the checkpoint to resume from.
        e.args = (f"{e.args[0]} {ckpts.last_committed()}", *e.args[1:])
        raise
    finally:  # Whatever stops the run (NaN, Ctrl-C, an evaluation error), its saves commit.
        ckpts.wait()
        ckpts.close()


def _train_and_evaluate(setup, run_evals: Evals, ckpts, workdir: str, changes) -> dict:
    config = setup.config
    state, origin = checkpointing.initial_state(setup, ckpts)
    start_step = int(state.step)
    write_run_info(config, workdir, step=start_step, changes=changes)
    prepared = preparation.load_or_run(setup, workdir, state.variables)
    if prepared is not None and origin != "resume":
        state = preparation.fill_model_state(setup, state, prepared)
    writer = MetricWriter(workdir)
    try:  # Closed whatever stops the run: a cloud workdir's metrics are uploaded on close.
        writer.drop(lambda r: r["step"] > start_step)  # A resumed run logs those steps again.
        estimate = precise_bn.BatchStatsEstimator(setup)
        evaluate_and_keep_best = EvaluateAndKeepBest(setup, run_evals, ckpts, writer, estimate)
        # SIGTERM or the notice stops the run at a step boundary, or a final evaluation batch.
        with preemption.Preemption() as preempt:
            if start_step >= setup.total_steps:
                total = setup.total_steps
                log(f"{workdir}: already trained {start_step} steps (train.num_steps={total})")
            else:
                state = _train(
                    setup,
                    state,
                    ckpts,
                    writer,
                    evaluate_and_keep_best,
                    start_step,
                    prepared,
                    preempt,
                )
            results = {}
            if config.eval_at_end:
                results = final_evaluation(
                    setup, run_evals, state, ckpts, writer, workdir, preempt, estimate=estimate
                )
    finally:
        writer.close()
    return results


def _train(setup, state, ckpts, writer, evaluate_and_keep_best, start_step: int, prepared, preempt):
    config = setup.config
    batches = run.training_batches(setup, start_step, prepared)
    progress = Progress(
        total_steps=setup.total_steps,
        start_step=start_step,
        global_batch_size=int(config.train.global_batch_size),
    )
    log_every, eval_every = config.train.log_every, config.train.eval_every
    ckpt_every = config.train.checkpoint_every
    pending, accumulated = None, []
    t0 = time.perf_counter()
    for step in range(start_step + 1, setup.total_steps + 1):
        batch = sharding.host_to_global(next(batches), setup.mesh)
        state, metrics = setup.train_step(state, batch)
        if pending is not None:  # Checked one step late so the host never waits on the device.
            accumulated.append(_fetch_checked(*pending))
        pending = (step, metrics)
        if step % log_every == 0 or step == setup.total_steps:
            accumulated.append(_fetch_checked(*pending))
            pending = None
            mean = {k: float(np.mean([m[k] for m in accumulated])) for k in accumulated[0]}
            accumulated = []
            writer.write(step, mean, split="train")
            log(progress.line(step, mean))
        evaluate_now = eval_every and step % eval_every == 0 and step != setup.total_steps
        save_now = ckpt_every and step % ckpt_every == 0 and step != setup.total_steps
        if pending is not None and (evaluate_now or save_now):  # Never keep a non-finite state.
            accumulated.append(_fetch_checked(*pending))
            pending = None
        # Evaluate before saving: a run killed while evaluating resumes before this step and
        # evaluates it again, so no evaluation (nor best candidate) is ever skipped.
        if evaluate_now:
            evaluate_and_keep_best(step, state)
        if save_now:
            ckpts.save(step, state)
        # Every process asks at every step (the multi-process protocol needs it); the last step
        # goes on to its evaluation and save first, so that a re-run only evaluates.
        if preempt.requested(step) and step != setup.total_steps:
            if pending is not None:  # Never keep a non-finite state.
                _fetch_checked(*pending)
            _stop_preempted(ckpts, step, state, preempt.reason)
    if pending is not None:
        _fetch_checked(*pending)
    log(f"trained {setup.total_steps - start_step} steps in {time.perf_counter() - t0:.1f}s")
    if config.eval_at_end:
        evaluate_and_keep_best(setup.total_steps, state)
    ckpts.save(setup.total_steps, state)
    if preempt.reason is not None:
        _stop_preempted(ckpts, setup.total_steps, state, preempt.reason)
    return state


def _stop_preempted(ckpts, step: int, state, reason: str) -> None:
    """Saves `step` (unless saved), waits for it to commit and raises `preemption.Preempted`."""
    ckpts.save(step, state)
    ckpts.wait()
    log(
        f"preempted: {reason} at step {step}; checkpoint {step} committed; "
        "re-run the same command to continue"
    )
    raise preemption.Preempted(step, reason)


def final_evaluation(
    setup, run_evals: Evals, state, ckpts, writer, workdir: str, preempt=None, *, estimate=None
) -> dict:
    """Every entry of `config.evals` on the selected checkpoint (the best one, else the last),
    each written to `eval_<prefix>.json`, then the report to `final.json`; a finished workdir's
    stored report is reused. With `preempt` (a `preemption.Preemption`), a preemption stops it
    before its next batch (`_stop_in_final_evaluation`), with no report written. `estimate`
    (a `precise_bn.BatchStatsEstimator`, else one is made) gives the variables' BatchNorm
    statistics for evaluation."""
    best = ckpts.best_record()
    restored = ckpts.restore_best_variables(setup.abstract_variables()) if best else None
    fallback = None
    if restored is not None:
        variables, _ = restored
        checkpoint = {"kind": "best", "step": best["step"], best["metric"]: best["value"]}
    else:  # Nothing was ever evaluated (or every value was NaN, or best/ is damaged): the last.
        variables = state.variables
        checkpoint = {"kind": "latest", "step": int(state.step)}
        fallback = _fallback_note(ckpts, checkpoint["step"])
    # What the report depends on besides the checkpoint: every entry and the eval settings.
    evaluated = {
        "entries": [[e.prefix, e.dataset, e.split] for e in run_evals.entries],
        "eval": config_migration.report_eval_settings(setup.config),
    }
    stored = read_final(workdir)
    done = (
        stored is not None
        and stored["checkpoint"] == checkpoint
        and stored.get("evaluated") == json.loads(json.dumps(evaluated))
    )
    if sharding.process_0_decides(done):  # Every process takes the same branch.
        log(f"final evaluation of this checkpoint already done ({workdir}/{FINAL_FILE}):")
        results = stored["results"] if stored is not None else {}  # Process 0 has them.
        report(results, checkpoint)
        return results
    writer.drop(lambda r: r.get("final", False))  # Of a final evaluation that was cut short.
    remove_final(workdir)  # Of another checkpoint or settings: a stopped evaluation leaves none.
    info = {"checkpoint": checkpoint, "selected_by": run_evals.selection.info}
    variables = (estimate or precise_bn.BatchStatsEstimator(setup))(variables)
    results = {}
    before_batch = _stop_in_final_evaluation(preempt, ckpts, int(state.step)) if preempt else None
    for entry in run_evals.entries:
        result = evaluation.evaluate(
            setup, variables, entry, detailed=True, before_batch=before_batch
        )
        eval_writer.write(
            result,
            setup.config,
            final=True,
            workdir=workdir,
            writer=writer,
            step=checkpoint["step"],
            info=info,
        )
        results[entry.prefix] = {"dataset": entry.dataset, "split": entry.split, **result.summary}
    final = {"checkpoint": checkpoint, "evaluated": evaluated, "results": results}
    write_final(workdir, {**final, **({"fallback": fallback} if fallback else {})})
    report(results, checkpoint)
    return results


def _stop_in_final_evaluation(preempt, ckpts, step: int):
    """The check before each batch of the final evaluation: raises `preemption.Preempted` when
    the run is asked to stop. The batches continue the training steps' sync points (step + 1,
    ...), so with several processes every one stops before the same batch."""
    sync_points = itertools.count(step + 1)

    def before_batch() -> None:
        if preempt.requested(next(sync_points)):
            log(
                f"preempted: {preempt.reason} during the final evaluation; "
                f"{ckpts.last_committed()} No final report was written: re-run the same command "
                "to finish the final evaluation"
            )
            raise preemption.Preempted(step, preempt.reason)

    return before_batch


def _fallback_note(ckpts, step: int) -> str | None:
    """Why the final evaluation takes the latest state, when the best checkpoint was damaged."""
    if ckpts.damaged_best is None:
        return None
    note = f"{ckpts.damaged_best}; the latest committed checkpoint, step {step}, was evaluated"
    log(f"warning: {note}")
    return note


def report(results: dict, checkpoint: dict) -> None:
    """Prints the checkpoint and each entry's MAE/RMSE against the mean-count baseline."""
    log(f"final evaluation of the {checkpoint['kind']} checkpoint: {checkpoint}")
    for prefix, r in results.items():
        ratio = r["mae"] / max(r["baseline_mae"], 1e-9)
        log(
            f"{prefix} ({r['dataset']} {r['split']}): MAE {r['mae']:.2f}  RMSE {r['rmse']:.2f}  |  "
            f"predicting the training mean count: MAE {r['baseline_mae']:.2f} (ratio {ratio:.2f})"
        )


def run_main(config, workdir: str, *, allow_config_change: Sequence[str] = ()) -> dict:
    """What `train.py` runs: build the synthetic data the run uses (first use), train, then
    report every evaluation against the mean baseline (`train_and_evaluate`'s arguments)."""
    sharding.maybe_initialize_distributed(config)  # Before any JAX call, the data build's too.
    run_evals = evals.parse(config)
    build_embedded_data(config, run_evals.datasets)
    return train_and_evaluate(config, workdir, run_evals, allow_config_change=allow_config_change)
