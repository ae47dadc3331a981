"""The ``sparseinst`` command line: the app, console and exit codes, options, progress display,
tables, and one module per command (each parses, calls one library function and renders)."""
