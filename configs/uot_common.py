"""UOT (Ma et al., AAAI 2021) settings shared by the per-data-set configs."""

from __future__ import annotations

import ml_collections

from configs import common

# Training crop (px) per data set; others (e.g. synthetic, your own) take the library's default.
CROP = {"sha": 256, "shb": 512, "qnrf": 512, "nwpu": 384, "jhu": 512}


def uot_config(dataset: str, *, epochs: int = 1000) -> ml_collections.ConfigDict:
    """UOT on a data set of the catalog (`configs/datasets.py`, e.g. "shb"), cropped as `CROP`."""
    config = common.base_config()
    config.method = "uot"
    facts = common.use_dataset(config, dataset)
    config.data.crop_size = CROP.get(dataset, config.data.crop_size)
    train_images = facts.training_images(config.data.holdout_fraction)
    config.data.hflip = True
    config.data.max_points = 4096

    config.model.activation = "abs"  # Reference regressor; "relu" is the option (DM-Count).
    # x2 upsampling of the stride-16 features: "bilinear" (BL, DM-Count), "nearest" (the
    # unofficial UOT code's F.interpolate default; set it to import such a checkpoint).
    config.model.upsample = "bilinear"
    # True: a VGG16 file in model.pretrained (e.g. "hed") starts the VGG19, each stage's fourth
    # conv an identity (crowdjax.models.vgg16_as_vgg19); False: a VGG19 file only.
    config.model.vgg16_to_vgg19 = False

    config.loss = ml_collections.ConfigDict()
    config.loss.kind = "uot"  # "l2": the pixel-wise L2 baseline on the density map (the same net).
    config.loss.epsilon = 0.01  # Entropic regularisation, relative to the crop size.
    config.loss.rho = 1.0  # Strength of the marginal penalty on the predicted density.
    config.loss.cost = "l2"  # "l1", "l2" or "wfr" (Table 6).
    config.loss.delta = 0.1  # WFR scale (cost = -2 ln cos(d / delta)), scaled units (a choice).
    config.loss.penalty = "kl"  # "kl" or "qr" (Eq. 13).
    config.loss.solver = "lbfgs"  # "lbfgs" (semi-dual, Eq. 8-10) or "sinkhorn" (ott-jax).
    config.loss.max_iters = 20  # Inner L-BFGS iterations (reference: 20).
    config.loss.coord_scale = 0.0  # 0: the crop size, as the reference code.

    config.optimizer.name = "adam"  # PyTorch-style L2 weight decay, as Bayesian loss.
    config.optimizer.learning_rate = 1e-5
    config.optimizer.weight_decay = 1e-4

    config.train.global_batch_size = 1
    config.train.num_steps = common.steps_for_epochs(epochs, train_images, 1)
    config.train.log_every = 100
    config.train.eval_every = 5 * train_images  # Every 5 epochs, as the reference.
    config.train.checkpoint_every = train_images
    # Table 5 (localization on UCF-QNRF): NMS peaks of the density map (crowdjax.density_points).
    config.eval.localization = "input_peaks"
    return config


def make_cpu(config: ml_collections.ConfigDict, *, num_steps: int) -> ml_collections.ConfigDict:
    """The `:cpu` recipe on part B halved (see `configs/uot_shb.py`): the HED VGG16 as the
    VGG19 (identity fourth convs), 256 crops at batch 4, the paper's Adam 1e-5."""
    common.use_dataset(config, "shb_512")
    config.data.crop_size = 256  # Half of the paper's 512 on images of half the size.
    config.data.max_points = 1024
    config.data.eval_buckets = common.CPU_BUCKETS
    config.model.pretrained = common.CPU_BACKBONE
    config.model.vgg16_to_vgg19 = True
    config.train.global_batch_size = 4
    common.cpu_schedule(config, num_steps=num_steps)
    return config
