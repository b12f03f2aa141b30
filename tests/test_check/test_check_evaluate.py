"""The pure evaluator: hand-built Reports (and baseline dicts) against thresholds."""

from __future__ import annotations

import shlex

import pytest
from check_helpers import CKPT, codebook, embeddings, healthy, report, rvq

from vqdoctor.check import (
    CHECK_SCHEMA,
    DEFAULT_MAX_REGRESSION,
    Thresholds,
    check_document,
    codebook_from_dict,
    evaluate,
)
from vqdoctor.errors import UsageError
from vqdoctor.report.json_out import report_to_dict, validate_report_dict
from vqdoctor.verdicts import CODEBOOK_CHECKS, MERGED_PAIRS_FAIL

SPECS = {s.check: s for s in CODEBOOK_CHECKS}


def by(result, check, codebook=None, kind="threshold"):
    found = [i for i in result.items if i.check == check and i.codebook == codebook and i.kind == kind]
    assert len(found) == 1, (check, codebook, kind, result.items)
    return found[0]


def test_defaults_are_the_documented_fail_bounds():
    d = Thresholds.defaults()
    assert d.min_utilization == SPECS["utilization"].fail == 0.3
    assert d.max_dead_fraction == SPECS["dead_fraction"].fail
    assert d.min_normalized_perplexity == SPECS["normalized_perplexity"].fail
    assert d.max_allocation_tv == SPECS["allocation_tv"].fail
    assert d.max_relative_mse == SPECS["relative_mse"].fail
    assert d.max_merged_pairs == 0 and d.max_merged_pairs < MERGED_PAIRS_FAIL < d.max_merged_pairs + 1
    assert Thresholds().is_empty() and not d.is_empty()


def test_healthy_report_passes_every_default_check():
    result = evaluate(healthy(), thresholds=Thresholds.defaults())
    assert result.passed and result.exit_code == 0
    assert {i.check for i in result.items} == {
        "utilization", "dead_fraction", "normalized_perplexity", "allocation_tv", "relative_mse", "merged_pairs"}
    assert all(i.outcome == "pass" for i in result.items)
    assert by(result, "utilization", "quantize.embedding").value == 1.0


def test_failed_threshold_names_value_bound_and_remedy():
    rep = report(codebook(used=4))  # utilization 25%
    result = evaluate(rep, thresholds=Thresholds(min_utilization=0.5))
    assert result.exit_code == 1
    item = by(result, "utilization", "quantize.embedding")
    assert item.outcome == "fail" and item.value == 0.25 and item.threshold == 0.5
    assert "25.0%" in item.message and "50.0%" in item.message
    assert item.remedy == "vqdoctor fix revive runs/tok/last.safetensors --codebook quantize.embedding --out fixed.safetensors"
    assert [i.check for i in result.items] == ["utilization"]  # only what is configured


def test_bound_is_inclusive():
    result = evaluate(report(codebook(used=8)), thresholds=Thresholds(min_utilization=0.5, max_dead_fraction=0.5))
    assert result.passed


def test_each_level_of_a_stack_is_checked():
    result = evaluate(rvq(used=(16, 12, 2)), thresholds=Thresholds(min_utilization=0.5))
    outcomes = {i.codebook: i.outcome for i in result.items}
    assert outcomes == {"rvq.layers.0._codebook.embed": "pass", "rvq.layers.1._codebook.embed": "pass",
                        "rvq.layers.2._codebook.embed": "fail"}
    assert [i.codebook for i in result.failed] == ["rvq.layers.2._codebook.embed"]


@pytest.mark.parametrize(
    ("limits", "cb", "check"),
    [
        (Thresholds(max_dead_fraction=0.2), codebook(used=10), "dead_fraction"),
        (Thresholds(min_normalized_perplexity=0.5), codebook(nppl=0.3), "normalized_perplexity"),
        (Thresholds(max_allocation_tv=0.2), codebook(tv=0.35), "allocation_tv"),
        (Thresholds(max_relative_mse=0.5), codebook(rel=0.7), "relative_mse"),
    ],
)
def test_each_threshold_fails_on_its_metric(limits, cb, check):
    item = by(evaluate(report(cb), thresholds=limits), check, cb.name)
    assert item.outcome == "fail" and item.remedy_argv is not None
    assert shlex.split(item.remedy) == list(item.remedy_argv)
    assert item.remedy_argv[:6] == ("vqdoctor", "fix", SPECS[check].remedy, CKPT, "--codebook", cb.name)


