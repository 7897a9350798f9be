"""Orbax checkpoints: the latest N training states, and the best one by the selection metric.

Two managers under the workdir keep the two policies apart:
  <workdir>/checkpoints/<step>   latest `keep` states (resume after a kill continues from here)
  <workdir>/best/<step>          the single state with the best selection metric (lowest
                                 validation MAE by default), saved with that metric
Each checkpoint holds three items, so a reader restores only what it needs:
  variables   {"params", **model_state}: all that evaluation, prediction and `init_from` read
  opt_state   {optimizer group: optax state}: only a resumed run reads it
  train       {"step", "rng"}
The best checkpoint's metric is stored by orbax inside that checkpoint, so "which step is best"
is only ever read from a committed checkpoint. `<workdir>/best_metrics.json` repeats it for
people, written after the checkpoint is committed.

What a run survives: a state with a non-finite parameter or model-state value is never saved
(`save` and `save_if_best` raise FloatingPointError instead); the temporary directories an
interrupted save left (`<step>.orbax-checkpoint-tmp-*`) are removed when a run opens its
checkpoints; a latest checkpoint that cannot be restored is moved to
`<workdir>/damaged_checkpoints/<step>` with a warning, and the run resumes from the one before
(when no step restores, nothing is moved and the error is raised). A best checkpoint that
cannot be read (its stored metric, orbax reads it on opening) or restored (by the final
evaluation) is moved to `<workdir>/damaged_checkpoints/best_<step>` with a warning
(`Checkpoints.damaged_best` says so), and the final evaluation falls back to the latest
committed state. Readers (eval.py, predict.py: `restore_variables`) move nothing: a damaged
checkpoint is a `DamagedCheckpointError` naming it and the checkpoint to use instead.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from crowdjax import sharding, storage
from crowdjax.metric_writers import log
from crowdjax.models import published
from crowdjax.run import TrainState, split_variables


def _save_args(state: TrainState) -> ocp.args.Composite:
    return ocp.args.Composite(
        variables=ocp.args.StandardSave(state.variables),
        opt_state=ocp.args.StandardSave(state.opt_state),
        train=ocp.args.StandardSave({"step": state.step, "rng": state.rng}),
    )


# What orbax appends to a step directory's name until the save is committed.
TEMPORARY_MARK = ".orbax-checkpoint-tmp"
DAMAGED_DIR = "damaged_checkpoints"


@jax.jit
def _all_finite(tree) -> jax.Array:
    """True when every floating-point value of `tree` is finite: one reduction on the device."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves] or [jnp.array(True)]))


def remove_stale_temporaries(directory: str) -> list[str]:
    """Removes the temporary step directories that an interrupted save left in `directory` (a
    kill before orbax committed it), on process 0; returns their paths."""
    if jax.process_index() != 0 or not storage.isdir(directory):
        return []
    stale = sorted(
        os.path.join(directory, name)
        for name in storage.listdir(directory)
        if TEMPORARY_MARK in name
    )
    for path in stale:
        log(f"removing {path}: a checkpoint save that never committed")
        storage.rmtree(path)
    return stale


def _read_only(directory: str, item_handlers: dict | None = None) -> ocp.CheckpointManager:
    # The options orbax would otherwise reset, with a warning each, for a read-only manager.
    options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
    return ocp.CheckpointManager(directory, options=options, item_handlers=item_handlers)


class CheckpointMismatchError(ValueError):
    """A checkpoint's arrays do not fit the model or optimizer of the config."""


class DamagedCheckpointError(ValueError):
    """A checkpoint (or a manager's directory) that cannot be read, though it fits the config."""


def _damaged(where: str, error: Exception) -> DamagedCheckpointError:
    """The error for a damaged checkpoint `where` (a step or a manager's directory): what
    failed, and which checkpoint of the same run to use instead."""
    directory = (
        where if os.path.basename(where) in ("best", "checkpoints") else os.path.dirname(where)
    )
    workdir = os.path.dirname(directory)
    if os.path.basename(directory) == "best":
        instead = (
            "Use the run's latest checkpoint instead: eval.py --checkpoint=latest or "
            f"--checkpoint={workdir}/checkpoints, predict.py --checkpoint={workdir}/checkpoints."
        )
    else:
        instead = (
            f"Use another checkpoint of the run: an earlier step of {directory}, or "
            f"{workdir}/best (eval.py --checkpoint=best)."
        )
    return DamagedCheckpointError(
        f"{where}: damaged, it does not restore ({_first_words(error)}). {instead}"
    )


def _path_name(path) -> str:
    # Orbax's metadata has dict keys where the abstract state has namedtuple fields (optax
    # states): both become their names.
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


