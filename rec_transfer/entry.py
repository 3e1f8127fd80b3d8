"""The ``rec-transfer`` console script. Loading the libraries takes seconds; Ctrl-C then is one line, as later."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from rec_transfer.cli import main as run_cli
    except KeyboardInterrupt:
        print("rec-transfer: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    run_cli()
