"""A paper's table side by side with crowdjax's runs: paper | crowdjax | difference, each number
with its protocol, as Markdown and JSON: `table.{md,json}` (`FILE_STEM`).

A crowdjax number is read from the row's workdir: `eval_<prefix>.json` (every metric of the
final evaluation, per category included, as a dotted path such as
`per_category.density_level.low.mae`). A run whose config has no entry of the paper's prefix
(the tiny and cpu scales evaluate their own data as "val" / "test") is compared through the
entry of the same split, and its protocol says which data it is. The protocol of each number is
the run's own: the entry's data set and split (with how the split is made), the selection entry
and metric, the image size rule, the kernel and the selected checkpoint's step.
"""

from __future__ import annotations

import importlib
import json
import math
import os

from crowdjax import paper_tables, submissions, workdir
from crowdjax.paper_runs import RowRun

FILE_STEM = "table"  # <directory>/table.{md,json}


def path(directory: str, extension: str) -> str:
    """The table's file of `extension` ("md" or "json") in `directory`."""
    return os.path.join(directory, f"{FILE_STEM}.{extension}")


JHU_CATEGORY = "jhu_category."  # jhu_category.<column>.<mae|rmse>: `submissions.jhu_category_table`


def _jhu_category(document: dict, path: str):
    """A JHU-Crowd++ category's MAE or RMSE from the eval JSON's per-image records; None when
    the images carry no JHU labels (another data set)."""
    column, metric = path[len(JHU_CATEGORY) :].rsplit(".", 1)
    try:
        table = submissions.jhu_category_table(document.get("per_image", []))
    except ValueError:
        return None
    return table.get(column, {}).get("mse" if metric == "rmse" else metric)


def _lookup(document: dict, path: str):
    if path.startswith(JHU_CATEGORY):
        return _jhu_category(document, path)
    value = document
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, int | float) else None


def _entry_prefix(prefix: str, results: dict) -> str | None:
    """The run's entry for the paper's `prefix`: itself, else the entry of its split."""
    if prefix in results:
        return prefix
    split = prefix.split("_")[0]
    return split if split in results else None


def _built_rule(name: str) -> str:
    """The builder's resize rule of data set `name` (configs/datasets.py), "" if unknown."""
    catalog = importlib.import_module("configs.datasets").DATASETS  # configs/ is not a package dep.
    rules = [f.resize for f in catalog.values() if f.name == name and f.resize != "none"]
    return rules[0] if rules else ""


def _size_rule(config: dict, dataset: str) -> str:
    data = config["data"]
    rules = [_built_rule(dataset)] if _built_rule(dataset) else []
    if data.get("min_short_side"):
        rules.append(f"short side >= {data['min_short_side']}")
    if data.get("max_long_side"):
        rules.append(f"long side <= {data['max_long_side']}")
    return ", ".join(rules) or "as built"


def _kernel(config: dict) -> str:
    data = config["data"]
    if data.get("density_sigma"):
        return f"Gaussian sigma {data['density_sigma']:g} (cut at {data['density_truncate']:g})"
    return "the builder's stored map"


