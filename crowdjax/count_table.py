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
  counts.jsonl  one JSON record per image or video frame: the journal that `resume` reads.
  counts.csv    file, frame, count, height, width of the same records.
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

CSV_COLUMNS = ("file", "frame", "count", "height", "width")


def write_atomic(path: str, text: str) -> None:
    """Writes `text` (UTF-8) so that readers see the old file or the new one, never a part of
    either (`crowdjax.storage.write_atomic`)."""
    storage.write_atomic(path, text)


def csv_lines(records: list[dict], *, header: bool = False) -> str:
    """`records` as counts.csv rows (with its header row if `header`)."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_COLUMNS)
    for r in records:
        frame = "" if r["frame"] is None else r["frame"]
        writer.writerow([r["file"], frame, f"{r['count']:.3f}", r["height"], r["width"]])
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

    Attributes:
      records: every record of the table, the earlier run's first.
      failures: {"file", "kind", "error"} of the inputs that failed in this run.
    """

    def __init__(self, output: str, *, resume: bool = False):
        storage.makedirs(output)
        self.output = output
        journal = self._path("counts.jsonl")
        if resume and not storage.exists(journal) and storage.exists(self._path("counts.csv")):
            log(f"{output}: no counts.jsonl to resume from (an older predict.py?); counting all")
        self.records = read_journal(journal) if resume else []
        self.failures: list[dict] = []
        # Both live files restart from the records kept, consistent even where a kill fell
        # between their appends.
        write_atomic(journal, "".join(_json_line(r) for r in self.records))
        write_atomic(self._path("counts.csv"), csv_lines(self.records, header=True))
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
            (self._csv, csv_lines(records)),
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
