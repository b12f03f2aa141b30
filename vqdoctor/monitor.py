"""A training-time monitor: forward hooks on the quantizers of a live model that accumulate the
mergeable usage statistics (counts and error sums, never the vectors) of every codebook.

::

    monitor = vqdoctor.Monitor(model, every_n_steps=10)
    for step, batch in enumerate(loader):
        loss = model(batch); loss.backward(); opt.step()
        if step % 1000 == 999:
            print(monitor.report().codebooks[0].usage.utilization)
            monitor.reset()
    monitor.remove()

Which modules: the codebooks the detectors find in ``module.state_dict()`` (the names
``vqdoctor inspect`` gives the same weights saved to a file), each attached to the module that
quantizes with it: the outermost vector-quantize-pytorch quantizer holding its tensors
(``VectorQuantize``, ``ResidualVQ``, ``GroupedResidualVQ``, ``SimVQ``, ``ResidualSimVQ``, ...,
recognised by class name), else the innermost module holding them (the parent of a bare
``nn.Embedding`` table; the owner of a ``ModuleList`` of levels). A forward *pre*-hook on that
module (on its ``encode`` where it has no forward of its own: transformers' Encodec, Mimi and
X-Codec quantizers) takes its input (what reaches the quantizer, before ``project_in``), and runs it through the same chain ``inspect`` runs
(``vqdoctor.core.chain``: channel groups, ``project_in``, heads, the residual of every level,
nearest code by the codebook's metric) with the weights of that moment, i.e. the codebook the
module is about to use. The input of one call in every ``every_n_steps`` calls of each quantizer
is recorded (the first call, then every n-th). A codebook that is not initialised yet
(vector-quantize-pytorch's ``kmeans_init`` before its first batch) is not recorded.

Under torch.distributed, :meth:`Monitor.report` sums the statistics of every rank
(``UsageStats.all_reduce``; every rank must call it). :meth:`Monitor.report` returns a
:class:`~vqdoctor.report.schema.Report` (usage from the recorded calls; EMA, geometry and W from
the current weights; no data-mode analysis) and warns (:class:`CollapseWarning`, and the
``on_verdict`` callback) when a verdict turns worse than in the previous report: once per
transition (ok -> warn, ok -> fail, warn -> fail), not at every report while it stays so.
:meth:`Monitor.check` returns the report with those transitions (:class:`Transition`) for an
integration to log; ``Monitor.collapse_started`` holds the last report's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vqdoctor import __version__
from vqdoctor.codebooks.registry import find_codebooks, select
from vqdoctor.core.chain import run_stack, stack_input_dim
from vqdoctor.core.codebook import Codebook, Discovery, Stack
from vqdoctor.core.ema import ema_metrics
from vqdoctor.core.geometry import geometry_metrics, w_metrics
from vqdoctor.core.usage import UsageStats
from vqdoctor.errors import CodebookNotFoundError, DataError, UsageError
from vqdoctor.io.checkpoints import _common_prefix
from vqdoctor.io.store import TensorStore
from vqdoctor.remedies import RemedyContext
from vqdoctor.report.schema import CheckpointInfo, CodebookReport, DataInfo, Report, Verdict
from vqdoctor.verdicts import FAMILIES, codebook_verdicts, diagnosis

FORMAT = "vqdoctor.monitor/1"
# vector-quantize-pytorch (and common) quantizer classes: hooked as a whole, never their insides
QUANTIZER_CLASSES = frozenset({
    "VectorQuantize", "ResidualVQ", "GroupedResidualVQ", "SimVQ", "ResidualSimVQ", "GroupedResidualSimVQ",
    "VectorQuantizer", "VectorQuantizer2", "EMAVectorQuantizer", "GumbelQuantize", "ResidualVectorQuantization",
    "ResidualVectorQuantizer", "SplitResidualVectorQuantizer",
})
_TABLES = (torch.nn.Embedding, torch.nn.Linear, torch.nn.ParameterList, torch.nn.ParameterDict)
_CONTAINERS = (torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.ParameterList, torch.nn.ParameterDict)
_RANK = {"ok": 0, "insufficient": 0, "warn": 1, "fail": 2}  # insufficient: too few vectors to judge, not a collapse
VERDICTS_DOC = "docs/verdicts.md"  # the verdict table: what each check reads and its bounds
# the checks whose turning worse is announced by default: those of the collapse families
COLLAPSE_CHECKS = tuple(c for family, checks in FAMILIES if "collapse" in family for c in checks)


class CollapseWarning(UserWarning):
    """A Monitor verdict turned worse (ok -> warn/fail, warn -> fail) since the previous report."""


@dataclass(frozen=True)
class Transition:
    """A verdict that turned worse between two reports of a :class:`Monitor`."""

    codebook: str | None
    check: str  # e.g. "utilization"
    before: str  # status in the previous report ("ok" when there was none)
    status: str  # "warn" | "fail"
    value: float | None
    message: str  # the verdict's line, e.g. "utilization is 3% of codes; expected >= 24%"
    remedy: str | None
    step: int | None  # the training step given to report()/check(), else None
    calls: int  # forward calls of the quantizers seen so far (recorded or not)

    def __str__(self) -> str:
        when = f"at step {self.step:,}" if self.step is not None else f"after {self.calls:,} quantizer calls"
        then = f"; repair a saved checkpoint with: {self.remedy}" if self.remedy else ""
        return (f"vqdoctor: codebook {self.codebook!r} {self.check} turned {self.status} (was {self.before}) {when}: "
                f"{self.message}{then} (see {VERDICTS_DOC})")


@dataclass(frozen=True)
class MonitorCheck:
    """What :meth:`Monitor.check` returns: the report and the verdicts that turned worse with it."""

    report: Report
    collapse_started: list[Transition]
    step: int | None


@dataclass
class _Watched:
    """One hooked quantizer module and the stacks it runs."""

    path: str  # name in module.named_modules() ("" for the root)
    module: torch.nn.Module
    stacks: tuple[str, ...]  # names of the stacks it quantizes with
    channel_axis: int | None  # where the channels are in its input; None: decided from the shape
    calls: int = 0
    recorded: int = 0
    handle: Any = None
    skipped: str | None = None  # why the last call was not recorded
    via_encode: bool = False  # hooked on encode() (no forward of its own), not forward


@dataclass(frozen=True)
class _Layout:
    prefix: str  # common prefix stripped from the state-dict keys (``module.`` of DDP ...)
    codebook: str | None  # glob over codebook names / keys
    budget_bytes: int
    config: dict[str, Any] | None = None  # a Hugging Face model's config (switches not in the weights: cosine)


def _model_config(module: torch.nn.Module) -> dict[str, Any] | None:
    """The ``config`` of a transformers model (or of the model inside DDP), as a dict."""
    for m in (module, getattr(module, "module", None)):
        to_dict = getattr(getattr(m, "config", None), "to_dict", None)
        if callable(to_dict):
            out = to_dict()
            return out if isinstance(out, dict) else None
    return None


def _channel_axis(module: torch.nn.Module) -> int | None:
    """vector-quantize-pytorch's layout switches; None where the module has none."""
    if getattr(module, "accept_image_fmap", False) or getattr(module, "accept_3d_fmap", False):
        return 1
    if getattr(module, "channel_first", False) or getattr(module, "channel_last", True) is False:
        return 1
    if type(module).__name__ in QUANTIZER_CLASSES:
        return -1
    return None


