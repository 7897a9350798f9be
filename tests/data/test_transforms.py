"""Tests of crowdjax.data.transforms against brute-force numpy / cv2 references."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from crowdjax.data import decode, io, labels
from crowdjax.data import transforms as T

MEAN, STD = np.array(T.IMAGENET_MEAN), np.array(T.IMAGENET_STD)


def _points(rng, n, h, w):
    return (rng.uniform(0, 1, (n, 2)) * [w, h]).astype(np.float32)


def _record(rgb, points, *, sigma=2.0, image_id="img_1.png"):
    """A raw record as `datasets.raw_source` gives it (PNG image, ZLIB maps)."""
    shape = rgb.shape[:2]

    def zlib_map(array):
        return {"shape": np.array(array.shape), "value": zlib.compress(array.tobytes())}

    return {
        "image": io.encode_image(rgb, ext=".png"),
        "image_id": image_id.encode(),
        "points": np.asarray(points, np.float32),
        "count": len(points),
        "density": zlib_map(labels.density_map(points, shape, sigma=sigma)),
        "distance_label": zlib_map(labels.distance_label_map(points, shape)),
    }


def _normalized(rgb):
    return ((rgb.astype(np.float64) / 255.0 - MEAN) / STD).astype(np.float32)


# ------------------------------------------------------------------------------ basic ops


def test_decode_image_gray_png_becomes_rgb():
    gray = np.random.default_rng(0).integers(0, 256, (9, 7), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", gray)
    rgb = decode.decode_rgb(buf.tobytes(), apply_exif=False)
    assert rgb.shape == (9, 7, 3) and np.all(rgb == gray[..., None])
    with pytest.raises(io.DataError, match="bad.jpg"):
        decode.decode_rgb(b"not an image", apply_exif=False, name="bad.jpg")


def test_decode_ignores_exif_orientation_like_the_builders():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    jpeg = io.encode_image(rgb)
    # APP1 Exif segment, big-endian TIFF with one IFD entry: Orientation (0x0112) = 6 (90 deg).
    tiff = b"MM\x00*" + struct.pack(">IHHHIHHI", 8, 1, 0x0112, 3, 1, 6, 0, 0)
    app1 = b"Exif\x00\x00" + tiff
    exif = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]
    assert cv2.imdecode(np.frombuffer(exif, np.uint8), cv2.IMREAD_COLOR).shape == (30, 20, 3)
    # The builders' own decode (IMREAD_UNCHANGED) keeps the stored grid too.
    builders = decode.to_rgb(cv2.imdecode(np.frombuffer(exif, np.uint8), cv2.IMREAD_UNCHANGED))
    np.testing.assert_array_equal(decode.decode_rgb(exif, apply_exif=False), builders)
    assert decode.decode_rgb(exif, apply_exif=True).shape == (30, 20, 3)  # prediction: upright
    assert decode.decode_bgr(exif, reduce=2).shape == (10, 15, 3)


def test_decode_tensor_prefix_rows_equals_full_decode():
    array = np.random.default_rng(0).normal(size=(13, 7)).astype(np.float32)
    feature = {"shape": np.array([13, 7]), "value": zlib.compress(array.tobytes())}
    np.testing.assert_array_equal(decode.decode_tensor(feature, np.float32), array)
    np.testing.assert_array_equal(decode.decode_tensor(feature, np.float32, rows=5), array[:5])


def test_decode_tensor_reads_the_stored_dtype_and_casts_after_cropping():
    # float16 maps (builders >= 1.1.0) and float32 ones (1.0.0, or no "dtype" key) both decode.
    array = np.random.default_rng(0).uniform(0, 0.01, size=(13, 7)).astype(np.float32)
    half = array.astype(np.float16)
    f16 = {"shape": np.array([13, 7]), "value": zlib.compress(half.tobytes()), "dtype": half.dtype}
    f32 = {"shape": np.array([13, 7]), "value": zlib.compress(array.tobytes())}
    for feature, want in ((f16, half.astype(np.float32)), (f32, array)):
        whole = decode.decode_tensor(feature, np.float32)
        assert whole.dtype == np.float32
        np.testing.assert_array_equal(whole, want)
        np.testing.assert_array_equal(decode.decode_tensor(feature, np.float32, rows=4), want[:4])
        window = decode.decode_tensor(feature, np.float32, window=(3, 2, 6, 4))
        assert window.dtype == np.float32
        np.testing.assert_array_equal(window, want[3:9, 2:6])
    # A window at the border is cut by the map, as slicing is.
    border = decode.decode_tensor(f16, np.float32, window=(10, 5, 8, 8))
    np.testing.assert_array_equal(border, half[10:, 5:].astype(np.float32))


def test_crop_points_keeps_exactly_the_points_inside():
    rng = np.random.default_rng(1)
    points = np.concatenate(
        [_points(rng, 200, 40, 50), [[10, 5], [22, 5], [10, 20], [9.999, 5], [21.999, 19.5]]]
    ).astype(np.float32)
    window = (5, 10, 15, 12)  # y0, x0, h, w: keeps x in [10, 22), y in [5, 20)
    expected = [
        (x - 10, y - 5) for x, y in points.astype(np.float64) if 10 <= x < 22 and 5 <= y < 20
    ]
    got = T.crop_points(points, window)
    np.testing.assert_allclose(got, np.reshape(expected, (-1, 2)))
    assert [0, 0] in got.tolist()  # (10, 5) is on the inclusive border
    assert not np.any(np.all(got == [12, 0], axis=1))  # (22, 5) is outside


def test_crop_points_never_rounds_onto_the_far_border_in_float32():
    points = np.array([[10 + 12 - 1e-9, 6.0]])  # inside in float64, = 22.0 in float32
    got = T.crop_points(points, (5, 10, 15, 12)).astype(np.float32)
    assert got[0, 0] < 12


@pytest.mark.parametrize("adaptive", [False, True])
def test_density_crop_equals_crop_of_full_map(adaptive):
    rng = np.random.default_rng(2)
    shape = (70, 90)
    points = np.concatenate([_points(rng, 60, *shape), [[0, 0], [89.9, 69.9], [30, 0.0]]])
    for window in [(10, 20, 32, 40), (0, 0, 70, 90), (50, 60, 20, 30), (0, 70, 16, 20)]:
        y0, x0, h, w = window
        full = labels.density_map(points, shape, sigma=3.0, adaptive=adaptive)
        got = T.density_crop(points, shape, window, sigma=3.0, adaptive=adaptive)
        np.testing.assert_allclose(got, full[y0 : y0 + h, x0 : x0 + w], atol=2e-6)


def test_density_sum_in_crop_equals_points_in_crop_when_kernels_inside():
    rng = np.random.default_rng(3)
    sigma = 2.0  # radius 8: keep every head 8 px inside the window
    window = (20, 30, 40, 48)
    inner = rng.uniform(0, 1, (25, 2)) * [48 - 16, 40 - 16] + [30 + 8, 20 + 8]
    outer = np.array([[5.0, 5.0], [100.0, 90.0]])  # far from the window
    points = np.concatenate([inner, outer])
    density = T.density_crop(points, (100, 120), window, sigma=sigma)
    assert len(T.crop_points(points, window)) == 25
    np.testing.assert_allclose(density.sum(), 25.0, rtol=1e-5)


def test_distance_label_crop_equals_crop_of_full_map():
    rng = np.random.default_rng(4)
    shape = (80, 100)
    points = _points(rng, 12, *shape)
    full = labels.distance_label_map(points, shape)
    for window in [(10, 20, 32, 40), (0, 0, 80, 100), (60, 70, 20, 30)]:
        y0, x0, h, w = window
        got = T.distance_label_crop(points, shape, window, edges=labels.DEFAULT_DISTANCE_EDGES)
        np.testing.assert_array_equal(got, full[y0 : y0 + h, x0 : x0 + w])


@pytest.mark.parametrize("scaled_shape", [(45, 61), (90, 122), (120, 200)])
def test_scaled_crop_equals_resize_then_crop(scaled_shape):
    image = np.random.default_rng(5).uniform(0, 255, (60, 80, 3)).astype(np.float32)
    hs, ws = scaled_shape
    window = (3, 5, min(32, hs - 3), min(40, ws - 5))
    y0, x0, h, w = window
    resized = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_LINEAR)
    got = T.scaled_crop(image, scaled_shape, window)
    np.testing.assert_allclose(got, resized[y0 : y0 + h, x0 : x0 + w], atol=0.05)


def test_flip_points_maps_x_to_w_minus_x_and_matches_flipped_map():
    rng = np.random.default_rng(6)
    points = _points(rng, 30, 20, 30)
    flipped = T.flip_points(points, 30)
    np.testing.assert_allclose(flipped[:, 0], 30 - points[:, 0].astype(np.float64))
    np.testing.assert_array_equal(flipped[:, 1], points[:, 1])
    np.testing.assert_allclose(
        labels.density_map(flipped, (20, 30), sigma=1.5),
        labels.density_map(points, (20, 30), sigma=1.5)[:, ::-1],
        atol=1e-6,
    )
    edge = T.flip_points(np.array([[0.0, 3.0]]), 30).astype(np.float32)  # x = 0 -> just below 30
    assert 29.99 < edge[0, 0] < 30


def test_normalize_matches_imagenet_formula():
    rgb = np.random.default_rng(7).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    np.testing.assert_allclose(T.normalize(rgb), _normalized(rgb), atol=1e-6)
    np.testing.assert_allclose(T.normalize(rgb.astype(np.float32)), _normalized(rgb), atol=1e-6)
    np.testing.assert_allclose(T.normalize(rgb[:, ::-1]), _normalized(rgb)[:, ::-1], atol=1e-6)
    assert T.normalize(rgb[None]).shape == (1, 17, 23, 3)
    with pytest.raises(ValueError, match="RGB"):
        T.normalize(np.zeros((4, 4), np.uint8))


def test_color_jitter_matches_reference_and_zero_is_identity():
    rgb = np.random.default_rng(8).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        T.color_jitter(rgb, np.random.default_rng(0), strength=0.0), rgb.astype(np.float32)
    )
    got = T.color_jitter(rgb, np.random.default_rng(9), strength=0.6)
    rng = np.random.default_rng(9)  # same draws: factors, then order
    factors, order = rng.uniform(0.4, 1.6, 3), rng.permutation(3)
    ref, luma = rgb.astype(np.float64), np.array([0.299, 0.587, 0.114])
    for op in order:
        f = factors[op]
        if op == 0:
            ref = ref * f
        elif op == 1:
            ref = (ref - (ref @ luma).mean()) * f + (ref @ luma).mean()
        else:
            ref = (ref - (ref @ luma)[..., None]) * f + (ref @ luma)[..., None]
        ref = np.clip(ref, 0, 255)
    np.testing.assert_allclose(got, ref, atol=0.05)


def test_pad_points_pads_with_mask_and_names_image_on_overflow():
    points, mask = T.pad_points([[1.5, 2.5], [3, 4]], 4, image_id="IMG_7.jpg")
    np.testing.assert_array_equal(points, [[1.5, 2.5], [3, 4], [0, 0], [0, 0]])
    np.testing.assert_array_equal(mask, [True, True, False, False])
    points, mask = T.pad_points(np.zeros((0, 2)), 3, image_id="empty")
    assert points.shape == (3, 2) and not mask.any()
    with pytest.raises(ValueError, match="IMG_7.jpg: 3 points exceed max_points=2"):
        T.pad_points(np.ones((3, 2)), 2, image_id="IMG_7.jpg")


def test_pad_to_and_image_mask():
    array = np.ones((2, 3), np.uint8)
    np.testing.assert_array_equal(T.pad_to(array, 3, 4, fill=7), [[1, 1, 1, 7]] * 2 + [[7] * 4])
    np.testing.assert_array_equal(T.image_mask(3, 4, 2, 3), T.pad_to(array, 3, 4) == 1)
    with pytest.raises(ValueError, match="cannot pad"):
        T.pad_to(array, 1, 4)


# ------------------------------------------------------------------------- TrainTransform


def _scene(seed=0, shape=(60, 80), n=25):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    return rgb, _points(rng, n, *shape)


def test_train_transform_crop_matches_stored_maps_and_points():
    rgb, points = _scene()
    transform = T.TrainTransform(crop_size=(32, 40), max_points=64, output_stride=4)
    for seed in range(5):
        out = transform(_record(rgb, points), np.random.default_rng(seed))
        y0, x0, h, w = T.random_window(np.random.default_rng(seed), 60, 80, (32, 40))
        expected = _normalized(rgb[y0 : y0 + h, x0 : x0 + w])
        np.testing.assert_allclose(out["image"], expected, atol=1e-6)
        stored = labels.density_map(points, (60, 80), sigma=2.0)[y0 : y0 + h, x0 : x0 + w]
        np.testing.assert_allclose(out["density"], labels.sum_pool(stored, 4), atol=1e-6)
        inside = T.crop_points(points, (y0, x0, h, w))
        assert out["count"] == len(inside) == out["point_mask"].sum()
        np.testing.assert_allclose(out["points"][: len(inside)], inside, atol=1e-5)
        assert out["image_mask"].all() and out["domain"] == 0
        assert out["density"].shape == (8, 10) and out["density"].dtype == np.float32


def test_train_transform_regenerated_density_equals_stored():
    rgb, points = _scene(1)
    stored = T.TrainTransform(crop_size=(32, 40), max_points=64, kernel=T.Kernel(sigma=2.0))
    regen = T.TrainTransform(
        crop_size=(32, 40), max_points=64, kernel=T.Kernel(sigma=2.0), regenerate=True
    )
    a = stored(_record(rgb, points), np.random.default_rng(3))
    b = regen(_record(rgb, points), np.random.default_rng(3))
    np.testing.assert_allclose(a["density"], b["density"], atol=1e-6)


@pytest.mark.parametrize("scale", [1.5, 0.7, 0.4])
def test_train_transform_scaling_regenerates_consistent_maps(scale):
    rgb, points = _scene(2, shape=(64, 96), n=40)
    transform = T.TrainTransform(
        crop_size=(24, 32),
        max_points=64,
        scale_range=(scale, scale),
        kernel=T.Kernel(sigma=1.5),
        distance_edges=labels.DEFAULT_DISTANCE_EDGES,
    )
    hs, ws = round(64 * scale), round(96 * scale)
    scaled = points.astype(np.float64) * [ws / 96, hs / 64]
    full_density = labels.density_map(scaled, (hs, ws), sigma=1.5)
    full_dist = labels.distance_label_map(scaled, (hs, ws))
    resized = cv2.resize(rgb, (ws, hs), interpolation=cv2.INTER_LINEAR)
    for seed in range(4):
        out = transform(_record(rgb, points), np.random.default_rng(seed))
        y0, x0, h, w = T.random_window(np.random.default_rng(seed), hs, ws, (24, 32))
        np.testing.assert_allclose(
            out["density"][:h, :w], full_density[y0 : y0 + h, x0 : x0 + w], atol=1e-6
        )
        np.testing.assert_array_equal(
            out["distance_label"][:h, :w], full_dist[y0 : y0 + h, x0 : x0 + w]
        )
        inside = T.crop_points(scaled, (y0, x0, h, w))
        assert out["count"] == len(inside)
        np.testing.assert_allclose(out["points"][: len(inside)], inside, atol=1e-4)
        if scale > 0.5:  # below 1/2 the JPEG/PNG decoder pre-reduces: close but not bilinear
            expected = _normalized(resized[y0 : y0 + h, x0 : x0 + w])
            assert np.abs(out["image"][:h, :w] - expected).max() < 0.05


def test_train_transform_pads_small_images_and_masks_padding():
    rgb, points = _scene(3, shape=(20, 30), n=12)
    transform = T.TrainTransform(
        crop_size=(32, 48),
        max_points=16,
        output_stride=4,
        distance_edges=labels.DEFAULT_DISTANCE_EDGES,
    )
    out = transform(_record(rgb, points), np.random.default_rng(0))
    assert out["image"].shape == (32, 48, 3)
    np.testing.assert_array_equal(out["image_mask"], T.image_mask(32, 48, 20, 30))
    np.testing.assert_allclose(out["image"][:20, :30], _normalized(rgb), atol=1e-6)
    assert not out["image"][20:].any() and not out["image"][:, 30:].any()
    assert out["density"].shape == (8, 12)
    assert not out["density"][5:].any() and not out["density"][:, 8:].any()
    stored = labels.density_map(points, (20, 30), sigma=2.0)
    np.testing.assert_allclose(out["density"].sum(), stored.sum(), rtol=1e-5)
    assert out["count"] == 12 and (out["distance_label"][20:] == 10).all()


def test_train_transform_hflip_mirrors_image_maps_and_points():
    rgb, points = _scene(4, shape=(40, 50), n=20)
    kwargs = dict(crop_size=(32, 40), max_points=32, distance_edges=labels.DEFAULT_DISTANCE_EDGES)
    plain, flipping = T.TrainTransform(**kwargs), T.TrainTransform(hflip=True, **kwargs)
    flips = 0
    for seed in range(12):
        a = plain(_record(rgb, points), np.random.default_rng(seed))
        b = flipping(_record(rgb, points), np.random.default_rng(seed))
        if np.array_equal(a["image"], b["image"]):
            continue
        flips += 1
        for key in ("image", "density", "distance_label"):
            np.testing.assert_array_equal(b[key], a[key][:, ::-1])
        n = int(a["count"])
        np.testing.assert_allclose(b["points"][:n, 0], 40 - a["points"][:n, 0], atol=1e-5)
    assert 0 < flips < 12


def test_train_transform_overflow_names_the_image():
    rgb, points = _scene(5, n=30)
    transform = T.TrainTransform(crop_size=(60, 80), max_points=10)
    with pytest.raises(ValueError, match="IMG_99.jpg: 30 points exceed max_points=10"):
        transform(_record(rgb, points, image_id="IMG_99.jpg"), np.random.default_rng(0))


def test_eval_example_pads_to_bucket_and_invalid_like():
    rgb, points = _scene(6, shape=(30, 50), n=7)
    out = T.eval_example(_record(rgb, points), bucket=(32, 64), max_points=8)
    np.testing.assert_allclose(out["image"][:30, :50], _normalized(rgb), atol=1e-6)
    np.testing.assert_array_equal(out["image_mask"], T.image_mask(32, 64, 30, 50))
    assert out["count"] == 7 and out["valid"] and out["image_id"] == "img_1.png"
    pad = T.invalid_like(out)
    assert not pad["valid"] and pad["image_id"] == "" and not pad["image_mask"].any()
    assert pad["image"].shape == out["image"].shape


def test_min_side_shape_keeps_the_aspect():
    assert T.min_side_shape(300, 800, 416) == (416, round(800 * 416 / 300))
    assert T.min_side_shape(800, 300, 416) == (round(800 * 416 / 300), 416)
    assert T.min_side_shape(500, 600, 416) == (500, 600)  # already large enough
    assert T.min_side_shape(300, 800, 0) == (300, 800)  # off


def test_min_short_side_scales_small_images_up_in_training_and_evaluation():
    rgb, points = _scene(3, shape=(30, 50), n=12)
    hs, ws = T.min_side_shape(30, 50, 40)
    assert (hs, ws) == (40, 67)
    transform = T.TrainTransform(
        crop_size=(40, 48),
        max_points=64,
        kernel=T.Kernel(sigma=2.0, truncate=1.75),
        min_short_side=40,
    )
    scaled = points.astype(np.float64) * [ws / 50, hs / 30]
    full = labels.density_map(scaled, (hs, ws), sigma=2.0, truncate=1.75)
    resized = cv2.resize(rgb, (ws, hs), interpolation=cv2.INTER_LINEAR)
    for seed in range(3):
        out = transform(_record(rgb, points), np.random.default_rng(seed))
        y0, x0, h, w = T.random_window(np.random.default_rng(seed), hs, ws, (40, 48))
        np.testing.assert_allclose(out["density"], full[y0 : y0 + h, x0 : x0 + w], atol=1e-6)
        np.testing.assert_allclose(
            out["image"], _normalized(resized[y0 : y0 + h, x0 : x0 + w]), atol=2e-2
        )
    # Evaluation: the whole image scaled the same way; the count stays the annotated one.
    out = T.eval_example(_record(rgb, points), bucket=(64, 128), max_points=16, min_short_side=40)
    np.testing.assert_array_equal(out["image_mask"], T.image_mask(64, 128, hs, ws))
    np.testing.assert_allclose(out["image"][:hs, :ws], _normalized(resized), atol=1e-6)
    assert out["count"] == 12
    np.testing.assert_allclose(out["points"][:12], scaled, atol=1e-4)


def test_kernel_truncate_gives_a_15_by_15_kernel_for_sigma_4():
    assert labels.gaussian_radius(4.0, 1.75) == 7  # 2 * 7 + 1 = 15
    one = T.density_crop(np.array([[20.0, 20.0]]), (41, 41), (0, 0, 41, 41), truncate=1.75)
    rows, cols = np.nonzero(one)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (13, 27, 13, 27)
    np.testing.assert_allclose(one.sum(), 1.0, rtol=1e-6)
