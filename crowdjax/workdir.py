"""A run's workdir: the files a run writes about itself, and where a run's workdir is by default.

  <workdir>/config.json          the resolved config (`write_run_info`, read back by `load_config`)
  <workdir>/config_changes.jsonl the changes a resumed run was allowed to make to it, one line per
                                 resume: {"from_step", "time", "changes": [{"field", "old", "new"}]}
  <workdir>/git_revision.txt     the revision of the code that ran
  <workdir>/final.json           the final evaluation's report (`read_final`, `write_final`), only
                                 while it describes the run's selected checkpoint, complete

The config of a run is the run's: a resumed run is compared with the stored config.json before
anything is written (`check_resume_config`), and a difference is refused with the list of the
differing fields, except the fields in `FREE_FIELDS` (where and how fast the run runs, how it is
evaluated) and those the user allows by prefix (train.py's `--allow_config_change`).

Checkpoints (`crowdjax.checkpointing`), metrics (`crowdjax.metric_writers`), evaluations
(`crowdjax.eval_writer`) and a method's preparation (`crowdjax.preparation`) write theirs; the
running training run's `lock.json` is `crowdjax.workdir_lock`'s.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from crowdjax import config_migration, registry, sharding, storage

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
REVISION_FILE = "git_revision.txt"
FINAL_FILE = "final.json"


def default_workdir(config_path: str) -> str:
    """workdirs/<config file stem>, e.g. workdirs/uot_qnrf."""
    stem = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
    return os.path.join("workdirs", stem)


# Fields (dotted prefixes) a resumed run may change without --allow_config_change: they say
# where the run's processes and data are, how fast its input is read, or how it is evaluated,
# never what it trains (batch i is a pure function of (seed, i), whatever the input settings).
FREE_FIELDS = (
    "distributed",  # The processes the run is spread over: a pod may come back with others.
    "data.data_dir",  # Where the data sets are stored, not which.
    "data.worker_threads",
    "data.prefetch",
    "data.worker_processes",
    "eval",  # Shared evaluation settings: final.json records them and is evaluated again.
    "eval_at_end",
)


class ConfigChangeError(ValueError):
    """A resumed run's config differs from the run's stored config in fields not allowed."""


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()  # A field one of the two configs lacks.


@dataclasses.dataclass(frozen=True)
class FieldChange:
    """One differing field: its dotted path, the stored value and the new one."""

    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.field}: {self.old!r} -> {self.new!r}"

    def record(self) -> dict:
        """The JSON record of the change (an absent side is left out)."""
        sides = {"old": self.old, "new": self.new}
        return {"field": self.field, **{k: v for k, v in sides.items() if v is not ABSENT}}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _as_json(config: ml_collections.ConfigDict) -> dict:
    # As config.json holds it: tuples become lists, so a value compares equal to its stored self.
    return json.loads(config.to_json_best_effort())


def _matches(field: str, prefixes: Sequence[str]) -> bool:
    return any(field == p or field.startswith(p + ".") for p in prefixes)


def config_changes(config: ml_collections.ConfigDict, workdir: str) -> list[FieldChange]:
    """The fields in which `config` differs from the workdir's stored config.json (with the
    fields older runs lack filled in, `crowdjax.config_migration`); [] when none is stored."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not storage.exists(path):
        return []
    stored = ml_collections.ConfigDict(json.loads(storage.read_text(path)), type_safe=False)
    old = _flatten(_as_json(config_migration.upgrade(stored)))
    new = _flatten(_as_json(config))
    changes = []
    for field in sorted(old.keys() | new.keys()):
        before, after = old.get(field, ABSENT), new.get(field, ABSENT)
        if before != after:
            changes.append(FieldChange(field, before, after))
    return changes


def _refused_changes(config, workdir: str, allow: Sequence[str]) -> list[FieldChange]:
    changes = config_changes(config, workdir)
    refused = [c for c in changes if not _matches(c.field, (*FREE_FIELDS, *allow))]
    if refused:
        fields = ",".join(c.field for c in refused)
        listed = "\n".join(f"  {c}" for c in refused)
        raise ConfigChangeError(
            f"{os.path.join(workdir, CONFIG_FILE)}: this workdir's run was trained with another "
            f"config; these fields differ (stored -> new):\n{listed}\n"
            "A resumed run keeps its config. To change these fields from the current step on "
            f"(recorded in {CHANGES_FILE}), pass --allow_config_change={fields}; "
            "to start a new run, use another --workdir."
        )
    return changes


def check_resume_config(
    config: ml_collections.ConfigDict, workdir: str, allow: Sequence[str] = ()
) -> list[FieldChange]:
    """Compares `config` with the workdir's stored config before anything is written.

    Process 0 reads the workdir; every process takes its decision.

    Args:
      config: the config the run is started with.
      workdir: the run's directory (its config.json, if any, is the run's config).
      allow: dotted field prefixes the user allows to change (e.g. "train.num_steps",
        "optimizer"), besides `FREE_FIELDS`.

    Returns:
      Every change (free and allowed), to be recorded by `write_run_info`.

    Raises:
      ConfigChangeError: a field outside `FREE_FIELDS` and `allow` differs; the message lists
        each such field with its stored and new value.
    """
    changes, error = [], None
    if jax.process_index() == 0:
        try:
            changes = _refused_changes(config, workdir, allow)
        except ConfigChangeError as e:
            error = e
    if not sharding.process_0_decides(error is None):
        raise error or ConfigChangeError(f"{workdir}: process 0 refused the config change")
    return changes


def write_run_info(
    config, workdir: str, *, step: int = 0, changes: Sequence[FieldChange] = ()
) -> None:
    """Writes the resolved config and the git revision of the code to the workdir.

    Args:
      config: the run's config.
      workdir: the run's directory.
      step: the step the run starts from (recorded with `changes`).
      changes: the config changes this start makes (`check_resume_config`), appended to
        config_changes.jsonl before config.json is rewritten.
    """
    if jax.process_index() != 0:
        return
    storage.makedirs(workdir)
    if changes:
        record = {
            "from_step": int(step),
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "changes": [c.record() for c in changes],
        }
        changes_file = storage.AppendedFile(os.path.join(workdir, CHANGES_FILE))
        changes_file.write(json.dumps(record) + "\n")
        changes_file.close()
    storage.path(os.path.join(workdir, CONFIG_FILE)).write_text(
        config.to_json_best_effort(indent=2)
    )
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
    storage.path(os.path.join(workdir, REVISION_FILE)).write_text(revision + "\n")


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
    if not storage.exists(path):
        raise FileNotFoundError(f"{path}: no run config here; pass --config=<config file>")
    config = ml_collections.ConfigDict(json.loads(storage.read_text(path)), type_safe=False)
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
    if not storage.exists(path):
        return None
    return json.loads(storage.read_text(path))


def remove_final(workdir: str) -> None:
    """Removes the final report (process 0) when a new final evaluation starts: until it is
    complete, no report describes the run."""
    path = os.path.join(workdir, FINAL_FILE)
    if jax.process_index() == 0 and storage.exists(path):
        storage.remove(path)


def write_final(workdir: str, report: dict) -> None:
    """Writes the final report atomically (process 0; a half-written report is never read)."""
    if jax.process_index() != 0:
        return
    storage.write_atomic(os.path.join(workdir, FINAL_FILE), json.dumps(report))
