"""crowdjax.preemption in one process: SIGTERM only sets a flag while training runs, and the
previous handler is back afterwards (the trainer's use is tested in tests/engine/test_engine.py)."""

from __future__ import annotations

import os
import signal
import threading

from crowdjax import preemption


def test_sigterm_is_a_request_while_installed_and_the_previous_handler_returns():
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        with preemption.Preemption() as preempt:
            assert not preempt.requested(1)
            os.kill(os.getpid(), signal.SIGTERM)
            assert preempt.requested(2)
            assert preempt.reason == "SIGTERM"
        assert calls == []  # The run's handler took it, not the one before.
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_no_handler_is_installed():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def train():
        with preemption.Preemption() as preempt:
            seen.append((signal.getsignal(signal.SIGTERM), preempt.requested(1)))

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert seen == [(before, False)]


def test_preempted_exits_with_the_documented_status():
    stop = preemption.Preempted(7, "SIGTERM")
    assert isinstance(stop, SystemExit)
    assert stop.code == preemption.EXIT_STATUS == 75
    assert stop.step == 7
