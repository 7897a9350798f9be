"""AutoScale (Xu et al., IJCV 2022) settings shared by the per-data-set configs (Table 1).

Table 1: Adam, batch 1, weight decay 5e-4; learning rate 1e-7 (regression, sum-MSE) and 1e-4
(localization, DCE); center rate alpha 1e-3 updated every T = 1 epoch; lambda = 1; J = 0.1
(regression) and 0.02 (localization). Gaussian sigma per data set (Sec 4.2): SHA 4, SHB 8, QNRF 8,
NWPU 6, JHU 8. Augmentation: flip and random scaling (the paper's "adding noise" is left out).
The number of epochs is not given in the paper: 200 here.

`--config.model.use_l2s=False` runs the FPN baseline of the ablation (no L2S, no re-prediction).
A run on SHA, SHB, QNRF, JHU or NWPU is also tested on the test splits of Table 13's targets
(`CROSS_DATASET`: `config.evals.<target>_test`), so those data sets must be built too.
"""

from __future__ import annotations

import math

import ml_collections

from configs import common, datasets

# The method of each head (the heads' names as in crowdjax.methods.autoscale.heads).
METHODS = {"regression": "autoscale_reg", "localization": "autoscale_loc"}

# Fixed Gaussian sigma (px) per data set (Sec 4.2; TRANCOS and the synthetic crowds: ours), used
# by the data pipeline and the online GT of the rescaled regions.
SIGMA = {
    "sha": 4.0,
    "shb": 8.0,
    "qnrf": 8.0,
    "nwpu": 6.0,
    "jhu": 8.0,
    "trancos": 10.0,
    "synthetic": 4.0,
}
# Cross-data-set evaluations (Table 13): a run on the key is also tested on each target's test
# split, as `config.evals.<target>_test` (A->B, A->QNRF, B->A, QNRF->A, QNRF->B, JHU->A, NWPU->A).
CROSS_DATASET = {
    "sha": ("shb", "qnrf"),
    "shb": ("sha",),
    "qnrf": ("sha", "shb"),
    "jhu": ("sha",),
    "nwpu": ("sha",),
}
# Training crop (px) per data set; others take the library's default.
CROP = {"sha": 384, "shb": 512, "qnrf": 512, "nwpu": 512, "jhu": 512, "trancos": 384}


