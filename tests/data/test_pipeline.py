"""Tests of the input streams (crowdjax.data.train_stream, eval_stream, settings) on a tiny
test-only TFDS builder (random PNG images)."""

import zlib
from fractions import Fraction

import numpy as np
import pytest
import tensorflow_datasets as tfds

from crowdjax.data import (
    batching,
    datasets,
    decode,
    eval_stream,
    labels,
    settings,
    sources,
    splits,
    train_stream,
)
from crowdjax.data import transforms as T
from crowdjax.data.io import DataError
from tfds_builders.base import CrowdBuilder, CrowdConfig

TRAIN_SIZES = {"a": 10, "b": 5}
TEST_SIZE = 7


class PipelineTestCrowd(CrowdBuilder):
    """Random images of 16-71 px per side with 0-11 points; domain a is bright, b is dark."""

    name = "pipeline_test_crowd"
    VERSION = tfds.core.Version("1.0.0")
    IMAGE_FORMAT = "png"  # lossless: evaluation images can be compared exactly
    BUILDER_CONFIGS = [CrowdConfig(name="a", sigma=1.5), CrowdConfig(name="b", sigma=2.0)]

    def extra_features(self):
        return {"weather": tfds.features.Scalar(dtype=np.int32)}

    def _split_generators(self, dl_manager):
        sizes = {"train": TRAIN_SIZES[self.builder_config.name], "test": TEST_SIZE}
        return {split: self._generate_examples(split, n) for split, n in sizes.items()}

    def _generate_examples(self, split, num):
        cfg = self.builder_config.name
        rng = np.random.default_rng(zlib.crc32(f"{self.name}/{cfg}/{split}".encode()))
        lo = 150 if cfg == "a" else 0
        for i in range(num):
            h, w = (int(s) for s in rng.integers(16, 72, 2))
            rgb = rng.integers(lo, lo + 100, (h, w, 3), dtype=np.uint8)
            points = rng.uniform(0, 1, (int(rng.integers(0, 12)), 2)) * [w, h]
            roi = (rng.uniform(size=(h, w)) < 0.7).astype(np.uint8) if self.HAS_ROI else None
            yield self.make_example(
                split=split,
                image_id=f"{cfg}_{split}_{i}.png",
                image=rgb,
                points=points,
                roi=roi,
                extra={"weather": i % 3},
            )


class PipelineTestRoiCrowd(PipelineTestCrowd):
    name = "pipeline_test_roi_crowd"
    HAS_ROI = True


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        for builder in (PipelineTestCrowd, PipelineTestRoiCrowd):
            mp.setitem(datasets.BUILDER_MODULES, builder.name, __name__)
        root = str(tmp_path_factory.mktemp("tfds"))
        for name in ("pipeline_test_crowd/a", "pipeline_test_crowd/b", "pipeline_test_roi_crowd/a"):
            datasets.build(name, data_dir=root)
        yield root


def _config(data_dir, name="pipeline_test_crowd/a", **overrides):
    config = settings.default_data_config()
    config.update(
        dict(name=name, data_dir=data_dir, crop_size=(32, 48), max_points=16, output_stride=4)
    )
    # The whole training split unless a test holds part of it out.
    config.update(dict(worker_threads=2, prefetch=2, holdout_fraction=0.0))
    config.update(overrides)
    return config


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---------------------------------------------------------------------------------- training


