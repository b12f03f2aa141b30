"""One exception family for everything a user can cause.

The CLI translates a :class:`VqdoctorError` into one paragraph on stderr and a non-zero exit
(see ``vqdoctor/cli/errors.py``); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class VqdoctorError(Exception):
    """An error a user can fix. ``message`` says what was wrong (with the offending value),
    ``hint`` says what to do about it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class InputFileError(VqdoctorError):
    """A file is missing, empty, truncated, of an unknown format, or holds the wrong thing."""


class UnsafePickleError(VqdoctorError):
    """A pickle needs code (a global) to load; we never run code from a checkpoint."""


class CodebookNotFoundError(VqdoctorError):
    """No codebook, or an ambiguous set, where a command needs one."""


class DataError(VqdoctorError):
    """Latents or inputs that do not fit: wrong dimension, NaN/Inf, empty."""


class EncoderError(VqdoctorError):
    """The encoder could not be built, loaded or run on the inputs."""


class UsageError(VqdoctorError):
    """Options that do not fit together or values out of range."""
