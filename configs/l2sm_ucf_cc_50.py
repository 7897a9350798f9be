"""L2SM on UCF_CC_50, 5-fold cross-validation (configs/datasets.py, "ucf_cc_50"; settings:
configs/l2sm_common.py; C = 5: every region is centralised, Sec 4.2).

All five folds and their mean, in one command (each fold in <workdir>/<fold>; a killed run
resumes where it stopped):
  python -m crowdjax.cross_validation --config=configs/l2sm_ucf_cc_50.py --workdir=workdirs/l2sm_ucf
One fold (trains on the four others, tests on it):
  python train.py --config=configs/l2sm_ucf_cc_50.py:fold3 --workdir=workdirs/l2sm_ucf/fold3

Build the data first (see README):
  python -m crowdjax.data.build ucf_cc_50 --manual_dir=<download>
The checkpoint of each fold is selected on 10% of its training images held out.
Variant "tiny" (tests): tiny model on synthetic data, its test and train splits as two folds.
Paper (Table 1, MAE/RMSE): 188.4/315.3 (SPN alone 204.7/340.4).
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
"""

import ml_collections

from configs import common, l2sm_common
from crowdjax import cross_validation

FOLDS = tuple(f"fold{k}" for k in range(1, 6))
TINY_FOLDS = ("test", "train")  # The tiny data's splits; first: train on train, test on test.


def get_config(variant: str = ""):
    options = common.variant_options(variant, ("tiny", *FOLDS, *TINY_FOLDS))
    config = l2sm_common.l2sm_config("ucf_cc_50")
    config.cross_validation = ml_collections.ConfigDict({"folds": FOLDS})
    if "tiny" in options:
        config = l2sm_common.make_tiny(config)
        config.cross_validation.folds = TINY_FOLDS
    chosen = [o for o in options if o != "tiny"]
    if len(chosen) > 1:
        raise ValueError(f"choose one fold, got {chosen}")
    # A fold the config does not have (e.g. "test" without "tiny") is refused by fold_config.
    fold = chosen[0] if chosen else config.cross_validation.folds[0]
    return cross_validation.fold_config(config, fold)
