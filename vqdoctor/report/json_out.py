"""The machine-readable report: ``Report`` -> plain JSON (schema ``vqdoctor.report/1``).

The keys and their order are the contract documented in ``docs/json-schema.md`` and checked by
``vqdoctor/report/report.schema.json``. A section that does not apply is ``null``. Per-code usage
counts and the 2-D projection's points are bulky and left out unless ``include_counts=True``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from vqdoctor.errors import InputFileError
from vqdoctor.report.schema import SCHEMA, CodebookReport, Projection2D, Report

SCHEMA_FILE = "report.schema.json"

# Top-level and per-codebook key order (the rest follow their dataclass field order).
_CODEBOOK_KEYS = (
    "name", "size", "dim", "level", "kind", "metric", "metric_source", "metric_evidence", "layout", "stack", "head", "keys", "note",
    "usage", "ema", "geometry", "w", "tokens_collapse",
)  # fmt: skip


def _plain(value: Any) -> Any:
    """Dataclasses, mappings, sequences and numbers -> JSON types; NaN/Inf -> None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return _plain(value.tolist())
    raise TypeError(f"cannot write a {type(value).__name__} into the JSON report")


def _codebook_dict(cb: CodebookReport, include_counts: bool) -> dict[str, Any]:
    out = {key: _plain(getattr(cb, key)) for key in _CODEBOOK_KEYS}
    if include_counts:
        out["counts"] = _plain(cb.counts)
    return out


def _projection_dict(p: Projection2D | None, include_counts: bool) -> dict[str, Any] | None:
    if p is None:
        return None
    out: dict[str, Any] = {
        "method": p.method,
        "points": len(p.latents),
        "codes": None if p.codes is None else len(p.codes),
        "with_inputs": p.inputs is not None,
        "seconds": _plain(p.seconds),
    }
    if include_counts:
        out["latents"] = _plain(p.latents)
        out["latent_modes"] = _plain(p.latent_modes)
        out["code_points"] = _plain(p.codes)
        out["input_points"] = _plain(p.inputs)
    return out


def report_to_dict(report: Report, *, include_counts: bool = False) -> dict:
    """The JSON document for ``report`` as plain dicts/lists/numbers (stable key order).

    ``include_counts`` adds each codebook's per-code ``counts`` and the projection's points."""
    return {
        "schema": report.schema,
        "vqdoctor_version": report.vqdoctor_version,
        "checkpoint": _plain(report.checkpoint),
        "data": _plain(report.data),
        "codebooks": [_codebook_dict(cb, include_counts) for cb in report.codebooks],
        "embeddings_collapse": _plain(report.embeddings_collapse),
        "verdicts": [_plain(v) for v in report.verdicts],
        "diagnosis": [_plain(f) for f in report.diagnosis],
        "codebook_free": _plain(report.codebook_free),
        "projection": _projection_dict(report.projection, include_counts),
        "notes": _plain(report.notes),
    }


def report_to_json(report: Report, *, include_counts: bool = False) -> str:
    """``report_to_dict`` as indented JSON text ending in a newline."""
    doc = report_to_dict(report, include_counts=include_counts)
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: the one writer of :mod:`vqdoctor.io.atomic`
    (``.vqdoctor-tmp-`` sibling + ``os.replace``, removed on errors and SIGTERM/SIGINT)."""
    from vqdoctor.io.atomic import atomic_write_bytes as write

    write(path, data)


def write_json(report: Report, dest: str | Path, *, include_counts: bool = False) -> None:
    """Write the JSON report to ``dest`` (``"-"`` = stdout); file writes are atomic."""
    text = report_to_json(report, include_counts=include_counts)
    if str(dest) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write_bytes(dest, text.encode("utf-8"))


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
