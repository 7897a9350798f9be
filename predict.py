"""Count people on your own images and videos with a trained (or imported) model.

  python predict.py --checkpoint=workdirs/quickstart --output=out photos/ crowd.jpg
  python predict.py --checkpoint=workdirs/uot_shb/best --output=out --every=10 street.mp4
  python predict.py --config=configs/uot_shb.py --checkpoint=best_model.pth --output=out photos/

INPUT: image files, folders (searched recursively for jpg, png, bmp, webp, tif and videos) and
video files (every `--every`-th frame). The config is the run's `config.json` next to the
checkpoint unless `--config` is given (required for a published PyTorch file). Writes to
`--output`:
  counts.csv, counts.json   one row per image or video frame: file, frame, count (+ points of
                            localization methods in counts.json)
  overlays/<name>.png       the density as a heat map, or the heads, over the image, with the count
  videos/<name>.mp4         each counted frame annotated; videos/<name>_counts.png: count per frame
  failed.json               the inputs that could not be read, and why
  log.txt                   the full log, libraries' INFO lines included (the console shows
                            them with -v 0; see `crowdjax.console`)
Images larger than `--max_pixels` run in overlapping windows (see `crowdjax.prediction`). A file
that cannot be read is reported and skipped; the command then ends with a summary and exit
status 1.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from crowdjax import console, media, prediction, visualize
from crowdjax.data import io
from crowdjax.metric_writers import log

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (default: the run's config.json).", lock_config=True
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A workdir, its best/ or checkpoints/, a step directory, or a .pth file."
)
_OUTPUT = flags.DEFINE_string("output", None, "Output folder.")
_EVERY = flags.DEFINE_integer("every", 1, "Count every n-th frame of videos.")
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels", prediction.DEFAULT_MAX_PIXELS, "Most pixels per forward pass (memory bound)."
)
_MARGIN = flags.DEFINE_integer("margin", prediction.DEFAULT_MARGIN, "Context (px) around windows.")
_OVERLAYS = flags.DEFINE_bool("overlays", True, "Write overlay PNGs of images.")
_OVERLAY_SIDE = flags.DEFINE_integer("overlay_max_side", 1600, "Long side of overlays (px).")
flags.mark_flags_as_required(["checkpoint", "output"])


class ProgressBar:
    """One line on stderr: items done, items/s and the time left."""

    def __init__(self, total: int):
        self.total, self.done, self.start = max(total, 1), 0, time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 24
        bar = "#" * round(width * min(self.done / self.total, 1.0))
        sys.stderr.write(
            f"\r[{bar:<{width}}] {self.done}/{self.total} {rate:.2f} img/s "
            f"ETA {int(left // 60)}:{int(left % 60):02d}  {label[-40:]:<40}"
        )
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def output_names(paths: list[str], inputs: list[str]) -> dict[str, str]:
    """A distinct name per file for its outputs: its path below the folder given on the command
    line (or its file name), extension dropped, '/' -> '__'."""
    roots = [os.path.abspath(p) for p in inputs if os.path.isdir(p)]
    names, used = {}, set()
    for path in paths:
        full = os.path.abspath(path)
        root = next((r for r in roots if full.startswith(r + os.sep)), None)
        rel = os.path.relpath(full, root) if root else os.path.basename(full)
        base = os.path.splitext(rel)[0].replace(os.sep, "__") or "input"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        names[path] = name
    return names


def predict_files(counter, inputs, output, *, every=1, overlays=True, overlay_max_side=1600):
    """Counts every image and video that `inputs` name; writes the outputs (see the module doc).

    Returns:
      (rows, failures): one dict per image or counted frame, and {"file", "error"} per input
      that could not be read.
    """
    files = media.find_inputs(inputs)
    names = output_names(files, inputs)
    videos = {}
    total = 0
    for path in files:
        if media.kind_of(path) == "video":
            try:
                videos[path] = media.VideoFrames(path, every=every)
                total += max(videos[path].selected, 1)
            except io.DataError:
                total += 1  # Reported when read.
        else:
            total += 1
    os.makedirs(output, exist_ok=True)
    rows, failures = [], []
    bar = ProgressBar(total)
    for path in files:
        try:
            if media.kind_of(path) == "video":
                rows += _predict_video(counter, path, names[path], output, videos, every, bar)
            else:
                rows.append(
                    _predict_image(counter, path, names[path], output, overlays, overlay_max_side)
                )
                bar.step(path)
        except (io.DataError, OSError, ValueError) as e:
            failures.append({"file": path, "error": str(e)})
            bar.step(path)
    bar.close()
    _write_tables(output, rows, failures)
    return rows, failures


def _predict_image(counter, path, name, output, overlays, overlay_max_side) -> dict:
    rgb = media.read_image(path)
    result = counter.count_rgb(rgb)
    if overlays:
        picture = visualize.prediction_overlay(rgb, result, max_side=overlay_max_side)
        visualize.save_rgb(os.path.join(output, "overlays", name + ".png"), picture)
    return {"file": path, "frame": None, **result.record()}


def _predict_video(counter, path, name, output, videos, every, bar) -> list[dict]:
    frames = videos.get(path) or media.VideoFrames(path, every=every)
    os.makedirs(os.path.join(output, "videos"), exist_ok=True)
    writer = media.VideoWriter(
        os.path.join(output, "videos", name + ".mp4"), fps=max(frames.fps / every, 1.0)
    )
    rows = []
    try:
        for index, rgb in frames:
            result = counter.count_rgb(rgb)
            frame_picture = visualize.prediction_overlay(rgb, result, max_side=1280)
            writer.write(frame_picture)
            rows.append({"file": path, "frame": index, **result.record()})
            bar.step(f"{path} frame {index}")
    finally:
        writer.close()
    plot = os.path.join(output, "videos", name + "_counts.png")
    drawn = visualize.count_plot(
        plot,
        [r["frame"] for r in rows],
        [r["count"] for r in rows],
        fps=frames.fps,
        title=os.path.basename(path),
    )
    if not drawn:
        log(f"{plot}: not drawn, matplotlib is missing (pip install 'crowdjax[plots]')")
    return rows


def _write_tables(output: str, rows: list[dict], failures: list[dict]) -> None:
    with open(os.path.join(output, "counts.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "frame", "count", "height", "width"])
        for r in rows:
            frame = "" if r["frame"] is None else r["frame"]
            writer.writerow([r["file"], frame, f"{r['count']:.3f}", r["height"], r["width"]])
    with open(os.path.join(output, "counts.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(output, "failed.json"), "w") as f:
        json.dump(failures, f, indent=1)


def main(argv):
    inputs = argv[1:]
    if not inputs:
        raise app.UsageError("name at least one image, folder or video")
    console.setup(_OUTPUT.value)
    counter = prediction.Counter.load(
        _CHECKPOINT.value,
        config=_CONFIG.value,
        max_pixels=_MAX_PIXELS.value,
        margin=_MARGIN.value,
    )
    info = counter.checkpoint_info
    log(f"model {counter.config.method} from {info['path']} ({info['kind']} step {info['step']})")
    rows, failures = predict_files(
        counter,
        inputs,
        _OUTPUT.value,
        every=_EVERY.value,
        overlays=_OVERLAYS.value,
        overlay_max_side=_OVERLAY_SIDE.value,
    )
    images = len({r["file"] for r in rows})
    log(f"counted {len(rows)} images or frames of {images} files; results in {_OUTPUT.value}")
    if failures:
        log(f"{len(failures)} input(s) could not be read:")
        for failure in failures:
            log(f"  {failure['error']}")
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
