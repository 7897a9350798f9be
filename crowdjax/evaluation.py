"""Evaluators: a run's evaluations on whole images, with streaming metrics.

`evaluate(setup, variables, entry)` evaluates one entry of `config.evals` (parsed once into
`crowdjax.evals.Evals`) and returns its `EntryResult`; `crowdjax.eval_writer` writes it (the
console line, the metrics line, `eval_<prefix>.json`, the PNGs). `evaluate_checkpoint` is what
eval.py runs. The images are predicted whole (`crowdjax.whole_images`: padded to a few size
buckets, so the jitted prediction compiles once per bucket).

Metrics stream: each image's counts, GAME cells and matched points are
accumulated as its batch arrives and its maps are dropped, so memory stays flat in the number of
images. Counting, GAME and localization all count the same region (`metrics.game_cell_counts`):
the real pixels of the image, within the region of interest on data sets that have one (Mall,
UCSD, TRANCOS), so MAE equals GAME(0) everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import numpy as np

from crowdjax import (
    checkpointing,
    density_points,
    eval_writer,
    evals,
    nwpu_localization,
    precise_bn,
    sharding,
    storage,
    visualize,
    whole_images,
)
from crowdjax import localization as localization_lib
from crowdjax import metrics as metrics_lib
from crowdjax.data import datasets, decode, settings, sources, splits
from crowdjax.evals import EvalEntry
from crowdjax.metric_writers import duration, log
from crowdjax.run import Setup

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
      peak_threshold: `config.eval.peak_threshold` of the density-to-points protocol.
      detailed: also GAME(0-3), and localization P/R/F where there are heads: a localization
        method's own, or a density method's under `localization`.
      localization: the density-to-points protocol of density methods
        (`crowdjax.density_points`; "" reports no localization numbers for them).
      peak_window: `config.eval.peak_window` of the "input_peaks" protocol.
    """

    def __init__(
        self,
        *,
        peak_threshold: float,
        detailed: bool,
        localization: str = "",
        peak_window: int = 3,
    ):
        self.peak_threshold = float(peak_threshold)
        self.detailed = detailed
        self.protocol = density_points.check_protocol(localization)
        self.peak_window = int(peak_window)
        self.localized_by: set[str] = set()  # The protocols of the localization numbers.
        self.counting = metrics_lib.CountingMetrics()
        self.game = metrics_lib.GameMetrics(levels=(0, 1, 2, 3))
        self.localization = metrics_lib.LocalizationMetrics()
        self.nwpu = nwpu_localization.NwpuLocalizationMetrics()  # Data sets with head boxes.
        self.images_without_boxes = 0
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
        gt_boxes: np.ndarray | None = None,
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
          pred_points: [N, 2] a localization method's heads (else the density's points under
            the configured protocol, if any).
          categories: {grouping: label} of the image.
          gt_boxes: [P, 4] the heads' boxes (NWPU-Crowd): NWPU's sigma_s / sigma_l P/R/F too.
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
            self._localize(image_id, gt_points, pred_map, stride, region, pred_points, gt_boxes)
        self.per_image.append(record)
        return record

    def _localize(
        self, image_id, gt_points, pred_map, stride, region, pred_points, gt_boxes
    ) -> None:
        if pred_points is not None:
            self.localized_by.add(density_points.METHOD_HEADS)
        elif self.protocol:
            self.localized_by.add(self.protocol)
            pred_points = density_points.density_points(
                pred_map,
                protocol=self.protocol,
                stride=stride,
                shape=region.shape,
                threshold=self.peak_threshold,
                window=self.peak_window,
            )
        else:
            return  # A density method without a protocol: no heads to match.
        # Heads outside the region are not counted, nor matched.
        gt = np.asarray(gt_points, np.float64).reshape(-1, 2)
        pred = np.asarray(pred_points, np.float64).reshape(-1, 2)
        inside = metrics_lib.points_in_roi(gt, region)
        gt = gt[inside]
        pred = pred[metrics_lib.points_in_roi(pred, region)]
        # AutoScale Table 5's "sigma = KNN distance" per head, beside the fixed thresholds.
        knn = {"knn": localization_lib.knn_sigma(gt)}
        self.localization.update(pred, gt, name=image_id, gt_sigmas=knn)
        if gt_boxes is not None:
            boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)[inside]
            if np.all(np.isfinite(boxes)):
                self.nwpu.update(pred, gt, boxes)
            else:  # Stored without boxes (an older release): no NWPU numbers for the entry.
                self.images_without_boxes += 1

    def result(self) -> dict:
        """The metrics; localization ones only with their protocol ("localization": its
        description, `density_points.describe`)."""
        results = self.counting.result()
        results.pop("records")
        if self.detailed:
            parts = [self.game.result()]
            if self.localized_by:
                parts.append(self.localization.result())
                if self.nwpu.num_images and not self.images_without_boxes:
                    nwpu = self.nwpu.result()
                    parts.append({k: v for k, v in nwpu.items() if "@sigma_" in k})
                if self.images_without_boxes:
                    results["images_without_boxes"] = self.images_without_boxes
                results["localization"] = density_points.describe(
                    "+".join(sorted(self.localized_by)),  # One method: one kind of heads.
                    threshold=self.peak_threshold,
                    window=self.peak_window,
                )
            for part in parts:
                results.update({k: v for k, v in part.items() if k != "records"})
        return results


