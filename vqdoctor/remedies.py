"""Remedies that run when pasted: the ``vqdoctor fix`` command that repairs a finding, as an argv
list (JSON ``remedy_argv``) and as its shell-quoted text (``shlex.join``, JSON ``remedy``).

The command names the checkpoint as the user gave it, the data options the user gave (so the fix
sees the same vectors the diagnosis saw) and an output of the input's format (``fixed.pt`` for a
``.pt``, a folder for a Hugging Face folder). Where ``fix`` would refuse (an in-memory model, a
fix that needs data the report did not have, SimVQ on a one-array ``.npy``), there is no argv and
the text says why instead of suggesting a command that fails.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from vqdoctor.options import DataOptions

FIXES_NEEDING_DATA = ("kmeans", "revive")
_FILE_FORMATS = ("safetensors", "pickle", "npz", "npy")
_FOLDER_FORMATS = ("hf-folder", "hf-sharded")


@dataclass(frozen=True)
class Remedy:
    text: str  # shlex.join(argv) when there is a command; otherwise why there is none
    argv: tuple[str, ...] | None  # the command ("vqdoctor", "fix", ...), None when fix cannot run


@dataclass(frozen=True)
class RemedyContext:
    """What a remedy command needs to know about the run it repairs."""

    checkpoint: str  # the path as the user gave it
    format: str  # CheckpointInfo.format: safetensors | pickle | npz | npy | hf-folder | hf-sharded | memory
    data_args: tuple[str, ...] = ()  # the user's data options, as flags (see :func:`data_args`)
    has_data: bool = True  # whether the diagnosis had vectors (kmeans/revive need them)
    # merge: the data options (and, without --checkpoint, the checkpoint) are not known, since what a
    # statistics file records is never trusted: the command is shown as a template with what to add
    data_known: bool = True
    checkpoint_known: bool = True


def data_args(data: DataOptions, *, metric: str = "auto") -> tuple[str, ...]:
    """The data options of ``data`` as ``vqdoctor fix`` flags, in a fixed order (defaults left out)."""
    out: list[str] = []
    for flag, value in (
        ("--latents", data.latents), ("--channel-axis", data.channel_axis), ("--inputs", data.inputs),
        ("--labels", data.labels), ("--image-size", data.image_size), ("--clip-seconds", data.clip_seconds),
        ("--sample-rate", data.sample_rate), ("--model", data.model), ("--encoder", data.encoder),
        ("--encode-method", data.encode_method),
    ):  # fmt: skip
        if value is not None:
            out += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    for name, arg in data.model_args:
        out += ["--model-arg", f"{name}={_model_value(arg)}"]
    if data.pixel_range is not None:  # one token: a value starting with '-' would read as a flag
        out.append(f"--pixel-range={data.pixel_range[0]:g},{data.pixel_range[1]:g}")
    for name in data.allow_globals:
        out += ["--allow-global", name]
    if data.nesting is not None:
        out += ["--nesting", data.nesting]
    if data.max_vectors is not None:
        out += ["--max-vectors", str(data.max_vectors)]
    if metric != "auto":
        out += ["--metric", metric]
    return tuple(out)


def _model_value(value: object) -> str:
    """A ``--model-arg`` value as text that reads back as the same value (cli/common.parse_model_value)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "none"}[value]
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return '"' + value + '"' if value.strip().lower() in ("true", "false", "none", "null") else value
        return '"' + value + '"'  # a number kept as a string
    return repr(value) if isinstance(value, float) else str(value)


def glob_literal(name: str) -> str:
    """``name`` as a glob that matches only itself (``--codebook`` takes globs)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def output_name(ctx: RemedyContext, stem: str) -> str | None:
    """An output path of the input's format that is not the input; None where fix writes no file."""
    src = Path(ctx.checkpoint)
    if ctx.format in _FOLDER_FORMATS:
        suffix = ""
    elif ctx.format in _FILE_FORMATS:
        suffix = src.suffix or {"safetensors": ".safetensors", "npz": ".npz", "npy": ".npy"}.get(ctx.format, ".pt")
    else:
        return None
    name = f"{stem}{suffix}"
    return f"{stem}-2{suffix}" if name == src.name else name


def fix_remedy(fix: str, codebook: str, ctx: RemedyContext) -> Remedy:
    """The ``vqdoctor fix FIX`` command for ``codebook`` of ``ctx.checkpoint`` (or why there is none)."""
    stem = "simvq" if fix == "simvq" else "fixed"
    out = output_name(ctx, stem)
    if out is None:
        return Remedy(f"`vqdoctor fix {fix}` writes checkpoint files, not a {ctx.format} model: save its state_dict "
                      f"(safetensors.torch.save_file) and run `vqdoctor fix {fix} FILE.safetensors --codebook {shlex.quote(codebook)}` on it",
                      None)
    if fix == "simvq" and ctx.format == "npy":
        return Remedy("`vqdoctor fix simvq` adds a W tensor, which a one-array .npy cannot hold: convert the codebook "
                      "to .npz or .safetensors and run `vqdoctor fix simvq` on that", None)
    if fix in FIXES_NEEDING_DATA and not ctx.has_data:
        return Remedy(f"`vqdoctor fix {fix}` needs the vectors that reach the quantizer: run `vqdoctor fix {fix} "
                      f"{shlex.quote(ctx.checkpoint)} --latents Z.npy --out {out}` with your latents", None)
    argv = ["vqdoctor", "fix", fix, ctx.checkpoint, "--codebook", glob_literal(codebook)]
    if fix == "simvq":
        argv += ["--mode", "paper"]
    argv += [*ctx.data_args, "--out", out]
    lacking = []
    if not ctx.checkpoint_known:
        lacking.append(f"{ctx.checkpoint} is the file the statistics were made from")
    if not ctx.data_known and fix in FIXES_NEEDING_DATA:
        lacking.append("add the data options the shards were inspected with; a statistics file's own are not trusted")
    if lacking:
        return Remedy(f"{shlex.join(argv)} ({'; '.join(lacking)})", None)
    return Remedy(shlex.join(argv), tuple(argv))
