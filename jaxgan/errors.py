"""The base class of jaxgan's expected errors: what a user can cause and fix from one line.

Every command runs under one wrapper (``jaxgan.cli``) that prints such an error as
``error: <message>`` and exits with status 2; anything else is a bug and keeps its traceback.
"""


class JaxganError(Exception):
    """An expected error with a one-line message (bad input, a missing or corrupt file)."""


class UsageError(JaxganError, ValueError):
    """Bad command-line input, with a one-line message."""
