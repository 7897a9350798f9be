"""L2SM (Xu et al., ICCV 2019) settings shared by the per-data-set configs (Sec 4.2).

Sec 4.2: K = 4 (K x K regions), G = 5 groups of regions of equal size over the training set, the
densest C = 3 centralised (UCF_CC_50: C = 5); L = L_D + lambda_1 L_r + lambda_2 L_c with lambda_1
= 1; Adam, learning rate 1e-4; whole images at batch 1 (QNRF: images above 1080p resized to fit
1920 x 1080, each split 2 x 2 into a batch of four). Ground truth as CSRNet [15]: SHA and
UCF_CC_50 geometry-adaptive kernels (the builders' default), SHB a fixed sigma of 15 px.

Not in the paper (our choices, each a field below): lambda_2 = 1 (Fig. 5: gains stable over a
wide range of weights); the center rate alpha = 0.5 (the usual center-loss rate); r in (0.5, 3);
the fixed kernel of the rescaled regions' GT (``l2sm.sigma``); 300 epochs; horizontal flips.

Batch 1 (whole images) runs on one device; on several, raise `train.global_batch_size` to a
multiple of the device count. `l2sm.max_regions` caps the regions re-predicted per image (memory
of the canvases: all K x K by default, as the paper).

Ablations (Table 2, Table 3, Fig. 5), e.g. on the command line:
  --config.model.use_l2sm=False           SPN alone (no L2SM, no grouping)
  --config.l2sm.groups=4 --config.l2sm.centers=2    G and C of the grouping
  --config.l2sm.scaling=average           S2AD: scale to the group's average density, no MPCL
  --config.l2sm.regions=6                 K of the K x K division
  --config.loss.center_weight=0           lambda_2 (no MPCL)
"""

from __future__ import annotations

import ml_collections

from configs import common

# Fixed kernel (px) of the rescaled regions' GT: the data set's fixed sigma, or (adaptive
# kernels) a small one: re-predicted regions are the dense ones, whose adaptive sigmas are small.
CANVAS_SIGMA = {"sha": 4.0, "shb": 15.0, "qnrf": 8.0, "ucf_cc_50": 4.0, "synthetic": 4.0}
FIXED_SIGMA = {"shb": 15.0}  # CSRNet's fixed kernels; the others use the builder's kernel.


# Heads per training example (image or tile), above the largest count of each data set.
MAX_POINTS = {"sha": 4096, "shb": 1024, "qnrf": 13000, "ucf_cc_50": 5000, "synthetic": 1024}


def l2sm_config(dataset: str, *, epochs: int = 300, tiles: int = 1) -> ml_collections.ConfigDict:
    """L2SM on a data set of the catalog (`configs/datasets.py`, e.g. "shb")."""
    config = common.base_config()
    config.method = "l2sm"
    facts = common.use_dataset(config, dataset)
    train_images = facts.training_images(config.data.holdout_fraction)
    config.data.whole_image = True  # Sec 4.2: whole images, padded to a few size buckets.
    config.data.train_tiles = tiles
    config.data.train_bucket_multiple = 128
    config.data.hflip = True
    config.data.max_points = MAX_POINTS[dataset]
    config.data.density_sigma = FIXED_SIGMA.get(dataset, 0.0)
    config.data.eval_bucket_multiple = 128

    config.model.use_l2sm = True  # False: SPN alone (Table 1 / Table 4 baseline).
    config.model.pyramid_channels = 64  # Each stage's 3x3 conv before pooling.
    # The head's initialisation: "default" (flax's; ImageNet-normalised backbones) or "small"
    # (N(0, 0.01), for a backbone with 0-255 inputs such as HED: `layers.head_initialisers`).
    config.model.head_init = "default"

    config.loss = ml_collections.ConfigDict()
    config.loss.repredict_weight = 1.0  # lambda_1 (Sec 4.2).
    config.loss.center_weight = 1.0  # lambda_2 (our choice, see the module doc).

    config.l2sm = ml_collections.ConfigDict()
    config.l2sm.regions = 4  # K.
    config.l2sm.groups = 5  # G.
    config.l2sm.centers = 5 if dataset == "ucf_cc_50" else 3  # C.
    config.l2sm.min_scale = 0.5
    config.l2sm.max_scale = 3.0
    config.l2sm.max_regions = 0  # Re-predicted regions per image; 0 = up to all K x K.
    config.l2sm.scaling = "learned"  # "learned" (L2SM) or "average" (S2AD, Table 2).
    config.l2sm.region_density = "gt"  # Training groups by GT ("gt") or D̂ ("predicted").
    config.l2sm.center_alpha = 0.5  # alpha of Eq. 1.
    config.l2sm.sigma = CANVAS_SIGMA[dataset]
    config.l2sm.feature_gradient = False  # L_c trains the scale conv only.
    config.l2sm.rescale_gradient = False  # L_r does not train r.

    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-4
    config.optimizer.weight_decay = 0.0

    batch = tiles * tiles
    config.train.global_batch_size = batch
    config.train.num_steps = common.steps_for_epochs(epochs, train_images, 1)
    config.train.log_every = 100
    config.train.eval_every = 5 * train_images
    config.train.checkpoint_every = train_images
    return config


def make_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The common tiny run on whole 64 x 64 images (tiles kept: batch = tiles^2)."""
    tiles = int(config.data.train_tiles)
    config = common.make_tiny(config)
    config.data.train_buckets = ()
    config.data.train_bucket_multiple = 64
    config.data.eval_buckets = ()
    config.data.eval_bucket_multiple = 64
    config.train.global_batch_size = 2 * tiles * tiles
    config.l2sm.sigma = 2.0
    return config


CPU_LEARNING_RATE = 1e-5


def make_cpu(
    config: ml_collections.ConfigDict, dataset: str, *, num_steps: int
) -> ml_collections.ConfigDict:
    """The `:cpu` recipe on ShanghaiTech with long sides at most 512 px ("sha" or "shb"; see
    `configs/l2sm_shb.py`): HED's VGG16, whole images at batch 1 as the paper, part B's fixed
    sigmas halved with its images, Adam 1e-5, 2 validations."""
    common.use_dataset(config, f"{dataset}_512")
    config.data.train_buckets = common.CPU_BUCKETS
    config.data.eval_buckets = common.CPU_BUCKETS
    if dataset == "shb":
        config.data.density_sigma = FIXED_SIGMA["shb"] / 2
    config.l2sm.sigma = CANVAS_SIGMA[dataset] / (2 if dataset == "shb" else 1)
    config.model.pretrained = common.CPU_BACKBONE
    # HED's 0-255 features start flax's head at 40x the count: N(0, 0.01) starts it near it.
    config.model.head_init = "small"
    # The paper's Adam 1e-4 at batch 1 on HED: gradient norms up to 13000 and validation MAE
    # 59.8 -> 76.1 (mean count: 66.1) from step 50 to 100 of the first run; 1e-5 as UOT's,
    # AutoScale's and ASNet's recipes from HED.
    config.optimizer.learning_rate = CPU_LEARNING_RATE
    common.cpu_schedule(config, num_steps=num_steps, evaluations=2)
    return config
