"""Builder versions name the folders of prepared data: a changed version hides existing data."""

import pytest

from tfds_builders import (
    base,
    gcc,
    jhu_crowd,
    mall,
    nwpu_crowd,
    shanghaitech,
    synthetic_crowd,
    trancos,
    ucf_cc_50,
    ucf_qnrf,
    ucsd,
    user_crowd,
)

SHARED = [
    gcc.Gcc,
    jhu_crowd.JhuCrowd,
    mall.Mall,
    shanghaitech.ShanghaiTech,
    synthetic_crowd.SyntheticCrowd,
    trancos.Trancos,
    ucf_cc_50.UcfCc50,
    ucf_qnrf.UcfQnrf,
    ucsd.Ucsd,
]


@pytest.mark.parametrize("builder", SHARED, ids=lambda b: b.__name__)
def test_builders_share_version_1_1_0_with_its_notes(builder):
    assert str(builder.VERSION) == "1.1.0"
    assert set(builder.RELEASE_NOTES) == {"1.0.0", "1.1.0"}
    assert builder.RELEASE_NOTES["1.1.0"] == base.CrowdBuilder.RELEASE_NOTES["1.1.0"]


def test_builders_with_their_own_history():
    assert synthetic_crowd.SyntheticCrowd.RELEASE_NOTES["1.0.0"].startswith("Initial release: ")
    assert str(user_crowd.UserCrowd.VERSION) == "1.1.0"
    assert user_crowd.UserCrowd.RELEASE_NOTES == {
        "1.0.0": "Initial release.",
        "1.1.0": "Images turned upright by their EXIF orientation, as predict.py reads them.",
    }


def test_nwpu_crowd_1_2_0_adds_head_boxes():
    builder = nwpu_crowd.NwpuCrowd
    assert str(builder.VERSION) == "1.2.0" and builder.HAS_HEAD_BOXES
    assert set(builder.RELEASE_NOTES) == {"1.0.0", "1.1.0", "1.2.0"}
    assert builder.RELEASE_NOTES["1.1.0"] == base.CrowdBuilder.RELEASE_NOTES["1.1.0"]


def test_every_builder_is_listed():
    ours = {b for b in base.CrowdBuilder.__subclasses__() if b.__module__.startswith("tfds_")}
    assert ours == {*SHARED, nwpu_crowd.NwpuCrowd, user_crowd.UserCrowd}