def _leaf_shapes(tree) -> dict[str, tuple]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path_name(p): tuple(leaf.shape) for p, leaf in leaves if hasattr(leaf, "shape")}


def _shape_differences(item: str, stored: dict, expected: dict) -> list[str]:
    lines = []
    for path in sorted(stored.keys() | expected.keys()):
        old, new = stored.get(path), expected.get(path)
        if old == new:
            continue
        if old is None:
            lines.append(f"{item}/{path}: not in the checkpoint (config: shape {new})")
        elif new is None:
            lines.append(f"{item}/{path}: only in the checkpoint (shape {old})")
        else:
            lines.append(f"{item}/{path}: checkpoint shape {old}, config shape {new}")
    return lines


def check_compatible(directory, step: int, abstract_state: TrainState, *, shown: int = 20) -> None:
    """Checks, before restoring, that checkpoint `step` of `directory` (a manager's directory)
    has the parameter, model-state and optimizer-state arrays of `abstract_state`.

    Compares the checkpoint's metadata (paths and shapes) with the abstract state, so that a
    changed model or optimizer is named here rather than in orbax's tree-structure errors. A
    checkpoint whose metadata cannot be read is left to the restore (which says what is wrong).

    Raises:
      CheckpointMismatchError: naming each differing path (its item, "variables" or
        "opt_state", first) with both shapes; at most `shown` of them, and how many more.
    """
    handlers = {"variables": ocp.StandardCheckpointHandler()}
    handlers["opt_state"] = ocp.StandardCheckpointHandler()
    handlers["train"] = ocp.StandardCheckpointHandler()  # Read by none; named, so orbax is quiet.
    try:
        metadata = _read_only(str(directory), handlers).item_metadata(step)
    except Exception:  # noqa: BLE001  (any damage: the restore, not this check, reports it)
        return
    lines, counts = [], []
    for item, abstract in (
        ("variables", abstract_state.variables),
        ("opt_state", abstract_state.opt_state),
    ):
        stored = metadata[item] if item in metadata else None
        if stored is not None:
            differing = _shape_differences(item, _leaf_shapes(stored), _leaf_shapes(abstract))
            lines += differing
            counts += [f"{len(differing)} in {item}"] if differing else []
    if not lines:
        return
    more = f"\n  ... and {len(lines) - shown} more" if len(lines) > shown else ""
    raise CheckpointMismatchError(
        f"{directory}/{step}: this checkpoint does not fit the config's model and optimizer "
        f"(differing arrays: {', '.join(counts)}):\n  "
        + "\n  ".join(lines[:shown])
        + more
        + "\nResume with the run's own config (its config.json), or start the new config in "
        "another --workdir (--config.init_from=<this workdir> takes the variables of a model "
        "of the same shapes, not its optimizer state)."
    )


