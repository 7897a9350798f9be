"""DKPNet jointly on sha + shb + qnrf (3-joint, one model, tested on each).

Stage I (VA) and the baselines JT, SE: variants :va (default), :jt, :se; :tiny.

  python train.py --config=configs/dkpnet_va_3joint.py --config.model.pretrained=<hrnet_w40.pth>

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
    return dkpnet_common.get_variant(_config, variant, allowed=dkpnet_common.STAGE_ONE)
