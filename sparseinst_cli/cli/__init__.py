"""The ``sparseinst`` command line: the app, console and exit codes, options, progress display,
tables, and one module per command (each parses, calls one library function and renders)."""

import sys

from .exit_codes import EXIT_INTERRUPTED


def main() -> None:
    """The ``sparseinst`` entry point. The app is imported here, so that Ctrl-C while torch is
    still loading ends quietly too."""
    try:
        from .app import app
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    app()
