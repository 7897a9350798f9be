"""Reproduce a table of one of the papers: run (or resume) each row, compare with the paper.

  python -m crowdjax.reproduce --paper=uot --table=4 --root=runs/
  python -m crowdjax.reproduce --paper=dkpnet --table=2 --list            # rows, status, cost
  python -m crowdjax.reproduce --paper=uot --table=6 --print              # train.py commands
  python -m crowdjax.reproduce --paper=uot --table=4 --report             # finished rows only
  python -m crowdjax.reproduce --paper=uot --table=4 --scale=tiny         # a few CPU steps

Run from the repository root. Each row trains into `<root>/<scale>/<paper>/<row>` through
`crowdjax.trainer` as train.py does (`--print` gives each row's train.py command; running it
makes the same workdir), a finished row (its final.json, same config) is skipped, and the table
is printed and written to `<root>/<scale>/<paper>/table_<n>/table.{md,json}`: paper |
crowdjax | difference, each number with its protocol (`crowdjax.paper_report`). The tables are
data in `configs/papers/<paper>.py` (`crowdjax.paper_tables`). Before anything runs, the files the
rows need and the user supplies (ImageNet weights in `--weights_dir`, the data sets) are checked,
each missing one named with where it goes. `--list` prints each row's cost from XLA
(`crowdjax.step_cost`), cached in `<root>/cost_cache.json`.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from crowdjax import cli, console, paper_report, paper_runs, paper_tables, step_cost, trainer
from crowdjax.metric_writers import log


def plan(paper, table, *, root: str, scale: str, weights_dir: str, rows=()) -> list:
    """The table's rows (or `rows`) with the stage-I rows they need, each as a RowRun.

    Raises:
      ValueError: a row name the table does not have.
    """
    selected = list(table.rows)
    if rows:
        names = {r.name for r in table.rows}
        unknown = [r for r in rows if r not in names]
        if unknown:
            raise ValueError(
                f"Table {table.number} has no rows {unknown}; rows: {', '.join(sorted(names))}"
            )
        selected = [r for r in table.rows if r.name in rows]
    ordered = paper_tables.with_dependencies(selected, paper.runs())
    return [
        paper_runs.row_run(paper.key, r, root=root, scale=scale, weights_dir=weights_dir)
        for r in ordered
    ]


def status(run, config) -> str:
    """finished / trained partly / not started / no <scale> recipe / needs protocol."""
    if config is None:
        return f"no {run.scale} recipe"
    if run.row.needs:
        return "needs " + ", ".join(run.row.needs)
    if paper_runs.is_finished(run, config):
        return "finished"
    if os.path.exists(os.path.join(run.workdir, "config.json")):
        return "started"
    return "not started"


def _configs(runs) -> list:
    return [paper_runs.row_config(r) if paper_runs.has_scale(r) else None for r in runs]


def list_rows(runs, configs, *, root: str, with_cost: bool, in_table=None) -> str:
    """One block per row: label, name, variant and overrides, status, schedule and cost; a
    stage-I row the table's rows need (not in `in_table`, the table's row names) says so."""
    lines = []
    cache = step_cost.CostCache(os.path.join(root, step_cost.CACHE_FILE))
    for run, config in zip(runs, configs, strict=True):
        row = run.row
        needed = in_table is not None and row.name not in in_table
        label = f"stage I of this table's rows, {row.label}" if needed else row.label
        lines.append(f"{row.name}  [{label}]  {status(run, config)}")
        lines.append(f"  {run.command()}")
        if config is None:
            continue
        cost = cache.get(config, progress=run.row.name) if with_cost else None
        lines.append("  " + step_cost.describe(config, cost))
        for number in () if needed else row.reported:
            where = f"needs {number.needs}" if number.needs else f"{number.eval} {number.metric}"
            lines.append(f"    paper {number.column}: {number.value:g}  ({where})")
    return "\n".join(lines)


def run_rows(runs, configs) -> None:
    """Trains and evaluates each runnable row not finished, in order (stage I first)."""
    for run, config in zip(runs, configs, strict=True):
        if config is None or run.row.needs:
            log(f"{run.row.name}: {status(run, config)}; not run")
            continue
        if paper_runs.is_finished(run, config):
            log(f"{run.row.name}: finished ({run.workdir}/final.json)")
            continue
        log(f"{run.row.name}: {run.command()}")
        console.setup(run.workdir, process_id=config.distributed.process_id)
        trainer.run_main(config, run.workdir)


def reproduce(
    paper_key: str,
    table_number: str,
    *,
    root: str,
    scale: str = "paper",
    rows=(),
    weights_dir: str = "",
    mode: str = "run",
    with_cost: bool = True,
) -> str:
    """What the command does; returns what it prints. mode: run, list, print or report.

    Raises:
      MissingFilesError: (mode run) rows need files the user supplies; nothing was run.
    """
    paper = paper_runs.load_paper(paper_key)
    table = paper.table(table_number)
    weights_dir = weights_dir or os.path.join(root, "weights")
    runs = plan(paper, table, root=root, scale=scale, weights_dir=weights_dir, rows=rows)
    if mode == "print":
        return "\n".join(
            r.command() if paper_runs.has_scale(r) else f"# {r.row.name}: no {scale} recipe"
            for r in runs
        )
    configs = _configs(runs)
    if mode == "list":
        names = {row.name for row in table.rows}
        text = list_rows(runs, configs, root=root, with_cost=with_cost, in_table=names)
        left_out = [f"left out: {r.label}: {r.reason}" for r in table.left_out]
        return "\n".join([f"{paper.title}, Table {table.number}: {table.title}", text, *left_out])
    if mode == "run":
        todo = [
            (r, c)
            for r, c in zip(runs, configs, strict=True)
            if c is not None and not r.row.needs and not paper_runs.is_finished(r, c)
        ]
        missing = paper_runs.missing_files(todo, weights_dir=weights_dir)
        if missing:
            raise paper_runs.MissingFilesError(
                "the rows need files that are not there (nothing was run):\n  "
                + "\n  ".join(missing)
            )
        run_rows(runs, configs)
    in_table = [r for r in runs if r.row.name in {row.name for row in table.rows}]
    items = []
    for run, config in zip(runs, configs, strict=True):
        if run in in_table:
            items += paper_report.row_numbers(run, status(run, config))
    directory = os.path.join(root, scale, paper.key, f"table_{table.number}")
    return paper_report.write(directory, paper, table, scale, items, in_table)


def define_flags() -> None:
    """The command's flags (defined when run as a command, so importing defines none)."""
    flags.DEFINE_string("paper", None, "The paper: uot, autoscale, l2sm, dkpnet or asnet.")
    flags.DEFINE_string("table", None, "The table's number in the paper (e.g. 4).")
    flags.DEFINE_string(
        "root", "runs", "Where the rows' workdirs go: <root>/<scale>/<paper>/<row>."
    )
    flags.DEFINE_list("rows", [], "Only these rows (names as --list shows; default: all).")
    flags.DEFINE_enum("scale", "paper", paper_runs.SCALES, "paper, cpu (the :cpu recipes) or tiny.")
    flags.DEFINE_bool("list", False, "List the rows, their status and cost; run nothing.")
    flags.DEFINE_bool("print", False, "Print each row's train.py command; run nothing.")
    flags.DEFINE_bool("report", False, "Only collect the finished rows into the table.")
    flags.DEFINE_bool("cost", True, "--list: compile each row's steps for XLA's cost (cached).")
    flags.DEFINE_string("weights_dir", "", "ImageNet weights folder (default: <root>/weights).")
    flags.mark_flags_as_required(["paper", "table"])


def main(argv):
    del argv
    f = flags.FLAGS
    modes = [m for m in ("list", "print", "report") if f[m].value]
    if len(modes) > 1:
        raise SystemExit(f"choose one of --list, --print, --report (got {modes})")
    if not modes:  # A run logs to <root>/<scale>/<paper>/log.txt (each row to its workdir's).
        console.setup(os.path.join(f.root, f.scale, f.paper))
    try:
        text = reproduce(
            f.paper,
            f.table,
            root=f.root,
            scale=f.scale,
            rows=tuple(f.rows),
            weights_dir=f.weights_dir,
            mode=modes[0] if modes else "run",
            with_cost=f.cost,
        )
    except (paper_runs.MissingFilesError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    print(text)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
