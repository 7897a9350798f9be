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

# Model fields added after the first runs of a method: the value older runs behaved as.
MODEL_FIELDS = {
    "uot": {"upsample": "bilinear"},  # The x2 upsampling of the stride-16 features.
    "autoscale_reg": {"fpn_layout": "crowdjax"},  # The crowdjax FPN, not the official one.
    "autoscale_loc": {"fpn_layout": "crowdjax"},
}


def upgrade(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fills the fields that `config` (an older run's) lacks; changes nothing it has.

    Args:
      config: a run's resolved config as read from its `config.json` (not locked).

    Returns:
      `config` itself, upgraded in place: every data field of `default_data_config` (e.g.
      `min_short_side`, `whole_image`, `train_tiles`, added with whole-image training) and the
      method's model fields of `MODEL_FIELDS`.
    """
    for key, value in settings.default_data_config().items():
        if key not in config.data:
            config.data[key] = value
    for key, value in MODEL_FIELDS.get(config.method, {}).items():
        if key not in config.model:
            config.model[key] = value
    return config
