"""A run's workdir: the files a run writes about itself, and where a run's workdir is by default.

  <workdir>/config.json        the resolved config (`write_run_info`, read back by `load_config`)
  <workdir>/git_revision.txt   the revision of the code that ran
  <workdir>/final.json         the final evaluation's report (`read_final`, `write_final`)

Checkpoints (`crowdjax.checkpointing`), metrics (`crowdjax.metric_writers`), evaluations
(`crowdjax.eval_writer`) and a method's preparation (`crowdjax.preparation`) write theirs.
"""

from __future__ import annotations

import json
import os
import subprocess

import jax
import ml_collections

from crowdjax import config_migration, registry

CONFIG_FILE = "config.json"
REVISION_FILE = "git_revision.txt"
FINAL_FILE = "final.json"


def default_workdir(config_path: str) -> str:
    """workdirs/<config file stem>, e.g. workdirs/uot_qnrf."""
    stem = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
    return os.path.join("workdirs", stem)


def write_run_info(config, workdir: str) -> None:
    """Writes the resolved config and the git revision of the code to the workdir."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
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
    with open(os.path.join(workdir, REVISION_FILE), "w") as f:
        f.write(revision + "\n")


def load_config(workdir: str, *, trusted_method: str | None = None) -> ml_collections.ConfigDict:
    """The resolved config a run wrote to `<workdir>/config.json`, for one process: the run's
    multi-process settings are dropped (a lone eval.py would wait for the other processes), and
    fields that older runs lack get their defaults (`crowdjax.config_migration`).

    A workdir may come from anyone, so its method must be registered: a "module:ATTR" method
    would import (run) that module. `trusted_method`, a method the caller names, replaces it.

    Raises:
      FileNotFoundError: no config.json in `workdir`.
      ValueError: its method is not registered and no `trusted_method` is given.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no run config here; pass --config=<config file>")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f), type_safe=False)
    if trusted_method is not None:
        config.method = trusted_method
    else:
        try:
            registry.get_method(config.method, registered_only=True)
        except ValueError as e:
            trust = f"--trust_method={config.method} (predict.py, eval.py)"
            hint = (
                f". If you trust its code, name it yourself: {trust}"
                if ":" in config.method
                else ""
            )
            raise ValueError(f"{path}: {e}{hint}") from None
    config.distributed.update(auto=False, coordinator_address="", num_processes=1, process_id=0)
    return config_migration.upgrade(config)


def read_final(workdir: str) -> dict | None:
    """The stored final report {"checkpoint", "evaluated", "results"}, or None."""
    path = os.path.join(workdir, FINAL_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_final(workdir: str, report: dict) -> None:
    """Writes the final report atomically (process 0; a half-written report is never read)."""
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, FINAL_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(path + ".tmp", path)
