"""Counting the inputs a user names (predict.py): every image, every video's frames and live
streams (`crowdjax.stream_prediction`), the outputs of each input, and the failures of one input
named without stopping the others.

What a run writes is described in predict.py's docstring; the tables and how they survive a kill
or a full disk in `crowdjax.count_table`. Output names come from input names through
`media.safe_file_name`, and every path reaches OpenCV through `crowdjax.media`, so any file name
works. The output folder may be a cloud one (gs://..., `crowdjax.storage`): tables, overlays and
plots are uploaded; a video is written by OpenCV to a local temporary file (it writes only local
files) and uploaded when it is complete. Inputs are local files and folders.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import threading
import time

import cv2
import jax
import numpy as np

from crowdjax import count_table, media, storage, stream_prediction, streams, visualize, zones
from crowdjax.data import io
from crowdjax.metric_writers import log


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
    line (or its file name), extension dropped, '/' -> '__', made a safe file name for any input
    name (`media.safe_file_name`: bytes that are not UTF-8 and reserved characters replaced)."""
    roots = [os.path.abspath(p) for p in inputs if os.path.isdir(p)]
    names, used = {}, set()
    for path in paths:
        if streams.is_stream(path):
            base = streams.output_name(path)
        else:
            full = os.path.abspath(path)
            root = next((r for r in roots if full.startswith(r + os.sep)), None)
            rel = os.path.relpath(full, root) if root else os.path.basename(full)
            parts = os.path.splitext(rel)[0].split(os.sep)
            base = "__".join(media.safe_file_name(part) for part in parts) or "input"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        names[path] = name
    return names