class Checkpoints:
    """Latest-N and best-by-metric checkpoints of a training run.

    Args:
      workdir: the run directory.
      keep: latest checkpoints kept.
      metric: name of the selection metric (e.g. "val/mae"), stored with the best checkpoint.
      mode: "min" or "max": which values are better.
      async_save: write the latest checkpoints in the background.
    """

    def __init__(
        self,
        workdir: str,
        *,
        keep: int = 3,
        metric: str = "val/mae",
        mode: str = "min",
        async_save: bool = True,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"selection mode must be 'min' or 'max', got {mode!r}")
        self.metric, self.mode = metric, mode
        self._best_file = os.path.join(workdir, "best_metrics.json")
        self._damaged_dir = os.path.join(workdir, DAMAGED_DIR)
        # A sentence naming the best checkpoint this run set aside as damaged (None: none).
        self.damaged_best: str | None = None
        for name in ("checkpoints", "best"):
            remove_stale_temporaries(os.path.join(workdir, name))
        self.latest = ocp.CheckpointManager(
            storage.absolute(os.path.join(workdir, "checkpoints")),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=async_save
            ),
        )
        self.best = self._open_best(storage.absolute(os.path.join(workdir, "best")))

    def _best_manager(self, directory: str) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics["value"],
                best_mode=self.mode,
                keep_checkpoints_without_metrics=False,
                create=True,
                # Synchronous: the record of the best step exists only once it is committed.
                enable_async_checkpointing=False,
            ),
        )

    def _open_best(self, directory: str) -> ocp.CheckpointManager:
        """The best checkpoint's manager. Orbax reads every step's stored metric on opening: the
        steps whose metric cannot be read are set aside first."""
        try:
            manager, error = self._best_manager(directory), None
        except Exception as e:  # noqa: BLE001  (damage takes many forms: JSON, the OS)
            manager, error = None, e
        if sharding.process_0_decides(error is None):
            if error is not None:  # Only this process fails: not damage to set aside.
                raise error
            return manager
        steps = sorted(int(n) for n in storage.listdir(directory) if n.isdigit())
        damaged = [(step, e) for step in steps if (e := _unreadable_metric(directory, step))]
        if not damaged:  # Not a step's damage: nothing is moved.
            raise error or RuntimeError(f"{directory}: its checkpoints fail to open on process 0")
        for step, e in damaged:
            self._set_aside_best(directory, step, e)
        return self._best_manager(directory)

    def _set_aside_best(self, directory: str, step: int, error: Exception | str) -> None:
        """Moves a best checkpoint that cannot be read or restored to
        `damaged_checkpoints/best_<step>`, with a warning, and drops its record."""
        source = os.path.join(directory, str(step))
        why = error if isinstance(error, str) else _first_words(error)
        log(f"warning: the best checkpoint {source} does not restore")
        log(f"  {why}")
        target = self._set_aside(directory, step, prefix="best_")
        if jax.process_index() == 0 and storage.exists(self._best_file):
            storage.remove(self._best_file)  # It names the checkpoint set aside.
        self.damaged_best = f"the best checkpoint {source} is damaged ({why}); moved to {target}"

    def restore_best_variables(self, abstract_variables: dict) -> tuple[dict, dict] | None:
        """(variables, info) of the committed best checkpoint (see `restore_variables`), or None
        when there is none or it does not restore: then it is set aside (`damaged_best`)."""
        step = self.best.best_step()
        if step is None:
            return None
        try:
            restored, error = restore_variables(str(self.best.directory), abstract_variables), None
        except DamagedCheckpointError as e:
            restored, error = None, e
        if sharding.process_0_decides(error is None):
            if error is not None:  # Only this process fails: not damage to set aside.
                raise error
            return restored
        why = (error.__cause__ or error) if error is not None else "it fails on process 0"
        self._set_aside_best(str(self.best.directory), int(step), why)
        self.best.reload()
        return None

    def save(self, step: int, state: TrainState) -> None:
        """Saves a latest checkpoint (no-op when this step is already saved).

        Raises:
          FloatingPointError: a parameter or model-state value is not finite (nothing saved).
        """
        if step in self.latest.all_steps():
            return
        _check_savable(step, state)
        self.latest.save(step, args=_save_args(state), force=True)

    def last_committed(self) -> str:
        """A sentence naming the latest committed checkpoint (after the pending saves)."""
        self.latest.wait_until_finished()
        step = self.latest.latest_step()
        if step is None:
            return "No checkpoint of this run was committed."
        return (
            f"The last committed checkpoint is step {step} ({self.latest.directory / str(step)})."
        )

    def best_record(self) -> dict | None:
        """{"step", "metric", "value"} of the committed best checkpoint, or None."""
        step = self.best.best_step()
        if step is None:
            return None
        return {"step": int(step), "metric": self.metric, "value": self.best.metrics(step)["value"]}

    def save_if_best(self, step: int, state: TrainState, value: float) -> bool:
        """Saves `state` when `value` beats the best so far (NaN never does); returns whether.

        Every process takes process 0's decision.
        """
        best = self.best_record()
        better = bool(np.isfinite(value)) and (
            best is None or (value < best["value"] if self.mode == "min" else value > best["value"])
        )
        if not sharding.process_0_decides(better):
            return False
        if step in self.best.all_steps():  # Re-run of a step already saved as best.
            return True
        _check_savable(step, state)
        self.best.save(step, args=_save_args(state), metrics={"value": float(value)}, force=True)
        self.best.wait_until_finished()
        if jax.process_index() == 0:
            record = {"step": int(step), "metric": self.metric, "value": float(value)}
            storage.path(self._best_file).write_text(json.dumps(record))
        return True

    def restore_latest(self, abstract_state: TrainState) -> TrainState | None:
        """The latest state that restores, into the shardings/dtypes of `abstract_state`, or None.

        The committed steps are tried newest first. When an older one restores, the newer ones
        that did not (a damaged or missing file) are moved to `<workdir>/damaged_checkpoints/`
        with a warning naming each, so that the run saves those steps again.

        Raises:
          ValueError: no committed step restores (nothing is moved: a config that does not fit
            fails alike on every step, and its checkpoints are not damaged).
        """
        failed = []
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                state = self._restore(step, abstract_state)
            except Exception as e:  # Damage takes many forms (orbax, tensorstore, the OS).
                log(f"warning: the checkpoint {self._step_dir(step)} does not restore")
                log(f"  {_first_words(e)}")
                failed.append((step, e))
                continue
            for damaged, _ in failed:
                self._set_aside(str(self.latest.directory), damaged)
                self.latest.reload()
            return state
        if failed:
            step, error = failed[0]
            raise ValueError(
                f"{self.latest.directory}: no checkpoint restores; the newest, step {step}, "
                f"fails with {_first_words(error)}"
            ) from error
        return None

    def _restore(self, step: int, abstract_state: TrainState) -> TrainState:
        restored = self.latest.restore(
            step,
            args=ocp.args.Composite(
                variables=ocp.args.StandardRestore(abstract_state.variables),
                opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
                train=ocp.args.StandardRestore(
                    {"step": abstract_state.step, "rng": abstract_state.rng}
                ),
            ),
        )
        params, model_state = split_variables(restored["variables"])
        return TrainState(
            step=restored["train"]["step"],
            params=params,
            model_state=model_state,
            opt_state=restored["opt_state"],
            rng=restored["train"]["rng"],
        )

    def _step_dir(self, step: int) -> str:
        return os.path.join(str(self.latest.directory), str(step))

    def _set_aside(self, directory: str, step: int, *, prefix: str = "") -> str:
        """Moves a step that does not restore out of its manager's `directory` to
        `damaged_checkpoints/<prefix><step>` (kept to inspect); returns where. The caller
        reloads its manager."""
        source, name = os.path.join(directory, str(step)), f"{prefix}{step}"
        target, copy = os.path.join(self._damaged_dir, name), 1
        while storage.exists(target):  # Damaged again at the same step: keep each.
            target, copy = os.path.join(self._damaged_dir, f"{name}.{copy}"), copy + 1
        log(f"warning: skipping the damaged checkpoint {source}, moved to {target}")
        if jax.process_index() == 0:
            storage.makedirs(self._damaged_dir)
            storage.move(source, target)
        # No process reloads the step list before it is moved.
        sharding.barrier(f"damaged checkpoint {name} set aside")
        return target

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _unreadable_metric(directory: str, step: int) -> Exception | None:
    """The error reading the metric stored with checkpoint `step` as orbax's manager reads it
    (its "metrics" item; a missing one is no error), or None."""
    try:
        ocp.JsonCheckpointHandler(filename="metrics").restore(
            epath.Path(directory) / str(step) / "metrics"
        )
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001
        return e
    return None


