"""Getting from raw data to latents: the encoder sources vqdoctor accepts.

Four ways, each returning an :class:`Encoder` (a function from an input batch to latents):

- :func:`encoder_from_metadata`: the checkpoint describes its own encoder (``vqdoctor.arch``
  metadata, the shipped samples); vqdoctor rebuilds it and loads the ``encoder.*`` tensors strictly.
- :func:`encoder_from_factory`: ``--model pkg.module:factory`` or ``path/to/file.py:factory``, the
  user's own trusted code returning an ``nn.Module``, called with the ``--model-arg k=v`` keyword
  arguments; the checkpoint's tensors are loaded into it by key (strict=False, with missing /
  unexpected keys reported in ``Encoder.notes``; no match at all, a shape mismatch or unloaded
  encoder tensors are an EncoderError saying how many keys matched and which prefix differs).
- :func:`encoder_from_file`: ``--encoder FILE``, a TorchScript file or a ``torch.export`` program
  (``.pt2``). Nothing else is ever unpickled.
- :func:`data_from_metadata`: the data a sample was trained on (``vqdoctor.data``, relative to the
  checkpoint's folder and confined to it: a path leaving the folder is ignored with a note).

Every ``Encoder.fn`` runs under ``torch.inference_mode`` on the device it was built for and takes
a batch ``(b, ...)`` on any device (it is moved).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vqdoctor.errors import EncoderError, InputFileError
from vqdoctor.io.checkpoint_types import Checkpoint

ARCH_KEY = "vqdoctor.arch"
DATA_KEY = "vqdoctor.data"
# keys tried, in order, when an encode method returns a dict
DICT_KEYS = ("latents", "z", "z_e", "encoded", "hidden_states", "last_hidden_state")
_OUTPUT_RULE = (
    "latents = the output of {how} if it is a tensor; of a tuple/list, its first tensor; of a mapping "
    "(or an object with such attributes), the first of " + ", ".join(DICT_KEYS) + " present, else its first tensor"
)
_SPEC_FORM = "expected 'package.module:factory' or 'path/to/file.py:factory'"
_MAX_NAMES = 5


@dataclass(frozen=True)
class Encoder:
    """``fn`` maps a batch of inputs (b, ...) to latents; ``channel_axis`` says where the channels
    are in fn's output (1 for (b, d, H, W), -1 for (b, T, d); for (b, d) either)."""

    description: str
    fn: Callable[[Tensor], Tensor]
    channel_axis: int
    notes: tuple[str, ...] = ()