def failure_kind(error: BaseException) -> str | None:
    """What went wrong with one input, as failed.json names it, or None for an error that must
    end the run (a full disk, a bug): then the inputs counted so far stay in the tables."""
    if isinstance(error, media.PixelLimitError):
        return "pixel_limit"
    if isinstance(error, zones.ZoneError):
        return "zones"
    if isinstance(error, MemoryError) or (
        isinstance(error, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(error)
    ):
        return "out_of_memory"
    if isinstance(error, UnicodeError):
        return "file_name"
    if isinstance(error, streams.StreamLost):
        return "stream_lost"
    if isinstance(error, cv2.error):
        return "opencv"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return None
    if isinstance(error, io.DataError | ValueError):  # Including a missing file.
        return "unreadable"
    if isinstance(error, OSError):
        return "io"
    return None


def _failure_message(file: str, kind: str, error: BaseException) -> str:
    message = media.printable(str(error).strip()) or type(error).__name__
    if kind == "out_of_memory":
        message = f"out of memory ({type(error).__name__}: {message[:300]}); lower --max_pixels"
    return message if message.startswith(file) else f"{file}: {message}"


def predict_files(
    counter,
    inputs,
    output,
    *,
    every=1,
    overlays=True,
    overlay_max_side=1600,
    resume=False,
    stream_options=None,
    stop=None,
    zone_set=None,
):
    """Counts every image, video and live stream that `inputs` name; writes the outputs (see
    the module doc).

    An input that fails (see `failure_kind`) is named in failed.json and the others go on; the
    rows of each input are on disk as soon as it is counted (`crowdjax.count_table`), a live
    stream's as each frame is. Files are counted first, then streams in the order given.

    Args:
      counter: the model (`prediction.Counter`); its `max_image_pixels` limits every image.
      inputs: files and folders as given on the command line.
      output: the output folder.
      every: count every n-th frame of videos.
      overlays: write overlay PNGs of images.
      overlay_max_side: long side of overlays (px).
      resume: keep the tables of an earlier run in `output` and skip the inputs they hold
        (never a live stream: its new rows are appended).
      stream_options: how live streams are read and how long they are counted
        (`stream_prediction.StreamOptions`; default: every frame until stopped).
      stop: an event that ends the run when set (after the stream frame in hand; the tables
        are written). While a stream is counted, SIGINT and SIGTERM set it.
      zone_set: count per zone too (`crowdjax.zones.ZoneSet`): columns, records and overlays.

    Returns:
      (rows, failures): one dict per image or counted frame (an earlier run's included), and
      {"file", "kind", "error"} per input that failed in this run.
    """
    files = media.find_inputs(inputs)
    names = output_names(files, inputs)
    table = count_table.CountTable(output, resume=resume, columns=table_columns(counter, zone_set))
    counted = table.counted
    todo = [p for p in files if not streams.is_stream(p) and media.printable(p) not in counted]
    todo += [path for path in files if streams.is_stream(path)]
    stream_options = stream_options or stream_prediction.StreamOptions(every=every)
    stop = stop or threading.Event()
    if len(todo) < len(files):
        log(f"resuming: {len(files) - len(todo)} input(s) already counted in {output}")
    try:
        videos = {}
        total = 0
        for path in todo:
            if media.kind_of(path) == "video" and not streams.is_stream(path):
                try:
                    videos[path] = media.VideoFrames(
                        path, every=every, max_pixels=counter.max_image_pixels
                    )
                    total += max(videos[path].selected, 1)
                except Exception as e:
                    if failure_kind(e) is None:
                        raise
                    total += 1  # Reported when read.
            else:
                total += 1
        bar = ProgressBar(total)
        for number, path in enumerate(todo):
            if stop.is_set():
                log(f"stopped: {len(todo) - number} input(s) not counted")
                break
            file = streams.display_name(path) if streams.is_stream(path) else media.printable(path)
            try:
                if streams.is_stream(path):
                    records = []  # Added to the table frame by frame.
                    with stream_prediction.StopSignals(stop) as signals:
                        stream_prediction.count_stream(
                            path,
                            functools.partial(_count_frame, counter, file=file, zone_set=zone_set),
                            table.add,
                            output=output,
                            name=names[path],
                            options=stream_options,
                            stop=stop,
                            max_pixels=counter.max_image_pixels,
                        )
                    if signals.reason:
                        log(f"{signals.reason}: stopped; the tables are written")
                    bar.step(file)
                elif media.kind_of(path) == "video":
                    records = _predict_video(
                        counter, path, names[path], output, videos, every, bar, zone_set
                    )
                else:
                    records = [
                        _predict_image(
                            counter, path, names[path], output, overlays, overlay_max_side, zone_set
                        )
                    ]
                    bar.step(file)
            except Exception as e:
                kind = failure_kind(e)
                if kind is None:
                    raise
                table.fail(file, kind, _failure_message(file, kind, e))
                bar.step(file)
                continue
            table.add(records)
        bar.close()
    except BaseException:
        table.close()
        raise
    table.finish()
    return table.records, table.failures


def table_columns(counter, zone_set=None) -> tuple[str, ...]:
    """The counts.csv columns of a run: with the interval's when `counter` has test-time
    variants (`crowdjax.tta.TTACounter`), and the zones' of `zone_set`."""
    return count_table.table_columns(
        interval=hasattr(counter, "variants"),
        zones=tuple(zone_set.names) if zone_set is not None else (),
        per_m2=zone_set is not None and zone_set.has_area,
    )


def count_frame(counter, rgb, *, name: str, zone_set=None):
    """One image or video frame counted, with its per-zone counts (`result.zones`) when
    `zone_set` is given: the one path of images, videos and streams.

    Raises:
      zones.ZoneError: a zone lies outside this image; and what `counter.count_rgb` raises.
    """
    result = counter.count_rgb(rgb, name=name)
    if zone_set is not None:
        try:
            result.zones = zones.count_in_zones(result, zone_set)
        except zones.ZoneError as e:
            raise zones.ZoneError(f"{name}: {e}") from e
    return result


def _predict_image(counter, path, name, output, overlays, overlay_max_side, zone_set) -> dict:
    file = media.printable(path)
    rgb = media.read_image(path, max_pixels=counter.max_image_pixels)
    result = count_frame(counter, rgb, name=file, zone_set=zone_set)
    if overlays:
        picture = visualize.prediction_overlay(
            rgb, result, max_side=overlay_max_side, zone_set=zone_set
        )
        media.write_image(os.path.join(output, "overlays", name + ".png"), picture)
    return {"file": file, "frame": None, **result.record()}


def _predict_video(counter, path, name, output, videos, every, bar, zone_set) -> list[dict]:
    file = media.printable(path)
    frames = videos.get(path) or media.VideoFrames(
        path, every=every, max_pixels=counter.max_image_pixels
    )
    storage.makedirs(os.path.join(output, "videos"))
    writer = media.VideoWriter(
        os.path.join(output, "videos", name + ".mp4"), fps=max(frames.fps / every, 1.0)
    )
    rows = []
    try:
        for index, rgb in frames:
            record, frame_picture = _count_frame(
                counter, rgb, file=file, frame=index, zone_set=zone_set
            )
            writer.write(frame_picture)
            rows.append(record)
            bar.step(f"{file} frame {index}")
    finally:
        writer.close()
    plot = os.path.join(output, "videos", name + "_counts.png")
    drawn = visualize.count_plot(
        plot,
        [r["frame"] for r in rows],
        [r["count"] for r in rows],
        fps=frames.fps,
        title=os.path.basename(file),
    )
    if not drawn:
        log(f"{plot}: not drawn, matplotlib is missing (pip install 'crowdjax[plots]')")
    return rows


def _count_frame(
    counter, rgb: np.ndarray, *, file: str, frame: int, picture: bool = True, zone_set=None
) -> tuple[dict, np.ndarray | None]:
    """One frame of a video or a live stream: its record (with per-zone counts when
    `zone_set` is given) and, with `picture`, the frame annotated with its density or heads,
    zones and count."""
    result = count_frame(counter, rgb, name=f"{file} frame {frame}", zone_set=zone_set)
    annotated = (
        visualize.prediction_overlay(rgb, result, max_side=1280, zone_set=zone_set)
        if picture
        else None
    )
    return {"file": file, "frame": frame, **result.record()}, annotated
