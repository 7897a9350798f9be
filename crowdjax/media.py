"""The pictures and videos a user has: finding them, reading them as RGB, writing video.

Images: jpg, png, bmp, webp, tif. Any of gray, gray + alpha, RGB, RGBA, 8 or 16 bits per channel
becomes RGB uint8 [H, W, 3] (`crowdjax.data.decode.decode_rgb`, the data-set builders' decoder).
Unlike the builders, a JPEG's EXIF orientation is applied (`apply_exif`), so a phone picture is
counted upright, the way viewers show it. Videos (mp4, avi, mov, mkv, webm, ...) are
read with OpenCV, every n-th frame.

Untrusted files: an image whose header claims more than `max_pixels` pixels (a decompression
bomb: a few kB that decode to gigabytes) is refused before it is decoded (`crowdjax.image_headers`
reads the header of PNG, JPEG, BMP, WebP, GIF and TIFF; other formats are checked after decoding,
within OpenCV's own limit of 2^30 pixels). Any file name works: images are read and written
through Python's file functions, and a name OpenCV cannot take (bytes that are not UTF-8, which
crash its path conversion) reaches OpenCV's video functions through a temporary ASCII name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from crowdjax import image_headers, storage
from crowdjax.data import decode, io

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# Most pixels of an image or video frame read from a file: 16384 x 16384, i.e. 0.8 GB as RGB
# uint8 and 3.2 GB normalised; above, a file is refused before decoding.
DEFAULT_MAX_IMAGE_PIXELS = 2**28


class PixelLimitError(io.DataError):
    """An image or frame has more pixels than allowed; refused before it is decoded."""


def check_pixels(size: tuple[int, int], max_pixels: int, *, name: str, what: str = "") -> None:
    """Raises PixelLimitError, naming `name`, if `size` (h, w) holds more than `max_pixels`."""
    h, w = size
    if h * w > max_pixels:
        raise PixelLimitError(
            f"{name}: {what or 'image'} of {h} x {w} = {h * w} pixels is over the limit of "
            f"{max_pixels} (raise --max_image_pixels if the file is trusted)"
        )


def printable(text: str) -> str:
    """`text` as valid Unicode: the bytes of a file name that are not UTF-8 (which Python keeps
    as lone surrogates) become \\xNN escapes, so the name can be printed and written as UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # Another lone surrogate, not a byte Python escaped.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_file_name(text: str) -> str:
    """A file name any file system and OpenCV take for `text`: printable (see `printable`), with
    path separators, control characters and the characters Windows reserves replaced by '_'."""
    text = printable(text)
    return "".join("_" if c in '<>:"/\\|?*' or ord(c) < 32 or ord(c) == 127 else c for c in text)


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


