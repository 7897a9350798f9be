"""Live sources (crowdjax.streams) against an MJPEG stream served on the loopback address by the
test itself (crowdjax.mjpeg_server): what arrives, slow readers, drops, sources that never open.

Generated frames carry their number in a strip of squares (`mjpeg_server.frame_number`), so each
frame read is checked against the frame the server sent, independently of the reader's counts.
No model here: counting streams is tested in tests/test_predict_robust.py.
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from crowdjax import mjpeg_server, streams


@pytest.fixture
def server():
    with mjpeg_server.MjpegServer(fps=50) as live:
        yield live


def _take(stream: streams.LiveStream, n: int, *, pause: float = 0.0) -> list:
    frames = []
    for _ in range(n):
        frame = stream.next(timeout=5)
        assert frame is not None, f"no frame within 5 s after {len(frames)}"
        frames.append(frame)
        time.sleep(pause)
    return frames


def test_mjpeg_over_http_is_read_frame_by_frame(server):
    # OpenCV's FFmpeg backend reads multipart/x-mixed-replace JPEGs (its `mpjpeg` demuxer).
    with streams.LiveStream(server.url, timeout=2) as stream:
        frames = _take(stream, 5)
    for index, read_at, rgb in frames:
        assert rgb.shape == (96, 160, 3) and rgb.dtype == np.uint8
        assert mjpeg_server.frame_number(rgb) == index  # One connection: the k-th frame sent.
        # The frame sent (JPEG quality 90, RGB order kept).
        assert np.abs(rgb.astype(int) - mjpeg_server.numbered_frame(index)).mean() < 6
        assert abs(read_at - time.time()) < 30
    indices = [f[0] for f in frames]
    assert indices == sorted(set(indices))


def test_every_nth_frame_and_one_frame_per_interval(server):
    with streams.LiveStream(server.url, every=3, timeout=2) as stream:
        frames = _take(stream, 4)
    assert all(i % 3 == 0 and mjpeg_server.frame_number(rgb) == i for i, _, rgb in frames)

    interval = 0.15
    with streams.LiveStream(server.url, interval=interval, timeout=2) as stream:
        frames = _take(stream, 4)
    gaps = np.diff([read_at for _, read_at, _ in frames])
    # Due times are `interval` apart; a frame is taken at the first frame (20 ms apart) after
    # its due time, a little later on a busy machine, so gaps vary around `interval`.
    assert gaps.min() > interval / 2 and gaps.mean() > 0.8 * interval, gaps
    assert np.diff([i for i, _, _ in frames]).min() >= 3  # Not every frame.


def test_a_slow_reader_gets_the_newest_frame_not_a_backlog(server):
    # The counter takes 0.2 s per frame while the camera sends 50 frames/s: reading the next
    # frame in line would fall 9 frames further behind each time (a backlog in FFmpeg's buffers).
    with streams.LiveStream(server.url, timeout=2) as stream:
        lags = []
        for _ in range(5):
            index, _, rgb = stream.next(timeout=5)
            lags.append(server.sent - 1 - mjpeg_server.frame_number(rgb))
            time.sleep(0.2)
        dropped = stream.dropped
    # The newest sent is a frame or two away (one in the socket, one being decoded; a few more
    # on a busy machine); a reader of the next frame in line would lag 10, 20, 30, 40 frames.
    assert max(lags) <= 8, lags
    assert dropped >= 4 * 5


def test_a_dropped_stream_reconnects_with_a_warning(server, capsys):
    with streams.LiveStream(server.url, timeout=0.5, first_wait=0.2) as stream:
        before = _take(stream, 3)
        server.drop(pause=0.5)  # The server closes the connection and refuses for a moment.
        after_drop = _take(stream, 3)
        server.stall(1.5)  # Then sends nothing for longer than the read timeout.
        time.sleep(0.2)
        after_stall = _take(stream, 3)
        reconnects = stream.reconnects
    assert reconnects == 2
    out = capsys.readouterr().out
    assert out.count("reconnecting in") >= 2 and out.count("reconnected") == 2, out
    assert f"warning: {server.url}: the stream dropped after" in out
    indices = [f[0] for f in before + after_drop + after_stall]
    assert indices == sorted(set(indices))  # Numbered on across reconnections.
    # A new connection starts at the server's frame 0 again: these came from it.
    assert mjpeg_server.frame_number(after_drop[0][2]) < after_drop[0][0]
    assert server.connections >= 3


def test_a_stream_that_stays_away_is_lost_after_its_attempts():
    live = mjpeg_server.MjpegServer(fps=50).start()
    stream = streams.LiveStream(live.url, timeout=0.5, attempts=2, first_wait=0.1)
    _take(stream, 2)
    live.close()
    start = time.monotonic()
    with pytest.raises(streams.StreamLost, match="2 reconnection attempts") as lost:
        while stream.next(timeout=5) is not None:
            pass
    assert str(lost.value).startswith(f"{live.url}: the stream dropped after")
    assert time.monotonic() - start < 5
    assert not stream.running
    stream.close()


def test_a_url_that_never_opens_is_named():
    with socket.socket() as closed:  # A port nobody listens on: refused at once.
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(streams.StreamError, match=f"127.0.0.1:{port}/cam: cannot open") as error:
        streams.LiveStream(f"rtsp://127.0.0.1:{port}/cam", timeout=0.5, first_wait=0.05)
    assert "(tried 4 times in " in str(error.value)  # Tried again 3 times: 0.05 + 0.1 + 0.2 s.

    # A server that accepts and never answers: given up after the timeout; no password shown.
    silent = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    url = f"http://me:secret@127.0.0.1:{silent.getsockname()[1]}/live.mjpg"
    start = time.monotonic()
    with pytest.raises(
        streams.StreamError, match=r"tried once in \d+\.\d s, timeout 0.5 s"
    ) as error:
        streams.LiveStream(url, timeout=0.5, attempts=0)
    assert time.monotonic() - start < 3
    assert "me:***@127.0.0.1" in str(error.value) and "secret" not in str(error.value)
    assert accepted  # It did connect: the timeout, not a refusal, ended it.
    silent.close()


def test_names_of_sources():
    assert streams.is_stream("rtsp://cam/1") and streams.is_stream("HTTPS://x/y.m3u8")
    assert streams.is_stream(streams.camera(2)) and streams.camera(2) == "camera:2"
    assert not streams.is_stream("photos/rtsp.jpg") and not streams.is_stream("camera:x")
    assert (
        streams.display_name("rtsp://admin:pw@10.0.0.2:554/s") == "rtsp://admin:***@10.0.0.2:554/s"
    )
    assert streams.output_name("rtsp://admin:pw@10.0.0.2:554/live/ch1") == "10.0.0.2_554__live__ch1"
    assert streams.output_name("camera:0") == "camera_0"
    assert streams.time_stamp(0.25) == "1970-01-01T00:00:00.250+00:00"


def test_an_hls_playlist_is_read(tmp_path):
    # HLS: a playlist of MPEG-TS segments over HTTP (here a finished one, served as files).
    for segment in range(2):
        path = str(tmp_path / f"segment{segment}.ts")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 96))
        assert writer.isOpened()
        for k in range(10):
            number = 10 * segment + k
            writer.write(cv2.cvtColor(mjpeg_server.numbered_frame(number), cv2.COLOR_RGB2BGR))
        writer.release()
    entries = "".join(f"#EXTINF:1.0,\nsegment{segment}.ts\n" for segment in range(2))
    (tmp_path / "live.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        + entries
        + "#EXT-X-ENDLIST\n"
    )

    class QuietFiles(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietFiles, directory=str(tmp_path))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(
        target=files.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    url = f"http://127.0.0.1:{files.server_address[1]}/live.m3u8"
    frames = []
    with streams.LiveStream(url, timeout=2, attempts=0) as stream:
        with pytest.raises(streams.StreamLost, match="0 reconnection attempts"):
            while (frame := stream.next(timeout=5)) is not None:
                frames.append(frame)
        read = stream.read
    files.shutdown()
    files.server_close()
    assert read == 20 and frames
    assert all(mjpeg_server.frame_number(rgb) == index for index, _, rgb in frames)
