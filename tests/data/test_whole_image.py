"""Whole-image training batches (`data.whole_image`): size buckets and T x T tiles.

Uses the tiny test-only data set of test_pipeline.py (images of 16-71 px per side).
"""

import numpy as np
import pytest

from crowdjax.data import datasets, labels, settings, train_stream
from crowdjax.data import transforms as T
from tests.data import test_pipeline
from tests.data.test_pipeline import _assert_batches_equal, _config, _take, _true_domains

data_dir = test_pipeline.data_dir  # the data set fixture

NAME = "pipeline_test_crowd/a"
BUCKETS = ((48, 48), (56, 72), (72, 56))
MULTIPLE = 32


def _whole(data_dir, **overrides):
    settings = dict(
        whole_image=True,
        train_buckets=BUCKETS,
        train_bucket_multiple=MULTIPLE,
        hflip=False,
        with_distance_label=True,
    )
    return _config(data_dir, **{**settings, **overrides})


def _real_shape(mask):
    h, w = int(mask.any(1).sum()), int(mask.any(0).sum())
    assert mask[:h, :w].all() and mask.sum() == h * w  # real pixels top-left
    return h, w


def _expected_bucket(height, width, buckets=BUCKETS, multiple=MULTIPLE):
    """Smallest-area bucket that fits, else sides rounded up to `multiple`."""
    fits = sorted((bh * bw, (bh, bw)) for bh, bw in buckets if bh >= height and bw >= width)
    if fits:
        return fits[0][1]
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def _reference(data_dir, name=NAME):
    source = datasets.data_source(name, "train", data_dir=data_dir)
    return [source[i] for i in range(len(source))]


def _find(reference, image):
    """The stored example whose normalised image is `image` (pixel-exact: PNG, no scaling)."""
    hits = [r for r in reference if np.array_equal(T.normalize(r["image"]), image)]
    assert len(hits) == 1
    return hits[0]


