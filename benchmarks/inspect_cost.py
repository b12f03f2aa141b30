"""What an `inspect --latents` costs, stage by stage (issue 12: mode inference <= 15% of it).

Seeded data, made at run time in a temporary folder: N latents (default 10^5) of dim 8 drawn from
10 Gaussian modes, a 512-code codebook on them (safetensors), optional labels. Each configuration
runs in a fresh subprocess (so the sklearn import is counted where it happens) and times
``vqdoctor.inspect`` with these stages, each the wall time inside the named functions:

- load: ``vqdoctor.api.load`` + ``discover`` + ``open_stream`` (reading the files);
- modes: ``fit_modes`` (data modes) + ``count_modes`` (mode counts of the embeddings section),
  imports included;
- projection: the 2-D picture (``diagnose._projection``);
- assign and the rest: the remainder (streamed assignment, statistics, geometry, verdicts).

Run it against any checkout: ``PYTHONPATH=CHECKOUT python benchmarks/inspect_cost.py`` prints
one JSON line per configuration (best of ``--repeat`` runs, by total).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
t_import = time.perf_counter()
import vqdoctor
from vqdoctor import api, diagnose
from vqdoctor.core import collapse, modes as modes_mod
from vqdoctor.options import AnalysisOptions, DataOptions
spent = {"load": 0.0, "modes": 0.0, "projection": 0.0}
def timed(mod, name, stage):
    fn = getattr(mod, name, None)
    if fn is None:
        return
    def wrap(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[stage] += time.perf_counter() - t
    setattr(mod, name, wrap)
for mod, name, stage in [(api, "load", "load"), (api, "discover", "load"), (api, "open_stream", "load"),
                         (diagnose, "fit_modes", "modes"), (collapse, "count_modes", "modes"),
                         (diagnose, "_projection", "projection")]:
    timed(mod, name, stage)
root, labels, extra = Path(sys.argv[1]), sys.argv[2] == "1", json.loads(sys.argv[3])
data = DataOptions(latents=root / "z.npy", labels=(root / "y.npy") if labels else None, device="cpu")
t = time.perf_counter()
report = api.inspect(root / "cb.safetensors", data=data, analysis=AnalysisOptions(**extra))
total = time.perf_counter() - t
out = {k: round(v, 3) for k, v in spent.items()}
out["assign_and_rest"] = round(total - sum(spent.values()), 3)
out["total"] = round(total, 3)
out["modes_share"] = round(spent["modes"] / total, 3)
out["mode_source"] = report.data.mode_source
out["package"] = str(Path(vqdoctor.__file__).parent.parent)
print(json.dumps(out))
"""


def make_data(root: Path, n: int, seed: int) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, (10, 8))
    y = rng.integers(0, 10, n)
    z = (centres[y] + rng.standard_normal((n, 8))).astype(np.float32)
    codes = z[rng.choice(n, 512, replace=False)] + 0.1 * rng.standard_normal((512, 8)).astype(np.float32)
    np.save(root / "z.npy", z)
    np.save(root / "y.npy", y)
    save_file({"quantize.embedding.weight": torch.from_numpy(codes.astype(np.float32))}, str(root / "cb.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default="inferred,labels,inferred-pca", help="comma list of: inferred, labels, "
                    "inferred-pca (projection pca, the default), modes-none (--modes none, where supported)")
    args = ap.parse_args()
    configs = {
        "inferred": (False, {"projection": "none"}),
        "labels": (True, {"projection": "none"}),
        "inferred-pca": (False, {"projection": "pca"}),
        "modes-none": (False, {"projection": "none", "modes": "none"}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_data(root, args.n, args.seed)
        for name in args.configs.split(","):
            labels, extra = configs[name]
            runs = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                res = subprocess.run([sys.executable, "-c", CHILD, str(root), "1" if labels else "0", json.dumps(extra)],
                                     capture_output=True, text=True, check=False, cwd=root)  # cwd: PYTHONPATH decides
                if res.returncode != 0:
                    runs.append({"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"})
                    break
                out = json.loads(res.stdout.strip().splitlines()[-1])
                out["process"] = round(time.perf_counter() - t, 3)
                runs.append(out)
            best = min(runs, key=lambda r: r.get("total", float("inf")))
            print(json.dumps({"config": name, "n": args.n, **best}), flush=True)


if __name__ == "__main__":
    main()
