"""Errors of the text package, each with a one-line message the command line can print."""

from jaxgan.errors import JaxganError


class TextEncoderError(JaxganError, ValueError):
    """A text encoder that cannot be loaded or used, or input it cannot encode."""


class TextEncoderNotFoundError(TextEncoderError, FileNotFoundError):
    """A missing encoder directory or file (also a ``FileNotFoundError``)."""
