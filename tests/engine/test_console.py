"""The console shows the run (crowdjax's lines, every library's warnings); `-v 0` adds the
libraries' INFO lines; `<workdir>/log.txt` holds everything, appended across commands."""

from __future__ import annotations

import logging
import os
import re
import warnings

import pytest
from absl import flags
from absl import logging as absl_logging

from crowdjax import console, metric_writers
from tests.engine.conftest import run_script

# absl's prefix of an INFO line on the console (`I1206 01:46:44.949454 1403... file.py:12] `).
ABSL_INFO = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ (\S+\.py):\d+\] ", re.MULTILINE)
# The log file's prefix: date, time to the millisecond, level letter, source file and line.
FILE_PREFIX = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "


def _in_log(text: str, *, level: str, file: str, message: str) -> bool:
    pattern = FILE_PREFIX + rf"{level} {re.escape(file)}:\d+\] {re.escape(message)}"
    return re.search(pattern, text, re.MULTILINE) is not None


@pytest.fixture
def restore_logging():
    """Puts back what `console.setup` changes in this process's logging."""
    absl_handler, absl_logger = absl_logging.get_absl_handler(), absl_logging.get_absl_logger()
    root, lines = logging.root.handlers[:], console.LINES.handlers[:]
    levels = logging.root.level, absl_handler.level, absl_logger.level
    filters = absl_handler.filters[:]
    yield
    for handler in set(logging.root.handlers + console.LINES.handlers) - set(root + lines):
        handler.close()
    logging.root.handlers[:], console.LINES.handlers[:] = root, lines
    logging.root.setLevel(levels[0])
    absl_handler.setLevel(levels[1])
    absl_logger.setLevel(levels[2])
    absl_handler.filters[:] = filters
    logging.captureWarnings(False)


def test_by_default_the_console_shows_library_warnings_not_their_info(
    restore_logging, tmp_path, capfd
):
    path = console.setup(str(tmp_path))
    assert path == str(tmp_path / "log.txt")
    absl_logging.info("a library's info line")  # As orbax and TFDS log.
    logging.getLogger("some.library").info("another library's info line")
    absl_logging.warning("a library's warning")
    logging.getLogger("some.library").error("a library's error")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a Python warning", UserWarning, stacklevel=1)
    metric_writers.log("step 1/2 | loss 0.5")
    out, err = capfd.readouterr()
    assert out.splitlines() == ["step 1/2 | loss 0.5"]  # On stdout once, not again on stderr.
    for shown in ("a library's warning", "a library's error", "a Python warning"):
        assert shown in err
    assert "info line" not in out + err and "step 1/2" not in err

    text = open(path).read()
    assert _in_log(text, level="I", file="test_console.py", message="a library's info line")
    assert _in_log(text, level="I", file="test_console.py", message="another library's info")
    assert _in_log(text, level="W", file="test_console.py", message="a library's warning")
    assert _in_log(text, level="E", file="test_console.py", message="a library's error")
    assert "UserWarning: a Python warning" in text
    # crowdjax's line names the file that called `log`.
    assert _in_log(text, level="I", file="test_console.py", message="step 1/2 | loss 0.5")


def test_orbax_read_only_warning_stays_off_the_default_console(restore_logging, tmp_path, capfd):
    path = console.setup(str(tmp_path))
    absl_logging.warning("Given directory is read only=%s", "/run/best")
    absl_logging.warning("Given directory is missing")
    err = capfd.readouterr().err
    assert "read only" not in err and "Given directory is missing" in err
    assert "Given directory is read only=/run/best" in open(path).read()


@pytest.mark.parametrize(
    "verbosity, level",
    [(-1, logging.WARNING), (0, logging.INFO), (1, logging.DEBUG), (2, logging.DEBUG - 1)],
)
def test_verbosity_flag_sets_the_console_level(monkeypatch, verbosity, level):
    flag = flags.FLAGS["verbosity"]
    assert console.console_level() == logging.WARNING  # Not on the command line.
    monkeypatch.setattr(flag, "present", 1)
    monkeypatch.setattr(flag, "_value", verbosity)  # As parsed, without touching the loggers.
    assert console.console_level() == level


def test_verbosity_0_shows_library_info_and_the_read_only_warning(
    restore_logging, tmp_path, capfd, monkeypatch
):
    monkeypatch.setattr(flags.FLAGS["verbosity"], "present", 1)
    monkeypatch.setattr(flags.FLAGS["verbosity"], "_value", 0)
    console.setup(str(tmp_path))
    absl_logging.info("a library's info line")
    absl_logging.warning("Given directory is read only=%s", "/run/best")
    err = capfd.readouterr().err
    assert "a library's info line" in err and "read only" in err


def test_a_second_setup_moves_the_log_file(restore_logging, tmp_path):
    first = console.setup(str(tmp_path / "a"))
    second = console.setup(str(tmp_path / "b"), process_id=1)
    assert second == str(tmp_path / "b" / "log_process1.txt")
    metric_writers.log("after the move")
    assert "after the move" not in open(first).read()
    assert "after the move" in open(second).read()


def test_train_console_and_log_file(tiny_data_dir, tmp_path):
    """The tiny quickstart: no orbax INFO line on the console but the run's progress and final
    evaluation; `-v 0` on the re-run brings them back; log.txt holds both commands' lines."""
    workdir = str(tmp_path / "run")
    args = [
        "train.py",
        "--config=configs/quickstart.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.data_dir={tiny_data_dir}",
    ]
    first = run_script(args)
    assert first.returncode == 0, first.stderr[-3000:]
    shown = first.stdout + first.stderr
    assert ABSL_INFO.findall(shown) == []
    assert "checkpoint_manager.py" not in shown and "async_checkpointer.py" not in shown
    assert "step 4/4 |" in first.stdout
    assert "final evaluation of the best checkpoint" in first.stdout
    assert re.search(r"^test \(synthetic_crowd/tiny test\): MAE ", first.stdout, re.MULTILINE)
    with open(os.path.join(workdir, "log.txt")) as f:
        logged = f.read()
    assert _in_log(logged, level="I", file="trainer.py", message="step 4/4 |")
    assert _in_log(logged, level="I", file="checkpoint_manager.py", message="")

    # Re-running the finished workdir opens its checkpoints again, with orbax's INFO lines.
    again = run_script([*args, "-v", "0"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "checkpoint_manager.py" in ABSL_INFO.findall(again.stdout + again.stderr)
    assert "already trained 4 steps" in again.stdout
    with open(os.path.join(workdir, "log.txt")) as f:
        logged_again = f.read()
    assert logged_again.startswith(logged)  # Appended.
    commands = re.findall(r"\] command: (.*) \(pid \d+\)$", logged_again, re.MULTILINE)
    assert len(commands) == 2 and commands[1].endswith("-v 0")
    assert _in_log(logged_again, level="I", file="trainer.py", message=f"{workdir}: already")