def test_train_batch_contract(data_dir):
    config = _config(data_dir, with_distance_label=True, hflip=True, scale_range=(0.8, 1.2))
    for batch in _take(train_stream.train_iterator(config, global_batch_size=4, seed=0), 5):
        assert batch["image"].shape == (4, 32, 48, 3) and batch["image"].dtype == np.float32
        assert batch["density"].shape == (4, 8, 12) and batch["density"].dtype == np.float32
        assert batch["points"].shape == (4, 16, 2) and batch["points"].dtype == np.float32
        assert batch["point_mask"].shape == (4, 16) and batch["point_mask"].dtype == bool
        assert batch["count"].dtype == np.float32 and batch["domain"].dtype == np.int32
        assert batch["image_mask"].shape == (4, 32, 48)
        assert batch["distance_label"].shape == (4, 32, 48)
        assert batch["distance_label"].dtype == np.uint8
        np.testing.assert_array_equal(batch["count"], batch["point_mask"].sum(1))
        for i in range(4):
            mask = batch["image_mask"][i]
            h, w = mask.any(1).sum(), mask.any(0).sum()
            assert mask[:h, :w].all() and mask.sum() == h * w  # real pixels top-left
            pts = batch["points"][i][batch["point_mask"][i]]
            assert np.all((pts >= 0) & (pts < [w, h]))
            assert not batch["image"][i][~mask].any()
            pooled_mask = labels.sum_pool(mask.astype(np.float32), 4)
            assert not batch["density"][i][pooled_mask == 0].any()
        assert not batch["domain"].any()


def test_same_seed_same_batches_different_seed_different(data_dir):
    config = _config(data_dir, hflip=True, scale_range=(0.7, 1.3), color_jitter=0.3)
    a = _take(train_stream.train_iterator(config, global_batch_size=4, seed=7), 4)
    b = _take(train_stream.train_iterator(config, global_batch_size=4, seed=7), 4)
    c = _take(train_stream.train_iterator(config, global_batch_size=4, seed=8), 4)
    for x, y in zip(a, b, strict=True):
        _assert_batches_equal(x, y)
    assert not all(np.array_equal(x["image"], z["image"]) for x, z in zip(a, c, strict=True))


def test_resume_from_step_k_continues_the_same_stream(data_dir):
    config = _config(data_dir, hflip=True, scale_range=(0.7, 1.3))
    fresh = _take(train_stream.train_iterator(config, global_batch_size=4, seed=3), 7)
    # 7 batches of 4 = 28 examples: several epochs of the 10 images (reshuffled each epoch).
    resumed = _take(
        train_stream.train_iterator(config, global_batch_size=4, seed=3, start_step=4), 3
    )
    for x, y in zip(fresh[4:], resumed, strict=True):
        _assert_batches_equal(x, y)


def test_process_slices_concatenate_to_the_global_batch(data_dir):
    config = _config(data_dir, hflip=True)
    full = _take(train_stream.train_iterator(config, global_batch_size=4, seed=1), 4)
    parts = [
        _take(
            train_stream.train_iterator(
                config, global_batch_size=4, seed=1, process_index=p, process_count=2
            ),
            4,
        )
        for p in range(2)
    ]
    for step, batch in enumerate(full):
        for key in batch:
            joined = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(joined, batch[key], err_msg=key)


def _true_domains(batch):
    """Domain of each example from its pixels: a is bright (> mean), b dark."""
    mask = batch["image_mask"]
    brightness = np.array([img[m].mean() for img, m in zip(batch["image"], mask, strict=True)])
    return (brightness < 0).astype(np.int32)


def test_mixing_tags_domains_in_proportion_to_size(data_dir):
    config = _config(data_dir, name=["pipeline_test_crowd/a", "pipeline_test_crowd/b"])
    # 30 batches of 4 = 120 examples = 8 epochs of the 15 images (10 a + 5 b) exactly.
    batches = _take(train_stream.train_iterator(config, global_batch_size=4, seed=0), 30)
    domains = np.concatenate([b["domain"] for b in batches])
    for batch in batches:
        np.testing.assert_array_equal(batch["domain"], _true_domains(batch))
    assert (domains == 0).sum() == 80 and (domains == 1).sum() == 40


