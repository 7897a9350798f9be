"""predict.py on what users really have: damaged and hostile files, odd names, too little memory,
a killed run, a full disk, a downloaded workdir, live streams that drop or never open."""

from __future__ import annotations

import builtins
import csv
import datetime
import errno
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import types
import zlib

import cv2
import jax
import numpy as np
import pytest

from configs import quickstart
from crowdjax import (
    checkpointing,
    file_prediction,
    image_headers,
    media,
    mjpeg_server,
    prediction,
    run,
    stream_prediction,
    streams,
)
from crowdjax import workdir as workdir_lib
from crowdjax.data import decode
from tests.engine.conftest import REPO, run_script
from tests.test_prediction import _random_scene, _uot_parts, _write_video


def _png_bomb(width: int, height: int) -> bytes:
    """A PNG of width x height RGB pixels in a few kB: its first rows, zeros (the rest missing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = chunk(b"IDAT", zlib.compress(b"\0" * (3 * width + 1) * 4))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + rows + chunk(b"IEND", b"")


def _encode(rgb: np.ndarray, ext: str, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), list(params))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def counter():
    config, variables = _uot_parts()
    return prediction.Counter(config, variables)


# ----------------------------------------------------------------------------------------------
# Headers, names.


@pytest.mark.parametrize(
    "ext,params",
    [
        (".png", ()),
        (".jpg", ()),
        (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        (".bmp", ()),
        (".webp", ()),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),  # Lossless: the VP8L header.
        (".tif", ()),
    ],
)
def test_image_size_is_read_from_the_header(ext, params):
    data = _encode(_random_scene(37, 53), ext, params)
    assert image_headers.image_size(data) == (37, 53)
    assert image_headers.image_size(data[:12]) is None  # Too short: checked after decoding.


@pytest.mark.parametrize("side", [100_000, 20_000])  # Over OpenCV's own 2^30 pixels; under.
def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch, side):
    (tmp_path / "bomb.png").write_bytes(_png_bomb(side, side))
    assert image_headers.image_size(_png_bomb(side, side)) == (side, side)
    monkeypatch.setattr(decode, "decode_rgb", lambda *a, **k: pytest.fail("decoded"))
    limit = f"{side} x {side} = {side * side} pixels is over the limit of {2**28}"
    with pytest.raises(media.PixelLimitError, match=rf"bomb.png: .*{limit}"):
        media.read_image(str(tmp_path / "bomb.png"))


def test_output_names_are_safe_for_any_input_name(tmp_path):
    folder = str(tmp_path)
    paths = [
        os.path.join(folder, os.fsdecode(b"caf\xe9.jpg")),  # Not UTF-8: a lone surrogate in str.
        os.path.join(folder, "sub", 'a:b"c.png'),
        os.path.join(folder, "sub", "人群.png"),
    ]
    names = file_prediction.output_names(paths, [folder])
    assert list(names.values()) == ["caf_xe9", "sub__a_b_c", "sub__人群"]
    for name in names.values():
        name.encode("utf-8")  # Printable, writable as UTF-8 and by OpenCV.


# ----------------------------------------------------------------------------------------------
# Trust.


def test_a_workdir_config_cannot_import_its_own_code(tmp_path, monkeypatch):
    # A downloaded workdir ships a module and names it as its method; it is importable (here on
    # sys.path, as when predict.py runs from inside the workdir). Loading must not run it.
    workdir = tmp_path / "downloaded"
    workdir.mkdir()
    (workdir / "crowdjax_test_payload.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('payload_ran').touch()\nMETHOD = None\n"
    )
    monkeypatch.syspath_prepend(str(workdir))
    config = quickstart.get_config()
    config.method = "crowdjax_test_payload:METHOD"
    (workdir / "config.json").write_text(config.to_json_best_effort())
    trust = r"not registered.*--trust_method=crowdjax_test_payload:METHOD"
    with pytest.raises(ValueError, match=trust):
        prediction.Counter.load(str(workdir))
    with pytest.raises(ValueError, match=trust):
        workdir_lib.load_config(str(workdir))  # eval.py's path.
    assert not (workdir / "payload_ran").exists()
    # A method the user names on the command line is theirs to trust.
    mine = "tests.engine.nan_method:METHOD"
    assert workdir_lib.load_config(str(workdir), trusted_method=mine).method == mine
    assert workdir_lib.load_config(str(workdir), trusted_method="uot").method == "uot"


# ----------------------------------------------------------------------------------------------
# predict_files in-process: out of memory, a kill, --resume.


def _oom():
    # What XLA raises when an allocation fails (seen on a CPU for a 512 GiB array).
    return jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory allocating 549755813888 bytes."
    )


def test_out_of_memory_is_named_and_a_killed_run_resumes(tmp_path, counter, monkeypatch, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for i, name in enumerate("abcd"):
        (inputs / f"{name}.png").write_bytes(_encode(_random_scene(64, 96, seed=i), ".png"))
    forward, calls = counter._predict, []

    def first_run(*args):  # b: the accelerator runs out of memory; c: the run is killed.
        calls.append(1)
        if len(calls) == 2:
            raise _oom()
        if len(calls) == 3:
            raise KeyboardInterrupt
        return forward(*args)

    monkeypatch.setattr(counter, "_predict", first_run)
    with pytest.raises(KeyboardInterrupt):
        file_prediction.predict_files(counter, [str(inputs)], str(out), overlays=False)
    with open(out / "counts.csv") as f:
        rows = list(csv.DictReader(f))
    assert [os.path.basename(r["file"]) for r in rows] == ["a.png"]  # Kept through the kill.
    (failed,) = json.loads((out / "failed.json").read_text())
    assert os.path.basename(failed["file"]) == "b.png" and failed["kind"] == "out_of_memory"
    assert "RESOURCE_EXHAUSTED" in failed["error"] and "--max_pixels" in failed["error"]
    with open(out / "counts.jsonl", "a") as f:
        f.write('{"file": "')  # The kill cut a line short.

    calls.clear()

    def second_run(*args):  # d: the host runs out of memory.
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError
        return forward(*args)

    monkeypatch.setattr(counter, "_predict", second_run)
    rows, failures = file_prediction.predict_files(
        counter, [str(inputs)], str(out), overlays=False, resume=True
    )
    assert len(calls) == 3  # b, c, d: a was counted before the kill.
    assert "cut short" in capsys.readouterr().out
    assert [os.path.basename(r["file"]) for r in rows] == ["a.png", "b.png", "c.png"]
    assert [(os.path.basename(f["file"]), f["kind"]) for f in failures] == [
        ("d.png", "out_of_memory")
    ]
    with open(out / "counts.csv") as f:
        table = list(csv.DictReader(f))
    records = json.loads((out / "counts.json").read_text())
    assert [r["file"] for r in table] == [r["file"] for r in records] == [r["file"] for r in rows]
    assert [float(r["count"]) for r in table] == pytest.approx(
        [r["count"] for r in records], abs=1e-3
    )
    assert json.loads((out / "failed.json").read_text()) == failures


def test_an_image_scaled_past_the_pixel_limit_is_refused(counter):
    # A 1000 x 10 strip scaled up to a short side of 256 would be 25600 x 256 pixels.
    config = counter.config.copy_and_resolve_references()
    config.data.min_short_side = 256
    strict = prediction.Counter(config, counter.variables, max_image_pixels=2**22)
    with pytest.raises(media.PixelLimitError, match=r"strip: .*1000 x 10 .*25600 x 256"):
        strict.count(np.zeros((1000, 10, 3), np.uint8), name="strip")


class _FullDisk:
    """A file opened for writing on a full disk: opening (and truncating) works, writing fails."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_a_full_disk_leaves_the_earlier_tables_whole(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"counts.csv": "file,frame,count,height,width\na.jpg,,12.000,64,96\n"}
    earlier["counts.json"] = '[{"file": "a.jpg", "frame": null, "count": 12.0}]\n'
    for name, text in earlier.items():
        (out / name).write_text(text)
    real_open = builtins.open

    def full_disk_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        writes = any(m in mode for m in "wax+")
        return _FullDisk(f) if writes and str(out) in os.fsdecode(file) else f

    monkeypatch.setattr(builtins, "open", full_disk_open)
    no_model = types.SimpleNamespace(max_image_pixels=2**28)
    with pytest.raises(OSError, match="No space left"):
        file_prediction.predict_files(no_model, [str(tmp_path / "missing.jpg")], str(out))
    monkeypatch.undo()
    assert {name: (out / name).read_text() for name in earlier} == earlier
    assert sorted(os.listdir(out)) == ["counts.csv", "counts.json"]  # No temporary file left.