def _first_words(error: Exception, limit: int = 300) -> str:
    # Tensorstore's messages end in kilobytes of JSON spec; the head names file and fault.
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[:limit] + " ..."


def _check_savable(step: int, state: TrainState) -> None:
    if not bool(_all_finite(state.variables)):
        raise FloatingPointError(
            f"non-finite parameter or model-state value at step {step}: not saved, training "
            "stopped. Lower the learning rate, check the data, or resume from the last "
            "checkpoint with a change."
        )


def initial_state(setup, ckpts: Checkpoints) -> tuple[TrainState, str]:
    """The state a run starts from, and where it came from.

    Order: the workdir's latest checkpoint ("resume": step, variables, optimizer states, rng),
    else `config.init_from` ("init_from": its variables only, so a second stage may change its
    optimizer), else the method's pretrained backbone ("pretrained"), else a fresh init
    ("scratch"). Every optimizer group starts fresh unless the run resumes.
    """
    config = setup.config
    abstract = setup.abstract_with_shardings()
    latest_step = ckpts.latest.latest_step()
    if latest_step is not None:
        check_compatible(ckpts.latest.directory, latest_step, abstract)
    restored = ckpts.restore_latest(abstract)
    if restored is not None:
        log(f"resuming from step {int(restored.step)} ({ckpts.latest.directory})")
        return restored, "resume"
    state = setup.init(jax.random.key(config.seed))
    if config.init_from:
        variables, info = restore_variables(
            config.init_from, setup.abstract_variables(), config=config
        )
        log(f"initialising variables from {info['path']} ({info['kind']} step {info['step']})")
        origin = "init_from"
    elif config.model.pretrained and setup.method.load_pretrained is not None:
        log(f"loading pretrained backbone weights from {config.model.pretrained}")
        variables = setup.method.load_pretrained(
            jax.device_get(state.variables), config.model.pretrained, config
        )
        variables = setup.replicate(variables)
        origin = "pretrained"
    else:
        return state, "scratch"
    params, model_state = split_variables(dict(variables))
    return (
        state.replace(
            params=params, model_state=model_state, opt_state=setup.init_opt_state(params)
        ),
        origin,
    )


