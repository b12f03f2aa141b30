"""The JSON contract: golden files, the JSON Schema, key order, null sections, no NaN, loading."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from vqdoctor.errors import InputFileError
from vqdoctor.report.json_out import (
    load_report_dict,
    load_schema,
    report_to_dict,
    validate_report_dict,
    write_json,
)
from vqdoctor.report.schema import SCHEMA

GOLDEN = Path(__file__).parent / "golden"

# Regenerate after an intended change of the contract:  UPDATE_GOLDEN=1 pytest tests/test_report
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _check_golden(doc: dict, name: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert doc == expected
    assert list(doc) == list(expected)  # key order is part of the contract


def test_golden_example(example_report):
    _check_golden(report_to_dict(example_report), "example_report.json")


def test_golden_data_free(data_free_report):
    _check_golden(report_to_dict(data_free_report), "data_free_report.json")


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_example_reports_validate(example_report, data_free_report):
    validator = jsonschema.Draft202012Validator(load_schema())
    for report in (example_report, data_free_report):
        for counts in (False, True):
            validator.validate(report_to_dict(report, include_counts=counts))


def test_top_level_key_order(example_report):
    assert list(report_to_dict(example_report))[:7] == [
        "schema", "vqdoctor_version", "checkpoint", "data", "codebooks", "embeddings_collapse", "verdicts",
    ]  # fmt: skip


def test_design_md_keys_are_there(example_report):
    doc = report_to_dict(example_report)
    assert doc["schema"] == SCHEMA == "vqdoctor.report/1"
    for cb in doc["codebooks"]:
        assert {"name", "size", "dim", "level", "kind", "metric", "layout", "stack", "head", "keys"} <= set(cb)
        assert {"usage", "ema", "geometry", "w", "tokens_collapse"} <= set(cb)
    plain, l0, l1, l2, simvq, ema_only = doc["codebooks"]
    assert {"vectors", "used_codes", "dead_codes", "utilization", "perplexity", "normalized_perplexity",
            "quantization_mse"} <= set(plain["usage"])  # fmt: skip
    assert plain["usage"]["used_codes"] == 12 and plain["usage"]["dead_codes"] == 4
    assert plain["usage"]["utilization"] == 0.75
    assert {"numerical_rank", "effective_rank"} <= set(plain["geometry"])
    tc = plain["tokens_collapse"]
    assert {"modes", "mode_source", "per_mode", "starved_modes", "allocation_tv"} <= set(tc)
    assert tc["starved_modes"] == [2] and len(tc["per_mode"]) == 3
    assert [c["level"] for c in (l0, l1, l2)] == [0, 1, 2] and {c["stack"] for c in (l0, l1, l2)} == {"rvq"}
    assert simvq["w"]["rank"] == 2 and simvq["w"]["shape"] == [4, 4]
    assert {"rank", "effective_rank", "frobenius_norm"} <= set(simvq["w"])
    assert ema_only["usage"] is None and ema_only["ema"]["dead_codes_relative"] == 4
    ec = doc["embeddings_collapse"]
    assert {"input_modes", "embedding_modes", "merged_pairs"} <= set(ec)
    assert ec["merged_pairs"][0]["label_a"] == "blob"
    for v in doc["verdicts"]:
        assert list(v) == ["check", "codebook", "status", "value", "threshold", "message", "remedy", "remedy_argv", "unit"]
    assert {v["status"] for v in doc["verdicts"]} == {"ok", "warn", "fail"}


def test_data_free_sections_are_null(data_free_report):
    doc = report_to_dict(data_free_report)
    cb = doc["codebooks"][0]
    assert cb["usage"] is None and cb["ema"] is None and cb["w"] is None and cb["tokens_collapse"] is None
    assert doc["embeddings_collapse"] is None and doc["projection"] is None
    assert doc["data"]["vectors"] is None


def test_counts_only_when_asked(example_report):
    assert "counts" not in report_to_dict(example_report)["codebooks"][0]
    assert "latents" not in report_to_dict(example_report)["projection"]
    doc = report_to_dict(example_report, include_counts=True)
    assert doc["codebooks"][0]["counts"] == example_report.codebooks[0].counts
    assert doc["codebooks"][5]["counts"] is None
    assert doc["projection"]["latent_modes"] == example_report.projection.latent_modes


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("verdicts"),
        lambda d: d["codebooks"][0].pop("usage"),
        lambda d: d["codebooks"][0]["usage"].pop("perplexity"),
        lambda d: d["codebooks"][0].__setitem__("size", "16"),
        lambda d: d["codebooks"][0]["usage"].__setitem__("utilization", "75%"),
        lambda d: d["verdicts"][0].__setitem__("status", "bad"),
        lambda d: d["codebooks"][0].__setitem__("surprise", 1),
        lambda d: d.__setitem__("embeddings_collapse", []),
        lambda d: d["codebooks"][0]["tokens_collapse"]["per_mode"][0].__setitem__("ratio", "x"),
    ],
    ids=["no-verdicts", "no-usage", "no-perplexity", "size-str", "util-str", "bad-status", "extra-key",
         "ec-list", "ratio-str"],  # fmt: skip
)
def test_mutated_reports_do_not_validate(example_report, mutate):
    doc = copy.deepcopy(report_to_dict(example_report))
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, load_schema(), cls=jsonschema.Draft202012Validator)
    with pytest.raises(InputFileError):
        validate_report_dict(doc)


def test_nan_and_inf_become_null(example_report):
    cb = example_report.codebooks[0]
    usage = dataclasses.replace(cb.usage, quantization_mse=math.nan, relative_mse=math.inf)
    report = dataclasses.replace(example_report, codebooks=[dataclasses.replace(cb, usage=usage)])
    doc = report_to_dict(report)
    assert doc["codebooks"][0]["usage"]["quantization_mse"] is None
    assert doc["codebooks"][0]["usage"]["relative_mse"] is None
    json.dumps(doc, allow_nan=False)


def test_numpy_values_become_plain(example_report):
    cb = example_report.codebooks[0]
    usage = dataclasses.replace(cb.usage, vectors=np.int64(1328), perplexity=np.float32(6.5))
    geometry = dataclasses.replace(cb.geometry, singular_values=np.array([2.0, 1.0]))
    report = dataclasses.replace(example_report, codebooks=[dataclasses.replace(cb, usage=usage, geometry=geometry)])
    u = report_to_dict(report)["codebooks"][0]
    assert type(u["usage"]["vectors"]) is int and type(u["usage"]["perplexity"]) is float
    assert u["geometry"]["singular_values"] == [2.0, 1.0]


def test_write_json_file_and_load_back(example_report, tmp_path):
    dest = tmp_path / "report.json"
    write_json(example_report, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temp file left
    assert load_report_dict(dest) == report_to_dict(example_report)
    write_json(example_report, dest, include_counts=True)  # replaces the file
    assert "counts" in load_report_dict(dest)["codebooks"][0]


def test_write_json_stdout(data_free_report, capsys):
    write_json(data_free_report, "-")
    assert json.loads(capsys.readouterr().out) == report_to_dict(data_free_report)


def test_write_json_missing_folder_is_a_user_error(example_report, tmp_path):
    from vqdoctor.errors import VqdoctorError

    with pytest.raises(VqdoctorError, match="(?i)cannot write"):
        write_json(example_report, tmp_path / "nope" / "r.json")


def test_load_wrong_schema_names_both(example_report, tmp_path):
    doc = report_to_dict(example_report)
    doc["schema"] = "vqdoctor.report/2"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputFileError) as err:
        load_report_dict(path)
    assert "vqdoctor.report/2" in str(err.value) and "vqdoctor.report/1" in str(err.value)


@pytest.mark.parametrize(
    "text, words",
    [("{not json", "not valid JSON"), ("[1, 2]", "not a vqdoctor report"), ('{"a": NaN}', "NaN"),
     ("{}", "schema None")],  # fmt: skip
)
def test_load_bad_files(tmp_path, text, words):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputFileError, match=words):
        load_report_dict(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_report_dict(tmp_path / "missing.json")


def test_invalid_field_is_named(example_report, tmp_path):
    doc = report_to_dict(example_report)
    doc["codebooks"][1]["usage"]["dead_codes"] = -1
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match=r"codebooks\[1\]\.usage\.dead_codes"):
        load_report_dict(path)
