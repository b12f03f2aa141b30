"""Loading PyTorch pickles without running code from them.

Every pickle is read with ``torch.load(weights_only=True, map_location="cpu")`` (memory-mapped
when the file is in torch's zip format). torch's weights-only unpickler builds tensors, plain
containers and a few built-in types only. A pickle that needs any other global is refused with
:class:`~vqdoctor.errors.UnsafePickleError` naming every global it wanted.

The user (never the file) may widen this with ``--allow-global NAME`` (Python:
``allow_globals=[...]``), and only to the names of :data:`ALLOW_LIST`: plain-data types whose
unpickling runs no program, opens no file and imports no code chosen by the pickle (each entry
says why; docs/security.md has the table). Any other name is refused even when named, and it is
never imported: naming it cannot run its module's code. No message ever suggests a name that is
not on the list. ``weights_only=False`` is never used.
"""

from __future__ import annotations

import importlib
import io
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vqdoctor.errors import InputFileError, UnsafePickleError


@dataclass(frozen=True)
class Allowed:
    """One allow-list entry: the name a pickle refers to, where the class lives (``module:attr``;
    a pure-path stand-in for the concrete paths), and why it is plain data."""

    name: str
    target: str
    reason: str


_NUMPY_RECONSTRUCT = "numpy's array rebuild: allocates an array of a dtype, no code"
_NUMPY_SCALAR = "numpy's scalar rebuild from a dtype and raw bytes"
ALLOW_LIST: tuple[Allowed, ...] = (
    Allowed("argparse.Namespace", "argparse:Namespace", "attribute bag of a training script's flags; no __setstate__"),
    Allowed("datetime.datetime", "datetime:datetime", "C type rebuilt from fixed-size bytes"),
    Allowed("datetime.date", "datetime:date", "C type rebuilt from fixed-size bytes"),
    Allowed("datetime.time", "datetime:time", "C type rebuilt from fixed-size bytes"),
    Allowed("datetime.timedelta", "datetime:timedelta", "C type rebuilt from three integers"),
    Allowed("datetime.timezone", "datetime:timezone", "C type rebuilt from a timedelta and a name"),
    Allowed("decimal.Decimal", "decimal:Decimal", "number parsed from a string (exponent kept, no expansion)"),
    Allowed("pathlib.PurePosixPath", "pathlib:PurePosixPath", "a path as text; touches no file"),
    Allowed("pathlib.PureWindowsPath", "pathlib:PureWindowsPath", "a path as text; touches no file"),
    Allowed("pathlib.PosixPath", "pathlib:PurePosixPath", "loaded as PurePosixPath: the text only, no file access"),
    Allowed("pathlib.WindowsPath", "pathlib:PureWindowsPath", "loaded as PureWindowsPath: the text only, no file access"),
    Allowed("pathlib.Path", "pathlib:PurePath", "loaded as PurePath: the text only, no file access"),
    Allowed("numpy.ndarray", "numpy:ndarray", "the array type itself (its subclasses, e.g. numpy.memmap, are not allowed)"),
    Allowed("numpy.dtype", "numpy:dtype", "a dtype from its string code"),
    Allowed("numpy.core.multiarray._reconstruct", "numpy._core.multiarray:_reconstruct|numpy.core.multiarray:_reconstruct", _NUMPY_RECONSTRUCT),
    Allowed("numpy._core.multiarray._reconstruct", "numpy._core.multiarray:_reconstruct|numpy.core.multiarray:_reconstruct", _NUMPY_RECONSTRUCT),
    Allowed("numpy.core.multiarray.scalar", "numpy._core.multiarray:scalar|numpy.core.multiarray:scalar", _NUMPY_SCALAR),
    Allowed("numpy._core.multiarray.scalar", "numpy._core.multiarray:scalar|numpy.core.multiarray:scalar", _NUMPY_SCALAR),
)
_BY_NAME = {a.name: a for a in ALLOW_LIST}
# Spellings a pickle may use for the same global (protocol 2 writes ``__builtin__``).
_MODULE_ALIASES = {"__builtin__": "builtins"}

_GLOBAL_PATTERNS = (
    re.compile(r"GLOBAL ([\w.]+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL ([\w.]+) whose module"),
    re.compile(r"Unsupported global: GLOBAL ([\w.]+)"),
)
_EXPORT_HINT = ("If you trust the file, load it in your own Python session and save only the weights: "
                "torch.save(model.state_dict(), 'weights.pt') or safetensors.torch.save_file(state_dict, "
                "'weights.safetensors'); see docs/security.md.")


