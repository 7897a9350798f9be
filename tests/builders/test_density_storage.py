"""Density maps on disk: ZLIB float16 (`tfds_builders.base.DensityMap`), read as float32.

Checked against `labels.density_map` computed here in float32 from the fake annotations: every
decoded value is that map rounded to float16 (error <= 2^-11 relative, 2^-25 absolute), the count
within `DENSITY_COUNT_RTOL`; the undecoded path (`datasets.raw_source` + `decode_tensor`) gives the
same pixels; a map float16 cannot hold fails the build naming the image.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from crowdjax.data import datasets, decode, labels
from crowdjax.data.io import DataError
from tests.builders import fakes
from tfds_builders import base
from tfds_builders.shanghaitech import ShanghaiTech

H, W = 48, 64


def _release(root, heads: dict[str, int]) -> dict[str, np.ndarray]:
    """ShanghaiTech part B train/test with one image each; a tight cluster makes values > 1e-2
    (coarse float16 steps) next to sparse heads (tails in the subnormal range)."""
    truth = {}
    for i, (split, n) in enumerate(heads.items()):
        d = os.path.join(root, "part_B", f"{split}_data")
        fakes.write_image(os.path.join(d, "images", "IMG_1.jpg"), H, W, seed=i)
        points = fakes.random_points(n, H, W, seed=i)
        points[: n // 2] = points[0] + fakes.random_points(n // 2, 3, 3, seed=i + 5)
        fakes.write_shanghaitech_mat(os.path.join(d, "ground-truth", "GT_IMG_1.mat"), points)
        truth[split] = points
    return truth


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("density_storage")
    truth = _release(root / "raw", {"train": 40, "test": 9})
    builder = fakes.build(ShanghaiTech, root / "raw", root / "out", config="part_b")
    return builder, truth


def test_decoded_density_is_the_float32_map_rounded_to_float16(built):
    builder, truth = built
    assert builder.info.features["density"].np_dtype == np.float16  # what is on disk
    for split, points in truth.items():
        ex = builder.as_data_source(split=split)[0]
        density = np.asarray(ex["density"])
        assert density.dtype == np.float32 and density.shape == (H, W)
        # Independent float32 map of the annotated points (all inside: stored as they are).
        want = labels.density_map(points.astype(np.float32), (H, W), sigma=8.0)
        assert want.dtype == np.float32
        np.testing.assert_array_equal(density, want.astype(np.float16).astype(np.float32))
        fakes.assert_stored_density(density, want)  # stated bound: 2^-11 rel, 2^-25 abs
        err = np.abs(density - want)
        assert err.max() > 0  # really stored in float16
        assert err.max() < 2.0**-11 * want.max() + 2.0**-25
        count_err = abs(density.sum(dtype=np.float64) - len(points))
        assert count_err <= base.DENSITY_COUNT_RTOL * len(points)


def test_raw_source_decodes_windows_of_the_same_map(built):
    builder, _ = built
    data_dir = os.path.dirname(os.path.dirname(os.path.dirname(builder.data_dir)))
    raw = datasets.raw_source("shanghaitech/part_b", "train", data_dir=data_dir)[0]["density"]
    whole = builder.as_data_source(split="train")[0]["density"]
    assert raw["dtype"] == np.float16 and tuple(raw["shape"]) == (H, W)
    np.testing.assert_array_equal(decode.decode_tensor(raw, np.float32), whole)
    got = decode.decode_tensor(raw, np.float32, window=(5, 7, 20, 30))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, whole[5:25, 7:37])
    np.testing.assert_array_equal(decode.decode_tensor(raw, np.float32, rows=11), whole[:11])


def test_count_check_names_the_image():
    fine = labels.density_map(fakes.random_points(5, H, W), (H, W), sigma=4.0)
    np.testing.assert_array_equal(
        base.to_float16_map(fine, 5, name="ok.jpg"), fine.astype(np.float16)
    )
    # 1e-6 is subnormal in float16 (step 2^-24): stored as 17 * 2^-24, 1.3% too much mass.
    spread = np.full((1000, 1000), 1e-6, np.float32)
    with pytest.raises(DataError, match=r"wide\.jpg: the float16 density map sums to 1\.01"):
        base.to_float16_map(spread, 1, name="wide.jpg")
    with pytest.raises(DataError, match="wrong.jpg"):  # not the count at all
        base.to_float16_map(fine, 6, name="wrong.jpg")
    with pytest.raises(DataError, match="big.jpg"):  # beyond float16's 65504: inf
        base.to_float16_map(np.full((2, 2), 7e4, np.float32), 280000, name="big.jpg")


def test_build_fails_naming_the_image_when_the_stored_map_loses_the_count(tmp_path, monkeypatch):
    _release(tmp_path / "raw", {"train": 3, "test": 2})
    real = base.density_map
    # 0.2% too much mass: more than DENSITY_COUNT_RTOL, so it must not be stored.
    monkeypatch.setattr(base, "density_map", lambda *a, **kw: real(*a, **kw) * np.float32(1.002))
    with pytest.raises(DataError, match=r"IMG_1\.jpg: the float16 density map sums to [23]\.00"):
        fakes.build(ShanghaiTech, tmp_path / "raw", tmp_path / "out", config="part_b")
