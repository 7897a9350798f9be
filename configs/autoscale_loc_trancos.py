"""AutoScale localization on TRANCOS (vehicles): 403 train / 420 validation / 421 test; crop 384.

TRANCOS (Guerrero-Gomez-Olmedo et al. 2015): 1244 images of 640x480 from traffic cameras, split
into 403 train, 420 validation and 421 test images, with a region of interest per image. Table 14
of AutoScale reports GAME(0-3) inside the ROI, which `eval.py` computes (the builder stores the ROI
and the metrics mask with it).

  python train.py --config=configs/autoscale_loc_trancos.py --workdir=workdirs/autoscale_loc_trancos
  python eval.py --workdir=workdirs/autoscale_loc_trancos

Build the data first (see README):
  python -m crowdjax.data.build trancos --manual_dir=<download>
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Distance classes as for heads (vehicles are larger: the minima may be kept up to a higher class
with --config.eval.minima_max_class).
"""

from configs import autoscale_common, common


def get_config(variant: str = ""):
    config = autoscale_common.autoscale_config("localization", "trancos", max_points=1024)
    return autoscale_common.make_tiny(config) if common.is_tiny(variant) else config
