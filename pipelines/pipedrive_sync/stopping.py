"""Stopping a run on SIGINT (Ctrl-C) and SIGTERM (systemd, docker stop, Kubernetes).

The first signal asks the run to stop (`RunContext.stop`): no new requests, waits and pages
still on their way are abandoned, what was fetched is loaded with its cursors, the run is
recorded, and the command exits 128 + the signal (130, 143). The progress reporter says so at
once. A load already under way finishes first: dlt's own handlers are switched off, or they
would swallow the signal (a load "drains" and then carries on).

A second signal ends the process at once, like `kill -9` (which the crash-safety tests cover):
every load commits atomically, and the next run finishes or redoes the interrupted one.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from sources.pipedrive import RunContext
from sources.pipedrive.http import StopRequested
from sources.pipedrive.http.errors import SIGNAL_NAMES

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DLT_INTERCEPT_ENV = "RUNTIME__INTERCEPT_SIGNALS"
SHOW_CURSOR = b"\x1b[?25h"  # a live view hides it; an abort must not leave it hidden


def abort_line(signum: int) -> str:
    name = SIGNAL_NAMES.get(signum, f"signal {signum}")
    return (
        f"pipedrive-sync: aborted by a second {name}: loads already committed stay;"
        " the next run finishes or redoes the interrupted one"
    )


class _Handler:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.received = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        if self.received == 1:
            self.ctx.stop(StopRequested(signum))  # only sets flags: safe in a signal handler
            return
        _abort(signum)


def _abort(signum: int) -> None:
    """End the process now, without Python's teardown (it would wait for threads)."""
    try:
        if sys.stdout.isatty():
            os.write(sys.stdout.fileno(), SHOW_CURSOR + b"\n")
        os.write(sys.stderr.fileno(), (abort_line(signum) + "\n").encode())
    except (OSError, ValueError):
        pass
    os._exit(128 + signum)


@contextmanager
def stop_on_signals(ctx: RunContext) -> Iterator[None]:
    """Within: the first SIGINT/SIGTERM stops `ctx`'s run cleanly, a second aborts at once.

    Signal handlers can only be installed from the main thread; elsewhere (a worker thread
    of an orchestrator) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _Handler(ctx)
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    intercept = os.environ.get(DLT_INTERCEPT_ENV)
    os.environ[DLT_INTERCEPT_ENV] = "false"  # read by each dlt pipeline this run makes
    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if intercept is None:
            os.environ.pop(DLT_INTERCEPT_ENV, None)
        else:
            os.environ[DLT_INTERCEPT_ENV] = intercept
