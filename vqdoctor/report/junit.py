"""JUnit XML for ``vqdoctor check --junit PATH``, so CI systems show the checks natively.

One ``<testcase>`` per check per codebook: ``classname`` = the codebook (``(model)`` for model-wide
checks), ``name`` = the check (``utilization``, or ``utilization vs baseline``). A failed check has a
``<failure message=...>`` whose text adds the remedy; a skipped check has ``<skipped message=...>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from vqdoctor.report.check_result import CheckResult
from vqdoctor.report.json_out import atomic_write_bytes

MODEL_WIDE = "(model)"


def check_to_junit(result: CheckResult, *, suite: str = "vqdoctor check") -> str:
    """The JUnit XML document (``<testsuites>`` with one ``<testsuite>``) as text."""
    counts = result.summary()
    attrs = {"name": suite, "tests": str(len(result.items)), "failures": str(counts["fail"]),
             "errors": "0", "skipped": str(counts["skipped"] + counts["insufficient"]), "time": "0"}  # fmt: skip
    root = ET.Element("testsuites", {k: v for k, v in attrs.items() if k != "skipped"})
    ts = ET.SubElement(root, "testsuite", attrs)
    props = ET.SubElement(ts, "properties")
    ET.SubElement(props, "property", {"name": "threshold_source", "value": result.threshold_source})
    if result.baseline is not None:
        ET.SubElement(props, "property", {"name": "baseline", "value": result.baseline})
    for item in result.items:
        case = ET.SubElement(ts, "testcase", {"classname": item.codebook or MODEL_WIDE, "name": item.name, "time": "0"})
        if item.outcome == "fail":
            failure = ET.SubElement(case, "failure", {"message": item.message, "type": item.kind})
            failure.text = item.message + (f"\nremedy: {item.remedy}" if item.remedy else "")
        elif item.outcome in ("skipped", "insufficient"):  # not judged: neither passed nor failed
            ET.SubElement(case, "skipped", {"message": item.message})
        else:
            ET.SubElement(case, "system-out").text = item.message
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(result: CheckResult, dest: str | Path, *, suite: str = "vqdoctor check") -> None:
    """Write the JUnit XML atomically to ``dest``."""
    atomic_write_bytes(dest, check_to_junit(result, suite=suite).encode("utf-8"))
