"""A live MJPEG stream over HTTP on this machine, to try predict.py's stream counting without a
camera (and to test it): frames of a video or of images, in a loop, or generated ones.

  python -m crowdjax.mjpeg_server --port=8090 street.mp4          # http://127.0.0.1:8090/stream
  python -m crowdjax.mjpeg_server --port=8090 --fps=10 photos/
  python -m crowdjax.mjpeg_server --port=8090 --drop_every=8 --pause=2   # drops now and then

Each client gets `multipart/x-mixed-replace` parts, one JPEG each, at `--fps` (the format of
IP cameras' MJPEG streams, which OpenCV's FFmpeg reads as `mpjpeg`). Generated frames carry their
number as a strip of black and white squares at the top (`frame_number` reads it back).
`drop` closes every connection and refuses new ones for a pause; `stall` stops sending for a
while, keeping the connections open: the two ways a live stream goes away.
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import threading
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from crowdjax import media

BITS = 16  # Frame numbers up to 65535 in the strip.
SQUARE = 8  # Side of one square of the strip (px): JPEG keeps 8 x 8 blocks of one value.


def numbered_frame(number: int, size: tuple[int, int] = (96, 160)) -> np.ndarray:
    """A generated RGB frame [h, w, 3]: a gradient that moves with `number`, a bright disc per
    few frames (something to count), and `number` as a strip of squares in its top row."""
    h, w = size
    if w < BITS * SQUARE or h < 2 * SQUARE:
        raise ValueError(f"frames need at least {2 * SQUARE} x {BITS * SQUARE} pixels, got {size}")
    x = np.arange(w)[None, :] + 3 * number
    y = np.arange(h)[:, None]
    gray = ((x + y) % 256).astype(np.uint8)
    rgb = np.stack([gray, 255 - gray, np.full_like(gray, 96)], axis=-1)
    rng = np.random.default_rng(number // 5)
    for _ in range(12):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(2 * SQUARE, h))
        cv2.circle(rgb, (cx, cy), 4, (250, 240, 230), -1)
    for bit in range(BITS):
        value = 255 if number >> bit & 1 else 0
        rgb[:SQUARE, bit * SQUARE : (bit + 1) * SQUARE] = value
    return rgb


def frame_number(rgb: np.ndarray) -> int:
    """The number `numbered_frame` wrote into a frame (read back after JPEG compression)."""
    strip = rgb[:SQUARE, : BITS * SQUARE].astype(np.float32).mean(axis=(0, 2))
    squares = strip.reshape(BITS, SQUARE).mean(axis=1)
    return sum(1 << bit for bit in range(BITS) if squares[bit] > 127)


def file_frames(paths: Sequence[str]) -> list[np.ndarray]:
    """The frames of the videos and images that `paths` name (folders searched), in order."""
    frames = []
    for path in media.find_inputs(paths):
        if media.kind_of(path) == "video":
            frames += [rgb for _, rgb in media.VideoFrames(path)]
        else:
            frames.append(media.read_image(path))
    if not frames:
        raise ValueError(f"no image or video frame in {list(paths)}")
    return frames


class MjpegServer:
    """Serves frames as an MJPEG stream at `url` from a thread (a context manager).

    Args:
      frames: frame k of a connection (from 0) -> RGB uint8 image.
      fps: frames sent per second to each client.
      host, port: the address (port 0: a free one).
      drop_after: if set, close each connection after that many frames.
      quality: JPEG quality.

    Attributes:
      sent: frames sent, over all connections; connections: connections served.
    """

    def __init__(
        self,
        frames: Callable[[int], np.ndarray] = numbered_frame,
        *,
        fps: float = 25.0,
        host: str = "127.0.0.1",
        port: int = 0,
        drop_after: int | None = None,
        quality: int = 90,
    ):
        self.frames, self.fps, self.drop_after, self.quality = frames, fps, drop_after, quality
        self.sent = self.connections = 0
        self._generation = 0
        self._refuse_until = self._stall_until = 0.0
        self._lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}/stream"
        # Polled often, so that `close` returns at once.
        serve = lambda: self._httpd.serve_forever(poll_interval=0.05)
        self._thread = threading.Thread(target=serve, daemon=True)

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server._serve(self)

            def log_message(self, *args):  # No line per request on stderr.
                pass

        return Handler

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        with self._lock:
            if time.monotonic() < self._refuse_until:
                handler.close_connection = True
                return  # An empty answer: the client's open fails.
            generation = self._generation
            self.connections += 1
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        handler.close_connection = True
        start = time.monotonic()
        for k in itertools.count():
            if generation != self._generation or (self.drop_after and k >= self.drop_after):
                return
            if time.monotonic() < self._stall_until:
                while time.monotonic() < self._stall_until:
                    time.sleep(0.01)
                start = time.monotonic() - k / self.fps  # Frames missed are gone, no burst.
            bgr = cv2.cvtColor(self.frames(k), cv2.COLOR_RGB2BGR)
            ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            data = jpeg.tobytes()
            part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
            try:
                handler.wfile.write(part + data + b"\r\n")
                handler.wfile.flush()
            except OSError:  # The client went away.
                return
            with self._lock:
                self.sent += 1
            # A steady rate from the connection's start, whatever encoding took.
            delay = start + (k + 1) / self.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def drop(self, pause: float = 0.0) -> None:
        """Closes every connection (after its current frame) and answers nothing to new ones
        for `pause` seconds."""
        with self._lock:
            self._generation += 1
            self._refuse_until = time.monotonic() + pause

    def stall(self, seconds: float) -> None:
        """Sends nothing for `seconds`, connections kept open (a stalled network)."""
        self._stall_until = time.monotonic() + seconds

    def start(self) -> MjpegServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.drop()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> None:
    # argparse, not absl flags: module-level flags would clash with those of other modules a
    # process imports (the tests import this module).
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", help="Videos, images or folders (default: generated)")
    parser.add_argument("--port", type=int, default=8090, help="Port (on --host).")
    parser.add_argument("--host", default="127.0.0.1", help="Address (loopback by default).")
    parser.add_argument("--fps", type=float, default=10.0, help="Frames per second.")
    parser.add_argument("--size", default="480,640", help="Height,width of generated frames.")
    parser.add_argument("--drop_every", type=float, default=0.0, help="Drop clients every s.")
    parser.add_argument("--pause", type=float, default=2.0, help="Refuse clients s after a drop.")
    args = parser.parse_args(argv)
    if args.inputs:
        loop = file_frames(args.inputs)
        frames = lambda k: loop[k % len(loop)]
    else:
        size = tuple(int(s) for s in args.size.split(","))
        frames = lambda k: numbered_frame(k, size)
    with MjpegServer(frames, fps=args.fps, host=args.host, port=args.port) as server:
        print(f"serving {server.url} at {args.fps:g} fps; Ctrl-C ends", flush=True)
        try:
            while True:
                time.sleep(args.drop_every or 3600)
                if args.drop_every:
                    print(f"dropping every client, refusing for {args.pause:g} s", flush=True)
                    server.drop(args.pause)
        except KeyboardInterrupt:
            print(f"sent {server.sent} frames over {server.connections} connections", flush=True)


if __name__ == "__main__":
    main()