# ----------------------------------------------------------------------------------------------
# Evaluating one entry.


def _real_shape(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (int(rows[-1]) + 1 if rows.size else 0, int(cols[-1]) + 1 if cols.size else 0)


@dataclasses.dataclass
class EntryResult:
    """The evaluation of one entry (written by `crowdjax.eval_writer`).

    Attributes:
      entry: what was evaluated.
      metrics: counting metrics (and GAME / localization when detailed), "num_images", and
        "baseline_mae" (the mean-count baseline's MAE).
      per_image: every image's record (image_id, gt_count, pred_count, categories).
      pictures: the first images with their predicted maps and points, for the PNGs.
    """

    entry: EvalEntry
    metrics: dict
    per_image: list[dict]
    pictures: list[dict] = dataclasses.field(default_factory=list)

    @property
    def summary(self) -> dict:
        """The scalar metrics (what the metrics line and the final report hold)."""
        return {k: v for k, v in self.metrics.items() if isinstance(v, float | int)}


def _image(
    setup, entry: EvalEntry, batch: dict, fetched: dict, i: int, *, annotated: bool = True
) -> dict:
    """Image `i` of a batch as the metrics take it: image_id, gt_points [P, 2], pred_map at
    its stride (the image's cells; a localization method's heads at stride 1), region [H, W],
    pred_points (localization methods, else None), categories, gt_boxes (or None); and shape
    (H, W). `annotated`: refuse an image whose annotations are not public."""
    config, method, stride = setup.config, setup.method, setup.output_stride
    image_id = decode.text(batch["image_id"][i])
    unannotated = "has_annotation" in batch and not bool(batch["has_annotation"][i])
    if annotated and unannotated:
        raise ValueError(
            f"{entry.dataset} {entry.split!r} image {image_id}: its annotations are not public "
            "(has_annotation = False), so no error can be computed; evaluate another split "
            f"(config.evals.{entry.prefix})"
        )
    shape = _real_shape(batch["image_mask"][i])
    h, w = shape
    pred_points = None
    if method.points_fn is not None:  # Localization: the method's own heads.
        one = {k: v[i] for k, v in fetched.items()}
        pred_points = np.asarray(method.points_fn(one, shape, config), np.float32).reshape(-1, 2)
        pred_map, map_stride = points_to_map(pred_points, shape, 1), 1
    else:
        pred_map = fetched["density"][i][: -(-h // stride), : -(-w // stride)]
        map_stride = stride
    return {
        "image_id": image_id,
        "gt_points": batch["points"][i][batch["point_mask"][i]],
        "pred_map": pred_map,
        "stride": map_stride,
        "region": batch["roi"][i][:h, :w] if "roi" in batch else np.ones(shape, np.uint8),
        "pred_points": pred_points,
        "categories": {k: batch[k][i].item() for k in batch["category_keys"]},
        "gt_boxes": batch["boxes"][i][batch["point_mask"][i]] if "boxes" in batch else None,
        "shape": shape,
    }


PROGRESS_SECONDS = 60.0  # An evaluation running longer says how far it is, this often.


class _Progress:
    """`evaluating <entry>: 120/316 images | 1.9 img/s | ETA 1m43s` lines, at most one per
    `PROGRESS_SECONDS` (a whole test split of full-resolution images takes minutes on a CPU)."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_SECONDS or done >= self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        log(
            f"evaluating {self.label}: {done}/{self.total} images | {rate:.2f} img/s | "
            f"ETA {duration(eta)}"
        )


def split_size(data_config, dataset: str, split: str) -> int:
    """Images in a split (its records are not decoded)."""
    view = splits.resolve(data_config, dataset, split)
    return len(sources.view_source(view, data_dir=data_config.data_dir or None))


def evaluate(
    setup,
    variables,
    entry: EvalEntry,
    *,
    detailed: bool = False,
    save_images: int = 0,
    before_batch: Callable[[], None] | None = None,
) -> EntryResult:
    """Metrics of `variables` on one entry: counting metrics, GAME and localization too when
    `detailed`, the mean-count baseline, every image's counts, and the first `save_images`
    images with their maps (single-process runs only). Writes nothing (see
    `crowdjax.eval_writer`). `before_batch` is called before each batch is predicted (see
    `crowdjax.whole_images.stream`)."""
    config = setup.config
    stream = StreamingMetrics(
        peak_threshold=float(config.eval.peak_threshold),
        detailed=detailed,
        localization=config.eval.get("localization", ""),
        peak_window=int(config.eval.get("peak_window", 3)),
    )
    pictures = []  # At most `save_images` records with their maps, for the PNGs.
    images = whole_images.stream(
        setup, variables, entry.dataset, entry.split, before_batch=before_batch
    )
    progress = _Progress(
        f"{entry.dataset} {entry.split}", split_size(config.data, entry.dataset, entry.split)
    )
    for batch, fetched, i in images:
        image = _image(setup, entry, batch, fetched, i)
        h, w = image.pop("shape")
        record = stream.add(**image)
        progress.update(len(stream.per_image))
        # Images stay on their process (not gathered): pictures of single-process runs only.
        if len(pictures) < save_images and jax.process_count() == 1:
            pictures.append(
                {
                    **record,
                    "image": visualize.denormalize(batch["image"][i][:h, :w]),
                    "density": image["pred_map"],
                    "stride": image["stride"],
                    "points": image["gt_points"],
                    "pred_points": image["pred_points"],
                }
            )
    results = stream.result()
    baseline = mean_count_baseline(config.data, entry.dataset)
    gt = np.array([r["gt_count"] for r in stream.per_image], np.float64)
    results["baseline_mae"] = float(np.mean(np.abs(gt - baseline))) if gt.size else float("nan")
    return EntryResult(entry=entry, metrics=results, per_image=stream.per_image, pictures=pictures)


def predict_split(setup, variables, dataset: str, split: str) -> list[dict]:
    """Each image's prediction, annotations not needed (e.g. NWPU-Crowd's test split): image_id,
    pred_count (counted as the metrics count it), points ([N, 2] heads: a localization method's
    own, or the density's under `config.eval.localization`; None without a protocol),
    stored_size (H, W) and original_size (the release image's (H, W), where stored)."""
    config = setup.config
    protocol = density_points.check_protocol(config.eval.get("localization", ""))
    entry = EvalEntry(split, dataset, split)
    out = []
    for batch, fetched, i in whole_images.stream(setup, variables, dataset, split):
        image = _image(setup, entry, batch, fetched, i, annotated=False)
        shape, points = image["shape"], image["pred_points"]
        pred_cells, _ = metrics_lib.game_cell_counts(
            image["pred_map"],
            np.zeros((0, 2)),
            level=0,
            stride=image["stride"],
            roi=image["region"],
        )
        if points is None and protocol:
            points = density_points.density_points(
                image["pred_map"],
                protocol=protocol,
                stride=image["stride"],
                shape=shape,
                threshold=float(config.eval.peak_threshold),
                window=int(config.eval.get("peak_window", 3)),
            )
        original = batch["original_size"][i] if "original_size" in batch else None
        out.append(
            {
                "image_id": image["image_id"],
                "pred_count": float(pred_cells.sum()),
                "points": points,
                "stored_size": shape,
                "original_size": None if original is None else tuple(int(v) for v in original),
            }
        )
    return out


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
    evaluates every entry of `config.evals`, or only `dataset`/`split` when either is given;
    each is written to `<workdir>/eval_<prefix>.json` (and `images_<prefix>/` with
    `save_images`).

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
    sharding.maybe_initialize_distributed(config)
    run_evals = evals.parse(config)
    setup = Setup(config)
    named = checkpoint in ("best", "latest")  # of the workdir; else a path
    variables, info = checkpointing.restore_variables(
        workdir if named else checkpoint,
        setup.abstract_variables(),
        prefer=checkpoint if named else "best",
        config=config,
    )
    log(f"evaluating the {info['kind']} checkpoint, step {info['step']} ({info['path']})")
    variables = precise_bn.BatchStatsEstimator(setup)(variables)
    if dataset or split:
        dataset = dataset or settings.dataset_names(config.data)[0]
        split = split or config.data.test_split
        entries = [EvalEntry(run_evals.prefix_for(dataset, split), dataset, split)]
    else:
        entries = run_evals.entries
    storage.makedirs(workdir)
    info = {"checkpoint": info, "selected_by": run_evals.selection.info}
    results = {}
    for entry in entries:
        result = evaluate(setup, variables, entry, detailed=True, save_images=save_images)
        eval_writer.write(result, config, final=True, workdir=workdir, info=info)
        results[entry.prefix] = result.metrics
    return results
