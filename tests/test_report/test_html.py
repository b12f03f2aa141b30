"""The HTML report: parses, self-contained (no remote resources, no script), pictures embedded,
user strings escaped."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import pytest

from vqdoctor.report.html import render_html, write_html
from vqdoctor.report.plots import iter_plots

EVIL = '<script>alert("x")</script>&"'


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(doc: str) -> _Collect:
    p = _Collect()
    p.feed(doc)
    p.close()
    return p


@pytest.fixture(scope="module")
def evil_report():
    from .conftest import make_example_report

    return make_example_report(name=EVIL)


@pytest.fixture(scope="module")
def evil_html(evil_report):
    return render_html(evil_report)


def test_parses_and_is_self_contained(evil_html):
    p = _parse(evil_html)
    tags = [t for t, _ in p.tags]
    assert tags[0] == "html" and "style" in tags and "table" in tags
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    for _, attrs in p.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            # inline pictures; in-page links (the table of contents) only
            assert value is None or value.startswith("data:") or (key == "href" and value.startswith("#")), value
    assert "http://" not in evil_html and "https://" not in evil_html
    assert "url(" not in evil_html and "@import" not in evil_html


def test_pictures_are_embedded(evil_html, evil_report):
    imgs = [a["src"] for t, a in _parse(evil_html).tags if t == "img"]
    assert len(imgs) == len(list(iter_plots(evil_report))) == 19
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_strings_are_escaped(evil_html):
    assert EVIL not in evil_html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;" in evil_html
    assert EVIL in "".join(_parse(evil_html).text)  # the reader sees the name as written


def test_same_content_as_terminal(evil_html):
    text = " ".join(_parse(evil_html).text)
    for s in ("Summary", "Verdicts", "75.0%", "6.41", "STARVED", "spiral", "blob + spiral",
              "inputs 98.0% -> latents 71.0%", "vqdoctor fix kmeans runs/vqvae/last.ckpt", "rank 2, effective rank 1.87",
              "codebook-free quantizer", "vqdoctor.report/1", "FAIL", "WARN", "OK"):  # fmt: skip
        assert s in text, s


def test_data_free_and_write(data_free_report, tmp_path):
    doc = render_html(data_free_report)
    _parse(doc)
    assert "data-free analysis: no latents given" in doc
    assert "Embeddings collapse" not in doc
    assert doc.count("<img ") == 1
    path = tmp_path / "report.html"
    write_html(data_free_report, path)
    assert path.read_text(encoding="utf-8") == doc
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_without_pictures(data_free_report):
    assert "<img" not in render_html(data_free_report, pictures=False)
