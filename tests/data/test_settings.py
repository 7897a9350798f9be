"""The data config's one geometry check (crowdjax.data.settings), and that Setup runs it once."""

import pytest

from crowdjax import run
from crowdjax.data import settings
from tests.engine import toy_configs


def _config(**data):
    config = settings.default_data_config()
    config.update({"crop_size": 64, "output_stride": 8, **data})
    return config


def test_every_size_a_model_sees_must_divide_by_the_stride():
    settings.check_geometry(_config(eval_buckets=((128, 192),)), 8)
    for data, field in [
        (dict(crop_size=(64, 60)), r"data.crop_size: 64 x 60"),
        (dict(eval_bucket_multiple=36), r"data.eval_bucket_multiple: 36 x 36"),
        (dict(eval_buckets=((128, 100),)), r"data.eval_buckets \(128, 100\): 128 x 100"),
        (dict(whole_image=True, train_buckets=((60, 64),)), r"data.train_buckets \(60, 64\)"),
        (dict(whole_image=True, train_bucket_multiple=20), r"data.train_bucket_multiple: 20 x"),
    ]:
        with pytest.raises(ValueError, match=field + ".* not divisible by the output stride 8"):
            settings.check_geometry(_config(**data), 8)
    # Whole images are never cropped: the crop size does not matter; the buckets do.
    settings.check_geometry(_config(whole_image=True, crop_size=60), 8)
    # Another stride, named as the caller names it.
    with pytest.raises(ValueError, match=r"64 x 64 is not divisible by G's stride 128 \(pools\)"):
        settings.check_geometry(_config(), 128, stride_name="G's stride", hint=" (pools)")


def _counted(monkeypatch):
    strides = []
    check = settings.check_geometry

    def counting(data_config, stride, **kwargs):
        strides.append(stride)
        return check(data_config, stride, **kwargs)

    monkeypatch.setattr(settings, "check_geometry", counting)
    return strides


def test_setup_checks_the_geometry_once_with_the_method_stride(monkeypatch):
    strides = _counted(monkeypatch)
    config = toy_configs.get_config("constant")  # a density at stride config.toy.stride = 8
    config.data.crop_size = 60
    with pytest.raises(ValueError, match="data.crop_size: 60 x 60 is not divisible by the output"):
        run.Setup(config)
    assert strides == [8]
    strides.clear()
    config.data.crop_size = 64
    run.Setup(config)
    assert strides == [8]
