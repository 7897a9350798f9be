"""Every config file builds, selects honestly, and its ":tiny" variant trains and evaluates end to
end (every evaluation of the list reported)."""

from __future__ import annotations

import glob
import importlib
import json
import os

import numpy as np
import pytest

from configs import datasets as config_datasets
from crowdjax import evals, evaluation, registry, trainer
from crowdjax.data import datasets, settings, splits
from tests.engine.conftest import REPO, run_script

CONFIG_FILES = sorted(
    name
    for name in (os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py")))
    if hasattr(importlib.import_module(f"configs.{name}"), "get_config")
)
# A representative tiny run per method family in the default suite; the others under -m slow
# (UOT: the quickstart; AutoScale: localization on TRANCOS end to end).
DEFAULT_TINY = {
    "quickstart",
    "autoscale_loc_trancos",
    "l2sm_qnrf",
    "asnet_synthetic",
}
# DKPNet: tests/methods/dkpnet trains and evaluates its stage I (VA) and stage II (InVA) tiny
# runs end to end.


def _load(name: str, variant: str = ""):
    return importlib.import_module(f"configs.{name}").get_config(variant)


# The `:cpu` recipes (real ShanghaiTech, long sides at most 512 px, a 2-core CPU) of each file.
CPU_VARIANTS = {
    "uot_shb": ("cpu", "cpu,l2"),
    "autoscale_reg_shb": ("cpu", "cpu,fpn"),
    "autoscale_loc_shb": ("cpu", "cpu,fpn"),
    "l2sm_shb": ("cpu", "cpu,spn"),
    "l2sm_sha": ("cpu",),
    "dkpnet_va_shanghaitech": ("va,cpu", "jt,cpu"),
    "asnet_sha_to_shb": ("fine,cpu", "noadapt,cpu"),
}
CPU_DATA = ("shanghaitech/part_a_512", "shanghaitech/part_b_512")


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_full_config_is_consistent(name):
    _check_consistent(name, _load(name))


@pytest.mark.parametrize(
    "name,variant", [(n, v) for n, variants in CPU_VARIANTS.items() for v in variants]
)
def test_cpu_recipe_is_consistent(name, variant):
    """A `:cpu` recipe: consistent as every config, on the halved ShanghaiTech only, from HED's
    VGG16 (DKPNet: from scratch), its stated number of steps, evaluated on test splits at the
    end and selected on held-out training images, a few validations along the way."""
    config = _load(name, variant)
    _check_consistent(name, config)
    names = settings.dataset_names(config.data) + [config.data.target] * bool(config.data.target)
    evaluated = [spec.dataset for spec in config.evals.values() if spec.dataset]
    assert set(names + evaluated) <= set(CPU_DATA), (name, names, evaluated)
    assert config.model.pretrained == ("" if config.method == "dkpnet_va" else "hed")
    if config.model.pretrained:  # HED's weights fill a full-width VGG16 only.
        assert config.model.width == 1.0
        # HED's 0-255 features are ~58x an ImageNet-normalised VGG's: at Adam 1e-4 a density
        # regression from it diverged (L2SM's first real run). AutoScale's localization is a
        # classifier that at 1e-5 does not fit even one crop in 100 steps: the paper's 1e-4.
        backbone_optimizer = config.optimizers.get("generator", config.optimizer)
        localization = config.method == "autoscale_loc"
        assert backbone_optimizer.learning_rate == (1e-4 if localization else 1e-5), name
    if "head_init" in config.model:  # HED's 0-255 features, or DKPNet from scratch: counts
        assert config.model.head_init == "small", name  # start at 0, not thousands off.
    # BatchNorm (DKPNet's HRNet): evaluated with statistics re-estimated on training batches,
    # not the running averages that a few hundred steps at 1e-4 leave stale.
    has_batch_norm = config.method == "dkpnet_va"
    assert (config.eval.recompute_batch_stats >= 20) == has_batch_norm, name
    assert config.train.num_steps == importlib.import_module(f"configs.{name}").CPU_STEPS
    assert 2 <= config.train.num_steps // config.train.eval_every <= 4  # A few validations.
    run_evals = evals.parse(config)
    assert any(e.split == "test" for e in run_evals.entries)
    for entry in run_evals.selection.entries:
        assert entry.split == "validation", (name, entry)
    if not config.data.whole_image:  # Crops fit part B's halved images (384 x 512).
        crop = settings.crop_shape(config.data)
        assert crop[0] <= 384 and crop[1] <= 512


def _check_consistent(name, config):
    assert config.method in registry.method_names()
    assert config.train.num_steps > 0 and config.train.global_batch_size >= 1
    method = registry.get_method(config.method)
    stride = method.output_stride(config)
    crop = settings.crop_shape(config.data)
    assert crop[0] % stride == 0 and crop[1] % stride == 0
    assert all(h % stride == 0 and w % stride == 0 for h, w in config.data.eval_buckets)
    assert config.data.eval_bucket_multiple % stride == 0
    settings.check_geometry(config.data, stride)  # What Setup checks.
    # Every data set named exists as a builder config (building it needs its download).
    names = settings.dataset_names(config.data) + [
        spec.dataset for spec in config.evals.values() if spec.dataset
    ]
    for dataset in names:
        datasets.get_builder(dataset, data_dir="/nonexistent")
    # No config evaluates a test split whose annotations are not public (NWPU-Crowd).
    private = {f.name for f in config_datasets.DATASETS.values() if not f.public_test}
    run_evals = evals.parse(config)
    for entry in run_evals.entries:
        assert not (entry.dataset in private and entry.split == "test"), (name, entry)
    # No shipped config selects its checkpoint on a test split unless it says so by name.
    for entry in run_evals.selection.entries:
        if splits.is_test_split(config.data, entry.split):
            assert config.selection.allow_test and "select_on_test" in name, name


def _tiny_params():
    return [
        pytest.param(n, marks=() if n in DEFAULT_TINY else pytest.mark.slow) for n in CONFIG_FILES
    ]


@pytest.mark.parametrize("name", _tiny_params())
def test_tiny_variant_trains_end_to_end(name, tiny_data_dir, tmp_path):
    config = _load(name, "tiny")
    config.data.data_dir = tiny_data_dir
    if config.method == "dkpnet_inva":  # Stage II clusters the attention of a stage-I run.
        stage1 = _load(name.replace("_inva_", "_va_"), "va,tiny")
        stage1.data.data_dir = tiny_data_dir
        stage1.eval_at_end = False
        trainer.run_main(stage1, str(tmp_path / "stage1"))
        config.dkpnet.stage1 = str(tmp_path / "stage1")
        tmp_path = tmp_path / "stage2"
    results = trainer.run_main(config, str(tmp_path))
    assert set(results) == set(config.evals)
    for prefix, result in results.items():
        assert np.isfinite(result["mae"]) and result["num_images"] == 4
        eval_json = json.load(open(tmp_path / f"eval_{prefix}.json"))
        assert eval_json["num_images"] == 4 and len(eval_json["per_image"]) == 4
        assert eval_json["checkpoint"]["kind"] == "best"
        assert (
            eval_json["selected_by"]["eval"] == "val" and not eval_json["selected_by"]["test_split"]
        )
    with open(tmp_path / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f]
    train = [r for r in lines if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    assert all(np.isfinite(r["loss"]) for r in train)
    assert os.path.isdir(tmp_path / "checkpoints" / "4") and os.path.isdir(tmp_path / "best")
    assert json.load(open(tmp_path / "config.json"))["method"] == config.method
    assert (tmp_path / "git_revision.txt").exists()


def test_eval_py_evaluates_any_data_set_and_split(tiny_data_dir, tmp_path):
    workdir = str(tmp_path)
    common = [f"--workdir={workdir}", f"--config.data.data_dir={tiny_data_dir}"]
    proc = run_script(
        ["train.py", "--config=configs/quickstart.py:tiny", *common, "--config.train.num_steps=2"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    os.remove(tmp_path / "eval_val.json")
    proc = run_script(
        ["eval.py", f"--workdir={workdir}", "--dataset=synthetic_crowd/tiny", "--split=validation"]
        + ["--save_images=2"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evaluating the best checkpoint, step 2" in proc.stdout
    result = json.load(open(tmp_path / "eval_val.json"))  # the entry's prefix
    for key in ("mae", "rmse", "nae", "num_images", "game0", "game3", "ap", "ar", "af"):
        assert key in result, key
    assert result["num_images"] == 4 and result["checkpoint"]["step"] == 2
    counts = [(r["gt_count"], r["pred_count"]) for r in result["per_image"]]
    mae = np.mean([abs(g - p) for g, p in counts])
    np.testing.assert_allclose(result["mae"], mae, rtol=1e-6)
    np.testing.assert_allclose(result["game0"], mae, rtol=1e-9)  # GAME(0) = |count error|.
    assert len(glob.glob(str(tmp_path / "images_val" / "*.png"))) == 2
    # A split that no entry names gets its own prefix.
    proc = run_script(["eval.py", f"--workdir={workdir}", "--split=train"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.load(open(tmp_path / "eval_synthetic_crowd_tiny-train.json"))["num_images"] == 16


@pytest.mark.parametrize("log_every", [1, 3])
def test_non_finite_loss_stops_training_naming_step_and_term(tiny_data_dir, tmp_path, log_every):
    # log_every 3: step 1 is not a logging step, so the deferred check (one step late) stops it.
    config = _load("quickstart", "tiny")
    config.method = "tests.engine.nan_method:METHOD"
    config.data.data_dir = tiny_data_dir
    config.train.log_every = log_every
    config.train.checkpoint_every = 1
    with pytest.raises(FloatingPointError, match=r"non-finite uot .* at step 1"):
        trainer.train_and_evaluate(config, str(tmp_path))
    # The non-finite state is not kept: no checkpoint of step 1 was even started.
    assert not [n for n in os.listdir(tmp_path / "checkpoints") if n.split(".")[0] == "1"]


def test_mean_baseline_is_the_training_mean(tiny_data_dir):
    config = _load("quickstart", "tiny")
    config.data.data_dir = tiny_data_dir
    train = datasets.data_source("synthetic_crowd/tiny", "train", data_dir=tiny_data_dir)
    mean = np.mean([train[i]["count"] for i in range(len(train))])
    got = evaluation.mean_count_baseline(config.data, "synthetic_crowd/tiny")
    assert got == pytest.approx(mean)
