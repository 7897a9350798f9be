"""ShanghaiTech part B built from the real release, checked against its .mat files.

Runs when the data is found: `$CROWDJAX_SHANGHAITECH_DIR` (root or part_B folder), else
`<repo>/../shared/data/ShanghaiTech`; skipped otherwise.
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np
import pytest

from tests.builders import fakes
from tfds_builders.shanghaitech import ShanghaiTech, part_dir, read_annotation

REPO = pathlib.Path(__file__).resolve().parents[2]
ROOT = os.environ.get("CROWDJAX_SHANGHAITECH_DIR") or os.fspath(
    REPO.parent / "shared" / "data" / "ShanghaiTech"
)
EXPECTED = {"train": 400, "test": 316}
TOTAL_HEADS = 88_272


def _part_b() -> str | None:
    try:
        return part_dir(ROOT, "b")
    except Exception:  # Any failure to find the data means: skip.
        return None


# Runs in the default suite whenever the real data is there (about 75 s of CPU on 2 cores).
pytestmark = [
    pytest.mark.skipif(_part_b() is None, reason=f"ShanghaiTech part B not found under {ROOT}"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("shanghaitech_real")
    start = time.perf_counter()
    builder = fakes.build(ShanghaiTech, ROOT, out, config="part_b")
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in pathlib.Path(builder.data_dir).rglob("*") if p.is_file())
    print(f"\nshanghaitech/part_b: built in {seconds:.1f} s, {size / 2**20:.1f} MiB on disk")
    return builder, size


def test_splits_and_size(built):
    builder, size = built
    assert {s: builder.info.splits[s].num_examples for s in EXPECTED} == EXPECTED
    assert builder.info.metadata["points_outside_image"] == {"train": 0, "test": 0}
    assert builder.info.metadata["count_mismatch"] == {"train": 0, "test": 0}
    # float16 density maps (builders >= 1.1.0): 244 MiB measured, 414 MiB with float32 maps.
    assert size < 300 * 2**20


def test_every_example_matches_its_mat_file(built):
    builder, _ = built
    total = 0
    for split, count in EXPECTED.items():
        gt_dir = os.path.join(_part_b(), f"{split}_data", "ground-truth")
        examples = fakes.read_split(builder, split)
        assert len(examples) == count
        for image_id, ex in examples.items():
            points, number = read_annotation(
                os.path.join(gt_dir, "GT_" + os.path.splitext(image_id)[0] + ".mat")
            )
            assert int(ex["count"]) == number == len(points), image_id
            np.testing.assert_array_equal(np.asarray(ex["points"]), points)
            density = np.asarray(ex["density"])
            assert np.asarray(ex["image"]).shape == (768, 1024, 3)
            assert density.shape == np.asarray(ex["distance_label"]).shape == (768, 1024)
            np.testing.assert_allclose(density.sum(dtype=np.float64), number, rtol=1e-4)
            total += number
    assert total == TOTAL_HEADS