def test_balanced_domains_draw_equal_shares(data_dir):
    config = _config(
        data_dir, name="pipeline_test_crowd/a, pipeline_test_crowd/b", balanced_domains=True
    )
    batches = _take(train_stream.train_iterator(config, global_batch_size=4, seed=0), 10)
    for batch in batches:
        np.testing.assert_array_equal(batch["domain"], _true_domains(batch))
        assert (batch["domain"] == 1).sum() == 2  # round robin: every batch is half b
    ids = {tuple(p.ravel()) for b in batches for p in b["points"][b["domain"] == 1]}
    assert len(ids) >= 5  # the small domain is cycled through, not stuck on one image


def test_paired_iterator_yields_source_and_target(data_dir):
    source = _config(data_dir, name="pipeline_test_crowd/a")
    target = _config(data_dir, name="pipeline_test_crowd/b")
    pairs = _take(
        train_stream.paired_train_iterator(
            source, target, global_batch_size=2, seed=0, start_step=2
        ),
        3,
    )
    again = _take(
        train_stream.paired_train_iterator(source, target, global_batch_size=2, seed=0), 5
    )
    for pair, ref in zip(pairs, again[2:], strict=True):
        assert set(pair) == {"source", "target"}
        assert not pair["source"]["domain"].any() and (pair["target"]["domain"] == 1).all()
        np.testing.assert_array_equal(_true_domains(pair["target"]), 1)
        _assert_batches_equal(pair["source"], ref["source"])
        _assert_batches_equal(pair["target"], ref["target"])


def test_roi_is_cropped_into_train_batches(data_dir):
    config = _config(data_dir, name="pipeline_test_roi_crowd/a")
    batch = next(train_stream.train_iterator(config, global_batch_size=2, seed=0))
    assert batch["roi"].shape == (2, 32, 48) and batch["roi"].dtype == np.uint8
    assert not batch["roi"][~batch["image_mask"]].any()


@pytest.mark.parametrize("seed", range(6))
def test_train_roi_is_the_stored_roi_scaled_cropped_and_flipped_with_the_image(data_dir, seed):
    name = "pipeline_test_roi_crowd/a"
    config = _config(data_dir, name=name, hflip=True, scale_range=(0.7, 1.4), output_stride=1)
    transform = train_stream._train_transform(config, name, 1)
    raw = datasets.raw_source(name, "train", data_dir=data_dir)
    stored = datasets.data_source(name, "train", data_dir=data_dir)
    for index in range(len(raw)):
        out = transform(raw[index], np.random.default_rng([seed, index]))
        # The transform's draws, in its order: scale, crop window, flip.
        rng = np.random.default_rng([seed, index])
        roi = stored[index]["roi"]
        height, width = roi.shape
        scale = rng.uniform(0.7, 1.4)
        hs, ws = max(1, round(height * scale)), max(1, round(width * scale))
        y0, x0, h, w = T.random_window(rng, hs, ws, (32, 48))
        flip = rng.random() < 0.5
        # Nearest neighbour of the whole image at pixel centres, floor((i + 1/2) H / Hs) (exact,
        # from fractions), then the window, then the flip.
        rows = [min(int(Fraction(2 * i + 1, 2 * hs) * height), height - 1) for i in range(hs)]
        cols = [min(int(Fraction(2 * j + 1, 2 * ws) * width), width - 1) for j in range(ws)]
        want = roi[rows][:, cols][y0 : y0 + h, x0 : x0 + w]
        want = want[:, ::-1] if flip else want
        np.testing.assert_array_equal(out["roi"][:h, :w], want)
        assert not out["roi"][h:].any() and not out["roi"][:, w:].any()  # padding: outside
        assert out["image_mask"][:h, :w].all() and out["image_mask"].sum() == h * w


def test_max_points_overflow_names_the_image(data_dir):
    config = _config(data_dir, max_points=1, crop_size=(64, 64), output_stride=1)
    with pytest.raises(ValueError, match=r"a_train_\d+\.png: \d+ points exceed max_points=1"):
        _take(train_stream.train_iterator(config, global_batch_size=10, seed=0), 1)


