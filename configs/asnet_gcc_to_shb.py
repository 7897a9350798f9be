"""ASNet, GCC (synthetic, GTA V) -> ShanghaiTech part B (Table 6: MAE 14.6, MSE 22.6).

  python train.py --config=configs/asnet_gcc_to_shb.py --workdir=workdirs/asnet_gcc_to_shb
  python eval.py --workdir=workdirs/asnet_gcc_to_shb

Build the data first (see README; GCC's release layout: tfds_builders/gcc.py):
  python -m crowdjax.data.build gcc/random --manual_dir=<GCC download>
  python -m crowdjax.data.build shanghaitech/part_b --manual_dir=<download>
GCC's random-protocol training frames (at 540 x 960) are the labelled source, part B's training
images (no labels) the target; part B's test split is evaluated at the end. The checkpoint is
selected on 10% of GCC's training frames held out. 20 epochs: GCC has 28x part A's images.
Settings: configs/asnet_common.py.
"""

from configs import asnet_common


def get_config(variant: str = ""):
    return asnet_common.get_variant(
        lambda: asnet_common.asnet_config("gcc", "shb", epochs=20), variant
    )
