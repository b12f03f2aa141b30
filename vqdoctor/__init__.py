"""vqdoctor: diagnose and repair codebook collapse in vector-quantized models.

Public API (re-exports, loaded on first use so that ``import vqdoctor.core`` stays light)::

    vqdoctor.inspect(checkpoint, *, data=DataOptions(...), analysis=AnalysisOptions(...)) -> Report
    vqdoctor.inspect(module_or_state_dict_or_path, latents=tensor|array|path, labels=..., inputs=..., encoder=fn)
    vqdoctor.find_codebooks(module_or_state_dict_or_path) -> Discovery
    vqdoctor.fix(module_or_state_dict_or_path, vqdoctor.ReviveFix(), latents=...) -> new state dict
    vqdoctor.load(path) -> Checkpoint;  vqdoctor.discover(checkpoint) -> Discovery
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "inspect": "vqdoctor.memory",
    "find_codebooks": "vqdoctor.memory",
    "fix": "vqdoctor.memory",
    "FixedStateDict": "vqdoctor.memory",
    "KMeansFix": "vqdoctor.fixes",
    "ReviveFix": "vqdoctor.fixes",
    "SimVQFix": "vqdoctor.fixes",
    "Monitor": "vqdoctor.monitor",
    "CollapseWarning": "vqdoctor.monitor",
    "MonitorCheck": "vqdoctor.monitor",
    "Transition": "vqdoctor.monitor",
    "load": "vqdoctor.api",
    "discover": "vqdoctor.api",
    "gather_statistics": "vqdoctor.api",
    "report_from_statistics": "vqdoctor.api",
    "DataOptions": "vqdoctor.options",
    "AnalysisOptions": "vqdoctor.options",
    "Report": "vqdoctor.report.schema",
    "VqdoctorError": "vqdoctor.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vqdoctor' has no attribute {name!r}")
