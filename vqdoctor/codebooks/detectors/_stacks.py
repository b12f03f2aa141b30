"""Grouping found codebooks into stacks (one per quantizer module), shared by the detectors."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from vqdoctor.codebooks.detectors._util import join, linear_keys, load_linear, natural_key, split_group
from vqdoctor.codebooks.detectors.base import Detection
from vqdoctor.core.codebook import Codebook, Stack
from vqdoctor.io.store import TensorStore


@dataclass
class Level:
    """One codebook found under a stack prefix (level None: the module is not in a list)."""

    stack: str
    level: int | None
    codebook: Codebook
    keys: set[str] = field(default_factory=set)


def collect(
    state: TensorStore,
    claimed: set[str],
    levels: Iterable[Level],
    *,
    layout: str,
    proj_owner: dict[str, str] | None = None,
    proj_names: tuple[str, str] = ("project_in", "project_out"),
    groups: bool = False,
) -> Detection:
    """Stacks from the levels: one per stack prefix, codebooks in (level, head) order, the
    stack's own projections loaded from ``proj_owner[stack]`` (default: the stack prefix).
    With ``groups``, ``rvqs.G`` stacks of one parent split the channels in group order."""
    det = Detection()
    by_stack: dict[str, list[Level]] = defaultdict(list)
    for lv in levels:
        by_stack[lv.stack].append(lv)
        det.claimed |= lv.keys
    stacks: list[Stack] = []
    for prefix in sorted(by_stack, key=natural_key):
        items = sorted(by_stack[prefix], key=lambda lv: (lv.level or 0, lv.codebook.head))
        residual = any(lv.level is not None for lv in items)
        owner = (proj_owner or {}).get(prefix, prefix)
        p_in = load_linear(state, join(owner, proj_names[0]), claimed | det.claimed)
        p_out = load_linear(state, join(owner, proj_names[1]), claimed | det.claimed)
        det.claimed |= set(linear_keys(p_in)) | set(linear_keys(p_out))
        stacks.append(
            Stack(
                name=owner or prefix or layout,
                layout=layout,
                codebooks=tuple(replace(lv.codebook, level=lv.level or 0) for lv in items),
                residual=residual,
                project_in=p_in,
                project_out=p_out,
            )
        )
    det.stacks = _split_channels(stacks) if groups else stacks
    return det


def _split_channels(stacks: list[Stack]) -> list[Stack]:
    """GroupedResidualVQ: group G of a parent reads channels [sum of earlier widths, + its width)."""
    out: list[Stack] = []
    offsets: dict[str, int] = defaultdict(int)
    for st in stacks:  # already in natural order, so rvqs.0 before rvqs.1
        parent, group = split_group(st.name)
        width = st.input_dim
        if group is None or width is None:
            out.append(st)
            continue
        start = offsets[parent]
        offsets[parent] = start + width
        out.append(replace(st, channels=(start, start + width), group=group))
    return out