def autoscale_config(
    head: str, dataset: str, *, max_points: int = 4096, epochs: int = 200
) -> ml_collections.ConfigDict:
    """head: "regression" (density maps) or "localization" (distance-label maps); dataset:
    a data set of the catalog (`configs/datasets.py`, e.g. "shb") with a sigma in `SIGMA`."""
    config = common.base_config()
    if head not in METHODS:
        raise ValueError(f"unknown AutoScale head {head!r}; choose from {tuple(METHODS)}")
    config.method = METHODS[head]
    regression = head == "regression"
    facts = common.use_dataset(config, dataset)
    config.data.crop_size = CROP.get(dataset, config.data.crop_size)
    train_images = facts.training_images(config.data.holdout_fraction)
    if dataset not in SIGMA:
        raise ValueError(f"no AutoScale Gaussian sigma for {dataset!r}; add it to SIGMA")
    sigma = SIGMA[dataset]
    for target in CROSS_DATASET.get(dataset, ()):
        config.evals[f"{target}_test"] = common.eval_entry(datasets.get(target).name, "test")
    config.data.hflip = True
    config.data.scale_range = (0.8, 1.2)
    config.data.max_points = max_points
    config.data.density_sigma = sigma  # Fixed Gaussian per data set; also the online GT kernel.
    config.data.with_distance_label = not regression

    config.model.use_l2s = True  # False: the FPN baseline of the ablation.
    config.model.feature_stride = 1  # Stride of the L2S feature (reference: full resolution).
    config.model.l2s_output = "sigmoid"  # r in (0.5, 3), smooth; "clamp": clip (see module doc).
    # "official": the localization network exactly as dk-liang/AutoScale's fpn.py (conv1 padding
    # 35, ceil-mode pools, a stride-1 pool before conv5; set it to import that checkpoint).
    config.model.fpn_layout = "crowdjax"

    config.loss = ml_collections.ConfigDict()
    config.loss.distance_edges = ()  # () = the builder's / paper's 11 class edges.
    config.loss.reduction = "sum"  # Sum over pixels, as Eq. 5 and Eq. 7.
    config.loss.side_weight = 0.0 if regression else 1.0  # Deep supervision of side outputs.
    config.loss.classification = "dce"  # "dce" (Eq. 7), "ce" or "focal" (Table 12).
    config.loss.focal_gamma = 2.0
    config.loss.dce_weight_gradient = False  # The DCE weight is a coefficient (stop-gradient).
    config.loss.center_weight = 1.0  # lambda of Eq. 6 / Eq. 8.

    config.l2s = ml_collections.ConfigDict()
    config.l2s.area_ratio = 0.1 if regression else 0.02  # J: skip smaller dense boxes.
    config.l2s.factor = 2.0  # Regression: dense = density above 2 x its mean.
    config.l2s.max_class = 8  # Localization: dense = predicted class below 8.
    config.l2s.connectivity = 8
    config.l2s.selection = "device"  # "device" (jnp, in the jitted step) or "host" (scipy).
    config.l2s.canvas_factor = 1.0  # Canvas of the rescaled region, x the input size.
    config.l2s.center_init = 0.0  # 0: mean closeness of the first regions; else px.
    config.l2s.center_alpha = 1e-3  # alpha of Eq. 4.
    config.l2s.center_update_every = train_images  # T = 1 epoch at batch 1.
    config.l2s.feature_gradient = False  # Ls trains L2S only.
    config.l2s.rescale_gradient = False  # The rescaled loss does not train r.

    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-7 if regression else 1e-4
    config.optimizer.weight_decay = 5e-4

    config.train.global_batch_size = 1
    config.train.num_steps = common.steps_for_epochs(epochs, train_images, 1)
    config.train.log_every = 100
    config.train.eval_every = 5 * train_images
    config.train.checkpoint_every = train_images

    # Localization heads: regional minima of class <= 7, i.e. below the dense-region class c = 8
    # (chosen on synthetic_crowd validation among 5, 7 and 9: F 0.001, 0.64 and 0.49 at 600 steps).
    config.eval.minima_max_class = 7
    # Regression heads: density peaks above 0.3 x the peak of one isolated head's Gaussian.
    config.eval.peak_threshold = 0.3 / (2 * math.pi * sigma**2)
    return config


def make_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The common tiny run, with the center update period shortened so Eq. 4 runs too."""
    config = common.make_tiny(config)
    config.l2s.center_update_every = 2
    return config


def make_cpu(
    config: ml_collections.ConfigDict, *, num_steps: int, learning_rate: float
) -> ml_collections.ConfigDict:
    """The `:cpu` recipe on part B halved (see `configs/autoscale_reg_shb.py`): HED's VGG16,
    256 crops at batch 1 (the paper's), sigma 4 px (the paper's 8 px at full size), the center
    updated 4 times, 2 validations (L2S re-predicts at evaluation too: about 3.8 CPU seconds an
    image)."""
    regression = config.method == METHODS["regression"]
    common.use_dataset(config, "shb_512")
    # Table 13's other data sets are not in the recipe's budget (SHA: 182 more images).
    for name in [n for n in config.evals if n.endswith("_test")]:
        del config.evals[name]
    config.data.crop_size = 256
    config.data.max_points = 1024
    config.data.eval_buckets = common.CPU_BUCKETS
    sigma = SIGMA["shb"] / 2  # The same kernel relative to the halved image.
    config.data.density_sigma = sigma
    config.model.pretrained = common.CPU_BACKBONE
    config.optimizer.learning_rate = learning_rate
    config.train.global_batch_size = 1
    # T of Eq. 4: a quarter of the run (the paper: one epoch, more than the whole run here).
    config.l2s.center_update_every = max(1, num_steps // 4)
    if regression:
        config.eval.peak_threshold = 0.3 / (2 * math.pi * sigma**2)
    common.cpu_schedule(config, num_steps=num_steps, evaluations=2)
    return config
