"""The one place where user errors become one paragraph on stderr and an exit code."""

from __future__ import annotations

import functools
import os
import re
import sys
import textwrap
from collections.abc import Callable
from typing import TypeVar, overload

import typer

from vqdoctor.errors import VqdoctorError

F = TypeVar("F", bound=Callable[..., object])

DEBUG_ENV = "VQDOCTOR_DEBUG"


def _sentence(text: str) -> str:
    """A message or hint as a sentence: a capital where it starts with a plain word (never a
    file name, path, flag or code: a word that names something on disk, such as the folder
    ``images``, stays as the user wrote it), and a full stop at the end."""
    text = text.strip()
    if not text:
        return text
    first = text.split()[0]
    if re.fullmatch(r"[a-z][a-z'-]*[,:;]?", first) and not os.path.lexists(first.rstrip(",:;")):
        text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def format_error(err: VqdoctorError) -> str:
    text = f"Error: {_sentence(err.message)}"
    if err.hint:
        text += f" {_sentence(err.hint)}"
    return "\n".join(textwrap.wrap(text, width=100, break_long_words=False, break_on_hyphens=False))


def internal_error_text(err: BaseException, command: str) -> str:
    """One paragraph for an unexpected exception (a bug): what happened, and how to see more."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    what = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return format_error(VqdoctorError(
        f"internal error in vqdoctor {command} ({what}).",
        hint=f"This is a bug in vqdoctor, not a result; rerun with {DEBUG_ENV}=1 for the traceback and report it.",
    ))


@overload
def translate_errors(fn: F, *, internal_exit: int | None = None) -> F: ...
@overload
def translate_errors(fn: None = None, *, internal_exit: int | None = None) -> Callable[[F], F]: ...


def translate_errors(fn: F | None = None, *, internal_exit: int | None = None) -> F | Callable[[F], F]:
    """Wrap a command: a VqdoctorError prints one paragraph and exits with its code
    (2 by default). Set VQDOCTOR_DEBUG=1 to get the traceback instead.

    With ``internal_exit`` (``vqdoctor check``: 2, so a crash never reads as "thresholds failed")
    any other exception is a bug reported in one paragraph with that exit code; otherwise it
    keeps its traceback."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: object, **kwargs: object) -> object:
            try:
                return f(*args, **kwargs)
            except VqdoctorError as err:
                if os.environ.get(DEBUG_ENV):
                    raise
                print(format_error(err), file=sys.stderr)
                raise typer.Exit(code=err.exit_code) from None
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise
            except Exception as err:  # noqa: BLE001 - a bug: keep CI's exit codes honest
                if internal_exit is None or os.environ.get(DEBUG_ENV):
                    raise
                print(internal_error_text(err, f.__name__.removesuffix("_command")), file=sys.stderr)
                raise typer.Exit(code=internal_exit) from None

        return wrapper  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate
