"""A Hugging Face hub id (``org/name``) given where a checkpoint path goes: the snapshot folder
in the user's Hugging Face cache, never a download."""

from __future__ import annotations

import re
from pathlib import Path

from vqdoctor.errors import InputFileError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".npy", ".npz", ".json")  # a path, not an id


def cached_snapshot(path: str | Path) -> Path | None:
    """The cached snapshot folder of the hub id ``path``; None when ``path`` exists here, does not
    look like ``org/name`` (a file name such as ``runs/model.pt`` is a path), or huggingface_hub is
    not installed. An id that is not in the cache is an InputFileError saying how to download it
    (vqdoctor itself never does)."""
    text = str(path)
    if Path(text).exists() or not HUB_ID.match(text) or text.lower().endswith(FILE_SUFFIXES):
        return None
    try:
        import huggingface_hub.constants as constants
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(text, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), bad id, unreadable cache
        raise InputFileError(
            f"Checkpoint {text} does not exist here, and no Hugging Face model {text!r} is in your cache "
            f"({constants.HF_HUB_CACHE}); vqdoctor never downloads.",
            hint=f"Check the path, or download the model first (huggingface-cli download {text}) and run again.",
        ) from None
