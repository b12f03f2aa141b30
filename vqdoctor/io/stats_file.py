"""Statistics of one shard (or of everything) in a file, and merging such files.

``vqdoctor inspect --shard i/n --save-stats FILE`` writes what :func:`vqdoctor.diagnose.gather`
collected on one slice of the data; ``vqdoctor merge FILE...`` adds the files up and builds the
report one pass over all the data would give (DESIGN.md, "Scale"; STYLE.md habit 2).

The file is safetensors. Its tensors are exact (int64 counts, float64 sums, the subsample in
its own dtype)::

    stats.<i>.counts (K,) int64        stats.<i>.x_sum (d,) float64     stats.<i>.sq_err_sum () float64
    stats.<i>.x_sq_sum (d,) float64    stats.<i>.mode_counts (K, M) int64 (when modes are tracked)
    subsample.latents (m, D)           subsample.sample (m,) int64      subsample.idx (s,) int64
    subsample.inputs (s, F)            subsample.modes (m,) int64       (when present)
    parking.<i>.best (K,) float32      parking.<i>.mode (K,) int64      (with modes: where dead codes sit)

and its metadata holds one JSON document under the key ``vqdoctor.stats``: ``schema``
(``"vqdoctor.stats/1"``), the checkpoint (path, format, nesting, sha256 ``fingerprint``, and how
it was loaded), the identity of every codebook (name, layout, kind, metric, size, dim, level and
``codes_sha256``, the sha256 of its effective codes as float32), the analysis options, the shard
``[i, n]`` (``null`` for all the data, or ``"shards": [...]`` after a merge), the data description
and notes, the subsample's mode names / source, and per codebook the scalar part of
:meth:`UsageStats.to_dict` (its arrays are the tensors above).

Files merge only when they describe the same thing: same checkpoint fingerprint, same codebooks
(same codes), same options that shape the result (seed, subsample size, min-count, projection,
codebook filter, kept counts), the same subsample (so the same data), the same number of
shards and no shard twice. Anything else is refused with a message naming what differs.
Merging sorts the parts by shard index first, so the sums are bit-identical in any argument
order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqdoctor.codebooks.model import Codebook, Discovery
from vqdoctor.core.collapse import DeadCodeParking
from vqdoctor.core.gathered import Gathered
from vqdoctor.core.usage import FORMAT as USAGE_FORMAT
from vqdoctor.core.usage import UsageStats
from vqdoctor.errors import InputFileError, UsageError
from vqdoctor.io.atomic import atomic_path
from vqdoctor.io.stats_checks import validate_stats
from vqdoctor.options import AnalysisOptions
from vqdoctor.report.schema import CheckpointInfo

SCHEMA = "vqdoctor.stats/1"
META_KEY = "vqdoctor.stats"
# Options that change the report: statistics gathered with different values cannot be merged.
MUST_AGREE = ("codebook", "min_count", "subsample", "projection", "seed", "keep_counts")
_ARRAYS = ("counts", "sq_err_sum", "x_sum", "x_sq_sum", "mode_counts")


@dataclass(frozen=True)
class CodebookIdentity:
    """What makes two codebooks the same for merging: their place and their codes."""

    name: str
    layout: str
    kind: str
    metric: str
    size: int
    dim: int
    level: int
    codes_sha256: str

    @classmethod
    def of(cls, cb: Codebook) -> CodebookIdentity:
        codes = cb.codes.detach().to(device="cpu", dtype=torch.float32).contiguous()
        digest = hashlib.sha256(codes.numpy().tobytes()).hexdigest()
        return cls(name=cb.name, layout=cb.layout, kind=cb.kind, metric=cb.metric, size=cb.size,
                   dim=cb.dim, level=cb.level, codes_sha256=digest)


def identities(discovery: Discovery) -> tuple[CodebookIdentity, ...]:
    return tuple(CodebookIdentity.of(cb) for cb in discovery.codebooks)


@dataclass(frozen=True)
class Statistics:
    """The statistics of some shards of the data, with everything needed to check that they
    can be merged and to rebuild the report (the checkpoint is re-loaded for its codebooks)."""

    checkpoint: CheckpointInfo
    codebooks: tuple[CodebookIdentity, ...]
    options: AnalysisOptions
    gathered: Gathered
    shards: tuple[int, ...] = (0,)  # which slices of the data these statistics cover ...
    shard_count: int = 1  # ... out of this many
    nesting: str | None = None  # the --nesting it was gathered with (a record; never used to load)

    @property
    def complete(self) -> bool:
        return self.shards == tuple(range(self.shard_count))

    def describe_shards(self) -> str:
        if self.shard_count == 1:
            return "all the data"
        return f"shard{'s' if len(self.shards) > 1 else ''} {', '.join(map(str, self.shards))} of {self.shard_count}"


# --------------------------------------------------------------------------------------------
# writing and reading


def save_stats(stats: Statistics, path: str | Path) -> Path:
    """Write ``stats`` to ``path`` atomically (temporary file + rename). Returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    g = stats.gathered
    tensors: dict[str, torch.Tensor] = {}
    per_codebook: list[dict[str, Any]] = []
    for i, (name, st) in enumerate(sorted(g.stats.items())):
        d = st.to_dict()
        scalars = {k: v for k, v in d.items() if k not in _ARRAYS}
        per_codebook.append({"name": name, **scalars})
        tensors[f"stats.{i}.counts"] = st.counts
        tensors[f"stats.{i}.sq_err_sum"] = st.sq_err_sum
        tensors[f"stats.{i}.x_sum"] = st.x_sum
        tensors[f"stats.{i}.x_sq_sum"] = st.x_sq_sum
        if st.mode_counts is not None:
            tensors[f"stats.{i}.mode_counts"] = st.mode_counts
        if g.parking is not None and name in g.parking:  # where the dead codes sit (merges by minimum)
            tensors[f"parking.{i}.best"] = g.parking[name].best
            tensors[f"parking.{i}.mode"] = g.parking[name].mode
    tensors["subsample.latents"] = g.sub_latents
    tensors["subsample.sample"] = g.sub_sample
    tensors["subsample.idx"] = torch.from_numpy(np.ascontiguousarray(g.sub_idx, dtype=np.int64))
    if g.sub_inputs is not None:
        tensors["subsample.inputs"] = g.sub_inputs
    if g.sub_modes is not None:
        tensors["subsample.modes"] = g.sub_modes
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {
        "schema": SCHEMA,
        "checkpoint": {**asdict(stats.checkpoint), "load_nesting": stats.nesting},
        "codebooks": [asdict(c) for c in stats.codebooks],
        "options": asdict(stats.options),
        "shards": list(stats.shards),
        "shard_count": stats.shard_count,
        "data": {"description": g.description, "vectors": g.vectors, "notes": list(g.notes),
                 "mode_names": list(g.mode_names), "mode_source": g.mode_source},
        "stats": per_codebook,
    }
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"Cannot create the folder {path.parent} for {path}: {err.strerror or err}.",
                             "Pick a writable --save-stats path.") from None
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return path


