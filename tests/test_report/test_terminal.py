"""Fixed-width renders of the terminal report: content, no colour under NO_COLOR, narrow widths."""

from __future__ import annotations

import dataclasses
import io
import re

import pytest
from rich.console import Console

from vqdoctor.report.schema import Finding
from vqdoctor.report.terminal import fmt_num, fmt_pct, render_terminal, short_count

SGR_COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;)")


def _render(report, *, width: int = 120, no_color: bool = True, verbose: bool = True) -> str:
    console = Console(no_color=no_color, width=width, force_terminal=False, record=True, file=io.StringIO())
    render_terminal(report, console, verbose=verbose)
    text = console.export_text()
    assert "\x1b" not in console.file.getvalue()  # not a terminal: no escape codes at all
    return text


def test_summary_table_comes_first(example_report):
    text = _render(example_report)
    first = [line for line in text.splitlines() if line.strip()][0]
    assert "vqdoctor: runs/vqvae/last.ckpt" in first
    head = text.split("checkpoint ")[0]  # the summary table, before the details
    for s in ("quantize.embedding", "16 x 4", "75.0%", "4 dead", "6.41", "40.0%", "0.0123", "(0.087)",
              "4/2.53", "0.41", "5/8", "level 2", "1 fail", "1 warn", "simvq"):  # fmt: skip
        assert s in head, s


def test_details_collapse_verdicts_and_notes(example_report):
    text = _render(example_report)
    for s in (
        "stack rvq: 3 levels",
        "used 12 of 16 (75.0%)",
        "effective rank 2.53",
        "rank 2, effective rank 1.87, Frobenius norm 2.5",
        "initialised: no",
        "2: spiral",
        "STARVED",
        "6.2%",
        "0.189",
        "inputs 3 -> latents 2",
        "inputs 98.0% -> latents 71.0%",
        "blob + spiral",
        "44.0%",
        "FAIL starved_modes [quantize.embedding] value 1 (threshold 0)",
        "value 37.5% (threshold 30.0%)",
        "remedy: vqdoctor fix kmeans runs/vqvae/last.ckpt --codebook quantize.embedding --out fixed.ckpt",
        "[model]",
        "codebook-free quantizer (name=fsq",
        "2-D picture: pca of 6 points",
    ):
        assert s in text, s
    # worst first
    assert text.index("FAIL starved_modes") < text.index("WARN utilization") < text.index("OK   relative_mse")
    assert text.index("verdicts ─") < text.index("notes ─")


def test_data_free_report(data_free_report):
    text = _render(data_free_report, width=80)
    assert "data-free analysis: no latents given" in text
    assert "none (data-free analysis)" in text
    assert "usage " not in text and "tokens collapse" not in text and "embeddings collapse" not in text
    assert "numerical rank 2, effective rank 1.76" in text


@pytest.mark.parametrize("width", [60, 80])
@pytest.mark.parametrize("verbose", [False, True])
def test_narrow_terminals(example_report, data_free_report, width, verbose):
    text = _render(example_report, width=width, verbose=verbose)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "#1" in text and "rvq.layers.2._codebook.embed" in text  # numbered summary + legend
    if verbose:
        assert "STARVED" in text or "STARVE" in text
    text = _render(data_free_report, width=width, verbose=verbose)
    assert max(len(line) for line in text.splitlines()) <= width


def test_compact_report_one_line_per_failing_check(example_report):
    text = _render(example_report, width=80, verbose=False)
    lines = text.splitlines()
    for v in example_report.verdicts:
        shown = [line for line in lines if line.startswith(v.status.upper()) and f" {v.check} " in line
                 and (v.codebook or "[model]") in line]
        assert len(shown) == (0 if v.status == "ok" else 1), (v, shown)
    assert "FAIL starved_modes [quantize.embedding] value 1 (threshold 0)" in text
    assert "checks: 3 fail, 3 warn, 3 ok" in text
    assert "--verbose" in text
    assert "stack rvq" not in text and "verdicts ─" not in text  # the details are for --verbose


