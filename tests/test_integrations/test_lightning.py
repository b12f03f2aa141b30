"""VqdoctorCallback in a real Lightning fit of a vqp VQ-VAE on digits: the logged scalars are the
Monitor's report, the counts are vqp's own indices of the training batches only (none of the
validation or sanity-check batches), and a collapse mid-run is warned once, at its step."""

from __future__ import annotations

import csv
import warnings

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("vector_quantize_pytorch")

from train_helpers import K, lightning_module, loader  # noqa: E402

import vqdoctor  # noqa: E402
from vqdoctor.errors import VqdoctorError  # noqa: E402
from vqdoctor.integrations.lightning import VqdoctorCallback  # noqa: E402
from vqdoctor.integrations.scalars import report_scalars  # noqa: E402

warnings.filterwarnings("ignore", module="vector_quantize_pytorch")
warnings.filterwarnings("ignore", module="lightning")


def _fit(tmp_path, callback, *, max_steps: int, drift_after: int | None = None, val: bool = True, **vq):
    torch.manual_seed(0)
    module = lightning_module(drift_after, **vq)
    logger = pl.loggers.CSVLogger(tmp_path, name="run")
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                         log_every_n_steps=5, val_check_interval=10 if val else None,
                         limit_val_batches=2 if val else 0, num_sanity_val_steps=2 if val else 0)
    trainer.fit(module, loader(), loader(128) if val else None)
    return module, logger


def _rows(logger) -> list[dict[str, str]]:
    with open(f"{logger.log_dir}/metrics.csv") as f:
        return list(csv.DictReader(f))


def test_logged_scalars_are_the_monitors_report_of_the_training_batches(tmp_path):
    callback = VqdoctorCallback(every_n_steps=1, log_every_n_steps=10, reset="log")
    module, logger = _fit(tmp_path, callback, max_steps=30)
    assert [step for step, _ in callback.history] == [10, 20, 30]
    assert callback.metrics == report_scalars(callback.last.report)
    rows = [r for r in _rows(logger) if r.get("vqdoctor/net.quantizer/utilization")]
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    for row, (_, scalars) in zip(rows, callback.history):
        assert {k: float(row[k]) for k in scalars} == pytest.approx(scalars, rel=1e-6)
    assert {"utilization", "perplexity", "dead_codes", "ema_dead_codes", "collapse_status"} <= {
        k.rsplit("/", 1)[1] for k in callback.metrics}
    # vqp's indices of the training calls (10 per window), none of the 2 sanity + 3 x 2 validation batches
    idx = module.net.indices
    assert len(idx) == 30
    for (_, scalars), window in zip(callback.history, (idx[0:10], idx[10:20], idx[20:30])):
        counts = torch.bincount(torch.cat(window), minlength=K)
        assert scalars["vqdoctor/net.quantizer/used_codes"] == int((counts > 0).sum())
        assert scalars["vqdoctor/net.quantizer/utilization"] == pytest.approx(float((counts > 0).sum()) / K)
    assert callback.last.report.codebooks[0].counts == torch.bincount(torch.cat(idx[20:30]), minlength=K).tolist()


def test_a_collapse_mid_fit_is_warned_once_at_the_step_it_shows(tmp_path):
    callback = VqdoctorCallback(every_n_steps=1, log_every_n_steps=10, reset="log")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(tmp_path, callback, max_steps=40, drift_after=10, val=False, kmeans_init=True)
    used = [s["vqdoctor/net.quantizer/used_codes"] for _, s in callback.history]
    assert used[0] > 0.8 * K and used[1:] == [1, 1, 1]  # the drift from step 10 on
    ours = [w for w in caught if issubclass(w.category, vqdoctor.CollapseWarning)]
    util = [t for t in callback.transitions if t.check == "utilization"]
    assert [(t.step, t.before, t.status) for t in util] == [(20, "ok", "fail")]
    assert {t.step for t in callback.transitions} == {20}
    assert len(ours) == len(callback.transitions) and all("at step 20" in str(w.message) for w in ours)
    status = [s["vqdoctor/net.quantizer/collapse_status"] for _, s in callback.history]
    assert status == [0, 2, 2, 2]


def test_every_n_steps_and_epoch_reset(tmp_path):
    callback = VqdoctorCallback(every_n_steps=3, log_every_n_steps=10, reset="epoch")  # 10 batches per epoch
    _fit(tmp_path, callback, max_steps=20, val=False)
    assert [s for s, _ in callback.history] == [10, 20]
    # calls 1, 4, 7, 10 of the first epoch; the second epoch's counts start afresh (calls 13, 16, 19)
    assert callback.last.report.codebooks[0].usage.vectors == 3 * 64 * 4
    assert callback.monitor.recorded_calls == {"net.quantizer": 3}


def test_wrong_arguments_are_vqdoctor_errors():
    with pytest.raises(VqdoctorError, match="reset"):
        VqdoctorCallback(reset="step")
    with pytest.raises(VqdoctorError, match="log_every_n_steps"):
        VqdoctorCallback(log_every_n_steps=0)


def test_the_pytorch_lightning_package_has_its_own_callback():
    ptl = pytest.importorskip("pytorch_lightning")
    from vqdoctor.integrations.pytorch_lightning import VqdoctorCallback as PTLCallback

    assert isinstance(PTLCallback(), ptl.Callback) and not isinstance(PTLCallback(), pl.Callback)
    torch.manual_seed(0)
    callback = PTLCallback(every_n_steps=1, log_every_n_steps=5)
    trainer = ptl.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(lightning_module(package="pytorch_lightning"), loader())
    assert [s for s, _ in callback.history] == [5] and callback.last.report.codebooks[0].usage.vectors == 5 * 64 * 4


def test_a_missing_framework_is_an_import_error_that_says_what_to_install(monkeypatch):
    import importlib
    import sys

    from vqdoctor.integrations import MissingExtraError

    monkeypatch.setitem(sys.modules, "lightning.pytorch.callbacks", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "vqdoctor.integrations.lightning", raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module("vqdoctor.integrations.lightning")
    assert isinstance(info.value, MissingExtraError) and isinstance(info.value, VqdoctorError)
    assert "vqdoctor[lightning]" in str(info.value)
