"""Who ran a drill, from the environment rather than the scenario (issue 19).

The CI facts are read from each provider's own variables; the git facts come from a real
repository made here, clean, dirty, with the scenario modified or untracked, and from a
directory that is no repository. A repository configured to run a program on ``git
status`` (core.fsmonitor) must not get to run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from drills.identity import ci_facts, collect, git_facts
from reports import render_html, render_junit
from reports.view import identity_view

pytestmark = pytest.mark.skipif(shutil.which("git") is None and os.environ.get("CI") != "true", reason="no git")

CI_CASES = {
    "github-actions": (
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_SERVER_URL": "https://github.example",
            "GITHUB_REPOSITORY": "shop/dr",
            "GITHUB_RUN_ID": "42",
            "GITHUB_RUN_ATTEMPT": "2",
            "GITHUB_WORKFLOW": "drills",
            "GITHUB_JOB": "quickstart",
            "GITHUB_ACTOR": "alice",
        },
        ("https://github.example/shop/dr/actions/runs/42/attempts/2", "42", "drills / quickstart", "alice"),
    ),
    "gitlab-ci": (
        {
            "GITLAB_CI": "true",
            "CI_JOB_URL": "https://gl/j/7",
            "CI_JOB_ID": "7",
            "CI_JOB_NAME": "dr",
            "GITLAB_USER_LOGIN": "bob",
        },
        ("https://gl/j/7", "7", "dr", "bob"),
    ),
    "jenkins": (
        {
            "JENKINS_URL": "https://j/",
            "BUILD_URL": "https://j/job/dr/9/",
            "BUILD_TAG": "jenkins-dr-9",
            "JOB_NAME": "dr",
        },
        ("https://j/job/dr/9/", "jenkins-dr-9", "dr", None),
    ),
    "buildkite": (
        {
            "BUILDKITE": "true",
            "BUILDKITE_BUILD_URL": "https://bk/b/3",
            "BUILDKITE_JOB_ID": "j1",
            "BUILDKITE_BUILD_ID": "b-3",
            "BUILDKITE_LABEL": "drill",
            "BUILDKITE_BUILD_CREATOR": "carol",
        },
        ("https://bk/b/3#j1", "b-3", "drill", "carol"),
    ),
    "circleci": (
        {
            "CIRCLECI": "true",
            "CIRCLE_BUILD_URL": "https://c/5",
            "CIRCLE_WORKFLOW_ID": "wf",
            "CIRCLE_JOB": "dr",
            "CIRCLE_USERNAME": "dan",
        },
        ("https://c/5", "wf", "dr", "dan"),
    ),
}


@pytest.mark.parametrize("provider", sorted(CI_CASES))
def test_each_ci_provider_is_read_from_its_own_variables(provider: str) -> None:
    env, (url, run, job, actor) = CI_CASES[provider]
    facts = ci_facts(env)
    assert facts == {"ci_provider": provider, "ci_job_url": url, "ci_run_id": run, "ci_job": job, "ci_actor": actor}


def test_outside_ci_nothing_is_claimed() -> None:
    assert ci_facts({"HOME": "/root", "CI": "true"}) == {}


def test_credentials_in_a_job_url_are_masked() -> None:
    facts = ci_facts({"JENKINS_URL": "x", "BUILD_URL": "https://robot:s3cret-token@jenkins.internal/job/9/"})
    assert "s3cret-token" not in str(facts) and facts["ci_job_url"] == "https://robot:***@jenkins.internal/job/9/"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    (repo / "drill.yaml").write_text("name: x\n")
    (repo / "other.txt").write_text("a\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    return repo


def test_clean_repository(repo: Path) -> None:
    facts = git_facts(repo / "drill.yaml")
    assert len(str(facts["git_commit"])) == 40
    assert facts["git_dirty"] is False and facts["scenario_git_state"] == "committed"


def test_dirty_repository_and_modified_or_untracked_scenario(repo: Path) -> None:
    (repo / "other.txt").write_text("b\n")
    assert git_facts(repo / "drill.yaml")["git_dirty"] is True
    assert git_facts(repo / "drill.yaml")["scenario_git_state"] == "committed"
    (repo / "drill.yaml").write_text("name: y\n")
    assert git_facts(repo / "drill.yaml")["scenario_git_state"] == "modified"
    (repo / "new.yaml").write_text("name: z\n")
    assert git_facts(repo / "new.yaml")["scenario_git_state"] == "untracked"


def test_no_repository_is_not_recorded_with_why(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text("name: x\n")
    facts = git_facts(tmp_path / "d.yaml")
    assert "git_commit" not in facts and "not a git repository" in str(facts["git_problem"])


def test_no_git_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "d.yaml").write_text("name: x\n")
    assert git_facts(tmp_path / "d.yaml") == {"git_problem": "git is not installed"}


def test_a_repository_cannot_make_git_run_its_program(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "fsmonitor-ran"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    _git(repo, "config", "core.fsmonitor", str(hook))
    # Negative control: plain git status does run it, so the hook is a real threat here.
    subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, check=False)
    assert marker.exists()
    marker.unlink()
    assert git_facts(repo / "drill.yaml")["scenario_git_state"] == "committed"
    assert not marker.exists()


def test_collect_keeps_the_yaml_operator_as_a_display_name_only(repo: Path) -> None:
    ident = collect(repo / "drill.yaml", "Jane (on call)", env={"GITLAB_CI": "true", "CI_JOB_ID": "7"})
    assert ident.display_name == "Jane (on call)" and ident.ci_provider == "gitlab-ci"
    assert ident.user and ident.host and ident.git_commit


def test_report_and_junit_show_identity(repo: Path) -> None:
    from tests.test_scrub import _results

    results = _results("name: s\n")
    results.identity = collect(
        repo / "drill.yaml", "x", env={"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "a/b", "GITHUB_RUN_ID": "9"}
    )
    html = render_html(results)
    assert "Run by</dt><dd>" + str(results.identity.user) in html
    assert 'href="https://github.com/a/b/actions/runs/9"' in html
    assert results.identity.git_commit is not None and results.identity.git_commit in html
    assert "display name from the scenario, not an identity" in html
    junit = render_junit(results).decode()
    assert '<property name="ci_run_id" value="9" />' in junit
    assert '<property name="git_dirty" value="false" />' in junit


def test_older_results_say_not_recorded() -> None:
    from tests.test_scrub import _results

    view = identity_view(_results("name: s\n"))
    assert view.run_by.startswith("not recorded") and view.ci_url is None


def test_a_non_http_job_url_is_never_a_link(repo: Path) -> None:
    from tests.test_scrub import _results

    results = _results("name: s\n")
    results.identity = collect(repo / "drill.yaml", None, env={"GITLAB_CI": "1", "CI_JOB_URL": "javascript:alert(1)"})
    assert 'href="javascript' not in render_html(results)
