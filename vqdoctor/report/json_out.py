"""The machine-readable report: ``Report`` -> plain JSON (schema ``vqdoctor.report/1``).

The keys and their order are the contract documented in ``docs/json-schema.md`` and checked by
``vqdoctor/report/report.schema.json``. A section that does not apply is ``null``. Per-code usage
counts and the 2-D projection's points are bulky and left out unless ``include_counts=True``.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from vqdoctor.errors import InputFileError
from vqdoctor.io.atomic import atomic_write_bytes  # the one atomic writer (the renderers import it from here)
from vqdoctor.report.schema import SCHEMA, Report
from vqdoctor.report.schema import report_to_dict as report_to_dict  # defined beside Report (Report.to_dict)

SCHEMA_FILE = "report.schema.json"


def report_to_json(report: Report, *, include_counts: bool = False) -> str:
    """``report_to_dict`` as indented JSON text ending in a newline."""
    doc = report_to_dict(report, include_counts=include_counts)
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_text(text: str, dest: str | Path) -> None:
    """The one way an output document is written: ``dest`` ``"-"`` is stdout, a file is written
    atomically (:func:`vqdoctor.io.atomic.atomic_write_bytes`)."""
    if str(dest) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write_bytes(dest, text.encode("utf-8"))


def write_json(report: Report, dest: str | Path, *, include_counts: bool = False) -> None:
    """Write the JSON report to ``dest`` (``"-"`` = stdout); file writes are atomic."""
    write_text(report_to_json(report, include_counts=include_counts), dest)


def load_schema() -> dict:
    """The JSON Schema (draft 2020-12) of ``vqdoctor.report/1``, shipped as package data."""
    text = resources.files("vqdoctor.report").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def _where(path: Any) -> str:
    parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return parts.lstrip(".") or "(top level)"


def validate_report_dict(doc: Any, *, source: str = "report") -> None:
    """Raise :class:`InputFileError` unless ``doc`` is a valid ``vqdoctor.report/1`` document."""
    if not isinstance(doc, dict):
        raise InputFileError(
            f"{source} is not a vqdoctor report: found a JSON {type(doc).__name__}, expected an object",
            hint="pass a file written by `vqdoctor inspect --json PATH`",
        )
    found = doc.get("schema")
    if found != SCHEMA:
        raise InputFileError(
            f"{source} has schema {found!r}, expected {SCHEMA!r}",
            hint="re-create the report with this vqdoctor version: `vqdoctor inspect CKPT --json PATH`",
        )
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is a dependency; keep a minimal check
        missing = [k for k in load_schema()["required"] if k not in doc]
        if missing:
            raise InputFileError(f"{source} lacks the keys {missing}", hint="re-create the report") from None
        return
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise InputFileError(
            f"{source} does not match schema {SCHEMA} at {_where(first.absolute_path)}: {first.message}{more}",
            hint="re-create the report with `vqdoctor inspect CKPT --json PATH` instead of editing it",
        )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_report_dict(path: str | Path) -> dict:
    """Read a JSON report (e.g. a ``vqdoctor check --baseline``) and validate it against the schema."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(f"report {path} does not exist", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"cannot read report {path}: {e}", hint="check the path and permissions") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise InputFileError(
            f"report {path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})",
            hint="pass a file written by `vqdoctor inspect --json PATH`",
        ) from None
    except ValueError as e:
        raise InputFileError(f"report {path} is not valid JSON: {e}", hint="re-create the report") from None
    validate_report_dict(doc, source=f"report {path}")
    return doc
