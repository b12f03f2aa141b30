"""The detector registry and codebook discovery.

Adding a library = one detector function (``vqdoctor/codebooks/detectors/``) listed in
:data:`DETECTORS` + one fixture test. Detectors run in the tuple's order, most specific first;
each sees the keys claimed by those before it and leaves them alone."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from vqdoctor.codebooks.detectors import dac, ema, free, moshi, normema, plain, product, simvq, videogpt
from vqdoctor.codebooks.detectors._metric import WARNINGS, from_codes
from vqdoctor.codebooks.detectors._util import natural_key
from vqdoctor.codebooks.detectors.base import Detector
from vqdoctor.core.codebook import Codebook, Discovery, Stack
from vqdoctor.errors import CodebookNotFoundError, UsageError
from vqdoctor.io.store import TensorStore
from vqdoctor.options import METRICS

DETECTORS: tuple[Detector, ...] = (
    # codebook-free first: their fixed tables (LFQ's sign codebook) must not look learned
    free.fsq,
    free.lfq,
    # a frozen table + a linear map
    simvq.vqp_simvq,
    simvq.official_simvq,
    simvq.vqgan_lc,
    # EMA tables with their bookkeeping buffers
    moshi.moshi,
    moshi.hf_mimi,
    ema.vector_quantize_pytorch,
    ema.encodec,
    ema.hf_encodec,
    normema.norm_ema,  # before taming-ema: the same embedding.{weight,cluster_size,embed_avg} plus initted
    videogpt.videogpt,  # VideoGPT / TATS / ESM3: embeddings with N and z_avg buffers
    # factorized and product quantizers
    dac.dac,
    product.wav2vec2,
    # plain tables, by their neighbours, then the generic fallback (needs a quantizer-ish path)
    plain.taming_ema,
    plain.taming_gumbel,
    plain.llamagen,
    plain.vqtorch,
    plain.embedding,
)

# Within one split quantizer the semantic stack comes first (Moshi's rvq_first, Mimi's semantic_...).
_FIRST = re.compile(r"(rvq_first|semantic)")


def _stack_order(stack: Stack) -> tuple[Any, ...]:
    return natural_key(_FIRST.sub(lambda m: "\x00" + m.group(1), stack.name))


def config_from_metadata(metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """The model config carried by a checkpoint: ``metadata["config"]`` (HF ``config.json`` or
    a safetensors metadata entry) as a dict; other JSON-object metadata values are merged in."""
    out: dict[str, Any] = {}
    for name, value in (metadata or {}).items():
        if not isinstance(value, str) or not value.lstrip().startswith("{"):
            continue
        try:
            parsed = json.loads(value)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            out.update(parsed) if name == "config" else out.setdefault(name, parsed)
    return out


def find_codebooks(state: TensorStore, *, config: Mapping[str, Any] | None = None) -> Discovery:
    """Every learned codebook in ``state`` (and every codebook-free quantizer), in a stable order:
    stacks by name (numeric-aware; semantic before acoustic), codebooks by level then head.
    ``config`` is the model config (see :func:`config_from_metadata`), for switches that are
    not visible in the weights."""
    claimed: set[str] = set()
    stacks: list[Stack] = []
    free_q = []
    notes: list[str] = []
    for det in DETECTORS:
        found = det(state, claimed, config=config or {})
        stacks += found.stacks
        free_q += found.codebook_free
        notes += found.notes
        claimed |= found.claimed
    stacks.sort(key=_stack_order)
    free_q.sort(key=lambda f: natural_key(f.name))
    return Discovery(stacks=tuple(stacks), codebook_free=tuple(free_q), notes=tuple(notes))


def _matches(cb: Codebook, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(x, pattern) for x in (cb.name, *cb.keys.values()))


def select(discovery: Discovery, pattern: str | None, *, state: TensorStore | None = None) -> Discovery:
    """The codebooks whose name or any key matches the glob ``pattern`` (all when None).
    Stacks keep only matching codebooks. When nothing discovered matches but ``state`` is given and
    the glob names 2-D tensors, those are taken as plain codebooks (``--codebook KEY`` overrides
    the search). Empty result -> CodebookNotFoundError listing the candidates."""
    if pattern is None:
        return discovery
    stacks = []
    for st in discovery.stacks:
        kept = tuple(cb for cb in st.codebooks if _matches(cb, pattern))
        if kept:
            stacks.append(replace(st, codebooks=kept))
    if not stacks and state is not None:
        stacks = [_explicit(state, key) for key in sorted(state, key=natural_key)
                  if fnmatch.fnmatchcase(key, pattern) and len(state.shape(key)) == 2
                  and state.dtype(key).is_floating_point]
    if not stacks:
        names = [cb.name for cb in discovery.codebooks]
        listed = ", ".join(names[:20]) + (f" (+{len(names) - 20} more)" if len(names) > 20 else "")
        raise CodebookNotFoundError(
            f"--codebook {pattern!r} matches no codebook name or key."
            + (f" Found: {listed}." if names else " No codebook was found in this checkpoint."),
            hint="Pass a glob that matches one of the names or keys above (run `vqdoctor ls CKPT`)." if names
            else "Pass --codebook KEY naming the 2-D codebook tensor (run `vqdoctor ls CKPT`).",
        )
    return replace(discovery, stacks=tuple(stacks))




def override_metric(discovery: Discovery, metric: str) -> Discovery:
    """``--metric``: every codebook compared by ``metric``; ``"auto"`` keeps what was detected.
    The detected metric and its evidence stay in ``metric_evidence``."""
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r} is not one of {', '.join(METRICS)}.",
                         "Use --metric auto to take the metric from the layout, config and codes (see `vqdoctor ls`).")
    if metric == "auto":
        return discovery
    stacks = tuple(replace(st, codebooks=tuple(_with_metric(cb, metric) for cb in st.codebooks)) for st in discovery.stacks)
    return replace(discovery, stacks=stacks)


def _with_metric(cb: Codebook, metric: str) -> Codebook:
    detected = f"{cb.metric}, {cb.metric_source}" + (f": {cb.metric_evidence}" if cb.metric_evidence else "")
    said = "agrees with the detected" if cb.metric == metric else "overrides the detected"
    note = cb.note
    for warning in WARNINGS:
        note = note.replace(warning, "").strip() if note else note
    return replace(cb, metric=metric, metric_source="flag",  # type: ignore[arg-type]
                   metric_evidence=f"--metric {metric} {said} {detected}", note=note or None)


def _explicit(state: TensorStore, key: str) -> Stack:
    codes = state.float32(key)
    call = from_codes(codes, dtype=state.dtype(key), warn=True)
    note = " ".join(n for n in ("Taken as a plain (K, d) codebook because --codebook named it.", call.warning) if n)
    cb = Codebook(name=key, layout="explicit", kind="plain", codes=codes, keys={"codes": key}, metric=call.metric,
                  metric_source=call.source, metric_evidence=call.evidence, note=note)
    return Stack(name=key, layout="explicit", codebooks=(cb,))


def no_codebook_error(state: TensorStore, discovery: Discovery | None = None, *, top: int = 5) -> CodebookNotFoundError:
    """The error for a command that needs a codebook where none was found: what was seen (the
    largest 2-D tensors, codebook-free quantizers) and how to name one with --codebook."""
    two_d = sorted((k for k in state if len(state.shape(k)) == 2),
                   key=lambda k: (-state.shape(k)[0] * state.shape(k)[1], natural_key(k)))[:top]
    seen = ", ".join(f"{k} {tuple(state.shape(k))}" for k in two_d) or "no 2-D tensors"
    message = f"No codebook found among {len(state)} tensors. Largest 2-D tensors: {seen}."
    if discovery is not None and discovery.codebook_free:
        kinds = ", ".join(f"{f.name} ({f.kind})" for f in discovery.codebook_free)
        message += f" Codebook-free quantizers (nothing learned to analyse): {kinds}."
    return CodebookNotFoundError(message, hint="If one of them is the codebook, pass --codebook KEY (a glob).")
