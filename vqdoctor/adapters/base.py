"""What every Hugging Face adapter shares: matching a ``config.json``, building the VQ model
offline, and reading the tensor that reaches its quantizer.

An :class:`Adapter` is one model family (a transformers class and its use nested in larger
models). Its steps, each small and overridable:

- :meth:`Adapter.matches` (``config`` -> bool): the folder's ``config.json`` names the family,
  standalone (``model_type`` / ``architectures``) or as a sub-config of a full model
  (``vq_config`` of Chameleon, Janus, Emu3);
- :meth:`Adapter.build` (config, tensors, folder -> ``nn.Module``): a standalone folder through
  ``from_pretrained(folder, local_files_only=True)`` (every weight must load), a nested one from
  its sub-config with the prefixed tensors loaded ``strict=True``;
- :meth:`Adapter.preprocess` (items -> model input) and :meth:`Adapter.encode` (model input ->
  the quantizer's input, captured from the model's own ``encode`` so that every step the model
  takes before its quantizer is the model's code), :meth:`Adapter.model_codes` (the indices the
  model itself picks, used by the cross-check tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vqdoctor.errors import EncoderError, UsageError

# a transformers PreTrainedModel: typed Any, its attributes (config, quantizer, ...) differ per family
Model = Any
INSTALL_HINT = 'pip install "vqdoctor[hf]"'
_MAX_NAMES = 5


def require_transformers() -> Any:
    """The ``transformers`` module, or one UsageError paragraph saying what to install."""
    try:
        import transformers
    except ImportError:
        raise UsageError(
            "This folder holds a Hugging Face model that vqdoctor can run on your --inputs, but the "
            "'transformers' package is not installed.",
            f"Install the Hugging Face extra: {INSTALL_HINT} (or pass --latents / --model instead).",
        ) from None
    return transformers


class Adapter:
    """One model family. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]  # short family name shown in notes, e.g. "chameleon"
    model_class: ClassVar[str]  # transformers class of the VQ model, e.g. "ChameleonVQVAE"
    config_class: ClassVar[str]  # its config class, e.g. "ChameleonVQVAEConfig"
    model_types: ClassVar[tuple[str, ...]]  # config.json model_type of the standalone VQ model
    parent_types: ClassVar[tuple[str, ...]] = ()  # model types of full models that nest it
    sub_config: ClassVar[str | None] = None  # key of the nested config in a full model's config
    anchor: ClassVar[str]  # state-dict key (relative to the VQ model) that locates its weights
    modality: ClassVar[str]  # "image" | "audio"

    # ------------------------------------------------------------------ matching and building

    def matches(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config`` (a ``config.json``) names this family, standalone or nested."""
        if config.get("model_type") in self.model_types:
            return True
        if self.model_class in (config.get("architectures") or ()):
            return True
        nested = config.get(self.sub_config) if self.sub_config else None
        return config.get("model_type") in self.parent_types and isinstance(nested, Mapping)

    def standalone(self, config: Mapping[str, Any]) -> bool:
        return config.get("model_type") in self.model_types or self.model_class in (config.get("architectures") or ())

    def build(self, config: Mapping[str, Any], tensors: Mapping[str, Tensor], folder: Path) -> nn.Module:
        """The VQ model with the folder's weights, offline, in eval mode on the CPU."""
        tf = require_transformers()
        cls = getattr(tf, self.model_class, None)
        config_cls = getattr(tf, self.config_class, None)
        if cls is None or config_cls is None:
            raise UsageError(
                f"{folder} holds a {self.model_class} model, but the installed transformers "
                f"{tf.__version__} has no {self.model_class}.",
                f"Upgrade transformers ({INSTALL_HINT} installs a version that has it; docs/hf.md lists them).",
            )
        if self.standalone(config):
            return self._from_pretrained(cls, folder)
        assert self.sub_config is not None  # matches() only accepts nested configs that have one
        sub = dict(config[self.sub_config])
        model = cls(config_cls.from_dict(sub))
        prefix = self._prefix(tensors, folder)
        own = {k[len(prefix):]: tensors[k] for k in tensors if k.startswith(prefix)}
        _load_strict(model, own, what=f"{folder} ({self.model_class} under {prefix!r})")
        return model.eval()

    def _from_pretrained(self, cls: Any, folder: Path) -> nn.Module:
        try:
            model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise EncoderError(f"Building {self.model_class} from {folder} failed: {_first_line(exc)}",
                               "Check that config.json and the weights belong together.") from None
        missing = sorted(info.get("missing_keys") or ())
        mismatched = sorted(str(m[0]) if isinstance(m, tuple) else str(m) for m in info.get("mismatched_keys") or ())
        if missing or mismatched:
            raise EncoderError(
                f"The weights in {folder} do not fit its config.json's {self.model_class}: "
                f"missing {_names(missing)}; wrong shape {_names(mismatched)}.",
                "The folder's config.json and weights disagree: re-save the model with save_pretrained.",
            )
        return model.float().eval()

    def _prefix(self, tensors: Mapping[str, Tensor], folder: Path) -> str:
        hits = sorted((k[: -len(self.anchor)] for k in tensors if k.endswith(self.anchor)), key=len)
        if not hits:
            raise EncoderError(
                f"{folder}'s config.json names a {self.model_class} ({self.sub_config}), but no weight "
                f"ends with {self.anchor!r}.",
                "The folder's weights are not those of that model; pass --model or --latents.",
            )
        return hits[0]

    # ------------------------------------------------------------------------- running

    def describe_preprocess(self, model: Model, *, pixel_range: tuple[float, float] | None) -> str:
        """One sentence: what :meth:`preprocess` does to the items."""
        raise NotImplementedError

    def preprocess(self, model: Model, x: Tensor, *, source_rate: int | None,
                   pixel_range: tuple[float, float] | None) -> Tensor:
        """Items as vqdoctor reads them (images (b, C, H, W) in [0, 1]; audio (b, 1, T) in
        [-1, 1] at ``source_rate``) -> the model's input, as its own processor makes it."""
        raise NotImplementedError

    channel_axis: ClassVar[int] = 1  # where the channels are in what encode() returns

    def encode(self, model: Model, x: Tensor) -> Tensor:
        """The vectors reaching the quantizer (the first level of a residual chain), channels at
        :attr:`channel_axis`."""
        raise NotImplementedError

    def model_codes(self, model: Model, x: Tensor) -> Tensor:
        """The codes the model itself picks for ``x``: (b, levels, positions) int64."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------ helpers


@contextmanager
def captured(module: nn.Module, method: str = "forward") -> Iterator[list[Tensor]]:
    """Record the first tensor argument of every call of ``module.method`` inside the block
    (``forward`` through a pre-hook; any other method by shadowing it on the instance)."""
    seen: list[Tensor] = []

    def keep(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
        if first is not None:
            seen.append(first.detach())

    if method == "forward":
        handle = module.register_forward_pre_hook(lambda _m, a, k: keep(a, k), with_kwargs=True)
        try:
            yield seen
        finally:
            handle.remove()
        return
    original: Callable[..., Any] = getattr(module, method)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        keep(args, kwargs)
        return original(*args, **kwargs)

    setattr(module, method, wrapped)
    try:
        yield seen
    finally:
        delattr(module, method)


def one_capture(seen: list[Tensor], what: str, *, cat_dim: int = -1) -> Tensor:
    """The captured quantizer input: one call's, or several (chunked encoders) joined on ``cat_dim``."""
    if not seen:
        raise EncoderError(f"{what}: the model's encode never reached its quantizer.",
                           "This transformers version may have changed the model; please report it.")
    return seen[0] if len(seen) == 1 else torch.cat(seen, dim=cat_dim)


def _load_strict(model: Model, tensors: Mapping[str, Tensor], *, what: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or bad:
        shapes = "; ".join(f"{k!r}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}" for k in bad[:3])
        raise EncoderError(
            f"The weights of {what} do not match the model its config describes: missing {_names(missing)}; "
            f"unexpected {_names(unexpected)}" + (f"; wrong shapes {shapes}" if bad else "") + ".",
            "The folder's config.json and weights disagree: re-save the model with save_pretrained, or pass --model.",
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)


def _names(keys: list[str]) -> str:
    if not keys:
        return "none"
    shown = ", ".join(repr(k) for k in keys[:_MAX_NAMES])
    return shown + (f" (+{len(keys) - _MAX_NAMES} more)" if len(keys) > _MAX_NAMES else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
