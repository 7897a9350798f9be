"""UOT on NWPU-Crowd: 3109 train / 500 val / 1500 test; crop 384.

Test labels are withheld: model selection and the final report use the validation split.

  python train.py --config=configs/uot_nwpu.py --workdir=workdirs/uot_nwpu
  python eval.py --config=configs/uot_nwpu.py --workdir=workdirs/uot_nwpu

Build the data first (see README):
  python -m crowdjax.data.build nwpu_crowd --manual_dir=<download>
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (MAE/RMSE): see METHODS.md; ImageNet VGG19 weights: --config.model.pretrained=<vgg19.pth>.
"""

from configs import common
from configs.uot_common import uot_config


def get_config(variant: str = ""):
    config = uot_config(dataset="nwpu_crowd", crop_size=384, train_images=3109)
    config.eval.split = config.eval.final_split = "validation"
    return common.make_tiny(config) if variant == "tiny" else config
