"""UOT on ShanghaiTech part A: 300 train / 182 test; crop 256 (reference).

  python train.py --config=configs/uot_sha.py --workdir=workdirs/uot_sha
  python eval.py --config=configs/uot_sha.py --workdir=workdirs/uot_sha

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_a --manual_dir=<download>
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (MAE/RMSE): see METHODS.md; ImageNet VGG19 weights: --config.model.pretrained=<vgg19.pth>.
"""

from configs import common
from configs.uot_common import uot_config


def get_config(variant: str = ""):
    config = uot_config(dataset="shanghaitech/part_a", crop_size=256, train_images=300)
    return common.make_tiny(config) if variant == "tiny" else config
