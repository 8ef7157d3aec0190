"""What the report says to an auditor beyond the verdict (issue 19): what a seed really loaded, and
how much is known of the report's own signature and sign-off when it is rendered."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.evidence import fingerprint, sign_directory
from engine.journal import AssertionResult, ComponentResult
from engine.signoff import sign_off
from reports import evidence_view, render_html, write_all
from reports.summary import write_summary
from tests.test_scrub import _results


def _component(**kw: object) -> ComponentResult:
    return ComponentResult.model_validate({"name": "stock", "kind": "postgres", **kw})


def test_components_table_shows_what_a_sql_file_seed_really_loaded() -> None:
    results = _results("name: s\n")
    results.components = [
        _component(
            seed={"customers": 0, "orders": 0, "database": "warehouse"},
            content={"rows": 130_500, "objects": 11},
            row_counts={"table public.orders": 130_000, "table public.customers": 500},
        )
    ]
    html = render_html(results)
    assert "130,500 rows" in html and "table public.orders 130,000; table public.customers 500" in html
    assert "<dt>customers</dt><dd>0</dd>" not in html  # the generator's count is not shown as the content
    assert "<dt>database</dt><dd>warehouse</dd>" in html


def test_older_results_without_content_still_show_the_seed() -> None:
    results = _results("name: s\n")
    results.components = [_component(seed={"customers": 20, "orders": 60})]
    html = render_html(results)
    assert "as the seed reported it" in html and "<dt>customers</dt><dd>20</dd>" in html


def test_many_tables_are_capped_with_a_count_of_the_rest() -> None:
    results = _results("name: s\n")
    rows = {f"table public.t{i:02d}": i for i in range(25)}
    results.components = [_component(content={"rows": sum(rows.values())}, row_counts=rows)]
    html = render_html(results)
    assert "table public.t24 24" in html and "table public.t04 4" not in html
    assert "and 5 more tables in results.json" in html


# --- signature and sign-off in the report ---------------------------------------------------


def _signed_dir(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    directory = tmp_path / "run"
    results = _results("name: s\n")
    results.assertions = [AssertionResult(id="fidelity[c]", name="fidelity", status="pass", summary="all parts match")]
    write_all(results, directory, formats=("json", "html"))
    sign_directory(directory, key)
    return directory, key


def test_a_signing_run_names_its_key_in_the_report() -> None:
    html = render_html(_results("name: s\n"), evidence_view.pending("ab12"))
    assert "signed by key ab12 when the run finished" in html and "ssh-keygen -Y verify" in html
    assert "Sign-off</dt>" not in html  # nothing to review before the signature exists


def test_without_a_key_the_report_only_repeats_claims(tmp_path: Path) -> None:
    directory, key = _signed_dir(tmp_path)
    sign_off(directory, key, reviewer="Jane", decision="accepted", ticket="SEC-9")
    html = render_html(_results("name: s\n"), evidence_view.from_directory(directory))
    assert "NOT verified when this page was rendered" in html
    assert "<strong>accepted</strong> by Jane" in html and "(not verified)" in html


def test_with_the_key_the_report_shows_verified_signature_and_sign_off(tmp_path: Path) -> None:
    directory, key = _signed_dir(tmp_path)
    sign_off(directory, key, reviewer="Jane", decision="action-required", note="too slow", ticket="SEC-9")
    view = evidence_view.from_directory(directory, [key.public_key()])
    html = render_html(_results("name: s\n"), view)
    assert view.state == "verified" and f"by key {fingerprint(key.public_key())}" in html
    assert "Ed25519 and OpenSSH signatures" in html
    assert "<strong>action required</strong> by Jane" in html and "too slow" in html and "SEC-9" in html


def test_tampering_shows_as_not_intact_with_each_problem(tmp_path: Path) -> None:
    directory, key = _signed_dir(tmp_path)
    (directory / "report.html").write_text("edited")
    view = evidence_view.from_directory(directory, [key.public_key()])
    html = render_html(_results("name: s\n"), view)
    assert view.state == "not-intact" and "NOT intact when this page was rendered" in html
    assert "changed: report.html" in html


def test_an_unsigned_directory_says_so(tmp_path: Path) -> None:
    write_all(_results("name: s\n"), tmp_path, formats=("json",))
    assert evidence_view.from_directory(tmp_path).state == "unsigned"


def test_summary_page_shows_signature_and_sign_off(tmp_path: Path) -> None:
    directory, key = _signed_dir(tmp_path)
    sign_off(directory, key, reviewer="Jane", decision="rejected")
    page = tmp_path / "index.html"
    write_summary([tmp_path], page, keys=[key.public_key()])
    text = page.read_text()
    assert '<span class="badge pass">verified</span>' in text and "rejected</span> Jane" in text
    write_summary([tmp_path], page)
    assert "claimed</span>" in page.read_text()
