"""Writes an evaluation's results (`crowdjax.evaluation.EntryResult`) where people read them:
the console line "eval <prefix> (<data set> <split>) step <n>: mae ... rmse ...", a line of the
scalar metrics in `<workdir>/metrics.jsonl` (marked `final` for the final evaluation),
`<workdir>/eval_<prefix>.json` (the entry, the split's description, the checkpoint and what
selected it, every metric and every image's counts) and `<workdir>/images_<prefix>/*.png`
(density overlays of the pictures the evaluation kept).
"""

from __future__ import annotations

import json
import os

import jax

from crowdjax import density_points, storage, visualize
from crowdjax.data import splits
from crowdjax.metric_writers import MetricWriter, log

_LOCALIZATION_KEYS = ("ap", "ar", "af", "mean_f", "num_pred", "num_gt")
_LOCALIZATION_PREFIXES = ("precision@", "recall@", "f@")


def _is_localization(key: str) -> bool:
    return key in _LOCALIZATION_KEYS or key.startswith(_LOCALIZATION_PREFIXES)


def console_line(metrics: dict, summary: dict) -> str:
    """The scalar metrics, localization ones after the protocol that produced them, e.g.
    "mae 3.1 rmse 4 | localization input_peaks (window 3, threshold 0.1): ap 0.5 ..."."""
    line = " ".join(f"{k} {v:.4g}" for k, v in summary.items() if not _is_localization(k))
    located = {k: v for k, v in summary.items() if _is_localization(k)}
    if located and "localization" in metrics:
        label = density_points.label(metrics["localization"])
        line += f" | localization {label}: " + " ".join(f"{k} {v:.4g}" for k, v in located.items())
    return line


def write(
    result,
    config,
    *,
    final: bool = False,
    workdir: str | None = None,
    writer: MetricWriter | None = None,
    step: int | None = None,
    info: dict | None = None,
) -> None:
    """Logs `result`, writes its metrics line to `writer` at `step` (when both are given) and,
    with a workdir, its eval JSON and pictures (process 0).

    Args:
      result: a `crowdjax.evaluation.EntryResult`.
      config: the run's config (split descriptions, the pictures' peak threshold).
      final: marks the metrics line as the final evaluation's.
      workdir: where `eval_<prefix>.json` and `images_<prefix>/` go; None writes neither.
      writer: the run's metrics writer.
      step: the step evaluated.
      info: more fields of the eval JSON (the checkpoint and what selected it).
    """
    entry, summary = result.entry, result.summary
    log(
        f"eval {entry.prefix} ({entry.dataset} {entry.split})"
        + (f" step {step}" if step is not None else "")
        + ": "
        + console_line(result.metrics, summary)
    )
    if writer is not None and step is not None:
        writer.write(
            step,
            summary,
            split=entry.prefix,
            dataset=entry.dataset,
            data_split=entry.split,
            **({"final": True} if final else {}),
        )
    if workdir is None or jax.process_index() != 0:
        return
    view = splits.resolve(config.data, entry.dataset, entry.split)
    document = {
        "prefix": entry.prefix,
        "dataset": entry.dataset,
        "split": entry.split,
        "split_description": view.description,
        **(info or {}),
        **result.metrics,
        "per_image": result.per_image,
    }
    text = json.dumps(document, indent=1, default=float)
    storage.path(os.path.join(workdir, f"eval_{entry.prefix}.json")).write_text(text)
    if result.pictures:
        visualize.save_density_overlays(
            result.pictures,
            os.path.join(workdir, f"images_{entry.prefix}"),
            peak_threshold=float(config.eval.peak_threshold),
        )
