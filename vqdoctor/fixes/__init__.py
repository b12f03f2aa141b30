"""Repairs: state dict + Codebook/Stack values in, new tensors out (no file writes).

- :func:`kmeans_reinit` -- k-means re-initialisation of a stack (residual chains level by level);
- :func:`revive_dead` / :func:`revive_stack` -- replace only the dead codes;
- :func:`to_simvq` -- rewrite a codebook as SimVQ (C frozen, W linear), exact or paper mode.
Each returns a :class:`FixResult` (``updates``, ``remove``, ``notes``) for
``vqdoctor.io.writers.write_checkpoint``; EMA buffers are reset consistently (see ``_state``).
"""

from vqdoctor.fixes._state import FixResult
from vqdoctor.fixes.kmeans_reinit import kmeans_reinit
from vqdoctor.fixes.revive import revive_dead, revive_stack
from vqdoctor.fixes.simvq import to_simvq

__all__ = ["FixResult", "kmeans_reinit", "revive_dead", "revive_stack", "to_simvq"]
