"""Does the input pipeline keep an accelerator fed? Crops/s of each paper config's training
pipeline on one CPU core and with grain's worker processes on every core, against the rate its
step needs on the accelerators of `crowdjax.step_cost.ACCELERATORS`.

  python benchmarks/pipeline_rates.py [--data=shanghaitech/part_b_512 --data_dir=DIR]
      [--costs=runs/paper_costs/paper_costs.json] [--crops=32] [--out=runs/pipeline_rates]

The pipeline is each config's own (crop, batch, augmentation, the method's labels: density maps,
distance classes, ...) reading `--data` in place of its data sets: real ShanghaiTech part B
(prepared with `python -m crowdjax.data.build shanghaitech/part_b_512 --manual_dir=...`) when it
is there, otherwise the embedded synthetic tiny data (small images: faster than real photos).
The table says which was used. The rate a step needs is global batch / step time, the step time
being FLOPs per step / (peak x utilisation) from benchmarks/paper_costs.py's JSON (`--costs`).
Configs with the same pipeline (data settings, method, batch) share a line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/ and benchmarks/ are imported by name.

from benchmarks import paper_costs  # noqa: E402
from crowdjax import step_cost  # noqa: E402
from crowdjax.data import datasets  # noqa: E402

REAL_DATA = "shanghaitech/part_b_512"
MIN_BATCHES = 6


TABLE = "pipeline_rates"  # The table's files in --out: TABLE + ".md", TABLE + ".json".


def crops_per_second(config, *, data: str, data_dir: str, crops: int, **options) -> tuple:
    """(crops/s of wall time, crops per CPU second of this process) of the config's training
    pipeline over at least `crops` crops and `MIN_BATCHES` batches (after two). With one read
    thread and no worker processes, the second is the rate of one idle core, whatever else the
    machine runs."""
    batch = int(config.train.global_batch_size)
    # Batches prepared ahead during the warm-up would be timed but not paid for: one ahead
    # (prefetch 1, the same steady-state rate), and many more timed than that.
    batches = max(MIN_BATCHES, -(-crops // batch))
    options = {"prefetch": 1, **options}
    iterator = step_cost.train_batches(config, data=data, data_dir=data_dir, **options)
    try:
        for _ in range(2):  # Warm-up: worker start, first reads.
            next(iterator)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            next(iterator)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        if hasattr(iterator, "close"):
            iterator.close()
    return batches * batch / wall, batches * batch / cpu


def pipeline_key(entry) -> str:
    """What decides the pipeline's work: the data settings (not the paths), method and batch."""
    data = json.loads(entry.config.data.to_json_best_effort())
    data.pop("data_dir", None)
    return json.dumps([data, entry.config.method, int(entry.config.train.global_batch_size)])


def needed_rates(costs_path: str) -> dict:
    """{first row name: {device: crops/s needed}} from paper_costs.py's JSON (empty if none)."""
    if not os.path.exists(costs_path):
        return {}
    with open(costs_path) as f:
        rows = json.load(f)
    return {
        r["rows"][0]: {d: r[f"crops_per_s_{d}"] for d in step_cost.ACCELERATORS}
        for r in rows
        if "error" not in r
    }


def most_needed(needed: dict, rows) -> dict:
    """{device: crops/s} of the line's most demanding row (rows of one pipeline can differ in
    their step: ASNet's NoAdapt step is 40% of its adapted rows')."""
    known = [needed[n] for n in rows if n in needed]
    return {d: max(k[d] for k in known) for d in known[0]} if known else {}


def markdown(lines: list[dict], data_label: str, processes: int) -> str:
    devices = list(step_cost.ACCELERATORS)
    header = (
        f"| rows | batch | crops per CPU s, 1 thread | crops/s, 1 thread "
        f"| crops/s, {processes} worker processes | "
        + " | ".join(f"needed on {d}" for d in devices)
        + " |"
    )
    out = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in lines:
        need = r["needed"]
        out.append(
            f"| {', '.join(r['rows'][:3])}{' ...' if len(r['rows']) > 3 else ''} | {r['batch']} "
            f"| {r['one_core_cpu']:.1f} | {r['one_core']:.1f} | {r['workers']:.1f} | "
            + " | ".join(f"{need[d]:.1f}" if d in need else "n/a" for d in devices)
            + " |"
        )
    out += [
        "",
        f"Data: {data_label}. Crops per CPU s: the one-thread pipeline's crops per CPU second of "
        "its process (the rate of an idle core). Needed: global batch / (FLOPs per step / (peak x "
        f"{step_cost.UTILISATION:.0%})), of the line's most demanding row; n/a: the config's "
        "cost was not measured.",
    ]
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=REAL_DATA)
    parser.add_argument("--data_dir", default=datasets.default_data_dir())
    parser.add_argument("--costs", default=os.path.join("runs", "paper_costs", "paper_costs.json"))
    parser.add_argument("--out", default=os.path.join("runs", "pipeline_rates"))
    parser.add_argument("--crops", type=int, default=32, help="timed crops per measurement")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default="", help="comma-separated papers (default: all)")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the table from <out>'s JSON and --costs"
    )
    args = parser.parse_args(argv)
    if args.render:
        with open(os.path.join(args.out, TABLE + ".json")) as f:
            saved = json.load(f)
        needed = needed_rates(args.costs)
        for line in saved["lines"]:
            line["needed"] = most_needed(needed, line["rows"])
        text = markdown(saved["lines"], saved["data"], saved["processes"])
        with open(os.path.join(args.out, TABLE + ".md"), "w") as f:
            f.write(text + "\n")
        print(text)
        return

    data, data_dir = args.data, args.data_dir
    if datasets.is_prepared(data, data_dir=data_dir):
        data_label = f"{data} (real images) in {data_dir}"
    else:
        print(f"{data} is not prepared in {data_dir}: using the embedded synthetic tiny data")
        data, data_dir = step_cost.TINY_DATA, ""
        data_label = f"{data} (embedded synthetic, small images: faster than real photos)"
    needed = needed_rates(args.costs)
    papers = [p for p in args.only.split(",") if p] or paper_costs.PAPERS
    groups: dict[str, list] = {}
    for entry in paper_costs.entries(papers):
        groups.setdefault(pipeline_key(entry), []).append(entry)
    os.makedirs(args.out, exist_ok=True)
    lines = []
    for entries in groups.values():
        config = entries[0].config
        rows = [name for e in entries for name in e.rows]
        one, one_cpu = crops_per_second(
            config, data=data, data_dir=data_dir, crops=args.crops, worker_threads=1
        )
        many, _ = crops_per_second(
            config,
            data=data,
            data_dir=data_dir,
            crops=args.crops,
            worker_threads=1,
            worker_processes=args.processes,
        )
        need = most_needed(needed, rows)
        lines.append(
            {
                "rows": rows,
                "batch": int(config.train.global_batch_size),
                "one_core": one,
                "one_core_cpu": one_cpu,
                "workers": many,
                "needed": need,
            }
        )
        print(
            f"{rows[0]}: {one_cpu:.1f} crops per CPU s, {one:.1f} crops/s on 1 thread, "
            f"{many:.1f} with workers (load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        text = markdown(lines, data_label, args.processes)
        with open(os.path.join(args.out, TABLE + ".md"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(args.out, TABLE + ".json"), "w") as f:
            record = {
                "data": data_label,
                "processes": args.processes,
                "load_average": os.getloadavg()[0],
                "lines": lines,
            }
            json.dump(record, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
