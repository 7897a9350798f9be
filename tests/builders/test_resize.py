"""The builders' resize rule (`base.resize_scale`), incl. fitting a box (`max_box`)."""

import pytest

from tfds_builders.base import CrowdConfig, resize_scale
from tfds_builders.ucf_qnrf import UcfQnrf

BOX = CrowdConfig(name="box", max_box=(1920, 1080))


def _scaled(height, width, cfg):
    s = resize_scale(height, width, cfg)
    return round(height * s), round(width * s)


def test_max_box_fits_landscape_and_portrait_images_keeping_their_aspect_ratio():
    # Landscape 4000 x 3000 (w x h): the short side binds, 3000 -> 1080 (x 0.36): 1440 x 1080.
    assert resize_scale(3000, 4000, BOX) == pytest.approx(0.36)
    assert _scaled(3000, 4000, BOX) == (1080, 1440)
    # Wide 6000 x 1000: the long side binds (x 0.32): 1920 x 320.
    assert _scaled(1000, 6000, BOX) == (320, 1920)
    # Portrait (h > w) 2400 x 1200: the long side is the height, 2400 -> 1920 (x 0.8).
    assert _scaled(2400, 1200, BOX) == (1920, 960)
    # Portrait 2000 x 1500: the short side binds, 1500 -> 1080 (x 0.72).
    assert _scaled(2000, 1500, BOX) == (1440, 1080)


@pytest.mark.parametrize("shape", [(1080, 1920), (1920, 1080), (500, 700), (1080, 1080)])
def test_max_box_keeps_images_that_fit(shape):
    assert resize_scale(*shape, BOX) == 1.0


def test_max_box_caps_the_short_and_long_side_rules():
    both = CrowdConfig(name="both", min_short_side=512, max_long_side=4000, max_box=(1920, 1080))
    # Upscaled by 512 / 100 = 5.12 to 512 x 2048, then capped by the box: 400 -> 1920 (x 4.8).
    assert resize_scale(100, 400, both) == pytest.approx(4.8)
    assert _scaled(100, 400, both) == (480, 1920)
    # Upscaled by 5.12 to 512 x 1024: fits the box, the short-side rule stands.
    assert resize_scale(100, 200, both) == pytest.approx(5.12)
    # The long-side rule (8000 -> 4000, x 0.5) then the box (x 0.24 overall): 1920 x 480.
    assert _scaled(2000, 8000, both) == (480, 1920)


def test_without_a_box_the_rules_are_unchanged():
    default = {c.name: c for c in UcfQnrf.BUILDER_CONFIGS}["default"]
    assert default.max_box is None and UcfQnrf.BUILDER_CONFIGS[0] is default
    assert resize_scale(120, 160, default) == pytest.approx(512 / 120)
    assert resize_scale(600, 2100, default) == pytest.approx(2048 / 2100)
    assert resize_scale(3000, 4000, default) == pytest.approx(2048 / 4000)
    assert resize_scale(520, 700, default) == 1.0


@pytest.mark.parametrize("box", [(0, 10), (1080, 1920), (1920, -1)])
def test_max_box_must_be_long_then_short_side(box):
    with pytest.raises(ValueError, match="max_box must be"):
        CrowdConfig(name="bad", max_box=box)
