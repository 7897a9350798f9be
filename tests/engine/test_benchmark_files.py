"""NWPU-Crowd test-server files from a checkpoint, on a fake release (unannotated test split)."""

from __future__ import annotations

import numpy as np
import pytest

from crowdjax import benchmark_files, trainer
from crowdjax.data import datasets
from tests.builders import fakes
from tests.builders import test_nwpu_crowd as nwpu_fake
from tests.engine import toy_configs
from tfds_builders.nwpu_crowd import NwpuCrowd


@pytest.mark.slow
def test_nwpu_files_from_a_checkpoint(tmp_path):
    nwpu_fake.make_release(tmp_path / "raw")
    builder = fakes.build(NwpuCrowd, tmp_path / "raw", tmp_path / "data")
    config = toy_configs.get_config("constant")
    config.data.name = "nwpu_crowd"
    config.data.data_dir = str(tmp_path / "data")
    config.data.crop_size = 256
    del config.evals["test"]  # Its annotations are not public: nothing to evaluate.
    config.train.num_steps = 1
    config.eval.localization = "input_peaks"
    workdir = str(tmp_path / "run")
    trainer.run_main(config, workdir)
    paths = benchmark_files.write_nwpu(config, workdir)
    counting = open(paths["counting"]).read().splitlines()
    localization = open(paths["localization"]).read().splitlines()
    assert [line.split()[0] for line in counting] == ["0005", "0006"]
    assert [line.split()[0] for line in localization] == ["0005", "0006"]
    # A constant density: the count is the value times the image's output cells (stride 8).
    test = fakes.read_split(builder, "test")
    for line in localization:
        image_id, n, *coords = line.split()
        xy = np.array(coords, int).reshape(-1, 2)
        assert len(xy) == int(n)
        h, w = np.asarray(test[f"{image_id}.jpg"]["original_size"])
        assert np.all((xy >= 0) & (xy < [w, h]))
    assert all(float(line.split()[1]) >= 0 for line in counting)
    assert datasets.is_prepared("nwpu_crowd", data_dir=str(tmp_path / "data"))
