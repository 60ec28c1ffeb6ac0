"""Errors that the CLI turns into one line on stderr and exit code 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: a recipe key, a flag, a name, a file.

    The CLI prints ``lit-imgcls: error: <message>`` and exits with code 2, without a traceback.
    """


class UnknownNameError(UsageError, KeyError):
    """A registry lookup for a name nobody registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """Two plugins claim the same name in one registry; a programming error, not user input."""
