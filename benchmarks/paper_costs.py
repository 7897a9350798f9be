"""What every shipped paper config costs before it runs: one row per distinct config.

For every row of every table in configs/papers/*.py at paper scale (the paper's crop, batch and
schedule), compiles the training step on one device and reports XLA's numbers
(`crowdjax.step_cost.measure`): FLOPs per step and per evaluated image, the parameters, the
step's argument / output / temporary buffers (temporaries: the activations kept for the backward
pass), the compile time, the schedule's steps and total FLOPs, and the training hours on each
accelerator of `step_cost.ACCELERATORS` at `step_cost.UTILISATION` of its peak. Rows whose
resolved configs are the same but for paths (`step_cost.COST_FREE_FIELDS` other than the
schedule) share one line.

  nice -n 10 python benchmarks/paper_costs.py [--out=runs/paper_costs] [--only=uot,asnet]
      [--max_configs=N] [--cache=runs/cost_cache.json] [--cached_only]

Each config compiles once (about a minute on a 2-core CPU) and is cached in `--cache`; the table
is written after every config to <out>/paper_costs.{md,json}, so a run cut short keeps what
finished. One config of each config file goes first, then the variants.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/ is imported by name.

from crowdjax import paper_runs, step_cost  # noqa: E402

PAPERS = ("uot", "autoscale", "l2sm", "dkpnet", "asnet")
FITS_BYTES = 16e9  # The memory of the smallest accelerator we plan for (V100 / T4 16 GB).


@dataclasses.dataclass
class Entry:
    """A distinct config at paper scale and the table rows that run it."""

    paper: str
    rows: list
    config_file: str
    config: object
    key: str


TABLE = "paper_costs"  # The table's files in --out: TABLE + ".md", TABLE + ".json".


def entries(papers=PAPERS) -> list[Entry]:
    """Every paper row's config, merged by cost key and schedule; the first of each config file
    (and DKPNet variant) first, so a cut-short run covers every architecture."""
    merged: dict[tuple, Entry] = {}
    for paper in papers:
        table = paper_runs.load_paper(paper)
        for name, row in table.runs().items():
            run = paper_runs.row_run(paper, row, root="runs", scale="paper", weights_dir="weights")
            config = paper_runs.row_config(run)
            key = (step_cost.cache_key(config), int(config.train.num_steps))
            if key in merged:
                merged[key].rows.append(name)
                continue
            head = row.config + ":" + row.variant.split(",")[0]
            merged[key] = Entry(paper, [name], head, config, key[0])
    seen, first, rest = set(), [], []
    for entry in merged.values():
        (rest if entry.config_file in seen else first).append(entry)
        seen.add(entry.config_file)
    return first + rest


def row_numbers(entry: Entry, cost: dict) -> dict:
    """The table's numbers of one entry."""
    config = entry.config
    steps = int(config.train.num_steps)
    numbers = {
        "paper": entry.paper,
        "rows": entry.rows,
        "config": entry.config_file,
        "dtype": str(config.model.dtype),
        "steps": steps,
        "total_pflop": steps * cost["train_flops"] / 1e15,
        **cost,
        "fits_16gb": cost["train_peak_bytes"] <= FITS_BYTES,
    }
    for device in step_cost.ACCELERATORS:
        numbers[f"hours_{device}"] = step_cost.accelerator_hours(config, cost, device)
        numbers[f"crops_per_s_{device}"] = step_cost.crops_per_second_needed(config, cost, device)
    return numbers


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def markdown(results: list[dict], missing: list[str]) -> str:
    """The table: one line per config, then the configs not measured."""
    devices = list(step_cost.ACCELERATORS)
    header = (
        "| rows | batch | steps | TFLOP/step | GFLOP/eval image | params MiB | state GiB "
        "| arg GiB | out GiB | temp GiB | peak GiB | compile s | total PFLOP | "
        + " | ".join(f"{d} h" for d in devices)
        + " |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        if "error" in r:
            lines.append(f"| {', '.join(r['rows'])} | error: {r['error']} |")
            continue
        b = "x".join(str(n) for n in r["batch_shape"][:3])
        h, w = r["eval_shape"]
        peak = _gib(r["train_peak_bytes"]) + ("" if r["fits_16gb"] else " (>16 GB)")
        lines.append(
            f"| {', '.join(r['rows'])} | {b} {r['dtype']} | {r['steps']} "
            f"| {r['train_flops'] / 1e12:.3g} | {r['eval_flops'] / 1e9:.4g} ({h}x{w}) "
            f"| {r['param_bytes'] / 2**20:.1f} | {_gib(r['state_bytes'])} "
            f"| {_gib(r['argument_bytes'])} | {_gib(r['output_bytes'])} "
            f"| {_gib(r['temp_bytes'])} | {peak} | {r['compile_s']:.0f} "
            f"| {r['total_pflop']:.4g} | "
            + " | ".join(f"{r[f'hours_{d}']:.3g}" for d in devices)
            + " |"
        )
    peaks = "; ".join(
        f"{d}: {p['float32'] / 1e12:g} (float32) / {p['bfloat16'] / 1e12:g} (bfloat16) TFLOP/s"
        for d, p in step_cost.ACCELERATORS.items()
    )
    backends = {r["backend"] for r in results if "backend" in r}
    lines += [
        "",
        f"Hours: training only, at {step_cost.UTILISATION:.0%} of the dense peak ({peaks}). "
        "Memory: XLA's buffer assignment of the step on one device (backend "
        f"{', '.join(sorted(backends))}); batch is crops x height x width.",
    ]
    if missing:
        lines.append("Not measured (run cut short): " + "; ".join(missing))
    return "\n".join(lines)


def write(done: list[dict], todo: list[Entry], out: str) -> str:
    """Writes <out>/paper_costs.{json,md}: the measured entries in paper order, then the list of
    those not measured; returns the markdown."""
    position = {tuple(e.rows): n for n, e in enumerate(todo)}
    paper_order = lambda r: (
        PAPERS.index(todo[position[tuple(r["rows"])]].paper),
        position[tuple(r["rows"])],
    )
    done = sorted(done, key=paper_order)
    measured = {tuple(r["rows"]) for r in done}
    missing = [", ".join(e.rows) for e in todo if tuple(e.rows) not in measured]
    with open(os.path.join(out, TABLE + ".json"), "w") as f:
        json.dump(done, f, indent=1)
    text = markdown(done, missing)
    with open(os.path.join(out, TABLE + ".md"), "w") as f:
        f.write(text + "\n")
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("runs", "paper_costs"))
    parser.add_argument("--cache", default=os.path.join("runs", step_cost.CACHE_FILE))
    parser.add_argument("--only", default="", help="comma-separated papers (default: all)")
    parser.add_argument("--max_configs", type=int, default=0, help="0: all")
    parser.add_argument(
        "--cached_only", action="store_true", help="compile nothing: the table of what is cached"
    )
    args = parser.parse_args(argv)

    papers = [p for p in args.only.split(",") if p] or PAPERS
    todo = entries(papers)
    limit = args.max_configs or len(todo)
    cache = step_cost.CostCache(args.cache)
    os.makedirs(args.out, exist_ok=True)
    results: dict[str, dict] = {}
    for i, entry in enumerate(todo[:limit]):
        label = f"[{i + 1}/{limit}] {', '.join(entry.rows)}"
        if args.cached_only and not cache.has(entry.config):
            continue
        try:
            cost = cache.get(entry.config, progress=label)
            results[label] = row_numbers(entry, cost)
        except Exception as e:  # noqa: BLE001  A config that fails is reported, the rest run.
            traceback.print_exc()
            results[label] = {"rows": entry.rows, "error": f"{type(e).__name__}: {e}"[:200]}
        write(list(results.values()), todo, args.out)
        print(label, "done", flush=True)
    print(write(list(results.values()), todo, args.out))


if __name__ == "__main__":
    main()
