"""A local web page that counts people on the images a person drops on it.

  python -m crowdjax.serve --checkpoint=workdirs/quickstart     # open http://127.0.0.1:8000
  python -m crowdjax.serve --config=configs/uot_shb.py --checkpoint=best_model.pth --port=8080
  python -m crowdjax.serve --checkpoint=workdirs/quickstart --zones=zones.json --tta=flip

The model is loaded once, at start (`prediction.Counter.load`). The page (`serve_page/`) uploads
the chosen images one at a time, showing "n of m", and shows per image the count and the density
heat map or the heads over it (`visualize.prediction_overlay`), or the reason it was refused; it
builds the CSV of the counts itself, in the browser.

Endpoints:
  GET  /, /app.js, /style.css  the page (a fixed list of package files; no path is looked up).
  GET  /api/info               the model and the upload limits, JSON.
  POST /api/count              body: one image file's bytes; header X-File-Name: its name,
                               URL-encoded (shown back, never used as a path). 200: the JSON
                               record {file, count, height, width, windows, [points], overlay (a
                               PNG data URL), [zones], [interval]}; else {file, kind, error} with
                               413 (too many bytes or pixels), 400 (not an image), 503 (busy,
                               out of memory) or 500.

Optional fields: `zones` ({name: count}, with `--zones`, `crowdjax.zones`) and `interval` ({low,
high, spread, disagree}, with `--tta`, `crowdjax.tta`), and whatever the `extras` of `CountService`
add (functions of (image, prediction) whose dicts are merged into the record); the page shows
zones and the interval when present. A zone outside an uploaded image is refused (422, kind
"zones").

Safety: the server binds to 127.0.0.1 unless --host says otherwise, and while bound to a loopback
address it answers only requests whose Host names a loopback address (a page elsewhere cannot reach
it by DNS rebinding) and refuses a POST from another origin. A request body is read only up to
`--max_upload_bytes` (a larger Content-Length is refused unread), the image's pixels are checked
from its header before decoding (`media.decode_image`, `--max_image_pixels`), at most 4 uploads
are held at once and one image is counted at a time, so memory stays bounded whatever arrives.
Nothing from a request but the image's bytes is evaluated: no path, option or config comes from
the client, and nothing is written to disk (images are decoded and overlays encoded in memory).
"""

from __future__ import annotations

import base64
import http.server
import importlib.resources
import ipaddress
import json
import signal
import socket
import threading
import urllib.parse
from collections.abc import Callable, Sequence

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from crowdjax import cli, console, file_prediction, media, prediction, tta, visualize, zones
from crowdjax.data import io
from crowdjax.metric_writers import log

DEFAULT_MAX_UPLOAD_BYTES = 50 * 2**20
# 8192 x 8192: a phone's or a stadium camera's picture, 0.8 GB at most once normalised.
DEFAULT_MAX_IMAGE_PIXELS = 2**26
LOOPBACK_NAMES = ("localhost",)
PAGE_FILES = {  # URL path -> (file in serve_page/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
# The page loads only its own files; overlays arrive as data: URLs.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATUS_OF_KIND = {
    "too_large": 413,
    "pixel_limit": 413,
    "unreadable": 400,
    "zones": 422,
    "out_of_memory": 503,
}

Extra = Callable[[np.ndarray, prediction.Prediction], dict]


class UploadError(Exception):
    """An upload that is not counted: its HTTP status, kind and message (naming the file)."""

    def __init__(self, kind: str, message: str, *, status: int | None = None):
        super().__init__(message)
        self.kind, self.status = kind, status or STATUS_OF_KIND.get(kind, 500)


