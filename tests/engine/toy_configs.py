"""Configs of the toy methods (`tests/engine/toy_methods.py`) on the tiny synthetic data.

python train.py --config=tests/engine/toy_configs.py:two_player --config.data.data_dir=...
"""

import ml_collections

from configs import common
from crowdjax.optimizers import default_optimizer_config

METHODS = {
    "two_player": "tests.engine.toy_methods:TWO_PLAYER",
    "batch_norm": "tests.engine.toy_methods:BATCH_NORM",
    "prepared": "tests.engine.toy_methods:PREPARED",
    "constant": "tests.engine.toy_methods:CONSTANT",
}


def get_config(variant: str = "two_player"):
    config = common.make_tiny(common.base_config())
    config.method = METHODS[variant]
    config.data.max_points = 256
    config.optimizer.learning_rate = 1e-3
    if variant == "two_player":
        config.data.target = common.TINY_DATA  # its images only, as a second domain
        config.optimizers.generator = default_optimizer_config(
            name="adam", learning_rate=1e-3, weight_decay=1e-4
        )
        config.optimizers.critic = default_optimizer_config(name="sgd", learning_rate=1e-2)
        config.toy = ml_collections.ConfigDict()
        config.toy.groups = ("critic", "generator")
        config.toy.adversarial_weight = 0.1
    if variant == "constant":
        config.toy = ml_collections.ConfigDict()
        config.toy.stride = 8
    return config
