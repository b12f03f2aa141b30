"""Cost of validating a statistics file on read (vqdoctor/io/stats_checks.py) against the whole
load_stats, for a large codebook: K = 2^18 codes, d = 64, 8 modes, the default 4000-point subsample.

    python benchmarks/stats_validation.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vqdoctor.core.usage import FORMAT
from vqdoctor.io.stats_checks import validate_stats
from vqdoctor.io.stats_file import META_KEY, SCHEMA, load_stats
from vqdoctor.options import AnalysisOptions

K, D, M, S, N = 1 << 18, 64, 8, 4000, 10**8


def main() -> None:
    g = torch.Generator().manual_seed(0)
    mode_counts = torch.randint(0, 50, (K, M), generator=g, dtype=torch.int64)
    counts = mode_counts.sum(1)
    vectors = int(counts.sum())
    tensors = {
        "stats.0.counts": counts, "stats.0.mode_counts": mode_counts,
        "stats.0.sq_err_sum": torch.tensor(123.0, dtype=torch.float64),
        "stats.0.x_sum": torch.randn(D, dtype=torch.float64), "stats.0.x_sq_sum": torch.rand(D, dtype=torch.float64),
        "subsample.latents": torch.randn(S, D), "subsample.sample": torch.arange(S, dtype=torch.int64),
        "subsample.idx": torch.arange(S, dtype=torch.int64), "subsample.modes": torch.randint(0, M, (S,), dtype=torch.int64),
    }
    meta = {
        "schema": SCHEMA, "checkpoint": {"path": "m.safetensors", "format": "safetensors", "nesting": "(top level)",
                                         "fingerprint": "0" * 64, "load_nesting": None},
        "codebooks": [{"name": "q", "layout": "plain", "kind": "plain", "metric": "euclidean", "size": K, "dim": D,
                       "level": 0, "codes_sha256": "1" * 64}],
        "options": {"codebook": None, "min_count": 1, "subsample": S, "projection": "none", "memory_budget_mb": 256,
                    "seed": 0, "keep_counts": True},
        "shards": [0], "shard_count": 1,
        "data": {"description": "bench", "vectors": vectors, "notes": [], "mode_names": [str(i) for i in range(M)],
                 "mode_source": "labels"},
        "stats": [{"name": "q", "format": FORMAT, "size": K, "dim": D, "metric": "euclidean", "modes": M,
                   "vectors": vectors, "elements": vectors * D}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.stats"
        save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
        with safe_open(str(path), framework="pt") as fh:
            loaded = {k: fh.get_tensor(k) for k in fh.keys()}
        opts = tuple(AnalysisOptions.__dataclass_fields__)
        t0 = time.perf_counter()
        for _ in range(5):
            validate_stats(path, meta, loaded, schema=SCHEMA, usage_format=FORMAT, option_names=opts)
        check = (time.perf_counter() - t0) / 5
        t0 = time.perf_counter()
        load_stats(path)
        whole = time.perf_counter() - t0
    print(f"K={K} d={D} M={M}: validate_stats {check * 1e3:.1f} ms, whole load_stats {whole * 1e3:.0f} ms "
          f"({check / whole:.1%})")


if __name__ == "__main__":
    main()
