"""One run per workdir: `<workdir>/lock.json` names the run that holds it.

Two training runs on one workdir would corrupt both (each rewrites `metrics.jsonl`, each
checkpoint manager deletes the other's steps, both overwrite `best/`). A run takes the lock
before it writes anything and releases it when it ends, also on an exception:

  with workdir_lock.hold(workdir):
      ...

The lock file is created atomically (`crowdjax.storage.create_new`: O_CREAT | O_EXCL on a local
or shared filesystem, a conditional upload in a gs:// bucket) and holds the holder's host, PID and
start time. A second run is refused with a `WorkdirLockedError` that names the holder. A lock whose
process is gone (same host, no such PID: a run killed with SIGKILL, a VM that rebooted with the
same name) is stale: it is taken over with a warning. A lock from another host is never judged
stale from here (whether its process lives can only be seen on its own host): the run is refused,
and the error names the holder and says how to take the workdir over (remove the lock file once
no run on that host uses the workdir, e.g. a preempted VM that will not come back). Only process 0
of a multi-process run holds the lock, and every process takes its outcome.

Reading a workdir (eval.py, predict.py) needs no lock.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import time

import jax

from crowdjax import sharding, storage
from crowdjax.metric_writers import log

LOCK_FILE = "lock.json"


class WorkdirLockedError(RuntimeError):
    """Another run holds the workdir's lock."""


def lock_path(workdir: str) -> str:
    return os.path.join(workdir, LOCK_FILE)  # A string join: gs://bucket/run/lock.json too.


def _holder_description(holder: dict | None, path: str) -> str:
    if holder is None:
        return f"{path} exists but cannot be read"
    return f"host {holder.get('host')!r}, PID {holder.get('pid')}, started {holder.get('started')}"


def _read_holder(path: str) -> dict | None:
    """The lock's record; None when it cannot be read (e.g. its holder is writing it now)."""
    for _ in range(3):  # The holder writes a few bytes right after creating the file.
        try:
            return json.loads(storage.read_text(path))
        except FileNotFoundError:
            raise
        except (OSError, ValueError):
            time.sleep(0.1)
    return None


def _process_is_gone(pid: int) -> bool:
    """Whether no process with `pid` exists on this host (a process of another user exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def is_stale(holder: dict | None) -> bool:
    """Whether `holder` (a lock record) is a run of this host whose process is gone."""
    if holder is None or holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    return isinstance(pid, int) and pid > 0 and _process_is_gone(pid)


def _create(path: str) -> bool:
    """Creates the lock file with this process's record; False when it exists already."""
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return storage.create_new(path, json.dumps(record))


def acquire(workdir: str) -> None:
    """Takes the workdir's lock for this process (process 0 only; see the module docstring).

    Raises:
      WorkdirLockedError: a live run (or a run of another host) holds it.
    """
    storage.makedirs(workdir)
    path = lock_path(workdir)
    if _create(path):
        return
    try:
        holder = _read_holder(path)
    except FileNotFoundError:  # Released between our attempt and the read.
        holder = None
        if _create(path):
            return
    if is_stale(holder):
        # Remove it only if it is still the stale record (not one a racing run just wrote).
        with contextlib.suppress(FileNotFoundError):
            if _read_holder(path) == holder:
                storage.remove(path)
        if _create(path):
            log(
                f"warning: {path}: taking over a stale lock, its run is gone "
                f"({_holder_description(holder, path)})"
            )
            return
        holder = _read_holder(path)
    here = holder is not None and holder.get("host") == socket.gethostname()
    removal = (
        "If that process is not a run on this workdir, remove the file."
        if here
        else "Its process cannot be checked from this host: if no run on that host uses this "
        f"workdir any more (e.g. a preempted VM that will not come back), take the workdir over "
        f"by removing the file ({_removal_command(path)}) and starting again."
    )
    raise WorkdirLockedError(
        f"{workdir}: another run holds this workdir ({_holder_description(holder, path)}); "
        f"refusing to start a second run on it. {removal}"
    )


def release(workdir: str) -> None:
    """Removes the lock if this process holds it."""
    path = lock_path(workdir)
    with contextlib.suppress(FileNotFoundError):
        holder = _read_holder(path) or {}
        if (holder.get("host"), holder.get("pid")) == (socket.gethostname(), os.getpid()):
            storage.remove(path)


def _removal_command(path: str) -> str:
    return f"rm {path}" if storage.is_local(path) else f"delete the object {path}"


@contextlib.contextmanager
def hold(workdir: str):
    """Holds the workdir's lock for the block (process 0 takes it; every process is refused
    alike, so none is left waiting for the others)."""
    error = None
    if jax.process_index() == 0:
        try:
            acquire(workdir)
        except WorkdirLockedError as e:
            error = e
    if not sharding.process_0_decides(error is None):
        raise error or WorkdirLockedError(f"{workdir}: another run holds this workdir")
    try:
        yield
    finally:
        if jax.process_index() == 0:
            release(workdir)
