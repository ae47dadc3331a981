"""One module per CLI command; each parses and validates, then calls the library."""
