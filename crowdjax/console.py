"""What the console shows, and the full log in the run's directory.

By default the console holds crowdjax's own lines (`metric_writers.log`: progress, evaluations,
the final report) and every library's warnings and errors; the INFO lines of orbax, TFDS and
JAX (hundreds per run, mostly from checkpointing) are left out. absl's `-v`/`--verbosity` flag
brings them back: `-v 0` shows INFO, `-v 1` DEBUG. Its documented default, -1 (warning), is what
the console keeps when the flag is not given, although `absl.app` lowers it to 0 after parsing.

Whatever the console shows, `setup(directory)` appends every line, crowdjax's and every
library's from INFO up, with a timestamp and its source file, to `<directory>/log.txt`. Python
warnings go through logging too, so they reach both. In a cloud directory (gs://...) the log is
uploaded whole every few seconds and at exit (`crowdjax.storage.AppendedFile`). At the default
verbosity one library warning stays off the console: orbax's "Given directory is read only",
which it gives each time crowdjax opens a checkpoint directory read-only, as it does on purpose
to evaluate.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import flags
from absl import logging as absl_logging
from absl.logging import converter

from crowdjax import storage

# The lines `metric_writers.log` prints. They reach the log file only, not the logging handlers
# of the console (which would show them a second time).
LINES = logging.getLogger("crowdjax.console")
LINES.setLevel(logging.INFO)
LINES.propagate = False

LOG_FILE = "log.txt"
# Library messages shown on the console when --verbosity is not given.
DEFAULT_CONSOLE_LEVEL = logging.WARNING
_FILE_FORMAT = logging.Formatter(
    "%(asctime)s.%(msecs)03d %(levelname).1s %(filename)s:%(lineno)d] %(message)s",
    datefmt="%Y-%m-%d %H:%M:%S",
)
_FILE_HANDLER_NAME = "crowdjax log file"


def _not_expected(record: logging.LogRecord) -> bool:
    """False for the warnings that describe what crowdjax asked for (see the module doc)."""
    return not record.getMessage().startswith("Given directory is read only=")


def log_path(directory: str, process_id: int = 0) -> str:
    """`<directory>/log.txt`; the processes other than 0 of a multi-process run write their own
    `log_process<N>.txt` (each logs its libraries' lines). The entry points number them by
    `config.distributed.process_id`, so with `distributed.auto` all of them append to log.txt."""
    name = LOG_FILE if process_id == 0 else f"log_process{process_id}.txt"
    return os.path.join(directory, name)


def console_level() -> int:
    """The least severe library message the console shows: absl's `--verbosity` as a Python
    logging level when it is given on the command line, else WARNING."""
    verbosity = flags.FLAGS["verbosity"]
    if not verbosity.present:
        return DEFAULT_CONSOLE_LEVEL
    if verbosity.value <= converter.ABSL_DEBUG:
        return converter.absl_to_standard(verbosity.value)
    return logging.DEBUG - (verbosity.value - 1)  # absl's vlog levels above 1.


def setup(directory: str, *, process_id: int = 0) -> str:
    """Sets the console's threshold (`console_level`) and appends the full log to
    `log_path(directory, process_id)`; returns that path.

    Call it once flags are parsed (in an absl `main`). A second call moves the log file.
    """
    setup_console()
    path = log_path(directory, process_id)
    storage.makedirs(directory)
    for old in [h for h in LINES.handlers if h.name == _FILE_HANDLER_NAME]:
        for logger in (logging.root, LINES):
            logger.removeHandler(old)
        old.close()
    log_file = (
        logging.FileHandler(path, mode="a", encoding="utf-8")
        if storage.is_local(path)
        else _AppendedFileHandler(path)
    )
    log_file.name = _FILE_HANDLER_NAME
    log_file.setFormatter(_FILE_FORMAT)
    for logger in (logging.root, LINES):
        logger.addHandler(log_file)
    # Marks where this command starts in a log appended across resumes.
    LINES.info("command: %s (pid %d)", " ".join(sys.argv), os.getpid())
    return path


def setup_console() -> None:
    """Sets the console's threshold (`console_level`) alone: for a command that keeps no log
    file (the web page's server writes nothing)."""
    shown = console_level()
    absl_logging.use_absl_handler()  # `absl.app.run` did it already; installs it otherwise.
    console_handler = absl_logging.get_absl_handler()
    console_handler.setLevel(shown)
    if shown == DEFAULT_CONSOLE_LEVEL:
        console_handler.addFilter(_not_expected)  # Added once: a second add is a no-op.
    else:
        console_handler.removeFilter(_not_expected)
    # The root level decides which records exist at all: INFO at least, for the file.
    logging.root.setLevel(min(shown, logging.INFO))
    logging.captureWarnings(True)


class _AppendedFileHandler(logging.StreamHandler):
    """Appends records to a cloud file (`storage.AppendedFile`), uploaded when closed (as
    logging does at exit) and in between by the file's own thread."""

    def __init__(self, path: str):
        super().__init__(storage.AppendedFile(path))

    def close(self) -> None:
        # Not under the handler's lock: a library may log from the thread that uploads.
        self.stream.close()
        super().close()
