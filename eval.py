"""Evaluate a trained model: MAE, RMSE, NAE, GAME(0-3), localization P/R/F, per-category.

  python eval.py --config=configs/uot_shb.py --workdir=workdirs/uot_shb --split=test
  python eval.py --config=configs/quickstart.py --checkpoint=workdirs/quickstart/best \
      --save_images=8

Writes `<workdir>/eval_<split>.json` (and `images_<split>/*.png` with --save_images).
"""

from absl import app, flags
from ml_collections import config_flags

from crowdjax import evaluation, trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: workdirs/<config name>).")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.eval.final_split).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Checkpoint (workdir, its best/ or checkpoints/ dir, or a step dir)."
)
_SAVE_IMAGES = flags.DEFINE_integer("save_images", 0, "Write this many density overlays as PNG.")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    config = _CONFIG.value
    workdir = _WORKDIR.value or trainer.default_workdir(flags.FLAGS["config"].config_filename)
    evaluation.run_main(
        config,
        workdir,
        split=_SPLIT.value,
        checkpoint=_CHECKPOINT.value,
        save_images=_SAVE_IMAGES.value,
    )


if __name__ == "__main__":
    app.run(main)
