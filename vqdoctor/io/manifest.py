"""Manifest files: a list of image or audio files with optional labels, as an alternative to class
folders (``--inputs manifest.csv`` / ``manifest.jsonl``).

- ``.csv``: a header row naming a ``path`` column and optionally a ``label`` column (other columns
  are ignored), then one file per row.
- ``.jsonl``: one JSON object per non-blank line, ``{"path": "...", "label": ...}`` (label optional).

Paths are relative to the manifest's folder and must stay inside it (no absolute path, no ``..``,
no link leading out), like every path named inside a file (docs/security.md). Either every entry
has a label or none has; labels that are all integers are integer ids, else names (sorted). Every
error names the manifest and the line.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from vqdoctor.errors import DataError, InputFileError

MANIFEST_SUFFIXES = (".csv", ".jsonl")
_INT = re.compile(r"-?[0-9]{1,18}")
_HINT_CSV = "Write a header row 'path,label' (label optional), then one file per row, paths relative to the manifest."
_HINT_JSONL = 'Write one object per line, {"path": "images/a.png", "label": "cat"}, paths relative to the manifest.'


def read_manifest(path: Path) -> tuple[list[Path], list[str] | None]:
    """``(files, labels or None)`` listed by the manifest ``path`` (see the module docstring)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputFileError(f"Manifest {path} is not UTF-8 text (byte {exc.start}, line {line}).",
                             hint="Save the manifest as UTF-8.") from None
    rows = _csv_rows(path, text) if path.suffix.lower() == ".csv" else _jsonl_rows(path, text)
    if not rows:
        raise DataError(f"Manifest {path} lists no files.", hint="Add one row per image or audio clip.")
    base = path.parent
    files: list[Path] = []
    labelled = rows[0][2] is not None
    from vqdoctor.io.checkpoints import inside_folder

    for line, name, label in rows:
        if (label is not None) != labelled:
            raise DataError(f"Manifest {path}, line {line}: {name[:200]!r} has {'no label' if labelled else 'a label'} "
                            f"but the first entry {'has one' if labelled else 'has none'}.",
                            hint="Give every entry a label, or none.")
        inside = inside_folder(base, name)
        if inside is None:
            raise InputFileError(
                f"Manifest {path}, line {line}: the path {name[:200]!r} leaves the manifest's folder {base} "
                "(absolute, '..' or a link out).",
                hint="Put the files in (or under) the manifest's folder and name them relative to it.")
        if not inside.is_file():
            raise InputFileError(f"Manifest {path}, line {line}: {inside} does not exist (or is not a file).",
                                 hint="Fix the path (relative to the manifest's folder) or remove the line.")
        files.append(inside)
    return files, ([r[2] for r in rows] if labelled else None)  # type: ignore[misc]


def label_values(labels: list[str]) -> np.ndarray:
    """Manifest labels as an array: int64 where every label is an integer, else strings."""
    if all(_INT.fullmatch(v) for v in labels):
        return np.array([int(v) for v in labels], dtype=np.int64)
    return np.array(labels, dtype=str)


def _csv_rows(path: Path, text: str) -> list[tuple[int, str, str | None]]:
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputFileError(f"Manifest {path}, line 1: not CSV ({exc}).", hint=_HINT_CSV) from None
    columns = [c.strip().lower() for c in header or []]
    if "path" not in columns:
        raise DataError(f"Manifest {path}, line 1: the header {','.join(header or [])[:200]!r} has no 'path' column.",
                        hint=_HINT_CSV)
    at, label_at = columns.index("path"), columns.index("label") if "label" in columns else None
    rows = []
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(columns):
                raise DataError(f"Manifest {path}, line {line}: {len(cells)} field(s) but the header names "
                                f"{len(columns)}.", hint=_HINT_CSV)
            label = cells[label_at].strip() if label_at is not None else None
            rows.append((line, cells[at].strip(), label or None))
    except csv.Error as exc:
        raise InputFileError(f"Manifest {path}, line {reader.line_num}: not CSV ({exc}).", hint=_HINT_CSV) from None
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, str, str | None]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InputFileError(f"Manifest {path}, line {line}: not JSON ({exc}).", hint=_HINT_JSONL) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("path"), str):
            raise DataError(f"Manifest {path}, line {line}: expected an object with a string 'path', got "
                            f"{raw.strip()[:80]!r}.", hint=_HINT_JSONL)
        label = obj.get("label")
        if label is not None and (isinstance(label, bool) or not isinstance(label, (str, int))):
            raise DataError(f"Manifest {path}, line {line}: the label {label!r} is neither a string nor an integer.",
                            hint=_HINT_JSONL)
        rows.append((line, obj["path"], None if label is None else str(label)))
    return rows
