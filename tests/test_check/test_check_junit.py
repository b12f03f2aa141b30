"""JUnit XML: one testcase per check per codebook, parsed back with xml.etree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from check_helpers import codebook, embeddings, report

from vqdoctor.check import Thresholds, evaluate
from vqdoctor.report.json_out import report_to_dict
from vqdoctor.report.junit import check_to_junit, write_junit


def test_junit_cases_failures_and_skips(tmp_path):
    rep = report(codebook("a", used=2), codebook("b & <c>", data=False, tv=None), ec=embeddings(("blob", "spiral")))
    base = report_to_dict(report(codebook("a"), codebook("b & <c>"), ec=embeddings()))
    result = evaluate(rep, thresholds=Thresholds.defaults(), baseline=base)
    path = tmp_path / "junit.xml"
    write_junit(result, path, suite="vqdoctor check x.safetensors")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(result.items) == int(suite.get("tests"))
    assert int(suite.get("failures")) == len(result.failed) > 0
    assert int(suite.get("skipped")) == len(result.skipped) > 0
    names = {(c.get("classname"), c.get("name")) for c in cases}
    assert ("a", "utilization") in names and ("a", "utilization vs baseline") in names
    assert ("(model)", "merged_pairs") in names and ("b & <c>", "dead_fraction") in names
    failed = next(c for c in cases if c.get("classname") == "a" and c.get("name") == "utilization")
    failure = failed.find("failure")
    assert "12.5%" in failure.get("message") and "vqdoctor fix revive" in failure.text
    skipped = next(c for c in cases if c.get("classname") == "b & <c>" and c.get("name") == "utilization")
    assert "data-free" in skipped.find("skipped").get("message")
    passed = next(c for c in cases if c.get("classname") == "a" and c.get("name") == "relative_mse")
    assert passed.find("failure") is None and passed.find("skipped") is None


def test_junit_all_pass_is_well_formed():
    text = check_to_junit(evaluate(report(codebook()), thresholds=Thresholds(min_utilization=0.5)))
    assert text.startswith("<?xml")
    suite = ET.fromstring(text).find("testsuite")
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == 1
