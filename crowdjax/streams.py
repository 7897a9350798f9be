"""Live video sources: stream URLs and cameras, read so that counting always sees a fresh frame.

A source is a URL that OpenCV's FFmpeg backend reads (`rtsp://`, `http(s)://` MJPEG or HLS,
`rtmp://`, `udp://`, ...) or a camera index (`camera:0`, read by OpenCV's default backend).

Fresh frames: a live source does not wait for its reader. OpenCV and FFmpeg buffer what arrives,
so a loop that counts (slower than the camera films) and then reads the next frame falls further
behind each frame: after a minute it counts what happened seconds ago. `LiveStream` reads in a
thread of its own, as fast as the source sends: every frame is taken off the wire (`grab`, which
demuxes without decoding), the selected ones (`every`-th frame, or one each `interval` seconds)
are decoded into a one-frame slot, and a frame the counter has not taken by the time the next
selected one arrives is dropped (counted in `dropped`). The counter takes the slot: the newest
selected frame, at most one frame old.

Drops: when a read fails (the server closed the connection, the network stalled past `timeout`)
the source is opened again after a pause that doubles from `first_wait` up to `max_wait`, each
attempt logged as a warning, at most `attempts` times in a row; then the stream counts as lost
(`StreamLost`). A source that does not open is tried `FIRST_OPEN_RETRIES` times more the same
way (0.5 + 1 + 2 s of pauses by default), then raises `StreamError`, naming it.

A password in a URL (`rtsp://user:secret@host/...`) is never printed or written: names show it
as `***`.
"""

from __future__ import annotations

import datetime
import re
import threading
import time
import urllib.parse
from collections.abc import Callable

import cv2
import numpy as np

from crowdjax import media
from crowdjax.data import io
from crowdjax.metric_writers import log

_URL = re.compile(r"^(rtsps?|rtmps?|https?|udp|tcp|srt|rtp)://", re.IGNORECASE)
_CAMERA = re.compile(r"^camera:(\d+)$")
# A source that does not open is tried this many times more (at most `attempts`), with the
# pauses of a reconnection: one that restarts as counting starts is waited for, a wrong
# address fails in seconds.
FIRST_OPEN_RETRIES = 3


class StreamError(io.DataError):
    """A live source cannot be opened."""


class StreamLost(io.DataError):
    """A live source dropped and did not come back within its reconnection attempts."""


def is_stream(source: str) -> bool:
    """Whether `source` names a live source: a stream URL or `camera:<index>`."""
    return bool(_URL.match(source) or _CAMERA.match(source))


def camera(index: int) -> str:
    """The name of camera `index` as an input (`camera:<index>`)."""
    return f"camera:{index}"


def display_name(source: str) -> str:
    """`source` as printed and written to the tables: a URL's password replaced by `***`."""
    parts = urllib.parse.urlsplit(source)
    if parts.password is None:
        return media.printable(source)
    host = parts.netloc.rsplit("@", 1)[1]
    netloc = f"{parts.username}:***@{host}"
    return media.printable(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))


def output_name(source: str) -> str:
    """A file name for the outputs of `source`: host, port and path of a URL ('/' -> '__'),
    `camera_<index>` for a camera; no user name or password."""
    camera_index = _CAMERA.match(source)
    if camera_index:
        return f"camera_{camera_index.group(1)}"
    parts = urllib.parse.urlsplit(source)
    host = parts.netloc.rsplit("@", 1)[-1]
    pieces = [host, *[p for p in parts.path.split("/") if p]]
    return "__".join(media.safe_file_name(p) for p in pieces) or "stream"