def test_density_sigma_regenerates_with_the_method_kernel(data_dir):
    stored = train_stream._train_transform(_config(data_dir), "pipeline_test_crowd/a", 4)
    assert stored.kernel == T.Kernel(sigma=1.5) and not stored.regenerate  # builder's recipe
    config = _config(data_dir, density_sigma=3.0)
    regen = train_stream._train_transform(config, "pipeline_test_crowd/a", 4)
    assert regen.kernel == T.Kernel(sigma=3.0) and regen.regenerate


def test_a_crop_must_divide_by_the_stride(data_dir):
    config = _config(data_dir, crop_size=30)
    with pytest.raises(ValueError, match="not divisible by the output stride 4"):
        settings.check_geometry(config, 4)
    settings.check_geometry(_config(data_dir, crop_size=32), 4)


@pytest.mark.parametrize(
    "overrides, kwargs, message",
    [
        ({}, dict(global_batch_size=3, process_count=2), "divisible by the process count 2"),
        ({}, dict(global_batch_size=4, process_index=2, process_count=2), "process_index"),
        ({"scale_range": (2.0, 1.0)}, dict(global_batch_size=2), "scale_range"),
        ({"name": ""}, dict(global_batch_size=2), "names no data set"),
    ],
)
def test_invalid_settings_raise_clear_errors(data_dir, overrides, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_stream.train_iterator(_config(data_dir, **overrides), seed=0, **kwargs)


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(data_dir):
    config = _config(data_dir, hflip=True)
    threads = _take(train_stream.train_iterator(config, global_batch_size=4, seed=0), 3)
    config.worker_processes = 2
    processes = _take(train_stream.train_iterator(config, global_batch_size=4, seed=0), 3)
    for x, y in zip(threads, processes, strict=True):
        _assert_batches_equal(x, y)


# -------------------------------------------------------------------------------- evaluation


def _reference_test_split(data_dir, name="pipeline_test_crowd/a"):
    source = datasets.data_source(name, "test", data_dir=data_dir)
    return {e["image_id"].decode(): e for e in (source[i] for i in range(len(source)))}


@pytest.mark.parametrize("buckets", [(), ((48, 48), (80, 80))])
def test_eval_batches_cover_each_image_once_with_masks(data_dir, buckets):
    config = _config(data_dir, eval_buckets=buckets, eval_bucket_multiple=32)
    reference = _reference_test_split(data_dir)
    batches = list(eval_stream.eval_iterator(config, "test", batch_size=2))
    seen, invalid, shapes = [], 0, set()
    for batch in batches:
        assert batch["category_keys"] == ("weather",)
        shapes.add(batch["image"].shape[1:3])
        for i in range(2):
            if not batch["valid"][i]:
                invalid += 1
                assert not batch["image_mask"][i].any() and batch["image_id"][i] == ""
                continue
            ref = reference[str(batch["image_id"][i])]
            seen.append(str(batch["image_id"][i]))
            h, w = ref["image"].shape[:2]
            bucket = batching.bucket_shape(h, w, buckets=buckets, multiple=32)
            assert batch["image"].shape[1:3] == bucket
            np.testing.assert_array_equal(batch["image_mask"][i], T.image_mask(*bucket, h, w))
            np.testing.assert_allclose(
                batch["image"][i][:h, :w], T.normalize(ref["image"]), atol=1e-6
            )
            assert not batch["image"][i][h:].any() and not batch["image"][i][:, w:].any()
            n = len(ref["points"])
            assert batch["count"][i] == n and batch["point_mask"][i].sum() == n
            np.testing.assert_array_equal(batch["points"][i][:n], ref["points"])
            assert batch["weather"][i] == ref["weather"]
    assert sorted(seen) == sorted(reference)
    sizes = [reference[k]["image"].shape[:2] for k in reference]
    groups = [batching.bucket_shape(h, w, buckets=buckets, multiple=32) for h, w in sizes]
    assert invalid == sum(groups.count(g) % 2 for g in set(groups))  # odd groups get one pad
    assert shapes == set(groups)
    if buckets:
        assert shapes <= {(48, 48), (80, 80)}


def test_min_short_side_scales_eval_and_whole_image_training_consistently(data_dir):
    # Images of 16-71 px: every short side under 40 is scaled up to 40 before bucketing.
    config = _config(data_dir, min_short_side=40, eval_bucket_multiple=32)
    reference = _reference_test_split(data_dir)
    for batch in eval_stream.eval_iterator(config, "test", batch_size=2):
        for i in np.flatnonzero(batch["valid"]):
            ref = reference[str(batch["image_id"][i])]
            h, w = T.min_side_shape(*ref["image"].shape[:2], 40)
            assert min(h, w) >= 40
            assert batch["image"].shape[1:3] == batching.bucket_shape(h, w, multiple=32)
            np.testing.assert_array_equal(
                batch["image_mask"][i], T.image_mask(*batch["image"].shape[1:3], h, w)
            )
            assert batch["count"][i] == len(ref["points"])
    # Whole-image training with 2 processes plans every image's size from the stored shapes
    # (the same rule); each process's images must agree with the plan (else DataError).
    config = _config(data_dir, min_short_side=40, whole_image=True, train_bucket_multiple=32)
    for p in range(2):
        batch = next(
            train_stream.train_iterator(
                config, global_batch_size=4, seed=0, process_index=p, process_count=2
            )
        )
        real = batch["image_mask"].any(axis=2).sum(axis=1), batch["image_mask"].any(axis=1).sum(1)
        assert np.all(np.minimum(*real) >= 40)


def test_eval_process_slices_cover_the_split(data_dir):
    config = _config(data_dir, eval_bucket_multiple=32)
    per_process = [
        list(
            eval_stream.eval_iterator(
                config, "test", batch_size=4, process_index=p, process_count=2
            )
        )
        for p in range(2)
    ]
    assert len(per_process[0]) == len(per_process[1])
    for a, b in zip(*per_process, strict=True):
        assert a["image"].shape == b["image"].shape  # same bucket in step on every process
    ids = [str(i) for batches in per_process for b in batches for i in b["image_id"][b["valid"]]]
    assert sorted(ids) == sorted(_reference_test_split(data_dir))


def test_eval_roi_is_padded_with_zeros(data_dir):
    config = _config(data_dir, name="pipeline_test_roi_crowd/a", eval_bucket_multiple=32)
    reference = _reference_test_split(data_dir, "pipeline_test_roi_crowd/a")
    for batch in eval_stream.eval_iterator(config, "test", batch_size=1):
        ref = reference[str(batch["image_id"][0])]
        h, w = ref["roi"].shape
        np.testing.assert_array_equal(batch["roi"][0][:h, :w], ref["roi"])
        assert batch["roi"][0].sum() == ref["roi"].sum()


def test_eval_bucket_sizes_must_divide_by_the_stride(data_dir):
    config = _config(data_dir, eval_bucket_multiple=36)
    with pytest.raises(ValueError, match="not divisible by the output stride 8"):
        settings.check_geometry(config, 8)


def test_bucket_shape_rules():
    assert batching.bucket_shape(30, 50, multiple=32) == (32, 64)
    assert batching.bucket_shape(64, 64, multiple=32) == (64, 64)
    buckets = [(768, 1024), (1024, 768), (512, 512)]
    assert batching.bucket_shape(500, 300, buckets=buckets) == (512, 512)
    assert batching.bucket_shape(700, 1000, buckets=buckets) == (768, 1024)
    assert batching.bucket_shape(1000, 700, buckets=buckets) == (1024, 768)
    assert batching.bucket_shape(1100, 700, buckets=buckets, multiple=128) == (1152, 768)


def test_dataset_names_accepts_str_list_and_comma_list():
    config = settings.default_data_config()
    config.name = "x/a"
    assert settings.dataset_names(config) == ["x/a"]
    config.name = "x/a, y"
    assert settings.dataset_names(config) == ["x/a", "y"]
    config.name = ["x/a", "y"]
    assert settings.dataset_names(config) == ["x/a", "y"]


# ---------------------------------------------------------------------- held-out validation


def _train_ids(config, steps=12, batch=4):
    """Image ids seen by the training stream: crops larger than the images, no flip, so every
    example is a whole image, recognised by its size and pixels."""
    big = _config(
        config.data_dir,
        crop_size=(72, 72),
        output_stride=1,
        hflip=False,
        holdout_fraction=config.holdout_fraction,
    )
    reference = datasets.data_source("pipeline_test_crowd/a", "train", data_dir=config.data_dir)
    ids = {}
    for i in range(len(reference)):
        image = T.normalize(reference[i]["image"])
        ids[(image.shape[:2], round(float(image.sum(dtype=np.float64)), 2))] = reference[i][
            "image_id"
        ].decode()
    seen = set()
    for b in _take(train_stream.train_iterator(big, global_batch_size=batch, seed=5), steps):
        for k in range(batch):
            mask = b["image_mask"][k]
            h, w = int(mask.any(1).sum()), int(mask.any(0).sum())
            total = round(float(b["image"][k][:h, :w].sum(dtype=np.float64)), 2)
            seen.add(ids[((h, w), total)])
    return seen


def test_heldout_validation_images_never_reach_the_training_stream(data_dir):
    config = _config(data_dir, holdout_fraction=0.3)
    val = [
        str(i)
        for b in eval_stream.eval_iterator(config, "validation", batch_size=2)
        for i in b["image_id"][b["valid"]]
    ]
    train_eval = [
        str(i)
        for b in eval_stream.eval_iterator(config, "train", batch_size=2)
        for i in b["image_id"][b["valid"]]
    ]
    assert len(val) == 3 and len(train_eval) == 7  # 30% of the 10 training images
    view = splits.resolve(config, "pipeline_test_crowd/a", "validation")
    assert view.description.startswith("3 of the 10 images of 'train' held out")
    assert set(val).isdisjoint(train_eval)
    assert sorted(val + train_eval) == [f"a_train_{i}.png" for i in range(10)]
    # 12 batches of 4 = 48 crops, several epochs of the 7 kept images: all of them, none held out.
    assert _train_ids(config) == set(train_eval)
    # Without a holdout the stream cycles through all 10 (so the check above can fail).
    assert _train_ids(_config(data_dir, holdout_fraction=0.0)) == set(val + train_eval)


def test_block_holdout_takes_consecutive_frames_by_name(data_dir):
    # The built split is shuffled: consecutive positions are not consecutive frames.
    config = _config(data_dir, holdout_fraction=0.5, holdout_mode="block")
    view = splits.resolve(config, "pipeline_test_crowd/a", "validation")
    source = datasets.data_source("pipeline_test_crowd/a", "train", data_dir=data_dir)
    stored = [int(source[i]["image_id"].decode()[8:-4]) for i in range(len(source))]
    assert stored != sorted(stored)  # (else this test could not tell)
    frames = sorted(stored[i] for i in view.indices)
    assert len(frames) == 5 and frames == list(range(frames[0], frames[0] + 5)), frames


def test_a_data_set_without_validation_and_no_holdout_says_so(data_dir):
    config = _config(data_dir, holdout_fraction=0.0)
    with pytest.raises(DataError, match="no validation split and data.holdout_fraction is 0"):
        eval_stream.eval_iterator(config, "validation", batch_size=2)


def test_domain_labels_replace_the_data_set_index(data_dir):
    source = datasets.data_source("pipeline_test_crowd/a", "train", data_dir=data_dir)
    # Label = number of heads mod 3; whole-image crops keep every head, so a batch shows it.
    labels_by_id = {source[i]["image_id"].decode(): len(source[i]["points"]) % 3 for i in range(10)}
    config = _config(data_dir, crop_size=(72, 72), output_stride=1)
    batches = train_stream.train_iterator(
        config,
        global_batch_size=5,
        seed=0,
        domain_labels={"pipeline_test_crowd/a": labels_by_id},
    )
    domains = []
    for batch in _take(batches, 4):
        np.testing.assert_array_equal(batch["domain"], batch["point_mask"].sum(1) % 3)
        domains.extend(batch["domain"])
    assert len(set(domains)) > 1
    missing = dict(list(labels_by_id.items())[:-1])
    with pytest.raises(DataError, match=r"pipeline_test_crowd/a/a_train_\d\.png: the preparation"):
        _take(
            train_stream.train_iterator(
                config,
                global_batch_size=10,
                seed=0,
                domain_labels={"pipeline_test_crowd/a": missing},
            ),
            1,
        )


def test_paired_target_keeps_only_the_requested_keys(data_dir):
    source = _config(data_dir, target="pipeline_test_crowd/b")
    pair = next(
        train_stream.paired_train_iterator(
            source,
            settings.target_config(source),
            global_batch_size=2,
            seed=0,
            target_keys=("image", "image_mask"),
        )
    )
    assert set(pair["target"]) == {"image", "image_mask"}
    assert pair["target"]["image"].shape == pair["source"]["image"].shape


@pytest.mark.parametrize("processes, split", [(0, [0, 0]), (1, [1, 0]), (2, [1, 1]), (5, [3, 2])])
def test_paired_streams_share_the_worker_processes(data_dir, monkeypatch, processes, split):
    """data.worker_processes are the run's: a paired run's two streams split them (each taking
    them all put 4 processes on 2 cores and halved ASNet's crops/s)."""
    asked = []
    to_iter = batching.to_iter

    def recording_to_iter(ds, data_config, *, processes=0):
        asked.append(processes)
        return to_iter(ds, data_config, processes=0)  # The batches are the same either way.

    monkeypatch.setattr(batching, "to_iter", recording_to_iter)
    source = _config(data_dir, target="pipeline_test_crowd/b", worker_processes=processes)
    pairs = train_stream.paired_train_iterator(
        source, settings.target_config(source), global_batch_size=2, seed=0
    )
    next(pairs)
    assert asked == split
    assert source.worker_processes == processes  # The caller's config is left as it was.


def test_train_density_maps_are_the_streams_unaugmented_maps(data_dir):
    # A regenerated kernel with its truncation, whole images cut into 2 x 2 tiles.
    config = _config(
        data_dir, density_sigma=2.0, density_truncate=1.75, whole_image=True, train_tiles=2
    )
    got = list(train_stream.train_density_maps(config, output_stride=4))
    source = sources.split_source(config, "pipeline_test_crowd/a", config.train_split)
    transform = train_stream._train_transform(config, "pipeline_test_crowd/a", 4)
    want = []
    for i in range(len(source)):
        record = source[i]
        example = transform.example(record, np.random.default_rng(0))  # no random step
        points = np.asarray(record["points"], np.float64).reshape(-1, 2)
        full = labels.density_map(points, example.shape, sigma=2.0, truncate=1.75)
        np.testing.assert_allclose(example.density, full, rtol=1e-6, atol=1e-9)
        want.extend(part.density for part in T.split_tiles(example, 2, 4) if min(part.shape) > 0)
    assert len(got) == len(want) > len(source)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    # The stored maps (no density_sigma) without tiles: one map per image, the stored one.
    stored = list(train_stream.train_density_maps(_config(data_dir), output_stride=4))
    assert len(stored) == len(source)
    np.testing.assert_array_equal(stored[0], decode.decode_tensor(source[0]["density"], np.float32))
