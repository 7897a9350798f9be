"""`python -m crowdjax.reproduce`: the papers' tables as runs, side by side with the paper.

The end-to-end test runs UOT's Table 2 (one row: JHU-Crowd++) at tiny scale: the row trains,
evaluates, and table.{md,json} hold every number of the paper's table; a second
invocation trains nothing; the row's printed train.py command parses to the workdir's config.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import time

import pytest
from absl import flags
from ml_collections import config_flags

from configs import uot_shb
from crowdjax import paper_report, paper_runs, paper_tables, reproduce, step_cost, trainer, workdir
from tests.engine.conftest import REPO, run_script

PAPERS = ("uot", "dkpnet", "autoscale", "l2sm", "asnet")


def _paper_configs():
    """(paper, table, row, paper-scale config) of every row of every paper."""
    out = []
    for key in PAPERS:
        paper = paper_runs.load_paper(key)
        for table in paper.tables:
            for row in table.rows:
                run = paper_runs.row_run(key, row, root="r", scale="paper", weights_dir="w")
                out.append((key, table.number, row, paper_runs.row_config(run)))
    return out


@pytest.fixture(scope="module")
def paper_configs():
    return _paper_configs()


def test_every_number_names_an_entry_of_its_row(paper_configs):
    # A number compared with crowdjax's must name an evaluation the row's config runs; one that
    # cannot (NWPU's test server, a missing protocol) says what it needs.
    for key, table, row, config in paper_configs:
        for number in row.reported:
            if not number.needs:
                assert number.eval in config.evals, (key, table, row.name, number)
        assert row.reported, (key, table, row.name)


def test_every_run_has_its_tiny_variant():
    # --scale=tiny runs every row: each config file takes the row's variant plus "tiny" and the
    # row's overrides.
    for key in PAPERS:
        paper = paper_runs.load_paper(key)
        for row in paper.runs().values():
            run = paper_runs.row_run(key, row, root="r", scale="tiny", weights_dir="w")
            config = paper_runs.row_config(run)
            assert "synthetic_crowd/tiny" in str(config.data.name), (key, row.name)
            for field, value in row.overrides:
                got = _get(config, field)
                assert (tuple(got) if isinstance(got, list) else got) == value, (row.name, field)


def test_a_row_name_is_one_run():
    paper = paper_runs.load_paper("uot")
    table = paper.tables[0]
    other = paper_tables.Row(
        name=table.rows[0].name, label="x", config="configs/uot_sha.py", reported=()
    )
    broken = paper_tables.Paper("uot", "t", (table, paper_tables.Table("9", "t", rows=(other,))))
    with pytest.raises(ValueError, match="one name, one run"):
        paper_tables.check_paper(broken)


# Every ablation switch of the configs (configs/*.py and docs/methods/*.md): field -> the values
# the papers' ablations set it to. Each value must be the config of some row.
_SCORES = ("w1", "w2", "w3", "w4")
ABLATIONS = {
    "uot": {
        "loss.kind": {"uot", "l2"},
        "loss.cost": {"l1", "l2", "wfr"},
        "loss.penalty": {"kl", "qr"},
    },
    "dkpnet": {
        "dkpnet.attention": {"none", "se", "va", "inva"},
        "loss.regularizer_weight": {0.0, 1.0},
        "dkpnet.clusters": {2, 3, 4, 5},
        "dkpnet.sub_centers": {1, 2, 3, 4},
    },
    "autoscale": {"loss.classification": {"dce", "ce", "focal"}, "model.use_l2s": {True, False}},
    "l2sm": {
        "model.use_l2sm": {True, False},
        "l2sm.scaling": {"learned", "average"},
        "l2sm.groups": {3, 4, 5},
        "l2sm.centers": {1, 2, 3, 4, 5},
        "l2sm.regions": {2, 4, 6, 8},
    },
    "asnet": {
        "asnet.global_discriminator": {True, False},
        "asnet.local_discriminator": {True, False},
        "asnet.residual": {True, False},
        "asnet.scores": {(), *(_SCORES[:n] for n in range(1, 5)), ("w1", "w3"), ("w2", "w4")},
    },
}


def test_the_ablation_switches_are_the_configs_and_notes():
    # Each switch above is a field the method's configs or its notes name.
    for key, switches in ABLATIONS.items():
        text = (pathlib.Path(REPO) / "docs" / "methods" / f"{key}.md").read_text()
        text += (pathlib.Path(REPO) / "configs" / f"{key}_common.py").read_text()
        for field in switches:
            leaf = field.split(".")[-1]
            assert field in text or f".{leaf} = " in text, (key, field)


def _get(config, field):
    for part in field.split("."):
        config = config[part]
    return config


def test_every_ablation_switch_is_reached_by_a_row(paper_configs):
    reached = {}
    for key, _, _, config in paper_configs:
        for field in ABLATIONS.get(key, {}):
            value = _get(config, field)
            value = tuple(value) if isinstance(value, list) else value
            reached.setdefault((key, field), set()).add(value)
    for key, switches in ABLATIONS.items():
        for field, values in switches.items():
            missing = values - reached.get((key, field), set())
            assert not missing, f"{key}: no row sets {field} to {sorted(map(str, missing))}"


def test_cpu_scale_lists_rows_without_a_recipe(tmp_path):
    text = reproduce.reproduce(
        "dkpnet", "1", root=str(tmp_path), scale="cpu", mode="list", with_cost=False
    )
    assert "dkpnet_3joint_jt" in text and "no cpu recipe" in text


def test_cpu_scale_runs_the_cpu_recipe_where_a_config_has_one(tmp_path):
    # UOT Table 4: only configs/uot_shb.py has a :cpu recipe; its row runs it (part B halved),
    # the SHA and QNRF rows are listed as having none and print no command.
    text = reproduce.reproduce(
        "uot", "4", root=str(tmp_path), scale="cpu", mode="print", with_cost=False
    )
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("python ")] == [
        f"python train.py --config=configs/uot_shb.py:cpu --workdir={tmp_path}/cpu/uot/uot_shb"
    ]
    assert "# uot_sha: no cpu recipe" in lines and "# uot_qnrf: no cpu recipe" in lines
    paper = paper_runs.load_paper("uot")
    run = paper_runs.row_run(
        "uot", paper.runs()["uot_shb"], root=str(tmp_path), scale="cpu", weights_dir="w"
    )
    config = paper_runs.row_config(run)
    assert config.data.name == "shanghaitech/part_b_512"
    assert config.train.num_steps == uot_shb.CPU_STEPS


def test_missing_weights_and_data_are_named_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CROWDJAX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(trainer, "run_main", lambda *a, **k: pytest.fail("a row ran"))
    with pytest.raises(paper_runs.MissingFilesError) as e:
        reproduce.reproduce("uot", "4", root=str(tmp_path), scale="paper")
    text = str(e.value)
    assert os.path.join(str(tmp_path), "weights", "vgg19") in text
    for name in ("shanghaitech/part_a", "shanghaitech/part_b", "ucf_qnrf"):
        assert f"python -m crowdjax.data.build {name}" in text
    assert not os.path.exists(tmp_path / "paper" / "uot" / "uot_sha")


def test_unknown_rows_and_tables_are_refused(tmp_path):
    with pytest.raises(ValueError, match="rows: uot_qnrf, uot_sha, uot_shb"):
        reproduce.reproduce("uot", "4", root=str(tmp_path), rows=("uot_nope",), mode="print")
    with pytest.raises(ValueError, match="no table '99'"):
        reproduce.reproduce("uot", "99", root=str(tmp_path), mode="print")
    with pytest.raises(ValueError, match="unknown paper"):
        reproduce.reproduce("nope", "1", root=str(tmp_path), mode="print")


def _config_of_command(command: str):
    """The config and workdir train.py makes of `command` (its own flags, parsed afresh)."""
    argv = shlex.split(command)[1:]  # ["train.py", flags...]
    argv = [a.replace("--config=", f"--config={REPO}/", 1) for a in argv]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "", flag_values=values)
    values(argv)
    return values["config"].value, values["workdir"].value


@pytest.fixture(scope="module")
def tiny_table(tiny_data_dir, tmp_path_factory):
    """UOT Table 2 run at tiny scale: (root, table.json, seconds of the first run)."""
    root = str(tmp_path_factory.mktemp("runs"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROWDJAX_DATA_DIR", tiny_data_dir)
        t0 = time.perf_counter()
        reproduce.reproduce("uot", "2", root=root, scale="tiny")
        seconds = time.perf_counter() - t0
    with open(paper_report.path(os.path.join(root, "tiny", "uot", "table_2"), "json")) as f:
        return root, json.load(f), seconds


def test_tiny_table_end_to_end(tiny_table):
    root, table, _ = tiny_table
    paper = paper_runs.load_paper("uot").table("2")
    reported = [(r.name, n.column, n.value) for r in paper.rows for n in r.reported]
    assert [(n["row"], n["column"], n["paper"]) for n in table["numbers"]] == reported
    for n in table["numbers"]:
        if n["metric"].startswith("jhu_category."):  # The tiny data has no JHU categories.
            assert n["crowdjax"] is None and n["status"] == f"no {n['metric']} in test"
            continue
        # The run's own number: the test entry of its final evaluation.
        final = workdir.read_final(os.path.join(root, "tiny", "uot", n["row"]))
        assert n["crowdjax"] == pytest.approx(final["results"]["test"][n["metric"]])
        assert n["difference"] == pytest.approx(n["crowdjax"] - n["paper"])
        assert n["protocol"]["checkpoint"] == final["checkpoint"]
        assert n["protocol"]["data"] == "synthetic_crowd/tiny test"
    text = open(paper_report.path(os.path.join(root, "tiny", "uot", "table_2"), "md")).read()
    for n in table["numbers"]:
        assert f"| {n['column']} | {n['paper']:g} |" in text


def test_second_invocation_trains_nothing(tiny_table, tiny_data_dir, monkeypatch):
    root, first, _ = tiny_table
    monkeypatch.setenv("CROWDJAX_DATA_DIR", tiny_data_dir)
    monkeypatch.setattr(trainer, "run_main", lambda *a, **k: pytest.fail("a row ran again"))
    t0 = time.perf_counter()
    reproduce.reproduce("uot", "2", root=root, scale="tiny")
    assert time.perf_counter() - t0 < 10
    reported = reproduce.reproduce("uot", "2", root=root, scale="tiny", mode="report")
    with open(paper_report.path(os.path.join(root, "tiny", "uot", "table_2"), "json")) as f:
        assert json.load(f)["numbers"] == first["numbers"]
    assert "| Overall MAE |" in reported


def test_printed_commands_make_the_same_workdirs(tiny_table, tiny_data_dir, monkeypatch):
    root, table, _ = tiny_table
    monkeypatch.setenv("CROWDJAX_DATA_DIR", tiny_data_dir)
    commands = reproduce.reproduce("uot", "2", root=root, scale="tiny", mode="print")
    (command,) = commands.splitlines()
    config, wd = _config_of_command(command)
    assert wd == table["runs"][0]["workdir"] == os.path.join(root, "tiny", "uot", "uot_jhu")
    assert workdir.config_changes(config, wd) == []  # The workdir's config.json, field by field.


def test_print_gives_dependencies_first_and_the_weights(tmp_path):
    text = reproduce.reproduce(
        "dkpnet", "5", root=str(tmp_path), mode="print", rows=("dkpnet_3joint_inva_c2k1",)
    )
    stage1, inva = text.splitlines()
    va_workdir = os.path.join(str(tmp_path), "paper", "dkpnet", "dkpnet_3joint_va")
    assert f"--workdir={va_workdir}" in stage1 and ":va" in stage1
    assert f"--config.dkpnet.stage1={va_workdir}" in inva
    assert "--config.dkpnet.clusters=2 --config.dkpnet.sub_centers=1" in inva
    weights = os.path.join(str(tmp_path), "weights", "hrnet_w40.pth")
    assert f"--config.model.pretrained={weights}" in inva


def test_list_marks_the_stage_one_rows_a_table_needs(tmp_path):
    text = reproduce.reproduce("dkpnet", "5", root=str(tmp_path), mode="list", with_cost=False)
    assert "dkpnet_3joint_va  [stage I of this table's rows, 3-Joint VA]  not started" in text
    assert "paper SHA MAE: 57.5" not in text  # Table 4's VA numbers are not Table 5's.
    assert "paper SHA MAE: 57.1  (test_sha mae)" in text


def test_cost_is_cached_per_config(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CROWDJAX_DATA_DIR", tiny_data_dir)
    run = paper_runs.row_run(
        "uot",
        paper_runs.load_paper("uot").table("4").rows[1],
        root="r",
        scale="tiny",
        weights_dir="w",
    )
    config = paper_runs.row_config(run)
    cache = step_cost.CostCache(str(tmp_path / "cost.json"))
    cost = cache.get(config)
    assert cost["train_flops"] > 0 and cost["eval_flops"] > 0 and cost["train_peak_bytes"] > 0
    monkeypatch.setattr(step_cost, "measure", lambda c: pytest.fail("compiled again"))
    assert step_cost.CostCache(str(tmp_path / "cost.json")).get(config) == cost
    # The key ignores how a run is evaluated and how long it runs, not what a step computes.
    other = config.copy_and_resolve_references()
    other.eval.peak_threshold, other.train.num_steps = 0.5, 99
    assert step_cost.cache_key(other) == step_cost.cache_key(config)
    other.data.crop_size = 32
    assert step_cost.cache_key(other) != step_cost.cache_key(config)
    # steps x FLOPs / (peak x utilisation), in hours.
    hours = 4 * cost["train_flops"] / (156e12 * 0.4) / 3600
    assert step_cost.accelerator_hours(config, cost) == pytest.approx(hours)


def test_jhu_categories_are_read_from_the_per_image_records(tmp_path):
    # UOT Table 2's category columns: low 0-50, medium 51-500, high > 500 heads, weather = any
    # weather but none; MAE and root mean square of (pred - gt) over each group's images.
    row = paper_runs.load_paper("uot").table("2").rows[0]
    run = paper_runs.row_run("uot", row, root=str(tmp_path), scale="tiny", weights_dir="w")
    os.makedirs(run.workdir)
    images = [  # (density_level, weather, gt, pred)
        (0, 0, 10, 13.0),
        (0, 2, 40, 30.0),
        (1, 0, 200, 190.0),
        (2, 1, 900, 1000.0),
        (2, 3, 700, 650.0),
    ]
    per_image = [
        {
            "image_id": f"{i}.jpg",
            "gt_count": gt,
            "pred_count": pred,
            "categories": {"density_level": level, "weather": weather},
        }
        for i, (level, weather, gt, pred) in enumerate(images)
    ]
    config = paper_runs.row_config(run)
    with open(os.path.join(run.workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())
    checkpoint = {"kind": "best", "step": 4}
    results = {"test": {"dataset": "jhu_crowd", "split": "test", "mae": 41.6, "rmse": 53.6}}
    workdir.write_final(run.workdir, {"checkpoint": checkpoint, "results": results})
    with open(os.path.join(run.workdir, "eval_test.json"), "w") as f:
        json.dump({"dataset": "jhu_crowd", "split": "test", "per_image": per_image}, f)
    numbers = {n["column"]: n["crowdjax"] for n in paper_report.row_numbers(run, "finished")}
    # low: errors 3, -10; medium: -10; high: 100, -50; weather (rain, fog, snow): -10, 100, -50.
    assert numbers["Low MAE"] == pytest.approx(6.5)
    assert numbers["Low MSE"] == pytest.approx(((9 + 100) / 2) ** 0.5)
    assert numbers["Medium MAE"] == pytest.approx(10.0)
    assert numbers["High MAE"] == pytest.approx(75.0)
    assert numbers["High MSE"] == pytest.approx(((10000 + 2500) / 2) ** 0.5)
    assert numbers["Weather MAE"] == pytest.approx(160 / 3)
    assert numbers["Overall MAE"] == pytest.approx(41.6)


@pytest.mark.slow
def test_printed_command_resumes_the_finished_workdir(tiny_table, tiny_data_dir):
    # train.py refuses a workdir whose config.json differs from its config: the printed command
    # on the finished workdir only reports its final evaluation again.
    root, _, _ = tiny_table
    commands = reproduce.reproduce("uot", "2", root=root, scale="tiny", mode="print")
    argv = shlex.split(commands)[1:]
    proc = run_script(argv, env_extra={"CROWDJAX_DATA_DIR": tiny_data_dir})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already trained" in proc.stderr + proc.stdout
