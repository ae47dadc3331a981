"""Stopping a training run on a signal: Ctrl-C (SIGINT) or SIGTERM (``docker stop``, Kubernetes,
SLURM preemption) asks it to finish the current step and save; data workers leave stopping to
the main process."""

from __future__ import annotations

import signal
import threading
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """While entered, a stop signal sets ``requested`` (and ``signal``, its name, e.g. "SIGTERM")
    instead of killing the process; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = self.signal or signal.Signals(signum).name


def leave_stopping_to_the_main_process(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM. Ctrl-C in a terminal, ``timeout``, systemd
    and SLURM signal every process of the job; a worker killed by one made the main process raise
    (``DataLoader worker ... is killed by signal``) instead of saving. The main process shuts its
    workers down when it stops, and they exit on their own if it dies."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
