"""Statistics of one shard (or of everything) in a file: :func:`save_stats` and :func:`load_stats`.

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

What may be merged is decided beside the statistics themselves
(:func:`vqdoctor.core.gathered.merge_stats`): files merge only when they describe the same thing: same checkpoint fingerprint, same codebooks
(same codes), same options that shape the result (seed, subsample size, min-count, projection,
codebook filter, kept counts), the same subsample (so the same data), the same number of
shards and no shard twice. Anything else is refused with a message naming what differs.
Merging sorts the parts by shard index first, so the sums are bit-identical in any argument
order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqdoctor.core.collapse import DeadCodeParking
from vqdoctor.core.gathered import CodebookIdentity, Gathered, Statistics
from vqdoctor.core.results import CheckpointInfo
from vqdoctor.core.usage import FORMAT as USAGE_FORMAT
from vqdoctor.core.usage import UsageStats
from vqdoctor.errors import InputFileError, UsageError
from vqdoctor.io.atomic import atomic_path
from vqdoctor.io.stats_checks import validate_stats
from vqdoctor.options import AnalysisOptions

SCHEMA = "vqdoctor.stats/1"
META_KEY = "vqdoctor.stats"
_ARRAYS = ("counts", "sq_err_sum", "x_sum", "x_sq_sum", "mode_counts")


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


__all__ = ["META_KEY", "SCHEMA", "load_stats", "save_stats"]
