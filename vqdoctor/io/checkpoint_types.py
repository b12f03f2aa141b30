"""What loading a checkpoint returns (the loaders live in ``vqdoctor/io/checkpoints.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vqdoctor.io.store import TensorStore


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    format: str  # "safetensors" | "pickle" | "hf-folder" | "hf-sharded" | "npy" | "npz"
    state: TensorStore  # flattened, unwrapped state dict (keys without the nesting prefix), original dtypes
    nesting: tuple[str, ...] = ()  # path taken to reach the state dict, e.g. ("state_dict",), ("model",), prefix "module."
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors metadata / HF config (json string under "config")
    fingerprint: str = ""  # sha256 of the file(s), hex, for shard identity
    key_map: dict[str, str] = field(default_factory=dict)  # state key -> key in the original container (for writers)
    # Where the state dict sits, for writers (see vqdoctor/io/checkpoints.py):
    container: tuple[str, ...] = ()  # dict keys walked from the pickled object to the state dict
    prefix: str = ""  # prefix stripped from every key (new keys get it back)
    files: dict[str, str] = field(default_factory=dict)  # folders: state key -> file (relative) holding it
    allow_globals: tuple[str, ...] = ()  # pickle globals the user allowed when loading (writers reload with them)
    alternatives: tuple[str, ...] = ()  # other nestings holding a state dict (pass one as `nesting=`)

    def describe_nesting(self) -> str:
        return " -> ".join(self.nesting) if self.nesting else "(top level)"