def protocol(config: dict, final: dict, prefix: str, eval_doc: dict) -> dict:
    """The protocol of one number of a finished run (its config.json, final.json, eval JSON)."""
    selection = config["selection"]
    return {
        "data": f"{eval_doc.get('dataset', '')} {eval_doc.get('split', '')}".strip(),
        "split": eval_doc.get("split_description", ""),
        "entry": prefix,
        "selection": f"{selection['eval']} {selection['metric']}"
        + (" (test allowed)" if selection.get("allow_test") else ""),
        "size_rule": _size_rule(config, eval_doc.get("dataset", "")),
        "kernel": _kernel(config),
        "checkpoint": final["checkpoint"],
    }


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def row_numbers(run: RowRun, status: str) -> list[dict]:
    """Each paper number of the row with crowdjax's (None where the row has none yet)."""
    final = workdir.read_final(run.workdir)
    config = _read_json(os.path.join(run.workdir, workdir.CONFIG_FILE))
    out = []
    for number in run.row.reported:
        item = {
            "row": run.row.name,
            "label": run.row.label,
            "column": number.column,
            "eval": number.eval,
            "metric": number.metric,
            "paper": number.value,
            "crowdjax": None,
            "difference": None,
            "status": status,
            "protocol": None,
        }
        if number.needs:
            item["status"] = f"needs {number.needs}"
        elif final is not None and config is not None:
            prefix = _entry_prefix(number.eval, final["results"])
            doc = _read_json(os.path.join(run.workdir, f"eval_{prefix}.json")) if prefix else None
            value = _lookup(doc, number.metric) if doc is not None else None
            if value is None and prefix is not None:
                value = _lookup(final["results"][prefix], number.metric)
            if value is not None and math.isfinite(value):
                item["crowdjax"] = float(value)
                item["difference"] = float(value) - number.value
                item["status"] = "finished"
            else:
                item["status"] = f"no {number.metric} in {prefix}"
            if prefix is not None:
                item["protocol"] = protocol(config, final, prefix, doc or {})
        out.append(item)
    return out


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def _protocol_text(p: dict | None) -> str:
    if p is None:
        return ""
    ckpt = p["checkpoint"]
    return (
        f"{p['data']} ({p['split']}); selection {p['selection']}; size {p['size_rule']}; "
        f"kernel {p['kernel']}; checkpoint {ckpt.get('kind', '')} step {ckpt.get('step', '')}"
    )


def markdown(paper: paper_tables.Paper, table: paper_tables.Table, scale: str, items, runs):
    """The side-by-side table as Markdown."""
    lines = [
        f"# {paper.title}: Table {table.number}",
        "",
        f"{table.title}. Scale: {scale}."
        + (f" Paper's protocol: {table.protocol}." if table.protocol else ""),
        "",
        f"What the paper leaves open and the choice each config takes: docs/methods/{paper.key}"
        ".md; the protocol column is each run's own.",
        "",
        "| row | column | paper | crowdjax | difference | status | protocol |",
        "|---|---|---|---|---|---|---|",
    ]
    for it in items:
        diff = it["difference"]
        lines.append(
            f"| {it['label']} | {it['column']} | {it['paper']:g} | {_fmt(it['crowdjax'])} | "
            f"{'—' if diff is None else f'{diff:+.4g}'} | {it['status']} | "
            f"{_protocol_text(it['protocol'])} |"
        )
    lines += ["", "Runs:", ""]
    for run in runs:
        lines.append(f"- {run.row.label} (`{run.row.name}`): `{run.command()}`")
        if run.row.notes:
            lines.append(f"  - note: {run.row.notes}")
    if table.left_out:
        lines += ["", "Rows crowdjax does not run:", ""]
        lines += [f"- {r.label}: {r.reason}" for r in table.left_out]
    return "\n".join(lines) + "\n"


def write(directory: str, paper, table, scale: str, items, runs) -> str:
    """Writes the table's Markdown and JSON files (`path`) in `directory`; returns the
    Markdown."""
    os.makedirs(directory, exist_ok=True)
    text = markdown(paper, table, scale, items, runs)
    with open(path(directory, "md"), "w") as f:
        f.write(text)
    document = {
        "paper": paper.key,
        "title": paper.title,
        "table": table.number,
        "table_title": table.title,
        "scale": scale,
        "protocol": table.protocol,
        "numbers": items,
        "runs": [
            {"row": r.row.name, "label": r.row.label, "workdir": r.workdir, "command": r.command()}
            for r in runs
        ],
        "left_out": [{"label": r.label, "reason": r.reason} for r in table.left_out],
    }
    with open(path(directory, "json"), "w") as f:
        json.dump(document, f, indent=1)
    return text
