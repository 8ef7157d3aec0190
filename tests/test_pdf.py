"""report.pdf as an auditor files it (issue 19), checked on the rendered pages.

The quickstart drill runs once with ``--pdf`` and a signing key; its PDF's pages are
rendered to images (pypdfium2) and read back as text. Every page must carry ink in its
body (no blank page, no page holding only the footer), the running header (drill,
verdict, date) and a correct "page X of Y"; the PDF must carry the SHA-256 of the
report.html it was made from, and the signature must cover it. A negative control shows
the blank-page detector fires on a PDF that does have a blank page.

WeasyPrint is an optional dependency (``drproof[pdf]``, in the test extras); with CI=true
a missing one fails instead of skipping.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest

from drills.cli import main
from engine.errors import ConfigError
from reports import load_results, write_all
from reports.pdf import DIGEST_KEY, page_css, write_pdf
from reports.view import format_utc
from tests.conftest import SCENARIOS
from tests.integration.servers import unavailable
from tests.test_scrub import _results

# Share of a page body's pixels darker than light grey. A page of the report is above 0.02;
# a page holding one heading (what the old print rules left before a table) is below 0.01.
INK_THRESHOLD = 0.01


def _require() -> Any:
    try:
        import pypdfium2
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as exc:
        unavailable(f"WeasyPrint or pypdfium2 is missing ({exc}); install drproof[test]")
    return pypdfium2


def _pages(pdf: Path) -> list[tuple[float, str]]:
    """(body ink share, text) of every page, rendered at 72 dpi."""
    pdfium = _require()
    out = []
    document = pdfium.PdfDocument(str(pdf))
    for page in document:
        image = page.render(scale=1).to_pil().convert("L")
        width, height = image.size
        # The body only: the running header and footer are in the top and bottom margins.
        body = image.crop((0, int(height * 0.08), width, int(height * 0.92)))
        histogram = body.histogram()
        dark = sum(histogram[:200])
        out.append((dark / (body.size[0] * body.size[1]), page.get_textpage().get_text_range()))
    return out


def _metadata(pdf: Path) -> tuple[str | None, bytes | None]:
    """The HTML digest in the PDF's document information, and the attached report.html."""
    pdfium = _require()
    document = pdfium.PdfDocument(str(pdf))
    digest = document.get_metadata_value(DIGEST_KEY) or None
    attached = None
    for i in range(document.count_attachments()):
        attachment = document.get_attachment(i)
        if attachment.get_name() == "report.html":
            attached = bytes(attachment.get_data())
    return digest, attached


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require()
    root = tmp_path_factory.mktemp("pdf")
    assert main(["keys", "init", "--private", str(root / "k.key"), "--public", str(root / "k.pub")]) == 0
    out = root / "report"
    code = main(["run", str(SCENARIOS / "quickstart.yaml"), "--report-dir", str(out), "--pdf",
                 "--sign-key", str(root / "k.key"), "-q"])  # fmt: skip
    assert code == 0
    return out


@pytest.mark.integration
@pytest.mark.slow
def test_quickstart_pdf_has_no_blank_page_and_correct_headers(quickstart: Path) -> None:
    pages = _pages(quickstart / "report.pdf")
    results = load_results(quickstart / "results.json")
    date = format_utc(results.started_at)
    assert 2 <= len(pages) <= 16  # Chromium printed 11 letter pages before; A4 with flowing sections
    for number, (ink, text) in enumerate(pages, start=1):
        body = [line for line in text.splitlines() if "drproof drill quickstart" not in line and " of " not in line]
        # A short last page (the scenario's last lines, the colophon) has little ink but is not blank.
        assert ink > INK_THRESHOLD or "".join(body).strip(), f"page {number} of {len(pages)} is blank ({ink:.4f})"
        assert "drproof drill quickstart" in text and "PASS" in text and date in text, f"page {number} header"
        assert f"page {number} of {len(pages)}" in text
    assert "Run by" in pages[0][1] and "What was tested" in pages[0][1]  # identity and scope on page one


@pytest.mark.integration
@pytest.mark.slow
def test_pdf_carries_the_digest_of_its_html_and_is_signed(quickstart: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html = (quickstart / "report.html").read_bytes()
    digest, attached = _metadata(quickstart / "report.pdf")
    assert digest == hashlib.sha256(html).hexdigest()
    assert attached == html
    assert digest[:16] in _pages(quickstart / "report.pdf")[-1][1]
    capsys.readouterr()
    assert (
        main(["evidence", "verify", str(quickstart), "--public-key", str(quickstart.parent / "k.pub"), "--json"]) == 0
    )
    assert "report.pdf" in (quickstart / "evidence.json").read_text()
    assert "when the run finished writing its reports" in html.decode()  # the report names its pending signature


@pytest.mark.integration
@pytest.mark.slow
def test_report_pdf_rerenders_elsewhere_and_refuses_signed_directories(quickstart: Path, tmp_path: Path) -> None:
    assert main(["report", str(quickstart / "results.json"), "--pdf"]) == 2  # would change signed files
    pub = quickstart.parent / "k.pub"
    assert (
        main(["report", str(quickstart / "results.json"), "--pdf", "--out", str(tmp_path), "--public-key", str(pub)])
        == 0
    )
    text = " ".join(t for _, t in _pages(tmp_path / "report.pdf"))
    assert "verified when this page was rendered" in text


def test_blank_page_detector_fires_on_blank_and_nearly_blank_pages(tmp_path: Path) -> None:
    """Negative control: an empty page, and a page holding only a heading, are both caught."""
    _require()
    import weasyprint

    text = "<p>" + "evidence of a restore " * 120 + "</p>"
    page = "<div style='break-after: page'>{}</div>"
    html = "".join(page.format(body) for body in (text, "", "<h2>Controls evidenced</h2>", text))
    pdf = tmp_path / "blank.pdf"
    pdf.write_bytes(weasyprint.HTML(string=html).write_pdf())
    inks = [ink for ink, _ in _pages(pdf)]
    assert len(inks) == 4
    assert inks[1] < INK_THRESHOLD and inks[2] < INK_THRESHOLD < min(inks[0], inks[3]), inks


def test_header_text_cannot_inject_css(tmp_path: Path) -> None:
    """A scenario name with quotes and braces is shown as written, not parsed as CSS."""
    _require()
    results = _results("name: s\n")
    results.scenario.name = 'x"; } @page { @top-left { content: "pwned'
    css = page_css(results, "0" * 64)
    assert '"pwned' not in css
    html = write_all(results, tmp_path, formats=("html",))["html"]
    text = _pages(write_pdf(results, html))[0][1]
    assert 'drproof drill x"; } @page { @top-left { content: "pwned' in text


def test_missing_weasyprint_is_exit_2_before_the_drill(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import weasyprint now raises ImportError
    with pytest.raises(ConfigError, match=r"drproof\[pdf\]"):
        from reports.pdf import check_available

        check_available()
    out = tmp_path / "never"
    assert main(["run", str(SCENARIOS / "quickstart.yaml"), "--report-dir", str(out), "--pdf", "-q"]) == 2
    assert not out.exists()  # no drill was spent