def read_image(path: str, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file -> RGB uint8 [H, W, 3].

    Args:
      path: the file (any name: it is read with Python's `open`, never by OpenCV).
      max_pixels: refuse an image of more pixels, from its header before decoding when the
        format is one `image_headers.image_size` reads.

    Raises:
      PixelLimitError: the image is larger than `max_pixels`.
      DataError: missing, unreadable or corrupt file, naming it.
    """
    name = printable(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise io.DataError(f"{name}: cannot read ({e.strerror or e})") from e
    return decode_image(data, name=name, max_pixels=max_pixels)


def decode_image(
    data: bytes, *, name: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Encoded image bytes (a file's or an upload's) -> RGB uint8 [H, W, 3], EXIF applied.

    Raises:
      PixelLimitError: the image is larger than `max_pixels` (from its header before decoding
        when `image_headers.image_size` reads the format).
      DataError: empty, corrupt or not an image, naming `name`.
    """
    size = image_headers.image_size(data)
    if size is not None:
        check_pixels(size, max_pixels, name=name, what="image (from its header)")
    try:
        rgb = decode.decode_rgb(data, apply_exif=True, name=name)
    except cv2.error as e:  # E.g. a header over OpenCV's own pixel limit.
        raise io.DataError(f"{name}: OpenCV cannot decode it ({str(e).strip()})") from e
    check_pixels(rgb.shape[:2], max_pixels, name=name)
    return rgb


def write_image(path: str, rgb: np.ndarray) -> None:
    """Writes an RGB uint8 image, encoded by the extension of `path` (any name: written with
    Python's `open`, never by OpenCV). Raises OSError if it cannot."""
    try:
        encoded = io.encode_image(rgb, ext=os.path.splitext(path)[1] or ".png")
    except io.DataError as e:
        raise OSError(f"{printable(path)}: OpenCV cannot encode this image") from e
    if not storage.is_local(path):  # A cloud --output: one upload.
        storage.path(path).write_bytes(encoded)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(encoded)


@contextlib.contextmanager
def _opencv_name(path: str) -> Iterator[str]:
    """A name of `path` that OpenCV can take: `path` itself, or for a name that is not valid
    UTF-8 (OpenCV crashes converting it) a link to it under a temporary ASCII name."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        with tempfile.TemporaryDirectory() as folder:
            ext = os.path.splitext(path)[1].lower()
            link = os.path.join(folder, "input" + (ext if kind_of(ext) else ""))
            try:
                os.symlink(os.path.abspath(path), link)
            except OSError as e:
                raise io.DataError(
                    f"{printable(path)}: its name is not UTF-8 and cannot be linked for OpenCV "
                    f"({e.strerror or e}); rename the file"
                ) from e
            yield link
    else:
        yield path


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
      PixelLimitError: its frames are larger than `max_pixels`.
      DataError: the file cannot be opened as a video, or holds no frame.
    """

    def __init__(self, path: str, *, every: int = 1, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.name = printable(path)
        if not os.path.isfile(path):
            raise io.DataError(f"{self.name}: file not found")
        self.path, self.every = path, every
        with _opencv_name(path) as name:
            capture = cv2.VideoCapture(name)
            if not capture.isOpened():
                raise io.DataError(f"{self.name}: cannot be opened as a video")
            fps = capture.get(cv2.CAP_PROP_FPS)
            size = (capture.get(cv2.CAP_PROP_FRAME_HEIGHT), capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            self.fps = float(fps) if fps and fps > 0 else 25.0
            self.frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
            capture.release()
        check_pixels(tuple(int(s) for s in size), max_pixels, name=self.name, what="video frame")

    @property
    def selected(self) -> int:
        """How many frames are read (from the declared count)."""
        return -(-self.frames // self.every)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        index = read = 0
        with _opencv_name(self.path) as name:
            capture = cv2.VideoCapture(name)
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
            raise io.DataError(f"{self.name}: the video holds no readable frame")


class VideoWriter:
    """Writes RGB uint8 frames of one size to an .mp4 (MPEG-4 part 2, which OpenCV's wheels can
    write) at `fps`. A `path` OpenCV cannot take (not UTF-8, or in a cloud bucket: OpenCV writes
    only local files) is written under a temporary local name and moved (uploaded) there by
    `close`."""

    def __init__(self, path: str, *, fps: float):
        self.path, self.fps, self._writer = path, fps, None
        self._folder = None
        try:
            path.encode("utf-8")
            self._target = path if storage.is_local(path) else None
        except UnicodeEncodeError:
            self._target = None
        if self._target is None:
            self._folder = tempfile.mkdtemp()
            self._target = os.path.join(self._folder, "video.mp4")

    def write(self, rgb: np.ndarray) -> None:
        if self._writer is None:
            h, w = rgb.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(self._target, fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"{printable(self.path)}: OpenCV cannot write this video")
            self._size = (h, w)
        if rgb.shape[:2] != self._size:
            rgb = cv2.resize(rgb, self._size[::-1], interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self._folder is not None and storage.is_local(self.path):
                shutil.move(self._target, self.path)
            elif self._folder is not None:
                with open(self._target, "rb") as f:
                    storage.path(self.path).write_bytes(f.read())
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
