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

    def describe_nesting(self) -> str:
        return " -> ".join(self.nesting) if self.nesting else "(top level)"
