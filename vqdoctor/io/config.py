"""Configuration files for ``vqdoctor check``: find and read a TOML table.

Discovery: ``--config FILE`` (a ``[check]`` table, or ``[tool.vqdoctor.check]`` when FILE is a
pyproject.toml), else the nearest ``pyproject.toml`` with a ``[tool.vqdoctor.check]`` table, searched
from the current directory upward. This module only reads; the keys are validated by
:func:`vqdoctor.check.config_from_mapping`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from vqdoctor.errors import InputFileError, UsageError

PYPROJECT = "pyproject.toml"
PYPROJECT_TABLE = ("tool", "vqdoctor", "check")
CONFIG_TABLE = ("check",)


@dataclass(frozen=True)
class ConfigTable:
    path: Path  # the file it came from
    table: str  # e.g. "[tool.vqdoctor.check]"
    values: dict[str, Any]

    @property
    def source(self) -> str:
        return f"{self.path} {self.table}"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file is an error naming the file (and the line)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"config file {path} does not exist.", "Check the --config path.") from None
    except IsADirectoryError:
        raise InputFileError(f"config file {path} is a folder, not a TOML file.") from None
    except OSError as e:
        raise InputFileError(f"cannot read config file {path}: {e.strerror or e}.") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {path} is not valid TOML: {e}.", "Fix the file; see docs/ci.md for an example.") from None


def _table(doc: dict[str, Any], keys: tuple[str, ...], *, path: Path | None = None) -> dict[str, Any] | None:
    """The table at ``keys`` (None when absent). With ``path``, a key on the way that is there but
    not a table (``[tool.vqdoctor] check = 5``) is an error naming the key and its value."""
    node: Any = doc
    for depth, key in enumerate(keys):
        if key not in node:
            return None
        node = node[key]
        if not isinstance(node, dict):
            if path is None:
                return None
            where = f"[{'.'.join(keys[:depth])}] " if depth else ""
            raise UsageError(
                f"config file {path}: {where}{key} = {node!r} must be a table, not a {type(node).__name__}.",
                f"Write the thresholds as a table: [{'.'.join(keys[:depth + 1])}] then e.g. min_utilization = 0.5; see docs/ci.md.",
            )
    return node


def _name(keys: tuple[str, ...]) -> str:
    return f"[{'.'.join(keys)}]"


def read_config_file(path: Path) -> ConfigTable:
    """The ``[check]`` table of an explicit ``--config`` file (``[tool.vqdoctor.check]`` of a
    pyproject.toml is accepted too)."""
    doc = read_toml(path)
    for keys in (CONFIG_TABLE, PYPROJECT_TABLE):
        if keys[0] in doc:
            found = _table(doc, keys, path=path)
            if found is not None:
                return ConfigTable(path, _name(keys), found)
    raise UsageError(
        f"config file {path} has no [check] table.",
        "Put the thresholds under [check], e.g. [check] then min_utilization = 0.5; see docs/ci.md.",
    )


def find_pyproject_config(start: Path) -> ConfigTable | None:
    """The ``[tool.vqdoctor.check]`` table of the nearest pyproject.toml that has one, searching
    ``start`` and its parents; None when there is none."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / PYPROJECT
        if candidate.is_file():
            found = _table(read_toml(candidate), PYPROJECT_TABLE, path=candidate)
            if found is not None:
                return ConfigTable(candidate, _name(PYPROJECT_TABLE), found)
    return None


def load_check_config(explicit: Path | None, *, start: Path) -> ConfigTable | None:
    """``explicit`` (``--config``) when given, else the pyproject.toml discovered from ``start``."""
    if explicit is not None:
        return read_config_file(explicit)
    return find_pyproject_config(start)
