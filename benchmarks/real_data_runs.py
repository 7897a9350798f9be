"""Runs every method's `:cpu` recipe on real ShanghaiTech, two at a time, and collects the table.

  python benchmarks/real_data_runs.py --root=workdirs/real_cpu \\
      [--manual_dir=../shared/data/ShanghaiTech] [--data_dir=...] [--parallel=2] [--only=uot,uot_l2]
  python benchmarks/real_data_runs.py --root=workdirs/real_cpu --table_only
  python benchmarks/real_data_runs.py --root=workdirs/real_cpu --calibrate=5 [--only=...]

First builds the data sets the recipes read (`shanghaitech/part_a_512`, `part_b_512`) from the
original release in `--manual_dir` when they are not prepared in `--data_dir`. Each run is
`train.py --config=<file>:<variant> --workdir=<root>/<run>`; its wall time and exit status are
recorded in `<root>/<run>/real_data_run.json` (one record per attempt). The script is resumable:
a run whose workdir holds its final report (`final.json`, written after the last evaluation) is
skipped; an unfinished one is launched again and resumes from its last checkpoint. At the end (or
with `--table_only`) `<root>/real_data_runs` (a markdown and a JSON file) gets one row per run
and evaluation: data sets, steps, wall time (every attempt in the run's log.txt, so a runner
killed with its session counts too), test MAE/RMSE, the mean-count baseline's MAE and
the ratio, and the selected step; then the with/without comparisons of each method's claim
(`PAIRS`); and every run's validations (MAE over the mean count's, finished runs or not) in the
JSON and as a picture, `real_data_runs.png` (with matplotlib, `pip install .[plots]`).

`--calibrate=N` instead trains each recipe N steps, one at a time, in `<root>/calibration/<run>`
(no evaluation) and writes `<root>/calibration/calibration.json`: per run the wall seconds and the
process's CPU seconds per step after the first (compiling) step, and the load average. On a
shared machine the CPU seconds per step are the better guide: two runs at a time on two otherwise
idle cores take about that many wall seconds per step each.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_FILE = "real_data_run.json"
TABLE = "real_data_runs"  # The table's files in the root: TABLE + ".md", TABLE + ".json".
FINAL_FILE = "final.json"  # crowdjax.workdir.FINAL_FILE (not imported: no jax in this script)
DATA_SETS = ("shanghaitech/part_a_512", "shanghaitech/part_b_512")


@dataclasses.dataclass(frozen=True)
class Run:
    """One recipe: its name (its workdir's), config file and variant, and what it trains on."""

    name: str
    config: str
    variant: str
    trains_on: str

    @property
    def config_arg(self) -> str:
        return f"configs/{self.config}.py:{self.variant}"


RUNS = (
    Run("uot", "uot_shb", "cpu", "B"),
    Run("uot_l2", "uot_shb", "cpu,l2", "B"),
    Run("autoscale_reg", "autoscale_reg_shb", "cpu", "B"),
    Run("autoscale_reg_fpn", "autoscale_reg_shb", "cpu,fpn", "B"),
    Run("autoscale_loc", "autoscale_loc_shb", "cpu", "B"),
    Run("autoscale_loc_fpn", "autoscale_loc_shb", "cpu,fpn", "B"),
    Run("l2sm", "l2sm_shb", "cpu", "B"),
    Run("l2sm_spn", "l2sm_shb", "cpu,spn", "B"),
    Run("l2sm_a_to_b", "l2sm_sha", "cpu", "A"),
    Run("asnet_fine", "asnet_sha_to_shb", "fine,cpu", "A (+ B unlabelled)"),
    Run("asnet_noadapt", "asnet_sha_to_shb", "noadapt,cpu", "A"),
    Run("dkpnet_va", "dkpnet_va_shanghaitech", "va,cpu", "A + B"),
    Run("dkpnet_jt", "dkpnet_va_shanghaitech", "jt,cpu", "A + B"),
)
# Each method's claim: (claim, with the piece the paper adds, without it).
PAIRS = (
    ("UOT loss vs pixel-wise L2 (same VGG19)", "uot", "uot_l2"),
    ("AutoScale regression: L2S vs FPN alone", "autoscale_reg", "autoscale_reg_fpn"),
    ("AutoScale localization: L2S vs FPN alone", "autoscale_loc", "autoscale_loc_fpn"),
    ("L2SM module vs SPN alone", "l2sm", "l2sm_spn"),
    ("ASNet FineAdapt vs NoAdapt (A -> B)", "asnet_fine", "asnet_noadapt"),
    ("DKPNet VA vs joint training", "dkpnet_va", "dkpnet_jt"),
)
SHORT = {
    "shanghaitech/part_a_512": "A",
    "shanghaitech/part_b_512": "B",
    "shanghaitech/part_a": "A (full size)",
    "shanghaitech/part_b": "B (full size)",
}


# ---------------------------------------------------------------------------------------------
# Running.


def is_finished(workdir: str) -> bool:
    """Whether the run's final report is written (its last evaluation is done)."""
    return os.path.exists(os.path.join(workdir, FINAL_FILE))


def attempts(workdir: str) -> list[dict]:
    """The runner's records of a workdir's attempts ([] when none)."""
    path = os.path.join(workdir, RUN_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["attempts"]


_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")
_LOG_COMMAND = "] command: "  # crowdjax.console's first line of every train.py start.


def log_wall_s(workdir: str) -> float | None:
    """Wall seconds of every attempt in the run's log.txt (each from its command line to its
    last line), or None without a log. A runner killed with its session records no attempt in
    RUN_FILE, but its train.py's lines are in the log."""
    path = os.path.join(workdir, "log.txt")
    if not os.path.exists(path):
        return None
    total, first, last = 0.0, None, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = _LOG_TIME.match(line)
            if not match:
                continue
            t = time.mktime(time.strptime(match.group(1)[:19], "%Y-%m-%d %H:%M:%S"))
            if _LOG_COMMAND in line:
                if first is not None:
                    total += last - first
                first = t
            last = t
    return total + (last - first if first is not None else 0.0)


def _record_attempt(workdir: str, attempt: dict) -> None:
    records = attempts(workdir) + [attempt]
    with open(os.path.join(workdir, RUN_FILE) + ".tmp", "w") as f:
        json.dump({"attempts": records}, f, indent=1)
    os.replace(os.path.join(workdir, RUN_FILE) + ".tmp", os.path.join(workdir, RUN_FILE))


def command(run: Run, workdir: str, data_dir: str, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        os.path.join(REPO, "train.py"),
        f"--config={os.path.join(REPO, run.config_arg)}",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        *extra,
    ]


def launch(run: Run, root: str, data_dir: str, extra: list[str]) -> dict:
    """Trains and evaluates one run (resuming its workdir), logging to `<workdir>/train.log`."""
    workdir = os.path.join(root, run.name)
    os.makedirs(workdir, exist_ok=True)
    cmd = command(run, workdir, data_dir, extra)
    start = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] start {run.name}: {' '.join(cmd[1:])}", flush=True)
    with open(os.path.join(workdir, "train.log"), "a") as log:
        rc = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    attempt = {"started": start, "wall_s": time.time() - start, "returncode": rc, "command": cmd}
    _record_attempt(workdir, attempt)
    state = "finished" if rc == 0 and is_finished(workdir) else f"failed (exit {rc})"
    print(f"[{time.strftime('%H:%M:%S')}] {run.name} {state} in {attempt['wall_s']:.0f} s")
    return attempt


def build_data(data_dir: str, manual_dir: str) -> None:
    """Prepares the data sets of the recipes (a no-op for the prepared ones)."""
    for name in DATA_SETS:
        subprocess.check_call(
            [sys.executable, "-m", "crowdjax.data.build", name, f"--manual_dir={manual_dir}"]
            + [f"--data_dir={data_dir}"],
            cwd=REPO,
        )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_STEP_LINE = re.compile(r"^step (\d+)/", re.MULTILINE)


def calibrate(run: Run, root: str, data_dir: str, steps: int, extra: list[str]) -> dict:
    """Trains `run` for `steps` steps (no evaluation) and times the steps after the first."""
    workdir = os.path.join(root, "calibration", run.name)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    flags = [f"--config.train.num_steps={steps}", "--config.train.log_every=1"]
    flags += ["--config.train.eval_every=0", "--config.train.checkpoint_every=0"]
    cmd = command(run, workdir, data_dir, [*flags, "--config.eval_at_end=False", *extra])
    log_path = os.path.join(workdir, "train.log")
    seen: dict[int, tuple[float, float]] = {}  # step -> (wall time, CPU seconds) when logged
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            with open(log_path) as f:
                for step in map(int, _STEP_LINE.findall(f.read())):
                    if step not in seen:
                        try:
                            seen[step] = (time.time(), _cpu_seconds(proc.pid))
                        except (FileNotFoundError, ProcessLookupError):
                            pass
            time.sleep(0.2)
    result = {"run": run.name, "config": run.config_arg, "returncode": proc.returncode}
    result["total_wall_s"] = time.time() - start
    result["load_average"] = os.getloadavg()[0]
    if len(seen) >= 2:
        first, last = min(seen), max(seen)
        result["wall_s_per_step"] = (seen[last][0] - seen[first][0]) / (last - first)
        result["cpu_s_per_step"] = (seen[last][1] - seen[first][1]) / (last - first)
        result["first_step_wall_s"] = seen[first][0] - start  # Start-up and compilation.
    print(json.dumps(result), flush=True)
    return result


# ---------------------------------------------------------------------------------------------
# The table.


def run_rows(run: Run, workdir: str) -> list[dict]:
    """One row per final evaluation of a finished run (none for an unfinished one)."""
    if not is_finished(workdir):
        return []
    with open(os.path.join(workdir, FINAL_FILE)) as f:
        final = json.load(f)
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    names = config["data"]["name"]
    names = names.split(",") if isinstance(names, str) else names
    trained = " + ".join(SHORT.get(n, n) for n in names)
    if config["data"].get("target"):
        trained += f" (target {SHORT.get(config['data']['target'], config['data']['target'])})"
    wall = log_wall_s(workdir)
    if wall is None:
        wall = sum(a["wall_s"] for a in attempts(workdir))
    rows = []
    for prefix, result in final["results"].items():
        baseline = result["baseline_mae"]
        rows.append(
            {
                "run": run.name,
                "config": run.config_arg,
                "trained_on": trained,
                "evaluation": prefix,
                "evaluated_on": f"{SHORT.get(result['dataset'], result['dataset'])} "
                f"{result['split']}",
                "steps": int(config["train"]["num_steps"]),
                "batch": int(config["train"]["global_batch_size"]),
                "wall_min": round(wall / 60, 1),
                "mae": result["mae"],
                "rmse": result["rmse"],
                "baseline_mae": baseline,
                "ratio": result["mae"] / baseline if baseline > 0 else float("nan"),
                "selected_step": int(final["checkpoint"]["step"]),
                "selected_by": final["checkpoint"]["kind"],
                "num_images": int(result.get("num_images", 0)),
            }
        )
    return rows


def _is_test(row: dict) -> bool:
    return row["evaluated_on"].endswith(" test")


def comparisons(rows: list[dict]) -> list[dict]:
    """Each claim's pair on every test evaluation both runs have."""
    out = []
    for claim, with_piece, without in PAIRS:
        a = {r["evaluation"]: r for r in rows if r["run"] == with_piece and _is_test(r)}
        b = {r["evaluation"]: r for r in rows if r["run"] == without and _is_test(r)}
        for prefix in [p for p in a if p in b]:
            out.append(
                {
                    "claim": claim,
                    "evaluated_on": a[prefix]["evaluated_on"],
                    "with": with_piece,
                    "with_mae": a[prefix]["mae"],
                    "without": without,
                    "without_mae": b[prefix]["mae"],
                    "difference": a[prefix]["mae"] - b[prefix]["mae"],
                }
            )
    return out


def collect(root: str, runs=RUNS) -> dict:
    rows = [row for run in runs for row in run_rows(run, os.path.join(root, run.name))]
    missing = [run.name for run in runs if not is_finished(os.path.join(root, run.name))]
    return {"rows": rows, "comparisons": comparisons(rows), "unfinished": missing}


def markdown(table: dict) -> str:
    lines = [
        "| run | trained on | evaluated on | steps (batch) | wall (min) | MAE | RMSE "
        "| mean-count MAE | ratio | selected step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        if not _is_test(r):
            continue
        lines.append(
            f"| {r['run']} | {r['trained_on']} | {r['evaluated_on']} | {r['steps']} ({r['batch']}) "
            f"| {r['wall_min']:.1f} | {r['mae']:.2f} | {r['rmse']:.2f} | {r['baseline_mae']:.2f} "
            f"| {r['ratio']:.2f} | {r['selected_step']} ({r['selected_by']}) |"
        )
    lines += ["", "| claim | evaluated on | with | without | MAE with - without |"]
    lines.append("|---|---|---|---|---|")
    for c in table["comparisons"]:
        lines.append(
            f"| {c['claim']} | {c['evaluated_on']} | {c['with']} {c['with_mae']:.2f} "
            f"| {c['without']} {c['without_mae']:.2f} | {c['difference']:+.2f} |"
        )
    if table.get("validation"):
        lines += ["", "| run | validation: step (MAE / mean-count MAE) |", "|---|---|"]
        for run, entry in table["validation"].items():
            for dataset, curve in entry["curves"].items():
                points = ", ".join(f"{step} ({ratio:.2f})" for step, ratio in curve)
                lines.append(f"| {run} ({dataset}) | {points} |")
    if table["unfinished"]:
        lines += ["", "Unfinished: " + ", ".join(table["unfinished"])]
    return "\n".join(lines) + "\n"


def validation_curves(workdir: str) -> dict[str, list[tuple[int, float]]]:
    """Every validation of a run, finished or not, as {data set: [(step, MAE / mean-count MAE)]}
    from its metrics.jsonl: whether a run was still improving when it stopped."""
    path = os.path.join(workdir, "metrics.jsonl")
    ratios: dict[str, dict[int, float]] = {}  # {data set: {step: ratio}}
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if record.get("data_split") != "validation" or not record.get("baseline_mae"):
                continue
            name = SHORT.get(record["dataset"], record["dataset"])
            # A step evaluated again (a re-run's final evaluation): the last line wins.
            ratios.setdefault(name, {})[int(record["step"])] = (
                record["mae"] / record["baseline_mae"]
            )
    return {name: sorted(by_step.items()) for name, by_step in ratios.items()}


def plot_curves(curves: dict[str, dict], path: str) -> bool:
    """Validation ratio against the fraction of each run's steps, one line per run and data set,
    written to `path` (PNG); False (nothing written) without matplotlib (`pip install
    .[plots]`) or without any validation yet."""
    if not curves:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(12, 5.5))
    lines = [
        (run if len(entry["curves"]) == 1 else f"{run} ({dataset})", entry["steps"], curve)
        for run, entry in curves.items()
        for dataset, curve in entry["curves"].items()
    ]
    colors = plt.get_cmap("tab20").colors  # One colour per line, up to 20.
    for i, (label, steps, curve) in enumerate(lines):
        style = "-" if i < len(colors) else "--"
        ax.plot(
            [s / steps for s, _ in curve],
            [r for _, r in curve],
            style,
            marker="o",
            color=colors[i % len(colors)],
            label=label,
        )
    ax.set_yscale("log")  # Ratios from 0.5 to several times the baseline.
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.axhline(0.5, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("fraction of the run's steps")
    ax.set_ylabel("validation MAE / mean-count MAE")
    ax.set_title("Real ShanghaiTech, :cpu recipes: held-out validation during training")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # Beside, not over.
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def collect_curves(root: str, runs=RUNS) -> dict:
    """{run: {"steps": its number of steps, "curves": validation_curves}} of runs with any."""
    out = {}
    for run in runs:
        workdir = os.path.join(root, run.name)
        curves = validation_curves(workdir)
        if curves:
            with open(os.path.join(workdir, "config.json")) as f:
                steps = int(json.load(f)["train"]["num_steps"])
            out[run.name] = {"steps": steps, "curves": curves}
    return out


def write_table(root: str, runs=RUNS) -> dict:
    table = collect(root, runs)
    table["validation"] = collect_curves(root, runs)
    plot_curves(table["validation"], os.path.join(root, TABLE + ".png"))
    with open(os.path.join(root, TABLE + ".json"), "w") as f:
        json.dump(table, f, indent=1)
    with open(os.path.join(root, TABLE + ".md"), "w") as f:
        f.write(markdown(table))
    return table


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.path.join(REPO, "workdirs", "real_cpu"))
    parser.add_argument(
        "--manual_dir", default=os.path.join(REPO, "..", "shared", "data", "ShanghaiTech")
    )
    parser.add_argument("--data_dir", default="", help="default: $CROWDJAX_DATA_DIR")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--table_only", action="store_true")
    parser.add_argument("--calibrate", type=int, default=0, help="time this many steps per run")
    parser.add_argument("extra", nargs="*", help="more train.py flags, after --")
    args = parser.parse_args(argv)
    runs = RUNS
    if args.only:
        known = {run.name: run for run in RUNS}
        unknown = [n for n in args.only.split(",") if n not in known]
        if unknown:
            parser.error(f"unknown runs {unknown}; known: {sorted(known)}")
        runs = tuple(known[n] for n in args.only.split(","))
    os.makedirs(args.root, exist_ok=True)
    data_dir = args.data_dir or os.environ.get(
        "CROWDJAX_DATA_DIR", os.path.expanduser("~/crowdjax_data")
    )
    if args.calibrate:
        build_data(data_dir, args.manual_dir)
        results = [calibrate(run, args.root, data_dir, args.calibrate, args.extra) for run in runs]
        with open(os.path.join(args.root, "calibration", "calibration.json"), "w") as f:
            json.dump(results, f, indent=1)
        return
    if not args.table_only:
        build_data(data_dir, args.manual_dir)
        todo = [run for run in runs if not is_finished(os.path.join(args.root, run.name))]
        for run in runs:
            if run not in todo:
                print(f"{run.name}: finished, skipped")
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
            list(pool.map(lambda run: launch(run, args.root, data_dir, args.extra), todo))
    table = write_table(args.root, runs)
    print(markdown(table))


if __name__ == "__main__":
    main()
