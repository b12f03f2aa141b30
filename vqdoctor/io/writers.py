"""Writing a repaired checkpoint in the same format as its input, atomically.

:func:`write_checkpoint` takes a loaded :class:`Checkpoint`, the tensors to replace or add
(by *state* key, i.e. without the nesting prefix) and the keys to remove, and writes:

- ``.safetensors``: the same header metadata, every other tensor's bytes copied verbatim (streamed,
  never the whole file in memory), tensors in their original order, new keys at the end;
- PyTorch pickles: the identical nested container (``state_dict``/``ema``/optimizer state/epoch
  ...), re-loaded with ``weights_only=True`` and saved with ``torch.save`` in the input's
  serialization format; new keys get the stripped prefix back and go in the same dict;
- Hugging Face folders: a copy of the folder where only the shard(s) holding changed keys are
  rewritten; the index is rewritten only when keys or sizes change (new keys go to the shard of
  their closest sibling);
- ``.npz`` (same member order and compression) / ``.npy``.

Updated tensors are cast to the original tensor's dtype (bf16 stays bf16). Every write goes
through :func:`vqdoctor.io.atomic.atomic_path`: a ``.vqdoctor-tmp-`` file (or folder) in the
destination directory, then ``os.replace``; on any exception, SIGTERM or SIGINT the temporary
output is removed and the destination is untouched. The input is never overwritten
unless ``in_place=True``, and then a backup ``NAME.bak`` (or ``NAME.bak.N``) is kept first.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from vqdoctor.errors import UsageError
from vqdoctor.io.atomic import TMP_PREFIX, atomic_path
from vqdoctor.io.checkpoint_types import Checkpoint
from vqdoctor.io.checkpoints import PICKLE_SUFFIXES, ST_DTYPE_NAMES, inside_folder, safetensors_header
from vqdoctor.io.safe_pickle import is_zip_pickle, safe_torch_load

_BLOCK = 1 << 20


def write_checkpoint(
    ckpt: Checkpoint,
    out: str | Path,
    *,
    updates: Mapping[str, torch.Tensor],
    remove: Collection[str] = (),
    in_place: bool = False,
) -> Path:
    """Write ``ckpt`` with ``updates`` applied and ``remove`` dropped to ``out``; return ``out``.

    Refuses ``out`` == the input unless ``in_place`` (then ``NAME.bak`` is kept first); an
    existing ``out`` that is not the input is replaced atomically."""
    out = Path(out)
    src = Path(ckpt.path)
    same = out.exists() and src.exists() and os.path.samefile(out, src)
    if same and not in_place:
        raise UsageError(
            f"Refusing to overwrite the input checkpoint {src}.",
            hint="Write to a new path with --out NEW, or pass --in-place (a backup NAME.bak is kept).",
        )
    if in_place and not same:
        raise UsageError(
            f"--in-place writes over the input {src}, but the output given is {out}.",
            hint="Drop --in-place to write a new file, or give the input path as the output.",
        )
    refuse_overlap(out, [src], allow_same=src if in_place else None)
    _validate(ckpt, out, updates, remove)
    updates = {k: _as_saved(ckpt, k, v) for k, v in updates.items()}
    if not out.parent.is_dir():
        raise UsageError(f"The output folder {out.parent} does not exist.", hint="Create it first.")
    if in_place:
        _backup(src)
    if ckpt.format in ("hf-folder", "hf-sharded"):
        _write_folder(ckpt, out, updates, set(remove))
        return out
    with atomic_path(out) as tmp:
        if ckpt.format == "safetensors":
            _write_safetensors(src, tmp, {ckpt.key_map.get(k, ckpt.prefix + k): v for k, v in updates.items()},
                               {ckpt.key_map[k] for k in remove})
        elif ckpt.format == "pickle":
            _write_pickle(ckpt, tmp, updates, set(remove))
        elif ckpt.format == "npz":
            _write_npz(src, tmp, updates, set(remove))
        elif ckpt.format == "npy":
            with open(tmp, "wb") as fh:
                np.save(fh, updates["codebook"].numpy() if "codebook" in updates
                        else np.load(src, allow_pickle=False))
        else:  # pragma: no cover - formats come from load_checkpoint
            raise UsageError(f"Cannot write checkpoints of format {ckpt.format!r}.")
    return out


# --------------------------------------------------------------------------------------------
# validation and helpers


def refuse_overlap(out: Path, inputs: Collection[Path], *, allow_same: Path | None = None) -> None:
    """Refuse an output that is one of the ``inputs`` (same file: resolved path, link or hard
    link, ``os.path.samefile``), lies inside an input folder, or holds an input folder.
    ``allow_same`` is the one input ``--in-place`` may overwrite."""
    out_abs = Path(os.path.abspath(out))
    out_real = out_abs.resolve()
    for inp in inputs:
        if inp is None or not Path(inp).exists():
            continue
        inp = Path(inp)
        inp_real = inp.resolve()
        same = out_real == inp_real or (out_abs.exists() and os.path.samefile(out_abs, inp))
        if same:
            if allow_same is not None and inp == Path(allow_same):
                continue
            raise UsageError(f"Refusing to overwrite the input {inp}: the output {out} is that same file "
                             "(vqdoctor never writes over what it reads).",
                             hint="Write to a new path with --out NEW (or --in-place for the checkpoint, which keeps a backup).")
        if inp.is_dir() and out_real.is_relative_to(inp_real):
            raise UsageError(f"The output {out} lies inside the input folder {inp}.", hint="Write the output outside the input folder.")
        if out_abs.is_dir() and not out_abs.is_symlink() and inp_real.is_relative_to(out_real):
            raise UsageError(f"The output {out} holds the input {inp}; replacing it would destroy the input.",
                             hint="Write the output to a new folder.")


def _validate(ckpt: Checkpoint, out: Path, updates: Mapping[str, torch.Tensor], remove: Collection[str]) -> None:
    unknown = [k for k in remove if k not in ckpt.state]
    if unknown:
        raise UsageError(f"Cannot remove {unknown[0]!r}: the checkpoint has no such key.",
                         hint="Use the state keys `vqdoctor ls` shows.")
    both = set(updates) & set(remove)
    if both:
        raise UsageError(f"Key {sorted(both)[0]!r} is both updated and removed.", hint="Pick one.")
    bad = [k for k, v in updates.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UsageError(f"Update {bad[0]!r} is a {type(updates[bad[0]]).__name__}, not a tensor.")
    if ckpt.format == "npy" and (set(updates) - {"codebook"} or remove):
        raise UsageError(f"{ckpt.path} is a .npy file holding one array ('codebook'); it cannot take "
                         "other keys or lose that one.", hint="Convert it to .npz or .safetensors first.")
    folder = ckpt.format in ("hf-folder", "hf-sharded")
    if folder and out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, but the input is a model folder; the output is a folder.",
                         hint="Give a folder path as the output.")
    if not folder:
        if out.is_dir():
            raise UsageError(f"{out} is a folder; the output is one file.", hint="Give a file path.")
        suffix = out.suffix.lower()
        src_suffix = Path(ckpt.path).suffix.lower()
        ok = suffix in PICKLE_SUFFIXES if ckpt.format == "pickle" else suffix == src_suffix
        if not ok:
            raise UsageError(
                f"The output {out} must keep the input's format ({src_suffix}), but ends in "
                f"{out.suffix or '(nothing)'!r}.",
                hint=f"Name the output ...{src_suffix}.",
            )


def _as_saved(ckpt: Checkpoint, key: str, value: torch.Tensor) -> torch.Tensor:
    """On CPU, contiguous, in the original dtype when the key exists."""
    value = value.detach().to("cpu")
    if key in ckpt.state:
        value = value.to(ckpt.state.dtype(key))
    return value.contiguous()


def _backup(path: Path) -> Path:
    backup = path.with_name(path.name + ".bak")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.bak.{n}")
        n += 1
    with atomic_path(backup, folder=path.is_dir()) as tmp:
        if path.is_dir():
            shutil.copytree(path, tmp, dirs_exist_ok=True)
        else:
            shutil.copy2(path, tmp)
    return backup


# --------------------------------------------------------------------------------------------
# formats


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _write_safetensors(src: Path, dst: Path, updates: Mapping[str, torch.Tensor], remove: set[str]) -> None:
    """``updates``/``remove`` by original key. Other tensors' bytes are copied verbatim."""
    header, data_start = safetensors_header(src)
    metadata = header.pop("__metadata__", None)
    entries: list[tuple[str, str, list[int], tuple[int, int] | bytes]] = []
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if name in remove:
            continue
        if name in updates:
            t = updates[name]
            entries.append((name, info["dtype"], list(t.shape), _tensor_bytes(t)))
        else:
            begin, end = info["data_offsets"]
            entries.append((name, info["dtype"], list(info["shape"]), (begin, end)))
    for name, t in updates.items():
        if name not in header:
            if t.dtype not in ST_DTYPE_NAMES:
                raise UsageError(f"Tensor {name!r} has dtype {t.dtype}, which safetensors cannot store.")
            entries.append((name, ST_DTYPE_NAMES[t.dtype], list(t.shape), _tensor_bytes(t)))
    new_header: dict[str, object] = {}
    if metadata is not None:
        new_header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, source in entries:
        size = len(source) if isinstance(source, bytes) else source[1] - source[0]
        new_header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(new_header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(struct.pack("<Q", len(raw)))
        fout.write(raw)
        for _, _, _, source in entries:
            if isinstance(source, bytes):
                fout.write(source)
            else:
                _copy_range(fin, fout, data_start + source[0], source[1] - source[0])


def _copy_range(fin: BinaryIO, fout: BinaryIO, start: int, length: int) -> None:
    fin.seek(start)
    while length > 0:
        block = fin.read(min(_BLOCK, length))
        if not block:
            raise OSError(f"{fin.name} ended while copying (was it modified during the write?)")
        fout.write(block)
        length -= len(block)


def _write_pickle(ckpt: Checkpoint, dst: Path, updates: Mapping[str, torch.Tensor], remove: set[str]) -> None:
    src = Path(ckpt.path)
    obj = safe_torch_load(src, allow_globals=ckpt.allow_globals)
    if isinstance(obj, torch.Tensor):  # a bare tensor, state key "codebook"
        obj = updates.get("codebook", obj)
    else:
        container = obj
        for key in ckpt.container:
            container = container[key]
        for key in remove:
            del container[ckpt.key_map[key]]
        for key, value in updates.items():
            container[ckpt.key_map.get(key, ckpt.prefix + key)] = value
    torch.save(obj, dst, _use_new_zipfile_serialization=is_zip_pickle(src))


def _write_npz(src: Path, dst: Path, updates: Mapping[str, torch.Tensor], remove: set[str]) -> None:
    with zipfile.ZipFile(src) as zf:
        infos = [i for i in zf.infolist() if i.filename.endswith(".npy")]
        compressed = any(i.compress_type != zipfile.ZIP_STORED for i in infos)
    arrays: dict[str, np.ndarray] = {}
    with np.load(src, allow_pickle=False) as npz:
        for info in infos:
            key = info.filename[:-4]
            if key in remove:
                continue
            original = npz[key]
            arrays[key] = updates[key].numpy().astype(original.dtype) if key in updates else original
    for key, t in updates.items():
        if key not in arrays:
            arrays[key] = t.numpy()
    with open(dst, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)  # type: ignore[arg-type]


def _write_folder(ckpt: Checkpoint, out: Path, updates: Mapping[str, torch.Tensor], remove: set[str]) -> None:
    src = Path(ckpt.path)
    # Which shard each changed key lands in.
    shard_of: dict[str, str] = {}
    for key in (*updates, *remove):
        shard_of[key] = ckpt.files.get(key) or _closest_shard(ckpt, key)
    touched = set(shard_of.values())
    with atomic_path(out, folder=True) as tmp:
        for file in sorted(src.rglob("*")):
            rel = file.relative_to(src)
            if file.is_symlink() and inside_folder(src, rel.as_posix()) is None:
                continue  # a link leading out of the folder: neither followed nor copied
            if file.is_dir():
                (tmp / rel).mkdir(exist_ok=True)
            elif rel.as_posix() not in touched:
                shutil.copy2(file, tmp / rel)
        for shard in sorted(touched):
            if inside_folder(src, shard) is None or inside_folder(tmp, shard) is None:
                raise UsageError(f"Shard {shard!r} of {src} is not a plain file name inside the folder; "
                                 f"refusing to write outside {out}.", hint="Restore the index from the model's source.")
            keys = [k for k, s in shard_of.items() if s == shard]
            shard_updates = {ckpt.key_map.get(k, ckpt.prefix + k): updates[k] for k in keys if k in updates}
            shard_remove = {ckpt.key_map[k] for k in keys if k in remove}
            if shard.endswith(".safetensors"):
                _write_safetensors(src / shard, tmp / shard, shard_updates, shard_remove)
            else:
                obj = safe_torch_load(src / shard, allow_globals=ckpt.allow_globals)
                for key in shard_remove:
                    del obj[key]
                obj.update(shard_updates)
                torch.save(obj, tmp / shard, _use_new_zipfile_serialization=is_zip_pickle(src / shard))
        if ckpt.format == "hf-sharded":
            _rewrite_index(ckpt, src, tmp, updates, remove, shard_of)


def _closest_shard(ckpt: Checkpoint, key: str) -> str:
    """The shard holding the key that shares the longest dotted prefix with ``key``."""
    best, best_len = sorted(set(ckpt.files.values()))[-1], -1
    parts = key.split(".")
    for other, shard in ckpt.files.items():
        common = 0
        for a, b in zip(parts, other.split(".")):
            if a != b:
                break
            common += 1
        if common > best_len:
            best, best_len = shard, common
    return best


def _rewrite_index(ckpt: Checkpoint, src: Path, tmp: Path, updates: Mapping[str, torch.Tensor],
                   remove: set[str], shard_of: Mapping[str, str]) -> None:
    from vqdoctor.io.checkpoints import HF_FILES

    name = next(n for n in HF_FILES if n.endswith(".index.json") and (src / n).is_file())
    index = json.loads((src / name).read_text(encoding="utf-8"))
    weight_map = index["weight_map"]
    delta = 0
    changed = False
    for key in remove:
        del weight_map[ckpt.key_map[key]]
        delta -= _nbytes(ckpt, key)
        changed = True
    for key, t in updates.items():
        delta += t.numel() * t.element_size() - (_nbytes(ckpt, key) if key in ckpt.state else 0)
        if key not in ckpt.state:
            weight_map[ckpt.prefix + key] = shard_of[key]
            changed = True
    meta = index.get("metadata")
    if delta and isinstance(meta, dict) and "total_size" in meta:
        meta["total_size"] = int(meta["total_size"]) + delta
        changed = True
    if changed:
        index["weight_map"] = dict(sorted(weight_map.items()))
        (tmp / name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _nbytes(ckpt: Checkpoint, key: str) -> int:
    n = 1
    for s in ckpt.state.shape(key):
        n *= s
    return n * torch.empty(0, dtype=ckpt.state.dtype(key)).element_size()


# ------------------------------------------------------------------ verified outputs (vqdoctor fix)


def unverified_path(target: Path) -> Path:
    """A fresh path next to ``target`` with its suffix (the writers keep the format by suffix)."""
    for i in range(1000):
        cand = target.with_name(f"{TMP_PREFIX}{target.stem[:80]}-unverified-{os.getpid()}-{i}{target.suffix}")
        if not cand.exists():
            return cand
    raise UsageError(f"Cannot find a free temporary name next to {target}.", f"Remove them with: vqdoctor clean {target.parent}")


def remove_output(path: Path) -> None:
    """Remove a file or folder output (a temporary one that was not committed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def commit_verified(ckpt: Checkpoint, tmp: Path, target: Path, *, updates: Mapping[str, torch.Tensor],
                    remove: set[str], in_place: bool) -> Path:
    """Put the verified output in place: a rename where nothing is in the way, else the writer
    again (same updates, same bytes; it keeps the backup of --in-place and replaces atomically)."""
    if not in_place and (not target.exists() or (tmp.is_file() and target.is_file())):
        os.replace(tmp, target)  # atomic, over an existing file too
        return target
    remove_output(tmp)  # not left beside the output while the writer runs (it reports leftovers there)
    return write_checkpoint(ckpt, target, updates=updates, remove=remove, in_place=in_place)


__all__ = ["commit_verified", "refuse_overlap", "remove_output", "unverified_path", "write_checkpoint"]
