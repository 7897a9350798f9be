"""Result files in the published formats, on fake NWPU-Crowd / JHU-Crowd++ releases."""

import numpy as np
import pytest

from crowdjax import submissions
from tests.builders import fakes
from tests.builders import test_jhu_crowd as jhu_fake
from tests.builders import test_nwpu_crowd as nwpu_fake
from tfds_builders.jhu_crowd import JhuCrowd
from tfds_builders.nwpu_crowd import NwpuCrowd


@pytest.fixture(scope="module")
def nwpu_builder(tmp_path_factory):
    root = tmp_path_factory.mktemp("nwpu")
    truth = nwpu_fake.make_release(root / "raw")
    return fakes.build(NwpuCrowd, root / "raw", root / "out"), truth


def parse_localization(line):
    """The published format: id, N, then N (x, y) pairs, every token an integer."""
    tokens = line.split(" ")
    assert all(t.isdigit() for t in tokens), line
    image_id, n, *coords = tokens
    assert len(coords) == 2 * int(n), line
    return image_id, np.array(coords, int).reshape(-1, 2)


def test_nwpu_counting_file_lists_every_test_image(nwpu_builder, tmp_path):
    builder, _ = nwpu_builder
    test = fakes.read_split(builder, "test")
    per_image = [{"image_id": name, "pred_count": 2.5 * i} for i, name in enumerate(sorted(test))]
    path = submissions.write_lines(
        str(tmp_path / "count.txt"),
        submissions.nwpu_counting_lines(per_image[::-1], expected_ids=test),
    )
    # "3610 100.0000": id, a space, the count with 4 decimals; one line per test image, by id.
    assert open(path).read() == "0005 0.0000\n0006 2.5000\n"
    with pytest.raises(ValueError, match=r"missing \['0006'\] \(1\)"):
        submissions.nwpu_counting_lines(per_image[:1], expected_ids=test)
    with pytest.raises(ValueError, match="given twice"):
        submissions.nwpu_counting_lines(per_image + per_image[:1])
    with pytest.raises(ValueError, match="not an NWPU-Crowd image name"):
        submissions.nwpu_counting_lines([{"image_id": "img_1.jpg", "pred_count": 1.0}])


def test_nwpu_localization_file_at_the_original_resolution(nwpu_builder, tmp_path):
    builder, truth = nwpu_builder
    train = fakes.read_split(builder, "train")
    # Predict the stored heads: written back at the release resolution, they are the release's
    # points rounded (0002 was stored upscaled from 300 x 400 to 512 x 683).
    predictions = [
        {
            "image_id": name,
            "points": np.asarray(ex["points"]),
            "stored_size": np.asarray(ex["image"]).shape[:2],
            "original_size": np.asarray(ex["original_size"]),
        }
        for name, ex in train.items()
    ]
    lines = submissions.nwpu_localization_lines(predictions, expected_ids=train)
    submissions.write_lines(str(tmp_path / "loc.txt"), lines)
    parsed = dict(
        parse_localization(line) for line in open(tmp_path / "loc.txt").read().splitlines()
    )
    assert sorted(parsed) == ["0001", "0002", "0003"]
    assert parsed["0003"].shape == (0, 2)  # a negative image: "0003 0"
    for image_id in ("0001", "0002"):
        np.testing.assert_allclose(parsed[image_id], truth[image_id], atol=0.5 + 1e-3)
    assert lines[2] == "0003 0"
    # A point past the border stays in the image: (683, 512) stored -> x <= 399, y <= 299.
    xy = submissions.to_original_pixels(
        [[683.0, 512.0]], stored_size=(512, 683), original_size=(300, 400)
    )
    np.testing.assert_array_equal(xy, [[399, 299]])


def test_jhu_category_table_on_the_fake_release(tmp_path):
    jhu_fake.make_release(tmp_path / "raw")
    builder = fakes.build(JhuCrowd, tmp_path / "raw", tmp_path / "out")
    records = []
    for split in ("train", "validation", "test"):  # five images, every category of the layout
        for name, ex in fakes.read_split(builder, split).items():
            categories = {k: int(ex[k]) for k in ("weather", "density_level")}
            gt = int(ex["count"])
            records.append(
                {"image_id": name, "gt_count": gt, "pred_count": gt + 2.0, "categories": categories}
            )
    # Counts 3, 60, 0, 51, 2 with weather 0, 2, 3, 1, 0: low = 0001, 0003, 0005 (3 images),
    # medium = 0002, 0004, high none; weather = 0002 (rain), 0003 (snow), 0004 (fog/haze).
    table = submissions.jhu_category_table(records)
    assert {c: table[c]["images"] for c in submissions.JHU_COLUMNS} == {
        "overall": 5,
        "low": 3,
        "medium": 2,
        "high": 0,
        "weather": 3,
    }
    assert table["overall"]["mae"] == 2.0 and table["weather"]["mse"] == 2.0
    assert np.isnan(table["high"]["mae"])
    assert table["weather/rain"]["images"] == 1 and table["weather/snow"]["images"] == 1
    lines = submissions.jhu_table_lines(table)
    assert lines[:2] == ["category images MAE MSE", "overall 5 2.00 2.00"]
    records[0]["pred_count"] = records[0]["gt_count"] - 4.0  # errors -4, 2, 2, 2, 2
    table = submissions.jhu_category_table(records)
    assert table["overall"]["mae"] == pytest.approx(12 / 5)
    assert table["overall"]["mse"] == pytest.approx(np.sqrt(32 / 5))
    with pytest.raises(ValueError, match="no weather label"):
        submissions.jhu_category_table(
            [{"image_id": "x", "gt_count": 1, "pred_count": 1, "categories": {"density_level": 0}}]
        )
