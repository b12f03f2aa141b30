"""Read the ``--baseline`` of ``vqdoctor check``: a ``vqdoctor.report/1`` document (``inspect --json``)
or a ``vqdoctor.check/1`` document (``check --json``, whose ``report`` is used)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vqdoctor.errors import InputFileError
from vqdoctor.report.check_result import CHECK_SCHEMA
from vqdoctor.report.json_out import load_report_dict, validate_report_dict


def load_baseline(path: Path) -> dict[str, Any]:
    """The report dict of a baseline file, validated against ``vqdoctor.report/1``."""
    path = Path(path)
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        head = None  # let load_report_dict name the problem
    if isinstance(head, dict) and head.get("schema") == CHECK_SCHEMA:
        report = head.get("report")
        validate_report_dict(report, source=f"the report inside baseline {path}")
        return report  # type: ignore[return-value]
    if head is None and not path.exists():
        raise InputFileError(f"baseline {path} does not exist.",
                             f"Write it once on the accepted checkpoint: `vqdoctor check CKPT (data options) --write-baseline {path}` "
                             "(see docs/ci.md).")
    return load_report_dict(path)
