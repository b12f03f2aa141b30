"""Progress on stderr (cli/progress.py): stage names, totals, percentage and ETA where N is known,
a spinner with elapsed time that keeps moving through stages without callbacks (t-SNE / UMAP),
per-iteration k-means, and silence when stderr is not a terminal. Fake terminal: a rich Console
with force_terminal=True writing to a StringIO."""

from __future__ import annotations

import io
import re
import time

import torch
from rich.console import Console

from vqdoctor import stages
from vqdoctor.cli.common import analysis_options, data_options
from vqdoctor.cli.progress import lloyd_progress, stage_progress
from vqdoctor.cli.runs import analyse
from vqdoctor.core.kmeans import kmeans
from vqdoctor.samples import sample_path

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def tty() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(force_terminal=True, file=buf, width=120), buf


def frames(buf: io.StringIO) -> list[str]:
    """The distinct lines drawn, in order, without escape codes."""
    seen: list[str] = []
    for line in re.split(r"[\r\n]", ANSI.sub("", buf.getvalue())):
        line = line.strip()
        if line and line not in seen:
            seen.append(line)
    return seen


def test_a_stage_with_a_total_shows_count_percentage_and_eta():
    console, buf = tty()
    with stage_progress(console) as line:
        assert line is not None and stages.current() is line
        stages.stage("assign", total=1000)
        for _ in range(4):
            time.sleep(0.02)
            stages.advance(100)
        line.bar.refresh()
    drawn = frames(buf)
    assert any(f.startswith(("⠋ load", "load")) or " load " in f for f in drawn), drawn
    last = [f for f in drawn if "assign" in f][-1]
    assert "400/1,000 vectors" in last and "40%" in last and "ETA 0:0" in last, last
    assert stages.current() is None  # the listener is gone after the block


def test_the_same_stage_announced_again_gets_its_total_without_losing_the_count():
    console, buf = tty()
    with stage_progress(console) as line:
        stages.stage("encode + assign")
        stages.advance(50)
        stages.stage("encode + assign", total=200)
        stages.advance(50)
        line.bar.refresh()
    assert "100/200 vectors" in frames(buf)[-1] and "50%" in frames(buf)[-1]


def test_a_stage_without_callbacks_keeps_its_elapsed_time_moving():
    console, buf = tty()
    with stage_progress(console):
        stages.stage("projection (tsne, 2,000 points)")
        time.sleep(1.2)  # the main thread is busy, as in t-SNE: rich's refresh thread redraws
    drawn = [f for f in frames(buf) if "projection (tsne" in f]
    assert len(drawn) >= 3, drawn  # the spinner turned
    assert any("0:00:01" in f for f in drawn), drawn


def test_silent_when_stderr_is_not_a_terminal():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False)
    with stage_progress(console) as line:
        assert line is None and stages.current() is None
        stages.stage("assign", total=10)
        stages.advance(10)
    with lloyd_progress(console) as report:
        assert report is None
    assert buf.getvalue() == ""


def test_inspect_names_every_stage_with_the_vector_total():
    console, buf = tty()
    data = data_options(latents=None, channel_axis=None, inputs=None, labels=None, model=None, encoder=None,
                        encode_method=None, allow_global=None, batch_size=2500, device="cpu", max_vectors=None)
    analysis = analysis_options(codebook=None, min_count=1, subsample=500, projection="pca", seed=0, memory_budget_mb=64)
    report = analyse(sample_path("pretrained_healthy"), data=data, analysis=analysis, err=console)
    assert report is not None and report.data.vectors == 10_000
    text = "\n".join(frames(buf))
    for name in ("load", "encode subsample", "modes", "encode + assign", "report", "projection (pca"):
        assert name in text, (name, text)
    assert "/10,000 vectors" in text


def test_fix_kmeans_shows_every_iteration_with_its_inertia():
    console, buf = tty()
    x = torch.randn(600, 4, generator=torch.Generator().manual_seed(0))
    with stage_progress(console):
        with lloyd_progress(console) as report:
            assert report is not None
            result = kmeans(x, 8, iters=5, tol=0.0, progress=report)
    assert result.centroids.shape == (8, 4)
    drawn = [f for f in frames(buf) if "k-means iteration" in f]
    assert any("k-means iteration 1/5" in f for f in drawn) and any("k-means iteration 5/5" in f for f in drawn), drawn
    assert all("inertia" in f for f in drawn)
