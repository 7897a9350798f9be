"""The flags of every crowdjax command, defined one way (absl flags, as train.py's).

  --config=<file>[:variant]   `get_config(variant)` of a config file; `--config.<field>=<value>`
                              overrides any field
  --workdir=<dir>             the run's directory (default: workdirs/<config file stem>)
  --allow_config_change=<f,g> (train.py) fields, as dotted prefixes, that a resumed run may
                              change from the workdir's config.json (`allowed_config_changes`)

  --compilation_cache=<dir|off> JAX's persistent compilation cache (`crowdjax.compilation_cache`)

train.py, `python -m crowdjax.preparation` and `python -m crowdjax.cross_validation` define them
with `define_config_and_workdir` and read them with `config_and_workdir`; every command that
compiles (train, eval, predict, preparation, cross-validation) runs its `main` under `run`, which
adds --compilation_cache.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from crowdjax import compilation_cache, console
from crowdjax.workdir import default_workdir


def run(main) -> None:
    """Parses the flags, turns on the compilation cache, then calls main(argv) with the
    positional arguments."""
    flags.DEFINE_string(
        "compilation_cache",
        compilation_cache.default_dir(),
        "Directory of JAX's persistent compilation cache, or 'off' (default: "
        f"${compilation_cache.ENV}, else ~/.cache/crowdjax/jax).",
    )

    def cached_main(argv):
        compilation_cache.enable(flags.FLAGS["compilation_cache"].value)
        return main(argv)

    app.run(cached_main)


def define_config_and_workdir(*, lock_config: bool = True) -> None:
    """Defines --config (required) and --workdir.

    Args:
      lock_config: the config's fields cannot be added to after loading (False where the
        command adds fields itself, e.g. cross-validation's fold).
    """
    config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=lock_config)
    flags.DEFINE_string("workdir", None, "Run directory (default: workdirs/<config name>).")
    flags.mark_flags_as_required(["config"])
    for name in ("config", "workdir"):  # The command's own flags: --helpshort lists them.
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def define_allow_config_change() -> None:
    """Defines --allow_config_change (train.py's; see `crowdjax.workdir.check_resume_config`)."""
    flags.DEFINE_list(
        "allow_config_change",
        [],
        "Comma-separated config fields (dotted prefixes, e.g. train.num_steps,optimizer) that "
        "a resumed run may change from the workdir's config.json; recorded in the workdir's "
        "config_changes.jsonl.",
    )
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["allow_config_change"])


def define_trust_method(what: str = "the run's config.json"):
    """Defines --trust_method (every command that loads a run: `crowdjax.registry.trust`)."""
    return flags.DEFINE_string(
        "trust_method", None, f"A 'module:ATTR' method to import for {what}."
    )


def allowed_config_changes() -> tuple[str, ...]:
    """The parsed --allow_config_change prefixes."""
    return tuple(f.strip() for f in flags.FLAGS["allow_config_change"].value if f.strip())


def config_and_workdir():
    """(config, workdir) of the parsed flags; the workdir defaults to workdirs/<config stem>.

    Also sets up the console and the workdir's log file (`crowdjax.console`)."""
    config = flags.FLAGS["config"].value
    workdir = flags.FLAGS["workdir"].value or default_workdir(flags.FLAGS["config"].config_filename)
    console.setup(workdir, process_id=config.distributed.process_id)
    return config, workdir
