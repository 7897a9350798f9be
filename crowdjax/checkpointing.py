"""Orbax checkpoints: the latest N training states, and the best one by validation MAE.

Two managers under the workdir keep the two policies apart:
  <workdir>/checkpoints/<step>   latest `keep` states (resume after a kill continues from here)
  <workdir>/best/<step>          the single state with the lowest validation MAE
A state is the whole `TrainState` pytree (step, params, model state, optimizer state, rng), so a
resumed run continues the same optimisation; the data order follows from (seed, step).
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp


def _manager(directory: str, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


class Checkpoints:
    """Latest-N and best-by-MAE checkpoints of a training run."""

    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
        self._best_file = os.path.join(workdir, "best_metrics.json")
        self.latest = _manager(
            os.path.join(workdir, "checkpoints"),
            ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=async_save
            ),
        )
        self.best = _manager(
            os.path.join(workdir, "best"),
            ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics["mae"],
                best_mode="min",
                keep_checkpoints_without_metrics=False,
                create=True,
                enable_async_checkpointing=async_save,
            ),
        )

    def save(self, step: int, state) -> None:
        self.latest.save(step, args=ocp.args.StandardSave(state), force=True)

    def save_if_best(self, step: int, state, mae: float) -> bool:
        """Saves `state` when its validation MAE is the best so far; returns whether it was."""
        best = self.best_metrics()
        if best is not None and mae >= best["mae"]:
            return False
        self.best.save(
            step, args=ocp.args.StandardSave(state), metrics={"mae": float(mae)}, force=True
        )
        if jax.process_index() == 0:
            with open(self._best_file, "w") as f:
                json.dump({"step": int(step), "mae": float(mae)}, f)
        return True

    def best_metrics(self) -> dict | None:
        """{"step", "mae"} of the best checkpoint so far (survives restarts), or None."""
        if not os.path.exists(self._best_file):
            return None
        with open(self._best_file) as f:
            return json.load(f)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore_latest(self, abstract_state):
        """Restores the latest state into the shardings/dtypes of `abstract_state`, or None."""
        step = self.latest.latest_step()
        if step is None:
            return None
        return self.latest.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def restore_state(path: str, abstract_state):
    """Restores a state from a workdir, a manager directory or one step directory.

    Accepts `<workdir>` (best checkpoint if any, else latest), `<workdir>/checkpoints`,
    `<workdir>/best`, or a step directory such as `<workdir>/checkpoints/120`.
    """
    path = os.path.abspath(path)
    candidates = [os.path.join(path, "best"), os.path.join(path, "checkpoints"), path]
    for directory in candidates:
        if not os.path.isdir(directory):
            continue
        manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(read_only=True)
        )
        step = manager.best_step() if directory.endswith("best") else manager.latest_step()
        if step is None:
            step = manager.latest_step()
        if step is not None:
            return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    # A single step directory (as written by a manager: <step>/default/...).
    item = os.path.join(path, "default") if os.path.isdir(os.path.join(path, "default")) else path
    if os.path.isdir(item):
        return ocp.StandardCheckpointer().restore(item, abstract_state)
    raise FileNotFoundError(f"{path}: no checkpoint found")


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a concrete or abstract state, for restoring."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