class CountService:
    """Counts uploaded image bytes with one loaded model, one image at a time.

    Args:
      counter: the model (`prediction.Counter`); its `max_image_pixels` limits each image.
      max_upload_bytes: the most bytes of one upload.
      overlay_max_side: long side (px) of the overlay sent back.
      zone_set: count per zone too (`crowdjax.zones.ZoneSet`), drawn on the overlay.
      extras: functions of (RGB image, prediction) -> dict of fields added to each record, e.g.
        {"zones": {name: count}} or {"interval": {"low", "high", "spread", "disagree"}}.
      max_open_uploads: the most uploads held in memory at once (read or waiting to be
        counted); one more is answered 503 (busy) unread. The page sends one at a time.
    """

    def __init__(
        self,
        counter,
        *,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        overlay_max_side: int = 1024,
        zone_set=None,
        extras: Sequence[Extra] = (),
        max_open_uploads: int = 4,
    ):
        self.counter = counter
        self.max_upload_bytes = int(max_upload_bytes)
        self.overlay_max_side = int(overlay_max_side)
        self.zone_set = zone_set
        self.extras = tuple(extras)
        self._lock = threading.Lock()  # One image at a time: memory stays bounded.
        self.upload_slots = threading.BoundedSemaphore(max_open_uploads)

    def info(self) -> dict:
        """What the page shows and checks before uploading: the model and the limits."""
        info = getattr(self.counter, "checkpoint_info", None) or {}
        return {
            "method": str(self.counter.config.method),
            "step": info.get("step"),
            "max_upload_bytes": self.max_upload_bytes,
            "max_image_pixels": int(self.counter.max_image_pixels),
        }

    def count(self, data: bytes, name: str) -> dict:
        """The JSON record of one uploaded image (see the module doc).

        Raises:
          UploadError: too many bytes or pixels, not an image, out of memory; naming `name`.
        """
        if len(data) > self.max_upload_bytes:
            raise _too_many_bytes(name, len(data), self.max_upload_bytes)
        with self._lock:
            try:
                rgb = media.decode_image(data, name=name, max_pixels=self.counter.max_image_pixels)
                result = file_prediction.count_frame(
                    self.counter, rgb, name=name, zone_set=self.zone_set
                )
                picture = visualize.prediction_overlay(
                    rgb, result, max_side=self.overlay_max_side, zone_set=self.zone_set
                )
                record = page_record(name, result)
                for extra in self.extras:
                    record.update(extra(rgb, result))
            except Exception as e:
                kind = file_prediction.failure_kind(e)
                if kind is None:
                    raise
                message = media.printable(str(e).strip()) or type(e).__name__
                if not message.startswith(name):
                    message = f"{name}: {message}"
                raise UploadError(kind, message) from e
        png = base64.b64encode(io.encode_image(picture, ext=".png")).decode("ascii")
        record["overlay"] = "data:image/png;base64," + png
        return record


def page_record(name: str, result: prediction.Prediction) -> dict:
    """The JSON record the page reads: the prediction's record with its zones as {name: count}
    and its interval fields as one {low, high, spread, disagree}."""
    record = {"file": name, **result.record()}
    if "interval" in record:
        low, high = record.pop("interval")
        spread, disagree = record.pop("spread"), record.pop("disagree")
        record["interval"] = {"low": low, "high": high, "spread": spread, "disagree": disagree}
    if "zones" in record:
        record["zones"] = {zone: value["count"] for zone, value in record["zones"].items()}
    return record


def _too_many_bytes(name: str, size: int, limit: int) -> UploadError:
    return UploadError(
        "too_large",
        f"{name}: file of {size} bytes is over the upload limit of {limit} bytes "
        "(the server's --max_upload_bytes)",
    )


def upload_name(header: str | None) -> str:
    """The file name a page sends (URL-encoded), made printable and short; for messages only."""
    name = urllib.parse.unquote(header or "", errors="replace")
    name = media.safe_file_name(name)[:200]
    return name or "upload"


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(value: str) -> str:
    """The host part of a Host header ("127.0.0.1:8000", "[::1]:8000", "localhost")."""
    return urllib.parse.urlsplit("//" + value).hostname or ""


def page_files() -> dict[str, tuple[bytes, str]]:
    """URL path -> (bytes, content type) of the page, read once from the package."""
    folder = importlib.resources.files("crowdjax") / "serve_page"
    return {path: ((folder / file).read_bytes(), kind) for path, (file, kind) in PAGE_FILES.items()}


def make_handler(service: CountService, *, loopback_only: bool):
    """The request handler class of `service` (see the module doc for the endpoints)."""
    pages = page_files()

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "crowdjax"
        sys_version = ""
        timeout = 120  # A client that stops sending mid-upload frees its thread.

        def log_message(self, format, *args):
            log(f"{self.address_string()} {format % args}")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in SECURITY_HEADERS.items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, value: dict) -> None:
            self._send(status, json.dumps(value).encode("utf-8"), "application/json")

        def _error(self, status: int, kind: str, message: str, name: str = "") -> None:
            self._json(status, {"file": name, "kind": kind, "error": message})

        def _host_allowed(self) -> bool:
            if not loopback_only:
                return True
            return is_loopback(_host_of(self.headers.get("Host", "")))

        def do_GET(self):
            if not self._host_allowed():
                return self._error(403, "forbidden", "this server answers only localhost")
            path = urllib.parse.urlsplit(self.path).path
            if path == "/api/info":
                return self._json(200, service.info())
            if path in pages:
                return self._send(200, *pages[path])
            return self._error(404, "not_found", f"no page {media.printable(path)[:200]}")

        do_HEAD = do_GET

        def do_POST(self):
            if not self._host_allowed():
                return self._error(403, "forbidden", "this server answers only localhost")
            origin = self.headers.get("Origin")
            if origin is not None and urllib.parse.urlsplit(origin).netloc != self.headers.get(
                "Host"
            ):
                return self._error(403, "forbidden", "uploads are taken from this page only")
            if urllib.parse.urlsplit(self.path).path != "/api/count":
                self.close_connection = True  # Its body is not read.
                return self._error(404, "not_found", "POST images to /api/count")
            name = upload_name(self.headers.get("X-File-Name"))
            try:
                length = int(self.headers.get("Content-Length", ""))
                if length < 0:
                    raise ValueError(length)
            except ValueError:
                self.close_connection = True
                return self._error(411, "no_length", f"{name}: send the file with its length", name)
            if length > service.max_upload_bytes:
                self.close_connection = True  # Refused unread.
                error = _too_many_bytes(name, length, service.max_upload_bytes)
                return self._error(error.status, error.kind, str(error), name)
            if not service.upload_slots.acquire(blocking=False):
                self.close_connection = True  # Refused unread.
                message = f"{name}: the server is busy with other uploads; send it again later"
                return self._error(503, "busy", message, name)
            try:
                return self._receive_and_count(name, length)
            finally:
                service.upload_slots.release()

        def _receive_and_count(self, name: str, length: int) -> None:
            data = self.rfile.read(length)
            if len(data) < length:
                self.close_connection = True
                message = f"{name}: the upload ended after {len(data)} of {length} bytes"
                return self._error(400, "incomplete", message, name)
            try:
                record = service.count(data, name)
            except UploadError as e:
                log(f"refused {name}: {e.kind}: {e}")
                return self._error(e.status, e.kind, str(e), name)
            except Exception as e:  # A bug: say so on the page, keep serving.
                log(f"failed on {name}: {type(e).__name__}: {e}")
                message = f"{name}: server error ({type(e).__name__}: {media.printable(str(e))})"
                return self._error(500, "server_error", message[:500], name)
            log(f"counted {name}: {record['count']:.1f}")
            return self._json(200, record)

    return Handler