def find_checkpoint(path: str, *, prefer: str = "best") -> tuple[str, int, str]:
    """(manager directory, step, kind) of the checkpoint that `path` names.

    Accepts a workdir (its best checkpoint if it has one and `prefer` is "best", else its
    latest), `<workdir>/best`, `<workdir>/checkpoints`, or one step directory such as
    `<workdir>/checkpoints/120`. kind is "best" or "latest".
    """
    if prefer not in ("best", "latest"):
        raise ValueError(f"prefer must be 'best' or 'latest', got {prefer!r}")
    path = storage.absolute(path).rstrip("/")
    if not storage.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint or workdir")
    parent, leaf = os.path.split(path)
    # One step directory (orbax writes its metadata there; a workdir named "3" is not one).
    if leaf.isdigit() and storage.exists(os.path.join(path, "_CHECKPOINT_METADATA")):
        kind = "best" if os.path.basename(parent) == "best" else "latest"
        return parent, int(leaf), kind
    order = ["best", "checkpoints"] if prefer == "best" else ["checkpoints", "best"]
    candidates = [(os.path.join(path, d), d) for d in order] + [(path, leaf)]
    for directory, name in candidates:
        if not storage.isdir(directory):
            continue
        try:  # Orbax reads every step's stored metrics here.
            manager = _read_only(directory)
        except Exception as e:  # noqa: BLE001  (damage takes many forms: orbax, JSON, the OS)
            raise _damaged(directory, e) from e
        best = name == "best"
        step = manager.best_step() if best else manager.latest_step()
        if step is None:
            step = manager.latest_step()
        if step is not None:
            return directory, int(step), "best" if best else "latest"
    raise FileNotFoundError(f"{path}: no checkpoint found (looked in {order} and the directory)")


def restore_variables(path: str, abstract_variables: dict, *, prefer: str = "best", config=None):
    """Restores only {"params", **model_state} of a checkpoint (see `find_checkpoint`).

    The optimizer state is not read, so a run trained with other optimizer settings (or
    another number of parameter groups) restores all the same. A published PyTorch file
    (.pth/.pt/.bin/.ckpt/.npz/.safetensors, see `crowdjax.models.published`) is imported for
    `config.method` instead.

    Returns:
      (variables, info) with info = {"path", "step", "kind"} and, for a best checkpoint, the
      selection "metric" value stored with it; for an imported file kind is "imported", step 0,
      and "layout" names its layout. The variables are placed like `abstract_variables`.
    """
    if published.is_published_file(path):
        if config is None:
            raise ValueError(f"{path}: importing a PyTorch checkpoint needs the config (method)")
        variables, layout = published.import_published(path, config, abstract_variables)
        variables = jax.tree.map(
            lambda v, a: jax.device_put(v, getattr(a, "sharding", None)),
            variables,
            abstract_variables,
        )
        info = {"path": storage.absolute(path), "step": 0, "kind": "imported", "layout": layout}
        return variables, info
    directory, step, kind = find_checkpoint(path, prefer=prefer)
    manager = _read_only(directory)
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(variables=ocp.args.StandardRestore(abstract_variables)),
        )
    except Exception as e:  # noqa: BLE001  (damage takes many forms: orbax, tensorstore, the OS)
        if not _fits(directory, step, abstract_variables):
            raise _mismatch(directory, step, e) from e
        raise _damaged(os.path.join(directory, str(step)), e) from e
    info = {"path": os.path.join(directory, str(step)), "step": step, "kind": kind}
    metrics = manager.metrics(step) if kind == "best" else None
    if metrics:
        info["value"] = metrics["value"]
    return restored["variables"], info


def _fits(directory: str, step: int, abstract_variables: dict) -> bool:
    """False when the stored variables' paths or shapes differ from `abstract_variables`; True
    when they match or cannot be read (then the checkpoint is damaged, not another model's)."""
    try:
        handlers = {"variables": ocp.StandardCheckpointHandler()}
        stored = _read_only(directory, handlers).item_metadata(step)["variables"]
    except Exception:  # noqa: BLE001  (unreadable metadata is damage too)
        return True
    if stored is None:
        return True
    return not _shape_differences(
        "variables", _leaf_shapes(stored), _leaf_shapes(abstract_variables)
    )


def _mismatch(directory: str, step: int, e: Exception) -> ValueError:
    return ValueError(
        f"{directory}/{step}: its variables do not fit this config's model (was it trained "
        f"with another method or model settings? eval.py reads the workdir's config.json "
        f"when --config is not given). Orbax says: {e}"
    )
