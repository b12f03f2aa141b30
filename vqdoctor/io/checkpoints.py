"""Loading checkpoints of any supported format into a :class:`Checkpoint`.

Supported inputs
----------------
- ``.safetensors``: read lazily (shapes and dtypes from the header; a tensor is read only when
  accessed); the header's ``__metadata__`` is kept in ``Checkpoint.metadata``.
- PyTorch pickles ``.pt .pth .ckpt .bin``: ``torch.load(weights_only=True, map_location="cpu")``,
  memory-mapped for zip-format files. A pickle that needs a global (``argparse.Namespace``, a
  config class ...) is refused naming it; ``allow_globals=["argparse.Namespace"]`` (CLI
  ``--allow-global``) allows named plain-data classes. No code from the file is ever run.
- Hugging Face / diffusers model folders: ``config.json`` with ``model.safetensors``,
  ``model.safetensors.index.json`` (sharded, every shard lazy), ``pytorch_model.bin`` and its
  ``.index.json``, and the ``diffusion_pytorch_model.*`` names. ``config.json``'s text is kept in
  ``metadata["config"]``. Shard names in an index must be plain relative names of files inside
  the folder (:func:`inside_folder`: no absolute path, no ``..``, no link leading out, except
  into a Hugging Face cache's ``blobs/``); anything else is refused.
- ``.npy`` (one codebook array, state key ``"codebook"``) and ``.npz`` (each array a key), read
  with ``allow_pickle=False``; npz members are read only when accessed. Array headers are checked
  against the bytes the file holds first; a compressed member is inflated only within the budget
  of :func:`vqdoctor.io.headers.npz_budget_bytes` (``VQDOCTOR_NPZ_BUDGET_MB``).

Unwrapping
----------
A pickle's state dict is the dict of tensors found by this rule, recorded in ``Checkpoint.nesting``:
1. ``nesting="a/b"`` given: exactly that dict (``""`` for the top level).
2. Else among the dicts (up to three levels deep, optimizer state skipped) that directly hold
   tensors, the first of: a *main* name (``state_dict``, ``model``, ``module``, ``net``,
   ``generator``, ``best_state``, ...), the top level itself, an *EMA* name (``ema``,
   ``model_ema``, ...), then the dict with most tensors. The main weights are preferred over EMA
   ones; ``Checkpoint.alternatives`` and ``nesting`` name the other choices.
3. Then the prefixes ``module.``, ``_orig_mod.``, ``model.`` are stripped (repeatedly) when every
   tensor key carries them (all formats). ``key_map`` maps state keys back to original keys.
Non-tensor entries (optimizer state, epochs, hyper-parameters) are ignored for analysis and kept
by :func:`vqdoctor.io.writers.write_checkpoint`.

Fingerprint
-----------
``Checkpoint.fingerprint`` is computed at load time by :func:`fingerprint`: the sha256 of the
file's bytes, streamed in 1 MiB blocks (about 1-2 s per GB); for a folder, of every file's
relative name and bytes in sorted order.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqdoctor.errors import InputFileError
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.headers import check_safetensors_header, open_npy
from vqdoctor.io.npz import (
    NPZ_ERRORS,
    CompressedMember,
    npz_keys,
    npz_member,
    read_npz_array,
)
from vqdoctor.io.safe_pickle import safe_torch_load
from vqdoctor.io.store import TensorStore

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SUPPORTED = (".safetensors", *PICKLE_SUFFIXES, ".npy", ".npz", "a Hugging Face model folder")

# Files that make a folder a model folder, in order of preference.
HF_FILES = (
    "model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors.index.json",
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.bin.index.json",
    "diffusion_pytorch_model.bin.index.json",
    "pytorch_model.bin",
    "diffusion_pytorch_model.bin",
)
MAIN_NAMES = ("state_dict", "model", "model_state_dict", "module", "net", "network", "generator",
              "vqvae", "vqgan", "autoencoder", "best_state", "params", "weights", "state")
EMA_NAMES = ("ema", "model_ema", "ema_model", "state_dict_ema", "ema_state_dict", "ema_params",
             "generator_ema", "ema_weights")
SKIPPED_NAMES = ("optimizer", "optimizer_states", "optimizers", "optim", "lr_schedulers",
                 "scheduler", "scaler", "loops", "callbacks")
STRIPPED_PREFIXES = ("module.", "_orig_mod.", "model.")
_BLOCK = 1 << 20

ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"),
                     ("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        ST_DTYPES[_name] = getattr(torch, _attr)
ST_DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in ST_DTYPES.items()}


# --------------------------------------------------------------------------------------------
# public entry points


def load_checkpoint(
    path: str | Path, *, allow_globals: Sequence[str] = (), nesting: str | None = None
) -> Checkpoint:
    """Load ``path`` (file or model folder) into a :class:`Checkpoint` without running code.

    ``allow_globals``: dotted class names a pickle may use (plain data classes only).
    ``nesting``: which nested state dict of a pickle to take (``"ema"``, ``"a/b"``; ``""`` is
    the top level); by default the main weights (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(
            f"Checkpoint {path} does not exist.",
            hint="Check the path (and the current directory).",
        )
    if path.is_dir():
        return _load_folder(path, allow_globals=tuple(allow_globals), nesting=nesting)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", *PICKLE_SUFFIXES, ".npy", ".npz"):
        raise InputFileError(
            f"{path} has an unknown checkpoint extension {path.suffix or '(none)'!r}.",
            hint=f"Supported: {', '.join(SUPPORTED)}.",
        )
    if path.stat().st_size == 0:
        raise InputFileError(f"{path} is empty (0 bytes).", hint="Copy or download the checkpoint again.")
    if suffix == ".safetensors":
        state, key_map, metadata = _open_safetensors(path)
        return _finish(path, "safetensors", state, key_map, metadata=metadata)
    if suffix in (".npy", ".npz"):
        return _load_numpy(path)
    return _load_pickle(path, allow_globals=tuple(allow_globals), nesting=nesting)


def fingerprint(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, streamed in 1 MiB blocks; for a folder, of each file's
    relative path and bytes, in sorted order."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            while block := fh.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def inside_folder(folder: Path, name: str) -> Path | None:
    """``folder / name`` when ``name`` is a plain relative path that stays inside ``folder``
    (no absolute path, no ``..``, no drive or backslash tricks, and after resolving links still
    inside, or in the ``blobs/`` of a Hugging Face cache snapshot); else None."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return None
    rel = Path(name)
    if rel.is_absolute() or any(part in ("..", "") for part in rel.parts) or rel.drive:
        return None
    path = folder / rel
    root = folder.resolve()
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a link loop
        return None
    if target.is_relative_to(root):
        return path
    if root.parent.name == "snapshots" and target.is_relative_to(root.parent.parent / "blobs"):
        return path  # huggingface_hub's cache: snapshots/<rev>/NAME -> ../../blobs/<sha>
    return None


def safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The parsed JSON header of a safetensors file and the offset where its data starts.
    Raises :class:`InputFileError` for a file that is empty, truncated or not safetensors, and for
    any entry that fails :func:`vqdoctor.io.headers.check_safetensors_header` (checked before
    anything is allocated from the header)."""
    size = path.stat().st_size
    remedy = "Copy or download the checkpoint again, or re-save it with safetensors.torch.save_file."
    if size == 0:
        raise InputFileError(f"{path} is empty (0 bytes).", hint=remedy)
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise InputFileError(f"{path} is truncated: {size} bytes, too short for a safetensors header.",
                                 hint=remedy)
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            if n > 100_000_000:
                raise InputFileError(f"{path} is not a safetensors file (its first 8 bytes are not a "
                                     "header length).", hint=remedy)
            raise InputFileError(f"{path} is truncated: the header says {n} bytes but the file has "
                                 f"{size - 8} after the length.", hint=remedy)
        if n > 100_000_000:  # the safetensors library refuses such headers too
            raise InputFileError(f"{path} has a {n:,}-byte header, over the 100,000,000 bytes the safetensors "
                                 "format allows.", hint=remedy)
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise InputFileError(f"{path} is not a safetensors file (its header is not JSON).",
                                 hint=remedy) from None
    check_safetensors_header(path, header, size - 8 - n)
    return header, 8 + n


# --------------------------------------------------------------------------------------------
# formats


def _open_safetensors(path: Path) -> tuple[TensorStore, dict[str, str], dict[str, str]]:
    """A lazy store over one safetensors file, keyed by original keys."""
    from safetensors import SafetensorError, safe_open

    remedy_st = "Copy or download the checkpoint again; was it modified while vqdoctor read it?"
    header, _ = safetensors_header(path)
    metadata = dict(header.pop("__metadata__", None) or {})
    shapes, dtypes = {}, {}
    for key, info in header.items():
        dtype = ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise InputFileError(f"{path} holds tensor {key!r} of dtype {info['dtype']!r}, which "
                                 "this torch cannot represent.", hint="Convert that tensor to float32.")
        shapes[key] = tuple(info["shape"])
        dtypes[key] = dtype
    handle: list[Any] = []

    def load(key: str) -> torch.Tensor:
        try:  # the header was validated; this catches a file changed or damaged since
            if not handle:
                handle.append(safe_open(str(path), framework="pt", device="cpu"))
            return handle[0].get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise InputFileError(f"{path}: tensor {key!r} could not be read: {exc}.", hint=remedy_st) from None

    return TensorStore(shapes, dtypes, load), {k: k for k in shapes}, metadata


def _load_numpy(path: Path) -> Checkpoint:
    remedy = "Save codebooks with numpy.save / numpy.savez (numeric arrays, no pickled objects)."
    try:
        if path.suffix.lower() == ".npy":
            array = open_npy(path, "codebook")
            _check_numeric(path, "codebook", array.dtype)
            store = TensorStore({"codebook": tuple(array.shape)}, {"codebook": _torch_dtype(array.dtype)},
                                lambda key: torch.from_numpy(np.array(array)))
            return _finish(path, "npy", store, {"codebook": "codebook"}, strip=False)
        shapes, dtypes = {}, {}
        for key in npz_keys(path):
            member = npz_member(path, key)  # header checked against the zip entry and the file
            _check_numeric(path, key, member.dtype)
            shapes[key], dtypes[key] = tuple(member.shape), _torch_dtype(member.dtype)
    except NPZ_ERRORS as exc:
        raise InputFileError(f"{path} could not be read as a numpy array file: {exc}.", hint=remedy) from None
    if not shapes:
        raise InputFileError(f"{path} holds no arrays.", hint=remedy)

    def load(key: str) -> torch.Tensor:
        try:  # a compressed member is inflated whole only within the npz budget
            member = npz_member(path, key)
            array = read_npz_array(path, key) if isinstance(member, CompressedMember) else np.array(member)
        except NPZ_ERRORS as exc:
            raise InputFileError(f"{path}: array {key!r} could not be read: {exc}.", hint=remedy) from None
        return torch.from_numpy(array)

    return _finish(path, "npz", TensorStore(shapes, dtypes, load), {k: k for k in shapes}, strip=False)


def _check_numeric(path: Path, key: str, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf":
        raise InputFileError(f"{path}: array {key!r} has dtype {dtype}, not a numeric codebook.",
                             hint="Store codebooks as float arrays shaped (K, d).")


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def _load_pickle(path: Path, *, allow_globals: tuple[str, ...], nesting: str | None) -> Checkpoint:
    obj = safe_torch_load(path, allow_globals=allow_globals)
    if isinstance(obj, torch.Tensor):
        store = TensorStore.from_dict({"codebook": obj})
        return _finish(path, "pickle", store, {"codebook": "codebook"}, nesting=("bare tensor",),
                       strip=False, allow_globals=allow_globals)
    container, notes, alternatives = _select_container(path, obj, nesting)
    tensors = {k: v for k, v in _walk(obj, container).items() if isinstance(v, torch.Tensor)}
    return _finish(path, "pickle", TensorStore.from_dict(tensors), {k: k for k in tensors},
                   nesting=notes, container=container, allow_globals=allow_globals,
                   alternatives=alternatives)


def _load_folder(path: Path, *, allow_globals: tuple[str, ...], nesting: str | None) -> Checkpoint:
    found = [name for name in HF_FILES if (path / name).is_file()]
    if not found:
        listing = sorted(p.name for p in path.iterdir())[:8]
        raise InputFileError(
            f"{path} is a folder without a recognised model: looked for config.json with "
            f"{', '.join(HF_FILES)}; it holds {', '.join(listing) or 'nothing'}.",
            hint="Point at the checkpoint file itself, or at a Hugging Face model folder.",
        )
    main = found[0]
    metadata: dict[str, str] = {}
    for name in found[:1] + ["config.json"]:
        if (path / name).exists() and inside_folder(path, name) is None:
            raise InputFileError(f"{path / name} is a link that leads out of the model folder {path}.",
                                 hint="Copy the real file into the folder; vqdoctor reads only files inside it.")
    config = path / "config.json"
    if config.is_file():
        metadata["config"] = _folder_json(config, "config")[1]
    if main.endswith(".index.json"):
        weight_map = _weight_map(path / main)
        for shard in weight_map.values():
            if inside_folder(path, shard) is None:
                raise InputFileError(
                    f"{path / main} lists shard {shard!r}, which is not a plain file name inside {path} (absolute "
                    "paths, '..' and links leading out of the folder are refused).",
                    hint="Shard names must be relative names of files in the model folder, e.g. "
                    "model-00001-of-00002.safetensors; restore the index from the model's source.")
        shards = sorted(set(weight_map.values()))
        fmt = "hf-sharded"
    else:
        shards, weight_map, fmt = [main], {}, "hf-folder"
    shapes, dtypes, loaders, files = {}, {}, {}, {}
    for shard in shards:
        file = path / shard
        if not file.is_file():
            raise InputFileError(f"{path / main} lists shard {shard!r}, which is missing from {path}.",
                                 hint="Download the missing shard(s) again.")
        if file.stat().st_size == 0:
            raise InputFileError(f"{file} is empty (0 bytes).", hint="Download the shard again.")
        if shard.endswith(".safetensors"):
            store, _, meta = _open_safetensors(file)
            for k, v in meta.items():
                metadata.setdefault(k, v)
        else:
            obj = safe_torch_load(file, allow_globals=allow_globals)
            if not isinstance(obj, Mapping):
                raise InputFileError(f"{file} does not hold a state dict.", hint="Re-save it with "
                                     "model.save_pretrained().")
            store = TensorStore.from_dict({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)})
        for key in store:
            shapes[key], dtypes[key], loaders[key], files[key] = (
                store.shape(key), store.dtype(key), store, shard)
    missing = [k for k, shard in weight_map.items() if k not in shapes]
    if missing:
        raise InputFileError(f"{path / main} lists {len(missing)} tensor(s) missing from their shards, "
                             f"e.g. {missing[0]!r}.", hint="Download the shards again.")
    store = TensorStore(shapes, dtypes, lambda key: loaders[key][key])
    return _finish(path, fmt, store, {k: k for k in shapes}, metadata=metadata, files=files,
                   allow_globals=allow_globals)


def _folder_json(file: Path, what: str) -> tuple[dict[str, Any], str]:
    """A model folder's JSON file (``config.json``, a shard index): ``(object, text)``. Bad
    UTF-8, bad JSON or a top level that is not an object are an :class:`InputFileError`."""
    hint = "Restore the file from the model's source (it must be a UTF-8 JSON object)."
    try:
        text = file.read_text(encoding="utf-8")
        obj = json.loads(text)
    except UnicodeDecodeError as exc:
        raise InputFileError(f"The {what} file {file} is not UTF-8 text (byte {exc.start}).", hint=hint) from None
    except (ValueError, RecursionError) as exc:
        raise InputFileError(f"The {what} file {file} is not valid JSON: {str(exc)[:120]}.", hint=hint) from None
    if not isinstance(obj, dict):
        raise InputFileError(f"The {what} file {file} holds a JSON {type(obj).__name__}, not an object.", hint=hint)
    return obj, text


def _weight_map(file: Path) -> dict[str, str]:
    """The ``weight_map`` of a shard index: tensor name -> shard file name, both strings."""
    hint = "Restore the index file from the model's source."
    index, _ = _folder_json(file, "shard index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise InputFileError(f"{file} is not a valid shard index: 'weight_map' is "
                             f"{'missing' if weight_map is None else type(weight_map).__name__}, not an object.",
                             hint=hint)
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise InputFileError(f"{file}: 'weight_map' entry {key!r} is {repr(shard)[:60]}, not a shard file name.",
                                 hint=hint)
    return dict(weight_map)


# --------------------------------------------------------------------------------------------
# unwrapping


def _finish(
    path: Path,
    fmt: str,
    store: TensorStore,
    key_map: dict[str, str],
    *,
    metadata: dict[str, str] | None = None,
    nesting: tuple[str, ...] = (),
    container: tuple[str, ...] = (),
    files: dict[str, str] | None = None,
    allow_globals: tuple[str, ...] = (),
    alternatives: tuple[str, ...] = (),
    strip: bool = True,
) -> Checkpoint:
    """Strip common prefixes and build the Checkpoint."""
    if len(store) == 0:
        raise InputFileError(
            f"{path} holds no tensors at all"
            + (f" (looked in {' -> '.join(nesting)})." if nesting else "."),
            hint="Point at the file that holds the model weights (a state dict).",
        )
    prefix = _common_prefix(list(store)) if strip else ""
    notes = list(nesting)
    if prefix:
        notes += [f"strip prefix {p!r}" for p in _split_prefix(prefix)]
        inner = store
        store = TensorStore(
            {k[len(prefix):]: inner.shape(k) for k in inner},
            {k[len(prefix):]: inner.dtype(k) for k in inner},
            lambda key: inner[prefix + key],
        )
        key_map = {k[len(prefix):]: v for k, v in key_map.items()}
        files = {k[len(prefix):]: v for k, v in (files or {}).items()}
    if alternatives:
        notes.append(f"also found: {', '.join(alternatives)} (choose with --nesting NAME)")
    return Checkpoint(
        path=path, format=fmt, state=store, nesting=tuple(notes), metadata=metadata or {},
        fingerprint=fingerprint(path), key_map=key_map, container=container, prefix=prefix,
        files=files or {}, allow_globals=allow_globals, alternatives=alternatives,
    )


def _common_prefix(keys: list[str]) -> str:
    prefix = ""
    while True:
        for p in STRIPPED_PREFIXES:
            if all(k.startswith(prefix + p) and len(k) > len(prefix + p) for k in keys):
                prefix += p
                break
        else:
            return prefix


def _split_prefix(prefix: str) -> list[str]:
    parts = []
    while prefix:
        p = next(p for p in STRIPPED_PREFIXES if prefix.startswith(p))
        parts.append(p)
        prefix = prefix[len(p):]
    return parts


def _walk(obj: Any, container: tuple[str, ...]) -> Mapping[str, Any]:
    for key in container:
        obj = obj[key]
    return obj


def _candidates(obj: Any, path: tuple[str, ...] = (), depth: int = 0) -> list[tuple[tuple[str, ...], int]]:
    """(path, number of tensors) of every string-keyed dict that directly holds tensors."""
    if not isinstance(obj, Mapping):
        return []
    found = []
    n = sum(isinstance(v, torch.Tensor) for k, v in obj.items() if isinstance(k, str))
    if n:
        found.append((path, n))
    if depth < 3:
        for key, value in obj.items():
            if isinstance(key, str) and key not in SKIPPED_NAMES and isinstance(value, Mapping):
                found += _candidates(value, (*path, key), depth + 1)
    return found


def _rank(path: tuple[str, ...], n: int) -> tuple[int, int, int]:
    last = path[-1] if path else ""
    if last in MAIN_NAMES:
        return (0, MAIN_NAMES.index(last), -n)
    if not path:
        return (1, 0, -n)
    if last in EMA_NAMES:
        return (2, EMA_NAMES.index(last), -n)
    return (3, 0, -n)


def _show(path: tuple[str, ...]) -> str:
    return "/".join(path) if path else "(top level)"


def _select_container(
    path: Path, obj: Any, nesting: str | None
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The chosen container path, the nesting notes, and the other candidates."""
    candidates = _candidates(obj)
    if not candidates:
        what = type(obj).__name__
        raise InputFileError(
            f"{path} holds no tensors at all (it is a pickled {what} without a state dict).",
            hint="Point at the file that holds the model weights, or save them with "
            "torch.save(model.state_dict(), path).",
        )
    shown = [_show(p) for p, _ in candidates]
    if nesting is not None:
        wanted = tuple(part for part in nesting.strip("/").split("/") if part)
        matches = [p for p, _ in candidates if p == wanted or p == (nesting,)]
        if not matches:
            raise InputFileError(
                f"{path} has no state dict at nesting {nesting!r}; it has: {', '.join(shown)}.",
                hint="Pass one of those (e.g. --nesting " + (shown[0] if candidates[0][0] else "''") + ").",
            )
        chosen = matches[0]
        notes = (f"{_show(chosen)} (chosen)",) if chosen else ()
    else:
        chosen = min(candidates, key=lambda c: _rank(*c))[0]
        notes = (_show(chosen),) if chosen else ()
    others = tuple(_show(p) for p, _ in candidates if p != chosen)
    return chosen, notes, others


__all__ = ["SUPPORTED", "fingerprint", "inside_folder", "load_checkpoint", "safetensors_header"]
