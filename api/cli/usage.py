"""The one exception a CLI subcommand raises for bad operator input."""


class UsageError(Exception):
    """Bad input from the operator: reported as one line on stderr, exit code 2."""
