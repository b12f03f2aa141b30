"""Convert a codebook to SimVQ: codes = C W^T (+ b) with C frozen and W one linear layer.

Modes:
- ``exact``: C = the old codebook, W = I (b = 0): the effective codebook is the old one, so every
  nearest-code assignment is unchanged (euclidean lookups; a cosine codebook becomes euclidean in
  SimVQ and the note says so). Training then moves the whole codebook through W.
- ``paper``: C ~ N(0, 1/d_c) frozen (both reference implementations' init, seeded), and W (plus b in
  the official layout) fitted by least squares so that C W^T + b ~ the old codebook. K random rows
  cannot be mapped onto K given codes by one d x d_c map, so this is a fresh start at the old
  codebook's scale and orientation; the relative fit residual is reported.

Layouts (keys written under the quantizer's module prefix P, the module that held the table):
- ``vqp`` (vector-quantize-pytorch ``SimVQ``/``ResidualSimVQ`` layers): ``P.frozen_codebook`` (K, d)
  buffer and ``P.code_transform.weight`` (d, d) nn.Linear without bias. Load with
  ``SimVQ(dim=d, codebook_size=K)`` (a ResidualVQ's ``layers.N`` become ResidualSimVQ's
  ``layers.N``) and ``load_state_dict(strict=True)``.
- ``official`` (youngsheen/SimVQ ``taming/modules/vqvae/quantize.py`` ``SimVQ``):
  ``P.embedding.weight`` (K, d) frozen and ``P.embedding_proj.weight`` (d, d) / ``.bias`` (d,).
The old table and its EMA buffers (``P._codebook.*`` for EMA codebooks) are removed. Projections
around the table (``project_in``/``out``, DAC's ``in_proj``/``out_proj``) are kept as they are: the
model that loads the result must keep applying them around the SimVQ module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from vqdoctor.core.codebook import Codebook
from vqdoctor.errors import UsageError
from vqdoctor.fixes._separate import min_separation, too_close
from vqdoctor.fixes._state import FixResult

Mode = Literal["exact", "paper"]
Layout = Literal["vqp", "official"]
_TABLE_MODULES = ("_codebook", "codebook", "embedding", "embed", "embeddings")


def quantizer_prefix(cb: Codebook) -> tuple[str, str | None]:
    """(module prefix P of the quantizer, the table's own sub-module or None)."""
    key = cb.keys.get("codes") or cb.keys.get("embed_sum") or cb.keys.get("embed_avg")
    if key is None:
        raise UsageError(f"codebook {cb.name!r} has no stored table to convert")
    module = key.rsplit(".", 1)[0] if "." in key else ""
    last = module.rsplit(".", 1)[-1] if module else ""
    if last in _TABLE_MODULES:
        return (module.rsplit(".", 1)[0] if "." in module else ""), module
    return module, None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def to_simvq(
    state: Mapping[str, torch.Tensor],
    codebook: Codebook,
    *,
    mode: Mode = "exact",
    layout: Layout = "vqp",
    seed: int = 0,
) -> FixResult:
    """Rewrite ``codebook`` as SimVQ in ``layout`` (see the module docstring)."""
    if mode not in ("exact", "paper"):
        raise UsageError(f"unknown --mode {mode!r}; expected 'exact' or 'paper'")
    if layout not in ("vqp", "official"):
        raise UsageError(f"unknown --layout {layout!r}; expected 'vqp' or 'official'")
    if codebook.kind == "simvq":
        raise UsageError(f"codebook {codebook.name!r} is already SimVQ (codes = C W^T); nothing to convert")
    if not codebook.assignable:
        raise UsageError(f"codebook {codebook.name!r} is not a nearest-code lookup ({codebook.note or codebook.kind})")
    if codebook.heads > 1:
        raise UsageError(
            f"codebook {codebook.name!r} is one of {codebook.heads} heads sharing a table tensor; "
            "SimVQ modules hold one (K, d) table",
            "Convert single-table quantizers (or each level of a residual stack) only.",
        )
    prefix, table_module = quantizer_prefix(codebook)
    old = codebook.codes.to(torch.float32)  # (K, d)
    k, d = old.shape
    notes: list[str] = []
    if mode == "exact":
        c, w, b = old.clone(), torch.eye(d), torch.zeros(d)
        notes.append(f"{codebook.name}: SimVQ exact: C = old codebook, W = I; assignments unchanged.")
        flag, _ = too_close(old, min_separation(old, old))
        if bool(flag.any()):
            notes.append(
                f"{codebook.name}: WARNING: {int(flag.sum())} of {k} codes duplicate another code (closer than "
                f"{min_separation(old, old):.3g}): C W^T maps equal rows of C to equal codes for every W, so "
                "training cannot separate them. Run `vqdoctor fix revive` first (or use --mode paper)."
            )
    else:
        gen = torch.Generator().manual_seed(int(seed))
        c = torch.randn(k, d, generator=gen) * d**-0.5
        with_bias = layout == "official"
        design = torch.cat([c, torch.ones(k, 1)], 1) if with_bias else c
        sol = torch.linalg.lstsq(design.double(), old.double()).solution.float()
        w = sol[:d].T.contiguous()
        b = sol[d] if with_bias else torch.zeros(d)
        eff = c @ w.T + b
        rel = float(((eff - old) ** 2).sum() / ((old - old.mean(0)) ** 2).sum().clamp_min(1e-30))
        notes.append(
            f"{codebook.name}: SimVQ paper: C ~ N(0, 1/{d}) (seed {seed}) frozen, W fitted by least squares; "
            f"relative residual ||C W^T + b - old||^2 / ||old - mean||^2 = {rel:.3g} "
            "(a fresh start at the old codebook's scale, not the same codes)."
        )
    if codebook.metric == "cosine":
        notes.append(f"{codebook.name}: the old lookup was cosine; SimVQ compares euclidean distances.")
    if codebook.in_proj is not None or codebook.out_proj is not None:
        notes.append(f"{codebook.name}: in/out projections kept as they are; keep applying them around SimVQ.")

    dtype = _table_dtype(state, codebook)
    if layout == "vqp":
        new = {_join(prefix, "frozen_codebook"): c, _join(prefix, "code_transform.weight"): w}
        how = f"SimVQ(dim={d}, codebook_size={k}) (vector_quantize_pytorch), load_state_dict(strict=True)"
    else:
        new = {
            _join(prefix, "embedding.weight"): c,
            _join(prefix, "embedding_proj.weight"): w,
            _join(prefix, "embedding_proj.bias"): b,
        }
        how = f"the SimVQ paper's quantizer (n_e={k}, e_dim={d}: embedding frozen, embedding_proj Linear({d}, {d}))"
    notes.append(f"{codebook.name}: load with {how}, under prefix {prefix or '(top level)'!r}.")
    updates = {key: _cast_like(state, key, value, dtype) for key, value in new.items()}
    remove = set(codebook.keys.values())
    if table_module is not None and table_module.rsplit(".", 1)[-1] in ("_codebook", "codebook") and "embedding" not in table_module:
        remove |= {key for key in state if key.startswith(table_module + ".")}
    remove -= set(updates)
    return FixResult(updates=updates, remove=remove, notes=notes)


def _table_dtype(state: Mapping[str, torch.Tensor], cb: Codebook) -> torch.dtype:
    key = cb.keys.get("codes") or cb.keys.get("embed_sum")
    t = state[key] if key is not None and key in state else None
    return t.dtype if t is not None and t.is_floating_point() else torch.float32


def _cast_like(state: Mapping[str, torch.Tensor], key: str, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """New tensors take the old table's dtype (an existing key keeps its own)."""
    if key in state and state[key].is_floating_point():
        dtype = state[key].dtype
    return value.detach().to("cpu", dtype).contiguous()
