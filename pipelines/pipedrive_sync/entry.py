"""The `pipedrive-sync` console script: loads the command line, then runs it.

Loading takes most of a second (dlt's imports); Ctrl-C then ends with one line, as later.
"""

from __future__ import annotations

import os
import sys

from .exit_codes import INTERRUPTED


def main() -> None:
    """Console-script entry point."""
    try:
        from .cli import main as run_command_line
    except KeyboardInterrupt:
        sys.stderr.write("pipedrive-sync: interrupted while starting; nothing was changed\n")
        sys.stderr.flush()
        os._exit(INTERRUPTED)  # a half-imported dlt is not worth tearing down
    run_command_line()
