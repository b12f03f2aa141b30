"""What ``vqdoctor ls`` shows: the codebooks a checkpoint holds (:func:`vqdoctor.api.list_codebooks`
finds them), as the ``vqdoctor.ls/1`` JSON document and as a terminal table. Both read the
:class:`~vqdoctor.core.codebook.Discovery` and compute nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vqdoctor.core.codebook import Codebook, Discovery, Linear, Stack
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.report.json_out import write_text

if TYPE_CHECKING:
    from rich.console import Console

LS_SCHEMA = "vqdoctor.ls/1"


def _position(st: Stack, cb: Codebook) -> str:
    parts = []
    if st.residual:
        parts.append(f"L{cb.level}")
    if cb.heads > 1:
        parts.append("shared x" + str(cb.heads) if cb.shared_heads else f"h{cb.head}/{cb.heads}")
    if st.channels is not None:
        parts.append(f"g{st.group} [{st.channels[0]}:{st.channels[1]})")
    return " ".join(parts) or "-"


def _shape(lin: Linear | None) -> str | None:
    return None if lin is None else f"{lin.in_dim}->{lin.out_dim}"


def _projections(st: Stack, cb: Codebook) -> str:
    parts = []
    for label, lin in (("in", st.project_in), ("out", st.project_out), ("in_proj", cb.in_proj), ("out_proj", cb.out_proj)):
        if lin is not None:
            parts.append(f"{label} {_shape(lin)}")
    if cb.w is not None:
        parts.append(f"W {tuple(cb.w.shape)}")
    return ", ".join(parts) or "-"


def _ema(cb: Codebook) -> str:
    if cb.ema is None:
        return "-"
    roles = ", ".join(cb.ema.keys) or "-"
    return roles + ("" if cb.ema.is_count else " (not counts)")


def _codebook_json(st: Stack, cb: Codebook) -> dict[str, Any]:
    return {
        "name": cb.name,
        "stack": st.name,
        "layout": cb.layout,
        "kind": cb.kind,
        "size": cb.size,
        "dim": cb.dim,
        "level": cb.level,
        "head": cb.head,
        "heads": cb.heads,
        "group": st.group if st.channels is not None else None,
        "channels": list(st.channels) if st.channels is not None else None,
        "residual": st.residual,
        "metric": cb.metric,
        "metric_source": cb.metric_source,
        "metric_evidence": cb.metric_evidence,
        "assignable": cb.assignable,
        "keys": dict(cb.keys),
        "ema": cb.ema is not None,
        "w": cb.w is not None,
        "projections": {k: _shape(v) for k, v in (("project_in", st.project_in), ("project_out", st.project_out),
                                                  ("in_proj", cb.in_proj), ("out_proj", cb.out_proj)) if v is not None},
        "note": cb.note,
    }


def ls_json(ckpt: Checkpoint, found: Discovery) -> dict[str, Any]:
    """The ``vqdoctor.ls/1`` document."""
    return {
        "schema": LS_SCHEMA,
        "checkpoint": {
            "path": str(ckpt.path),
            "format": ckpt.format,
            "nesting": list(ckpt.nesting),
            "tensors": len(ckpt.state),
            "fingerprint": ckpt.fingerprint or None,
        },
        "codebooks": [_codebook_json(st, cb) for st in found.stacks for cb in st.codebooks],
        "codebook_free": [{"name": f.name, "kind": f.kind, "keys": list(f.keys), "note": f.note} for f in found.codebook_free],
        "notes": list(found.notes),
    }


def metric_line(cb: Codebook) -> str:
    """``cosine (all 512 codes unit-norm ±1e-3)``; the source is named unless it is the codes."""
    source = "" if cb.metric_source == "detected" else f"{cb.metric_source}: "
    return f"{cb.metric} ({source}{cb.metric_evidence})" if cb.metric_evidence else f"{cb.metric} ({cb.metric_source})"


def render_ls(ckpt: Checkpoint, found: Discovery, console: Console) -> None:
    """The table of codebooks (one row per codebook), their metric evidence and notes, and the codebook-free quantizers."""
    from rich import box
    from rich.table import Table

    console.print(f"[bold]{ckpt.path}[/bold]  {ckpt.format}, {len(ckpt.state)} tensors, nesting: {ckpt.describe_nesting()}")
    if not found.stacks and not found.codebook_free:
        console.print("No codebook found.")
        return
    if found.stacks:
        layouts = sorted({cb.layout for cb in found.codebooks})
        table = Table(title=f"{len(found.codebooks)} codebook(s) in {len(found.stacks)} stack(s); layout: {', '.join(layouts)}",
                      caption="codes keys and projections in detail: --json -", box=box.SIMPLE_HEAD,
                      pad_edge=False, show_edge=False, padding=(0, 1), collapse_padding=True)
        rows = [[cb.name, cb.kind + ("" if cb.assignable else " (logits)"), f"{cb.size:,} x {cb.dim:,}", cb.metric,
                 _position(st, cb), _ema(cb), _projections(st, cb)] for st in found.stacks for cb in st.codebooks]
        for i, col in enumerate(("name", "kind", "K x d", "metric", "pos.", "EMA buffers", "proj. / W")):
            longest_word = max(len(w) for text in (col, *(row[i] for row in rows)) for w in text.split())
            table.add_column(col, min_width=min(30, longest_word), overflow="fold")  # words stay whole
        for row in rows:
            table.add_row(*row)
        console.print(table)
        for cb in found.codebooks:
            if cb.metric == "cosine" or cb.metric_source in ("flag", "config"):
                console.print(f"  [dim]{cb.name}: metric: {metric_line(cb)}[/dim]", highlight=False)
        for cb in found.codebooks:
            if cb.note:
                console.print(f"  [dim]{cb.name}: {cb.note}[/dim]")
    else:
        console.print("No learned codebook found.")
    if found.codebook_free:
        free = Table(title="Codebook-free quantizers (nothing learned to analyse)")
        for col in ("name", "kind", "note", "keys"):
            free.add_column(col, overflow="fold")
        for f in found.codebook_free:
            free.add_row(f.name, f.kind, f.note, ", ".join(f.keys))
        console.print(free)


def write_ls_json(ckpt: Checkpoint, found: Discovery, dest: str | Path) -> None:
    """The ``vqdoctor.ls/1`` document to ``dest`` (``"-"`` = stdout); file writes are atomic."""
    write_text(json.dumps(ls_json(ckpt, found), indent=2) + "\n", dest)
