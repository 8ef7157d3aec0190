"""A sign-off whose signature does not verify is never shown as a green "accepted" (found by review).

The summary page and the report coloured a review's badge by its decision alone: a review
edited after signing (or signed by an unknown key) showed a green "accepted" beside the
words saying its signature did not verify. Green is for an acceptance that verified.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drills.cli import main
from engine.evidence import init_keys, load_public_key
from reports.evidence_view import from_directory
from reports.writers import load_results, render_html
from tests.test_pytest_plugin import PASSING


@pytest.fixture
def reviewed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A real drill, signed, accepted by a reviewer with her own key."""
    drill_key, drill_pub = tmp_path / "drill.key", tmp_path / "drill.pub"
    review_key, review_pub = tmp_path / "review.key", tmp_path / "review.pub"
    init_keys(drill_key, drill_pub)
    init_keys(review_key, review_pub)
    scenario = tmp_path / "roundtrip.yaml"
    scenario.write_text(PASSING, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(scenario), "--report-dir", str(out), "--quiet", "--sign-key", str(drill_key)]) == 0
    argv = ["evidence", "sign-off", str(out), "--reviewer", "alice", "--decision", "accepted"]
    assert main([*argv, "--sign-key", str(review_key), "--public-key", str(drill_pub)]) == 0
    return out, drill_pub, review_pub


def _signoff_badges(html: str) -> list[str]:
    section = html.split('<section id="signoff"')[1].split("</section>")[0]
    return re.findall(r'class="badge badge-(\w+)">accepted<', section)


def _summary_badge(directory: Path, out: Path, *keys: Path) -> str:
    argv = ["summary", str(directory), "--out", str(out)]
    for key in keys:
        argv += ["--public-key", str(key)]
    assert main(argv) == 0
    (badge,) = re.findall(r'<span class="badge (\w+)">accepted</span>', out.read_text(encoding="utf-8"))
    return badge


def _report_badges(directory: Path, *keys: Path) -> list[str]:
    view = from_directory(directory, [load_public_key(k) for k in keys])
    return _signoff_badges(render_html(load_results(directory / "results.json"), view))


def test_an_edited_acceptance_is_red_not_green(reviewed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out, drill_pub, review_pub = reviewed
    (review,) = (out / "reviews").glob("*.json")
    review.write_text(review.read_text().replace('"alice"', '"mallory"'))
    assert _summary_badge(out, tmp_path / "index.html", drill_pub, review_pub) == "fail"
    assert _report_badges(out, drill_pub, review_pub) == ["fail"]


def test_an_acceptance_nobody_verified_is_grey(reviewed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out, _, _ = reviewed
    assert _summary_badge(out, tmp_path / "index.html") == "neutral"


def test_the_quiet_control_a_verified_acceptance_is_green(reviewed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out, drill_pub, review_pub = reviewed
    assert _summary_badge(out, tmp_path / "index.html", drill_pub, review_pub) == "pass"
    assert _report_badges(out, drill_pub, review_pub) == ["pass"]
