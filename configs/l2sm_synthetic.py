"""L2SM on the embedded synthetic crowds: a CPU-sized run, with or without the L2SM module.

  python train.py --config=configs/l2sm_synthetic.py
  python train.py --config=configs/l2sm_synthetic.py --config.model.use_l2sm=False   # SPN alone

`synthetic_crowd/street` (256x256, 400 train / 50 validation / 100 test) is built on first use.
From scratch (no ImageNet weights), width 1/8, whole images at batch 8: a larger learning rate
than the paper's fine-tuning rate. Variant "tiny" for the tests.
"""

from configs import common, l2sm_common


def get_config(variant: str = ""):
    config = l2sm_common.l2sm_config("synthetic")
    config.data.train_buckets = ((256, 256),)
    config.data.eval_buckets = ((256, 256),)
    config.data.max_points = 1024
    config.model.width = 1 / 8
    config.optimizer.learning_rate = 1e-3
    config.optimizer.schedule = "cosine"
    config.train.global_batch_size = 8
    config.train.num_steps = 600
    config.train.log_every = 50
    config.train.eval_every = 200
    config.train.checkpoint_every = 200
    config.eval.global_batch_size = 8
    return l2sm_common.make_tiny(config) if common.is_tiny(variant) else config
