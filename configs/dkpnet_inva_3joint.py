"""DKPNet jointly on sha + shb + qnrf (3-joint, one model, tested on each).

Stage II (InVA, DKPNet(c=3, k=3)): clusters the attention of the stage-I run in dkpnet.stage1
(default workdirs/dkpnet_va_3joint, the default workdir of configs/dkpnet_va_3joint.py), then trains
from ImageNet weights with the cluster labels. Variant :tiny.

  python train.py --config=configs/dkpnet_inva_3joint.py --config.model.pretrained=<hrnet_w40.pth>

Settings: configs/dkpnet_common.py.
"""

from configs import dkpnet_common


def _config(variant: str):
    return dkpnet_common.dkpnet_config(
        ("sha", "shb", "qnrf"),
        variant=variant,
        clusters=3,
        sub_centers=3,
        stage1="workdirs/dkpnet_va_3joint",
    )


def get_config(variant: str = ""):
    return dkpnet_common.get_variant(_config, variant, allowed=("inva",))
