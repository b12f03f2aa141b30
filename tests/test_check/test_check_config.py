"""Config files for `vqdoctor check`: discovery upward from the cwd, parsing, validation, precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from vqdoctor.check import CONFIG_KEYS, CheckConfig, Thresholds, config_from_mapping, merge_configs
from vqdoctor.errors import InputFileError, UsageError
from vqdoctor.io.config import find_pyproject_config, load_check_config, read_config_file


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_pyproject_in_a_parent_dir_is_found_from_a_sub_directory(tmp_path, monkeypatch):
    write(tmp_path / "pyproject.toml", "[project]\nname='x'\n[tool.vqdoctor.check]\nmin_utilization = 0.6\n")
    sub = tmp_path / "models" / "tok"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    found = load_check_config(None, start=Path.cwd())
    assert found is not None and found.path == (tmp_path / "pyproject.toml").resolve()
    assert found.values == {"min_utilization": 0.6}
    assert found.source.endswith("pyproject.toml [tool.vqdoctor.check]")


def test_nearest_pyproject_with_the_table_wins(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.vqdoctor.check]\nmin_utilization = 0.1\n")
    write(tmp_path / "a" / "pyproject.toml", "[tool.vqdoctor.check]\nmin_utilization = 0.9\n")
    write(tmp_path / "a" / "b" / "pyproject.toml", "[project]\nname = 'no table here'\n")
    found = find_pyproject_config(tmp_path / "a" / "b")
    assert found.values == {"min_utilization": 0.9} and found.path == (tmp_path / "a" / "pyproject.toml").resolve()


def test_pyproject_without_the_table_is_no_config(tmp_path):
    write(tmp_path / "pyproject.toml", "[project]\nname = 'x'\n")
    (tmp_path / "x").mkdir()
    found = find_pyproject_config(tmp_path / "x")
    assert found is None or tmp_path.resolve() not in found.path.parents


DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_documented_config_examples_are_valid():
    text = (DOCS / "ci.md").read_text(encoding="utf-8")
    import textwrap

    import tomllib

    blocks = [tomllib.loads(textwrap.dedent(b.split("```", 1)[0])) for b in text.split("```toml\n")[1:]]
    assert len(blocks) == 3  # the step-by-step's config, the reference with every key, a --config file
    for block in blocks:  # every documented table is accepted as it stands
        table = block["tool"]["vqdoctor"]["check"] if "tool" in block else block["check"]
        config_from_mapping(table, source="docs", base_dir=Path("/repo"))
    pyproject = blocks[1]["tool"]["vqdoctor"]["check"]
    assert set(pyproject) == set(CONFIG_KEYS)  # the reference example shows every key
    parsed = config_from_mapping(pyproject, source="docs", base_dir=Path("/repo"))
    assert parsed.baseline == Path("/repo/ci/baseline.json") and parsed.strict is True
    assert config_from_mapping(blocks[2]["check"], source="docs").thresholds.min_utilization == 0.8


def test_explicit_config_file_uses_the_check_table(tmp_path):
    cfg = write(tmp_path / "ci" / "vqdoctor.toml", "[check]\nmax_dead_fraction = 0.25\nbaseline = 'base.json'\nstrict = true\n")
    table = read_config_file(cfg)
    parsed = config_from_mapping(table.values, source=table.source, base_dir=table.path.parent)
    assert parsed.thresholds == Thresholds(max_dead_fraction=0.25)
    assert parsed.baseline == tmp_path / "ci" / "base.json" and parsed.strict is True
    assert parsed.sources == (f"{cfg} [check]",)


def test_explicit_pyproject_is_accepted(tmp_path):
    cfg = write(tmp_path / "pyproject.toml", "[tool.vqdoctor.check]\nmax_merged_pairs = 0\n")
    assert read_config_file(cfg).values == {"max_merged_pairs": 0}


def test_config_without_check_table(tmp_path):
    cfg = write(tmp_path / "c.toml", "[other]\nx = 1\n")
    with pytest.raises(UsageError, match=r"no \[check\] table"):
        read_config_file(cfg)


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(UsageError, match="not valid TOML"):
        read_config_file(write(tmp_path / "c.toml", "[check\nmin_utilization = \n"))
    with pytest.raises(InputFileError, match="does not exist"):
        read_config_file(tmp_path / "nope.toml")


def test_unknown_keys_are_listed_all_at_once():
    with pytest.raises(UsageError) as err:
        config_from_mapping({"min_utilisation": 0.5, "max_dead": 0.1, "min_utilization": 0.4}, source="pyproject.toml")
    assert "max_dead, min_utilisation" in err.value.message
    for key in CONFIG_KEYS:
        assert key in err.value.hint


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("min_utilization", "0.5", "not a number"),
        ("min_utilization", True, "not a number"),
        ("min_utilization", 1.5, "between 0 and 1"),
        ("max_relative_mse", -0.1, "0 or more"),
        ("max_merged_pairs", 1.5, "not a whole number"),
        ("strict", "yes", "not a boolean"),
        ("baseline", 3, "not a path"),
    ],
)
def test_wrong_types_name_key_and_value(key, value, needle):
    with pytest.raises(UsageError) as err:
        config_from_mapping({key: value}, source="c.toml [check]")
    assert key in err.value.message and repr(value) in err.value.message and needle in err.value.message


def test_integers_are_accepted_for_floats():
    parsed = config_from_mapping({"max_relative_mse": 1, "max_merged_pairs": 0}, source="c")
    assert parsed.thresholds == Thresholds(max_relative_mse=1.0, max_merged_pairs=0)


def test_flags_win_over_the_file_value_by_value():
    from_file = config_from_mapping({"min_utilization": 0.6, "max_dead_fraction": 0.3, "max_regression": 0.1},
                                    source="pyproject.toml")
    flags = CheckConfig(Thresholds(min_utilization=0.9), strict=True, sources=("flags",))
    merged = merge_configs(from_file, flags)
    assert merged.thresholds == Thresholds(min_utilization=0.9, max_dead_fraction=0.3)
    assert merged.max_regression == 0.1 and merged.strict is True
    assert merged.sources == ("flags", "pyproject.toml")