# ----------------------------------------------------------------------------------------------
# predict.py end to end: every kind of bad input in one run.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A workdir as train.py leaves it (config.json + a best checkpoint), random weights."""
    config, _ = _uot_parts()
    workdir = tmp_path_factory.mktemp("workdir")
    (workdir / "config.json").write_text(config.to_json_best_effort())
    state = run.Setup(config, devices=jax.devices()[:1]).init(jax.random.key(3))
    ckpts = checkpointing.Checkpoints(str(workdir), async_save=False)
    ckpts.save_if_best(7, state, 1.0)
    ckpts.close()
    return str(workdir)


def test_predict_cli_counts_odd_names_and_names_each_bad_input(tmp_path, workdir):
    inputs = tmp_path / "in"
    inputs.mkdir()
    folder = os.fsencode(inputs)
    # Names that are not UTF-8 (OpenCV crashes on them), an image and a video.
    with open(os.path.join(folder, b"caf\xe9.png"), "wb") as f:
        f.write(_encode(_random_scene(96, 160), ".png"))
    _write_video(str(tmp_path / "street.mp4"), frames=2)
    shutil.move(str(tmp_path / "street.mp4"), os.path.join(folder, b"str\xe9et.mp4"))
    (inputs / "bomb.png").write_bytes(_png_bomb(100_000, 100_000))
    (inputs / "corrupt.jpg").write_bytes(b"\xff\xd8 broken")
    out = tmp_path / "out"
    proc = run_script(["predict.py", f"--checkpoint={workdir}", f"--output={out}", str(inputs)])
    assert proc.returncode == 1, proc.stderr[-3000:]
    failed = json.loads((out / "failed.json").read_text())
    assert [(os.path.basename(f["file"]), f["kind"]) for f in failed] == [
        ("bomb.png", "pixel_limit"),
        ("corrupt.jpg", "unreadable"),
    ]
    assert "100000 x 100000" in failed[0]["error"] and "pixel_limit: " in proc.stdout
    with open(out / "counts.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(os.path.basename(r["file"]), r["frame"]) for r in rows] == [
        ("caf\\xe9.png", ""),
        ("str\\xe9et.mp4", "0"),
        ("str\\xe9et.mp4", "1"),
    ]
    assert len(json.loads((out / "counts.json").read_text())) == 3
    assert (out / "overlays" / "caf_xe9.png").stat().st_size > 0
    assert (
        cv2.VideoCapture(str(out / "videos" / "str_xe9et.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 2
    )


# ----------------------------------------------------------------------------------------------
# Live streams: an MJPEG stream served on the loopback address by the test (crowdjax.mjpeg_server).


def _ffmpeg_decoded(folder, frames: int) -> list[np.ndarray]:
    """The server's first `frames` frames as it sends them (JPEG, quality 90), decoded by FFmpeg
    from a file: the decoder a stream's frames go through, so pixels equal those of the stream."""
    path = os.path.join(folder, "reference.mjpeg")
    with open(path, "wb") as f:
        for k in range(frames):
            f.write(_encode(mjpeg_server.numbered_frame(k), ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 90)))
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    decoded = []
    while (read := capture.read())[0]:
        decoded.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    capture.release()
    assert len(decoded) == frames
    return decoded


def _dead_url() -> str:
    with socket.socket() as closed:  # A port nobody listens on.
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}/cam.mjpg"


