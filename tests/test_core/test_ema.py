"""ema_metrics: Moshi's batch-size-free rule, absolute rule, perplexity, degenerate buffers."""

from __future__ import annotations

import math

import pytest
import torch

from vqdoctor.codebooks.model import EmaState
from vqdoctor.core.ema import ema_metrics
from vqdoctor.errors import DataError


def _ema(values: list[float], **kw) -> EmaState:
    return EmaState(torch.tensor(values), keys={"cluster_size": "vq._codebook.cluster_size"}, **kw)


def test_relative_and_absolute_rules() -> None:
    # K=10, total 100: uniform share 10, relative threshold 0.1 * 10 = 1.0
    u = [30.0, 30.0, 20.0, 10.0, 5.0, 2.0, 1.0, 0.99, 0.5, 0.51]
    m = ema_metrics(_ema(u), 10, absolute_threshold=2.0)
    assert m.total == pytest.approx(100.0)
    assert m.dead_codes_relative == 3  # 0.99, 0.5, 0.51 (1.0 is not < 1.0)
    assert m.dead_codes_absolute == 4  # also 1.0 < 2.0
    assert m.source == "vq._codebook.cluster_size" and m.is_count and m.note is None
    p = torch.tensor(u).double() / 100  # the buffer is float32
    assert m.perplexity == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-12)
    assert m.normalized_perplexity == pytest.approx(m.perplexity / 10)


def test_relative_rule_is_batch_size_free() -> None:
    u = torch.tensor([50.0, 30.0, 15.0, 4.0, 1.0, 0.0])
    a = ema_metrics(EmaState(u), 6)
    b = ema_metrics(EmaState(u / 100), 6)  # a 100x smaller batch
    assert a.dead_codes_relative == b.dead_codes_relative == 2
    assert a.perplexity == pytest.approx(b.perplexity)
    assert a.dead_codes_absolute == 1 and b.dead_codes_absolute == 6  # absolute rule is not


def test_uniform_buffer() -> None:
    m = ema_metrics(EmaState(torch.ones(8)), 8)  # Moshi's fresh cluster_usage
    assert m.perplexity == pytest.approx(8.0) and m.dead_codes_relative == 0


def test_all_zero_buffer_is_reported_not_divided() -> None:
    m = ema_metrics(EmaState(torch.zeros(16), initted=False), 16)
    assert m.total == 0.0
    assert m.perplexity is None and m.dead_codes_relative is None and m.dead_codes_absolute is None
    assert "all zeros" in m.note and "initialised flag is False" in m.note
    assert m.initted is False


def test_not_a_count() -> None:
    state = EmaState(torch.arange(16.0), is_count=False, note="ring buffer of recent indices")
    m = ema_metrics(state, 16)
    assert not m.is_count and m.total is None and m.perplexity is None
    assert m.note == "ring buffer of recent indices"


def test_missing_and_broken_buffers() -> None:
    assert "no usage buffer" in ema_metrics(EmaState(None), 4).note
    bad = ema_metrics(EmaState(torch.tensor([1.0, -1.0, 2.0])), 3)
    assert bad.perplexity is None and "negative" in bad.note
    with pytest.raises(DataError, match="3 entries but the codebook has 4"):
        ema_metrics(EmaState(torch.ones(3)), 4)