def _runner(module: Callable[[Tensor], Any], device: torch.device, pick: Callable[[Any], Tensor]) -> Callable[[Tensor], Tensor]:
    def fn(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return pick(module(x.to(device)))

    return fn


# ------------------------------------------------------------------------------- from metadata


def encoder_from_metadata(ckpt: Checkpoint, *, device: torch.device) -> Encoder | None:
    """The encoder a checkpoint describes in its ``vqdoctor.arch`` metadata; None if it has none.
    The checkpoint's ``encoder.*`` tensors must match the architecture exactly (EncoderError lists
    missing and unexpected keys)."""
    text = ckpt.metadata.get(ARCH_KEY)
    if text is None:
        return None
    from vqdoctor.samples.arch import build_encoder, parse_arch

    arch = parse_arch(text)
    module = build_encoder(arch)
    prefix = arch.encoder_prefix
    tensors = {k[len(prefix) :]: ckpt.state[k] for k in ckpt.state if k.startswith(prefix)}
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise EncoderError(
            f"checkpoint {ckpt.path} describes an encoder ({ARCH_KEY}) whose tensors do not match it: "
            f"missing {_names(missing, prefix)}; unexpected {_names(unexpected, prefix)}",
            "the metadata and the tensors disagree; pass --model or --encoder to encode yourself",
        )
    try:
        module.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
    except RuntimeError as exc:  # shape mismatch
        raise EncoderError(
            f"checkpoint {ckpt.path}: encoder tensors do not fit {ARCH_KEY}: {_first_line(exc)}"
        ) from None
    module.to(device).eval()
    return Encoder(
        description=(
            f"encoder described by the checkpoint's metadata: MLP {arch.in_dim} -> "
            f"{arch.hidden} x{arch.layers - 1} -> {arch.latent_dim} ({prefix}*)"
        ),
        fn=_runner(module, device, lambda out: out),
        channel_axis=-1,
    )


def data_from_metadata(ckpt: Checkpoint) -> Path | None:
    """The data file a checkpoint names in ``vqdoctor.data``, resolved against the checkpoint's
    folder; None if it names none, or names a path that leaves that folder (absolute, ``..``, a
    link out: ignored, and :func:`ignored_data_note` says so). A named file inside the folder that
    does not exist is an InputFileError."""
    from vqdoctor.io.checkpoints import inside_folder

    rel = ckpt.metadata.get(DATA_KEY)
    if not rel:
        return None
    base = ckpt.path if ckpt.path.is_dir() else ckpt.path.parent
    inside = inside_folder(base, rel)
    if inside is None:
        return None
    path = inside.resolve()
    if not path.is_file():
        raise InputFileError(
            f"checkpoint {ckpt.path} names its data as {rel!r} ({DATA_KEY}), but {path} does not exist",
            "pass the data with --inputs, or --latents",
        )
    return path


def ignored_data_note(ckpt: Checkpoint) -> str | None:
    """The note for a ``vqdoctor.data`` path that was ignored because it leaves the folder."""
    from vqdoctor.io.checkpoints import inside_folder

    rel = ckpt.metadata.get(DATA_KEY)
    base = ckpt.path if ckpt.path.is_dir() else ckpt.path.parent
    if not rel or inside_folder(base, rel) is not None:
        return None
    return (f"The checkpoint names its data as {rel!r} ({DATA_KEY}), a path outside its folder {base}; "
            "it was ignored (a file's paths stay inside the folder it came from). Pass --inputs or --latents.")


# -------------------------------------------------------------------------------- from factory


def _load_factory(spec: str) -> Callable[[], object]:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr or not attr.isidentifier():
        raise EncoderError(f"bad --model {spec!r}: {_SPEC_FORM}")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise EncoderError(f"bad --model {spec!r}: file {path} does not exist", _SPEC_FORM)
        name = f"_vqdoctor_factory_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise EncoderError(f"bad --model {spec!r}: cannot import {path} as Python", _SPEC_FORM)
        mod = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = mod
        try:
            loader_spec.loader.exec_module(mod)
        except Exception as exc:  # the user's code failed: say where
            del sys.modules[name]
            raise EncoderError(f"--model {spec!r}: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            mod = importlib.import_module(target)
        except ImportError as exc:
            raise EncoderError(f"bad --model {spec!r}: cannot import module {target!r}: {exc}", _SPEC_FORM) from None
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise EncoderError(f"bad --model {spec!r}: {target} has no callable {attr!r}", _SPEC_FORM)
    return factory


def encoder_from_factory(
    spec: str, ckpt: Checkpoint, *, method: str | None, device: torch.device,
    kwargs: Mapping[str, object] | None = None,
) -> Encoder:
    """Build the user's model with ``spec`` (``pkg.module:factory`` or ``file.py:factory``) called
    with ``kwargs`` (``--model-arg k=v``), load the checkpoint's tensors whose keys the model's
    state dict has (by key, strict=False) and encode with ``method``, else ``encode``, else the
    ``encoder`` submodule. A tuple result gives its first tensor; a dict result gives the first of
    ``DICT_KEYS`` present (else its first tensor value); notes say which.

    Loading is refused (EncoderError: counts, first names, and a key prefix that would make them
    match) when no key matches, when a shape differs, or when tensors of the encode path (the
    ``encoder`` submodule, or the submodule named by ``method``) are missing from the checkpoint;
    other missing or unexpected keys go to ``notes``."""
    kwargs = dict(kwargs or {})
    factory = _load_factory(spec)
    called = f"--model {spec!r}" + (f" with {format_model_args(kwargs)}" if kwargs else "")
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise EncoderError(f"{called}: the factory raised TypeError: {exc}",
                           f"the factory's parameters are {_signature(factory)}; pass them as --model-arg NAME=VALUE") from exc
    except Exception as exc:
        raise EncoderError(f"{called}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise EncoderError(f"--model {spec!r}: the factory returned {type(model).__name__}, not a torch nn.Module")
    notes: list[str] = []
    if kwargs:
        notes.append(f"the factory was called with {format_model_args(kwargs)}")
    call, how = _encode_call(model, spec, method)
    expected = model.state_dict()
    tensors = {k: ckpt.state[k] for k in ckpt.state if k in expected}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(ckpt.state) - set(expected))
    bad_shape = sorted(k for k, v in tensors.items() if tuple(v.shape) != tuple(expected[k].shape))
    if bad_shape:
        k = bad_shape[0]
        raise EncoderError(
            f"--model {spec!r}: {len(bad_shape)} checkpoint tensor(s) do not fit the model's shapes, "
            f"e.g. {k!r}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}",
            "build the model with the checkpoint's sizes (pass them with --model-arg NAME=VALUE)",
        )
    path_prefixes = _encode_path(model, method)
    unloaded_path = [k for k in missing if k.startswith(path_prefixes)]
    if not tensors or unloaded_path:
        counts = (f"the checkpoint's {len(ckpt.state)} tensors match {len(tensors)} of the model's {len(expected)} keys"
                  if tensors else f"none of the checkpoint's {len(ckpt.state)} tensors matches a key of the model")
        gap = (f"; {len(unloaded_path)} tensors of the encode path ({', '.join(p.rstrip('.') for p in path_prefixes)}) "
               f"would keep the weights they were built with: {_names(unloaded_path, '')}" if tensors else "")
        raise EncoderError(
            f"--model {spec!r}: {counts}{gap} (model keys missing from the checkpoint e.g. {_names(missing, '')}; "
            f"checkpoint keys not in the model e.g. {_names(unexpected, '')})",
            _prefix_hint(sorted(expected), sorted(ckpt.state))
            or "the factory must build the model whose state dict the checkpoint holds (same attribute names; "
            "pass its sizes with --model-arg NAME=VALUE)",
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=False)
    notes.append(f"loaded {len(tensors)} tensors from the checkpoint (of the model's {len(expected)})")
    if missing:
        notes.append(f"{len(missing)} model keys missing from the checkpoint (left as built): {_names(missing, '')}")
    if unexpected:
        notes.append(f"{len(unexpected)} checkpoint keys not in the model (ignored): {_names(unexpected, '')}")
    model.to(device).eval()
    notes.append(_OUTPUT_RULE.format(how=f"model.{how}"))
    return Encoder(
        description=f"{spec} -> model.{how}",
        fn=_runner(call, device, lambda out: _first_tensor(out, how)),
        channel_axis=1,
        notes=tuple(notes),
    )


def _encode_call(model: nn.Module, spec: str, method: str | None) -> tuple[Callable[[Tensor], object], str]:
    """What maps inputs to latents: ``method``, else ``encode``, else the ``encoder`` submodule."""
    if method is not None:
        call = getattr(model, method, None)
        if not callable(call):
            raise EncoderError(f"--model {spec!r}: the model has no method or submodule {method!r}")
        return call, method
    encode, encoder = getattr(model, "encode", None), getattr(model, "encoder", None)
    if callable(encode):
        return encode, "encode"
    if isinstance(encoder, nn.Module):
        return encoder, "encoder"
    raise EncoderError(
        f"--model {spec!r}: the model has neither an 'encode' method nor an 'encoder' submodule",
        "name the method that maps inputs to latents with --encode-method",
    )


def _encode_path(model: nn.Module, method: str | None) -> tuple[str, ...]:
    """State-dict prefixes of the modules that encoding certainly runs: the submodule named by
    ``method``, else the ``encoder`` submodule (which ``encode`` methods run in every family
    vqdoctor knows). Empty where that cannot be told."""
    names = [method] if method is not None else ["encoder"]
    return tuple(f"{n}." for n in names if isinstance(getattr(model, n, None), nn.Module))


def _prefix_hint(model_keys: list[str], ckpt_keys: list[str]) -> str | None:
    """A key prefix that one side has and the other lacks, when it would make most keys match."""
    model_set, ckpt_set = set(model_keys), set(ckpt_keys)

    def best(longer: list[str], shorter: set[str]) -> tuple[str, int] | None:
        counts: dict[str, int] = {}
        for key in longer:
            parts = key.split(".")
            for i in range(1, len(parts)):
                if ".".join(parts[i:]) in shorter:
                    prefix = ".".join(parts[:i]) + "."
                    counts[prefix] = counts.get(prefix, 0) + 1
                    break
        return max(counts.items(), key=lambda kv: kv[1]) if counts else None

    extra_in_ckpt, extra_in_model = best(ckpt_keys, model_set), best(model_keys, ckpt_set)
    if extra_in_ckpt and (not extra_in_model or extra_in_ckpt[1] >= extra_in_model[1]):
        prefix, n = extra_in_ckpt
        return (f"the checkpoint's keys carry a prefix {prefix!r} the model's lack ({n} of the model's {len(model_keys)} "
                f"keys match once it is dropped): have the factory return a wrapper holding the model as attribute "
                f"{prefix.rstrip('.')!r} (nested attributes for a dotted prefix)")
    if extra_in_model:
        prefix, n = extra_in_model
        return (f"the model's keys carry a prefix {prefix!r} the checkpoint's lack ({n} of the checkpoint's "
                f"{len(ckpt_keys)} keys match once it is dropped): have the factory return model.{prefix.rstrip('.')}")
    return None


def format_model_args(kwargs: Mapping[str, object]) -> str:
    """``k=v (type)`` for each factory argument, as errors and notes show them."""
    return ", ".join(f"{k}={v!r} ({type(v).__name__})" for k, v in kwargs.items())


def _signature(factory: Callable[..., object]) -> str:
    try:
        return str(inspect.signature(factory))
    except (TypeError, ValueError):
        return "(unknown)"


def _first_tensor(out: object, how: str) -> Tensor:
    """The latents in an encoder's output, by _OUTPUT_RULE."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for v in out:
            if isinstance(v, Tensor):
                return v
    if isinstance(out, Mapping):
        for k in DICT_KEYS:
            if isinstance(out.get(k), Tensor):
                return out[k]
        for v in out.values():
            if isinstance(v, Tensor):
                return v
    for attr in DICT_KEYS:  # dataclass-like outputs (e.g. Hugging Face ModelOutput)
        v = getattr(out, attr, None)
        if isinstance(v, Tensor):
            return v
    raise EncoderError(f"model.{how} returned {type(out).__name__}, which holds no tensor to use as latents")


# ----------------------------------------------------------------------------------- from file


def encoder_from_file(path: Path, *, device: torch.device) -> Encoder:
    """A TorchScript file (``torch.jit.save``) or a ``torch.export`` program (``.pt2``). Anything
    else is refused: no other format is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"encoder file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise InputFileError(
            f"encoder file {path} is neither a TorchScript file nor a torch.export program (not a zip archive)",
            "save the encoder with torch.jit.save(torch.jit.script(m), f) or "
            "torch.export.save(torch.export.export(m, (x,)), 'enc.pt2')",
        )
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    is_script = any(n.endswith("constants.pkl") or "/code/" in n for n in names)
    is_export = path.suffix == ".pt2" or any(n.endswith("serialized_exported_program.json") or
                                              "/models/" in n for n in names)
    static = None
    if is_export and not is_script:
        try:
            program = torch.export.load(str(path))
            static = _static_batch(program)
            module = program.module()
        except Exception as exc:
            raise InputFileError(f"encoder file {path}: torch.export.load failed: {_first_line(exc)}") from None
        kind = "torch.export program"
        try:
            module.to(device)
        except Exception:  # exported graphs may refuse .to(); keep them where they were built
            pass
    elif is_script:
        try:
            module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:
            raise InputFileError(f"encoder file {path}: torch.jit.load failed: {_first_line(exc)}") from None
        module.eval()
        kind = "TorchScript module"
    else:
        raise InputFileError(
            f"encoder file {path} is a zip archive but neither TorchScript nor a torch.export program "
            "(a plain torch.save pickle is refused: loading it would run code)",
            "save the encoder with torch.jit.save or torch.export.save",
        )
    fn = _runner(module, device, lambda out: _first_tensor(out, "forward"))
    notes: tuple[str, ...] = (_OUTPUT_RULE.format(how="forward"),)
    if static is not None:
        fn = _at_batch(fn, static)
        notes += (f"The exported encoder has a static batch of {static}: inputs run {static} at a time, the last "
                  "batch padded with copies of its last item and the padding dropped.",)
    return Encoder(description=f"{kind} {path}", fn=fn, channel_axis=1, notes=notes)


def _static_batch(program: object) -> int | None:
    """The batch size a torch.export program was exported with when its first input's batch
    dimension is static (an int, not a symbol); None when dynamic or unknown."""
    user = set(getattr(getattr(program, "graph_signature", None), "user_inputs", ()) or ())
    for node in program.graph.nodes:  # type: ignore[attr-defined]
        if node.op == "placeholder" and node.name in user:
            shape = getattr(node.meta.get("val"), "shape", None)
            return int(shape[0]) if shape is not None and len(shape) and type(shape[0]) is int else None
    return None


def _at_batch(fn: Callable[[Tensor], Tensor], size: int) -> Callable[[Tensor], Tensor]:
    """Run ``fn`` on exactly ``size`` rows at a time (pad the last chunk, drop the padding)."""
    def run(x: Tensor) -> Tensor:
        outs = []
        for start in range(0, x.shape[0], size):
            chunk = x[start : start + size]
            real = chunk.shape[0]
            if real < size:
                chunk = torch.cat([chunk, chunk[-1:].expand(size - real, *chunk.shape[1:])])
            outs.append(fn(chunk)[:real])
        return torch.cat(outs)

    return run


# -------------------------------------------------------------------------------------- helpers


def _names(keys: list[str], prefix: str) -> str:
    if not keys:
        return "none"
    shown = ", ".join(repr(prefix + k) for k in keys[:_MAX_NAMES])
    return shown + (f" (+{len(keys) - _MAX_NAMES} more)" if len(keys) > _MAX_NAMES else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
