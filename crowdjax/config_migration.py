"""Brings the `config.json` of an older run up to the current config schema, in one place.

Every field of a run's config has its default where the config is built (`configs/common.py`,
the method's `configs/<method>_common.py`, `crowdjax.data.settings.default_data_config`), and the
code reads fields directly, without defaults of its own. A run written before a field existed
lacks it: `upgrade` (called by `crowdjax.workdir.load_config`) fills each such field with the value
that gives the behaviour of the code that wrote the run.
"""

from __future__ import annotations

import ml_collections

from crowdjax.data import settings

# Model fields of every method added after the first runs: the value older runs behaved as.
COMMON_MODEL_FIELDS = {"remat": False}  # Activations kept, not recomputed (the same numbers).
# Model fields added after the first runs of a method: the value older runs behaved as.
MODEL_FIELDS = {
    # The x2 upsampling of the stride-16 features; a VGG19 file only (no VGG16 expansion).
    "uot": {"upsample": "bilinear", "vgg16_to_vgg19": False},
    "autoscale_reg": {"fpn_layout": "crowdjax"},  # The crowdjax FPN, not the official one.
    "autoscale_loc": {"fpn_layout": "crowdjax"},
    "l2sm": {"head_init": "default"},  # The head's initialisation (`layers.head_initialisers`).
    "asnet": {"head_init": "default"},
    "dkpnet_va": {"head_init": "default"},
    "dkpnet_inva": {"head_init": "default"},
}
# Loss fields added after the first runs of a method: the value older runs behaved as.
LOSS_FIELDS = {"uot": {"kind": "uot"}}  # The UOT loss, not the pixel-wise L2 baseline.
# Evaluation fields added after the first runs: the value older runs behaved as.
EVAL_FIELDS = {"recompute_batch_stats": 0}  # The running BatchNorm averages (crowdjax.precise_bn).


def upgrade(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fills the fields that `config` (an older run's) lacks; changes nothing it has.

    Args:
      config: a run's resolved config as read from its `config.json` (not locked).

    Returns:
      `config` itself, upgraded in place: every data field of `default_data_config` (e.g.
      `min_short_side`, `whole_image`, `train_tiles`, added with whole-image training) and the
      model fields of `COMMON_MODEL_FIELDS`, the method's model and loss fields of
      `MODEL_FIELDS` and `LOSS_FIELDS`, and `EVAL_FIELDS`.
    """
    for key, value in settings.default_data_config().items():
        if key not in config.data:
            config.data[key] = value
    for key, value in (COMMON_MODEL_FIELDS | MODEL_FIELDS.get(config.method, {})).items():
        if key not in config.model:
            config.model[key] = value
    for key, value in LOSS_FIELDS.get(config.method, {}).items():
        if "loss" in config and key not in config.loss:
            config.loss[key] = value
    for key, value in EVAL_FIELDS.items():
        if "eval" in config and key not in config.eval:
            config.eval[key] = value
    return config


def report_eval_settings(config: ml_collections.ConfigDict) -> dict:
    """`config.eval` as a final report records it (what the report depends on): the fields of
    `EVAL_FIELDS` left out at the value older runs behaved as, so that a report written before
    a field existed still matches the same settings and is reused, not evaluated again."""
    return {k: v for k, v in config.eval.to_dict().items() if EVAL_FIELDS.get(k, object()) != v}
