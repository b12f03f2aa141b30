"""The Python API over objects in memory: the engine the CLI runs, without writing files first.

::

    import vqdoctor
    report = vqdoctor.inspect(model, latents=z)            # nn.Module, z: (N, d) tensor
    report = vqdoctor.inspect(model.state_dict(), inputs=x, encoder=model.encode, labels=y)
    report = vqdoctor.inspect("run/step_1000.ckpt", latents="z.npy")   # paths, as the CLI
    report.to_dict()                                        # == `vqdoctor inspect --json` output
    vqdoctor.find_codebooks(model)                          # what would be analysed
    model.load_state_dict(vqdoctor.fix(model, ReviveFix(), latents=z))  # a state dict in, one out

Everything given as a path is read exactly as the CLI reads it, so for the same files the report
is the CLI's (``report.to_dict()`` equals ``vqdoctor inspect --json``). Objects in memory go
through the same streaming, assignment and report code; only the descriptions of where they came
from differ (``<state dict>``, ``<latents Tensor (N, d)>``).
"""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from vqdoctor import api
from vqdoctor.core.codebook import Discovery
from vqdoctor.diagnose import diagnose
from vqdoctor.errors import UsageError
from vqdoctor.fixes import Fix, FixResult
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.encoders import Encoder
from vqdoctor.io.memory import checkpoint_from_object, inputs_source, is_path, latents_source, type_name
from vqdoctor.io.stream import VectorStream
from vqdoctor.options import AnalysisOptions, DataOptions
from vqdoctor.report.schema import Report

ModelLike = Union[str, "os.PathLike[str]", Checkpoint, Mapping[str, Any], torch.nn.Module]
ArrayLike = Union[str, "os.PathLike[str]", torch.Tensor, np.ndarray]
MODEL_TYPES = "a path (str or pathlib.Path), a state dict (Mapping[str, Tensor]), a torch.nn.Module or a vqdoctor Checkpoint"


def as_checkpoint(obj: ModelLike, *, data: DataOptions = DataOptions(), what: str = "vqdoctor.inspect") -> Checkpoint:
    """A path, a Checkpoint, a state dict or a module, as a :class:`Checkpoint`."""
    if isinstance(obj, Checkpoint):
        return obj
    if is_path(obj):
        return api.load(Path(obj), allow_globals=data.allow_globals, nesting=data.nesting)
    if isinstance(obj, (Mapping, torch.nn.Module)):
        return checkpoint_from_object(obj, nesting=data.nesting)
    raise UsageError(f"{what} got {type_name(obj)}; it takes {MODEL_TYPES}.",
                     "Pass model.state_dict(), the model itself, or the checkpoint's path.")


def find_codebooks(obj: ModelLike, *, codebook: str | None = None, nesting: str | None = None) -> Discovery:
    """Every codebook vqdoctor finds in a module, a state dict, a checkpoint or a path (the
    ``vqdoctor ls`` view); ``codebook`` filters by a glob over names and keys. An empty result
    is not an error here."""
    ckpt = as_checkpoint(obj, data=DataOptions(nesting=nesting), what="vqdoctor.find_codebooks")
    return api.discover(ckpt, pattern=codebook, require=codebook is not None)


def _encoder(fn: object, channel_axis: int | None) -> Encoder:
    if isinstance(fn, Encoder):
        return fn
    if not callable(fn):
        raise UsageError(f"encoder must be a callable (a module or a function from an input batch to latents); "
                         f"got {type_name(fn)}.", "Pass e.g. encoder=model.encode.")
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return Encoder(description=f"the encoder {name} (in memory)", fn=fn,  # type: ignore[arg-type]
                   channel_axis=1 if channel_axis is None else channel_axis)


def _check_array(obj: object, what: str) -> None:
    if obj is not None and not (is_path(obj) or isinstance(obj, (torch.Tensor, np.ndarray))):
        raise UsageError(f"{what} must be a torch.Tensor, a numpy.ndarray or a path; got {type_name(obj)}.",
                         "Convert it with torch.as_tensor(...) or numpy.asarray(...).")


