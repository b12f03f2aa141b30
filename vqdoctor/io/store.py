"""TensorStore: a read-only, lazily loading mapping of state-dict keys to tensors.

Detectors look at every key's shape but load only the tensors they keep, so a 10 GB model
costs a few reads. ``shape(key)`` / ``dtype(key)`` never load; ``store[key]`` loads (and caches)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch


class TensorStore(Mapping[str, torch.Tensor]):
    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        dtypes: Mapping[str, torch.dtype],
        loader: Callable[[str], torch.Tensor],
    ) -> None:
        self._shapes = dict(shapes)
        self._dtypes = dict(dtypes)
        self._loader = loader
        self._cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_dict(cls, tensors: Mapping[str, torch.Tensor]) -> "TensorStore":
        tensors = dict(tensors)
        return cls(
            {k: tuple(v.shape) for k, v in tensors.items()},
            {k: v.dtype for k, v in tensors.items()},
            tensors.__getitem__,
        )

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def dtype(self, key: str) -> torch.dtype:
        return self._dtypes[key]

    def float32(self, key: str) -> torch.Tensor:
        """The tensor as float32 on CPU (bf16/fp16 are analysed in float32)."""
        return self[key].detach().to(device="cpu", dtype=torch.float32)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._shapes:
            raise KeyError(key)
        if key not in self._cache:
            self._cache[key] = self._loader(key)
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def __contains__(self, key: object) -> bool:
        return key in self._shapes
