"""``VqdoctorCallback`` for Lightning (``import lightning.pytorch``; extra ``vqdoctor[lightning]``)::

    from vqdoctor.integrations.lightning import VqdoctorCallback
    trainer = lightning.Trainer(callbacks=[VqdoctorCallback(every_n_steps=10)])

What it does: :mod:`vqdoctor.integrations.callback`. For the older ``pytorch_lightning`` package
use :mod:`vqdoctor.integrations.pytorch_lightning` (a Trainer accepts only its own package's
callbacks).
"""

from __future__ import annotations

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # pragma: no cover - the extra is missing
    from vqdoctor.integrations import MissingExtraError

    raise MissingExtraError(f"vqdoctor.integrations.lightning needs the lightning package ({exc}).",
                            "pip install 'vqdoctor[lightning]'") from exc

from vqdoctor.integrations.callback import VqdoctorCallbackLogic


class VqdoctorCallback(VqdoctorCallbackLogic, Callback):  # type: ignore[misc]
    __doc__ = VqdoctorCallbackLogic.__doc__


__all__ = ["VqdoctorCallback"]
