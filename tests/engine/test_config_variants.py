"""Every config file loads each variant it documents and refuses one it does not have, naming
the ones it has (a typo such as `uot_shb.py:cpu` must not start the paper's full schedule)."""

from __future__ import annotations

import glob
import importlib
import os

import pytest

from configs import common
from tests.engine.conftest import REPO

CONFIG_FILES = sorted(
    name
    for name in (os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py")))
    if hasattr(importlib.import_module(f"configs.{name}"), "get_config")
)
ASNET = ("fine", "coarse", "noadapt", "tiny")
STAGE_ONE = ("jt", "se", "va", "tiny")
FOLDS = tuple(f"fold{k}" for k in range(1, 6))
# The options of each file (comma-separated in a variant); the others have "tiny" alone (ASNet's:
# ASNET). "cpu": the real-data recipe of a 2-core CPU.
OPTIONS = {
    "uot_shb": ("cpu", "l2", "tiny"),
    "autoscale_reg_shb": ("cpu", "fpn", "tiny"),
    "autoscale_loc_shb": ("cpu", "fpn", "tiny"),
    "l2sm_shb": ("cpu", "spn", "tiny"),
    "l2sm_sha": ("cpu", "tiny"),
    "dkpnet_va_shanghaitech": ("cpu", *STAGE_ONE),
    "asnet_sha_to_shb": ("cpu", *ASNET),
    "autoscale_synthetic": ("reg", "loc", "tiny"),
    "l2sm_ucf_cc_50": ("tiny", *FOLDS, "test", "train"),
    "dkpnet_synthetic": ("jt", "se", "inva", "va", "tiny"),
    "dkpnet_va_3joint": STAGE_ONE,
    "dkpnet_va_4joint": STAGE_ONE,
    "dkpnet_inva_3joint": ("inva", "tiny"),
    "dkpnet_inva_4joint": ("inva", "tiny"),
}
# Variants that load, beyond "" and each option alone (folds "test"/"train" are the tiny data's).
COMBINED = {
    "uot_shb": ("cpu,l2", "cpu,tiny", "cpu,l2,tiny"),
    "autoscale_reg_shb": ("cpu,fpn", "cpu,tiny"),
    "autoscale_loc_shb": ("cpu,fpn", "cpu,tiny"),
    "l2sm_shb": ("cpu,spn", "cpu,tiny"),
    "l2sm_sha": ("cpu,tiny",),
    "dkpnet_va_shanghaitech": ("va,cpu", "jt,cpu", "jt,cpu,tiny"),
    "asnet_sha_to_shb": ("fine,cpu", "noadapt,cpu", "noadapt,cpu,tiny"),
    "l2sm_ucf_cc_50": ("tiny,test", "tiny,train"),
    "dkpnet_synthetic": ("va,tiny", "inva,tiny"),
}
NOT_ALONE = {"l2sm_ucf_cc_50": ("test", "train")}


def _options(name: str) -> tuple[str, ...]:
    if name in OPTIONS:
        return OPTIONS[name]
    return ASNET if name.startswith("asnet_") else ("tiny",)


def _get_config(name: str, variant: str):
    return importlib.import_module(f"configs.{name}").get_config(variant)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_known_variant_loads(name):
    alone = tuple(o for o in _options(name) if o not in NOT_ALONE.get(name, ()))
    for variant in ("", *alone, *COMBINED.get(name, ())):
        config = _get_config(name, variant)
        assert config.method, (name, variant)
        tiny = "tiny" in variant.split(",")
        assert (config.data.name in (common.TINY_DATA, [common.TINY_DATA])) == tiny, variant


@pytest.mark.parametrize("name", CONFIG_FILES)
@pytest.mark.parametrize("variant", ["cpu", "tiny,cpu", "gpu", "tiny,gpu", "Tiny", "CPU"])
def test_an_unknown_variant_is_refused_naming_the_known_ones(name, variant):
    if "cpu" in variant.split(",") and "cpu" in _options(name):
        return  # This file has the CPU recipe (test_every_known_variant_loads loads it).
    with pytest.raises(ValueError, match="unknown config variant") as raised:
        _get_config(name, variant)
    message = str(raised.value)
    for option in _options(name):
        assert option in message, (name, message)


def test_variant_options_splits_and_checks():
    assert common.variant_options("", ("tiny",)) == []
    assert common.variant_options("loc,tiny", ("reg", "loc", "tiny")) == ["loc", "tiny"]
    with pytest.raises(ValueError, match=r"\(cpu\); this config file has the variants tiny"):
        common.variant_options("cpu", ("tiny",))
    assert common.is_tiny("tiny") and not common.is_tiny("")


def test_conflicting_or_misplaced_choices_are_refused():
    with pytest.raises(ValueError, match="not both"):
        _get_config("autoscale_synthetic", "reg,loc")
    with pytest.raises(ValueError, match="unknown fold"):  # "test" is a fold of the tiny run only
        _get_config("l2sm_ucf_cc_50", "test")
    with pytest.raises(ValueError, match="choose one fold"):
        _get_config("l2sm_ucf_cc_50", "fold1,fold2")
    with pytest.raises(ValueError, match="choose one"):
        _get_config("asnet_synthetic", "fine,coarse")
