"""Evaluators: the config's list of evaluations, on whole images, with streaming metrics.

`config.evals` lists the evaluations of a run (big_vision's evaluators), each under its prefix:
  config.evals.<prefix>.dataset          a data set name; "" = the first training data set
  config.evals.<prefix>.split            a split, as `crowdjax.data.splits` resolves it
  config.evals.<prefix>.during_training  also evaluated every `train.eval_every` steps
e.g. per-data-set results of joint training, cross-data-set evaluation, or the target domain of
an adaptation. `config.selection` names the entry and metric that select the best checkpoint
(`selection_entries`; several entries select on their mean, e.g. the mean validation MAE of
jointly trained data sets); a test split may select it only when `config.selection.allow_test`
says so (a paper's protocol, whose numbers are optimistic).

Images of any size are padded to a few size buckets by the input pipeline (`image_mask` marks
real pixels), so the jitted prediction compiles once per bucket; batches are padded to a multiple
of the device count. Metrics stream: each image's counts, GAME cells and matched points are
accumulated as its batch arrives and its maps are dropped, so memory stays flat in the number of
images. Counting, GAME and localization all count the same region (`metrics.game_cell_counts`):
the real pixels of the image, within the region of interest on data sets that have one (Mall,
UCSD, TRANCOS), so MAE equals GAME(0) everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re

import jax
import numpy as np

from crowdjax import metrics as metrics_lib
from crowdjax import sharding
from crowdjax.data import datasets, decode, eval_stream, settings, sources, splits
from crowdjax.metric_writers import log

SELECTION_MODES = {"mae": "min", "rmse": "min", "nae": "min", "game0": "min", "af": "max"}
DETAILED_METRICS = ("game0", "af")  # Need GAME / localization: computed when they select.


# ----------------------------------------------------------------------------------------------
# The evaluation list and model selection.


@dataclasses.dataclass(frozen=True)
class EvalEntry:
    """One evaluation of a run: a data set and a split, reported under `prefix`."""

    prefix: str
    dataset: str
    split: str
    during_training: bool = False


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


def selection_entries(config) -> tuple[list[EvalEntry], str, str]:
    """(entries, metric, mode) that select the best checkpoint (the metric's mean over the
    entries); checks the protocol for each.

    Raises:
      ValueError: unknown entry or metric, or a test split without `selection.allow_test`.
    """
    entries = {e.prefix: e for e in eval_entries(config)}
    metric = config.selection.metric
    if metric not in SELECTION_MODES:
        raise ValueError(f"config.selection.metric={metric!r}; use one of {list(SELECTION_MODES)}")
    trained = settings.dataset_names(config.data)
    chosen = []
    for name in selection_names(config):
        if name not in entries:
            raise ValueError(
                f"config.selection.eval={name!r} is none of config.evals {list(entries)}"
            )
        entry = entries[name]
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
    return chosen, metric, SELECTION_MODES[metric]


def selection_entry(config) -> tuple[EvalEntry, str, str]:
    """(entry, metric, mode) of a selection on one entry (see `selection_entries`)."""
    entries, metric, mode = selection_entries(config)
    if len(entries) != 1:
        raise ValueError(f"config.selection.eval names {len(entries)} entries, not one")
    return entries[0], metric, mode


def selection_info(config) -> dict:
    """What selects the checkpoint, for logs and every eval JSON."""
    entries, metric, mode = selection_entries(config)
    views = [splits.resolve(config.data, e.dataset, e.split) for e in entries]
    join = lambda values: ",".join(values)
    return {
        "eval": "+".join(e.prefix for e in entries),
        "dataset": join(e.dataset for e in entries),
        "split": join(e.split for e in entries),
        "split_description": "; ".join(v.description for v in views),
        "metric": metric,  # With several entries: their mean.
        "mode": mode,
        "test_split": any(splits.is_test_split(config.data, e.split) for e in entries),
        "entries": len(entries),
    }


# ----------------------------------------------------------------------------------------------
# Streaming metrics.


def points_to_map(points: np.ndarray, shape, stride: int) -> np.ndarray:
    """A map [ceil(H/s), ceil(W/s)] with 1 at the output pixel of each point (for GAME, images)."""
    h, w = (-(-int(s) // stride) for s in shape)
    out = np.zeros((h, w), np.float32)
    if len(points):
        cols = np.clip((points[:, 0] // stride).astype(int), 0, w - 1)
        rows = np.clip((points[:, 1] // stride).astype(int), 0, h - 1)
        np.add.at(out, (rows, cols), 1.0)
    return out


class StreamingMetrics:
    """Per-image accumulation of counting (per category), GAME and localization metrics.

    Only small per-image records are kept (names, counts, per-level errors, matches), never a
    map, so memory is flat in the number of images.

    Args:
      peak_threshold: density peaks (3x3 NMS) above it are the heads of density methods.
      detailed: also GAME(0-3) and localization P/R/F.
    """

    def __init__(self, *, peak_threshold: float, detailed: bool):
        self.peak_threshold = float(peak_threshold)
        self.detailed = detailed
        self.counting = metrics_lib.CountingMetrics()
        self.game = metrics_lib.GameMetrics(levels=(0, 1, 2, 3))
        self.localization = metrics_lib.LocalizationMetrics()
        self.per_image: list[dict] = []

    def add(
        self,
        *,
        image_id: str,
        gt_points: np.ndarray,
        pred_map: np.ndarray,
        stride: int,
        region: np.ndarray,
        pred_points: np.ndarray | None = None,
        categories: dict | None = None,
    ) -> dict:
        """Adds one image; returns its record (image_id, gt_count, pred_count, categories).

        Args:
          image_id: the image's name.
          gt_points: [P, 2] annotated (x, y) pixels.
          pred_map: [ceil(H/s), ceil(W/s)] predicted density at stride s over the image (for
            localization methods, `points_to_map` of their points at stride 1).
          stride: the stride s of `pred_map`.
          region: [H, W] the pixels that count on the image grid: the ROI where the data set
            has one, else all ones. An output pixel's density is weighted by the share of its
            s x s block's image pixels in the region (output pixels over padding only never
            count; one at the image border holds its image pixels' density), and a head is
            counted when its pixel is in the region (`metrics.game_cell_counts`).
          pred_points: [N, 2] a localization method's heads (else density peaks are used).
          categories: {grouping: label} of the image.
        """
        pred_cells, gt_cells = metrics_lib.game_cell_counts(
            pred_map, gt_points, level=0, stride=stride, roi=region
        )
        record = {
            "image_id": image_id,
            "gt_count": float(gt_cells.sum()),
            "pred_count": float(pred_cells.sum()),
            "categories": dict(categories or {}),
        }
        categories = {k: [v] for k, v in record["categories"].items()} or None
        self.counting.update(
            [record["pred_count"]], [record["gt_count"]], names=[image_id], categories=categories
        )
        if self.detailed:
            self.game.update(pred_map, gt_points, stride=stride, roi=region, name=image_id)
            if pred_points is None:
                pred_points = metrics_lib.density_to_points(
                    pred_map, threshold=self.peak_threshold, stride=stride
                )
            # Heads outside the region are not counted, nor matched.
            gt = np.asarray(gt_points, np.float64).reshape(-1, 2)
            pred = np.asarray(pred_points, np.float64).reshape(-1, 2)
            gt = gt[metrics_lib.points_in_roi(gt, region)]
            pred = pred[metrics_lib.points_in_roi(pred, region)]
            self.localization.update(pred, gt, name=image_id)
        self.per_image.append(record)
        return record

    def result(self) -> dict:
        results = self.counting.result()
        results.pop("records")
        if self.detailed:
            for part in (self.game.result(), self.localization.result()):
                results.update({k: v for k, v in part.items() if k != "records"})
        return results


# ----------------------------------------------------------------------------------------------
# Evaluating one entry.


def _gather_host_batch(host_batch: dict) -> dict:
    """Host-side fields of every process (for per-image records in multi-process runs)."""
    if jax.process_count() == 1:
        return host_batch
    from jax.experimental import multihost_utils

    keys = [k for k in host_batch if k not in ("image",) and isinstance(host_batch[k], np.ndarray)]
    gathered = multihost_utils.process_allgather({k: host_batch[k] for k in keys}, tiled=True)
    return {**host_batch, **gathered}


def _real_shape(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (int(rows[-1]) + 1 if rows.size else 0, int(cols[-1]) + 1 if cols.size else 0)


def stream_predictions(setup, variables, dataset: str, split: str):
    """Yields (host batch of every process, fetched predictions, index) per real image."""
    predict = setup.predict
    for host_batch in eval_stream.eval_iterator(
        setup.config.data,
        split,
        batch_size=setup.eval_batch_size(),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        name=dataset,
    ):
        inputs = sharding.host_to_global(
            {"image": host_batch["image"], "image_mask": host_batch["image_mask"]}, setup.mesh
        )
        fetched = sharding.global_to_host(predict(variables, inputs["image"], inputs["image_mask"]))
        batch = _gather_host_batch(host_batch)
        for i in np.flatnonzero(batch["valid"]):
            yield batch, fetched, int(i)


def evaluate(
    setup,
    variables,
    entry: EvalEntry,
    *,
    final: bool = False,
    detailed: bool = False,
    save_images: int = 0,
    workdir: str | None = None,
    writer=None,
    step: int | None = None,
    info: dict | None = None,
) -> dict:
    """Metrics of `variables` on one entry: counting metrics, and GAME and localization too when
    `detailed` or in a `final` evaluation (the run's report, marked "final" in `metrics.jsonl`).

    Writes `<workdir>/eval_<prefix>.json` (with `info`: the checkpoint and what selected it, and
    every image's counts) when a workdir is given, and a line to `writer` at `step`.
    """
    config, method = setup.config, setup.method
    stride = setup.output_stride
    peak_threshold = float(config.eval.peak_threshold)
    stream = StreamingMetrics(peak_threshold=peak_threshold, detailed=final or detailed)
    images = []  # At most `save_images` records with their maps, for the PNGs.
    for batch, fetched, i in stream_predictions(setup, variables, entry.dataset, entry.split):
        if "has_annotation" in batch and not bool(batch["has_annotation"][i]):
            raise ValueError(
                f"{entry.dataset} {entry.split!r} image {decode.text(batch['image_id'][i])}: "
                "its annotations are not public (has_annotation = False), so no error can be "
                f"computed; evaluate another split (config.evals.{entry.prefix})"
            )
        shape = _real_shape(batch["image_mask"][i])
        h, w = shape
        gt_points = batch["points"][i][batch["point_mask"][i]]
        region = batch["roi"][i][:h, :w] if "roi" in batch else np.ones(shape, np.uint8)
        pred_points = None
        if method.points_fn is not None:  # Localization: the method's own heads.
            one = {k: v[i] for k, v in fetched.items()}
            pred_points = np.asarray(method.points_fn(one, shape, config), np.float32)
            pred_points = pred_points.reshape(-1, 2)
            pred_map, map_stride = points_to_map(pred_points, shape, 1), 1
        else:
            pred_map = fetched["density"][i][: -(-h // stride), : -(-w // stride)]
            map_stride = stride
        record = stream.add(
            image_id=decode.text(batch["image_id"][i]),
            gt_points=gt_points,
            pred_map=pred_map,
            stride=map_stride,
            region=region,
            pred_points=pred_points,
            categories={k: batch[k][i].item() for k in batch["category_keys"]},
        )
        # Images stay on their process (not gathered): pictures of single-process runs only.
        if len(images) < save_images and jax.process_count() == 1:
            from crowdjax.visualize import denormalize

            images.append(
                {
                    **record,
                    "image": denormalize(batch["image"][i][:h, :w]),
                    "density": pred_map,
                    "stride": map_stride,
                    "points": gt_points,
                    "pred_points": pred_points,
                }
            )
    results = stream.result()
    baseline = mean_count_baseline(config.data, entry.dataset)
    gt = np.array([r["gt_count"] for r in stream.per_image], np.float64)
    results["baseline_mae"] = float(np.mean(np.abs(gt - baseline))) if gt.size else float("nan")
    summary = {k: v for k, v in results.items() if isinstance(v, float | int)}
    log(
        f"eval {entry.prefix} ({entry.dataset} {entry.split})"
        + (f" step {step}" if step is not None else "")
        + ": "
        + " ".join(f"{k} {v:.4g}" for k, v in summary.items())
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
    if workdir is not None and jax.process_index() == 0:
        view = splits.resolve(config.data, entry.dataset, entry.split)
        document = {
            "prefix": entry.prefix,
            "dataset": entry.dataset,
            "split": entry.split,
            "split_description": view.description,
            **(info or {}),
            **results,
            "per_image": stream.per_image,
        }
        with open(os.path.join(workdir, f"eval_{entry.prefix}.json"), "w") as f:
            json.dump(document, f, indent=1, default=float)
        if images:
            from crowdjax import visualize

            visualize.save_density_overlays(
                images,
                os.path.join(workdir, f"images_{entry.prefix}"),
                peak_threshold=peak_threshold,
            )
    return results


# ----------------------------------------------------------------------------------------------
# The mean-count baseline.


@functools.lru_cache(maxsize=64)
def _view_counts(view: splits.SplitView, data_dir: str | None) -> np.ndarray:
    source = sources.view_source(view, data_dir=data_dir)
    with_roi = "roi" in datasets.get_builder(view.dataset, data_dir=data_dir).info.features
    counts = []
    for i in range(len(source)):
        record = source[i]
        points = np.asarray(record["points"], np.float64).reshape(-1, 2)
        if with_roi:
            roi = decode.decode_tensor(record["roi"], np.uint8)
            counts.append(metrics_lib.points_in_roi(points, roi).sum())
        else:
            counts.append(len(points))
    return np.asarray(counts, np.float64)


def gt_counts(data_config, dataset: str, split: str) -> np.ndarray:
    """GT counts [N] of a split as the metrics count them (inside the ROI where there is one)."""
    view = splits.resolve(data_config, dataset, split)
    return _view_counts(view, data_config.data_dir or None)


def mean_count_baseline(data_config, dataset: str) -> float:
    """The 'predict the training mean count' baseline for evaluating on `dataset`: the mean
    count of its training split when it is a training data set, else of all training data."""
    names = settings.dataset_names(data_config)
    train = [dataset] if dataset in names else names
    counts = np.concatenate([gt_counts(data_config, n, data_config.train_split) for n in train])
    return float(counts.mean()) if counts.size else 0.0


# ----------------------------------------------------------------------------------------------
# eval.py: a trained checkpoint on any data set and split.


def _prefix_for(config, dataset: str, split: str) -> str:
    for entry in eval_entries(config):
        if (entry.dataset, entry.split) == (dataset, split):
            return entry.prefix
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{dataset}-{split}")


def evaluate_checkpoint(
    config,
    workdir: str,
    *,
    checkpoint: str = "best",
    dataset: str | None = None,
    split: str | None = None,
    save_images: int = 0,
) -> dict:
    """What `eval.py` runs: restores a checkpoint's variables (never its optimizer state) and
    evaluates every entry of `config.evals`, or only `dataset`/`split` when either is given.

    Args:
      config: the run's config (eval.py reads the workdir's config.json by default).
      workdir: where the eval JSONs go, and the checkpoint's run.
      checkpoint: "best" (the default, as train.py's final evaluation), "latest", or a path (a
        workdir, its best/ or checkpoints/, one step directory, or a published PyTorch file,
        see `crowdjax.models.published`).
      dataset, split: one evaluation instead of the config's list ("" / None: the first training
        data set, or the "test" split).

    Returns:
      {prefix: metrics}.
    """
    from crowdjax import checkpointing
    from crowdjax.run import Setup

    sharding.maybe_initialize_distributed(config)
    setup = Setup(config)
    named = checkpoint in ("best", "latest")  # of the workdir; else a path
    variables, info = checkpointing.restore_variables(
        workdir if named else checkpoint,
        setup.abstract_variables(),
        prefer=checkpoint if named else "best",
        config=config,
    )
    log(f"evaluating the {info['kind']} checkpoint, step {info['step']} ({info['path']})")
    if dataset or split:
        dataset = dataset or settings.dataset_names(config.data)[0]
        split = split or config.data.test_split
        entries = [EvalEntry(_prefix_for(config, dataset, split), dataset, split)]
    else:
        entries = eval_entries(config)
    os.makedirs(workdir, exist_ok=True)
    info = {"checkpoint": info, "selected_by": selection_info(config)}
    return {
        entry.prefix: evaluate(
            setup,
            variables,
            entry,
            final=True,
            save_images=save_images,
            workdir=workdir,
            info=info,
        )
        for entry in entries
    }
