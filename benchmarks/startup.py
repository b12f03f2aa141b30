"""Start-up time of the command line: the median wall time of N fresh processes for
``python -m vqdoctor --version``, ``--help`` and ``inspect --help``, next to the cost of
``import torch`` alone (what every command paid at start before the commands imported it lazily)
and the modules ``import vqdoctor.cli.app`` loads.

    python benchmarks/startup.py [--runs 11]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "vqdoctor --version": ["-m", "vqdoctor", "--version"],
    "vqdoctor --help": ["-m", "vqdoctor", "--help"],
    "vqdoctor inspect --help": ["-m", "vqdoctor", "inspect", "--help"],
    "python -c pass (interpreter alone)": ["-c", "pass"],
    "python -c 'import torch' (torch alone)": ["-c", "import torch"],
}
HEAVY = ("torch", "numpy", "scipy", "sklearn", "matplotlib", "safetensors", "vqdoctor.api")


def median_seconds(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={"COLUMNS": "100", "PATH": ""})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def heavy_modules_at_start() -> list[str]:
    code = ("import sys, vqdoctor.cli.app\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return out.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    print(f"median of {args.runs} fresh processes ({sys.executable}):")
    for name, argv in CASES.items():
        print(f"  {name:<42} {median_seconds(argv, args.runs):6.3f} s")
    print(f"heavy modules loaded by `import vqdoctor.cli.app`: {', '.join(heavy_modules_at_start()) or 'none'}")


if __name__ == "__main__":
    main()
