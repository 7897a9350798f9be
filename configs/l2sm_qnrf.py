"""L2SM on UCF-QNRF (sizes: configs/datasets.py, "qnrf"; settings: configs/l2sm_common.py).

  python train.py --config=configs/l2sm_qnrf.py --workdir=workdirs/l2sm_qnrf
  python eval.py --workdir=workdirs/l2sm_qnrf

Build the data first (see README); this config reads the builder config `ucf_qnrf/l2sm`, whose
images are resized to fit 1920 x 1080 (Sec 4.2, fixed sigma 8 px):
  python -m crowdjax.data.build ucf_qnrf/l2sm --manual_dir=<download>
Each training image is split 2 x 2 into a batch of four tiles (Sec 4.2). The checkpoint is
selected on 10% of train held out; at the end the test split is evaluated, and part A's test split
(Table 4, QNRF -> part A; needs shanghaitech/part_a built).
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (Table 1, MAE/RMSE): 104.7/173.6 (SPN alone 110.3/184.6); Table 4 QNRF -> A: 73.4/119.4.
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
"""

from configs import common, l2sm_common


def get_config(variant: str = ""):
    config = l2sm_common.l2sm_config("qnrf", tiles=2)
    config.data.name = "ucf_qnrf/l2sm"
    config.data.train_buckets = ((576, 1024), (1024, 576), (768, 1024), (1024, 768))
    config.evals.sha_test = common.eval_entry("shanghaitech/part_a", "test")
    return l2sm_common.make_tiny(config) if common.is_tiny(variant) else config
