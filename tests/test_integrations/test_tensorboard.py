"""log_to_tensorboard writes a Monitor report's scalars and usage histograms; read back from the
event file with TensorBoard's EventAccumulator they equal the report. The Lightning callback
uses it when its logger is a TensorBoardLogger."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("tensorboard")
pytest.importorskip("vector_quantize_pytorch")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from train_helpers import VQVAE, K, digits  # noqa: E402

import vqdoctor  # noqa: E402
from vqdoctor.integrations.scalars import report_scalars  # noqa: E402
from vqdoctor.integrations.tensorboard import log_to_tensorboard  # noqa: E402

warnings.filterwarnings("ignore", module="vector_quantize_pytorch")


def _events(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def _monitored_reports(steps: int) -> list[vqdoctor.Report]:
    torch.manual_seed(0)
    model = VQVAE().eval()
    monitor = vqdoctor.Monitor(model, every_n_steps=1, warn=False)
    x = digits(256)
    out = []
    with torch.no_grad():
        for i in range(steps):
            model(x[64 * (i % 4): 64 * (i % 4 + 1)])
            out.append(monitor.report())
    return out


def test_scalars_and_histograms_read_back_equal_the_report(tmp_path):
    reports = _monitored_reports(2)
    with SummaryWriter(tmp_path) as writer:
        written = [log_to_tensorboard(writer, r, step) for step, r in zip((10, 20), reports)]
    acc = _events(tmp_path)
    tags = acc.Tags()
    assert set(written[0]) == set(report_scalars(reports[0])) <= set(tags["scalars"])
    for tag in written[0]:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [10, 20]
        assert [e.value for e in events] == pytest.approx([w[tag] for w in written], rel=1e-6)
    cb = reports[1].codebooks[0]
    assert written[1]["vqdoctor/quantizer/utilization"] == pytest.approx(cb.usage.utilization)
    usage = acc.Histograms("vqdoctor/quantizer/code_usage")[-1]
    assert usage.step == 20
    hist = usage.histogram_value
    assert list(hist.bucket) == cb.counts and hist.num == cb.usage.vectors == 2 * 64 * 4
    assert hist.sum == pytest.approx(sum(i * c for i, c in enumerate(cb.counts)))
    logs = acc.Histograms("vqdoctor/quantizer/log_counts")[-1].histogram_value
    assert logs.num == K
    assert logs.sum == pytest.approx(float(np.log10(1 + np.asarray(cb.counts)).sum()), rel=1e-6)
    assert logs.min == pytest.approx(math.log10(1 + min(cb.counts)))


def test_without_histograms_only_scalars(tmp_path):
    (report,) = _monitored_reports(1)
    with SummaryWriter(tmp_path) as writer:
        log_to_tensorboard(writer, report, 0, histograms=False, prefix="vq")
    tags = _events(tmp_path).Tags()
    assert tags["histograms"] == [] and "vq/quantizer/perplexity" in tags["scalars"]


def test_the_lightning_callback_writes_histograms_to_a_tensorboard_logger(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from train_helpers import lightning_module, loader

    from vqdoctor.integrations.lightning import VqdoctorCallback

    torch.manual_seed(0)
    callback = VqdoctorCallback(every_n_steps=1, log_every_n_steps=10, reset="log")
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb")
    trainer = pl.Trainer(max_steps=20, accelerator="cpu", logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(lightning_module(drift_after=10, kmeans_init=True), loader())
    acc = _events(logger.log_dir)
    util = acc.Scalars("vqdoctor/net.quantizer/utilization")
    assert [(e.step, e.value) for e in util] == [(s, pytest.approx(m["vqdoctor/net.quantizer/utilization"]))
                                                 for s, m in callback.history]
    usage = acc.Histograms("vqdoctor/net.quantizer/code_usage")
    assert [h.step for h in usage] == [10, 20]
    assert list(usage[-1].histogram_value.bucket) == callback.last.report.codebooks[0].counts
    texts = acc.Tensors("vqdoctor/collapse/text_summary")
    assert [t.step for t in texts] == [20] and b"utilization turned fail" in texts[0].tensor_proto.string_val[0]
