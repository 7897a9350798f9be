"""The results tables of the five papers as data: what each row runs and what the paper reports.

A paper's tables live in `configs/papers/<paper>.py` (a `PAPER` of this module's `Paper`). Each
`Row` is one training run: a config file, its variant and `--config.<field>=<value>` overrides,
so that `python train.py --config=<file>:<variant> <overrides>` is the row. The numbers the paper
reports for it are `Reported` values, each naming the entry of the run's `config.evals` and the
metric of its final report (`final.json`) it is compared with, and the column of the paper's
table it comes from. Rows of the same name in several tables are one run (same config, variant
and overrides; `check_paper` refuses otherwise): UOT's QNRF row of Table 4 is Table 6's l2 / KL.

A row crowdjax cannot run is a `LeftOut` with the reason; a row that needs an evaluation
protocol crowdjax does not have yet names it in `needs` and is listed, not run
(`crowdjax.reproduce`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

# ImageNet backbone weights a paper starts from: the file name (any of `WEIGHT_SUFFIXES`) that
# `crowdjax.reproduce` expects in its weights folder, and what it is.
BACKBONES = {
    "vgg16": "ImageNet VGG16 (torchvision vgg16-397923af.pth, or a Keras VGG16 .h5)",
    "vgg19": "ImageNet VGG19 (torchvision vgg19-dcbb9e9d.pth)",
    "hrnet_w40": "ImageNet HRNet-W40-C (hrnetv2_w40_imagenet_pretrained.pth, or timm hrnet_w40)",
}
WEIGHT_SUFFIXES = (".pth", ".npz", ".safetensors", ".h5")


@dataclasses.dataclass(frozen=True)
class Reported:
    """One number of the paper.

    Attributes:
      eval: the prefix of the run's `config.evals` entry it is compared with (e.g. "test",
        "test_sha", "val_nwpu").
      metric: the key of that entry's final metrics ("mae", "rmse", "nae", ...).
      value: the paper's number.
      column: where it is in the paper's table (e.g. "PartA MAE").
      needs: the evaluation protocol this number needs that crowdjax does not have yet ("" for
        none): the row runs, and this number is shown as needing it.
    """

    eval: str
    metric: str
    value: float
    column: str
    needs: str = ""


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table that crowdjax runs.

    Attributes:
      name: the run's name (its workdir's name); unique per run of a paper.
      label: the row as the paper writes it (e.g. "UOT", "l1 / KL").
      config: the config file, relative to the repository root.
      variant: the config variant (`--config=<file>:<variant>`), "" for none.
      overrides: (field, value) pairs, each a `--config.<field>=<value>`.
      reported: the paper's numbers of this row.
      weights: the ImageNet backbone (`BACKBONES`) the paper's run starts from; at paper scale
        `model.pretrained` points at it.
      stage1: the name of another row whose workdir is this row's `dkpnet.stage1` (DKPNet's
        stage II clusters that run's attention).
      needs: evaluation protocols crowdjax does not have yet (the row is listed, not run).
      notes: what the paper leaves open and the choice the config takes.
    """

    name: str
    label: str
    config: str
    reported: tuple[Reported, ...]
    variant: str = ""
    overrides: tuple[tuple[str, object], ...] = ()
    weights: str = ""
    stage1: str = ""
    needs: tuple[str, ...] = ()
    notes: str = ""

    def run_key(self) -> tuple:
        """What makes two rows the same run."""
        return (self.config, self.variant, self.overrides, self.weights, self.stage1)


@dataclasses.dataclass(frozen=True)
class LeftOut:
    """A row of the paper's method that crowdjax does not run, and why."""

    label: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Table:
    """One results table.

    Attributes:
      number: the table's number in the paper ("4").
      title: what it shows.
      rows: the rows crowdjax runs.
      left_out: the rows of the paper's own method crowdjax does not run (rows of other
        methods that the table only compares against are not listed).
      protocol: how the paper gets the table's numbers (split, selection, size rule), and what
        it leaves open.
    """

    number: str
    title: str
    rows: tuple[Row, ...]
    left_out: tuple[LeftOut, ...] = ()
    protocol: str = ""


@dataclasses.dataclass(frozen=True)
class Paper:
    """A paper: its tables with runnable rows, and its other tables with the reason none runs."""

    key: str
    title: str
    tables: tuple[Table, ...]
    left_out_tables: tuple[tuple[str, str], ...] = ()

    def table(self, number: str) -> Table:
        for t in self.tables:
            if t.number == str(number):
                return t
        raise ValueError(
            f"{self.key}: no table {number!r}; tables: {', '.join(t.number for t in self.tables)}"
        )

    def runs(self) -> dict[str, Row]:
        """Every run of the paper by name (a row shared by several tables once)."""
        return {row.name: row for t in self.tables for row in t.rows}


def mae_rmse(eval_prefix: str, mae: float, rmse: float, column: str) -> tuple[Reported, ...]:
    """The usual pair: MAE and the papers' "MSE" (a root mean square error, crowdjax's RMSE)."""
    return (
        Reported(eval_prefix, "mae", mae, f"{column} MAE"),
        Reported(eval_prefix, "rmse", rmse, f"{column} MSE"),
    )


def check_paper(paper: Paper) -> None:
    """Refuses a paper whose rows of one name differ, whose stage-I rows are missing, or whose
    weights are unknown.

    Raises:
      ValueError: naming the table and row.
    """
    seen: dict[str, tuple[str, Row]] = {}
    for table in paper.tables:
        names = [r.name for r in table.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"{paper.key} Table {table.number}: a row name repeats: {names}")
        for row in table.rows:
            if row.weights and row.weights not in BACKBONES:
                raise ValueError(
                    f"{paper.key} Table {table.number} row {row.name}: unknown weights "
                    f"{row.weights!r}; known: {sorted(BACKBONES)}"
                )
            if row.name in seen and seen[row.name][1].run_key() != row.run_key():
                raise ValueError(
                    f"{paper.key}: row {row.name} of Table {table.number} differs from the "
                    f"row of that name in Table {seen[row.name][0]} (one name, one run)"
                )
            seen.setdefault(row.name, (table.number, row))
    runs = paper.runs()
    for row in runs.values():
        if row.stage1 and row.stage1 not in runs:
            raise ValueError(f"{paper.key} row {row.name}: stage1 row {row.stage1!r} not found")


def with_dependencies(rows: Iterable[Row], runs: dict[str, Row]) -> list[Row]:
    """`rows` with the stage-I rows they need, each before the rows that need it."""
    ordered: list[Row] = []

    def add(row: Row) -> None:
        if row.stage1:
            add(runs[row.stage1])
        if row.name not in {r.name for r in ordered}:
            ordered.append(row)

    for row in rows:
        add(row)
    return ordered
