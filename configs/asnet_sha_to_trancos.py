"""ASNet, ShanghaiTech part A -> TRANCOS (Table 3, GAME(0-3): 4.77, 8.39, 13.37, 15.12).

  python train.py --config=configs/asnet_sha_to_trancos.py --workdir=workdirs/asnet_sha_to_trancos
  python eval.py --workdir=workdirs/asnet_sha_to_trancos

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_a --manual_dir=<download>
  python -m crowdjax.data.build trancos --manual_dir=<download>
Part A's labelled crowds are the source, TRANCOS's training images (vehicles, no labels) the
target. The final evaluation of TRANCOS's test split reports GAME(0-3) inside each image's region
of interest (`crowdjax.evaluation`; GAME(0) = MAE). Selection: part A's held-out images (TRANCOS's
labelled validation split is never read). Settings: configs/asnet_common.py.
"""

from configs import asnet_common


def get_config(variant: str = ""):
    return asnet_common.get_variant(lambda: asnet_common.asnet_config("sha", "trancos"), variant)
