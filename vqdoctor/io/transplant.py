"""Copy parts of a pretrained model (its encoder, optionally its decoder) into a checkpoint.

The paper's fix for tokens collapse is a *model*: the encoder pretrained without VQ, and a
codebook fitted by k-means on that encoder's outputs. ``fix kmeans --encoder-from PRETRAINED``
therefore writes the pretrained encoder's tensors into the output next to the new codebook.

Matching is by key. Both checkpoints are loaded the usual way (nestings such as ``state_dict`` or
``ema`` unwrapped, prefixes ``module.``/``_orig_mod.``/``model.`` stripped when every key has
them: :mod:`vqdoctor.io.checkpoints`); then a *part* named ``encoder`` is every key of the form
``P encoder.REST`` where ``P`` is made of those same prefixes (``model.encoder.0.weight`` in a
Lightning checkpoint that also holds ``loss.*`` keys matches ``encoder.0.weight`` of a plain
autoencoder). The two sides must hold the same ``REST`` keys with the same shapes, else nothing
is copied and :class:`~vqdoctor.errors.UsageError` lists the keys that differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch

from vqdoctor.errors import UsageError
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.checkpoints import STRIPPED_PREFIXES
from vqdoctor.io.encoders import ARCH_KEY
from vqdoctor.io.store import TensorStore

_SHOWN = 5


@dataclass(frozen=True)
class Copied:
    """One tensor of the output that came from the pretrained checkpoint."""

    key: str  # state key in the output
    source_key: str  # state key in the pretrained checkpoint
    part: str  # "encoder", "decoder", ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Transplant:
    source: str  # path of the pretrained checkpoint
    copied: tuple[Copied, ...]
    tensors: dict[str, torch.Tensor]  # output state key -> tensor (CPU, the target key's dtype)

    def notes(self) -> list[str]:
        by_part: dict[str, list[Copied]] = {}
        for c in self.copied:
            by_part.setdefault(c.part, []).append(c)
        out = []
        for part, items in by_part.items():
            keys = [c.key for c in items]
            out.append(f"Copied the {part} from {self.source}: {len(keys)} tensors "
                       f"({_names(keys, len(keys))}).")
        return out


def part_keys(keys: Iterable[str], part: str) -> tuple[str, dict[str, str]]:
    """``(prefix, {rest: key})`` of the keys ``prefix + part + "." + rest``, the prefix made of
    the checkpoint loader's stripped prefixes. Several prefixes holding the part: the one
    holding most keys."""
    found: dict[str, dict[str, str]] = {}
    head = part + "."
    for key in keys:
        pre = ""
        while not key[len(pre):].startswith(head):
            step = next((p for p in STRIPPED_PREFIXES if key[len(pre):].startswith(p)), None)
            if step is None:
                break
            pre += step
        if key[len(pre):].startswith(head):
            found.setdefault(pre, {})[key[len(pre) + len(head):]] = key
    if not found:
        return "", {}
    pre = max(found, key=lambda p: (len(found[p]), -len(p)))
    return pre, found[pre]


def plan_transplant(target: Checkpoint, source: Checkpoint, *, parts: Sequence[str]) -> Transplant:
    """The tensors of ``parts`` of ``source`` under ``target``'s keys (see the module docstring).
    Refuses (UsageError) when a part is missing on either side or its keys or shapes differ."""
    copied: list[Copied] = []
    tensors: dict[str, torch.Tensor] = {}
    for part in parts:
        t_pre, t_keys = part_keys(target.state, part)
        s_pre, s_keys = part_keys(source.state, part)
        if not t_keys or not s_keys:
            where = target.path if not t_keys else source.path
            other = source if not t_keys else target
            raise UsageError(
                f"No {part!r} tensors in {where} (looked for keys '{part}.*', after the prefixes "
                f"{', '.join(STRIPPED_PREFIXES)}); {other.path} has {len(part_keys(other.state, part)[1])}.",
                f"Name the module with --{'decoder' if part == 'decoder' else 'encoder'}-prefix "
                f"(keys start with it, e.g. {_names(sorted(where_keys(target if not t_keys else source)), 3)}).",
            )
        missing = sorted(set(t_keys) - set(s_keys))
        extra = sorted(set(s_keys) - set(t_keys))
        shapes = sorted(r for r in set(t_keys) & set(s_keys)
                        if tuple(target.state.shape(t_keys[r])) != tuple(source.state.shape(s_keys[r])))
        if missing or extra or shapes:
            lines = []
            if missing:
                lines.append(f"only in {target.path}: {_names([t_pre + part + '.' + r for r in missing], len(missing))}")
            if extra:
                lines.append(f"only in {source.path}: {_names([s_pre + part + '.' + r for r in extra], len(extra))}")
            if shapes:
                shown = [f"{t_pre}{part}.{r} {tuple(target.state.shape(t_keys[r]))} vs "
                         f"{tuple(source.state.shape(s_keys[r]))}" for r in shapes]
                lines.append(f"different shapes: {_names(shown, len(shown), quote=False)}")
            raise UsageError(
                f"The {part} of {source.path} does not match the {part} of {target.path}, so it cannot be "
                f"copied in: " + "; ".join(lines) + ".",
                "--encoder-from needs a pretrained model with the same encoder architecture (same keys and "
                "shapes); name the module with --encoder-prefix/--decoder-prefix if it is called differently.",
            )
        for rest in sorted(t_keys):
            key = t_keys[rest]
            value = source.state[s_keys[rest]].detach().to("cpu")
            dtype = target.state.dtype(key)
            tensors[key] = value.to(dtype) if value.dtype != dtype else value
            copied.append(Copied(key=key, source_key=s_keys[rest], part=part, shape=tuple(value.shape)))
    return Transplant(source=str(source.path), copied=tuple(copied), tensors=tensors)


def where_keys(ckpt: Checkpoint) -> list[str]:
    """The distinct first components of a checkpoint's keys (module names), for hints."""
    return sorted({k.split(".", 1)[0] for k in ckpt.state})


def staged(target: Checkpoint, tensors: dict[str, torch.Tensor], *, arch_from: Checkpoint | None = None) -> Checkpoint:
    """``target`` with ``tensors`` in place of its own (the file is not touched): the model as it
    will be written, for encoding before writing. ``arch_from`` lends its encoder description
    (``vqdoctor.arch`` metadata) when ``target`` has none."""
    store = target.state
    shapes = {k: store.shape(k) for k in store}  # copied tensors have the target's shapes (checked)
    dtypes = {k: store.dtype(k) for k in store}

    def load(key: str) -> torch.Tensor:
        return tensors[key] if key in tensors else store[key]

    return with_arch(replace(target, state=TensorStore(shapes, dtypes, load)), arch_from)


def with_arch(ckpt: Checkpoint, arch_from: Checkpoint | None) -> Checkpoint:
    """``ckpt`` with ``arch_from``'s encoder description when it has none of its own (tensors
    stay ``ckpt``'s: the encoder that runs is the one in ``ckpt``)."""
    if arch_from is None or ARCH_KEY in ckpt.metadata or ARCH_KEY not in arch_from.metadata:
        return ckpt
    return replace(ckpt, metadata={**ckpt.metadata, ARCH_KEY: arch_from.metadata[ARCH_KEY]})


def _names(keys: Sequence[str], total: int, *, quote: bool = True) -> str:
    shown = ", ".join(repr(k) if quote else k for k in keys[:_SHOWN])
    return shown + (f" (+{total - _SHOWN} more)" if total > _SHOWN else "")
