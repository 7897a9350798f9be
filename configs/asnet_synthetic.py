"""ASNet on the embedded synthetic crowds: daylight street scenes -> night squares, CPU-sized.

  python train.py --config=configs/asnet_synthetic.py --workdir=workdirs/asnet_synthetic
  python train.py --config=configs/asnet_synthetic.py:coarse ...    # CoarseAdapt
  python train.py --config=configs/asnet_synthetic.py:noadapt ...   # NoAdapt (source only)

`synthetic_crowd/street` (labelled source) and `synthetic_crowd/night` (its training images
unlabelled as the target; its test split evaluated at the end) are built on first use (256 x 256,
400 train / 50 validation / 100 test each). From scratch (no ImageNet weights), width 1/8, whole
256 x 256 images at batch 4, maps at stride 2 (D2 sees 32 x 32 patches): G is trained with Adam at
1e-4 instead of the paper's SGD at 1e-6 (which assumes ImageNet weights and many epochs) and
ground truth x100, everything else as configs/asnet_common.py. Whole images, because G's
stride-16 map of a 128 crop is 8 x 8, which its 4-dilated convs see mostly as padding: a G
trained on such crops predicts negative densities in the middle of whole images. The checkpoint
is selected on street's validation split; night's labels are read only by the final evaluation.
"""

from configs import asnet_common, common


def _config():
    config = asnet_common.asnet_config("synthetic", "synthetic_night", crop=256, batch=4)
    config.model.width = 1 / 8
    config.model.map_stride = 2
    config.loss.density_scale = 100.0  # Maps of O(1) values for Adam and the discriminators.
    config.optimizers.generator = common.default_optimizer_config(name="adam", learning_rate=1e-4)
    config.data.max_points = 1024
    config.train.num_steps = 600
    config.train.log_every = 50
    config.train.eval_every = 200
    config.train.checkpoint_every = 200
    config.eval.global_batch_size = 8
    return config


def get_config(variant: str = ""):
    return asnet_common.get_variant(_config, variant)
