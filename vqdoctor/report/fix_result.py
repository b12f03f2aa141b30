"""The result of ``vqdoctor fix``: what changed per codebook (:class:`Change`), the whole outcome
(:class:`FixOutcome`, JSON schema ``vqdoctor.fix/1``) and its terminal rendering
(:func:`render_fix`: notes on stderr, the before/after table, copied tensors, the verdict)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vqdoctor.io.transplant import Copied
from vqdoctor.report.schema import CodebookReport, Report

FIX_SCHEMA = "vqdoctor.fix/1"


@dataclass(frozen=True)
class Change:
    """One codebook before and after a fix, as verified on the written file."""

    name: str
    size: int
    used_before: int
    used_after: int
    dead_after: int
    mse_before: float | None  # relative MSE (quantization MSE / variance of the vectors)
    mse_after: float | None
    worse: tuple[str, ...]  # reasons, empty when not worse

    def to_dict(self) -> dict[str, object]:
        return {"codebook": self.name, "size": self.size, "used_before": self.used_before,
                "used_after": self.used_after, "dead_after": self.dead_after,
                "relative_mse_before": self.mse_before, "relative_mse_after": self.mse_after,
                "worse": list(self.worse)}


@dataclass(frozen=True)
class FixOutcome:
    """What a fix did. ``path`` is where the output is (None: not written, because the verified
    after-state was worse and ``force`` was off); ``before``/``after`` are the reports (None
    without data), ``after`` measured on the written file; ``copied`` lists every tensor of the
    output that came from another checkpoint (``--encoder-from``)."""

    path: Path | None
    notes: list[str]
    before: Report | None
    after: Report | None
    copied: tuple[Copied, ...] = ()
    changes: tuple[Change, ...] = ()
    worse: bool = False  # some codebook is worse after the fix (repair.compare)
    target: Path | None = None  # where the output was (or would have been) written
    copied_from: str | None = None  # the --encoder-from checkpoint

    def to_dict(self) -> dict[str, object]:
        """The fix outcome for machines (``vqdoctor fix --json``), schema ``vqdoctor.fix/1``."""
        return {
            "schema": FIX_SCHEMA,
            "output": str(self.target) if self.target is not None else None,
            "written": self.path is not None,
            "worse": self.worse,
            "copied": [{"key": c.key, "source_key": c.source_key, "part": c.part, "shape": list(c.shape)}
                       for c in self.copied],
            "copied_from": self.copied_from,
            "codebooks": [c.to_dict() for c in self.changes],
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------ terminal


def _fmt(v: float | int | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _rows(report: Report | None) -> dict[str, CodebookReport]:
    return {} if report is None else {cb.name: cb for cb in report.codebooks}


def _tv(cb: CodebookReport) -> float | None:
    return None if cb.tokens_collapse is None else cb.tokens_collapse.allocation_tv


def _usage(attr: str) -> Callable[[CodebookReport], object]:
    return lambda r: None if r.usage is None else getattr(r.usage, attr)


def _pair(b: CodebookReport, a: CodebookReport | None, get: Callable[[CodebookReport], object], spec: str) -> str:
    return f"{_fmt(get(b), spec)} → {_fmt(get(a), spec) if a else '—'}"  # type: ignore[arg-type]


def fix_json(outcome: FixOutcome) -> str:
    """The ``vqdoctor.fix/1`` document (``vqdoctor fix --json``) as indented JSON text."""
    return json.dumps(outcome.to_dict(), indent=2) + "\n"


def render_fix(outcome: FixOutcome, console: Console, err: Console | None = None) -> None:
    """The notes (on ``err``, stderr by default), the before → after table, the tensors copied,
    and what was written (or why not) on ``console``."""
    err = err if err is not None else Console(stderr=True)
    for note in outcome.notes:
        err.print(f"• {note}", markup=False, highlight=False)
    before, after = _rows(outcome.before), _rows(outcome.after)
    if before:
        table = Table(title="Before → after (same data, same analysis as `inspect`; after = the written file as it runs)")
        for col in ("codebook", "utilization", "perplexity", "dead codes", "quant. MSE", "allocation TV"):
            table.add_column(col, justify="left" if col == "codebook" else "right")
        a_rows = list(after.values())
        for i, (name, b) in enumerate(before.items()):
            a = after.get(name) or (a_rows[i] if i < len(a_rows) else None)
            table.add_row(name, _pair(b, a, _usage("utilization"), ".3f"), _pair(b, a, _usage("perplexity"), ".1f"),
                          _pair(b, a, _usage("dead_codes"), "d"), _pair(b, a, _usage("quantization_mse"), ".4g"),
                          _pair(b, a, _tv, ".3f"))
        console.print(table)
    if outcome.copied:
        console.print(f"Tensors copied from {outcome.copied_from} ({len(outcome.copied)}):", markup=False, highlight=False)
        for c in outcome.copied:
            src = "" if c.source_key == c.key else f" (from {c.source_key})"
            console.print(f"  {c.part}: {c.key} {tuple(c.shape)}{src}", markup=False, highlight=False)
    if outcome.worse:
        console.print("WORSE after the fix: " + "; ".join(f"{c.name}: {', '.join(c.worse)}" for c in outcome.changes if c.worse),
                      markup=False, highlight=False)
    if outcome.path is None:
        console.print(f"Not written: {outcome.target} (pass --force to write a worse result)", markup=False, highlight=False)
    else:
        console.print(f"Wrote {outcome.path}", markup=False, highlight=False)
