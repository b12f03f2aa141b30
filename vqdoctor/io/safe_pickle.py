"""Loading PyTorch pickles without running code from them.

Every pickle is read with ``torch.load(weights_only=True, map_location="cpu")`` (memory-mapped
when the file is in torch's zip format). A pickle that needs a global torch does not allow by
default (``argparse.Namespace`` saved by a training script, an OmegaConf config, any class) is
refused with :class:`~vqdoctor.errors.UnsafePickleError` naming every global it wanted. The user
may allow named *classes* (``--allow-global argparse.Namespace``); they are passed to
``torch.serialization.safe_globals`` for that one load. Functions, and classes from modules that
can run programs (``os``, ``subprocess``, ``builtins`` ...), are never allowed. ``weights_only=False``
is never used.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vqdoctor.errors import InputFileError, UnsafePickleError

# Modules whose classes would hand a pickle a way to run programs or import code.
_REFUSED_MODULES = frozenset(
    {"os", "posix", "nt", "sys", "subprocess", "shutil", "importlib", "pickle", "runpy", "code",
     "codeop", "pty", "socket", "ctypes", "types", "functools", "operator", "io", "_io",
     "webbrowser", "multiprocessing", "threading", "signal", "tempfile", "glob", "zipfile"}
)
# From ``builtins`` only plain data types may be allowed.
_PLAIN_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
     "bytearray", "bool", "slice", "range"}
)

_GLOBAL_PATTERNS = (
    re.compile(r"GLOBAL ([\w.]+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL ([\w.]+) whose module"),
)


def is_zip_pickle(path: Path) -> bool:
    """True for files written by ``torch.save`` in its (default since 1.6) zip format."""
    return zipfile.is_zipfile(path)


def resolve_allowed_globals(names: Sequence[str]) -> list[type]:
    """Import the classes the user allows by dotted name (``"argparse.Namespace"``).

    Raises :class:`UnsafePickleError` for a name that is not importable, is not a class, or
    lives in a module that can run programs."""
    resolved: list[type] = []
    for name in names:
        obj = _import_dotted(name)
        module = getattr(obj, "__module__", "") or ""
        if not isinstance(obj, type):
            raise UnsafePickleError(
                f"--allow-global {name!r} names a {type(obj).__name__}, not a class; only plain data "
                "classes can be allowed, never functions.",
                hint="Allow only the classes the error message listed (e.g. argparse.Namespace).",
            )
        top = {module.split(".")[0], name.split(".")[0]}
        refused = bool(top & _REFUSED_MODULES) or (
            "builtins" in top and obj.__name__ not in _PLAIN_BUILTINS)
        if refused:
            raise UnsafePickleError(
                f"--allow-global {name!r} is a class from module {module!r}, which can run programs; "
                "vqdoctor will not allow it.",
                hint="Re-save the checkpoint with only tensors and plain data, e.g. "
                "torch.save({'state_dict': model.state_dict()}, path).",
            )
        resolved.append(obj)
    return resolved


def _import_dotted(name: str) -> Any:
    parts = name.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise UnsafePickleError(
            f"--allow-global {name!r} is not a dotted class name.",
            hint="Write it as module.Class, e.g. --allow-global argparse.Namespace.",
        )
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise UnsafePickleError(
        f"--allow-global {name!r} could not be imported.",
        hint="Install the package that defines it, or re-save the checkpoint without it.",
    )


def unsafe_globals(path: Path, *, error: BaseException | None = None) -> list[str]:
    """Globals the pickle at ``path`` needs beyond torch's weights-only allow-list, found
    without executing anything (opcode scan for zip files; else parsed from torch's error)."""
    names: list[str] = []
    if is_zip_pickle(path):
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - a damaged archive: fall back to the error text
            names = []
    if not names and error is not None:
        for pattern in _GLOBAL_PATTERNS:
            names += pattern.findall(str(error))
    return list(dict.fromkeys(names))


def safe_torch_load(path: Path, *, allow_globals: Sequence[str] = ()) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU, memory-mapped when possible.

    Raises :class:`UnsafePickleError` when the pickle needs a global not allowed, and
    :class:`InputFileError` when the file is empty, truncated or not a pickle."""
    path = Path(path)
    allowed = resolve_allowed_globals(allow_globals)
    mmap = is_zip_pickle(path)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        wanted = unsafe_globals(path, error=exc)
        missing = [n for n in wanted if n not in set(allow_globals)]
        if missing:
            flags = " ".join(f"--allow-global {n}" for n in missing)
            raise UnsafePickleError(
                f"{path} is a pickle that needs code to load: it refers to "
                f"{', '.join(missing)}, which is not plain tensor data. vqdoctor loads pickles "
                "with weights_only=True and never runs code from a checkpoint.",
                hint=f"If you trust this file and these are plain data classes, pass {flags} "
                "(Python: allow_globals=[...]); or re-save only the state dict "
                "(torch.save({'state_dict': model.state_dict()}, path)) or as .safetensors.",
            ) from None
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


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return lines[0].split(". ")[0].rstrip(".")
