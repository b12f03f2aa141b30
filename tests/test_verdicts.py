from vqdoctor.core.results import UsageMetrics
from vqdoctor.remedies import RemedyContext
from vqdoctor.report.schema import CodebookReport
from vqdoctor.verdicts import codebook_verdicts, status_of

CTX = RemedyContext("m.safetensors", "safetensors")


def _cb(utilization: float, used: int, size: int = 100) -> CodebookReport:
    usage = UsageMetrics(
        vectors=1000, used_codes=used, dead_codes=size - used, min_count=1, utilization=utilization,
        perplexity=50.0, normalized_perplexity=0.5, entropy_bits=5.6, quantization_mse=0.1, relative_mse=0.1,
        top1_mass=0.05, top10pct_mass=0.2, space="latent space (euclidean)",
    )
    return CodebookReport(name="q", stack="q", layout="plain", kind="plain", metric="euclidean", size=size, dim=8,
                          level=0, head=0, keys={}, usage=usage, ema=None, geometry=None, w=None, tokens_collapse=None)


def test_status_of_directions():
    assert status_of(0.9, direction="min", warn=0.8, fail=0.3) == ("ok", 0.8)
    assert status_of(0.5, direction="min", warn=0.8, fail=0.3) == ("warn", 0.8)
    assert status_of(0.1, direction="min", warn=0.8, fail=0.3) == ("fail", 0.3)
    assert status_of(0.6, direction="max", warn=0.2, fail=0.5) == ("fail", 0.5)


def test_low_utilization_fails_with_revive_remedy():
    verdicts = {v.check: v for v in codebook_verdicts(_cb(0.2, 20), remedy=CTX)}
    util = verdicts["utilization"]
    assert util.status == "fail" and util.threshold == 0.3 and util.value == 0.2
    assert "20.0%" in util.message and "fix revive m.safetensors" in util.remedy
    assert verdicts["dead_fraction"].status == "fail"
    # sections that do not apply produce no verdict
    assert "allocation_tv" not in verdicts and "ema_dead_fraction" not in verdicts


def test_healthy_codebook_is_ok_without_remedy():
    verdicts = codebook_verdicts(_cb(1.0, 100), remedy=CTX)
    assert {v.status for v in verdicts} == {"ok"}
    assert all(v.remedy is None for v in verdicts)


# ---------------------------------------------------------------- sample size (docs/verdicts.md)

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from vqdoctor.check import Thresholds, evaluate  # noqa: E402
from vqdoctor.core.usage import UsageStats  # noqa: E402
from vqdoctor.report.schema import CheckpointInfo, DataInfo, Report  # noqa: E402
from vqdoctor.verdicts import diagnosis  # noqa: E402


def _measured(counts: torch.Tensor) -> CodebookReport:
    """A codebook report from real usage statistics of ``counts`` (K,) (the expectations included)."""
    k = counts.shape[0]
    st = UsageStats.empty(k, 2)
    idx = torch.repeat_interleave(torch.arange(k), counts)
    st.update(idx, torch.zeros(idx.shape[0]), torch.randn(idx.shape[0], 2, generator=torch.Generator().manual_seed(0)))
    return CodebookReport(name="q", stack="q", layout="plain", kind="plain", metric="euclidean", size=k, dim=2,
                          level=0, head=0, keys={}, usage=st.compute(), ema=None, geometry=None, w=None, tokens_collapse=None)


def _iid(k: int, n: int, seed: int = 0, live: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, live or k, (n,), generator=g)
    return torch.bincount(draws, minlength=k)


def test_iid_codes_with_few_vectors_per_code_do_not_fail():
    cb = _measured(_iid(16384, int(0.6 * 16384)))
    u = cb.usage
    assert u.utilization < 0.5  # judged as it is, 45% used would be a warn and fail dead_fraction
    assert u.vectors_per_code == pytest.approx(0.6, rel=1e-3)
    assert u.expected_utilization == pytest.approx(1 - math.exp(-0.6), rel=1e-3)
    verdicts = {v.check: v for v in codebook_verdicts(cb, remedy=CTX)}
    assert {v.status for v in verdicts.values()} <= {"ok", "insufficient"}
    assert verdicts["utilization"].status == "ok"  # as good as a perfect codebook at this N
    assert "a perfect codebook reaches" in verdicts["utilization"].message
    result = evaluate(Report(checkpoint=CheckpointInfo("m", "safetensors", "", "0"), data=DataInfo("z", u.vectors, 2, None),
                             codebooks=[cb], embeddings_collapse=None, verdicts=[], vqdoctor_version="0"),
                      thresholds=Thresholds.defaults())
    assert result.exit_code == 0


def test_half_used_codebook_at_low_n_is_insufficient_not_fail():
    # the large_codebook_simvq situation: N/K = 2.4, half the codes in use
    k = 4096
    cb = _measured(_iid(k, int(2.44 * k), live=k // 2))
    verdicts = {v.check: v for v in codebook_verdicts(cb, remedy=CTX)}
    assert verdicts["utilization"].status == "insufficient"
    assert f"N >= {cb.usage.vectors_for_95:,} needed" in verdicts["utilization"].message
    assert verdicts["utilization"].remedy is None
    findings = diagnosis([cb], None, list(verdicts.values()))
    assert findings[0].status == "insufficient" and "not enough data to judge" in findings[0].summary
    rep = Report(checkpoint=CheckpointInfo("m", "safetensors", "", "0"), data=DataInfo("z", cb.usage.vectors, 2, None),
                 codebooks=[cb], embeddings_collapse=None, verdicts=[], vqdoctor_version="0")
    lax = evaluate(rep, thresholds=Thresholds.defaults())
    assert lax.exit_code == 0 and {i.outcome for i in lax.items if i.check == "utilization"} == {"insufficient"}
    assert lax.summary()["insufficient"] >= 1
    assert evaluate(rep, thresholds=Thresholds.defaults(), strict=True).exit_code == 1  # --strict: unjudged fails
    # with enough data the same half-used codebook is judged: a warn, not insufficient
    more = _measured(_iid(k, 40 * k, live=k // 2))
    assert {v.check: v for v in codebook_verdicts(more, remedy=CTX)}["utilization"].status == "warn"


def test_collapse_at_low_n_still_fails():
    # 2% of codes used where a perfect codebook would use 45%: far below, whatever the N
    k = 16384
    cb = _measured(_iid(k, int(0.6 * k), live=k // 50))
    verdicts = {v.check: v for v in codebook_verdicts(cb, remedy=CTX)}
    assert verdicts["utilization"].status == "fail"
    assert verdicts["utilization"].threshold == pytest.approx(0.3 * cb.usage.expected_utilization)
