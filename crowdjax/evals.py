"""The run's evaluations and its checkpoint selection: `config.evals` and `config.selection`,
parsed once (`parse`) into an `Evals` that the trainer and the evaluators are given.

`config.evals` lists the evaluations of a run (big_vision's evaluators), each under its prefix:
  config.evals.<prefix>.dataset          a data set name; "" = the first training data set
  config.evals.<prefix>.split            a split, as `crowdjax.data.splits` resolves it
  config.evals.<prefix>.during_training  also evaluated every `train.eval_every` steps
e.g. per-data-set results of joint training, cross-data-set evaluation, or the target domain of
an adaptation. `config.selection` names the entry and metric that select the best checkpoint
(several entries select on their mean, e.g. the mean validation MAE of jointly trained data
sets); a test split may select it only when `config.selection.allow_test` says so (a paper's
protocol, whose numbers are optimistic).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import ml_collections

from crowdjax.data import settings, splits

SELECTION_MODES = {"mae": "min", "rmse": "min", "nae": "min", "game0": "min", "af": "max"}
DETAILED_METRICS = ("game0", "af")  # Need GAME / localization: computed when they select.


@dataclasses.dataclass(frozen=True)
class EvalEntry:
    """One evaluation of a run: a data set and a split, reported under `prefix`."""

    prefix: str
    dataset: str
    split: str
    during_training: bool = False


@dataclasses.dataclass(frozen=True)
class Selection:
    """What selects the best checkpoint: `metric` averaged over `entries`, better by `mode`.

    Attributes:
      entries: the selecting entries (one, or several whose metric is averaged).
      metric: a key of `SELECTION_MODES`.
      mode: "min" or "max".
      data_config: the run's `config.data` (to describe the selecting splits).
    """

    entries: tuple[EvalEntry, ...]
    metric: str
    mode: str
    data_config: ml_collections.ConfigDict = dataclasses.field(repr=False, compare=False)

    @property
    def name(self) -> str:
        """The selecting prefixes joined by "+", e.g. "val" or "val_a+val_b"."""
        return "+".join(e.prefix for e in self.entries)

    @property
    def detailed(self) -> bool:
        """Whether the metric needs GAME / localization (computed on the selecting entries)."""
        return self.metric in DETAILED_METRICS

    @functools.cached_property
    def info(self) -> dict:
        """What selects the checkpoint, for logs and every eval JSON."""
        data = self.data_config
        views = [splits.resolve(data, e.dataset, e.split) for e in self.entries]
        return {
            "eval": self.name,
            "dataset": ",".join(e.dataset for e in self.entries),
            "split": ",".join(e.split for e in self.entries),
            "split_description": "; ".join(v.description for v in views),
            "metric": self.metric,  # With several entries: their mean.
            "mode": self.mode,
            "test_split": any(splits.is_test_split(data, e.split) for e in self.entries),
            "entries": len(self.entries),
        }


@dataclasses.dataclass(frozen=True)
class Evals:
    """The parsed `config.evals` and `config.selection` of a run.

    Attributes:
      entries: every entry of `config.evals`, data sets resolved.
      selection: what selects the best checkpoint.
    """

    entries: tuple[EvalEntry, ...]
    selection: Selection

    @property
    def during_training(self) -> list[EvalEntry]:
        """The entries evaluated every `train.eval_every` steps (the selecting ones included)."""
        selecting = self.selection.entries
        return [e for e in self.entries if e.during_training or e in selecting]

    @property
    def datasets(self) -> set[str]:
        """The data sets that the entries evaluate."""
        return {e.dataset for e in self.entries}

    def prefix_for(self, dataset: str, split: str) -> str:
        """The prefix of the entry on (dataset, split), else one made of their names."""
        for entry in self.entries:
            if (entry.dataset, entry.split) == (dataset, split):
                return entry.prefix
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{dataset}-{split}")


def parse(config) -> Evals:
    """`config.evals` and `config.selection`, checked once.

    Raises:
      ValueError: a bad prefix, no entry, an unknown selecting entry or metric, selection on
        images the run trains on, or on a test split without `selection.allow_test`.
    """
    entries = tuple(eval_entries(config))
    return Evals(entries=entries, selection=_selection(config, entries))


def eval_entries(config) -> list[EvalEntry]:
    """The entries of `config.evals`, data sets resolved ("" = the first training data set)."""
    first = settings.dataset_names(config.data)[0]
    entries = []
    for prefix, spec in config.evals.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
            raise ValueError(f"evaluation prefix {prefix!r}: use letters, digits, '_', '.', '-'")
        entries.append(
            EvalEntry(
                prefix=prefix,
                dataset=spec.dataset or first,
                split=spec.split,
                during_training=bool(spec.during_training),
            )
        )
    if not entries:
        raise ValueError("config.evals lists no evaluation")
    return entries


def selection_names(config) -> list[str]:
    """The prefixes of `config.selection.eval`: one, or several ("val_a,val_b" or a tuple),
    whose metric is then averaged (e.g. the mean validation MAE of jointly trained data sets)."""
    names = config.selection.eval
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError("config.selection.eval names no evaluation")
    return names


def _selection(config, entries: tuple[EvalEntry, ...]) -> Selection:
    by_prefix = {e.prefix: e for e in entries}
    metric = config.selection.metric
    if metric not in SELECTION_MODES:
        raise ValueError(f"config.selection.metric={metric!r}; use one of {list(SELECTION_MODES)}")
    trained = settings.dataset_names(config.data)
    chosen = []
    for name in selection_names(config):
        if name not in by_prefix:
            raise ValueError(
                f"config.selection.eval={name!r} is none of config.evals {list(by_prefix)}"
            )
        entry = by_prefix[name]
        if entry.dataset in trained and entry.split in config.data.train_split.split("+"):
            raise ValueError(
                f"config.evals.{name} selects the checkpoint on {entry.split!r} of "
                f"{entry.dataset!r}, which data.train_split={config.data.train_split!r} trains on"
            )
        if splits.is_test_split(config.data, entry.split) and not config.selection.allow_test:
            raise ValueError(
                f"the checkpoint would be selected on the test split {entry.split!r} of "
                f"{entry.dataset!r} (config.evals.{name}). Select on a validation split (the "
                "default), or set config.selection.allow_test=True to reproduce a paper's "
                "protocol (its numbers are optimistic)."
            )
        chosen.append(entry)
    return Selection(
        entries=tuple(chosen), metric=metric, mode=SELECTION_MODES[metric], data_config=config.data
    )
