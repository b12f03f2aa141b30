"""The shared data/analysis flags are declared once (cli/common.SHARED_OPTIONS) and reach every
command that reads data with the same name, default, help and panel; one device rule for all."""

import re

import pytest
from typer.testing import CliRunner

from vqdoctor.cli.app import app
from vqdoctor.cli.common import SHARED_OPTIONS, data_options, shared_options
from vqdoctor.core.device import DEVICE_CHOICES, check_device
from vqdoctor.errors import UsageError
from vqdoctor.options import AnalysisOptions, DataOptions

runner = CliRunner()

COMMANDS = {  # command -> the shared flags it does not take
    ("inspect",): set(),
    ("check",): {"projection", "shard"},  # --nesting since issue 16 (EMA weights can be gated)
    ("fix", "kmeans"): {"min_count", "subsample", "projection", "shard"},
    ("fix", "revive"): {"subsample", "projection", "shard"},  # revive declares its own --min-count
    ("fix", "simvq"): {"min_count", "subsample", "projection", "shard"},
    ("trend",): {"metric", "projection", "modes", "shard"},
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(cmd: tuple[str, ...]) -> str:
    res = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("cmd", list(COMMANDS), ids=" ".join)
def test_every_shared_flag_reaches_the_command_with_its_help(cmd):
    text = _help(cmd)
    for name, (annotation, _default) in SHARED_OPTIONS.items():
        flag = _flag(name)
        present = re.search(rf"│ {re.escape(flag)}\s", text) is not None
        if name in COMMANDS[cmd]:
            assert not present or (cmd, name) == (("fix", "revive"), "min_count"), (cmd, flag)
            continue
        assert present, (cmd, flag)
        info = annotation.__metadata__[0]
        assert info.help[:40] in text, (cmd, flag)


def test_panels_keep_their_order_in_inspect():
    text = _help(("inspect",))
    panels = re.findall(r"╭─ (\w+) ", text)
    assert panels == ["Arguments", "Options", "Data", "Encoder", "Checkpoint", "Analysis", "Run", "Output"]


def test_the_command_gets_built_option_groups():
    seen = {}

    @shared_options(exclude=("shard",))
    def command(*, data: DataOptions, analysis: AnalysisOptions, extra: int = 3) -> None:
        seen.update(data=data, analysis=analysis, extra=extra)

    import inspect

    params = list(inspect.signature(command).parameters)
    assert params[0] == "latents" and "extra" in params and "shard" not in params and "data" not in params
    defaults = {n: d for n, (_, d) in SHARED_OPTIONS.items() if n != "shard"}
    command(**(defaults | {"seed": 7, "device": "cpu", "allow_global": ["argparse.Namespace"]}), extra=5)
    assert seen["data"].device == "cpu" and seen["data"].allow_globals == ("argparse.Namespace",)
    assert seen["analysis"].seed == 7 and seen["extra"] == 5


def test_a_command_cannot_redeclare_a_shared_flag():
    with pytest.raises(TypeError, match="seed"):
        @shared_options()
        def command(*, data: DataOptions, analysis: AnalysisOptions, seed: int = 0) -> None: ...


def test_one_device_rule_for_cli_and_core():
    for name in (*DEVICE_CHOICES, "cuda:1", "cuda:0"):
        assert check_device(name) == name
        assert data_options(latents=None, channel_axis=None, inputs=None, labels=None, model=None, encoder=None,
                            encode_method=None, allow_global=None, batch_size=8, device=name,
                            max_vectors=None).device == name
    for bad in ("tpu", "cpu:0", "cuda:", "cuda:x", "auto:1"):
        with pytest.raises(UsageError, match="unknown device"):
            check_device(bad)


def test_cli_rejects_an_unknown_device_in_one_paragraph(tmp_path):
    res = runner.invoke(app, ["check", str(tmp_path / "none.pt"), "--device", "tpu"])
    assert res.exit_code == 2 and "tpu" in res.output and "cuda:N" in res.output
