"""Validation of a statistics file on read (``vqdoctor merge``): nothing in it is trusted.

:func:`validate_stats` checks the JSON metadata and the tensors of a file written by
:func:`vqdoctor.io.stats_file.save_stats` before anything is built from them: the schema and
every field's type, integer non-negative counts whose sum is the number of vectors, finite sums,
``0 <= shard < n`` without repeats, well-formed codebook hashes, known option names with values
in range, and tensors of the recorded shapes and dtypes. Each problem is an
:class:`~vqdoctor.errors.InputFileError` that names the file, the field and the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from vqdoctor.core.gathered import CodebookIdentity
from vqdoctor.errors import InputFileError

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HINT = ("The file is damaged or was edited; write it again with vqdoctor inspect CKPT --shard i/n "
         "--save-stats FILE.")
METRICS = ("euclidean", "cosine")
PROJECTIONS = ("tsne", "umap", "pca", "none")
# Ranges of the analysis options a file may carry (the CLI's own ranges, and caps on the rest).
_INT_OPTIONS = {"min_count": (1, 2**62), "subsample": (10, 10**8), "memory_budget_mb": (1, 1 << 20),
                "seed": (0, 2**63 - 1)}
MAX_SHARDS = 1 << 20


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, what: str, value: Any, expected: str) -> InputFileError:
        return InputFileError(f"Statistics file {self.path}: {what} is {_short(value)}, but {expected}.", _HINT)

    def obj(self, value: Any, what: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(what, value, "must be a JSON object")
        return value

    def key(self, doc: Mapping[str, Any], key: str, what: str) -> Any:
        if key not in doc:
            raise InputFileError(f"Statistics file {self.path}: {what} has no {key!r}.", _HINT)
        return doc[key]

    def text(self, value: Any, what: str, *, optional: bool = False) -> None:
        if not (isinstance(value, str) or (optional and value is None)):
            raise self.fail(what, value, "must be a string" + (" or null" if optional else ""))

    def integer(self, value: Any, what: str, lo: int, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(what, value, "must be a whole number")
        if value < lo or (hi is not None and value > hi):
            raise self.fail(what, value, f"must be in {lo}..{hi}" if hi is not None else f"must be >= {lo}")
        return value

    def strings(self, value: Any, what: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(what, value, "must be a list of strings")
        return value

    def tensor(self, tensors: Mapping[str, torch.Tensor], key: str, *, dtype: torch.dtype | None,
               shape: tuple[int | None, ...], floating: bool = False) -> torch.Tensor:
        if key not in tensors:
            raise InputFileError(f"Statistics file {self.path} has no tensor {key!r}.", _HINT)
        t = tensors[key]
        if dtype is not None and t.dtype != dtype:
            raise self.fail(f"tensor {key!r}", str(t.dtype).replace("torch.", ""), f"must be {str(dtype).replace('torch.', '')}")
        if floating and not t.is_floating_point():
            raise self.fail(f"tensor {key!r}", str(t.dtype).replace("torch.", ""), "must be a float tensor")
        if t.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise self.fail(f"the shape of tensor {key!r}", tuple(t.shape), f"must be {want}")
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad = t.reshape(-1)[~torch.isfinite(t.reshape(-1))][0].item()
            raise self.fail(f"a value of tensor {key!r}", bad, "every value must be finite")
        return t

    def non_negative(self, t: torch.Tensor, key: str) -> None:
        if t.numel() and int(t.min()) < 0:
            raise self.fail(f"a count in tensor {key!r}", int(t.min()), "counts must be >= 0")


def validate_stats(path: Path, meta: Any, tensors: Mapping[str, torch.Tensor], *, schema: str,
                   usage_format: str, option_names: tuple[str, ...]) -> None:
    """Raise :class:`InputFileError` for the first problem of the file at ``path``."""
    c = _Checker(path)
    meta = c.obj(meta, "the metadata")
    if meta.get("schema") != schema:
        raise InputFileError(f"{path} holds statistics of schema {meta.get('schema')!r}; this vqdoctor reads {schema!r}.",
                             "Write the statistics again with this version of vqdoctor.")
    ck = c.obj(c.key(meta, "checkpoint", "the metadata"), "'checkpoint'")
    for key in ("path", "format", "nesting"):
        c.text(c.key(ck, key, "'checkpoint'"), f"checkpoint.{key}")
    fp = c.key(ck, "fingerprint", "'checkpoint'")
    if not (isinstance(fp, str) and _HEX64.fullmatch(fp)):
        raise c.fail("checkpoint.fingerprint", fp, "must be a sha256 (64 hex digits)")
    c.text(ck.get("load_nesting"), "checkpoint.load_nesting", optional=True)

    raw_cbs = c.key(meta, "codebooks", "the metadata")
    if not isinstance(raw_cbs, list) or not raw_cbs:
        raise c.fail("'codebooks'", raw_cbs, "must be a non-empty list")
    names = [f.name for f in fields(CodebookIdentity)]
    identities: dict[str, Mapping[str, Any]] = {}
    for i, cb in enumerate(raw_cbs):
        cb = c.obj(cb, f"codebooks[{i}]")
        if set(cb) != set(names):
            raise c.fail(f"the fields of codebooks[{i}]", sorted(cb), f"must be {sorted(names)}")
        for key in ("name", "layout", "kind"):
            c.text(cb[key], f"codebooks[{i}].{key}")
        if cb["metric"] not in METRICS:
            raise c.fail(f"codebooks[{i}].metric", cb["metric"], f"must be one of {', '.join(METRICS)}")
        c.integer(cb["size"], f"codebooks[{i}].size", 1)
        c.integer(cb["dim"], f"codebooks[{i}].dim", 1)
        c.integer(cb["level"], f"codebooks[{i}].level", 0)
        if not (isinstance(cb["codes_sha256"], str) and _HEX64.fullmatch(cb["codes_sha256"])):
            raise c.fail(f"codebooks[{i}].codes_sha256", cb["codes_sha256"], "must be a sha256 (64 hex digits)")
        if cb["name"] in identities:
            raise c.fail(f"codebooks[{i}].name", cb["name"], "each codebook must appear once")
        identities[cb["name"]] = cb

    options = c.obj(c.key(meta, "options", "the metadata"), "'options'")
    unknown = sorted(set(options) - set(option_names))
    if unknown:
        raise c.fail("an option name", unknown[0], f"the known options are {', '.join(option_names)}")
    for key, (lo, hi) in _INT_OPTIONS.items():
        if key in options:
            c.integer(options[key], f"options.{key}", lo, hi)
    if "codebook" in options:
        c.text(options["codebook"], "options.codebook", optional=True)
    if "projection" in options and options["projection"] not in PROJECTIONS:
        raise c.fail("options.projection", options["projection"], f"must be one of {', '.join(PROJECTIONS)}")
    if "keep_counts" in options and not isinstance(options["keep_counts"], bool):
        raise c.fail("options.keep_counts", options["keep_counts"], "must be true or false")

    n = c.integer(c.key(meta, "shard_count", "the metadata"), "'shard_count'", 1, MAX_SHARDS)
    shards = c.key(meta, "shards", "the metadata")
    if not isinstance(shards, list) or not shards:
        raise c.fail("'shards'", shards, "must be a non-empty list of shard numbers")
    for s in shards:
        c.integer(s, "a shard number", 0, n - 1)
    if len(set(shards)) != len(shards):
        raise c.fail("'shards'", shards, "no shard may appear twice")

    data = c.obj(c.key(meta, "data", "the metadata"), "'data'")
    c.text(c.key(data, "description", "'data'"), "data.description")
    c.integer(c.key(data, "vectors", "'data'"), "data.vectors", 1)
    c.strings(c.key(data, "notes", "'data'"), "data.notes")
    mode_names = c.strings(c.key(data, "mode_names", "'data'"), "data.mode_names")
    c.text(c.key(data, "mode_source", "'data'"), "data.mode_source", optional=True)

    per = c.key(meta, "stats", "the metadata")
    if not isinstance(per, list) or len(per) != len(identities):
        raise c.fail("'stats'", per if not isinstance(per, list) else f"{len(per)} entries",
                     f"must hold one entry per codebook ({len(identities)})")
    expected_keys = {"stats.{i}.counts", "stats.{i}.sq_err_sum", "stats.{i}.x_sum", "stats.{i}.x_sq_sum"}
    known_tensors = {"subsample.latents", "subsample.sample", "subsample.idx", "subsample.inputs", "subsample.modes"}
    seen: set[str] = set()
    for i, entry in enumerate(per):
        entry = c.obj(entry, f"stats[{i}]")
        name = c.key(entry, "name", f"stats[{i}]")
        if name not in identities or name in seen:
            raise c.fail(f"stats[{i}].name", name, "must name each codebook of 'codebooks' once")
        seen.add(name)
        ident = identities[name]
        if entry.get("format") != usage_format:
            raise c.fail(f"stats[{i}].format", entry.get("format"), f"must be {usage_format!r}")
        k = c.integer(c.key(entry, "size", f"stats[{i}]"), f"stats[{i}].size", ident["size"], ident["size"])
        d = c.integer(c.key(entry, "dim", f"stats[{i}]"), f"stats[{i}].dim", 1)
        if entry.get("metric") not in METRICS:
            raise c.fail(f"stats[{i}].metric", entry.get("metric"), f"must be one of {', '.join(METRICS)}")
        m = entry.get("modes")
        if m is not None:
            c.integer(m, f"stats[{i}].modes", 1, max(1, len(mode_names)))
        v = c.integer(c.key(entry, "vectors", f"stats[{i}]"), f"stats[{i}].vectors", 0)
        e = c.integer(c.key(entry, "elements", f"stats[{i}]"), f"stats[{i}].elements", 0)
        if e != v * d:
            raise c.fail(f"stats[{i}].elements", e, f"must be vectors x dim = {v} x {d} = {v * d}")
        counts = c.tensor(tensors, f"stats.{i}.counts", dtype=torch.int64, shape=(k,))
        c.non_negative(counts, f"stats.{i}.counts")
        total = int(counts.sum())
        if total != v:
            raise c.fail(f"the sum of the counts of codebook {name!r}", total, f"it must equal its vectors ({v})")
        sq = c.tensor(tensors, f"stats.{i}.sq_err_sum", dtype=torch.float64, shape=())
        if float(sq) < 0:
            raise c.fail(f"tensor 'stats.{i}.sq_err_sum'", float(sq), "a sum of squares must be >= 0")
        c.tensor(tensors, f"stats.{i}.x_sum", dtype=torch.float64, shape=(d,))
        x_sq = c.tensor(tensors, f"stats.{i}.x_sq_sum", dtype=torch.float64, shape=(d,))
        if x_sq.numel() and float(x_sq.min()) < 0:
            raise c.fail(f"a value of tensor 'stats.{i}.x_sq_sum'", float(x_sq.min()), "a sum of squares must be >= 0")
        key = f"stats.{i}.mode_counts"
        if m is None:
            if key in tensors:
                raise InputFileError(f"Statistics file {path} has tensor {key!r} but stats[{i}].modes is null.", _HINT)
        else:
            mc = c.tensor(tensors, key, dtype=torch.int64, shape=(k, m))
            c.non_negative(mc, key)
            if not torch.equal(mc.sum(1), counts):
                raise c.fail(f"the per-code sums of tensor {key!r}", "different", f"they must equal 'stats.{i}.counts'")
        best, where = tensors.get(f"parking.{i}.best"), tensors.get(f"parking.{i}.mode")
        if best is not None or where is not None:  # where the dead codes sit (optional)
            if best is None or best.dtype != torch.float32 or tuple(best.shape) != (k,):
                raise c.fail(f"tensor 'parking.{i}.best'", None if best is None else (str(best.dtype), tuple(best.shape)),
                             f"must be float32 of shape ({k},) beside 'parking.{i}.mode'")
            where = c.tensor(tensors, f"parking.{i}.mode", dtype=torch.int64, shape=(k,))
            if bool(torch.isnan(best).any()) or (best.numel() and float(best.min()) < 0):
                raise c.fail(f"a value of tensor 'parking.{i}.best'", "NaN or negative", "squared distances are >= 0")
            if where.numel() and (int(where.min()) < -1 or int(where.max()) >= max(1, len(mode_names))):
                raise c.fail(f"a value of tensor 'parking.{i}.mode'", int(where.max()), "must be a mode number or -1")
        known_tensors |= {t.format(i=i) for t in expected_keys} | {key, f"parking.{i}.best", f"parking.{i}.mode"}
    extra = sorted(set(tensors) - known_tensors)
    if extra:
        raise c.fail("a tensor name", extra[0], "it is not part of the statistics format")

    lat = c.tensor(tensors, "subsample.latents", dtype=None, shape=(None, None), floating=True)
    rows = int(lat.shape[0])
    if rows < 1:
        raise c.fail("the rows of tensor 'subsample.latents'", rows, "must be >= 1")
    sample = c.tensor(tensors, "subsample.sample", dtype=torch.int64, shape=(rows,))
    idx = c.tensor(tensors, "subsample.idx", dtype=torch.int64, shape=(None,))
    if idx.numel() and (int(idx.min()) < 0 or not bool((idx[1:] > idx[:-1]).all())):
        raise c.fail("tensor 'subsample.idx'", idx[:6].tolist(), "it must hold increasing sample numbers >= 0")
    if sample.numel() and not bool(torch.isin(sample, idx).all()):
        raise c.fail("tensor 'subsample.sample'", sample[~torch.isin(sample, idx)][:3].tolist(),
                     "every value must be one of 'subsample.idx'")
    if "subsample.modes" in tensors:
        modes = c.tensor(tensors, "subsample.modes", dtype=torch.int64, shape=(rows,))
        if modes.numel() and (int(modes.min()) < 0 or int(modes.max()) >= max(1, len(mode_names))):
            raise c.fail("a mode in tensor 'subsample.modes'", int(modes.max()) if int(modes.min()) >= 0 else int(modes.min()),
                         f"modes are numbered 0..{max(1, len(mode_names)) - 1}")
    if "subsample.inputs" in tensors:
        c.tensor(tensors, "subsample.inputs", dtype=None, shape=(int(idx.numel()), None), floating=True)


__all__ = ["validate_stats"]