def test_unscaled_whole_images_are_the_stored_images_padded_to_the_batch_bucket(data_dir):
    reference = _reference(data_dir)
    config = _whole(data_dir)
    shapes, mixed = set(), 0
    for batch in _take(train_stream.train_iterator(config, global_batch_size=3, seed=0), 10):
        bucket = batch["image"].shape[1:3]
        assert batch["density"].shape[1:] == (bucket[0] // 4, bucket[1] // 4)
        assert batch["distance_label"].shape[1:] == bucket
        sizes = [_real_shape(m) for m in batch["image_mask"]]
        assert bucket == _expected_bucket(max(h for h, _ in sizes), max(w for _, w in sizes))
        shapes.add(bucket)
        mixed += len({_expected_bucket(h, w) for h, w in sizes}) > 1
        for i, (h, w) in enumerate(sizes):
            ref = _find(reference, batch["image"][i][:h, :w])
            assert (h, w) == ref["image"].shape[:2]
            assert not batch["image"][i][h:].any() and not batch["image"][i][:, w:].any()
            # Density: the stored map, padded, then pooled (bucket sides are multiples of 4).
            padded = np.zeros(bucket, np.float32)
            padded[:h, :w] = ref["density"]
            np.testing.assert_allclose(batch["density"][i], labels.sum_pool(padded, 4), atol=1e-6)
            np.testing.assert_allclose(batch["density"][i].sum(), ref["density"].sum(), atol=1e-4)
            np.testing.assert_array_equal(batch["distance_label"][i][:h, :w], ref["distance_label"])
            assert (batch["distance_label"][i][~batch["image_mask"][i]] == 10).all()
            n = len(ref["points"])
            assert batch["count"][i] == n and batch["point_mask"][i].sum() == n
            np.testing.assert_array_equal(batch["points"][i][:n], ref["points"])
    assert len(shapes) > 1 and mixed > 0  # several buckets; batches of images of several buckets


def test_scaled_whole_images_keep_their_mass_and_points(data_dir):
    config = _whole(data_dir, scale_range=(0.6, 1.4), hflip=True, color_jitter=0.3)
    for batch in _take(train_stream.train_iterator(config, global_batch_size=4, seed=1), 6):
        bucket = batch["image"].shape[1:3]
        sizes = [_real_shape(m) for m in batch["image_mask"]]
        assert bucket == _expected_bucket(max(h for h, _ in sizes), max(w for _, w in sizes))
        for i, (h, w) in enumerate(sizes):
            assert batch["image_mask"][i].sum() == h * w
            pts = batch["points"][i][batch["point_mask"][i]]
            assert np.all((pts >= 0) & (pts < [w, h]))
            # Regenerated from the scaled points: mass 1 per head inside the image, none lost.
            want = labels.density_map(pts, (h, w), sigma=1.5)
            np.testing.assert_allclose(batch["density"][i].sum(), want.sum(), atol=1e-4)
            np.testing.assert_allclose(batch["density"][i].sum(), batch["count"][i], atol=1e-4)


def _tiles_of(batch, k):
    """The 4 tiles of image k of a 2 x 2 tiled batch: (tile index, real h, real w)."""
    return [(4 * k + t, *_real_shape(batch["image_mask"][4 * k + t])) for t in range(4)]


@pytest.mark.parametrize("name", [NAME, "pipeline_test_roi_crowd/a"])
def test_tiles_reassemble_to_the_whole_image(data_dir, name):
    aug = dict(name=name, scale_range=(0.7, 1.3), hflip=True, color_jitter=0.3)
    whole_it = train_stream.train_iterator(_whole(data_dir, **aug), global_batch_size=2, seed=4)
    tiled_it = train_stream.train_iterator(
        _whole(data_dir, train_tiles=2, **aug), global_batch_size=8, seed=4
    )
    for whole, tiled in zip(_take(whole_it, 5), _take(tiled_it, 5), strict=True):
        assert tiled["image"].shape[0] == 8
        sizes = [s[1:] for k in range(2) for s in _tiles_of(tiled, k)]
        assert tiled["image"].shape[1:3] == _expected_bucket(*np.max(sizes, axis=0))
        for k in range(2):
            big_h, big_w = _real_shape(whole["image_mask"][k])
            (t0, h0, w0), (t1, _, w1), (t2, h2, _), (t3, h3, w3) = _tiles_of(tiled, k)
            # Inner edges at floor(H / 2 / 4) * 4, on multiples of the stride.
            assert (h0, w0) == (int(big_h / 2 / 4) * 4, int(big_w / 2 / 4) * 4)
            assert (h0 + h2, w0 + w1) == (big_h, big_w) and (h3, w3) == (h2, w1)
            for key in ("image", "distance_label", "roi"):
                if key not in whole:
                    continue
                t = tiled[key]
                rows = [
                    np.concatenate([t[t0][:h0, :w0], t[t1][:h0, :w1]], axis=1),
                    np.concatenate([t[t2][:h2, :w0], t[t3][:h2, :w1]], axis=1),
                ]
                np.testing.assert_array_equal(
                    np.concatenate(rows), whole[key][k][:big_h, :big_w], err_msg=key
                )
            # Pooled densities: tile edges on stride multiples, so blocks reassemble too.
            d = tiled["density"]
            ph, pw = h0 // 4, w0 // 4
            bh, bw = -(-big_h // 4), -(-big_w // 4)
            rows = [
                np.concatenate([d[t0][:ph, :pw], d[t1][:ph, : bw - pw]], axis=1),
                np.concatenate([d[t2][: bh - ph, :pw], d[t3][: bh - ph, : bw - pw]], axis=1),
            ]
            np.testing.assert_allclose(
                np.concatenate(rows), whole["density"][k][:bh, :bw], atol=1e-6
            )
            total = sum(d[t].sum(dtype=np.float64) for t in (t0, t1, t2, t3))
            np.testing.assert_allclose(total, whole["density"][k].sum(dtype=np.float64), atol=1e-4)
            # Points: each in its tile, in tile pixels; their union is the image's points.
            offsets = {t0: (0, 0), t1: (w0, 0), t2: (0, h0), t3: (w0, h0)}
            union = []
            for t, (dx, dy) in offsets.items():
                pts = tiled["points"][t][tiled["point_mask"][t]]
                th, tw = _real_shape(tiled["image_mask"][t])
                assert np.all((pts >= 0) & (pts < [tw, th]))
                assert tiled["count"][t] == len(pts)
                union.append(pts + [dx, dy])
            union = np.concatenate(union)
            points = whole["points"][k][whole["point_mask"][k]]
            assert len(union) == len(points) == whole["count"][k]
            np.testing.assert_allclose(
                union[np.lexsort(union.T)], points[np.lexsort(points.T)], atol=1e-4
            )
            assert (tiled["domain"][4 * k : 4 * k + 4] == whole["domain"][k]).all()


def test_whole_image_tiles_resume_and_process_slices_keep_the_global_batches(data_dir):
    config = _whole(
        data_dir,
        train_tiles=2,
        train_buckets=(),
        train_bucket_multiple=8,  # fine buckets: the processes' own ones differ
        scale_range=(0.7, 1.3),
        hflip=True,
        color_jitter=0.2,
    )
    fresh = _take(train_stream.train_iterator(config, global_batch_size=8, seed=3), 7)
    again = _take(train_stream.train_iterator(config, global_batch_size=8, seed=3), 7)
    resumed = _take(
        train_stream.train_iterator(config, global_batch_size=8, seed=3, start_step=4), 3
    )
    other = _take(train_stream.train_iterator(config, global_batch_size=8, seed=4), 7)
    for x, y in zip(fresh, again, strict=True):
        _assert_batches_equal(x, y)
    for x, y in zip(fresh[4:], resumed, strict=True):
        _assert_batches_equal(x, y)
    assert not all(
        np.array_equal(x["image"], z["image"]) for x, z in zip(fresh, other, strict=True)
    )
    parts = [
        _take(
            train_stream.train_iterator(
                config, global_batch_size=8, seed=3, process_index=p, process_count=2
            ),
            7,
        )
        for p in range(2)
    ]
    own_buckets_differ = 0
    for step, batch in enumerate(fresh):
        for key in batch:
            joined = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(joined, batch[key], err_msg=key)
        # Each process pads to the bucket of the whole global batch, not of its own images.
        own = {
            _expected_bucket(*np.max([_real_shape(m) for m in part[step]["image_mask"]], 0), (), 8)
            for part in parts
        }
        own_buckets_differ += len(own) > 1
    assert own_buckets_differ > 0  # (else the check above could not tell)


def test_whole_images_of_several_data_sets_keep_their_domains(data_dir):
    config = _whole(data_dir, name=[NAME, "pipeline_test_crowd/b"], balanced_domains=True)
    for batch in _take(train_stream.train_iterator(config, global_batch_size=4, seed=0), 4):
        np.testing.assert_array_equal(batch["domain"], _true_domains(batch))
        assert (batch["domain"] == 1).sum() == 2


def test_whole_image_max_points_overflow_names_the_image(data_dir):
    config = _whole(data_dir, max_points=1)
    with pytest.raises(ValueError, match=r"a_train_\d+\.png: \d+ points exceed max_points=1"):
        _take(train_stream.train_iterator(config, global_batch_size=10, seed=0), 1)


@pytest.mark.slow
def test_whole_image_worker_processes_give_the_same_batches(data_dir):
    config = _whole(data_dir, train_tiles=2, scale_range=(0.7, 1.3), hflip=True)
    kwargs = dict(global_batch_size=8, seed=0, process_index=1, process_count=2)
    threads = _take(train_stream.train_iterator(config, **kwargs), 3)
    config.worker_processes = 2
    processes = _take(train_stream.train_iterator(config, **kwargs), 3)
    for x, y in zip(threads, processes, strict=True):
        _assert_batches_equal(x, y)


def test_tile_edges_lie_on_stride_multiples():
    for size, tiles, stride in [(16, 2, 4), (11, 2, 4), (100, 3, 8), (1080, 2, 8), (5, 2, 8)]:
        want = [int(k * size / tiles / stride) * stride for k in range(tiles)] + [size]
        assert T.tile_edges(size, tiles, stride) == want
    assert T.tile_edges(1080, 2, 8) == [0, 536, 1080]
    windows = T.tile_windows(30, 50, 2, 4)
    assert windows == [(0, 0, 12, 24), (0, 24, 12, 26), (12, 0, 18, 24), (12, 24, 18, 26)]


@pytest.mark.parametrize(
    "overrides, kwargs, message",
    [
        ({"train_tiles": 2}, dict(global_batch_size=6), r"divisible by data.train_tiles\*\*2"),
        (
            {"train_tiles": 2},
            dict(global_batch_size=4, process_count=2),
            r"data.train_tiles\*\*2 \* process count = 2\*\*2 \* 2",
        ),
        ({"train_tiles": 2, "whole_image": False}, dict(global_batch_size=4), "needs data.whole"),
        ({"train_tiles": 0}, dict(global_batch_size=4), "train_tiles must be >= 1"),
    ],
)
def test_invalid_whole_image_settings_raise_clear_errors(data_dir, overrides, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_stream.train_iterator(_whole(data_dir, **overrides), seed=0, **kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train_buckets": ((30, 32),)}, r"train_buckets \(30, 32\): 30 x 32 is not divis"),
        ({"train_bucket_multiple": 30}, r"train_bucket_multiple: 30 x 30 is not divisible"),
    ],
)
def test_training_bucket_sizes_must_divide_by_the_stride(data_dir, overrides, message):
    with pytest.raises(ValueError, match=message):
        settings.check_geometry(_whole(data_dir, **overrides), 4)


def test_whole_image_ignores_the_crop_size(data_dir):
    config = _whole(data_dir, crop_size=30)  # not divisible by the stride: unused
    settings.check_geometry(config, 4)
    batch = next(train_stream.train_iterator(config, global_batch_size=2, seed=0))
    assert batch["image"].shape[1:3] in BUCKETS or batch["image"].shape[1] % MULTIPLE == 0
