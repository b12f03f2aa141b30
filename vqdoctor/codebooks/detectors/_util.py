"""Small helpers shared by the detectors: key parsing, projection loading, metric inference.

Pure functions over a TensorStore; nothing here knows a particular library."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from vqdoctor.core.codebook import Linear
from vqdoctor.io.store import TensorStore

_NUM = re.compile(r"(\d+)")
_LEVEL = re.compile(r"^(?:(?P<stack>.*)\.)?(?:layers|quantizers)\.(?P<level>\d+)$")
_GROUP = re.compile(r"^(?:(?P<parent>.*)\.)?rvqs\.(?P<group>\d+)$")
# Path components that say "this is a quantizer". A generic detector needs one of them.
QUANTIZERISH = re.compile(r"(quant|codebook|(^|[._])r?vq($|[._\d])|vqvae|vqmodel|tokeniz)", re.IGNORECASE)


def natural_key(text: str) -> tuple[Any, ...]:
    """Numeric-aware sort key: "layers.10" sorts after "layers.9"."""
    return tuple(int(p) if p.isdigit() else p for p in _NUM.split(text))


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parent(key: str, suffix: str) -> str | None:
    """``parent("a.b._codebook.embed", "_codebook.embed") == "a.b"``; None if it does not end so."""
    if key == suffix:
        return ""
    if key.endswith("." + suffix):
        return key[: -len(suffix) - 1]
    return None


def split_level(module: str) -> tuple[str, int | None]:
    """``"q.vq.layers.3" -> ("q.vq", 3)``; a module not in a ``layers.N``/``quantizers.N`` list
    is its own stack at level None."""
    m = _LEVEL.match(module)
    if m is None:
        return module, None
    return m.group("stack") or "", int(m.group("level"))


def split_group(stack: str) -> tuple[str, int | None]:
    """``"q.rvqs.1" -> ("q", 1)`` (vector-quantize-pytorch GroupedResidualVQ)."""
    m = _GROUP.match(stack)
    if m is None:
        return stack, None
    return m.group("parent") or "", int(m.group("group"))


def keys_ending(state: TensorStore, suffix: str, claimed: set[str]) -> list[tuple[str, str]]:
    """(module prefix, key) for every unclaimed key ending with ``suffix``."""
    out = []
    for key in state:
        if key in claimed:
            continue
        p = parent(key, suffix)
        if p is not None:
            out.append((p, key))
    return out


def present(state: TensorStore, claimed: set[str], *keys: str) -> bool:
    return all(k in state and k not in claimed for k in keys)


def _conv_to_matrix(w: torch.Tensor) -> torch.Tensor:
    """Conv1d/Conv2d kernel-1 weights (out, in, 1[, 1]) -> (out, in)."""
    while w.dim() > 2 and w.shape[-1] == 1:
        w = w[..., 0]
    return w


def _kernel_one(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and all(s == 1 for s in shape[2:])


def load_linear(state: TensorStore, prefix: str, claimed: set[str]) -> Linear | None:
    """A Linear / kernel-1 Conv at ``prefix``: plain ``weight`` (+``bias``), weight-normed
    ``weight_g``/``weight_v`` or ``parametrizations.weight.original0/1`` (materialised as
    g * v / ||v|| per output channel, torch's weight_norm with dim=0). None if absent."""
    g_key, v_key = join(prefix, "weight_g"), join(prefix, "weight_v")
    p0, p1 = join(prefix, "parametrizations.weight.original0"), join(prefix, "parametrizations.weight.original1")
    w_key = join(prefix, "weight")
    b_key = join(prefix, "bias")
    keys: tuple[str, ...]
    if present(state, claimed, g_key, v_key) or present(state, claimed, p0, p1):
        g_key, v_key = (g_key, v_key) if g_key in state else (p0, p1)
        if not _kernel_one(state.shape(v_key)):
            return None
        g = state.float32(g_key)  # (out, 1[, 1])
        v = state.float32(v_key)  # (out, in[, 1])
        norm = v.flatten(1).norm(dim=1).clamp_min(1e-12)  # (out,)
        weight = _conv_to_matrix(v) * (g.flatten() / norm)[:, None]
        keys = (g_key, v_key)
    elif present(state, claimed, w_key) and _kernel_one(state.shape(w_key)):
        weight = _conv_to_matrix(state.float32(w_key))
        keys = (w_key,)
    else:
        return None
    bias = None
    if present(state, claimed, b_key) and state.shape(b_key) == (weight.shape[0],):
        bias = state.float32(b_key)
        keys = keys + (b_key,)
    return Linear(weight=weight.contiguous(), bias=bias, keys=keys)


def linear_keys(lin: Linear | None) -> tuple[str, ...]:
    return () if lin is None else lin.keys


def flag(state: TensorStore, key: str | None) -> bool | None:
    """A 0-d/1-element initialised flag as a bool (None when absent)."""
    if key is None or key not in state:
        return None
    t = state[key]
    return bool(t.reshape(-1)[0].item()) if t.numel() else None


def is_zero(codes: torch.Tensor) -> bool:
    return not bool(codes.abs().gt(0).any())


def unit_norm(codes: torch.Tensor, *, tol: float = 1e-3) -> bool:
    """Every row has norm 1 (within tol): the table is stored l2-normalised."""
    if codes.numel() == 0 or is_zero(codes):
        return False
    return bool(((codes.norm(dim=1) - 1).abs() < tol).all())


def config_values(config: Mapping[str, Any] | None, name: str) -> list[Any]:
    """Every value stored under ``name`` anywhere in a nested config (HF configs nest vq_config)."""
    found: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k == name:
                    found.append(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config or {})
    return found


def config_mentions(config: Mapping[str, Any] | None, needles: Iterable[str]) -> bool:
    """Whether model_type / architectures name one of ``needles`` (compared without ``_``)."""
    values = config_values(config, "model_type") + config_values(config, "architectures")
    flat = [str(x).lower().replace("_", "") for v in values for x in (v if isinstance(v, list) else [v])]
    return any(n in f for n in needles for f in flat)
