"""How far to trust a count with an interval: coverage and disagreement on a labelled split.

  python -m crowdjax.tta_eval --checkpoint=workdirs/quickstart --split=validation \\
      --tta=flip,scales=0.8,1.0,1.25 --output=tta_val.json
  python -m crowdjax.tta_eval --checkpoint=runs/a --checkpoint=runs/b --tta=flip   # ensemble

Counts every image of the split with `crowdjax.tta.TTACounter` (whole images, as predict.py
counts them) and reports:
  coverage        the share of images whose true count lies in the interval (count +- k
                  spread, `--interval_k`), and, for comparison, in count +- 1, 2 and 3 spreads
                  and in (min, max) of the variants;
  spearman        the rank correlation between the spread and the absolute error (does
                  disagreement track the error?), and between the relative spread and the
                  relative error (the absolute one is inflated by crowd size, which both grow
                  with: `spearman_gt_abs_error` shows how much);
  mae, bias       of the mean count, and the MAE of the flagged (`disagree`) and unflagged
                  images.
The true count is the number of annotated heads (a data set with a region of interest is counted
inside it by the metrics, not here: its images are refused).
"""

from __future__ import annotations

import json

import numpy as np
import scipy.stats
from absl import flags
from ml_collections import config_flags

from crowdjax import cli, count_table, media, tta
from crowdjax.data import datasets, decode, settings, sources
from crowdjax.metric_writers import log

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined when run as a command, so importing defines none)."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file (default: the run's config.json).", lock_config=True
    )
    flags.DEFINE_multi_string(
        "checkpoint", None, "A workdir or checkpoint; more than once for an ensemble."
    )
    flags.DEFINE_string("tta", "flip,scales=0.8,1.0,1.25", "Test-time variants.")
    flags.DEFINE_float(
        "disagreement", tta.DEFAULT_DISAGREEMENT, "Relative spread that flags an image."
    )
    flags.DEFINE_float(
        "interval_k", tta.DEFAULT_INTERVAL_K, "The interval is the count +- k spreads."
    )
    flags.DEFINE_string("dataset", None, "Data set (default: the first training one).")
    flags.DEFINE_string("split", "validation", "Split ('val' for 'validation').")
    flags.DEFINE_string("output", None, "Write the metrics and per-image rows (JSON).")
    cli.define_trust_method()
    flags.mark_flags_as_required(["checkpoint"])


def _spearman(a, b) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(scipy.stats.spearmanr(a, b).statistic)


def interval_metrics(gt, rows: list[dict]) -> dict:
    """Coverage, rank correlations and errors of per-image records (`Prediction.record`: with
    "count", "spread", "interval", "disagree", "variants") against true counts `gt` [N]
    (module doc)."""
    gt = np.asarray(gt, np.float64)
    count = np.array([r["count"] for r in rows], np.float64)
    spread = np.array([r["spread"] for r in rows], np.float64)
    low, high = (np.array([r["interval"][k] for r in rows], np.float64) for k in (0, 1))
    flagged = np.array([r["disagree"] for r in rows], bool)
    lowest = np.array([min(r["variants"]) for r in rows], np.float64)
    highest = np.array([max(r["variants"]) for r in rows], np.float64)
    error = np.abs(count - gt)
    floor = np.maximum(gt, 1.0)
    return {
        "images": len(rows),
        "mae": float(error.mean()),
        "bias": float((count - gt).mean()),
        "coverage_interval": float(((low <= gt) & (gt <= high)).mean()),
        "mean_interval_width": float((high - low).mean()),
        **{f"coverage_{k}_spread": float((error <= k * spread).mean()) for k in (1, 2, 3)},
        "coverage_min_max": float(((lowest <= gt) & (gt <= highest)).mean()),
        "spearman_spread_abs_error": _spearman(spread, error),
        # Both grow with the crowd: how much of the above the true count alone explains.
        "spearman_gt_abs_error": _spearman(gt, error),
        "spearman_relative_spread_relative_error": _spearman(
            spread / np.maximum(count, 1.0), error / floor
        ),
        "flagged": int(flagged.sum()),
        "mae_flagged": float(error[flagged].mean()) if flagged.any() else float("nan"),
        "mae_unflagged": float(error[~flagged].mean()) if (~flagged).any() else float("nan"),
    }


def evaluate_split(counter: tta.TTACounter, *, dataset: str, split: str) -> tuple[dict, list]:
    """(metrics, per-image rows) of `counter` on a labelled split (module doc).

    Raises:
      ValueError: the data set has a region of interest.
    """
    data = counter.config.data
    if "roi" in datasets.get_builder(dataset, data_dir=data.data_dir or None).info.features:
        raise ValueError(f"{dataset} has a region of interest; its counts are not whole images")
    source = sources.split_source(data, dataset, split)
    rows, gt = [], []
    for i in range(len(source)):
        record = source[i]
        name = decode.text(record["image_id"])
        rgb = decode.decode_rgb(record["image"], apply_exif=False, name=name)
        result = counter.count_rgb(rgb, name=name)
        gt.append(len(np.asarray(record["points"]).reshape(-1, 2)))
        rows.append({"image": name, "gt": gt[-1], **result.record()})
    return interval_metrics(gt, rows), rows


def main(argv):
    del argv
    variants = tta.Variants.parse(FLAGS.tta)
    counter = tta.TTACounter.load(
        FLAGS.checkpoint,
        config=FLAGS.config,
        trusted_method=FLAGS.trust_method,
        variants=variants,
        disagreement=FLAGS.disagreement,
        interval_k=FLAGS.interval_k,
    )
    dataset = FLAGS.dataset or settings.dataset_names(counter.config.data)[0]
    split = "validation" if FLAGS.split == "val" else FLAGS.split
    metrics, rows = evaluate_split(counter, dataset=dataset, split=split)
    what = f"{len(FLAGS.checkpoint)} checkpoint(s) x {variants.per_model} variant(s)"
    log(f"{dataset} {split}, {what} ({FLAGS.tta or 'none'}):")
    for key, value in metrics.items():
        log(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    if FLAGS.output:
        report = {
            "checkpoints": FLAGS.checkpoint,
            "tta": FLAGS.tta,
            "dataset": dataset,
        }
        report |= {"split": split, "disagreement": FLAGS.disagreement}
        report |= {"interval_k": FLAGS.interval_k, "metrics": metrics}
        count_table.write_atomic(FLAGS.output, json.dumps(report | {"images": rows}, indent=1))
        log(f"written to {media.printable(FLAGS.output)}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
