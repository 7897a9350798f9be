"""Evaluate a trained model: MAE, RMSE, NAE, GAME(0-3), localization P/R/F, per-category.

  python eval.py --workdir=workdirs/uot_shb                      # every entry of config.evals
  python eval.py --workdir=workdirs/uot_shb --dataset=shanghaitech/part_a --split=test
  python eval.py --workdir=workdirs/quickstart --checkpoint=latest --save_images=8
  python eval.py --workdir=workdirs/dkpnet --checkpoint=latest --recompute_batch_stats=40
  python eval.py --config=configs/uot_shb.py --workdir=... --checkpoint=path/to/best

The run's resolved config is read from `<workdir>/config.json` unless `--config` is given; only
the checkpoint's variables are restored (never its optimizer state), so a run trained with any
optimizer overrides evaluates from its workdir alone. By default the best checkpoint is
evaluated, the one train.py's final evaluation reports. Writes `<workdir>/eval_<prefix>.json`
(and `images_<prefix>/*.png` with --save_images), and appends its log to `<workdir>/log.txt`
(`-v 0` shows the libraries' INFO lines on the console too; see `crowdjax.console`). A damaged
checkpoint is an error naming it and the one to use instead (a damaged best: --checkpoint=latest);
eval.py moves nothing and never writes final.json (train.py's complete final evaluation does).

A `config.json` whose method is not registered ("module:ATTR", which would import that module) is
refused: a workdir may come from anyone. To run such a method, name it yourself:
`--trust_method=module:ATTR`.
"""

from absl import flags
from ml_collections import config_flags

from crowdjax import cli, console, evaluation
from crowdjax.workdir import load_config

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (default: the workdir's config.json).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    "best",
    "best, latest, or a path (a workdir, its best/ or checkpoints/, a step, or a published .pth).",
)
_DATASET = flags.DEFINE_string("dataset", None, "Evaluate this data set (with --split).")
_SPLIT = flags.DEFINE_string("split", None, "Evaluate this split (default with --dataset: test).")
_SAVE_IMAGES = flags.DEFINE_integer("save_images", 0, "Write this many density overlays as PNG.")
_RECOMPUTE_BATCH_STATS = flags.DEFINE_integer(
    "recompute_batch_stats",
    None,
    "Models with BatchNorm: re-estimate its statistics on this many training batches first "
    "(0: the checkpoint's running averages; default: the config's eval.recompute_batch_stats).",
)
_TRUST_METHOD = cli.define_trust_method("the workdir's config.json")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    if _CONFIG.value is not None:
        config = _CONFIG.value
    else:
        config = load_config(_WORKDIR.value, trusted_method=_TRUST_METHOD.value)
    console.setup(_WORKDIR.value, process_id=config.distributed.process_id)
    if _RECOMPUTE_BATCH_STATS.value is not None:
        config.eval.recompute_batch_stats = _RECOMPUTE_BATCH_STATS.value
    evaluation.evaluate_checkpoint(
        config,
        _WORKDIR.value,
        checkpoint=_CHECKPOINT.value,
        dataset=_DATASET.value,
        split=_SPLIT.value,
        save_images=_SAVE_IMAGES.value,
    )


if __name__ == "__main__":
    cli.run(main)
