"""The one place where user errors become one paragraph on stderr and an exit code."""

from __future__ import annotations

import functools
import os
import sys
import textwrap
from collections.abc import Callable
from typing import TypeVar

import typer

from vqdoctor.errors import VqdoctorError

F = TypeVar("F", bound=Callable[..., object])

DEBUG_ENV = "VQDOCTOR_DEBUG"


def format_error(err: VqdoctorError) -> str:
    text = f"Error: {err.message}"
    if err.hint:
        text += f" {err.hint}"
    return "\n".join(textwrap.wrap(text, width=100, break_long_words=False, break_on_hyphens=False))


def translate_errors(fn: F) -> F:
    """Wrap a command: a VqdoctorError prints one paragraph and exits with its code
    (2 by default). Set VQDOCTOR_DEBUG=1 to get the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)
        except VqdoctorError as err:
            if os.environ.get(DEBUG_ENV):
                raise
            print(format_error(err), file=sys.stderr)
            raise typer.Exit(code=err.exit_code) from None

    return wrapper  # type: ignore[return-value]
