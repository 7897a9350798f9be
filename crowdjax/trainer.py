"""The generic trainer: one jitted, data-parallel update for every method.

`train_and_evaluate(config, workdir)` builds the method named by `config.method` from the registry,
shards the batch over the `data` mesh axis (parameters replicated, state donated), trains with
progress lines and JSON-lines metrics, evaluates on the validation split, keeps the latest and the
best checkpoints, and resumes from the workdir after a kill: step, parameters, optimizer state and
the data order (batch i is a pure function of (seed, i)) all continue where they stopped.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from crowdjax import checkpointing, evaluation, registry, sharding
from crowdjax.data import pipeline
from crowdjax.metric_writers import MetricWriter, Progress, log


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
    """Adam/AdamW/SGD with an optional schedule.

    `weight_decay` with "adam" is the PyTorch-style L2 term added to the gradient (what the
    reference code's `torch.optim.Adam(weight_decay=...)` does); "adamw" decouples it.
    """
    lr = cfg.learning_rate
    schedule = cfg.get("schedule", "constant")
    if schedule == "cosine":
        lr = optax.cosine_decay_schedule(lr, max(total_steps, 1))
    elif schedule == "warmup_cosine":
        warmup = cfg.get("warmup_steps", 0)
        lr = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
    elif schedule == "step":
        lr = optax.exponential_decay(lr, cfg.decay_every, cfg.decay_factor, staircase=True)
    elif schedule != "constant":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    name, wd = cfg.get("name", "adam"), cfg.get("weight_decay", 0.0)
    if name == "adam":
        tx = optax.chain(optax.add_decayed_weights(wd), optax.adam(lr)) if wd else optax.adam(lr)
    elif name == "adamw":
        tx = optax.adamw(lr, weight_decay=wd)
    elif name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, cfg.get("momentum", 0.9)))
    else:
        raise ValueError(f"unknown optimizer {name!r}; use adam, adamw or sgd")
    if cfg.get("grad_clip_norm"):
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
    return tx


def default_train_step(state: TrainState, batch, *, method, model, config, tx):
    """One optimisation step: per-image losses averaged over the global batch."""
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        return method.loss_fn(params, state.model_state, batch, rng, model=model, config=config)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
    )
    return new_state, metrics


def init_state(method, model, tx, config, rng) -> TrainState:
    """A fresh state (params from the model's init, optimizer state, rng for the steps)."""
    init_rng, step_rng = jax.random.split(rng)
    variables = method.init_variables(model, init_rng, config)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=tx.init(params),
        rng=step_rng,
    )


class Setup:
    """Everything a run needs that follows from the config: method, model, mesh, jitted fns."""

    def __init__(self, config, *, devices=None):
        self.config = config
        self.method = registry.get_method(config.method)
        self.model = self.method.make_model(config)
        self.mesh = sharding.make_mesh(devices)
        self.total_steps = int(config.train.num_steps)
        self.tx = make_optimizer(config.optimizer, self.total_steps)
        self.predict = None  # Jitted prediction, made by evaluation on first use.
        self.replicated = sharding.replicated(self.mesh)
        self.batch_sharding = sharding.batch_sharded(self.mesh)
        init = functools.partial(init_state, self.method, self.model, self.tx, config)
        self.abstract_state = jax.eval_shape(init, jax.random.key(0))
        state_sharding = jax.tree.map(lambda _: self.replicated, self.abstract_state)
        self.state_sharding = state_sharding
        self.init = jax.jit(init, out_shardings=state_sharding)
        step_fn = self.method.train_step or default_train_step
        step_fn = functools.partial(
            step_fn, method=self.method, model=self.model, config=config, tx=self.tx
        )
        self.train_step = jax.jit(
            step_fn,
            in_shardings=(state_sharding, self.batch_sharding),
            out_shardings=(state_sharding, self.replicated),
            donate_argnums=(0,),
        )

    def abstract_with_shardings(self):
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            self.abstract_state,
            self.state_sharding,
        )


def _initial_state(setup: Setup, ckpts: checkpointing.Checkpoints) -> TrainState:
    """Resume order: workdir checkpoint -> init_from -> pretrained backbone -> scratch."""
    config = setup.config
    restored = ckpts.restore_latest(setup.abstract_with_shardings())
    if restored is not None:
        log(f"resuming from step {int(restored.step)} ({ckpts.latest.directory})")
        return restored
    state = setup.init(jax.random.key(config.seed))
    if config.get("init_from"):
        log(f"initialising parameters from {config.init_from}")
        source = checkpointing.restore_state(config.init_from, setup.abstract_with_shardings())
        return state.replace(params=source.params, model_state=source.model_state)
    pretrained = config.model.get("pretrained")
    if pretrained and setup.method.load_pretrained is not None:
        log(f"loading pretrained backbone weights from {pretrained}")
        params = setup.method.load_pretrained(jax.device_get(state.params), pretrained, config)
        params = jax.device_put(params, jax.tree.map(lambda _: setup.replicated, params))
        state = state.replace(params=params, opt_state=jax.jit(setup.tx.init)(params))
    return state


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