def allowed_names() -> tuple[str, ...]:
    """The names ``--allow-global`` accepts."""
    return tuple(a.name for a in ALLOW_LIST)


def _canonical(name: str) -> str:
    module, _, rest = name.partition(".")
    return f"{_MODULE_ALIASES.get(module, module)}.{rest}" if rest else name


def is_zip_pickle(path: Path) -> bool:
    """True for files written by ``torch.save`` in its (default since 1.6) zip format."""
    return zipfile.is_zipfile(path)


def resolve_allowed_globals(names: Sequence[str]) -> list[tuple[Callable[..., Any], str]]:
    """The (object, pickled name) pairs for the names the user allows; a name off
    :data:`ALLOW_LIST` is an :class:`UnsafePickleError` and is never imported."""
    resolved: list[tuple[Callable[..., Any], str]] = []
    for raw in names:
        entry = _BY_NAME.get(_canonical(str(raw).strip()))
        if entry is None:
            raise UnsafePickleError(
                f"--allow-global {raw!r} is not on vqdoctor's allow-list of plain-data types, so vqdoctor "
                "will not let a pickle use it (naming a class or function does not make it safe: many "
                "open files or run programs when unpickled).",
                hint="--allow-global takes only the plain-data types listed in docs/security.md (e.g. "
                "argparse.Namespace, datetime.datetime, numpy.dtype). " + _EXPORT_HINT,
            )
        obj = _import_target(entry.target)
        resolved.append((obj, entry.name))
        if entry.name == "numpy.dtype":
            resolved += _numeric_dtype_classes()
    return resolved


def _import_target(target: str) -> Any:
    """``"module:attr"`` (alternatives separated by ``|``, for numpy 1 and 2) -> the object."""
    for option in target.split("|"):
        module_name, _, attr = option.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            return obj
        except (ImportError, AttributeError):
            continue
    raise UnsafePickleError(f"The allowed type {target!r} is not available in this Python environment.",
                            hint="Install the package that defines it (numpy).")


def _numeric_dtype_classes() -> list[tuple[Callable[..., Any], str]]:
    """numpy >= 1.25 rebuilds a dtype as an instance of its class in ``numpy.dtypes``; torch
    must be told those classes too. Numeric ones only (no object, string or void dtypes)."""
    import numpy as np

    dtypes = getattr(np, "dtypes", None)
    found: list[tuple[Callable[..., Any], str]] = []
    for name in dir(dtypes) if dtypes is not None else ():
        cls = getattr(dtypes, name)
        if isinstance(cls, type) and name.endswith("DType"):
            try:
                kind = np.dtype(cls.type).kind  # type: ignore[attr-defined]
            except (TypeError, AttributeError):
                continue
            if kind in "biufc":
                found.append((cls, f"numpy.dtypes.{name}"))
    return found


def unsafe_globals(path: Path, *, error: BaseException | None = None) -> list[str]:
    """Globals the pickle at ``path`` names (beyond torch's weights-only allow-list for zip
    files), found without executing anything: an opcode scan (``pickletools.genops``) of the
    zip archive's ``data.pkl`` or of the first pickles of a legacy file; else from torch's error."""
    names: list[str] = []
    if is_zip_pickle(path):
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - a damaged archive: scan it ourselves
            names = []
        if not names:
            try:
                with zipfile.ZipFile(path) as zf:
                    for info in zf.infolist():
                        if info.filename.endswith(".pkl") and info.file_size <= _SCAN_LIMIT:
                            names += _scan_globals(zf.read(info))
            except (zipfile.BadZipFile, OSError, ValueError):
                pass
    else:
        try:
            with open(path, "rb") as fh:
                names = _scan_globals(fh.read(_SCAN_LIMIT))
        except OSError:
            names = []
        names = [n for n in names if n not in _TORCH_LEGACY_GLOBALS and not n.startswith("torch.")]
    if not names and error is not None:
        for pattern in _GLOBAL_PATTERNS:
            names += pattern.findall(str(error))
    return list(dict.fromkeys(_canonical(n) for n in names))


