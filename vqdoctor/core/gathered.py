"""The statistics one pass over the data leaves behind, before any report is built, and the rules
by which they merge.

Everything in :class:`Gathered` is a sum (mergeable by addition, across shards and distributed
ranks) or the bounded subsample, which every shard draws identically (global sample indices, same
seed). :class:`Statistics` adds what is needed to check that two sets of statistics describe the
same thing (checkpoint, codebooks, options, data) before :func:`merge_stats` adds them up;
:mod:`vqdoctor.io.stats_file` saves and loads them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from vqdoctor.core.codebook import Codebook, Discovery
from vqdoctor.core.collapse import DeadCodeParking
from vqdoctor.core.results import CheckpointInfo
from vqdoctor.core.usage import UsageStats
from vqdoctor.errors import UsageError
from vqdoctor.options import AnalysisOptions

# Options that change the report: statistics gathered with different values cannot be merged.
MUST_AGREE = ("codebook", "min_count", "subsample", "projection", "seed", "keep_counts")


@dataclass
class Gathered:
    """Everything the report needs from the data: mergeable statistics per codebook (sums) and
    the bounded subsample (identical on every shard: drawn from global sample indices with the
    same seed). Shards and distributed ranks merge by adding ``stats``."""

    description: str
    stats: dict[str, UsageStats]  # codebook name -> statistics
    vectors: int
    sub_latents: torch.Tensor  # (m, D)
    sub_sample: torch.Tensor  # (m,) sample index of each subsample vector
    sub_idx: np.ndarray  # (s,) the samples drawn
    sub_inputs: torch.Tensor | None  # (s, F)
    mode_names: list[str]
    mode_source: str | None  # None: a single mode, no collapse analysis
    sub_modes: torch.Tensor | None  # (m,)
    notes: list[str] = field(default_factory=list)
    # codebook name -> nearest vector of each code with no vector (merges by minimum; None when
    # there are no modes or the statistics came from a file, which does not keep it)
    parking: dict[str, DeadCodeParking] | None = None

    def merge(self, other: "Gathered") -> "Gathered":
        if set(self.stats) != set(other.stats):
            raise UsageError("These statistics cover different codebooks and cannot be merged.",
                             f"One has {sorted(self.stats)}, the other {sorted(other.stats)}.")
        stats = {k: v.merge(other.stats[k]) for k, v in self.stats.items()}
        parking = None
        if self.parking is not None and other.parking is not None:
            parking = {k: v.merge(other.parking[k]) for k, v in self.parking.items()}
        return replace(self, stats=stats, vectors=self.vectors + other.vectors, parking=parking)


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