def inspect(
    checkpoint: ModelLike,
    *,
    latents: ArrayLike | None = None,
    labels: ArrayLike | list[Any] | None = None,
    inputs: ArrayLike | None = None,
    encoder: Callable[[torch.Tensor], torch.Tensor] | str | os.PathLike[str] | None = None,
    channel_axis: int | None = None,
    data: DataOptions = DataOptions(),
    analysis: AnalysisOptions = AnalysisOptions(),
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Diagnose every codebook of ``checkpoint`` over the given data: the report of ``vqdoctor
    inspect``.

    ``checkpoint``: a path, a state dict, an ``nn.Module`` (its ``state_dict()``) or a Checkpoint.
    ``latents``: the vectors that reach the quantizer, (N, d) or (B, d, H, W) / (B, T, d) with
    ``channel_axis``; or ``inputs`` (raw data, (N, ...)) with ``encoder`` (a callable from an input
    batch to latents, or the path of a TorchScript / torch.export file); ``labels``: one mode id
    per sample. Each may be a tensor, an array or a path. ``data`` holds the other data options
    (batch size, device, ...) and may name the files instead. Without data the analysis is
    data-free (EMA buffers and geometry)."""
    data, latents, inputs, labels, encoder = _data_arguments(data, latents=latents, inputs=inputs, labels=labels,
                                                             encoder=encoder, channel_axis=channel_axis)
    ckpt = as_checkpoint(checkpoint, data=data)
    if latents is None and inputs is None and encoder is None and labels is None:
        return api.inspect(ckpt, data=data, analysis=analysis, progress=progress)
    session = api.open_session(ckpt, data=data, analysis=analysis)
    stream = _stream(session, data, latents=latents, labels=labels, inputs=inputs, encoder=encoder)
    return diagnose(checkpoint=session.info, discovery=session.found, stream=stream, options=analysis,
                    device=session.device, progress=progress)


def _data_arguments(data: DataOptions, *, latents: object, inputs: object, labels: object, encoder: object,
                    channel_axis: int | None) -> tuple[DataOptions, Any, Any, Any, Any]:
    """Check the data arguments; paths go into the options, so that they are read exactly as
    the CLI reads them. Returns the options and what stays in memory."""
    for value, what in ((latents, "latents"), (inputs, "inputs")):
        _check_array(value, what)
    if latents is not None and (inputs is not None or encoder is not None):
        raise UsageError("Give either latents (the vectors that reach the quantizer) or inputs with an encoder, not both.")
    if encoder is not None and inputs is None and data.inputs is None:
        raise UsageError("An encoder needs raw data: pass inputs=...")
    named = [n for n, v in (("latents", latents), ("inputs", inputs), ("labels", labels)) if v is not None and getattr(data, n) is not None]
    if named:
        raise UsageError(f"{', '.join(named)} given both as an argument and in data=DataOptions(...).", "Give each once.")
    if channel_axis is not None:
        data = replace(data, channel_axis=channel_axis)
    if is_path(latents):
        data, latents = replace(data, latents=Path(latents)), None  # type: ignore[arg-type]
    if is_path(inputs):
        data, inputs = replace(data, inputs=Path(inputs)), None  # type: ignore[arg-type]
    if is_path(labels):
        data, labels = replace(data, labels=Path(labels)), None  # type: ignore[arg-type]
    if is_path(encoder):
        data, encoder = replace(data, encoder=Path(encoder)), None  # type: ignore[arg-type]
    return data, latents, inputs, labels, encoder


def _stream(session: api.Session, data: DataOptions, *, latents: Any, labels: Any, inputs: Any,
            encoder: Any) -> VectorStream | None:
    """The vectors of the in-memory sources (or of the files ``data`` names)."""
    lat_src = inp_src = enc = None
    if latents is not None or data.latents is not None:
        lat_src = latents_source(latents if latents is not None else data.latents, channel_axis=data.channel_axis,
                                 labels=labels if labels is not None else data.labels)
    elif inputs is not None or data.inputs is not None:
        inp_src = inputs_source(inputs if inputs is not None else data.inputs,
                                labels=labels if labels is not None else data.labels,
                                image_size=data.image_size, clip_seconds=data.clip_seconds, sample_rate=data.sample_rate)
        enc = _encoder(encoder, data.channel_axis) if encoder is not None else None
    elif labels is not None:
        raise UsageError("labels were given without data.", "Pass latents=... or inputs=... with encoder=....")
    return session.stream(data, latents=lat_src, inputs=inp_src, encoder=enc)


class FixedStateDict(dict):  # type: ignore[type-arg]
    """The repaired state dict (``dict[str, Tensor]``, the keys as given: ``module.load_state_dict``
    takes it) with what the fix did in ``notes`` and the keys it ``changed`` / ``removed``."""

    notes: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


def fix(
    checkpoint: ModelLike,
    fix: Fix,
    *,
    latents: ArrayLike | None = None,
    inputs: ArrayLike | None = None,
    encoder: Callable[[torch.Tensor], torch.Tensor] | str | os.PathLike[str] | None = None,
    channel_axis: int | None = None,
    codebook: str | None = None,
    data: DataOptions = DataOptions(),
) -> FixedStateDict:
    """Repair the codebooks of a state dict, a module or a checkpoint path with ``fix`` (a
    :class:`~vqdoctor.fixes.KMeansFix`, :class:`~vqdoctor.fixes.ReviveFix` or
    :class:`~vqdoctor.fixes.SimVQFix` value) and return the new state dict; the input is not
    modified. Data as for :func:`inspect` (``latents``, or ``inputs`` with ``encoder``);
    ``codebook``: a glob over codebook names. The tensors are those ``vqdoctor fix`` writes for
    the same data, but nothing is verified after the fix here: inspect the result (e.g.
    ``vqdoctor.inspect(new_state, latents=z)``) before loading it into a model that trains on.

    The keys are those of the state dict given (a module's ``state_dict()`` keys; for a nested
    checkpoint such as Lightning's ``{"state_dict": ...}``, the keys of the inner state dict)."""
    if not hasattr(fix, "apply") or not hasattr(fix, "needs_data"):
        raise UsageError(f"vqdoctor.fix takes a fix value; got {type_name(fix)}.",
                         "Pass vqdoctor.fixes.KMeansFix(), ReviveFix() or SimVQFix().")
    if fix.encoder_from is not None:
        raise UsageError("encoder_from (copying a pretrained encoder) writes a new checkpoint file: use "
                         "vqdoctor.api.fix_checkpoint(path, fix=..., out=...) or `vqdoctor fix kmeans --encoder-from`.")
    data, latents, inputs, _, encoder = _data_arguments(data, latents=latents, inputs=inputs, labels=None,
                                                        encoder=encoder, channel_axis=channel_axis)
    ckpt = as_checkpoint(checkpoint, data=data, what="vqdoctor.fix")
    session = api.open_session(ckpt, data=data, analysis=AnalysisOptions(codebook=codebook))
    stream = _stream(session, data, latents=latents, labels=None, inputs=inputs, encoder=encoder)
    x = None
    if stream is not None:
        xs = [xb.to(device=session.device, dtype=torch.float32) for xb, _, _ in stream.batches()]
        x = torch.cat(xs) if xs else None
    if x is None and fix.needs_data:
        raise UsageError(f"fix {fix.name} needs data: the vectors that reach the quantizer.",
                         "Pass latents=... (a tensor, an array or a path), or inputs=... with encoder=....")
    result = FixResult()
    for stack in session.found.stacks:  # later stacks see the earlier stacks' updates
        state = ChainMap(result.updates, ckpt.state)  # type: ignore[arg-type]  # read only: any Mapping does
        result.merge(fix.apply(state, stack, x))
    original = dict(ckpt.key_map)
    out = FixedStateDict()
    for key in ckpt.state:
        if key not in result.remove:
            out[original.get(key, ckpt.prefix + key)] = result.updates.get(key, ckpt.state[key])
    for key, value in result.updates.items():
        if key not in ckpt.state:
            out[ckpt.prefix + key] = value
    out.notes = tuple(result.notes)
    out.changed = tuple(original.get(k, ckpt.prefix + k) for k in result.updates)
    out.removed = tuple(original.get(k, ckpt.prefix + k) for k in sorted(result.remove))
    return out
