"""Exceptions shared by the command modules (kept apart from cli.py so that ``python -m streams.cli``,
which loads cli.py a second time as ``__main__``, still catches the same class)."""


class UsageError(Exception):
    """Bad usage or bad input of a command: exit code 2."""
