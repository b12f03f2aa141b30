"""Repairs: state dict + Codebook/Stack values in, new tensors out (no file writes).

- :func:`kmeans_reinit` -- k-means re-initialisation of a stack (residual chains level by level);
- :func:`revive_dead` / :func:`revive_stack` -- replace only the dead codes;
- :func:`to_simvq` -- rewrite a codebook as SimVQ (C frozen, W linear), exact or paper mode.
Each returns a :class:`FixResult` (``updates``, ``remove``, ``notes``) for
``vqdoctor.io.writers.write_checkpoint``; EMA buffers are reset consistently (see ``_state``).

The fixes as values (:mod:`vqdoctor.fixes.values`), for ``vqdoctor.api.fix_checkpoint``:
:class:`KMeansFix`, :class:`ReviveFix`, :class:`SimVQFix`.
"""

from vqdoctor.fixes._state import FixResult
from vqdoctor.fixes.kmeans_reinit import kmeans_reinit
from vqdoctor.fixes.revive import revive_dead, revive_stack
from vqdoctor.fixes.simvq import to_simvq
from vqdoctor.fixes.values import Fix, KMeansFix, ReviveFix, SimVQFix

__all__ = ["Fix", "FixResult", "KMeansFix", "ReviveFix", "SimVQFix", "kmeans_reinit", "revive_dead", "revive_stack",
           "to_simvq"]
