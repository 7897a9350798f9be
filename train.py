"""Train a crowd-counting method.

  python train.py --config=configs/uot_qnrf.py --workdir=workdirs/uot_qnrf
  python train.py --config=configs/quickstart.py                # UOT on synthetic_crowd, CPU
  python train.py --config=configs/uot_shb.py:tiny --config.train.num_steps=10

`--config=<file>[:variant]` loads `get_config(variant)`; `--config.<field>=<value>` overrides any
field. Killing and re-running the same command resumes from the last checkpoint in the workdir;
a resumed run keeps the workdir's config unless `--allow_config_change=train.num_steps,...`
names the fields it may change. A second train.py on a workdir in use is refused.
SIGTERM (a preemptible VM's or a batch system's notice; with several processes, JAX's preemption
notice) saves a checkpoint at the next step boundary, waits for it to commit and exits with status
75 (EX_TEMPFAIL, `crowdjax.preemption.EXIT_STATUS`): re-run the same command to continue.
The console shows crowdjax's lines and the libraries' warnings; `-v 0` (absl's --verbosity) adds
their INFO lines. Everything goes to `<workdir>/log.txt` (see `crowdjax.console`).
"""

from crowdjax import cli, trainer

cli.define_config_and_workdir(lock_config=True)
cli.define_allow_config_change()


def main(argv):
    del argv
    config, workdir = cli.config_and_workdir()
    trainer.run_main(config, workdir, allow_config_change=cli.allowed_config_changes())


if __name__ == "__main__":
    cli.run(main)