def load_stats(path: str | Path) -> Statistics:
    """Read a file written by :func:`save_stats`; a missing, truncated or foreign file is an
    :class:`InputFileError` that says what it is instead."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"Statistics file {path} does not exist.",
                             "Write one with: vqdoctor inspect CKPT --latents Z --shard i/n --save-stats FILE")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(META_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputFileError(f"{path} is not a readable statistics file ({exc}).",
                             "Pass files written by vqdoctor inspect --save-stats.") from None
    if raw is None:
        raise InputFileError(f"{path} is a safetensors file but not vqdoctor statistics (no {META_KEY!r} metadata).",
                             "Pass files written by vqdoctor inspect --save-stats.")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} is a damaged statistics file (its metadata is not JSON: {exc}).",
                             "Write it again with vqdoctor inspect --save-stats.") from None
    validate_stats(path, meta, tensors, schema=SCHEMA, usage_format=USAGE_FORMAT,
                   option_names=tuple(f.name for f in fields(AnalysisOptions)))
    ck = meta["checkpoint"]
    checkpoint = CheckpointInfo(path=ck["path"], format=ck["format"], nesting=ck["nesting"],
                                fingerprint=ck["fingerprint"])
    codebooks = tuple(CodebookIdentity(**c) for c in meta["codebooks"])
    options = AnalysisOptions(**meta["options"])
    stats: dict[str, UsageStats] = {}
    for i, entry in enumerate(meta["stats"]):
        d = {k: v for k, v in entry.items() if k != "name"}
        for a in _ARRAYS:
            t = tensors.get(f"stats.{i}.{a}")
            d[a] = None if t is None else t.tolist()
        stats[entry["name"]] = UsageStats.from_dict(d)
    parking: dict[str, DeadCodeParking] | None = {}
    for i, entry in enumerate(meta["stats"]):
        best, mode = tensors.get(f"parking.{i}.best"), tensors.get(f"parking.{i}.mode")
        if best is None or mode is None:
            parking = None  # not kept (older file): the report says dead_parked null
            break
        parking[entry["name"]] = DeadCodeParking(best.to(torch.float32), mode.to(torch.int64))  # type: ignore[index]
    data = meta["data"]
    sub_idx = tensors["subsample.idx"].numpy().astype(np.int64)
    gathered = Gathered(
        description=data["description"], stats=stats, vectors=int(data["vectors"]),
        sub_latents=tensors["subsample.latents"], sub_sample=tensors["subsample.sample"], sub_idx=sub_idx,
        sub_inputs=tensors.get("subsample.inputs"), mode_names=list(data["mode_names"]),
        mode_source=data["mode_source"], sub_modes=tensors.get("subsample.modes"), notes=list(data["notes"]),
        parking=parking or None,
    )
    return Statistics(
        checkpoint=checkpoint, codebooks=codebooks, options=options, gathered=gathered,
        shards=tuple(int(s) for s in meta["shards"]), shard_count=int(meta["shard_count"]),
        nesting=ck.get("load_nesting"),
    )


# --------------------------------------------------------------------------------------------
# merging


def _short(h: str) -> str:
    return h[:12] if h else "(none)"


def _sub_digest(g: Gathered) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(g.sub_idx, dtype=np.int64).tobytes())
    h.update(g.sub_latents.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_mergeable(a: Statistics, b: Statistics, *, names: tuple[str, str] = ("the first file", "another file")) -> None:
    """Raise :class:`UsageError` naming the first thing that differs between ``a`` and ``b``."""
    na, nb = names
    hint = "Merge only statistics written by inspect with the same checkpoint, codebooks, options and data."
    if a.checkpoint.fingerprint != b.checkpoint.fingerprint:
        raise UsageError(
            f"Cannot merge statistics of different checkpoints: {na} is of {a.checkpoint.path} "
            f"(sha256 {_short(a.checkpoint.fingerprint)}), {nb} of {b.checkpoint.path} "
            f"(sha256 {_short(b.checkpoint.fingerprint)}).", hint)
    ia, ib = {c.name: c for c in a.codebooks}, {c.name: c for c in b.codebooks}
    if set(ia) != set(ib):
        only_a, only_b = sorted(set(ia) - set(ib)), sorted(set(ib) - set(ia))
        raise UsageError(
            f"Cannot merge statistics of different codebooks: only {na} has {only_a or 'none'}, "
            f"only {nb} has {only_b or 'none'}.", "Use the same --codebook filter for every shard.")
    for name, ca in ia.items():
        cb = ib[name]
        for f in fields(CodebookIdentity):
            va, vb = getattr(ca, f.name), getattr(cb, f.name)
            if va != vb:
                what = "codes (sha256)" if f.name == "codes_sha256" else f.name
                raise UsageError(
                    f"Cannot merge statistics of different codebooks: codebook {name!r} has {what} "
                    f"{_short(va) if f.name == 'codes_sha256' else va} in {na} but "
                    f"{_short(vb) if f.name == 'codes_sha256' else vb} in {nb}.", hint)
    for opt in MUST_AGREE:
        va, vb = getattr(a.options, opt), getattr(b.options, opt)
        if va != vb:
            flag = "--" + opt.replace("_", "-")
            raise UsageError(
                f"Cannot merge statistics gathered with different options: {flag} is {va!r} in {na} "
                f"but {vb!r} in {nb}.", "Gather every shard with the same analysis options.")
    if a.shard_count != b.shard_count:
        raise UsageError(
            f"Cannot merge statistics of different shardings: {na} covers {a.describe_shards()}, "
            f"{nb} covers {b.describe_shards()}.", "Split the data the same way (--shard i/n with one n) for every file.")
    twice = sorted(set(a.shards) & set(b.shards))
    if twice:
        raise UsageError(
            f"Cannot merge: shard {twice[0]} of {a.shard_count} is in both {na} and {nb}; it would be counted twice.",
            "Pass each shard's file once.")
    ga, gb = a.gathered, b.gathered
    if (ga.mode_names, ga.mode_source) != (gb.mode_names, gb.mode_source) or _sub_digest(ga) != _sub_digest(gb):
        raise UsageError(
            f"Cannot merge statistics of different data: {na} ({ga.description}) and {nb} ({gb.description}) "
            "drew different subsamples or modes.", "Run every shard on the same data file with the same --labels.")


def merge_stats(parts: Sequence[Statistics], *, names: Sequence[str] | None = None) -> Statistics:
    """Add up the statistics of several shards (checked with :func:`check_mergeable`). The
    parts are summed in shard order, so the result does not depend on the order given."""
    if not parts:
        raise UsageError("No statistics to merge.", "Pass at least one file written by inspect --save-stats.")
    labels = list(names) if names is not None else [f"part {i + 1}" for i in range(len(parts))]
    for i in range(1, len(parts)):
        check_mergeable(parts[0], parts[i], names=(labels[0], labels[i]))
    seen: dict[int, str] = {}
    for part, label in zip(parts, labels):
        for s in part.shards:
            if s in seen:
                raise UsageError(f"Cannot merge: shard {s} of {part.shard_count} is in both {seen[s]} and {label}; "
                                 "it would be counted twice.", "Pass each shard's file once.")
            seen[s] = label
    ordered = sorted(parts, key=lambda p: min(p.shards))
    first = ordered[0]
    gathered = first.gathered
    for p in ordered[1:]:
        gathered = gathered.merge(p.gathered)
    notes = list(dict.fromkeys(n for p in ordered for n in p.gathered.notes))
    gathered = replace(gathered, notes=notes)
    return replace(first, gathered=gathered, shards=tuple(sorted(seen)))


def check_codebooks(stats: Statistics, discovery: Discovery, *, checkpoint: str) -> None:
    """The codebooks found again in the checkpoint must be those the statistics were gathered on."""
    now = {c.name: c for c in identities(discovery)}
    then = {c.name: c for c in stats.codebooks}
    if set(now) != set(then):
        raise UsageError(
            f"The statistics were gathered on codebooks {sorted(then)} but {checkpoint} now yields {sorted(now)}.",
            "Pass the checkpoint the statistics were made from (--checkpoint PATH).")
    for name, c in then.items():
        if now[name] != c:
            raise UsageError(f"Codebook {name!r} of {checkpoint} differs from the one the statistics were gathered on.",
                             "Pass the checkpoint the statistics were made from (--checkpoint PATH), read with "
                             f"the same --nesting (the statistics record {stats.nesting!r}).")


__all__ = [
    "META_KEY", "MUST_AGREE", "SCHEMA", "CodebookIdentity", "Statistics", "check_codebooks", "check_mergeable",
    "identities", "load_stats", "merge_stats", "save_stats",
]
