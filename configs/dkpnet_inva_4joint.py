"""DKPNet jointly on sha + shb + qnrf + nwpu (4-joint, one model, tested on each).

Stage II (InVA, DKPNet(c=5, k=2)): clusters the attention of the stage-I run in dkpnet.stage1
(default workdirs/dkpnet_va_4joint, the default workdir of configs/dkpnet_va_4joint.py), then trains
from ImageNet weights with the cluster labels. Variant :tiny.

  python train.py --config=configs/dkpnet_inva_4joint.py --config.model.pretrained=<hrnet_w40.pth>

Settings: configs/dkpnet_common.py.
"""

from configs import dkpnet_common


def _config(variant: str):
    return dkpnet_common.dkpnet_config(
        ("sha", "shb", "qnrf", "nwpu"),
        variant=variant,
        clusters=5,
        sub_centers=2,
        stage1="workdirs/dkpnet_va_4joint",
    )


def get_config(variant: str = ""):
    return dkpnet_common.get_variant(_config, variant, allowed=("inva",))
