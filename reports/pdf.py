"""report.pdf: the HTML report on paper, for evidence archives that file PDFs.

Why WeasyPrint: it implements CSS paged media, so every page gets a running header (drill,
verdict, date) and a "page X of Y" footer computed by the layout itself
(``counter(page)``/``counter(pages)``), which a browser's print-to-PDF cannot do with text
of our choosing. It is a Python package (with Pango from the system), so ``drproof`` makes
the PDF itself, with no browser to drive.

The PDF is made from report.html exactly as written, and carries that file's SHA-256: in
its metadata (``drproofhtmlsha256`` in the document information), in every page footer (shortened) and in full at
the end, so whoever holds both can tell the PDF shows that very report. The HTML itself
is attached to the PDF too. WeasyPrint is imported only when a PDF is asked for.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.journal import Results
from reports import view
from reports.writers import _atomic_write

__all__ = ["DIGEST_KEY", "PDF_NAME", "check_available", "page_css", "write_pdf"]

PDF_NAME = "report.pdf"
DIGEST_KEY = "drproofhtmlsha256"  # the PDF Info entry (WeasyPrint keeps a meta name lower-cased, letters and digits)
INSTALL = "pip install 'drproof[pdf]' (WeasyPrint) and Pango from the system (Debian: libpango-1.0-0 libpangoft2-1.0-0)"


def _css_string(text: str) -> str:
    """A CSS string literal: quotes, backslashes and control characters escaped as code points."""
    out = []
    for ch in text:
        if ch.isprintable() and ch not in '"\\':
            out.append(ch)
        else:
            out.append(f"\\{ord(ch):x} ")
    return '"' + "".join(out) + '"'


def page_css(results: Results, html_sha256: str) -> str:
    """Running headers and footers for every page; the report's own print rules do the rest."""
    title = f"drproof drill {results.scenario.name}"
    verdict = results.verdict.upper()
    date = view.format_utc(results.started_at)
    return f"""
@page {{
  size: A4;
  margin: 20mm 14mm 18mm 14mm;
  @top-left {{ content: {_css_string(title)}; font: 8pt sans-serif; color: #333; }}
  @top-center {{ content: {_css_string(verdict)}; font: bold 9pt sans-serif; }}
  @top-right {{ content: {_css_string(date)}; font: 8pt sans-serif; color: #333; }}
  @bottom-left {{ content: {_css_string("made from report.html, SHA-256 " + html_sha256[:16] + "…")};
                  font: 7pt monospace; color: #555; }}
  @bottom-right {{ content: "page " counter(page) " of " counter(pages); font: 8pt sans-serif; }}
}}
"""


def _weasyprint() -> Any:
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the Python package is there, Pango is not
        raise ConfigError(f"a PDF needs WeasyPrint: {INSTALL} ({type(exc).__name__}: {exc})") from None
    return weasyprint


def check_available() -> None:
    """Fail before a drill runs when its PDF could not be made after it (ConfigError, exit 2)."""
    _weasyprint()


def _with_digest(html: str, digest: str) -> str:
    """The report with its digest in a meta tag (PDF metadata) and a closing line (the last page)."""
    meta = f'<meta name="{DIGEST_KEY}" content="{digest}">'
    tail = (
        '<p class="pdf-digest small muted">This PDF was made by drproof from report.html with SHA-256 '
        f"<code>{digest}</code>; that file is attached to it.</p>"
    )
    return html.replace("</head>", meta + "\n</head>", 1).replace("</footer>", tail + "\n</footer>", 1)


def write_pdf(results: Results, html_path: Path, out: Path | None = None) -> Path:
    """Render ``html_path`` (a report.html as written) to ``out`` (default: report.pdf beside it)."""
    wp = _weasyprint()
    target = out or html_path.with_name(PDF_NAME)
    try:
        data = html_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {html_path} to make a PDF: {exc.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    # WeasyPrint logs every CSS property it does not implement; the report's screen rules
    # are not its business, so only its errors are kept.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    document = wp.HTML(string=_with_digest(data.decode("utf-8"), digest), base_url=str(html_path.parent))
    pdf: bytes = document.write_pdf(
        stylesheets=[wp.CSS(string=page_css(results, digest))],
        attachments=[wp.Attachment(string=data, name="report.html", description="the report this PDF was made from")],
        custom_metadata=True,
    )
    return _atomic_write(target, pdf)
