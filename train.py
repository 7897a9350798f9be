"""Train a crowd-counting method.

  python train.py --config=configs/uot_qnrf.py --workdir=workdirs/uot_qnrf
  python train.py --config=configs/quickstart.py                # UOT on synthetic_crowd, CPU
  python train.py --config=configs/uot_shb.py:tiny --config.train.num_steps=10

`--config=<file>[:variant]` loads `get_config(variant)`; `--config.<field>=<value>` overrides any
field. Killing and re-running the same command resumes from the last checkpoint in the workdir.
The console shows crowdjax's lines and the libraries' warnings; `-v 0` (absl's --verbosity) adds
their INFO lines. Everything goes to `<workdir>/log.txt` (see `crowdjax.console`).
"""

from absl import app, flags
from ml_collections import config_flags

from crowdjax import console, trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: workdirs/<config name>).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    config = _CONFIG.value
    workdir = _WORKDIR.value or trainer.default_workdir(flags.FLAGS["config"].config_filename)
    console.setup(workdir, process_id=config.distributed.process_id)
    trainer.run_main(config, workdir)


if __name__ == "__main__":
    app.run(main)
