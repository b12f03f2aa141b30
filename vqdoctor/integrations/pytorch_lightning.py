"""``VqdoctorCallback`` for the ``pytorch_lightning`` package (``pip install pytorch-lightning``)::

    from vqdoctor.integrations.pytorch_lightning import VqdoctorCallback
    trainer = pytorch_lightning.Trainer(callbacks=[VqdoctorCallback(every_n_steps=10)])

What it does: :mod:`vqdoctor.integrations.callback`. For ``lightning.pytorch`` (the `lightning` package)
use :mod:`vqdoctor.integrations.lightning` (a Trainer accepts only its own package's
callbacks).
"""

from __future__ import annotations

try:
    from pytorch_lightning.callbacks import Callback
except ImportError as exc:  # pragma: no cover - the extra is missing
    from vqdoctor.integrations import MissingExtraError

    raise MissingExtraError(f"vqdoctor.integrations.pytorch_lightning needs the pytorch_lightning package ({exc}).",
                            "pip install pytorch-lightning") from exc

from vqdoctor.integrations.callback import VqdoctorCallbackLogic


class VqdoctorCallback(VqdoctorCallbackLogic, Callback):  # type: ignore[misc]
    __doc__ = VqdoctorCallbackLogic.__doc__


__all__ = ["VqdoctorCallback"]
