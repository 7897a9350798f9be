"""Preemption: a run told to stop saves at the next step boundary and exits with its own status.

One process: SIGTERM (what a VM scheduler, `kill` or a batch system sends before it kills) only
sets a flag while training runs; the step loop sees it after the step it was in.
Several processes (`jax.distributed.initialize`): JAX's preemption service takes SIGTERM (or the
cluster's notice) on any process, and `multihost_utils.reached_preemption_sync_point(step)`, which
every process calls after every step, returns True on all of them at the same step (as orbax's
`CheckpointManager.should_save` does). Until a notice arrives the call only reads the process's
own state (about 0.2 microseconds on two localhost processes): no collective per step.

The trainer then saves that step, waits for the save to commit and raises `Preempted`, a
SystemExit whose status is `EXIT_STATUS`: re-running the same command resumes from that step as
an uninterrupted run would go on. The final evaluation asks before each batch (its sync points
continue the step numbering) and stops the same way, without its report; the re-run finishes it.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils

# EX_TEMPFAIL (sysexits.h): a temporary failure, the user is invited to retry. Unlike 143
# (128 + SIGTERM), it tells a preempted run that saved apart from one the signal killed.
EXIT_STATUS = 75


class Preempted(SystemExit):
    """The run was preempted and step `step` is committed; exits with `EXIT_STATUS`."""

    def __init__(self, step: int, reason: str):
        super().__init__(EXIT_STATUS)
        self.step = step
        self.reason = reason


class Preemption:
    """Whether the run is asked to stop, checked at each step boundary (`requested`).

    A context manager: the SIGTERM handler (one process, main thread only) is installed on
    entry and the previous handler restored on exit.
    """

    def __init__(self):
        self.reason: str | None = None
        self._multi_process = jax.process_count() > 1
        self._previous_handler = None
        # `jax.distributed.initialize` starts the service unless this flag turned it off.
        self._multi_process_sync = self._multi_process and jax.config.jax_enable_preemption_service
        if self._multi_process and not self._multi_process_sync:
            logging.warning(
                "the JAX preemption service is off (jax_enable_preemption_service): a preempted "
                "process of this run stops without saving"
            )

    def __enter__(self) -> Preemption:
        # With several processes, JAX's preemption service owns SIGTERM: a handler here would
        # replace its own and the other processes would never hear of the notice.
        if not self._multi_process and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self.reason = "SIGTERM"

    def requested(self, step: int) -> bool:
        """Whether the run stops after `step`; every process of a run calls it at every step
        and gets the same answer."""
        if self._multi_process_sync and self.reason is None:
            if multihost_utils.reached_preemption_sync_point(step):
                self.reason = "a preemption notice"
        return self.reason is not None