def write_run_info(config, workdir: str) -> None:
    """Writes the resolved config and the git revision of the code to the workdir."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        revision = "unknown"
    with open(os.path.join(workdir, "git_revision.txt"), "w") as f:
        f.write(revision + "\n")


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config.method` and evaluates it; returns the final metrics."""
    sharding.maybe_initialize_distributed(config)
    write_run_info(config, workdir)
    setup = Setup(config)
    batch_size = int(config.train.global_batch_size)
    sharding.check_batch_size(batch_size, setup.mesh)
    ckpts = checkpointing.Checkpoints(
        workdir, keep=config.train.get("keep_checkpoints", 3), async_save=True
    )
    writer = MetricWriter(workdir)
    state = _initial_state(setup, ckpts)
    start_step = int(state.step)
    stride = setup.method.output_stride(config)
    batches = pipeline.train_iterator(
        config.data,
        global_batch_size=batch_size,
        seed=config.seed,
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        output_stride=stride,
    )
    progress = Progress(
        total_steps=setup.total_steps, start_step=start_step, global_batch_size=batch_size
    )
    log_every = config.train.get("log_every", 50)
    eval_every = config.train.get("eval_every", 0)
    ckpt_every = config.train.get("checkpoint_every", 0)
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
        if ckpt_every and step % ckpt_every == 0 and step != setup.total_steps:
            ckpts.save(step, state)
        if eval_every and step % eval_every == 0 and step != setup.total_steps:
            _validate(setup, state, ckpts, writer, step)
    if pending is not None:
        _fetch_checked(*pending)
    ckpts.save(setup.total_steps, state)
    log(f"trained {setup.total_steps - start_step} steps in {time.perf_counter() - t0:.1f}s")
    results = {}
    if config.get("eval_at_end", True):
        results = _validate(setup, state, ckpts, writer, setup.total_steps)
        if config.eval.get("final_split") and config.eval.final_split != config.eval.split:
            results = evaluation.evaluate(
                setup, state, config.eval.final_split, workdir=workdir, writer=writer
            )
    ckpts.wait()
    ckpts.close()
    writer.close()
    return results


def _fetch_checked(step: int, metrics) -> dict:
    values = jax.device_get(metrics)
    _check_finite(step, values)
    return values


def _validate(setup, state, ckpts, writer, step: int) -> dict:
    results = evaluation.evaluate(setup, state, setup.config.eval.split, writer=writer, step=step)
    if ckpts.save_if_best(step, state, results["mae"]):
        log(f"step {step}: new best validation MAE {results['mae']:.3f}")
    return results


def load_config_json(workdir: str) -> dict:
    with open(os.path.join(workdir, "config.json")) as f:
        return json.load(f)


def default_workdir(config_path: str) -> str:
    """workdirs/<config file stem>, e.g. workdirs/uot_qnrf."""
    stem = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
    return os.path.join("workdirs", stem)


def prepare_data(config) -> None:
    """Builds the embedded synthetic data on first use; real data sets must be built by the user
    (their absence raises an error quoting the build command)."""
    from crowdjax.data import datasets

    for name in pipeline.dataset_names(config.data):
        if name.startswith("synthetic_crowd") and not datasets.is_prepared(
            name, data_dir=config.data.get("data_dir")
        ):
            if jax.process_index() == 0:
                log(f"building {name} (first use)...")
                datasets.build(name, data_dir=config.data.get("data_dir"))


def run_main(config, workdir: str) -> dict:
    """What `train.py` runs: train, then report the final split against the mean baseline."""
    prepare_data(config)
    results = train_and_evaluate(config, workdir)
    split = config.eval.get("final_split") or config.eval.split
    if results and config.eval.get("report_baseline", True):
        baseline = evaluation.mean_baseline_mae(config.data, split)
        log(
            f"{split}: MAE {results['mae']:.2f}  RMSE {results['rmse']:.2f}  |  "
            f"predicting the training mean count: MAE {baseline:.2f} "
            f"(ratio {results['mae'] / max(baseline, 1e-9):.2f})"
        )
        results["baseline_mae"] = baseline
    return results
