"""UOT on ShanghaiTech part B: 400 train / 316 test; crop 512.

  python train.py --config=configs/uot_shb.py --workdir=workdirs/uot_shb
  python eval.py --config=configs/uot_shb.py --workdir=workdirs/uot_shb

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_b --manual_dir=<download>
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (MAE/RMSE): see METHODS.md; ImageNet VGG19 weights: --config.model.pretrained=<vgg19.pth>.
"""

from configs import common
from configs.uot_common import uot_config


def get_config(variant: str = ""):
    config = uot_config(dataset="shanghaitech/part_b", crop_size=512, train_images=400)
    return common.make_tiny(config) if variant == "tiny" else config
