"""The command line's exit codes (README "Command reference")."""

EXIT_FAILED = 1  # the command ran but some of its work failed: inputs skipped, nothing found, disk full
EXIT_USAGE = 2  # bad input, nothing done: recipe, weights, files, arguments
EXIT_INTERRUPTED = 130  # Ctrl-C (a training run saved first)
EXIT_TERMINATED = 143  # SIGTERM, e.g. a preempted job (a training run saved first)
