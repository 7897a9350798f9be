"""Where a run's files live: a local path or any filesystem `etils.epath` reaches (`gs://`,
`s3://`, ...), the path library orbax itself uses, so a workdir, `--output` or a data dir may
be a cloud bucket.

Every file a run, an evaluation, a preparation or a prediction writes or reads goes through
here or through `epath.Path` (`path`). Local paths behave exactly as they did with `open` and
`os`: a file written whole (`write_atomic`) goes to a temporary file that replaces the old one;
a file lines are appended to (`AppendedFile`) is an ordinary file opened for appending.

Cloud objects cannot be appended to or renamed atomically, but an upload is all or nothing:
`write_atomic` uploads the object whole, and an `AppendedFile` keeps its text and uploads it
whole from a background thread at most every `AppendedFile.upload_every` seconds (and when it
is closed), so a run killed with SIGKILL loses at most those seconds of appended lines (a
resumed run logs its steps after the checkpoint again; `predict.py --resume` counts again the
inputs its tables lack).

gs:// goes through fsspec's `gcsfs` when TensorFlow is not installed (with TensorFlow, epath
uses TensorFlow's GCS filesystem unless `EPATH_USE_TF=false`). fsspec's listing cache is off for
gs://: the bucket is written by others too (orbax's array data goes through tensorstore, not
epath, and other hosts write their files), so a cached listing would miss their files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading

import fsspec
from etils import epath

# Set before the first gs:// filesystem is made (epath caches it): see the module doc.
fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)


def path(p: str | os.PathLike) -> epath.Path:
    """`p` as an `epath.Path` (local, or gs:// and every scheme epath supports)."""
    return epath.Path(p)


def is_local(p: str | os.PathLike) -> bool:
    """Whether `p` is a path of this machine's filesystem (no `scheme://` prefix)."""
    return "://" not in os.fspath(p)


def absolute(p: str | os.PathLike) -> str:
    """A local path made absolute; a cloud path (already absolute) as it is. `os.path.abspath`
    would turn gs://bucket/run into <cwd>/gs:/bucket/run."""
    return os.path.abspath(p) if is_local(p) else os.fspath(p)


def makedirs(directory: str | os.PathLike) -> None:
    """Creates `directory` and its parents if needed (cloud buckets have no real folders: a
    no-op there beyond what epath does)."""
    path(directory).mkdir(parents=True, exist_ok=True)


def exists(p: str | os.PathLike) -> bool:
    return path(p).exists()


def isdir(p: str | os.PathLike) -> bool:
    return path(p).is_dir()


def isfile(p: str | os.PathLike) -> bool:
    return path(p).is_file()


def listdir(directory: str | os.PathLike) -> list[str]:
    """The names (not paths) in `directory`."""
    return [child.name for child in path(directory).iterdir()]


def read_text(p: str | os.PathLike) -> str:
    return path(p).read_text(encoding="utf-8")


def write_atomic(p: str | os.PathLike, data: str | bytes) -> None:
    """Writes `data` (text as UTF-8) so that readers see the old file or the new one, never a
    part of either: locally a temporary file (synced) and one `os.replace`; in the cloud one
    upload of the whole object (the object changes only when the upload completes)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if not is_local(p):
        path(p).write_bytes(raw)
        return
    temporary = os.fspath(p) + ".tmp"
    try:
        with open(temporary, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, p)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def rmtree(directory: str | os.PathLike) -> None:
    """Removes `directory` and everything in it."""
    if is_local(directory):
        shutil.rmtree(directory)
    else:
        path(directory).rmtree()


def move(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Moves a file or a directory within one filesystem (in the cloud: copies its objects,
    then deletes them, through fsspec: epath's `rename` wants the target's folder to exist, and
    a bucket's folders exist only while they hold objects)."""
    if is_local(source):
        shutil.move(source, target)
        return
    filesystem, inside = fsspec.core.url_to_fs(os.fspath(source))
    _, target_inside = fsspec.core.url_to_fs(os.fspath(target))
    # Copy, then delete: no object is lost if the copy stops half-way (fsspec's `mv` tries
    # GCS's moveTo first, which only some buckets and no emulator support, retrying for
    # seconds per object before it falls back to this).
    filesystem.copy(inside, target_inside, recursive=True)
    filesystem.rm(inside, recursive=True)


class AppendedFile:
    """A text file that lines are appended to (see the module doc).

    Local: an ordinary file opened for appending; `flush(sync=True)` also syncs it to disk.
    Cloud: the whole text (what the object held, then every `write`) is uploaded by a background
    thread at most every `upload_every` seconds when it changed, and on `close`. Writes never
    wait for an upload, so a logging handler may write here from any thread.
    """

    upload_every = 5.0

    def __init__(self, p: str | os.PathLike):
        self.path = os.fspath(p)
        self._file = None
        if is_local(self.path):
            self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115
            return
        target = path(self.path)
        if target.exists():
            self._parts = [target.read_text(encoding="utf-8")]
        else:  # As opening for appending does: the file exists from now on.
            target.write_text("", encoding="utf-8")
            self._parts = []
        self._written = self._uploaded = 0  # Counts of writes: what changed since the upload.
        self._lock = threading.Lock()  # Guards the parts.
        self._upload_lock = threading.Lock()  # One upload at a time, newest text last.
        self._closed = threading.Event()
        self._uploader = threading.Thread(target=self._upload_loop, daemon=True)
        self._uploader.start()

    def write(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text)
            return
        with self._lock:
            self._parts.append(text)
            self._written += 1

    def flush(self, *, sync: bool = False) -> None:
        """Local: flushes (and with `sync`, fsyncs) the file. Cloud: nothing; the background
        thread uploads (call `upload` to upload now)."""
        if self._file is not None:
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())

    def upload(self) -> None:
        """Cloud: uploads the whole text now if it changed since the last upload."""
        if self._file is not None:
            return
        with self._upload_lock:
            with self._lock:
                if self._written == self._uploaded:
                    return
                text, written = "".join(self._parts), self._written
                self._parts = [text]
            path(self.path).write_text(text, encoding="utf-8")
            self._uploaded = written

    def _upload_loop(self) -> None:
        while not self._closed.wait(self.upload_every):
            with contextlib.suppress(Exception):  # A failed upload is retried at close.
                self.upload()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            return
        if not self._closed.is_set():
            self._closed.set()
            self._uploader.join()
            self.upload()


def create_new(p: str | os.PathLike, data: str) -> bool:
    """Creates file `p` holding `data` unless it exists; False when it does. Locally one
    `O_CREAT | O_EXCL` open; in the cloud an upload on the condition that no object of that name
    exists (GCS's `ifGenerationMatch=0`, through fsspec's exclusive mode "xb", which epath's
    `open` lacks), so of two racing creators exactly one wins."""
    if is_local(p):
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(data)
        return True
    if exists(p):
        return False
    filesystem, inside = fsspec.core.url_to_fs(os.fspath(p))
    try:
        with filesystem.open(inside, "xb") as f:
            f.write(data.encode("utf-8"))
    except FileExistsError:
        return False
    return True


def remove(p: str | os.PathLike) -> None:
    """Removes file `p` (FileNotFoundError when it is not there)."""
    if is_local(p):
        os.remove(p)
    elif not exists(p):
        raise FileNotFoundError(p)
    else:
        path(p).unlink()
