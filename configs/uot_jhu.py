"""UOT on JHU-Crowd++: 2272 train / 500 val / 1600 test; crop 512.

  python train.py --config=configs/uot_jhu.py --workdir=workdirs/uot_jhu
  python eval.py --config=configs/uot_jhu.py --workdir=workdirs/uot_jhu

Build the data first (see README):
  python -m crowdjax.data.build jhu_crowd --manual_dir=<download>
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (MAE/RMSE): see METHODS.md; ImageNet VGG19 weights: --config.model.pretrained=<vgg19.pth>.
"""

from configs import common
from configs.uot_common import uot_config


def get_config(variant: str = ""):
    config = uot_config(dataset="jhu_crowd", crop_size=512, train_images=2272)
    config.eval.split = "validation"
    return common.make_tiny(config) if variant == "tiny" else config