def test_remedy_lines_paste_as_one_command(example_report):
    import shlex

    f = dataclasses.replace(example_report.verdicts[0], check="x")
    argv = ["vqdoctor", "fix", "revive", "runs/a very long folder name/" + "x" * 30 + ".pt", "--codebook", "q",
            "--latents", "z z.npy", "--out", "fixed.pt"]
    finding = Finding("codebook collapse", "fail", ["q"], "s", shlex.join(argv), argv)
    report = dataclasses.replace(example_report, diagnosis=[finding], verdicts=[f])
    text = _render(report, width=80, verbose=False)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "remedy: " in line)
    block = [lines[start].split("remedy: ", 1)[1]]
    while block[-1].endswith(" \\"):
        block.append(lines[start + len(block)])
    assert len(block) > 1 and all(len(line) <= 80 for line in lines)
    assert shlex.split(" ".join(b.removesuffix(" \\") for b in block)) == argv


def _levels(example_report, n: int, size: int = 64):
    base = example_report.codebooks[0]
    cbs = [dataclasses.replace(base, name=f"rvq.layers.{i}", stack="rvq", level=i, size=size) for i in range(n)]
    verdicts = [dataclasses.replace(v, codebook=cb.name) for cb in cbs for v in example_report.verdicts[:3]]
    return dataclasses.replace(example_report, codebooks=cbs, verdicts=verdicts)


def test_eight_level_rvq_stays_short(example_report):
    text = _render(_levels(example_report, 8), width=80, verbose=False)
    lines = text.splitlines()
    assert len(lines) <= 40, text
    assert "[8: rvq.layers.0, rvq.layers.1, +6]" in text  # one line per check, not per level
    assert sum(1 for line in lines if line.startswith(("#", "rvq.layers"))) >= 8  # one summary row per level


def test_summary_does_not_wrap_for_large_codebooks(example_report):
    report = _levels(example_report, 1, size=16_384)
    text = _render(report, width=80, verbose=False)
    assert "16.4k" in text
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    caption = next(i for i, line in enumerate(lines) if "data: " in line)
    assert caption - rule - 1 == 2, text  # the row's two lines: nothing wrapped
    assert "16.4k x 4" in lines[rule + 1]


def test_short_count():
    assert [short_count(n) for n in (999, 4096, 16_384, 262_144, 2_500_000)] == ["999", "4,096", "16.4k", "262k", "2.5M"]


def test_no_colour_codes_under_no_color(example_report):
    buf = io.StringIO()
    console = Console(no_color=True, force_terminal=True, width=100, file=buf)
    render_terminal(example_report, console)
    assert not SGR_COLOUR.search(buf.getvalue())
    # and with colour on, statuses are coloured
    buf = io.StringIO()
    render_terminal(example_report, Console(force_terminal=True, color_system="standard", width=100, file=buf))
    assert SGR_COLOUR.search(buf.getvalue())


def test_user_strings_are_not_markup(example_report):
    cb = dataclasses.replace(example_report.codebooks[0], name="[bold red]evil[/bold red]")
    report = dataclasses.replace(example_report, codebooks=[cb])
    assert "[bold red]evil[/bold red]" in _render(report, width=200)


@pytest.mark.parametrize(
    "x, s",
    [(None, "-"), (0, "0"), (1328, "1,328"), (6.407748, "6.41"), (0.087, "0.087"), (0.0123, "0.0123"),
     (123456.7, "123,457"), (0.000123, "1.23e-04"), (float("nan"), "-")],  # fmt: skip
)
def test_fmt_num(x, s):
    assert fmt_num(x) == s


@pytest.mark.parametrize(
    "x, s", [(None, "-"), (0.75, "75.0%"), (1.0, "100.0%"), (0.99999, "99.9%"), (0.00547, "0.55%"), (0.0, "0%")]
)
def test_fmt_pct(x, s):
    assert fmt_pct(x) == s
