"""predict.py and crowdjax.prediction: reading what users have, tiling, outputs, bad files."""

from __future__ import annotations

import csv
import json
import os

import cv2
import jax
import numpy as np
import pytest

from configs import autoscale_synthetic, quickstart
from crowdjax import checkpointing, media, prediction, run
from crowdjax.data import decode, io
from crowdjax.workdir import write_run_info
from tests.builders.fakes import exif_orientation_jpeg
from tests.engine.conftest import run_script


def _random_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth blobs on noise: structure at many scales, so a wrong stitch shows."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), np.uint8)
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(40):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.circle(image, (x, y), int(rng.integers(2, 9)), (250, 240, 230), -1)
    return image


def _uot_parts(upsample: str = "bilinear", seed: int = 3):
    """The quickstart's UOT regressor at width 1/16 with random weights."""
    config = quickstart.get_config()
    config.model.width = 1 / 16
    config.model.upsample = upsample
    setup = run.Setup(config, devices=jax.devices()[:1])
    return config, setup.init(jax.random.key(seed)).variables


@pytest.fixture(scope="module")
def uot_counter_parts():
    return _uot_parts()


# ----------------------------------------------------------------------------------------------
# Windows.


@pytest.mark.parametrize(
    "padded,window,margin",
    [((640, 960), (448, 448), 192), ((64, 4096), (64, 1024), 192), ((1024, 1024), (640, 384), 128)],
)
def test_window_cores_tile_the_image_once_with_margin(padded, window, margin):
    core = tuple(p if w == p else w - 2 * margin for w, p in zip(window, padded, strict=True))
    plan = prediction.window_plan(padded, window, core, margin)
    cover = np.zeros(padded, int)
    for win in plan:
        cy0, cy1, cx0, cx1 = win.core
        cover[cy0:cy1, cx0:cx1] += 1
        assert 0 <= win.y <= padded[0] - window[0] and 0 <= win.x <= padded[1] - window[1]
        # The core lies in its window with `margin` of context, or the image border.
        for lo, hi, start, size, full in (
            (cy0, cy1, win.y, window[0], padded[0]),
            (cx0, cx1, win.x, window[1], padded[1]),
        ):
            assert start <= lo and hi <= start + size
            assert lo - start >= margin or start == 0
            assert start + size - hi >= margin or start + size == full
    np.testing.assert_array_equal(cover, 1)


# ----------------------------------------------------------------------------------------------
# Tiled = whole.


def test_tiled_equals_whole_image_for_a_shift_equivariant_model():
    # Nearest x2 upsampling: the outputs of a cell depend only on the 300 px around it, so with
    # a 192 px margin every stitched cell equals the whole-image cell up to float rounding.
    config, variables = _uot_parts("nearest")
    image = _random_scene(640, 896)
    whole = prediction.Counter(config, variables, max_pixels=10**7).count(image)
    tiled = prediction.Counter(config, variables, max_pixels=576 * 576, margin=192).count(image)
    assert whole.windows == 1 and tiled.windows == 20
    assert tiled.density.shape == whole.density.shape == (80, 112)
    scale = whole.density.max()
    np.testing.assert_allclose(tiled.density, whole.density, rtol=0, atol=1e-5 * scale)
    assert tiled.count == pytest.approx(whole.count, rel=1e-5)
    # The same cores without margin differ: the test sees a wrong stitch.
    seams = prediction.Counter(config, variables, max_pixels=192 * 192, margin=0).count(image)
    assert seams.windows == 20
    assert np.abs(seams.density - whole.density).max() > 1e-2 * scale


def test_tiled_count_is_within_one_percent_for_align_corners_upsampling(uot_counter_parts):
    # Bilinear align_corners=True (the reference UOT / Bayesian-loss head) samples at positions
    # that depend on the map's size, so windows and the whole image differ slightly in every cell;
    # the count agrees within 1 % (measured on a trained model: <= 0.26 %, README).
    config, variables = uot_counter_parts
    image = _random_scene(640, 896)
    whole = prediction.Counter(config, variables, max_pixels=10**7).count(image)
    tiled = prediction.Counter(config, variables, max_pixels=576 * 576, margin=192).count(image)
    assert tiled.windows == 20
    assert tiled.count == pytest.approx(whole.count, rel=1e-2)


@pytest.mark.slow  # 30 s in the suite; the stitching is tested exactly on UOT above.
def test_localization_tiled_points_match_whole_image():
    config = autoscale_synthetic.get_config("loc")
    config.model.width = 1 / 16
    config.model.use_l2s = False  # Outputs are maps only: points come from the stitched map.
    setup = run.Setup(config, devices=jax.devices()[:1])
    variables = setup.init(jax.random.key(1)).variables
    image = _random_scene(320, 448, seed=1)
    whole = prediction.Counter(config, variables, max_pixels=10**7).count(image)
    tiled = prediction.Counter(config, variables, max_pixels=256 * 256, margin=64).count(image)
    assert tiled.windows > 1 and whole.density is None
    assert whole.count == len(whole.points)
    assert abs(tiled.count - whole.count) <= max(2, 0.02 * whole.count)


def test_min_short_side_scales_up_before_predicting(uot_counter_parts):
    config, variables = uot_counter_parts
    config = config.copy_and_resolve_references()
    config.data.min_short_side = 256
    result = prediction.Counter(config, variables).count(_random_scene(128, 200))
    assert result.shape == (128, 200) and result.scale == 2.0
    assert result.density.shape == (32, 50)  # The 256 x 400 image at stride 8.


# ----------------------------------------------------------------------------------------------
# Reading what users have.


