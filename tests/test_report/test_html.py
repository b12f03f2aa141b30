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
    assert len(imgs) == len(list(iter_plots(evil_report))) == 20
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


# ---------------------------------------------------------------- layout: contents, sections, pictures in place


class _Sections(HTMLParser):
    """ids, <details> (id, open) and, for every <img>, the innermost <details>/<section> holding it
    (else the last <h2> id before it)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []  # open details/section ids
        self.details: list[tuple[str, bool]] = []
        self.ids: list[str] = []
        self.toc: list[str] = []
        self.imgs: list[tuple[str, str]] = []  # (alt, where)
        self.in_nav = False
        self.h2 = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "nav":
            self.in_nav = True
        elif tag == "a" and self.in_nav:
            self.toc.append(a["href"])
        elif tag in ("details", "section"):
            self.stack.append(a.get("id") or "?")
            if tag == "details":
                self.details.append((a.get("id") or "?", "open" in a))
        elif tag == "h2":
            self.h2 = a.get("id") or "?"
        elif tag == "img":
            self.imgs.append((a["alt"], self.stack[-1] if self.stack else self.h2))

    def handle_endtag(self, tag):
        if tag == "nav":
            self.in_nav = False
        elif tag in ("details", "section"):
            self.stack.pop()


@pytest.fixture(scope="module")
def example():
    from .conftest import make_example_report

    report = make_example_report()
    p = _Sections()
    p.feed(render_html(report, dpi=50))
    p.close()
    return report, p


def test_contents_link_every_codebook_once(example):
    report, p = example
    links = [h for h in p.toc if h.startswith("#codebook-")]
    assert links == [f"#codebook-{i}" for i in range(1, len(report.codebooks) + 1)]
    assert set(h[1:] for h in p.toc) <= set(p.ids)  # every link lands somewhere
    assert {"#summary", "#codebooks", "#embeddings", "#verdicts", "#notes", "#stack-1"} <= set(p.toc)
    assert "#diagnosis" not in p.toc  # the hand-built report has no diagnosis: no dead link


def test_summary_rows_link_to_their_codebook():
    from .conftest import make_example_report

    report = make_example_report()
    doc = render_html(report, pictures=False)
    summary = doc[doc.index('id="summary"') : doc.index('id="codebooks"')]
    for i, cb in enumerate(report.codebooks, start=1):
        assert f'<a href="#codebook-{i}">{_escaped(cb.name)}' in summary


def test_each_codebook_collapsible_and_open_when_failing(example):
    report, p = example
    codebook_details = [(i, o) for i, o in p.details if i.startswith("codebook-")]
    assert [i for i, _ in codebook_details] == [f"codebook-{i}" for i in range(1, len(report.codebooks) + 1)]
    # fail: quantize.embedding (starved_modes) and rvq level 2 (utilization); warn/ok/no verdicts stay closed
    assert [i for i, o in codebook_details if o] == ["codebook-1", "codebook-4"]
    assert ("verdicts", False) in p.details  # the full table, folded away at the end


def test_pictures_sit_in_the_section_they_explain(example):
    report, p = example
    assert len(p.imgs) == 20
    for alt, where in p.imgs:
        if alt.startswith("stack "):
            assert where == "stack-1", alt  # the per-level pictures head their stack (the 2nd group)
        elif alt.startswith("2-D picture"):
            assert where == "embeddings", alt
        else:
            i = next(i for i, cb in enumerate(report.codebooks, start=1) if alt.startswith(cb.name + ":"))
            assert where == f"codebook-{i}", alt


def test_levels_of_a_stack_sit_inside_its_section(example):
    doc = render_html(make_report_rvq_only(), pictures=False)
    start, end = doc.index('<section class="stack" id="stack-0">'), doc.index("</section>")
    for i in (1, 2, 3):
        assert start < doc.index(f'id="codebook-{i}"') < end


def make_report_rvq_only():
    import dataclasses

    from .conftest import make_example_report

    r = make_example_report()
    return dataclasses.replace(r, codebooks=r.codebooks[1:4], projection=None, embeddings_collapse=None,
                               verdicts=[v for v in r.verdicts if v.codebook and v.codebook.startswith("rvq")])  # fmt: skip


def test_html_pictures_at_the_given_dpi(data_free_report):
    from vqdoctor.errors import UsageError

    src = [a["src"] for t, a in _parse(render_html(data_free_report, dpi=55)).tags if t == "img"][0]
    png = base64.b64decode(src.split(",", 1)[1])
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (int(6.4 * 55), int(4.0 * 55))
    with pytest.raises(UsageError, match="--dpi 700 is out of range"):
        render_html(data_free_report, dpi=700)


def test_a_codebook_section_lists_each_remedy_once():
    from .conftest import make_example_report

    report = make_example_report()
    doc = render_html(report, pictures=False)
    start = doc.index('<details id="codebook-4"')  # rvq level 2: utilization fail (revive), relative_mse warn (kmeans)
    section = doc[start : doc.index("</details>", start)]
    revive = next(v.remedy for v in report.verdicts if v.codebook == "rvq.layers.2._codebook.embed" and v.status == "fail")
    assert section.count(_escaped(revive)) == 1 and "for utilization" in section and "for relative_mse" in section
    assert "<th>remedy</th>" not in section  # the full table at the end keeps the remedy column
    assert "<th>remedy</th>" in doc[doc.index('id="verdicts"') :]


def _escaped(text: str) -> str:
    from html import escape

    return escape(text, quote=True)
