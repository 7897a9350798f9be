"""The evaluators: a list of evaluations over several data sets, counts of real pixels and inside
the ROI, the per-entry baseline, any number of devices, flat memory, and the selection rule."""

from __future__ import annotations

import json
import tracemalloc

import jax
import numpy as np
import pytest

from configs import common, quickstart
from crowdjax import checkpointing, evals, evaluation, run, trainer
from crowdjax.data import datasets
from tests.engine import toy_configs
from tests.engine.conftest import run_script

STRIDE = 8


def _constant_run(data_dir, workdir):
    config = toy_configs.get_config("constant")
    config.data.data_dir = data_dir
    config.toy.stride = STRIDE
    config.train.num_steps = 2
    config.evals.other = common.eval_entry("pipeline_test_crowd/a", "test")  # another data set
    config.evals.roi = common.eval_entry("pipeline_test_roi_crowd/a", "test")
    results = trainer.run_main(config, str(workdir))
    setup = run.Setup(config)
    variables, _ = checkpointing.restore_variables(str(workdir), setup.abstract_variables())
    return config, results, float(variables["params"]["c"])


def test_every_entry_counts_the_real_pixels_inside_the_roi(extra_data_dir, tmp_path):
    config, results, c = _constant_run(extra_data_dir, tmp_path)
    assert set(results) == {"val", "test", "other", "roi"}
    train = datasets.data_source("synthetic_crowd/tiny", "train", data_dir=extra_data_dir)
    train_mean = np.mean([len(train[i]["points"]) for i in range(len(train))])
    entries = {
        "val": ("synthetic_crowd/tiny", "validation"),
        "test": ("synthetic_crowd/tiny", "test"),
        "other": ("pipeline_test_crowd/a", "test"),
        "roi": ("pipeline_test_roi_crowd/a", "test"),
    }
    for prefix, (dataset, split) in entries.items():
        document = json.load(open(tmp_path / f"eval_{prefix}.json"))
        assert (document["dataset"], document["split"]) == (dataset, split)
        source = datasets.data_source(dataset, split, data_dir=extra_data_dir)
        examples = {source[i]["image_id"].decode(): source[i] for i in range(len(source))}
        assert sorted(r["image_id"] for r in document["per_image"]) == sorted(examples)
        gt_counts = []
        for record in document["per_image"]:
            example = examples[record["image_id"]]
            h, w = example["image"].shape[:2]
            points = example["points"]
            # Padded to a bucket: only the output pixels over the real image count, each by the
            # share of its block's image pixels in the region (the ROI, or the whole image).
            region = example["roi"] if prefix == "roi" else np.ones((h, w), np.uint8)
            weight = 0.0
            for r in range(-(-h // STRIDE)):
                for q in range(-(-w // STRIDE)):
                    block = region[r * STRIDE : (r + 1) * STRIDE, q * STRIDE : (q + 1) * STRIDE]
                    weight += (block > 0).sum() / block.size
            inside = region[points[:, 1].astype(int), points[:, 0].astype(int)] > 0
            gt = inside.sum()  # the heads on pixels of the region
            assert record["gt_count"] == gt
            np.testing.assert_allclose(record["pred_count"], c * weight, rtol=1e-5)
            gt_counts.append(gt)
        np.testing.assert_allclose(document["game0"], document["mae"], rtol=1e-12)
        # The baseline: the training mean of this data set if it is trained on, else of all
        # training data (here the tiny set either way), against this entry's counts.
        np.testing.assert_allclose(
            document["baseline_mae"], np.mean(np.abs(np.array(gt_counts) - train_mean)), rtol=1e-9
        )
        assert document["selected_by"]["eval"] == "val"
        assert "held out" not in document["selected_by"]["split_description"]  # official split
    roi_doc = json.load(open(tmp_path / "eval_roi.json"))
    source = datasets.data_source("pipeline_test_roi_crowd/a", "test", data_dir=extra_data_dir)
    total = sum(len(source[i]["points"]) for i in range(len(source)))
    assert sum(r["gt_count"] for r in roi_doc["per_image"]) < total  # heads outside dropped


def test_streaming_metrics_memory_is_flat_in_the_number_of_images():
    """Peak memory of accumulating N images of 512 x 512 maps: the maps are not kept."""
    rng = np.random.default_rng(0)
    density = rng.uniform(0, 1e-3, (512, 512)).astype(np.float32)
    points = rng.uniform(0, 512, (300, 2)).astype(np.float32)
    region = np.ones((512, 512), np.uint8)

    def peak(n: int) -> int:
        stream = evaluation.StreamingMetrics(peak_threshold=0.9e-3, detailed=True)
        tracemalloc.start()
        for i in range(n):
            stream.add(
                image_id=f"{i}", gt_points=points, pred_map=density.copy(), stride=1, region=region
            )
        stream.result()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(5), peak(50)
    map_bytes = density.nbytes
    # 45 more images add less than one map (1 MB): a few kB of counts and matches each.
    assert large - small < map_bytes, (small, large)


def test_selection_on_a_test_split_must_be_asked_for():
    config = toy_configs.get_config("constant")
    config.selection.eval = "test"
    with pytest.raises(ValueError, match="allow_test=True to reproduce a paper's protocol"):
        evals.parse(config)
    config.selection.allow_test = True
    selection = evals.parse(config).selection
    (entry,) = selection.entries
    assert (entry.split, selection.metric, selection.mode) == ("test", "mae", "min")
    config.selection.eval = "nope"
    with pytest.raises(ValueError, match="none of config.evals"):
        evals.parse(config)
    config.selection.eval = "val"
    config.data.train_split = "train+validation"  # selecting on images it trains on
    with pytest.raises(ValueError, match="which data.train_split='train\\+validation' trains on"):
        evals.parse(config)


def test_selection_on_several_entries_is_their_mean(tiny_data_dir, tmp_path, monkeypatch):
    config = toy_configs.get_config("constant")
    config.data.data_dir = tiny_data_dir
    config.evals.val2 = common.eval_entry(split="validation", during_training=True)
    config.evals.train = common.eval_entry(split="train")
    config.selection.eval = "val,train"  # train: the split it trains on
    with pytest.raises(ValueError, match="trains on"):
        evals.parse(config)
    config.selection.eval = "val, val2"
    selection = evals.parse(config).selection
    assert [e.prefix for e in selection.entries] == ["val", "val2"] and selection.metric == "mae"
    assert selection.name == "val+val2"
    info = selection.info
    assert info["eval"] == "val+val2" and info["entries"] == 2 and not info["test_split"]
    config.train.num_steps, config.train.eval_every = 2, 1
    parsed, parse = [], evals.eval_entries

    def counted(config):  # config.evals is parsed once in a run, then handed to its users.
        parsed.append(config)
        return parse(config)

    monkeypatch.setattr(evals, "eval_entries", counted)
    trainer.run_main(config, str(tmp_path))
    assert len(parsed) == 1
    with open(tmp_path / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    val = {r["step"]: r["mae"] for r in rows if r["split"] == "val" and not r.get("final")}
    val2 = {r["step"]: r["mae"] for r in rows if r["split"] == "val2" and not r.get("final")}
    best = json.load(open(tmp_path / "eval_val.json"))["checkpoint"]
    step = min(val, key=lambda s: (val[s] + val2[s]) / 2)
    assert best["step"] == step
    assert best["val+val2/mae"] == pytest.approx((val[step] + val2[step]) / 2)


@pytest.mark.parametrize("metric", ["game0", "af"])
def test_selection_on_a_detailed_metric(tiny_data_dir, tmp_path, metric):
    config = toy_configs.get_config("constant")
    config.data.data_dir = tiny_data_dir
    config.selection.metric = metric
    if metric == "af":  # A density method has localization numbers only under a protocol.
        with pytest.raises(ValueError, match="set config.eval.localization"):
            trainer.run_main(config, str(tmp_path / "no_protocol"))
        config.eval.localization = "stride_peaks"
    results = trainer.run_main(config, str(tmp_path))
    record = json.load(open(tmp_path / "best_metrics.json"))
    assert record["metric"] == f"val/{metric}"
    np.testing.assert_allclose(record["value"], results["val"][metric])


def test_evaluation_on_eight_devices_equals_one(tiny_data_dir):
    """Batch size 1 on 8 devices: batches are padded to the device count and masked."""
    proc = run_script(
        ["tests/engine/eval_devices.py", tiny_data_dir],
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["batch_size_8"] == 8 and result["batch_size_1"] == 1
    one, eight = result["counts_1"], result["counts_8"]
    assert sorted(one) == sorted(eight) and len(one) == 4
    for image_id, count in one.items():
        np.testing.assert_allclose(eight[image_id], count, rtol=1e-4, atol=1e-5)
    assert len(jax.devices()) >= 1


def test_a_long_evaluation_says_how_far_it_is(tiny_data_dir, monkeypatch, capsys):
    config = quickstart.get_config("tiny")
    config.data.data_dir = tiny_data_dir
    config.eval.global_batch_size = 1
    setup = run.Setup(config, devices=jax.devices()[:1])
    variables = setup.init(jax.random.key(0)).variables
    entry = evals.EvalEntry("test", "synthetic_crowd/tiny", "test")
    total = evaluation.split_size(config.data, entry.dataset, entry.split)
    monkeypatch.setattr(evaluation, "PROGRESS_SECONDS", 0.0)  # A line after every image.
    capsys.readouterr()
    result = evaluation.evaluate(setup, variables, entry)
    lines = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("evaluating synthetic_crowd/tiny test: ")
    ]
    assert total == result.metrics["num_images"] > 1
    # Every image but the last (the result follows it), with the rate and the time left.
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == [
        f"{done}/{total}" for done in range(1, total)
    ]
    assert all(" img/s | ETA " in line for line in lines)
