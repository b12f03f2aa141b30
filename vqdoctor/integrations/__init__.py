"""Thin layers that put a :class:`vqdoctor.Monitor` into training frameworks.

- :mod:`vqdoctor.integrations.scalars`: a report as flat ``{name: float}`` scalars (no extra needed);
- :mod:`vqdoctor.integrations.tensorboard`: ``log_to_tensorboard(writer, report, step)``
  (extra ``vqdoctor[tensorboard]``);
- :mod:`vqdoctor.integrations.lightning`: ``VqdoctorCallback`` for ``lightning.pytorch``, and
  :mod:`vqdoctor.integrations.pytorch_lightning` the same for the ``pytorch_lightning`` package
  (extra ``vqdoctor[lightning]``).

Each module imports its framework only when imported itself; ``import vqdoctor`` never does.
"""

from vqdoctor.errors import VqdoctorError


class MissingExtraError(VqdoctorError, ImportError):
    """An integration's framework is not installed (an ``ImportError`` too, so ``except
    ImportError`` and ``pytest.importorskip`` treat it as one)."""
