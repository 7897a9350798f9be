"""K-fold cross-validation: one training run per fold and the mean over folds, in one command.

A config with `config.cross_validation.folds` (split names of its data set, e.g. UCF_CC_50's
"fold1" ... "fold5") is run once per fold: trained on the other folds joined ("fold2+fold3+..."),
its checkpoint selected on the validation part held out of them, and tested on the fold. Each
fold runs in `<workdir>/<fold>` through the ordinary trainer, so a killed command resumes where it
stopped and a finished fold only reports. The per-fold results and their mean are written to
`<workdir>/cross_validation.json`, with the protocol (`protocol`).

UCF_CC_50 (L2SM Sec. 4.1: "following classical benchmarks on this dataset, we use 5-fold
cross-validation"; Idrees et al. 2013): five folds of ten images (`tfds_builders/ucf_cc_50.py`),
each tested once by a model trained on the other four; the reported MAE and MSE are the means of
the five folds' MAE and RMSE (`mean`). `pooled` gives MAE and RMSE over the images of all folds
together (the same MAE for equal folds; the RMSE differs), for papers that pool.

  python -m crowdjax.cross_validation --config=configs/l2sm_ucf_cc_50.py --workdir=workdirs/ucf
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from crowdjax import cli, sharding, storage, trainer, workdir_lock
from crowdjax.metric_writers import log

MEAN_KEYS = ("mae", "rmse", "nae", "baseline_mae")
RESULT_FILE = "cross_validation.json"


def fold_config(config, fold: str):
    """A copy of `config` that trains on every fold but `fold` and tests on `fold`.

    Every evaluation entry of the first training set on the test split moves to the fold.
    """
    folds = tuple(config.cross_validation.folds)
    if fold not in folds:
        raise ValueError(f"unknown fold {fold!r}; the config's folds are {folds}")
    if len(folds) < 2:
        raise ValueError(f"cross-validation needs at least two folds, got {folds}")
    config = config.copy_and_resolve_references()
    old_test = config.data.test_split
    config.data.train_split = "+".join(f for f in folds if f != fold)
    config.data.test_split = fold
    for entry in config.evals.values():
        if not entry.dataset and entry.split == old_test:
            entry.split = fold
    config.cross_validation.fold = fold
    return config


def summarize(per_fold: dict, prefix: str = "test") -> dict:
    """{"folds": {fold: metrics}, "mean": {key: mean over folds}, "pooled": {"mae", "rmse"} over
    the images of every fold (weighted by each fold's `num_images`)} of the `prefix` entry."""
    rows = {fold: results[prefix] for fold, results in per_fold.items()}
    mean = {
        key: float(np.mean([r[key] for r in rows.values()]))
        for key in MEAN_KEYS
        if all(key in r for r in rows.values())
    }
    summary = {"entry": prefix, "folds": rows, "mean": mean}
    if all({"num_images", "mae", "rmse"} <= r.keys() for r in rows.values()):
        n = np.array([r["num_images"] for r in rows.values()], np.float64)
        mae = np.array([r["mae"] for r in rows.values()], np.float64)
        rmse = np.array([r["rmse"] for r in rows.values()], np.float64)
        summary["pooled"] = {
            "mae": float(np.sum(n * mae) / n.sum()),
            "rmse": float(np.sqrt(np.sum(n * rmse**2) / n.sum())),
        }
    return summary


def protocol(config) -> dict:
    """How the folds are run and averaged, as `cross_validation.json` records it."""
    return {
        "dataset": config.data.name,
        "folds": list(config.cross_validation.folds),
        "train": "the other folds joined, less data.holdout_fraction held out for selection",
        "test": "the fold",
        "selection": f"{config.selection.eval}/{config.selection.metric}",
        "reported": "mean over folds of each fold's MAE and RMSE (the papers' MAE / MSE)",
    }


def run(config, workdir: str) -> dict:
    """Trains and evaluates every fold (resuming), writes and returns the summary.

    The command holds `<workdir>`'s lock (each fold's run holds its own), so a second
    cross-validation on the same workdir is refused before it starts a fold."""
    sharding.maybe_initialize_distributed(config)  # Before the lock's first JAX call.
    with workdir_lock.hold(workdir):
        return _run_folds(config, workdir)


def _run_folds(config, workdir: str) -> dict:
    folds = tuple(config.cross_validation.folds)
    per_fold = {}
    for fold in folds:
        log(f"cross-validation: fold {fold} ({folds.index(fold) + 1} of {len(folds)})")
        per_fold[fold] = trainer.run_main(fold_config(config, fold), os.path.join(workdir, fold))
    summary = {**summarize(per_fold), "protocol": protocol(config)}
    if jax.process_index() == 0:  # One writer of the shared summary.
        storage.makedirs(workdir)
        text = json.dumps(summary, indent=1, default=float)
        storage.path(os.path.join(workdir, RESULT_FILE)).write_text(text)
    m = summary["mean"]
    log(
        f"cross-validation over {len(folds)} folds: mean MAE {m['mae']:.2f}  RMSE {m['rmse']:.2f}"
        f"  (mean-count baseline MAE {m.get('baseline_mae', float('nan')):.2f}); per fold: "
        + ", ".join(f"{f} {r['mae']:.2f}" for f, r in summary["folds"].items())
    )
    return summary


def main(argv) -> None:
    """`python -m crowdjax.cross_validation`: every fold of the config, and their mean."""
    del argv
    config, workdir = cli.config_and_workdir()
    if "cross_validation" not in config:
        raise ValueError("the config has no `cross_validation.folds`: nothing to cross-validate")
    run(config, workdir)


if __name__ == "__main__":
    cli.define_config_and_workdir(lock_config=False)
    cli.run(main)
