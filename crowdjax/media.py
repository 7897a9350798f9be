"""The pictures and videos a user has: finding them, reading them as RGB, writing video.

Images: jpg, png, bmp, webp, tif. Any of gray, gray + alpha, RGB, RGBA, 8 or 16 bits per channel
becomes RGB uint8 [H, W, 3] (`crowdjax.data.decode.decode_rgb`, the data-set builders' decoder).
Unlike the builders, a JPEG's EXIF orientation is applied (`apply_exif`), so a phone picture is
counted upright, the way viewers show it. Videos (mp4, avi, mov, mkv, webm, ...) are
read with OpenCV, every n-th frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from crowdjax.data import decode, io

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def kind_of(path: str) -> str | None:
    """ "image", "video" or None, from the file name's extension."""
    ext = os.path.splitext(path)[1].lower()
    return "image" if ext in IMAGE_EXTS else "video" if ext in VIDEO_EXTS else None


def find_inputs(paths: Sequence[str]) -> list[str]:
    """The files that `paths` name: files as given (any extension: a wrong one is reported when
    read), folders searched recursively for image and video files, in natural order. A path that
    does not exist is kept, so that reading it reports it."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            inside = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                inside += [os.path.join(root, f) for f in files if kind_of(f)]
            found += sorted(inside, key=lambda p: io.natural_key(os.path.relpath(p, path)))
        else:
            found.append(path)
    return found


def read_image(path: str) -> np.ndarray:
    """An image file -> RGB uint8 [H, W, 3].

    Raises:
      DataError: missing, unreadable or corrupt file, naming it.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise io.DataError(f"{path}: cannot read ({e.strerror or e})") from e
    return decode.decode_rgb(data, apply_exif=True, name=path)


def as_rgb(image: np.ndarray, *, name: str = "<array>") -> np.ndarray:
    """A numpy image in RGB channel order -> RGB uint8 [H, W, 3].

    Accepts [H, W] gray, [H, W, 1], [H, W, 3] RGB or [H, W, 4] RGBA; uint8, uint16 (scaled by
    1/257) or float in [0, 1] (as matplotlib and scikit-image give them).
    """
    image = np.asarray(image)
    if image.dtype.kind == "f":
        lo, hi = float(np.nanmin(image, initial=0.0)), float(np.nanmax(image, initial=0.0))
        if lo < 0.0 or hi > 1.0 or not np.isfinite(image).all():
            raise ValueError(
                f"{name}: a float image must hold values in [0, 1], got [{lo:.3g}, {hi:.3g}]; "
                "pass uint8 for 0-255 values"
            )
        image = np.round(image * 255.0).astype(np.uint8)
    elif image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"{name}: unsupported image dtype {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"{name}: expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {image.shape}"
        )
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


class VideoFrames:
    """Every `every`-th frame of a video file, as (frame index, RGB uint8 [H, W, 3]).

    Attributes:
      fps: frames per second the file declares (25 if it declares none).
      frames: the frame count the file declares (0 if unknown; a count, not a promise).

    Raises:
      DataError: the file cannot be opened as a video, or holds no frame.
    """

    def __init__(self, path: str, *, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if not os.path.isfile(path):
            raise io.DataError(f"{path}: file not found")
        self.path, self.every = path, every
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise io.DataError(f"{path}: cannot be opened as a video")
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        capture.release()

    @property
    def selected(self) -> int:
        """How many frames are read (from the declared count)."""
        return -(-self.frames // self.every)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        capture = cv2.VideoCapture(self.path)
        index = read = 0
        try:
            while True:
                if index % self.every == 0:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    read += 1
                    yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                elif not capture.grab():  # Skipped frames are not decoded.
                    break
                index += 1
        finally:
            capture.release()
        if read == 0:
            raise io.DataError(f"{self.path}: the video holds no readable frame")


class VideoWriter:
    """Writes RGB uint8 frames of one size to an .mp4 (MPEG-4 part 2, which OpenCV's wheels can
    write) at `fps`."""

    def __init__(self, path: str, *, fps: float):
        self.path, self.fps, self._writer = path, fps, None

    def write(self, rgb: np.ndarray) -> None:
        if self._writer is None:
            h, w = rgb.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(self.path, fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write this video")
            self._size = (h, w)
        if rgb.shape[:2] != self._size:
            rgb = cv2.resize(rgb, self._size[::-1], interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
