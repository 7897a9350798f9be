"""The tables predict.py writes, kept so that no counted input is lost.

A run appends the rows of each input to `counts.jsonl` and `counts.csv` as soon as that input is
counted (flushed and synced to disk), so a killed run keeps what it counted, and a re-run with
`resume=True` skips the inputs already in `counts.jsonl` (a last line cut by the kill is dropped).
The tables written whole (`counts.json` at the end, `failed.json` after each failure, both live
files at the start) go to a temporary file first and replace the old one in one `os.replace`: a
full disk or a kill leaves the previous file as it was, never a truncated one
(`crowdjax.storage.write_atomic`). In a cloud output folder (gs://...) the live files are
uploaded whole every few seconds and at the end (`crowdjax.storage.AppendedFile`): a killed run
keeps the inputs uploaded before it, and `resume` counts the others again.

Files in the output folder:
  counts.jsonl  one JSON record per image, video frame or stream frame: the journal that
                `resume` reads.
  counts.csv    file, frame, count, height, width, time of the same records (time: when a live
                stream's frame was read, ISO 8601 UTC; empty for files; `table_columns`: then,
                with test-time variants, spread, interval_low, interval_high, disagree, and per
                zone "zone:<name>" and "zone:<name>:per_m2").
  counts.json   all records as one JSON list (written when the run ends).
  failed.json   [{"file", "kind", "error"}] of the inputs that failed in this run.
"""

from __future__ import annotations

import csv
import io
import json
import os

from crowdjax import storage
from crowdjax.metric_writers import log

CSV_COLUMNS = ("file", "frame", "count", "height", "width", "time")
INTERVAL_COLUMNS = ("spread", "interval_low", "interval_high", "disagree")


def write_atomic(path: str, text: str) -> None:
    """Writes `text` (UTF-8) so that readers see the old file or the new one, never a part of
    either (`crowdjax.storage.write_atomic`)."""
    storage.write_atomic(path, text)


def table_columns(
    *, interval: bool = False, zones: tuple[str, ...] = (), per_m2: bool = False
) -> tuple[str, ...]:
    """The counts.csv columns: the base ones, the interval's (with test-time variants or an
    ensemble, `crowdjax.tta`), then per zone its count and, with areas, people per m^2."""
    columns = CSV_COLUMNS + (INTERVAL_COLUMNS if interval else ())
    for name in zones:
        columns += (f"zone:{name}",) + ((f"zone:{name}:per_m2",) if per_m2 else ())
    return columns


def _cell(record: dict, column: str) -> str:
    """One CSV cell of a record; empty where the record lacks it (e.g. an earlier run's)."""
    if column.startswith("zone:"):
        name, key = column[len("zone:") :], "count"
        if name.endswith(":per_m2"):
            name, key = name[: -len(":per_m2")], "per_m2"
        value = (record.get("zones") or {}).get(name, {}).get(key)
        return "" if value is None else f"{value:.4f}" if key == "per_m2" else f"{value:.3f}"
    if column in ("interval_low", "interval_high"):
        interval = record.get("interval")
        return "" if interval is None else f"{interval[column == 'interval_high']:.3f}"
    value = record.get(column)
    if value is None:
        return ""
    if column in ("count", "spread"):
        return f"{value:.3f}"
    return str(int(value)) if isinstance(value, bool) else str(value)


def csv_lines(records: list[dict], *, header: bool = False, columns=CSV_COLUMNS) -> str:
    """`records` as counts.csv rows of `columns` (with its header row if `header`)."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(columns)
    for r in records:
        writer.writerow([_cell(r, column) for column in columns])
    return out.getvalue()


def read_journal(path: str) -> list[dict]:
    """The records of a counts.jsonl; a last line cut short by a kill is dropped, with a warning.

    Raises:
      ValueError: a damaged line before the last (the file is not a journal of predict.py).
    """
    if not storage.exists(path):
        return []
    lines = storage.read_text(path).splitlines(keepends=True)
    records = []
    for number, line in enumerate(lines, 1):
        try:
            if not line.endswith("\n"):
                raise ValueError("no line end")
            records.append(json.loads(line))
        except ValueError as e:
            if number < len(lines):
                raise ValueError(f"{path}:{number}: not a record of predict.py ({e})") from e
            log(f"{path}: its last line was cut short (a killed run?); that input is counted again")
    return records


class CountTable:
    """The tables of one predict.py output folder (see the module doc).

    Args:
      output: the output folder (created).
      resume: keep the records of an earlier run (its inputs are then skipped); else start empty.
      columns: the counts.csv columns (`table_columns`).

    Attributes:
      records: every record of the table, the earlier run's first.
      failures: {"file", "kind", "error"} of the inputs that failed in this run.
    """

    def __init__(self, output: str, *, resume: bool = False, columns=CSV_COLUMNS):
        storage.makedirs(output)
        self.output, self.columns = output, tuple(columns)
        journal = self._path("counts.jsonl")
        if resume and not storage.exists(journal) and storage.exists(self._path("counts.csv")):
            log(f"{output}: no counts.jsonl to resume from (an older predict.py?); counting all")
        self.records = read_journal(journal) if resume else []
        self.failures: list[dict] = []
        # Both live files restart from the records kept, consistent even where a kill fell
        # between their appends.
        write_atomic(journal, "".join(_json_line(r) for r in self.records))
        write_atomic(
            self._path("counts.csv"), csv_lines(self.records, header=True, columns=self.columns)
        )
        write_atomic(self._path("failed.json"), "[]\n")
        self._journal = storage.AppendedFile(journal)
        self._csv = storage.AppendedFile(self._path("counts.csv"))

    def _path(self, name: str) -> str:
        return os.path.join(self.output, name)

    @property
    def counted(self) -> set[str]:
        """The `file` of every record: inputs a resumed run skips."""
        return {r["file"] for r in self.records}

    def add(self, records: list[dict]) -> None:
        """Appends the records of one input to both live files and syncs them to disk."""
        for f, text in (
            (self._journal, "".join(_json_line(r) for r in records)),
            (self._csv, csv_lines(records, columns=self.columns)),
        ):
            f.write(text)
            f.flush(sync=True)
        self.records += records

    def fail(self, file: str, kind: str, error: str) -> None:
        """Records an input that failed, and rewrites failed.json."""
        self.failures.append({"file": file, "kind": kind, "error": error})
        write_atomic(self._path("failed.json"), json.dumps(self.failures, indent=1) + "\n")

    def close(self) -> None:
        """Closes the live files (what they hold stays)."""
        self._journal.close()
        self._csv.close()

    def finish(self) -> None:
        """Writes counts.json from every record and closes the live files."""
        self.close()
        write_atomic(self._path("counts.json"), json.dumps(self.records, indent=1) + "\n")


def _json_line(record: dict) -> str:
    return json.dumps(record) + "\n"
