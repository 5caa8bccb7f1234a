"""The ``crashd`` command line: one module per command."""
