"""Objects in memory as the things the file readers return: a state dict or an ``nn.Module`` as a
:class:`Checkpoint`, a tensor or an array as a latents / inputs source, labels as mode ids.

The same rules as for files apply: a state dict is unwrapped like a pickle (``state_dict`` /
``model`` / ``ema`` nestings, ``module.`` prefixes; see ``vqdoctor/io/checkpoints.py``), latents
with more than two axes need ``channel_axis``, NaN/Inf are refused. The checkpoint's fingerprint
is the sha256 of its keys, dtypes, shapes and bytes, so two equal state dicts share it."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch

from vqdoctor.errors import DataError, UsageError
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.checkpoints import _common_prefix, _select_container, _split_prefix, _walk
from vqdoctor.io.data import (
    InputSource,
    LatentSource,
    _normalise_labels,
    _NumpyRows,
    _Rows,
    _TorchRows,
    open_inputs,
    open_latents,
)
from vqdoctor.io.store import TensorStore

MEMORY_FORMAT = "memory"
PathLike = (str, os.PathLike)
ARRAY_TYPES = "a torch.Tensor, a numpy.ndarray or a path"


def is_path(obj: object) -> TypeGuard[str | os.PathLike[str]]:
    return isinstance(obj, PathLike)


def type_name(obj: object) -> str:
    t = type(obj)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def checkpoint_from_object(obj: Mapping[str, Any] | torch.nn.Module, *, nesting: str | None = None) -> Checkpoint:
    """A state dict (possibly nested, as ``torch.save`` would store it) or a module's
    ``state_dict()`` as a :class:`Checkpoint` with ``format="memory"``."""
    if isinstance(obj, torch.nn.Module):
        where = Path(f"<{type(obj).__name__} module>")
        obj = obj.state_dict()
    else:
        where = Path("<state dict>")
    container, notes, alternatives = _select_container(where, obj, nesting)
    tensors = {k: v.detach() for k, v in _walk(obj, container).items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    prefix = _common_prefix(list(tensors))
    shown = list(notes) + [f"strip prefix {p!r}" for p in _split_prefix(prefix)]
    if alternatives:
        shown.append(f"also found: {', '.join(alternatives)} (choose with nesting=NAME)")
    state = {k[len(prefix):]: v for k, v in tensors.items()}
    return Checkpoint(
        path=where, format=MEMORY_FORMAT, state=TensorStore.from_dict(state), nesting=tuple(shown),
        fingerprint=state_fingerprint(state), key_map={k[len(prefix):]: k for k in tensors},
        container=container, prefix=prefix, alternatives=alternatives,
    )


def state_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the sorted keys with each tensor's dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _rows(obj: object, what: str) -> _Rows:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.is_complex() or t.dtype == torch.bool:
            raise DataError(f"The {what} tensor has dtype {t.dtype}; expected real numbers.")
        return _TorchRows(t.to("cpu"))
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "fiu":
            raise DataError(f"The {what} array has dtype {obj.dtype}; expected real numbers.",
                            "Pass a float (or integer) array.")
        return _NumpyRows(obj)
    raise UsageError(f"{what} must be {ARRAY_TYPES}; got {type_name(obj)}.",
                     "Convert it with torch.as_tensor(...) or numpy.asarray(...).")


def labels_from_object(obj: object, *, n: int, what: str) -> tuple[np.ndarray, list[str] | None]:
    """Labels given as a tensor, an array or a list: ``(ids (n,) int64, names or None)``."""
    if isinstance(obj, torch.Tensor):
        values = obj.detach().cpu().numpy()
    elif isinstance(obj, (np.ndarray, list, tuple)):
        values = np.asarray(obj)
    else:
        raise UsageError(f"labels must be {ARRAY_TYPES} (or a list); got {type_name(obj)}.",
                         "Pass one integer or string label per sample.")
    ids, names = _normalise_labels(Path("<labels>"), values)
    if len(ids) != n:
        raise DataError(f"The labels have {len(ids)} entries but the {what} have {n} samples.",
                        "Give exactly one label per sample, in the same order.")
    return ids, names


def latents_source(obj: object, *, channel_axis: int | None, labels: object = None) -> LatentSource:
    """Latents from a path (read like ``--latents``) or a tensor / array in memory."""
    label_path = Path(labels) if is_path(labels) else None
    if is_path(obj):
        src = open_latents(Path(obj), channel_axis=channel_axis, labels=label_path)
    else:
        rows = _rows(obj, "latents")
        shape = rows.shape
        where = Path(f"<latents {type(obj).__name__} {tuple(shape)}>")
        if len(shape) < 2:
            raise DataError(f"The latents have shape {tuple(shape)}; expected (N, d), (B, d, H, W) or (B, T, d).")
        if math.prod(shape) == 0:
            raise DataError(f"The latents are empty (shape {tuple(shape)}).")
        axis: int | None = None
        if len(shape) > 2:
            if channel_axis is None:
                raise UsageError(f"The latents have shape {tuple(shape)}; with more than two axes vqdoctor needs to "
                                 "know which axis holds the channels.",
                                 "Pass channel_axis=1 for (B, d, H, W) / (B, d, T), or channel_axis=-1 for (B, T, d).")
            axis = channel_axis + len(shape) if channel_axis < 0 else channel_axis
            if not 1 <= axis < len(shape):
                raise UsageError(f"channel_axis={channel_axis} does not fit latents of shape {tuple(shape)}.",
                                 f"Use an axis from 1 to {len(shape) - 1} (or -1); axis 0 is the batch.")
        elif channel_axis not in (None, 1, -1):
            raise UsageError(f"channel_axis={channel_axis} does not fit latents of shape {tuple(shape)}.",
                             "For (N, d) the channels are axis 1 (or leave it out).")
        src = LatentSource(where, rows, channel_axis=axis, labels=None, label_names=None)
    if labels is not None and label_path is None:
        src.labels, src.label_names = labels_from_object(labels, n=src.n_samples, what="latents")
    return src


def inputs_source(obj: object, *, labels: object = None, image_size: int | None = None,
                  clip_seconds: float | None = None, sample_rate: int | None = None) -> InputSource:
    """Raw inputs from a path (read like ``--inputs``) or a tensor / array in memory."""
    label_path = Path(labels) if is_path(labels) else None
    if is_path(obj):
        src = open_inputs(Path(obj), labels=label_path, image_size=image_size, clip_seconds=clip_seconds,
                          sample_rate=sample_rate)
    else:
        rows = _rows(obj, "inputs")
        if len(rows.shape) < 1 or math.prod(rows.shape) == 0:
            raise DataError(f"The inputs are empty (shape {tuple(rows.shape)}).")
        src = InputSource(Path(f"<inputs {type(obj).__name__} {tuple(rows.shape)}>"), rows, labels=None, label_names=None)
    if labels is not None and label_path is None:
        src.labels, src.label_names = labels_from_object(labels, n=src.n, what="inputs")
    return src