def test_images_of_every_kind_become_rgb(tmp_path):
    rgb = _random_scene(48, 64)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(
        media.read_image(str(tmp_path / "gray.png")), np.dstack([gray] * 3)
    )
    bgra = np.dstack([bgr, np.full(gray.shape, 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    np.testing.assert_array_equal(media.read_image(str(tmp_path / "alpha.png")), rgb)
    cv2.imwrite(str(tmp_path / "deep.png"), bgr.astype(np.uint16) * 257)
    np.testing.assert_array_equal(media.read_image(str(tmp_path / "deep.png")), rgb)
    cv2.imwrite(str(tmp_path / "gray_alpha.png"), np.dstack([gray, gray, gray, gray]))
    assert media.read_image(str(tmp_path / "gray_alpha.png")).shape == (48, 64, 3)
    # EXIF orientation 6: stored landscape, shown rotated 90 degrees clockwise.
    (tmp_path / "phone.jpg").write_bytes(exif_orientation_jpeg(rgb, 6))
    plain = decode.decode_rgb(exif_orientation_jpeg(rgb, 1), apply_exif=True)
    upright = media.read_image(str(tmp_path / "phone.jpg"))
    assert upright.shape == (64, 48, 3)
    np.testing.assert_array_equal(upright, np.rot90(plain, k=-1))


def test_numpy_images_of_every_kind():
    rgb = _random_scene(16, 24)
    np.testing.assert_array_equal(media.as_rgb(rgb[..., 0]), np.dstack([rgb[..., 0]] * 3))
    np.testing.assert_array_equal(media.as_rgb(np.dstack([rgb, rgb[..., :1]])), rgb)
    np.testing.assert_array_equal(media.as_rgb(rgb.astype(np.uint16) * 257), rgb)
    np.testing.assert_array_equal(media.as_rgb(rgb / 255.0), rgb)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        media.as_rgb(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="expected"):
        media.as_rgb(np.zeros((4, 4, 2), np.uint8))


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, message in (("broken.jpg", "corrupt"), ("empty.png", "empty"), ("nope.jpg", "read")):
        with pytest.raises(io.DataError, match=rf"{name}: .*{message}"):
            media.read_image(str(tmp_path / name))
    (tmp_path / "fake.mp4").write_bytes(b"no video here")
    with pytest.raises(io.DataError, match="fake.mp4"):
        list(media.VideoFrames(str(tmp_path / "fake.mp4")))


def test_find_inputs_recurses_in_natural_order(tmp_path):
    for rel in ("b/IMG_10.jpg", "b/IMG_2.png", "a/x.webp", "a/notes.txt", "c.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = media.find_inputs([str(tmp_path), str(tmp_path / "missing.jpg")])
    rel = [os.path.relpath(p, tmp_path) for p in found]
    assert rel == ["a/x.webp", "b/IMG_2.png", "b/IMG_10.jpg", "c.mp4", "missing.jpg"]


# ----------------------------------------------------------------------------------------------
# predict.py end to end.


def _write_video(path: str, frames: int, size=(160, 96)) -> None:
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    for i in range(frames):
        writer.write(cv2.cvtColor(_random_scene(size[1], size[0], seed=i), cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def quickstart_workdir(tmp_path_factory, uot_counter_parts):
    """A workdir as train.py leaves it (config.json + a best checkpoint), random weights."""
    config, variables = uot_counter_parts
    workdir = str(tmp_path_factory.mktemp("workdir"))
    write_run_info(config, workdir)
    setup = run.Setup(config, devices=jax.devices()[:1])
    state = setup.init(jax.random.key(3))
    ckpts = checkpointing.Checkpoints(workdir, async_save=False)
    ckpts.save_if_best(7, state, 1.0)
    ckpts.close()
    return workdir


def test_predict_cli_counts_a_folder_and_reports_bad_files(tmp_path, quickstart_workdir):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    rgb = _random_scene(200, 300)
    cv2.imwrite(str(inputs / "crowd.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(inputs / "sub" / "crowd.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    (inputs / "sub" / "corrupt.jpg").write_bytes(b"\xff\xd8 broken")
    _write_video(str(inputs / "clip.mp4"), frames=5)
    out = tmp_path / "out"
    proc = run_script(
        [
            "predict.py",
            f"--checkpoint={quickstart_workdir}",
            f"--output={out}",
            "--every=2",
            str(inputs),
        ],
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "corrupt.jpg: corrupt or unreadable image" in proc.stdout
    with open(out / "counts.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(os.path.relpath(r["file"], inputs), r["frame"]) for r in rows] == [
        ("clip.mp4", "0"),
        ("clip.mp4", "2"),
        ("clip.mp4", "4"),
        ("crowd.jpg", ""),
        ("sub/crowd.png", ""),
    ]
    records = json.loads((out / "counts.json").read_text())
    assert [r["count"] for r in records] == pytest.approx(
        [float(r["count"]) for r in rows], abs=1e-3
    )
    failed = json.loads((out / "failed.json").read_text())
    assert [os.path.basename(f["file"]) for f in failed] == ["corrupt.jpg"]
    # The same model in-process gives the CLI's counts.
    counter = prediction.Counter.load(quickstart_workdir)
    assert counter.checkpoint_info["step"] == 7
    assert counter.count(str(inputs / "crowd.jpg")).count == pytest.approx(
        records[3]["count"], abs=1e-3
    )
    for rel in ("overlays/crowd.png", "overlays/sub__crowd.png", "videos/clip.mp4"):
        assert (out / rel).stat().st_size > 0, rel
    assert cv2.VideoCapture(str(out / "videos/clip.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3
    pytest.importorskip("matplotlib")
    assert (out / "videos/clip_counts.png").stat().st_size > 0
