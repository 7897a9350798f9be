"""Metrics to a JSON-lines file (and TensorBoard when installed), the progress line, and `log`,
which prints a line of the run (`crowdjax.console` decides what else the console shows).

clu's writers need TensorFlow, so the workdir gets `metrics.jsonl`: one JSON object per line with
`step`, `split` and every logged value. Only process 0 writes. In a cloud workdir the file is
uploaded whole every few seconds and when the writer closes (`crowdjax.storage.AppendedFile`);
TensorBoard files are written for local workdirs only (its writers reach gs:// only through
TensorFlow, and would otherwise make a local `gs:` folder).
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from crowdjax import console, storage


def _tensorboard_writer(logdir: str):
    for module in ("tensorboardX", "torch.utils.tensorboard"):
        try:
            return __import__(module, fromlist=["SummaryWriter"]).SummaryWriter(logdir)
        except Exception:  # Not installed, or broken install: JSON lines are enough.
            continue
    return None


class MetricWriter:
    """Appends metrics to `<workdir>/metrics.jsonl` (process 0 only)."""

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self._path = os.path.join(workdir, "metrics.jsonl")
        self._file = None
        self._tb = None
        if self.enabled:
            storage.makedirs(workdir)
            self._file = storage.AppendedFile(self._path)
            if tensorboard and storage.is_local(workdir):
                self._tb = _tensorboard_writer(os.path.join(workdir, "tensorboard"))

    def drop(self, predicate) -> int:
        """Removes the lines already written for which `predicate(record)` holds; returns how
        many. A resumed run drops the steps after its checkpoint, which it trains and logs again,
        so no step is logged twice.

        A last line cut short (a kill or a full disk while it was written) is dropped too, with a
        warning naming the file (a resumed run logs the steps after its checkpoint again).

        Raises:
          ValueError: a damaged line before the last, naming the file and the line.
        """
        if not self.enabled:
            return 0
        self._file.close()
        lines = [line for line in storage.read_text(self._path).splitlines(True) if line.strip()]
        records = _read_records(self._path, lines)
        kept = [
            line
            for line, r in zip(lines, records, strict=True)
            if r is not None and not predicate(r)
        ]
        if kept != lines or (lines and not lines[-1].endswith("\n")):
            # A complete last record that lost its line end gets one (the next line follows).
            kept = [line if line.endswith("\n") else line + "\n" for line in kept]
            storage.write_atomic(self._path, "".join(kept))
        self._file = storage.AppendedFile(self._path)
        return sum(1 for r in records if r is not None and predicate(r))

    def write(self, step: int, metrics: dict, *, split: str = "train", **fields) -> None:
        """One line: {"step", "split" (train or an evaluation's prefix), **fields, **metrics}."""
        if not self.enabled:
            return
        values = {k: _to_python(v) for k, v in metrics.items()}
        record = {"step": int(step), "split": split, **fields, **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, float | int):
                    self._tb.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def _read_records(path: str, lines: list[str]) -> list[dict | None]:
    """The record of each line; None for a last line cut short (dropped with a warning)."""
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError as e:
            if number < len(lines):
                raise ValueError(
                    f"{path}:{number}: damaged line, not a metrics record ({e})"
                ) from e
            log(
                f"warning: {path}: its last line was cut short (a killed run or a full disk?); "
                "it is dropped"
            )
            records.append(None)
    return records


def _to_python(value):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()


class Progress:
    """Formats `step 120/3000 | 4.1 steps/s | 33 img/s | ETA 11m42s | loss 0.41 ...` lines."""

    def __init__(self, *, total_steps: int, start_step: int, global_batch_size: int):
        self.total_steps = total_steps
        self.batch = global_batch_size
        self._last_step, self._last_time = start_step, time.perf_counter()

    def line(self, step: int, metrics: dict) -> str:
        now = time.perf_counter()
        steps_per_s = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        eta = (self.total_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")
        terms = " ".join(f"{k} {float(v):.4g}" for k, v in sorted(metrics.items()))
        return (
            f"step {step}/{self.total_steps} | {steps_per_s:.2f} steps/s | "
            f"{steps_per_s * self.batch:.1f} img/s | ETA {duration(eta)} | {terms}"
        )


def duration(seconds: float) -> str:
    """`1h02m`, `4m05s`, or `?` for an unknown (infinite) time."""
    if not np.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def log(message: str) -> None:
    """Prints a line of the run (progress, evaluations, reports) on process 0, and appends it to
    the log file once `console.setup` has opened one."""
    if jax.process_index() == 0:
        print(message, flush=True)
        console.LINES.info(message, stacklevel=2)  # Names the caller's file in the log.
