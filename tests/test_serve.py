"""The local web page's server (crowdjax.serve): its endpoints, limits and refusals, over HTTP."""

from __future__ import annotations

import base64
import builtins
import http.client
import io as pyio
import json
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from crowdjax import media, prediction, serve, tta, visualize, zones
from crowdjax.data import decode, io, synthetic
from tests import test_predict_robust
from tests.engine.conftest import REPO
from tests.test_predict_robust import _png_bomb
from tests.test_prediction import _uot_parts

# One image size for every upload of these tests (and the browser test): one compile.
SCENE_SIZE = (128, 160)


def synthetic_png(index: int = 0) -> tuple[bytes, np.ndarray]:
    """A PNG of one test image of the embedded synthetic data set, and its pixels."""
    scene = synthetic.render_scene(
        synthetic.STYLES["street"], rng=synthetic.scene_rng(0, "test", index), size=SCENE_SIZE
    )
    return io.encode_image(scene.image, ext=".png"), scene.image


@pytest.fixture(scope="module")
def counter():
    config, variables = _uot_parts()
    return prediction.Counter(config, variables)


def half_zones(rgb, result) -> dict:
    """A stand-in for the zones and interval extras: fields computed from the prediction."""
    left = float(result.density[:, : result.density.shape[1] // 2].sum())
    low, high = 0.9 * result.count, 1.1 * result.count
    interval = {"low": low, "high": high, "spread": high - low, "disagree": False}
    return {"zones": {"left half": left}, "interval": interval}


class Running:
    """A server of `service` on a free loopback port, in a thread."""

    def __init__(self, service, host="127.0.0.1"):
        self.service = service
        self.server = serve.make_server(service, host=host, port=0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, headers=None):
        """(status, headers, body) of one request; a dict is returned for a JSON answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.getheader("Content-Type") == "application/json":
            data = json.loads(data)
        return response.status, response, data

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def running(counter):
    service = serve.CountService(counter, max_upload_bytes=200_000, extras=[half_zones])
    running = Running(service)
    yield running
    running.close()


def _post(running, data, name="crowd.png", **headers):
    headers = {"X-File-Name": name, "Content-Type": "application/octet-stream", **headers}
    return running.request("POST", "/api/count", data, headers)


def test_the_page_and_its_files_are_served_and_nothing_else(running):
    status, response, page = running.request("GET", "/")
    assert status == 200 and b'<script src="/app.js"' in page
    assert "default-src 'self'" in response.getheader("Content-Security-Policy")
    status, response, script = running.request("GET", "/app.js")
    assert status == 200 and response.getheader("Content-Type").startswith("text/javascript")
    assert b"/api/count" in script
    status, _, info = running.request("GET", "/api/info")
    assert status == 200
    assert info == {
        "method": "uot",
        "step": None,
        "max_upload_bytes": 200_000,
        "max_image_pixels": media.DEFAULT_MAX_IMAGE_PIXELS,
    }
    # No path of the request reaches the file system.
    for path in ("/serve.py", "/../serve.py", "/serve_page/app.js", "/%2e%2e/serve.py"):
        status, _, body = running.request("GET", path)
        assert status == 404 and body["kind"] == "not_found", path


def test_an_upload_is_counted_as_the_model_counts_it(running, counter):
    data, rgb = synthetic_png()
    status, _, record = _post(running, data, name="caf%C3%A9%20street.png")
    assert status == 200, record
    expected = counter.count_rgb(rgb)  # The model called directly on the same pixels.
    assert record["file"] == "café street.png"
    assert record["count"] == pytest.approx(expected.count, rel=1e-6)
    assert (record["height"], record["width"], record["windows"]) == (*SCENE_SIZE, 1)
    assert "points" not in record  # UOT is a density method.
    # The overlay is crowdjax's own picture of this prediction, losslessly sent.
    prefix = "data:image/png;base64,"
    assert record["overlay"].startswith(prefix)
    overlay = decode.decode_rgb(
        base64.b64decode(record["overlay"][len(prefix) :]), apply_exif=False
    )
    np.testing.assert_array_equal(
        overlay, visualize.prediction_overlay(rgb, expected, max_side=1024)
    )
    # The extras' fields ride along.
    left = float(expected.density[:, : expected.density.shape[1] // 2].sum())
    assert record["zones"] == {"left half": pytest.approx(left, rel=1e-5)}
    assert record["interval"]["low"] == pytest.approx(0.9 * expected.count, rel=1e-5)


def test_zones_and_the_interval_reach_the_page_in_its_format(counter, tmp_path):
    """--zones and --tta: the record carries zones as {name: count} and the interval as one
    {low, high, spread, disagree}, equal to crowdjax.zones and crowdjax.tta's own results."""
    config, variables = _uot_parts()
    flipped = tta.TTACounter(config, [variables], variants=tta.Variants.parse("flip"))
    (tmp_path / "zones.json").write_text(
        json.dumps(
            {"zones": [{"name": "left", "polygon": [[0, 0], [70.5, 0], [70.5, 128], [0, 128]]}]}
        )
    )
    zone_set = zones.load_zones(str(tmp_path / "zones.json"))
    running = Running(serve.CountService(flipped, zone_set=zone_set))
    try:
        data, rgb = synthetic_png(1)
        status, _, record = _post(running, data)
        assert status == 200, record
        expected = flipped.count_rgb(rgb)
        left = zones.count_in_zones(expected, zone_set)["left"]["count"]
        assert record["zones"] == {"left": pytest.approx(left, rel=1e-5)}
        assert record["interval"] == {
            "low": pytest.approx(expected.interval[0], rel=1e-5),
            "high": pytest.approx(expected.interval[1], rel=1e-5),
            "spread": pytest.approx(expected.spread, rel=1e-5),
            "disagree": bool(expected.disagree),
        }
        # A zone outside this image: refused, named, and the server goes on.
        far = {"zones": [{"name": "far", "polygon": [[500, 500], [600, 500], [600, 600]]}]}
        (tmp_path / "far.json").write_text(json.dumps(far))
        running.service.zone_set = zones.load_zones(str(tmp_path / "far.json"))
        status, _, error = _post(running, data, name="small.png")
        assert status == 422 and error["kind"] == "zones", error
        assert "small.png" in error["error"] and "far" in error["error"]
    finally:
        running.close()


def test_counting_an_upload_writes_no_file(running, monkeypatch):
    data, _ = synthetic_png(2)
    assert _post(running, data)[0] == 200  # Compiled (the compile cache may write), then:
    writes = []
    real_open, real_os_open = builtins.open, os.open

    def watched_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            writes.append(file)
        return real_open(file, mode, *args, **kwargs)

    def watched_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            writes.append(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watched_open)
    monkeypatch.setattr(pyio, "open", watched_open)
    monkeypatch.setattr(os, "open", watched_os_open)
    status, _, record = _post(running, data)
    monkeypatch.undo()
    assert status == 200 and record["count"] > 0
    assert writes == []


def test_bad_uploads_are_refused_with_a_message_naming_them(running, monkeypatch):
    status, _, body = _post(running, b"\xff\xd8 not a jpeg", name="broken.jpg")
    assert (status, body["kind"], body["file"]) == (400, "unreadable", "broken.jpg")
    assert body["error"] == "broken.jpg: corrupt or unreadable image"
    status, _, body = _post(running, b"", name="empty.png")
    assert (status, body["error"]) == (400, "empty.png: empty image file")
    # A decompression bomb: refused from its header, never decoded.
    decoded = []
    monkeypatch.setattr(decode, "decode_rgb", lambda *a, **k: decoded.append(1))
    status, _, body = _post(running, _png_bomb(100_000, 100_000), name="bomb.png")
    assert (status, body["kind"]) == (413, "pixel_limit") and not decoded
    assert body["error"].startswith("bomb.png: image (from its header) of 100000 x 100000")
    monkeypatch.undo()
    # Too many bytes: refused from the Content-Length, the body never read.
    data, _ = synthetic_png()
    status, _, body = _post(running, b"", name="big.png", **{"Content-Length": "200001"})
    assert (status, body["kind"]) == (413, "too_large")
    assert "big.png: file of 200001 bytes is over the upload limit of 200000" in body["error"]
    # The server goes on counting.
    assert _post(running, data)[0] == 200


def test_uploads_past_the_open_ones_are_refused_unread(running):
    data, _ = synthetic_png()
    slots = running.service.upload_slots
    for _ in range(4):  # Four uploads being read or counted.
        assert slots.acquire(blocking=False)
    try:
        status, _, body = _post(running, data, name="fifth.png")
    finally:
        for _ in range(4):
            slots.release()
    assert (status, body["kind"]) == (503, "busy") and body["error"].startswith("fifth.png: ")
    assert _post(running, data)[0] == 200


def test_a_request_without_length_is_refused(running):
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=60)
    try:
        connection.putrequest("POST", "/api/count")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        assert response.status == 411 and json.loads(response.read())["kind"] == "no_length"
    finally:
        connection.close()


def test_other_hosts_and_origins_are_refused(running):
    # DNS rebinding: a page of evil.example whose name now points to 127.0.0.1.
    status, _, body = running.request("GET", "/api/info", headers={"Host": "evil.example:80"})
    assert (status, body["kind"]) == (403, "forbidden")
    data, _ = synthetic_png()
    status, _, body = _post(running, data, Host="evil.example")
    assert status == 403
    # Another page in the user's browser posting here.
    status, _, body = _post(running, data, Origin="http://evil.example")
    assert (status, body["error"]) == (403, "uploads are taken from this page only")
    status, _, _ = _post(running, data, Origin=running.url)
    assert status == 200
    for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
        assert running.request("GET", "/api/info", headers={"Host": host})[0] == 200, host


@pytest.mark.parametrize(
    "host,loopback",
    [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("[::1]", True)]
    + [("localhost", True), ("LocalHost", True), ("0.0.0.0", False), ("192.168.1.2", False)]
    + [("evil.example", False), ("", False)],
)
def test_loopback_addresses(host, loopback):
    assert serve.is_loopback(host) is loopback


def test_upload_names_are_shown_not_used():
    assert serve.upload_name("..%2F..%2Fetc%2Fpasswd") == ".._.._etc_passwd"
    assert serve.upload_name("a%0Ab%00c.png") == "a_b_c.png"
    assert serve.upload_name(None) == "upload"
    assert len(serve.upload_name("x" * 5000)) == 200


workdir = test_predict_robust.workdir  # A workdir as train.py leaves it, random weights.


def _ignore_sigint():
    """What a shell does to a job it starts in the background from a script."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow  # 40-60 s each: a fresh process loads the model and compiles.
@pytest.mark.parametrize("stop", ["ctrl_c", "ctrl_c_in_a_background_job", "sigterm"])
def test_the_command_serves_a_workdir_and_ends_on_ctrl_c(workdir, stop):
    command = [sys.executable, "-m", "crowdjax.serve", f"--checkpoint={workdir}", "--port=0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_ignore_sigint if stop == "ctrl_c_in_a_background_job" else None,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "serving on " in line:
                break
        port = int(re.search(r"serving on http://127\.0\.0\.1:(\d+)/", lines[-1])[1])
        assert "model uot from" in "".join(lines) and "step 7" in "".join(lines)
        data, _ = synthetic_png()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.request("POST", "/api/count", data, {"X-File-Name": "a.png"})
        record = json.loads(connection.getresponse().read())
        connection.close()
        assert record["file"] == "a.png" and record["count"] > 0
        process.send_signal(signal.SIGTERM if stop == "sigterm" else signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