def time_stamp(seconds: float) -> str:
    """A wall-clock time (seconds since the epoch) as ISO 8601 UTC with milliseconds."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds")


class LiveStream:
    """The frames of a live source, newest first (see the module doc).

    Args:
      source: a stream URL or `camera:<index>`.
      every: select every n-th frame the source sends (frames numbered from 0 as read, across
        reconnections).
      interval: if > 0, select one frame each `interval` seconds instead.
      timeout: seconds to wait for the source to open, or for a frame, before it counts as
        unreachable or dropped (URLs only; OpenCV's camera backends take no timeout).
      attempts: reconnections tried in a row after a drop before the stream counts as lost
        (and at most `FIRST_OPEN_RETRIES` of them when it first opens).
      first_wait, max_wait: the pause before the first reconnection (seconds), doubled at each
        failed attempt up to `max_wait`.
      max_pixels: refuse larger frames (`media.PixelLimitError`).

    Attributes:
      name: the source as printed (`display_name`).
      fps: the frame rate the source declares (25 if none).
      read, dropped, reconnects: frames read off the source, selected frames dropped unread
        because a newer one arrived, reconnections that succeeded.

    Raises:
      StreamError: the source does not open.
      media.PixelLimitError: its frames are larger than `max_pixels`.
    """

    def __init__(
        self,
        source: str,
        *,
        every: int = 1,
        interval: float = 0.0,
        timeout: float = 10.0,
        attempts: int = 10,
        first_wait: float = 0.5,
        max_wait: float = 10.0,
        max_pixels: int = media.DEFAULT_MAX_IMAGE_PIXELS,
    ):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if interval < 0 or timeout <= 0 or attempts < 0:
            raise ValueError(f"need interval >= 0, timeout > 0, attempts >= 0: {locals()}")
        self.source, self.name = source, display_name(source)
        self.every, self.interval, self.timeout = every, interval, timeout
        self.attempts, self.first_wait, self.max_wait = attempts, first_wait, max_wait
        self.max_pixels = max_pixels
        self.read = self.dropped = self.reconnects = 0
        self.error: str | None = None
        start = time.monotonic()
        capture = self._open()
        tries, wait = 1, first_wait
        while capture is None and tries <= min(attempts, FIRST_OPEN_RETRIES):
            log(
                f"warning: {self.name}: cannot open it; trying again in {wait:.1f} s "
                f"(attempt {tries} of {min(attempts, FIRST_OPEN_RETRIES)})"
            )
            time.sleep(wait)
            capture = self._open()
            tries, wait = tries + 1, min(2 * wait, max_wait)
        if capture is None:
            times = "once" if tries == 1 else f"{tries} times"
            if _CAMERA.match(source):
                raise StreamError(f"{self.name}: cannot open the camera (no such device?)")
            raise StreamError(
                f"{self.name}: cannot open the stream (tried {times} in "
                f"{time.monotonic() - start:.1f} s, timeout {timeout:g} s): check the address, "
                "that its server is up, and that it sends video OpenCV's FFmpeg reads"
            )
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 25.0
        size = (capture.get(cv2.CAP_PROP_FRAME_HEIGHT), capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        size = tuple(int(s) for s in size)
        try:
            media.check_pixels(size, max_pixels, name=self.name, what="frame")
        except media.PixelLimitError:
            capture.release()
            raise
        self._slot: tuple[int, float, np.ndarray] | None = None
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._running = True
        self._thread = threading.Thread(target=self._read_loop, args=(capture,), daemon=True)
        self._thread.start()

    def _open(self) -> cv2.VideoCapture | None:
        camera_index = _CAMERA.match(self.source)
        if camera_index:
            capture = cv2.VideoCapture(int(camera_index.group(1)))
        else:
            ms = int(self.timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            capture = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def _selector(self) -> Callable[[int], bool]:
        """Whether the frame of a given index, read now, is selected."""
        if self.interval <= 0:
            return lambda index: index % self.every == 0
        due = 0.0

        def due_now(index: int) -> bool:
            nonlocal due
            now = time.monotonic()
            if now < due:
                return False
            # One frame per interval on a steady clock; after a gap (a reconnection) the next
            # one is an interval away, not a burst catching up.
            due = due + self.interval if due + self.interval > now else now + self.interval
            return True

        return due_now

    def _read_loop(self, capture: cv2.VideoCapture) -> None:
        selected = self._selector()
        index = 0
        try:
            while not self._closing.is_set():
                if not capture.grab():
                    capture.release()
                    capture = self._reconnect(index)
                    if capture is None:
                        return
                    continue
                read_at = time.time()
                if selected(index):
                    ok, bgr = capture.retrieve()
                    if ok and bgr is not None:
                        with self._changed:
                            self.dropped += self._slot is not None
                            self._slot = (index, read_at, bgr)
                            self._changed.notify_all()
                index += 1
                self.read = index
        finally:
            if capture is not None:
                capture.release()
            with self._changed:
                self._running = False
                self._changed.notify_all()

    def _reconnect(self, index: int) -> cv2.VideoCapture | None:
        """The source opened again after a drop, or None (closing, or `attempts` failed)."""
        start = time.monotonic()
        wait = self.first_wait
        for attempt in range(1, self.attempts + 1):
            log(
                f"warning: {self.name}: the stream dropped after {index} frames; reconnecting "
                f"in {wait:.1f} s (attempt {attempt} of {self.attempts})"
            )
            if self._closing.wait(wait):
                return None
            capture = self._open()
            if capture is not None:
                self.reconnects += 1
                log(f"{self.name}: reconnected (attempt {attempt})")
                return capture
            wait = min(2 * wait, self.max_wait)
        self.error = (
            f"{self.name}: the stream dropped after {index} frames and did not come back "
            f"({self.attempts} reconnection attempts in {time.monotonic() - start:.1f} s)"
        )
        return None

    def next(self, timeout: float | None = None) -> tuple[int, float, np.ndarray] | None:
        """The newest selected frame not yet taken: (index, wall-clock time it was read, RGB
        uint8 [H, W, 3]), waiting up to `timeout` seconds (None: until one comes). Returns None
        when none came in time or the stream ended.

        Raises:
          StreamLost: the stream dropped and did not come back.
          media.PixelLimitError: the frame is larger than `max_pixels`.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._slot is not None or not self._running, timeout)
            taken, self._slot = self._slot, None
        if taken is None:
            if not self._running and self.error:
                raise StreamLost(self.error)
            return None
        index, read_at, bgr = taken
        media.check_pixels(bgr.shape[:2], self.max_pixels, name=self.name, what="frame")
        return index, read_at, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    @property
    def running(self) -> bool:
        """False once the stream ended (lost or closed) and its last frame was taken."""
        with self._changed:
            return self._running or self._slot is not None

    def close(self) -> None:
        """Stops reading. Waits briefly for the reader, which may sit in an open or a read
        for up to `timeout` s; it releases the source itself when that returns."""
        self._closing.set()
        self._thread.join(timeout=min(self.timeout, 2.0))

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
