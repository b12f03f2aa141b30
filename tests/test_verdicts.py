from vqdoctor.core.results import UsageMetrics
from vqdoctor.report.schema import CodebookReport
from vqdoctor.verdicts import codebook_verdicts, status_of


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
    verdicts = {v.check: v for v in codebook_verdicts(_cb(0.2, 20), ckpt="m.safetensors")}
    util = verdicts["utilization"]
    assert util.status == "fail" and util.threshold == 0.3 and util.value == 0.2
    assert "20.0%" in util.message and "fix revive m.safetensors" in util.remedy
    assert verdicts["dead_fraction"].status == "fail"
    # sections that do not apply produce no verdict
    assert "allocation_tv" not in verdicts and "ema_dead_fraction" not in verdicts


def test_healthy_codebook_is_ok_without_remedy():
    verdicts = codebook_verdicts(_cb(1.0, 100), ckpt="m.safetensors")
    assert {v.status for v in verdicts} == {"ok"}
    assert all(v.remedy is None for v in verdicts)
