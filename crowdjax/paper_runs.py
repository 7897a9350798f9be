"""A paper table's rows as runs: each row's train.py flags, workdir and config at a scale, and
the files a row needs that the user supplies (ImageNet weights, data sets).

A row at a scale is exactly `python train.py --config=<file>:<variant> --workdir=<workdir>
--config.<field>=<value> ...` (`train_flags`); its config is parsed from those flags by the same
`config_flags` train.py uses (`row_config`), so running the printed command makes the same
workdir.

Scales: "paper" (the paper's schedule, from ImageNet weights in the weights folder), "tiny"
(the config's `tiny` variant: a few CPU steps on the embedded tiny data) and "cpu" (the config's
`cpu` variant, a single-machine recipe; a config without one has "no cpu recipe").
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pathlib
import shlex

import ml_collections
from absl import flags
from ml_collections import config_flags

from crowdjax import paper_tables, workdir
from crowdjax.data import datasets, settings

SCALES = ("paper", "cpu", "tiny")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]  # Where configs/ is.


class MissingFilesError(FileNotFoundError):
    """Rows need files the user must supply; the message names each and where it goes."""


def load_paper(key: str) -> paper_tables.Paper:
    """`PAPER` of configs/papers/<key>.py, checked (`paper_tables.check_paper`)."""
    known = sorted(
        p.stem for p in (REPO_ROOT / "configs" / "papers").glob("*.py") if p.stem != "__init__"
    )
    if key not in known:
        raise ValueError(f"unknown paper {key!r}; papers: {', '.join(known)}")
    paper = importlib.import_module(f"configs.papers.{key}").PAPER
    paper_tables.check_paper(paper)
    return paper


def scaled_variant(variant: str, scale: str) -> str:
    """The config variant of a row at `scale`: its own options plus "tiny" or "cpu"."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; scales: {', '.join(SCALES)}")
    options = [v for v in variant.split(",") if v]
    if scale != "paper":
        options.append(scale)
    return ",".join(options)


def row_workdir(root: str, scale: str, paper: str, row: paper_tables.Row) -> str:
    """<root>/<scale>/<paper>/<row name>: one workdir per run, shared by the tables."""
    return os.path.join(root, scale, paper, row.name)


def weights_file(weights_dir: str, backbone: str) -> str | None:
    """The weights file of `backbone` in `weights_dir` (<backbone><suffix>), or None."""
    for suffix in paper_tables.WEIGHT_SUFFIXES:
        path = os.path.join(weights_dir, backbone + suffix)
        if os.path.exists(path):
            return path
    return None


def _flag_value(value) -> str:
    return str(value)


@dataclasses.dataclass(frozen=True)
class RowRun:
    """A row at a scale: where it runs and its train.py flags."""

    row: paper_tables.Row
    scale: str
    workdir: str
    flags: tuple[str, ...]

    def command(self) -> str:
        """The train.py command (from the repository root) that runs this row."""
        return "python train.py " + " ".join(shlex.quote(f) for f in self.flags)


def row_run(
    paper: str, row: paper_tables.Row, *, root: str, scale: str, weights_dir: str
) -> RowRun:
    """The train.py flags of `row` at `scale` (the stage-I row's workdir as `dkpnet.stage1`;
    at paper scale `model.pretrained` in `weights_dir`, named even when missing)."""
    wd = row_workdir(root, scale, paper, row)
    variant = scaled_variant(row.variant, scale)
    argv = [f"--config={row.config}" + (f":{variant}" if variant else ""), f"--workdir={wd}"]
    overrides = list(row.overrides)
    if row.stage1:
        stage1 = dataclasses.replace(row, name=row.stage1)
        overrides.append(("dkpnet.stage1", row_workdir(root, scale, paper, stage1)))
    if row.weights and scale == "paper":
        path = weights_file(weights_dir, row.weights) or os.path.join(
            weights_dir, row.weights + paper_tables.WEIGHT_SUFFIXES[0]
        )
        overrides.append(("model.pretrained", path))
    argv += [f"--config.{field}={_flag_value(value)}" for field, value in overrides]
    return RowRun(row=row, scale=scale, workdir=wd, flags=tuple(argv))


def parse_train_flags(argv) -> tuple[ml_collections.ConfigDict, str]:
    """(config, workdir) of train.py's flags `argv`, parsed as train.py parses them (config
    paths relative to the repository root)."""
    argv = [
        "train.py",
        *(
            f"--config={REPO_ROOT / a[len('--config=') :]}" if a.startswith("--config=") else a
            for a in argv
        ),
    ]
    values = flags.FlagValues()
    # The overrides are read from the command line (sys.argv for train.py): here, `argv`.
    config_flags.DEFINE_config_file(
        "config", None, "", flag_values=values, lock_config=True, sys_argv=argv
    )
    flags.DEFINE_string("workdir", None, "", flag_values=values)
    values(argv)
    return values["config"].value, values["workdir"].value


def row_config(run: RowRun) -> ml_collections.ConfigDict:
    """The config train.py would run for `run`.

    Raises:
      ValueError: the config file has no such variant (e.g. no cpu recipe).
    """
    return parse_train_flags(run.flags)[0]


def has_scale(run: RowRun) -> bool:
    """Whether the row's config file has its scale's variant (e.g. a cpu recipe)."""
    try:
        row_config(run)
    except (ValueError, flags.Error) as e:  # flags.Error wraps the config file's ValueError.
        if "unknown config variant" in str(e) or "unknown DKPNet variant" in str(e):
            return False
        raise
    return True


def is_finished(run: RowRun, config) -> bool:
    """The row's workdir holds a final report of this very config."""
    return workdir.read_final(run.workdir) is not None and not workdir.config_changes(
        config, run.workdir
    )


def data_set_names(config) -> list[str]:
    """Every data set a run reads: training, adaptation target, evaluations."""
    names = list(settings.dataset_names(config.data))
    names += [config.data.target] if config.data.get("target") else []
    names += [e.dataset for e in config.evals.values() if e.dataset]
    return sorted(set(names))


def missing_files(runs_and_configs, *, weights_dir: str) -> list[str]:
    """What the user must supply before `runs_and_configs` [(RowRun, config)] can run: one line
    per missing file, naming where it goes (synthetic data are built on first use)."""
    missing = []
    for run, config in runs_and_configs:
        row = run.row
        if row.weights and run.scale == "paper" and not weights_file(weights_dir, row.weights):
            suffixes = "|".join(paper_tables.WEIGHT_SUFFIXES)
            missing.append(
                f"{row.name}: {paper_tables.BACKBONES[row.weights]} weights: put them at "
                f"{os.path.join(weights_dir, row.weights)}{{{suffixes}}}"
            )
        data_dir = config.data.data_dir or None
        for name in data_set_names(config):
            if name.startswith("synthetic_crowd"):
                continue
            if not datasets.is_prepared(name, data_dir=data_dir):
                missing.append(
                    f"{row.name}: data set {name} is not built; build it with: "
                    + datasets.build_command(name, data_dir=data_dir)
                )
    return list(dict.fromkeys(missing))