def _stack_keys(stack: Stack) -> list[str]:
    keys = [k for cb in stack.codebooks for k in cb.keys.values()]
    for lin in (stack.project_in, stack.project_out):
        if lin is not None:
            keys += list(lin.keys)
    return keys


def _contains(path: str, key: str) -> bool:
    return path == "" or key.startswith(path + ".")


def _owner(modules: dict[str, torch.nn.Module], keys: list[str]) -> str | None:
    """The module that quantizes with the tensors ``keys`` (full state-dict names)."""
    holding = [p for p in modules if all(_contains(p, k) for k in keys)]
    if not holding:
        return None
    known = [p for p in holding if type(modules[p]).__name__ in QUANTIZER_CLASSES]
    if known:
        return min(known, key=lambda p: (p.count(".") if p else -1, p))  # outermost
    inner = max(holding, key=lambda p: (p.count(".") if p else -1, p))
    if isinstance(modules[inner], _TABLES) and inner:
        inner = inner.rpartition(".")[0]
    while inner and isinstance(modules[inner], _CONTAINERS):  # never called itself: its owner is
        inner = inner.rpartition(".")[0]
    return inner


def _entry(module: torch.nn.Module) -> str:
    """How the model calls ``module``: ``forward``, or ``encode`` for a module without a
    forward of its own (transformers' Encodec, Mimi and X-Codec quantizers are called as
    ``quantizer.encode(embeddings, ...)``)."""
    if type(module).forward is torch.nn.Module.forward and callable(getattr(module, "encode", None)):
        return "encode"
    return "forward"


