"""UOT on UCF-QNRF (Idrees et al. 2018): 1201 train / 334 test; crop 512.

The builder resizes images so the short side is >= 512 and the long side <= 2048.

  python train.py --config=configs/uot_qnrf.py --workdir=workdirs/uot_qnrf
  python eval.py --config=configs/uot_qnrf.py --workdir=workdirs/uot_qnrf

Build the data first (see README):
  python -m crowdjax.data.build ucf_qnrf --manual_dir=<download>
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (MAE/RMSE): see METHODS.md; ImageNet VGG19 weights: --config.model.pretrained=<vgg19.pth>.
"""

from configs import common
from configs.uot_common import uot_config


def get_config(variant: str = ""):
    config = uot_config(dataset="ucf_qnrf", crop_size=512, train_images=1201)
    return common.make_tiny(config) if variant == "tiny" else config