def make_server(
    service: CountService, *, host: str = "127.0.0.1", port: int = 8000
) -> http.server.ThreadingHTTPServer:
    """A server of `service` bound to (host, port) (port 0: any free one); call serve_forever."""
    handler = make_handler(service, loopback_only=is_loopback(host))
    server_class = http.server.ThreadingHTTPServer
    if ":" in host:  # IPv6.
        server_class = type("Server6", (server_class,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), handler)
    server.daemon_threads = True
    return server


# ----------------------------------------------------------------------------------------------
# Command line.


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined when run as a command, so importing defines none)."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file (default: the run's config.json).", lock_config=True
    )
    flags.DEFINE_string(
        "checkpoint",
        None,
        "A workdir, its best/ or checkpoints/, a step directory, or a .pth file.",
    )
    flags.DEFINE_string(
        "host", "127.0.0.1", "Address to listen on (another than loopback exposes the model)."
    )
    flags.DEFINE_integer("port", 8000, "Port to listen on.")
    flags.DEFINE_integer(
        "max_upload_bytes", DEFAULT_MAX_UPLOAD_BYTES, "Refuse larger uploads (bytes)."
    )
    flags.DEFINE_integer(
        "max_image_pixels",
        DEFAULT_MAX_IMAGE_PIXELS,
        "Refuse larger images (read from the file's header, before decoding).",
    )
    flags.DEFINE_integer(
        "max_pixels", prediction.DEFAULT_MAX_PIXELS, "Most pixels per forward pass (memory bound)."
    )
    flags.DEFINE_integer("overlay_max_side", 1024, "Long side of overlays (px).")
    cli.define_trust_method()
    flags.DEFINE_string("zones", None, "A zones file (crowdjax.zones): count per polygon too.")
    flags.DEFINE_string("tta", "", "Test-time variants, e.g. 'flip,scales=0.8,1.0,1.25'.")
    flags.DEFINE_float(
        "disagreement", tta.DEFAULT_DISAGREEMENT, "Relative spread of the variants that flags."
    )
    flags.DEFINE_float(
        "interval_k", tta.DEFAULT_INTERVAL_K, "The interval is the count +- k spreads."
    )
    flags.mark_flags_as_required(["checkpoint"])


def _interrupt(signum, frame):
    del frame
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        zone_set = zones.load_zones(FLAGS.zones) if FLAGS.zones else None
        variants = tta.Variants.parse(FLAGS.tta)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    console.setup_console()
    options = dict(
        config=FLAGS.config,
        trusted_method=FLAGS.trust_method,
        max_pixels=FLAGS.max_pixels,
        max_image_pixels=FLAGS.max_image_pixels,
    )
    counter = tta.load_counter(
        FLAGS.checkpoint,
        variants=variants if FLAGS.tta else None,
        disagreement=FLAGS.disagreement,
        interval_k=FLAGS.interval_k,
        **options,
    )
    service = CountService(
        counter,
        max_upload_bytes=FLAGS.max_upload_bytes,
        overlay_max_side=FLAGS.overlay_max_side,
        zone_set=zone_set,
    )
    server = make_server(service, host=FLAGS.host, port=FLAGS.port)
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(host):
        log(f"warning: listening on {host}: anyone who can reach this machine can use the model")
    log(f"serving on http://{shown}:{port}/ (Ctrl-C ends)")
    # Ctrl-C and SIGTERM end the server cleanly, also when a script started it in the
    # background (its shell leaves SIGINT ignored, so Python would never see Ctrl-C).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopped")
    finally:
        server.server_close()


if __name__ == "__main__":
    define_flags()
    cli.run(main)