def _levels_asked(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """How many levels a codec quantizer's ``encode(embeddings, bandwidth | num_quantizers)`` call
    runs: transformers' Encodec and X-Codec take a bandwidth (``get_num_quantizers_for_bandwidth``),
    Mimi's residual quantizers a number of quantizers; None: all of them."""
    extra = args[1] if len(args) > 1 else kwargs.get("bandwidth", kwargs.get("num_quantizers"))
    if extra is None or isinstance(extra, bool) or not isinstance(extra, (int, float)):
        return None
    per_bandwidth = getattr(module, "get_num_quantizers_for_bandwidth", None)
    if callable(per_bandwidth):
        return int(per_bandwidth(extra))
    return int(extra)


class _MethodHook:
    """A pre-hook on a method other than ``forward``: the method shadowed on the instance."""

    def __init__(self, module: torch.nn.Module, method: str, hook: Callable[..., None]) -> None:
        self.module, self.method = module, method
        original = getattr(module, method)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            hook(module, args, kwargs)
            return original(*args, **kwargs)

        setattr(module, method, wrapped)

    def remove(self) -> None:
        if self.method in vars(self.module):
            delattr(self.module, self.method)


def _discover(state: dict[str, torch.Tensor], layout: _Layout) -> Discovery:
    p = layout.prefix
    store = TensorStore.from_dict({k[len(p):]: v for k, v in state.items() if k.startswith(p)})
    found = find_codebooks(store, config=layout.config)
    if layout.codebook is not None:
        found = select(found, layout.codebook)
    return found


def _vectors(x: torch.Tensor, axis: int | None, width: int, where: str) -> torch.Tensor:
    """The module's input (b, ..., d, ...) as (N, d) rows, channels at ``axis``."""
    if axis is None:
        # (b, n, d) sequences: channels last, else (b, d, T); feature maps of 4+ dims: channels
        # first after the batch (torch's conv layout: (b, d, h, w)), else the first axis of that size
        sizes = list(x.shape)
        order = [x.ndim - 1, 1] if x.ndim <= 3 else [1, x.ndim - 1]
        axis = next((i for i in order + list(range(1, x.ndim)) if sizes[i] == width), 1)
    if x.ndim > 2:
        x = x.movedim(axis, -1)
    if x.shape[-1] != width:
        raise DataError(f"The input of {where} has shape {tuple(x.shape)}; its codebooks read {width} channels.")
    return x.reshape(-1, width)


def _report_of(stack: Stack, cb: Codebook, st: UsageStats | None) -> CodebookReport:
    codes = cb.codes.float()
    usage = st.compute(space="the quantizer's input (live)") if st is not None and st.vectors else None
    ema = ema_metrics(cb.ema, cb.size) if cb.ema is not None and cb.ema.cluster_size is not None else None
    geometry = geometry_metrics(codes, metric=cb.metric)
    w = w_metrics(cb.w.float(), source=cb.keys.get("w", "W")) if cb.w is not None else None
    counts = st.counts.cpu().tolist() if st is not None and st.vectors else None
    return CodebookReport(
        name=cb.name, stack=stack.name, layout=cb.layout, kind=cb.kind, metric=cb.metric, size=cb.size,
        dim=cb.dim, level=cb.level, head=cb.head, keys=dict(cb.keys), usage=usage, ema=ema, geometry=geometry,
        w=w, tokens_collapse=None, counts=counts, note=cb.note,
    )


@dataclass(eq=False)
class Monitor:
    """Hooks on the quantizers of ``module`` that count what reaches each codebook (see the
    module docstring). ``every_n_steps``: record one forward call of each quantizer in every n;
    ``codebook``: a glob to watch only some codebooks; ``on_verdict``: called with each verdict
    of ``announce`` (default: the collapse checks: utilization, dead codes, perplexity, EMA dead
    codes) that turned worse at :meth:`report`; ``warn``: also emit a :class:`CollapseWarning`."""

    module: torch.nn.Module = field(repr=False)
    every_n_steps: int = 10
    codebook: str | None = None
    on_verdict: Callable[[Verdict], None] | None = None
    warn: bool = True
    announce: tuple[str, ...] = COLLAPSE_CHECKS
    memory_budget_mb: int = 64
    _watched: list[_Watched] = field(init=False, repr=False)
    _stats: dict[str, UsageStats] = field(init=False, repr=False)
    _layout: _Layout = field(init=False, repr=False)
    _last: dict[tuple[str, str | None], str] = field(init=False, repr=False)
    collapse_started: list[Transition] = field(init=False, repr=False)  # of the last report
    enabled: bool = field(default=True, repr=False)  # False: the hooks neither count nor record calls

    def __post_init__(self) -> None:
        if not isinstance(self.module, torch.nn.Module):
            raise UsageError(f"Monitor watches a torch.nn.Module; got {type(self.module).__name__}.",
                             "Pass the model (or the quantizer) itself.")
        if not isinstance(self.every_n_steps, int) or self.every_n_steps < 1:
            raise UsageError(f"every_n_steps must be a whole number >= 1, got {self.every_n_steps!r}.")
        state = self.module.state_dict()
        self._layout = _Layout(prefix=_common_prefix(list(state)), codebook=self.codebook,
                               budget_bytes=self.memory_budget_mb << 20, config=_model_config(self.module))
        found = _discover(state, self._layout)
        modules = dict(self.module.named_modules())
        by_owner: dict[str, list[str]] = {}
        for stack in found.stacks:
            owner = _owner(modules, [self._layout.prefix + k for k in _stack_keys(stack)])
            if owner is not None:
                by_owner.setdefault(owner, []).append(stack.name)
        if not by_owner:
            raise CodebookNotFoundError(
                f"No quantizer with a codebook found in this {type(self.module).__name__}"
                + (f" matching {self.codebook!r}." if self.codebook else "."),
                "Monitor hooks modules whose weights vqdoctor recognises as codebooks "
                "(vqdoctor.find_codebooks(model) shows them); codebook-free quantizers (FSQ, LFQ) have none.")
        self._watched = [_Watched(path=p, module=modules[p], stacks=tuple(names), channel_axis=_channel_axis(modules[p]))
                         for p, names in by_owner.items()]
        watched = {n for w in self._watched for n in w.stacks}
        self._stats = {cb.name: UsageStats.empty(cb.size, cb.dim, metric=cb.metric)
                       for s in found.stacks if s.name in watched for cb in s.codebooks if cb.assignable}
        self._last = {}
        self.collapse_started = []
        for w in self._watched:
            if _entry(w.module) == "forward":
                w.handle = w.module.register_forward_pre_hook(self._hook(w), with_kwargs=True)
            else:
                w.via_encode = True
                w.handle = _MethodHook(w.module, "encode", self._hook(w))

    # ---------------------------------------------------------------------------- recording

    def _hook(self, w: _Watched) -> Callable[..., None]:
        def pre_hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if not self.enabled:
                return
            w.calls += 1
            if (w.calls - 1) % self.every_n_steps:
                return
            x = args[0] if args else kwargs.get("x", next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None))
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                with torch.no_grad():
                    self._record(w, x.detach(), _levels_asked(module, args, kwargs) if w.via_encode else None)

        return pre_hook

    def _stacks_of(self, w: _Watched) -> list[Stack]:
        prefix = w.path + "." if w.path else ""
        found = _discover(dict(w.module.state_dict(prefix=prefix)), self._layout)
        return [s for s in found.stacks if s.name in w.stacks]

    def _record(self, w: _Watched, x: torch.Tensor, levels: int | None = None) -> None:
        stacks = self._stacks_of(w)
        waiting = [cb.name for s in stacks for cb in s.codebooks if cb.ema is not None and cb.ema.initted is False]
        if waiting:
            w.skipped = f"codebook {waiting[0]} not initialised yet (kmeans_init)"
            return
        widths = {stack_input_dim(s) if s.channels is None else s.channels[1] for s in stacks}
        width = max(v for v in widths if v is not None)
        vecs = _vectors(x, w.channel_axis, width, w.path or type(w.module).__name__).float()
        for stack in stacks:
            # a codec asked for fewer levels (a lower bandwidth) runs only the first ones: level i
            # reads the residual of the levels before it, so the others are simply not counted
            used = None if levels is None else {cb.name for cb in stack.codebooks[:levels]}
            for lo in run_stack(stack, vecs, budget_bytes=self._layout.budget_bytes):
                if used is not None and lo.codebook.name not in used:
                    continue
                st = self._stats.get(lo.codebook.name)
                if st is None:
                    st = self._stats[lo.codebook.name] = UsageStats.empty(lo.codebook.size, lo.codebook.dim, metric=lo.codebook.metric)
                st.update(lo.idx, lo.sq_err, lo.vectors)
        w.recorded += 1
        w.skipped = None

    # ---------------------------------------------------------------------------- results

    @property
    def quantizers(self) -> dict[str, tuple[str, ...]]:
        """Hooked module path -> names of the stacks it quantizes with."""
        return {w.path: w.stacks for w in self._watched}

    @property
    def recorded_calls(self) -> dict[str, int]:
        """Hooked module path -> forward calls recorded since the last reset."""
        return {w.path: w.recorded for w in self._watched}

    def statistics(self, *, sync: bool = True) -> dict[str, UsageStats]:
        """Codebook name -> a copy of its statistics; with ``sync`` summed over the ranks when
        torch.distributed is initialised (every rank must call it)."""
        out = {name: self._stats[name].copy() for name in sorted(self._stats)}
        if sync:
            for name in sorted(out):
                out[name].all_reduce()
        return out

    def report(self, *, sync: bool = True, step: int | None = None) -> Report:
        """The report of what was recorded since the last :meth:`reset` (usage), with EMA,
        geometry and W of the current weights, verdicts and diagnosis. Warns about verdicts
        that turned worse since the previous report (``step``: the training step named in the
        warning); they are in ``collapse_started`` until the next report."""
        return self._check(sync, step, stacklevel=4).report

    def check(self, *, sync: bool = True, step: int | None = None) -> MonitorCheck:
        """:meth:`report`, with the verdicts that turned worse since the previous report."""
        return self._check(sync, step, stacklevel=4)

    def _check(self, sync: bool, step: int | None, *, stacklevel: int) -> MonitorCheck:
        stats = self.statistics(sync=sync)
        reports, verdicts = [], []
        label = f"<live {type(self.module).__name__}>"
        for w in self._watched:
            for stack in self._stacks_of(w):
                for cb in stack.codebooks:
                    rep = _report_of(stack, cb, stats.get(cb.name))
                    reports.append(rep)
                    verdicts.extend(codebook_verdicts(rep, remedy=RemedyContext(label, "memory")))
        started = self._announce(verdicts, step, stacklevel=stacklevel)
        vectors = max((s.vectors for s in stats.values()), default=0)
        calls = sum(w.recorded for w in self._watched)
        notes = [f"Monitor: {calls} forward calls recorded (1 in {self.every_n_steps}); tokens and embeddings "
                 "collapse need data modes (use vqdoctor.inspect on saved latents)."]
        notes += [f"{w.path or '(root)'}: last call skipped: {w.skipped}." for w in self._watched if w.skipped]
        report = Report(
            checkpoint=CheckpointInfo(path=label, format="live", nesting="(top level)", fingerprint=""),
            data=DataInfo(source=f"Monitor hooks on {', '.join(w.path or '(root)' for w in self._watched)}",
                          vectors=vectors or None, dim=None, mode_source=None),
            codebooks=reports, embeddings_collapse=None, verdicts=verdicts,
            diagnosis=diagnosis(reports, None, verdicts), notes=notes, vqdoctor_version=__version__,
        )
        return MonitorCheck(report=report, collapse_started=started, step=step)

    def _announce(self, verdicts: list[Verdict], step: int | None, *, stacklevel: int) -> list[Transition]:
        started: list[Transition] = []
        calls = max((w.calls for w in self._watched), default=0)
        for v in verdicts:
            if v.check not in self.announce:
                continue
            key = (v.check, v.codebook)
            before = self._last.get(key, "ok")
            self._last[key] = v.status
            if _RANK[v.status] > _RANK[before]:
                started.append(Transition(codebook=v.codebook, check=v.check, before=before, status=v.status,
                                          value=v.value, message=v.message, remedy=v.remedy, step=step, calls=calls))
                if self.on_verdict is not None:
                    self.on_verdict(v)
        self.collapse_started = started
        if self.warn:
            for t in started:
                warnings.warn(str(t), CollapseWarning, stacklevel=stacklevel)  # 4: the caller of check()/report()
        return started

    # ---------------------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget the statistics (the sampling phase of ``every_n_steps`` goes on)."""
        for name, st in self._stats.items():
            self._stats[name] = UsageStats.empty(st.size, st.dim, metric=st.metric, device=st.device)
        for w in self._watched:
            w.recorded = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain data (ints, floats, lists): statistics and call counters, for a training
        checkpoint; restore with :meth:`load_state_dict`."""
        return {
            "format": FORMAT,
            "every_n_steps": self.every_n_steps,
            "calls": {w.path: w.calls for w in self._watched},
            "recorded": {w.path: w.recorded for w in self._watched},
            "stats": {name: st.to_dict() for name, st in sorted(self._stats.items())},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise DataError(f"Not a Monitor state of format {FORMAT!r} (got {got!r}).",
                            "Pass what Monitor.state_dict() returned.")
        mine = {w.path for w in self._watched}
        theirs = set(state.get("calls", {}))
        if theirs != mine or set(state.get("stats", {})) != set(self._stats):
            raise DataError(f"This Monitor state is of other quantizers or codebooks ({sorted(theirs)} vs {sorted(mine)}).",
                            "Load it into a Monitor of the same model (and the same codebook= filter).")
        stats = {name: UsageStats.from_dict(d) for name, d in state["stats"].items()}
        for name, st in stats.items():
            old = self._stats[name]
            if (st.size, st.dim, st.metric) != (old.size, old.dim, old.metric):
                raise DataError(f"Codebook {name}: the state has K={st.size}, d={st.dim}, the model K={old.size}, d={old.dim}.")
        self._stats = stats
        for w in self._watched:
            w.calls = int(state["calls"][w.path])
            w.recorded = int(state["recorded"][w.path])

    def remove(self) -> None:
        """Take the hooks off the model (the statistics stay readable)."""
        for w in self._watched:
            if w.handle is not None:
                w.handle.remove()
                w.handle = None

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
