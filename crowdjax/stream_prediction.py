"""Counting a live stream or camera (predict.py with a stream URL or `--camera`).

The frames come from `crowdjax.streams.LiveStream` (newest selected frame, reconnection after a
drop). Each counted frame goes through the same per-frame path as a video's frames (the caller's
`count_frame`: count, record, annotated picture) and its row is appended to the tables at once,
with the wall-clock time the frame was read. A stream is counted until `duration` seconds or
`max_frames` counted frames, or until `stop` is set: by SIGINT (Ctrl-C) or SIGTERM while
`StopSignals` is installed, so that a stopped run still writes every table (a second Ctrl-C
aborts at once, the rows counted staying on disk).

Writes, per stream, to `<output>/streams/`: `<name>.mp4` (the counted frames annotated, with
`video`) and `<name>_counts.png` (count over time; needs matplotlib).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import numpy as np

from crowdjax import media, storage, streams, visualize
from crowdjax.metric_writers import log

# How often the loop wakes while it waits for a frame, to see a stop or the end of `duration`.
_POLL_S = 0.25


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """How live sources are read and counted (predict.py's stream flags).

    Attributes:
      every: count every n-th frame the source sends.
      interval: if > 0, count one frame each `interval` seconds instead.
      duration: stop counting a stream after this many seconds (0: no limit).
      max_frames: stop after this many counted frames (0: no limit).
      video: write the annotated counted frames as an .mp4.
      timeout: seconds to open a URL, or to wait for its next frame before it counts as dropped.
      attempts: reconnections tried in a row after a drop.
      first_wait: the pause before the first reconnection (s), doubled up to 10 s.
    """

    every: int = 1
    interval: float = 0.0
    duration: float = 0.0
    max_frames: int = 0
    video: bool = False
    timeout: float = 10.0
    attempts: int = 10
    first_wait: float = 0.5

    def __post_init__(self):
        if self.every < 1 or self.interval < 0 or self.duration < 0 or self.max_frames < 0:
            raise ValueError(f"need every >= 1 and interval, duration, max_frames >= 0: {self}")
        if self.interval > 0 and self.every != 1:
            raise ValueError("give --every or --interval, not both")


class StopSignals:
    """While entered (main thread only), SIGINT and SIGTERM set `stop` instead of ending the
    process; a second SIGINT raises KeyboardInterrupt. The previous handlers come back on exit.

    Attributes:
      reason: the name of the signal that set `stop`, or None.
    """

    def __init__(self, stop: threading.Event):
        self.stop, self.reason = stop, None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # No output here: a print interrupted by a signal and a print from its handler would
        # be a reentrant write to the same stream (RuntimeError). The loop reports the stop.
        del frame
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        self.stop.set()


def count_stream(
    source: str,
    count_frame: Callable[..., tuple[dict, np.ndarray | None]],
    add: Callable[[list[dict]], None],
    *,
    output: str,
    name: str,
    options: StreamOptions,
    stop: threading.Event,
    max_pixels: int = media.DEFAULT_MAX_IMAGE_PIXELS,
) -> int:
    """Counts the frames of one live source until its limits or `stop` (see the module doc).

    Args:
      source: a stream URL or `camera:<index>`.
      count_frame: `count_frame(rgb, frame=index, picture=bool)` -> (record with "file" and
        "frame", the annotated frame or None): the per-frame path videos take.
      add: appends records to the tables.
      output: the output folder; name: the stream's file name for its outputs.
      options: the limits and how frames are selected.
      stop: counting ends once it is set (after the frame in hand).
      max_pixels: refuse larger frames.

    Returns:
      The number of frames counted.

    Raises:
      streams.StreamError: the source does not open.
      streams.StreamLost: it dropped and did not come back; the rows counted stay in the tables.
    """
    stream = streams.LiveStream(
        source,
        every=options.every,
        interval=options.interval,
        timeout=options.timeout,
        attempts=options.attempts,
        first_wait=options.first_wait,
        max_pixels=max_pixels,
    )
    folder = os.path.join(output, "streams")
    storage.makedirs(folder)
    writer = None
    if options.video:
        rate = 1.0 / options.interval if options.interval else stream.fps / options.every
        writer = media.VideoWriter(os.path.join(folder, name + ".mp4"), fps=max(rate, 1.0))
    log(f"{stream.name}: counting {_limits(options)} ({stream.fps:g} fps declared)")
    start = time.monotonic()
    seconds, counts = [], []
    reason = "stopped"
    try:
        while True:
            elapsed = time.monotonic() - start
            if stop.is_set():
                break
            if options.duration and elapsed >= options.duration:
                reason = f"{options.duration:g} s reached"
                break
            if options.max_frames and len(counts) >= options.max_frames:
                reason = f"{options.max_frames} frames reached"
                break
            wait = min(_POLL_S, options.duration - elapsed) if options.duration else _POLL_S
            frame = stream.next(timeout=wait)
            if frame is None:
                continue
            index, read_at, rgb = frame
            record, picture = count_frame(rgb, frame=index, picture=writer is not None)
            record = {
                "file": record["file"],
                "frame": index,
                "time": streams.time_stamp(read_at),
                **record,
            }
            add([record])
            if writer is not None:
                writer.write(picture)
            seconds.append(time.monotonic() - start)
            counts.append(record["count"])
            _status(stream, len(counts), record, seconds[-1])
    except streams.StreamLost:
        reason = "lost"
        raise
    finally:
        sys.stderr.write("\n")
        stream.close()
        if writer is not None:
            writer.close()
        log(
            f"{stream.name}: {reason}; counted {len(counts)} frames in "
            f"{time.monotonic() - start:.1f} s, {stream.read} read, {stream.dropped} selected "
            f"ones dropped for newer, {stream.reconnects} reconnection(s)"
        )
        if counts:
            plot = os.path.join(folder, name + "_counts.png")
            if not visualize.count_plot(plot, seconds, counts, fps=1.0, title=stream.name):
                log(f"{plot}: not drawn, matplotlib is missing (pip install 'crowdjax[plots]')")
    return len(counts)


def _limits(options: StreamOptions) -> str:
    what = (
        f"a frame each {options.interval:g} s"
        if options.interval
        else (f"every {options.every}th frame" if options.every > 1 else "every frame")
    )
    until = [f"{options.duration:g} s"] if options.duration else []
    until += [f"{options.max_frames} frames"] if options.max_frames else []
    return f"{what} for {' or '.join(until)}" if until else f"{what} until Ctrl-C"


def _status(stream: streams.LiveStream, counted: int, record: dict, elapsed: float) -> None:
    """One line on stderr, rewritten per counted frame."""
    rate = counted / elapsed if elapsed > 0 else 0.0
    sys.stderr.write(
        f"\r{stream.name[-40:]}: frame {record['frame']} count {record['count']:.1f} | "
        f"{counted} counted, {rate:.2f}/s, {stream.dropped} dropped, "
        f"{stream.reconnects} reconnection(s)   "
    )
    sys.stderr.flush()
