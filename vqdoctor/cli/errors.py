"""The one place where user errors become one paragraph on stderr and an exit code."""

from __future__ import annotations

import functools
import re
import os
import sys
import textwrap
from collections.abc import Callable
from typing import TypeVar

import typer

from vqdoctor.errors import VqdoctorError

F = TypeVar("F", bound=Callable[..., object])

DEBUG_ENV = "VQDOCTOR_DEBUG"


def _sentence(text: str) -> str:
    """A message or hint as a sentence: a capital where it starts with a plain word (never a
    file name, path, flag or code), and a full stop at the end."""
    text = text.strip()
    if not text:
        return text
    if re.fullmatch(r"[a-z][a-z'-]*[,:;]?", text.split()[0]):
        text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def format_error(err: VqdoctorError) -> str:
    text = f"Error: {_sentence(err.message)}"
    if err.hint:
        text += f" {_sentence(err.hint)}"
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