def test_missing_metrics_are_skipped_with_the_reason():
    rep = report(codebook(data=False, tv=None, note="no latents reach this codebook"))
    result = evaluate(rep, thresholds=Thresholds.defaults())
    assert result.passed and result.exit_code == 0
    assert {i.outcome for i in result.items} == {"skipped"}
    assert "data-free" in by(result, "utilization", "quantize.embedding").message
    assert "no latents reach" in by(result, "utilization", "quantize.embedding").message
    assert "tokens-collapse" in by(result, "allocation_tv", "quantize.embedding").message
    assert "embeddings-collapse" in by(result, "merged_pairs").message
    assert result.summary() == {"pass": 0, "fail": 0, "skipped": 6, "insufficient": 0}


def test_relative_mse_missing_with_usage_present_is_skipped():
    item = by(evaluate(report(codebook(rel=None)), thresholds=Thresholds(max_relative_mse=0.5)), "relative_mse", "quantize.embedding")
    assert item.outcome == "skipped" and "not computed" in item.message


def test_strict_turns_skipped_into_failures():
    rep = report(codebook(data=False, tv=None))
    result = evaluate(rep, thresholds=Thresholds(min_utilization=0.5), strict=True)
    assert result.exit_code == 1
    item = by(result, "utilization", "quantize.embedding")
    assert item.outcome == "fail" and "--strict" in item.message and item.remedy


def test_merged_pairs_model_wide():
    rep = report(codebook(), ec=embeddings(("blob", "spiral"), ("ring", "line")))
    item = by(evaluate(rep, thresholds=Thresholds(max_merged_pairs=1)), "merged_pairs")
    assert item.outcome == "fail" and item.value == 2 and item.codebook is None
    assert "blob+spiral" in item.message and "line+ring" in item.message
    assert "encoder" in item.remedy
    assert by(evaluate(rep, thresholds=Thresholds(max_merged_pairs=2)), "merged_pairs").outcome == "pass"


# ------------------------------------------------------------------ baseline


def baseline_of(rep):
    doc = report_to_dict(rep)
    validate_report_dict(doc)
    return doc


def test_baseline_identical_passes():
    rep = healthy()
    result = evaluate(rep, thresholds=Thresholds(), baseline=baseline_of(rep))
    assert result.passed
    baseline_items = [i for i in result.items if i.kind == "baseline"]
    assert {i.check for i in baseline_items} == {"utilization", "dead_fraction", "normalized_perplexity",
                                                 "allocation_tv", "relative_mse", "merged_pairs"}
    assert all(i.outcome == "pass" for i in baseline_items)
    assert result.max_regression == DEFAULT_MAX_REGRESSION


def test_baseline_small_change_within_tolerance_passes():
    old = report(codebook(nppl=0.80), ec=embeddings())
    new = report(codebook(nppl=0.77), ec=embeddings())  # -3.75% < 5%
    assert evaluate(new, thresholds=Thresholds(), baseline=baseline_of(old)).passed


def test_baseline_regression_names_metric_codebook_and_values():
    old = report(codebook(used=16, tv=0.05), ec=embeddings())
    new = report(codebook(used=14, tv=0.12), ec=embeddings(("blob", "spiral")))
    result = evaluate(new, thresholds=Thresholds(), baseline=baseline_of(old), max_regression=0.05)
    assert result.exit_code == 1
    util = by(result, "utilization", "quantize.embedding", kind="baseline")
    assert util.outcome == "fail" and util.baseline == 1.0 and util.value == 0.875
    assert "utilization dropped from 100.0% (baseline) to 87.5%" in util.message
    assert util.remedy and util.name == "utilization vs baseline"
    dead = by(result, "dead_fraction", "quantize.embedding", kind="baseline")  # 0 -> 12.5%: floor 0.1 x 5%
    assert dead.outcome == "fail" and dead.baseline == 0.0
    tv = by(result, "allocation_tv", "quantize.embedding", kind="baseline")
    assert tv.outcome == "fail" and "0.05" in tv.message and "0.12" in tv.message
    pairs = by(result, "merged_pairs", kind="baseline")
    assert pairs.outcome == "fail" and "blob+spiral" in pairs.message
    assert by(result, "relative_mse", "quantize.embedding", kind="baseline").outcome == "pass"


