"""The `synthetic_crowd` TFDS builder: configs, build into a temporary directory, read back."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from crowdjax.data import datasets, decode, io, labels, synthetic
from tests.builders import fakes
from tfds_builders import synthetic_crowd as sc

# The style (domain) configs; "tiny" is a small street set for smoke tests.
CONFIGS = {c.name: c for c in sc.SyntheticCrowd.BUILDER_CONFIGS if c.name != "tiny"}


def tiny(name: str = "street", **overrides) -> sc.SyntheticCrowdConfig:
    """A small variant of a config (split sizes, image size) that builds in about a second."""
    sizes = dict(num_train=6, num_validation=2, num_test=3, image_size=(96, 128))
    return dataclasses.replace(CONFIGS[name], name=f"tiny_{name}", **{**sizes, **overrides})


def build(cfg, tmp_path):
    builder = sc.SyntheticCrowd(config=cfg, data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    return builder


def test_configs():
    assert list(CONFIGS) == ["street", "stadium", "night"]  # street is the default
    assert sc.SyntheticCrowd.BUILDER_CONFIGS[0].name == "street"
    assert len({c.seed for c in CONFIGS.values()}) == len(CONFIGS)
    assert len({c.style for c in CONFIGS.values()}) == len(CONFIGS)
    for name, cfg in CONFIGS.items():
        assert cfg.style == synthetic.STYLES[name]
        assert cfg.image_size == (256, 256)
        assert (cfg.num_train, cfg.num_validation, cfg.num_test) == (400, 50, 100)
    builder = datasets.get_builder("synthetic_crowd", data_dir="/nonexistent")
    assert builder.builder_config.name == "street"
    assert datasets.get_builder("synthetic_crowd/night", data_dir="/x").builder_config.seed == 2
    tiny_cfg = datasets.get_builder("synthetic_crowd/tiny", data_dir="/x").builder_config
    assert tiny_cfg.style == synthetic.STYLES["street"] and tiny_cfg.num_train == 16


def test_config_validation():
    with pytest.raises(ValueError, match="image_size"):
        tiny(image_size=(8, 64))
    with pytest.raises(ValueError, match="split"):
        tiny(num_test=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_build_and_read_back(name, tmp_path):
    cfg = tiny(name)
    builder = build(cfg, tmp_path)
    sizes = {"train": 6, "validation": 2, "test": 3}
    assert {s: builder.info.splits[s].num_examples for s in sizes} == sizes
    assert not any((builder.info.metadata.get("points_outside_image") or {}).values())
    h, w = cfg.image_size
    for split, n in sizes.items():
        source = builder.as_data_source(split=split)
        assert len(source) == n
        ids = set()
        for i in range(n):
            ex = source[i]
            image_id = ex["image_id"].decode()
            ids.add(image_id)
            index = int(image_id.rsplit("_", 1)[1].split(".")[0])
            # The stored example is the scene rendered from the config's seed.
            scene = synthetic.render_scene(
                cfg.style, rng=synthetic.scene_rng(cfg.seed, split, index), size=(h, w)
            )
            assert ex["image"].shape == (h, w, 3) and ex["image"].dtype == np.uint8
            # Stored as JPEG (quality 95, 4:4:4): exactly the decoded encoding of the rendering.
            jpeg = decode.decode_rgb(sc.encode_jpeg(scene.image), apply_exif=False)
            np.testing.assert_array_equal(ex["image"], jpeg)
            assert np.abs(ex["image"].astype(float) - scene.image).mean() < 5
            np.testing.assert_array_equal(ex["points"], scene.points)
            np.testing.assert_array_equal(ex["head_radius"], scene.radii)
            assert ex["count"] == len(scene.points)
            np.testing.assert_allclose(ex["density"].sum(), len(scene.points), atol=1e-2)
            fakes.assert_stored_density(
                ex["density"], labels.density_map(scene.points, (h, w), sigma=cfg.sigma)
            )
            np.testing.assert_array_equal(
                ex["distance_label"], labels.distance_label_map(scene.points, (h, w))
            )
        assert ids == {f"tiny_{name}_{split}_{i:05d}.jpg" for i in range(n)}


def test_seed_changes_images(tmp_path):
    a = build(tiny(), tmp_path / "a").as_data_source(split="train")
    b = build(tiny(seed=7), tmp_path / "b").as_data_source(split="train")
    by_id_a = {a[i]["image_id"]: a[i]["image"] for i in range(len(a))}
    by_id_b = {b[i]["image_id"]: b[i]["image"] for i in range(len(b))}
    assert by_id_a.keys() == by_id_b.keys()
    for key in by_id_a:
        assert np.abs(by_id_a[key].astype(int) - by_id_b[key]).mean() > 5


def test_resize_rule_scales_radii(tmp_path):
    cfg = tiny(max_long_side=64)  # 96x128 -> 48x64
    ex = build(cfg, tmp_path).as_data_source(split="test")[0]
    index = int(ex["image_id"].decode().rsplit("_", 1)[1].split(".")[0])
    scene = synthetic.render_scene(
        cfg.style, rng=synthetic.scene_rng(cfg.seed, "test", index), size=(96, 128)
    )
    assert ex["image"].shape == (48, 64, 3)
    np.testing.assert_allclose(ex["points"], scene.points * 0.5, rtol=1e-6)
    np.testing.assert_allclose(ex["head_radius"], scene.radii * 0.5, rtol=1e-6)


def test_data_source_of_unbuilt_config_names_the_build_command(tmp_path):
    with pytest.raises(io.DataError, match="crowdjax.data.build synthetic_crowd/stadium"):
        datasets.data_source("synthetic_crowd/stadium", "train", data_dir=str(tmp_path))


@pytest.mark.slow
def test_full_default_build_under_a_minute(tmp_path):
    start = time.perf_counter()
    builder = datasets.build("synthetic_crowd", data_dir=str(tmp_path))
    seconds = time.perf_counter() - start
    assert seconds < 60, seconds
    assert {s: v.num_examples for s, v in builder.info.splits.items()} == {
        "train": 400,
        "validation": 50,
        "test": 100,
    }
    source = datasets.data_source("synthetic_crowd/street", "test", data_dir=str(tmp_path))
    counts = np.array([source[i]["count"] for i in range(len(source))])
    assert counts.min() == 0 and counts.max() > 100
