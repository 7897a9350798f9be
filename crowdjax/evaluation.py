"""Whole-image evaluation: predicted density maps -> counts -> the papers' metrics.

Images of any size are padded to a few size buckets by the input pipeline (`image_mask` marks real
pixels), so the jitted prediction compiles once per bucket. The count of an image is the sum of its
density over the real pixels (the mask is sum-pooled to the output stride, so partly padded output
pixels count in proportion).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from crowdjax import metrics as metrics_lib
from crowdjax import sharding
from crowdjax.data import datasets, pipeline
from crowdjax.metric_writers import log


def mask_at_stride(image_mask: jax.Array, stride: int) -> jax.Array:
    """Fraction of real pixels in each output pixel: [B, H, W] -> [B, H/s, W/s]."""
    b, h, w = image_mask.shape
    mask = image_mask.astype(jnp.float32).reshape(b, h // stride, stride, w // stride, stride)
    return mask.mean(axis=(2, 4))


def make_predict_fn(setup):
    """Jitted (variables, images, image_mask) -> dict of [B, ...] arrays.

    Holds "density" [B, h, w] (masked to the real pixels) and "count" [B] when the method predicts
    a density, plus whatever else the method returns for its `points_fn`.
    """
    method, model, config = setup.method, setup.model, setup.config
    stride = method.output_stride(config)

    def predict(variables, images, image_mask):
        out = method.predict_fn(
            variables, images, model=model, config=config, image_mask=image_mask
        )
        out = dict(out) if isinstance(out, dict) else {"density": out}
        if "density" in out:
            density = out["density"]
            density = (
                density
                * mask_at_stride(image_mask, stride)[:, : density.shape[1], : density.shape[2]]
            )
            out.update(density=density, count=density.sum(axis=(1, 2)))
        return out

    return jax.jit(
        predict,
        in_shardings=(setup.replicated, setup.batch_sharding, setup.batch_sharding),
        out_shardings=setup.batch_sharding,
    )


def points_to_map(points: np.ndarray, shape, stride: int) -> np.ndarray:
    """A map [ceil(H/s), ceil(W/s)] with 1 at the output pixel of each point (for GAME, images)."""
    h, w = (-(-int(s) // stride) for s in shape)
    out = np.zeros((h, w), np.float32)
    if len(points):
        cols = np.clip((points[:, 0] // stride).astype(int), 0, w - 1)
        rows = np.clip((points[:, 1] // stride).astype(int), 0, h - 1)
        np.add.at(out, (rows, cols), 1.0)
    return out


def variables_of(state) -> dict:
    return {"params": state.params, **state.model_state}


def predict_split(
    setup, state, split: str, *, keep_density: bool = False, keep_images: int = 0
) -> list[dict]:
    """Runs the model over every image of `split`; returns one record per image."""
    config, method = setup.config, setup.method
    stride = method.output_stride(config)
    if getattr(setup, "predict", None) is None:  # Compiled once per run (per bucket shape).
        setup.predict = make_predict_fn(setup)
    predict = setup.predict
    variables = variables_of(state)
    batch_size = int(config.eval.get("global_batch_size", jax.device_count()))
    sharding.check_batch_size(batch_size, setup.mesh)
    records = []
    for host_batch in pipeline.eval_iterator(
        config.data,
        split,
        batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    ):
        inputs = sharding.host_to_global(
            {"image": host_batch["image"], "image_mask": host_batch["image_mask"]}, setup.mesh
        )
        fetched = sharding.global_to_host(predict(variables, inputs["image"], inputs["image_mask"]))
        batch = _gather_host_batch(host_batch)
        for i in np.flatnonzero(batch["valid"]):
            record = {
                "image_id": _text(batch["image_id"][i]),
                "gt_count": float(batch["count"][i]),
            }
            shape = _real_shape(batch["image_mask"][i])
            if method.points_fn is not None:  # Localization: count = number of heads found.
                points = np.asarray(
                    method.points_fn({k: v[i] for k, v in fetched.items()}, shape, config),
                    np.float32,
                ).reshape(-1, 2)
                record["pred_points"] = points
                record["pred_count"] = float(len(points))
            else:
                record["pred_count"] = float(fetched["count"][i])
            if keep_density:
                if "density" in fetched:
                    record["density"] = fetched["density"][i]
                else:
                    record["density"] = points_to_map(
                        record["pred_points"], batch["image_mask"][i].shape, stride
                    )
                record["points"] = batch["points"][i][batch["point_mask"][i]]
                record["image_shape"] = shape
                if "roi" in batch:
                    record["roi"] = batch["roi"][i]
            if len(records) < keep_images:
                from crowdjax.visualize import denormalize

                h, w = shape
                record["image"] = denormalize(batch["image"][i][:h, :w])
            record["categories"] = {
                key: batch[key][i].item() for key in batch.get("category_keys", ())
            }
            records.append(record)
    return records


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


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def summarize(records, *, stride: int, peak_threshold: float, detailed: bool) -> dict:
    """Counting metrics (per category too) and, when `detailed`, GAME(0-3) and localization."""
    counting = metrics_lib.CountingMetrics()
    categories = sorted({k for r in records for k in r.get("categories", {})})
    counting.update(
        [r["pred_count"] for r in records],
        [r["gt_count"] for r in records],
        names=[r["image_id"] for r in records],
        categories={k: [r["categories"][k] for r in records] for k in categories} or None,
    )
    results = counting.result()
    results.pop("records", None)
    if not detailed:
        return results
    game = metrics_lib.GameMetrics(levels=(0, 1, 2, 3))
    loc = metrics_lib.LocalizationMetrics()
    for r in records:
        h, w = r["image_shape"]
        density = r["density"][: -(-h // stride), : -(-w // stride)]
        roi = r["roi"][:h, :w] if r.get("roi") is not None else None
        game.update(density, r["points"], stride=stride, roi=roi, name=r["image_id"])
        if "pred_points" in r:  # The method's own head locations.
            peaks = r["pred_points"]
        else:
            peaks = metrics_lib.density_to_points(density, threshold=peak_threshold, stride=stride)
        loc.update(peaks, r["points"], name=r["image_id"])
    for part in (game.result(), loc.result()):
        results.update({k: v for k, v in part.items() if k != "records"})
    return results


def mean_count_baseline(data_config, *, train_split: str | None = None) -> float:
    """Mean GT count of the training split: the 'predict the mean' baseline."""
    source = datasets.data_source(
        pipeline.dataset_names(data_config)[0],
        train_split or data_config.train_split,
        data_dir=data_config.get("data_dir"),
    )
    return float(np.mean([source[i]["count"] for i in range(len(source))]))


def evaluate(
    setup,
    state,
    split: str,
    *,
    workdir=None,
    writer=None,
    step=None,
    detailed=False,
    save_images: int = 0,
) -> dict:
    """Counting metrics on `split` (plus GAME and localization when `detailed`).

    Writes `<workdir>/eval_<split>.json` when a workdir is given.
    """
    records = predict_split(
        setup, state, split, keep_density=detailed or save_images > 0, keep_images=save_images
    )
    results = summarize(
        records,
        stride=setup.method.output_stride(setup.config),
        peak_threshold=setup.config.eval.get("peak_threshold", 0.1),
        detailed=detailed,
    )
    summary = {k: v for k, v in results.items() if np.isscalar(v)}
    log(
        f"eval {split}"
        + (f" step {step}" if step is not None else "")
        + ": "
        + " ".join(f"{k} {v:.4g}" for k, v in summary.items() if isinstance(v, float | int))
    )
    if writer is not None and step is not None:
        writer.write(step, summary, split=split)
    if workdir is not None and jax.process_index() == 0:
        results["per_image"] = [
            {
                k: r[k]
                for k in r
                if k not in ("density", "points", "pred_points", "roi", "image_shape", "image")
            }
            for r in records
        ]
        with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
            json.dump(results, f, indent=1, default=float)
        if save_images:
            from crowdjax import visualize

            visualize.save_density_overlays(
                records[:save_images],
                os.path.join(workdir, f"images_{split}"),
                stride=setup.method.output_stride(setup.config),
                peak_threshold=setup.config.eval.get("peak_threshold", 0.1),
            )
    return results


def mean_baseline_mae(data_config, split: str) -> float:
    """MAE on `split` of always predicting the mean training count."""
    mean = mean_count_baseline(data_config)
    source = datasets.data_source(
        pipeline.dataset_names(data_config)[0], split, data_dir=data_config.get("data_dir")
    )
    return float(np.mean([abs(source[i]["count"] - mean) for i in range(len(source))]))


def run_main(config, workdir: str, *, split=None, checkpoint=None, save_images: int = 0) -> dict:
    """What `eval.py` runs: restore a checkpoint and write `<workdir>/eval_<split>.json`."""
    from crowdjax import checkpointing, trainer

    setup = trainer.Setup(config)
    path = checkpoint or workdir
    state = checkpointing.restore_state(path, setup.abstract_with_shardings())
    log(f"restored step {int(state.step)} from {path}")
    os.makedirs(workdir, exist_ok=True)
    split = split or config.eval.get("final_split") or config.eval.split
    return evaluate(setup, state, split, workdir=workdir, detailed=True, save_images=save_images)