def _wait_for_rows(journal, rows: int, deadline_s: float = 120.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if journal.exists() and journal.read_text().count("\n") >= rows:
            return
        time.sleep(0.05)


def test_a_stream_is_counted_frame_by_frame_and_a_dead_url_is_named(tmp_path, counter):
    (tmp_path / "crowd.png").write_bytes(_encode(_random_scene(96, 160), ".png"))
    dead, out = _dead_url(), tmp_path / "out"
    options = stream_prediction.StreamOptions(max_frames=3, video=True, timeout=1, first_wait=0.05)
    with mjpeg_server.MjpegServer(fps=20) as server:
        rows, failures = file_prediction.predict_files(
            counter,
            [server.url, dead, str(tmp_path / "crowd.png")],
            str(out),
            stream_options=options,
        )
    # Files first, then the streams in the order given.
    assert [r["file"] for r in rows] == [str(tmp_path / "crowd.png")] + [server.url] * 3
    assert failures == [{"file": dead, "kind": "unreadable", "error": failures[0]["error"]}]
    assert failures[0]["error"].startswith(f"{dead}: cannot open the stream")
    frames = [r["frame"] for r in rows[1:]]
    assert frames == sorted(set(frames))
    # Each row counts the frame of its index (one connection: the index-th frame sent).
    reference = _ffmpeg_decoded(tmp_path, frames[-1] + 1)
    for row in rows[1:]:
        expected = counter.count_rgb(reference[row["frame"]]).count
        assert row["count"] == pytest.approx(expected, rel=1e-6), row["frame"]
    times = [datetime.datetime.fromisoformat(r["time"]) for r in rows[1:]]
    now = datetime.datetime.now(datetime.UTC)
    assert times == sorted(times) and all(abs(now - t).total_seconds() < 120 for t in times)
    with open(out / "counts.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [(r["frame"], r["time"]) for r in table] == [("", "")] + [
        (str(r["frame"]), r["time"]) for r in rows[1:]
    ]
    assert json.loads((out / "counts.json").read_text()) == rows
    name = file_prediction.output_names([server.url], [server.url])[server.url]
    video = cv2.VideoCapture(str(out / "streams" / f"{name}.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    assert (out / "streams" / f"{name}_counts.png").stat().st_size > 0


def test_sigterm_ends_a_camera_with_every_table_written(tmp_path, counter, monkeypatch, capsys):
    # No camera here: camera 0 opens the loopback stream instead.
    assert threading.current_thread() is threading.main_thread()  # Signals reach this thread.
    opened, real_capture = [], cv2.VideoCapture
    out = tmp_path / "out"
    with mjpeg_server.MjpegServer(fps=20) as server:

        def camera_capture(source, *args):
            if isinstance(source, int):
                opened.append(source)
                return real_capture(server.url, cv2.CAP_FFMPEG)
            return real_capture(source, *args)

        def terminate_after_two_rows():
            _wait_for_rows(out / "counts.jsonl", 2)
            os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(streams.cv2, "VideoCapture", camera_capture)
        previous = signal.getsignal(signal.SIGTERM)
        threading.Thread(target=terminate_after_two_rows, daemon=True).start()
        rows, failures = file_prediction.predict_files(
            counter, [streams.camera(0), server.url], str(out)
        )  # No limit: it runs until the signal.
    assert opened == [0] and failures == []
    assert len(rows) >= 2 and {r["file"] for r in rows} == {"camera:0"}
    assert json.loads((out / "counts.json").read_text()) == rows
    assert len((out / "counts.csv").read_text().splitlines()) == len(rows) + 1
    assert signal.getsignal(signal.SIGTERM) is previous
    out = capsys.readouterr().out
    assert "SIGTERM: stopped" in out and "stopped: 1 input(s) not counted" in out


def test_ctrl_c_ends_predict_on_a_stream_with_every_table_written(tmp_path, workdir):
    dead, out = _dead_url(), tmp_path / "out"
    with mjpeg_server.MjpegServer(fps=10) as server:
        process = subprocess.Popen(
            [sys.executable, "predict.py", f"--checkpoint={workdir}", f"--output={out}"]
            + ["--stream_video", "--stream_timeout=1", "--reconnect_attempts=1", dead, server.url],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": REPO},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_rows(out / "counts.jsonl", 2)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr[-3000:]  # The dead URL failed; the rest ended well.
    assert [(f["file"], f["kind"]) for f in json.loads((out / "failed.json").read_text())] == [
        (dead, "unreadable")
    ]
    journal = [json.loads(line) for line in (out / "counts.jsonl").read_text().splitlines()]
    assert len(journal) >= 2 and json.loads((out / "counts.json").read_text()) == journal
    assert "SIGINT: stopped; the tables are written" in stdout and "stopped; counted" in stdout
    name = file_prediction.output_names([server.url], [server.url])[server.url]
    video = cv2.VideoCapture(str(out / "streams" / f"{name}.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == len(journal)  # Finished: readable to its end.