def test_baseline_improvement_passes():
    old = report(codebook(used=8, nppl=0.4, tv=0.3), ec=embeddings(("blob", "spiral")))
    new = report(codebook(used=16, nppl=0.9, tv=0.05), ec=embeddings())
    assert evaluate(new, thresholds=Thresholds(), baseline=baseline_of(old)).passed


def test_max_regression_loosens_the_gate():
    old, new = report(codebook(used=16)), report(codebook(used=15))  # -6.25%
    assert not evaluate(new, thresholds=Thresholds(), baseline=baseline_of(old), max_regression=0.05).passed
    assert by(evaluate(new, thresholds=Thresholds(), baseline=baseline_of(old), max_regression=0.5),
              "utilization", "quantize.embedding", kind="baseline").outcome == "pass"
    with pytest.raises(UsageError):
        evaluate(new, thresholds=Thresholds(), baseline=baseline_of(old), max_regression=-1)


def test_codebooks_matched_by_name_and_missing_ones_reported():
    old = rvq()
    new = report(codebook("rvq.layers.0._codebook.embed", tv=None), codebook("rvq.layers.9._codebook.embed", tv=None),
                 ec=embeddings())
    result = evaluate(new, thresholds=Thresholds(), baseline=baseline_of(old))
    gone = [i for i in result.failed if i.check == "codebook"]
    assert sorted(i.codebook for i in gone) == ["rvq.layers.1._codebook.embed", "rvq.layers.2._codebook.embed"]
    assert "not found in this checkpoint" in gone[0].message
    extra = by(result, "codebook", "rvq.layers.9._codebook.embed", kind="baseline")
    assert extra.outcome == "skipped" and "not in the baseline" in extra.message
    assert by(result, "utilization", "rvq.layers.0._codebook.embed", kind="baseline").outcome == "pass"


def test_baseline_without_data_is_skipped():
    old = report(codebook(data=False, tv=None))
    result = evaluate(healthy(), thresholds=Thresholds(), baseline=baseline_of(old))
    util = by(result, "utilization", "quantize.embedding", kind="baseline")
    assert util.outcome == "skipped" and "baseline" in util.message
    assert by(result, "merged_pairs", kind="baseline").outcome == "skipped"
    assert result.passed


def test_codebook_round_trips_through_json():
    cb = healthy().codebooks[0]
    back = codebook_from_dict(report_to_dict(report(cb))["codebooks"][0])
    assert back.usage == cb.usage and back.tokens_collapse == cb.tokens_collapse and back.name == cb.name


def test_check_document_embeds_a_valid_report():
    rep = report(codebook(used=2))
    result = evaluate(rep, thresholds=Thresholds.defaults(), threshold_source="defaults")
    doc = check_document(result, report_to_dict(rep))
    assert doc["schema"] == CHECK_SCHEMA and doc["passed"] is False and doc["exit_code"] == 1
    assert doc["summary"]["fail"] >= 1 and doc["thresholds"]["min_utilization"] == 0.3
    validate_report_dict(doc["report"])
    first = doc["results"][0]
    assert set(first) == {"check", "codebook", "kind", "outcome", "value", "threshold", "baseline", "message", "remedy", "remedy_argv"}


def test_residual_levels_are_not_gated_on_allocation_even_with_strict():
    import vqdoctor
    from vqdoctor.options import AnalysisOptions
    from vqdoctor.samples import sample_path

    report = vqdoctor.inspect(sample_path("residual_vq"), analysis=AnalysisOptions(projection="none"))
    result = evaluate(report, thresholds=Thresholds(max_allocation_tv=0.5), strict=True)
    gated = [(i.codebook, i.outcome) for i in result.items if i.check == "allocation_tv"]
    assert gated == [("quantizer.layers.0", "pass")]
