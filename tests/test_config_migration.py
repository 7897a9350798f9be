"""crowdjax.config_migration: an older run's config.json (written before fields the code now
reads directly) loads, builds its model and predicts, shape-wise."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import pytest

from configs import autoscale_synthetic, quickstart
from crowdjax import config_migration, prediction, run, workdir

# Fields the code reads that older runs' config.json files lack.
OLD_RUN_LACKS = {
    "uot": (
        "model.upsample",
        "model.vgg16_to_vgg19",
        "loss.kind",
        "data.min_short_side",
        "data.whole_image",
        "data.train_tiles",
        "model.remat",
        "eval.recompute_batch_stats",
    ),
    "autoscale_loc": (
        "model.fpn_layout",
        "model.remat",
        "data.min_short_side",
        "data.whole_image",
    ),
}


def _write_old_run(workdir, config) -> dict:
    """Writes `config` as an older run's config.json, without the fields of OLD_RUN_LACKS."""
    record = json.loads(config.to_json())
    for field in OLD_RUN_LACKS[config.method]:
        block, key = field.split(".")
        del record[block][key]
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(record, f)
    return record


def test_an_old_config_gets_the_defaults_and_keeps_everything_else(tmp_path):
    config = quickstart.get_config("tiny")
    record = _write_old_run(tmp_path, config)
    assert "upsample" not in record["model"]
    loaded = workdir.load_config(str(tmp_path))
    assert loaded.model.upsample == "bilinear"
    assert loaded.model.vgg16_to_vgg19 is False and loaded.loss.kind == "uot"
    assert loaded.data.min_short_side == 0 and loaded.data.whole_image is False
    assert loaded.data.train_tiles == 1 and loaded.model.remat is False
    assert loaded.eval.recompute_batch_stats == 0
    # Every field the old run had keeps its value (load_config resets only the multi-process
    # settings), and the upgraded config is the current one again.
    assert json.loads(loaded.to_json()) == json.loads(config.to_json())


def test_upgrade_never_overwrites_a_field_the_run_has():
    config = quickstart.get_config("tiny")
    config.model.upsample = "nearest"
    config.data.min_short_side = 416
    config_migration.upgrade(config)
    assert config.model.upsample == "nearest" and config.data.min_short_side == 416


@pytest.mark.parametrize(
    "make_config,out_key,out_rank",
    [
        (lambda: quickstart.get_config("tiny"), "density", 3),
        (lambda: autoscale_synthetic.get_config("loc,tiny"), "classes", 3),
    ],
    ids=["uot", "autoscale_loc"],
)
def test_an_old_run_predicts_shape_wise(tmp_path, make_config, out_key, out_rank):
    config = make_config()
    _write_old_run(tmp_path, config)
    loaded = prediction.find_config(str(tmp_path))
    setup = run.Setup(loaded, devices=jax.devices()[:1])
    variables = setup.abstract_variables()
    images = jax.ShapeDtypeStruct((1, 64, 96, 3), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 64, 96), jnp.bool_)
    out = jax.eval_shape(setup.predict, variables, images, mask)
    stride = setup.output_stride
    assert out[out_key].ndim == out_rank
    assert out[out_key].shape == (1, 64 // stride, 96 // stride)
    counter = prediction.Counter(loaded, variables, setup=setup)  # Reads data.min_short_side.
    assert counter.min_short_side == 0
