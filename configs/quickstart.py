"""Quickstart: UOT on the embedded synthetic crowds, from scratch, on a CPU in a few minutes.

  python train.py --config=configs/quickstart.py

Builds `synthetic_crowd/street` on first use (no download), trains a small VGG19 regressor (width
1/8) with the UOT loss on 128x128 crops of the 256x256 images, selects the checkpoint on the
validation split, and ends by evaluating it on whole images of both splits, printing the test
MAE/RMSE next to the MAE of always predicting the training mean count.
"""

from configs import common
from configs.uot_common import uot_config


def get_config(variant: str = ""):
    config = uot_config("synthetic")
    config.data.crop_size = 128
    config.data.scale_range = (1.0, 1.0)
    config.data.max_points = 1024
    config.model.width = 1 / 8
    # From scratch (no ImageNet weights): a larger learning rate than the paper's fine-tuning.
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "cosine"
    config.train.global_batch_size = 8
    config.train.num_steps = 500
    config.train.log_every = 50
    config.train.eval_every = 250
    config.train.checkpoint_every = 250
    config.eval.global_batch_size = 8
    return common.make_tiny(config) if common.is_tiny(variant) else config
