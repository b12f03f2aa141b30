"""What the Lightning callbacks do, without Lightning: both ``lightning.pytorch`` and
``pytorch_lightning`` call these hooks with the same arguments, so
:mod:`vqdoctor.integrations.lightning` and :mod:`vqdoctor.integrations.pytorch_lightning` only mix
this class into their package's ``Callback``.

At ``on_fit_start`` a :class:`~vqdoctor.monitor.Monitor` is put on the LightningModule (it finds
the quantizers); it records only inside training batches (one in ``every_n_steps`` calls of each
quantizer), never in validation or sanity checks. Every ``log_every_n_steps`` optimizer steps
(default: the Trainer's ``log_every_n_steps``) and at the end of each validation epoch it checks:
the report (summed over the ranks under DDP: every rank checks), its scalars
(:mod:`vqdoctor.integrations.scalars`) written at ``trainer.global_step`` to every logger of the
Trainer (a TensorBoard logger also gets the usage histograms and a text line per collapse), and a
:class:`~vqdoctor.monitor.CollapseWarning` per verdict that turned worse (on rank zero).
``reset``: ``"epoch"`` forgets the counts at each training epoch's start, ``"log"`` after each
check (each logged point covers the steps since the previous one), ``None`` never.
"""

from __future__ import annotations

from typing import Any, Literal

from vqdoctor.errors import UsageError
from vqdoctor.integrations.scalars import PREFIX, report_scalars
from vqdoctor.monitor import Monitor, MonitorCheck, Transition

Reset = Literal["epoch", "log"] | None
_RESETS = ("epoch", "log", None)


class VqdoctorCallbackLogic:
    """The hooks of ``VqdoctorCallback`` (see the module docstring). After or during a fit:
    ``monitor`` (the Monitor), ``last`` (the last check), ``metrics`` (its scalars), ``history``
    (``(step, scalars)`` of every check), ``transitions`` (every verdict that turned worse)."""

    def __init__(self, every_n_steps: int = 10, log_every_n_steps: int | None = None, *, log: bool = True,
                 reset: Reset = "epoch", codebook: str | None = None, warn: bool = True,
                 histograms: bool = True, prefix: str = PREFIX) -> None:
        super().__init__()
        if reset not in _RESETS:
            raise UsageError(f"reset must be one of 'epoch', 'log' or None, got {reset!r}.")
        if log_every_n_steps is not None and (not isinstance(log_every_n_steps, int) or log_every_n_steps < 1):
            raise UsageError(f"log_every_n_steps must be a whole number >= 1 or None, got {log_every_n_steps!r}.")
        self.every_n_steps = every_n_steps
        self.log_every_n_steps = log_every_n_steps
        self.log = log
        self.reset = reset
        self.codebook = codebook
        self.warn = warn
        self.histograms = histograms
        self.prefix = prefix
        self.monitor: Monitor | None = None
        self.last: MonitorCheck | None = None
        self.metrics: dict[str, float] = {}
        self.history: list[tuple[int, dict[str, float]]] = []
        self.transitions: list[Transition] = []
        self._checked_step: int | None = None

    # ------------------------------------------------------------------------ Lightning hooks

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            self.monitor.remove()
        self.monitor = Monitor(pl_module, every_n_steps=self.every_n_steps, codebook=self.codebook,
                               warn=self.warn and bool(trainer.is_global_zero))
        self.monitor.enabled = False  # only training batches are recorded
        self._checked_step = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.reset == "epoch" and self.monitor is not None:
            self.monitor.reset()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.monitor is not None:
            self.monitor.enabled = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.monitor is None:
            return
        self.monitor.enabled = False
        every = self.log_every_n_steps or int(getattr(trainer, "log_every_n_steps", 50) or 50)
        step = int(trainer.global_step)
        if step > 0 and step % every == 0 and step != self._checked_step:  # once per optimizer step
            self.check(trainer)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None and not trainer.sanity_checking and int(trainer.global_step) != self._checked_step:
            self.check(trainer)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            self.monitor.remove()  # the statistics stay readable

    # ------------------------------------------------------------------------ checking

    def check(self, trainer: Any) -> MonitorCheck:
        """Report now (every rank), log on rank zero, remember the transitions."""
        assert self.monitor is not None, "check() runs during a fit"
        step = int(trainer.global_step)
        result = self.monitor.check(step=step)
        self._checked_step = step
        self.last = result
        self.metrics = report_scalars(result.report, prefix=self.prefix)
        self.history.append((step, dict(self.metrics)))
        self.transitions.extend(result.collapse_started)
        if self.log and trainer.is_global_zero:
            for logger in trainer.loggers:
                self._write(logger, result, step)
        if self.reset == "log":
            self.monitor.reset()
        return result

    def _write(self, logger: Any, result: MonitorCheck, step: int) -> None:
        writer = getattr(logger, "experiment", None)  # a SummaryWriter for TensorBoardLogger
        if writer is not None and hasattr(writer, "add_histogram_raw") and hasattr(writer, "add_scalar"):
            from vqdoctor.integrations.tensorboard import log_to_tensorboard

            log_to_tensorboard(writer, result.report, step, prefix=self.prefix, histograms=self.histograms)
            if result.collapse_started:  # one text entry per check, a paragraph per verdict
                writer.add_text(f"{self.prefix}/collapse", "\n\n".join(map(str, result.collapse_started)), global_step=step)
        else:
            logger.log_metrics(self.metrics, step=step)
