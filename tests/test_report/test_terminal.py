"""Fixed-width renders of the terminal report: content, no colour under NO_COLOR, narrow widths."""

from __future__ import annotations

import dataclasses
import io
import re

import pytest
from rich.console import Console

from vqdoctor.report.terminal import fmt_num, fmt_pct, render_terminal

SGR_COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;)")


def _render(report, *, width: int = 120, no_color: bool = True) -> str:
    console = Console(no_color=no_color, width=width, force_terminal=False, record=True, file=io.StringIO())
    render_terminal(report, console)
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
        "FAIL starved_modes [quantize.embedding] value 1 (threshold 0.5)",
        "value 37.5% (threshold 30.0%)",
        "remedy: vqdoctor fix kmeans runs/vqvae/last.ckpt --codebook 'quantize.embedding'",
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
def test_narrow_terminals(example_report, data_free_report, width):
    text = _render(example_report, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "#1" in text and "rvq.layers.2._codebook.embed" in text  # numbered summary + legend
    assert "STARVED" in text or "STARVE" in text
    _render(data_free_report, width=width)


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
