"""Helpers of the manual-download builders: pairing, natural order, threaded ordered map."""

from __future__ import annotations

import threading
import time

import pytest

from crowdjax.data.io import DataError
from tests.builders import fakes
from tfds_builders import _files


def test_natural_order():
    names = ["IMG_10.jpg", "IMG_2.jpg", "img_1.jpg", "IMG_100.jpg"]
    assert sorted(names, key=_files.natural_key) == [
        "img_1.jpg",
        "IMG_2.jpg",
        "IMG_10.jpg",
        "IMG_100.jpg",
    ]


@pytest.mark.parametrize("workers", [1, 3])
def test_ordered_map_keeps_order_and_bounds_work_in_flight(workers):
    started, lock = [], threading.Lock()

    def fn(i):
        with lock:
            started.append(i)
        time.sleep(0.002 * ((7 * i) % 5))  # finish out of order
        return i * i

    out = []
    for value in _files.ordered_map(fn, range(20), workers=workers):
        # When item k is yielded, at most 2 * workers items beyond it were started.
        assert len(started) <= len(out) + 1 + 2 * max(workers, 1)
        out.append(value)
    assert out == [i * i for i in range(20)]


def test_ordered_map_raises_for_the_failing_item():
    def fn(i):
        if i == 5:
            raise DataError(f"item {i}: bad")
        return i

    got = []
    with pytest.raises(DataError, match="item 5: bad"):
        for value in _files.ordered_map(fn, range(20), workers=2):
            got.append(value)
    assert got == [0, 1, 2, 3, 4]


def test_pair_files(tmp_path):
    for n in (1, 2, 10):
        fakes.write_image(tmp_path / "img" / f"IMG_{n}.jpg", 4, 4)
        fakes.write_text(tmp_path / "gt" / f"GT_IMG_{n}.mat", "")
    fakes.write_text(tmp_path / "gt" / "readme.txt", "not an annotation")
    pairs = _files.pair_files(
        str(tmp_path / "img"),
        str(tmp_path / "gt"),
        ann_name=lambda n: "GT_" + n.replace(".jpg", ".mat"),
        ann_pattern=r"GT_.*\.mat",
    )
    assert [p[0].rsplit("/", 1)[1] for p in pairs] == ["IMG_1.jpg", "IMG_2.jpg", "IMG_10.jpg"]
    assert [p[1].rsplit("/", 1)[1] for p in pairs] == [
        "GT_IMG_1.mat",
        "GT_IMG_2.mat",
        "GT_IMG_10.mat",
    ]
