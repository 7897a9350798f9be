"""ASNet, UCSD -> Mall (Table 2: MAE 2.76, MSE 3.55).

  python train.py --config=configs/asnet_ucsd_to_mall.py --workdir=workdirs/asnet_ucsd_to_mall
  python eval.py --workdir=workdirs/asnet_ucsd_to_mall

Build the data first (see README):
  python -m crowdjax.data.build ucsd/native --manual_dir=<download>
  python -m crowdjax.data.build mall/half --manual_dir=<download>
UCSD's 800 training frames (601-1400; the last 10% held out as one block for model selection)
are the source; Mall's 800 training frames at the 320 x 240 the paper quotes (`mall/half`), without
their labels, the target; Mall's 1200 test frames are evaluated at the end, inside Mall's region of
interest. Crops of 160 x 240: UCSD's whole 158 x 238 frames (padded), pieces of Mall's frames;
the maps stay at the input resolution (D2 sees 40 x 60 patches). Settings: configs/asnet_common.py.
"""

from configs import asnet_common

TARGET = "mall/half"


def _config():
    config = asnet_common.asnet_config("ucsd", "mall", crop=160, batch=8)
    config.data.crop_size = (160, 240)
    config.data.target = TARGET
    config.evals.target_test.dataset = TARGET
    return config


def get_config(variant: str = ""):
    return asnet_common.get_variant(_config, variant)