_SCAN_LIMIT = 64 << 20
_TORCH_LEGACY_GLOBALS = frozenset({"collections.OrderedDict", "builtins.set", "builtins.complex",
                                   "builtins.bytearray", "_codecs.encode", "collections.Counter"})


def _scan_globals(data: bytes, *, max_pickles: int = 4) -> list[str]:
    """Every global named by GLOBAL, INST or STACK_GLOBAL in the first pickles of ``data``
    (a legacy torch file is several pickles in a row). Reads opcodes only; runs nothing."""
    found: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(max_pickles):
        strings: list[str] = []
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    module, _, name = str(arg).partition(" ")
                    found.append(f"{module}.{name}")
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # noqa: BLE001 - garbage after (or inside) a pickle: stop scanning
            break
        if stream.tell() >= len(data):
            break
    return found


def _refusal(path: Path, wanted: Sequence[str], given: Sequence[str], reason: str) -> UnsafePickleError:
    """The error for a pickle that wants globals: it names them, and suggests --allow-global
    only for names on the allow-list (never for anything else)."""
    given_set = {_canonical(g) for g in given}
    missing = [n for n in wanted if n not in given_set]
    if wanted and not missing:
        return UnsafePickleError(
            f"{path} needs more than the plain-data types allowed ({', '.join(wanted)}) to load: torch's "
            f"weights-only unpickler refused it ({reason}). vqdoctor never runs code from a checkpoint.",
            hint=_EXPORT_HINT)
    listed = [n for n in missing if n in _BY_NAME]
    unlisted = [n for n in missing if n not in _BY_NAME]
    shown = ", ".join(missing) if missing else "a global torch does not allow"
    message = (f"{path} is a pickle that needs code to load: it refers to {shown}, which is not plain "
               "tensor data. vqdoctor loads pickles with weights_only=True and never runs code from a checkpoint")
    if unlisted:
        message += (f"; {', '.join(unlisted)} {'is' if len(unlisted) == 1 else 'are'} not on vqdoctor's "
                    "allow-list of plain-data types, so no flag makes vqdoctor load this file")
        return UnsafePickleError(message + ".", hint=_EXPORT_HINT)
    if listed:
        flags = " ".join(f"--allow-global {n}" for n in listed)
        return UnsafePickleError(
            message + ".",
            hint=f"{'These are' if len(listed) > 1 else 'This is'} on vqdoctor's allow-list of plain-data "
            f"types: if you trust the file, pass {flags} (Python: allow_globals=[...]); or save only the "
            "state dict (torch.save(model.state_dict(), path)) or as .safetensors.",
        )
    return UnsafePickleError(message + ".", hint=_EXPORT_HINT)


def safe_torch_load(path: Path, *, allow_globals: Sequence[str] = ()) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU, memory-mapped when possible, with the
    user's ``allow_globals`` (names of :data:`ALLOW_LIST` only).

    Raises :class:`UnsafePickleError` when the pickle needs a global not allowed, and
    :class:`InputFileError` when the file is empty, truncated or not a pickle."""
    path = Path(path)
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = list(resolve_allowed_globals(allow_globals))
    mmap = is_zip_pickle(path)
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on pickle protocols
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        wanted = unsafe_globals(path, error=exc)
        if wanted or "weights_only" in str(exc) or "global" in str(exc).lower():
            raise _refusal(path, wanted, allow_globals, _torch_reason(exc)) from None
        raise InputFileError(
            f"{path} could not be read as a PyTorch checkpoint: {_first_line(exc)}.",
            hint="The file is damaged or not a torch.save file; re-save it with torch.save or as "
            ".safetensors.",
        ) from None
    except EOFError:
        raise InputFileError(
            f"{path} ended before the checkpoint did (the file is truncated).",
            hint="Copy or download the checkpoint again.",
        ) from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes make the unpickler fail in any way
        text = _first_line(exc)
        what = "is truncated or damaged" if "zip" in text.lower() or "central directory" in text else (
            "could not be read as a PyTorch checkpoint")
        raise InputFileError(
            f"{path} {what}: {text}.",
            hint="Copy or download the checkpoint again, or re-save it with torch.save.",
        ) from None


def _torch_reason(exc: BaseException) -> str:
    """The WeightsUnpickler's own sentence out of torch's long message."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0].rstrip(".") if lines else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return lines[0].split(". ")[0].rstrip(".")
