"""UOT on NWPU-Crowd (sizes and resize rule: configs/datasets.py, "nwpu";
crop: configs/uot_common.py).

  python train.py --config=configs/uot_nwpu.py --workdir=workdirs/uot_nwpu
  python eval.py --workdir=workdirs/uot_nwpu

Build the data first (see README):
  python -m crowdjax.data.build nwpu_crowd --manual_dir=<download>
NWPU-Crowd's test labels are not public (its server scores them), so the official validation
split both selects the checkpoint and is reported, as the papers' NWPU numbers.
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (MAE/RMSE): 87.8/387.5 (docs/methods/uot.md).
ImageNet VGG19 weights: --config.model.pretrained=<vgg19.pth>.
"""

from configs import common
from configs.uot_common import uot_config


def get_config(variant: str = ""):
    config = uot_config("nwpu")
    del config.evals["test"]  # Unlabelled: scored by the NWPU server only.
    return common.make_tiny(config) if common.is_tiny(variant) else config
