"""AutoScale on the embedded synthetic crowds: a CPU-sized run of either model, with or without L2S.

  python train.py --config=configs/autoscale_synthetic.py:reg   # density regression
  python train.py --config=configs/autoscale_synthetic.py:loc   # localization
  ... --config.model.use_l2s=False                              # the FPN baseline (ablation)

`synthetic_crowd/street` (256x256, 400 train / 50 validation / 100 test) is built on first use.
From scratch (no ImageNet weights), width 1/8, crops of 128x128: the learning rate is larger than
Table 1's fine-tuning rates, and the center S is updated every 50 steps (one epoch of 400 crops at
batch 8). Variants: "reg" (default), "loc", and "tiny" (with either) for the tests.
"""

from configs import autoscale_common, common


def get_config(variant: str = ""):
    options = common.variant_options(variant, ("reg", "loc", "tiny"))
    if {"reg", "loc"} <= set(options):
        raise ValueError(f"choose reg or loc, not both: {variant!r}")
    head = "localization" if "loc" in options else "regression"
    config = autoscale_common.autoscale_config(head, "synthetic", max_points=1024)
    config.data.crop_size = 128
    config.data.scale_range = (1.0, 1.0)
    config.model.width = 1 / 8
    config.model.feature_stride = 2
    config.loss.reduction = "mean"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "cosine"
    config.l2s.center_update_every = 50
    config.train.global_batch_size = 8
    config.train.num_steps = 600
    config.train.log_every = 50
    config.train.eval_every = 200
    config.train.checkpoint_every = 200
    config.eval.global_batch_size = 8
    return autoscale_common.make_tiny(config) if "tiny" in options else config
