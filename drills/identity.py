"""Who ran a drill, read from the environment: OS account, host, CI job, git commit.

Why not the scenario's ``report.operator``: it is text anyone can type. An auditor can
check an OS account, a CI job URL and a commit against records drproof does not control,
so those are what the evidence names; the YAML name is kept only as a display name.

Git is asked, never trusted to run code of the repository's choosing: ``git status``
would run a configured ``core.fsmonitor`` hook, so it is switched off on the command
line; git's own refusal of a repository owned by someone else is respected (its facts are
then "not recorded", with why). Nothing here fails a drill: what cannot be read is None.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from engine.childenv import tool_environment
from engine.journal import Identity
from engine.redaction import redact

__all__ = ["ci_facts", "collect", "environment_facts", "git_facts"]

GIT_TIMEOUT = 10.0
# Options that stop a repository's configuration from running anything during a status.
_SAFE_GIT = ("-c", "core.fsmonitor=false", "-c", "core.untrackedCache=false", "--no-optional-locks")


def _github(env: Mapping[str, str]) -> dict[str, str | None]:
    server = env.get("GITHUB_SERVER_URL", "https://github.com")
    repo, run = env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    url = f"{server}/{repo}/actions/runs/{run}" if repo and run else None
    if url and env.get("GITHUB_RUN_ATTEMPT"):
        url += f"/attempts/{env['GITHUB_RUN_ATTEMPT']}"
    return {
        "ci_provider": "github-actions",
        "ci_job_url": url,
        "ci_run_id": run,
        "ci_job": " / ".join(v for v in (env.get("GITHUB_WORKFLOW"), env.get("GITHUB_JOB")) if v) or None,
        "ci_actor": env.get("GITHUB_ACTOR"),
    }


def _gitlab(env: Mapping[str, str]) -> dict[str, str | None]:
    return {
        "ci_provider": "gitlab-ci",
        "ci_job_url": env.get("CI_JOB_URL"),
        "ci_run_id": env.get("CI_JOB_ID") or env.get("CI_PIPELINE_ID"),
        "ci_job": env.get("CI_JOB_NAME"),
        "ci_actor": env.get("GITLAB_USER_LOGIN"),
    }


def _jenkins(env: Mapping[str, str]) -> dict[str, str | None]:
    return {
        "ci_provider": "jenkins",
        "ci_job_url": env.get("BUILD_URL"),
        "ci_run_id": env.get("BUILD_TAG") or env.get("BUILD_NUMBER"),
        "ci_job": env.get("JOB_NAME"),
        "ci_actor": env.get("BUILD_USER_ID"),  # set by the build-user-vars plugin, when installed
    }


def _buildkite(env: Mapping[str, str]) -> dict[str, str | None]:
    url = env.get("BUILDKITE_BUILD_URL")
    job = env.get("BUILDKITE_JOB_ID")
    return {
        "ci_provider": "buildkite",
        "ci_job_url": f"{url}#{job}" if url and job else url,
        "ci_run_id": env.get("BUILDKITE_BUILD_ID") or env.get("BUILDKITE_BUILD_NUMBER"),
        "ci_job": env.get("BUILDKITE_LABEL") or env.get("BUILDKITE_PIPELINE_SLUG"),
        "ci_actor": env.get("BUILDKITE_BUILD_CREATOR"),
    }


def _circleci(env: Mapping[str, str]) -> dict[str, str | None]:
    return {
        "ci_provider": "circleci",
        "ci_job_url": env.get("CIRCLE_BUILD_URL"),
        "ci_run_id": env.get("CIRCLE_WORKFLOW_ID") or env.get("CIRCLE_BUILD_NUM"),
        "ci_job": env.get("CIRCLE_JOB"),
        "ci_actor": env.get("CIRCLE_USERNAME"),
    }


# Detected in this order; each provider sets its marker variable in every job.
_PROVIDERS: tuple[tuple[str, Callable[[Mapping[str, str]], dict[str, str | None]]], ...] = (
    ("GITHUB_ACTIONS", _github),
    ("GITLAB_CI", _gitlab),
    ("BUILDKITE", _buildkite),
    ("CIRCLECI", _circleci),
    ("JENKINS_URL", _jenkins),
)


def ci_facts(env: Mapping[str, str]) -> dict[str, str | None]:
    """The CI system's account of this job, from the variables each provider sets; {} outside CI.

    Values pass through :func:`redact`: a Jenkins ``BUILD_URL`` can carry ``user:token@``.
    """
    for marker, read in _PROVIDERS:
        if env.get(marker):
            return {k: redact(v) if v else None for k, v in read(env).items()}
    return {}


def _git(directory: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *_SAFE_GIT, "-C", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
        check=False,
        env=tool_environment({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}, prefixes=()),
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or [f"git exited {proc.returncode}"])[0]
        raise RuntimeError(redact(first.removeprefix("fatal: ")))
    return proc.stdout


def git_facts(scenario: Path) -> dict[str, object]:
    """Commit, dirty state and the scenario file's own state, or why they are not recorded."""
    directory = scenario.resolve().parent
    try:
        commit = _git(directory, "rev-parse", "--verify", "HEAD").strip()
        dirty = bool(_git(directory, "status", "--porcelain", "--untracked-files=no").strip())
        own = _git(directory, "status", "--porcelain", "--untracked-files=all", "--", scenario.name)
    except FileNotFoundError:
        return {"git_problem": "git is not installed"}
    except subprocess.TimeoutExpired:
        return {"git_problem": f"git did not answer within {GIT_TIMEOUT:g} s"}
    except (RuntimeError, OSError) as exc:
        return {"git_problem": str(exc) or "not a git repository"}
    state = "untracked" if own.startswith("??") else "modified" if own.strip() else "committed"
    return {"git_commit": commit, "git_dirty": dirty, "scenario_git_state": state}


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else None


def environment_facts(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """OS account, host and CI job of whoever runs a command now (a sign-off, say); no git."""
    environ = os.environ if env is None else env
    facts = {"user": _user(), "host": socket.gethostname() or None, **ci_facts(environ)}
    return {k: v for k, v in facts.items() if v}


def collect(scenario: Path, display_name: str | None, env: Mapping[str, str] | None = None) -> Identity:
    """Everything the environment says about who ran the drill of ``scenario``."""
    environ = os.environ if env is None else env
    return Identity.model_validate(
        {
            "user": _user(),
            "host": socket.gethostname() or None,
            **ci_facts(environ),
            **git_facts(scenario),
            "display_name": display_name,
        }
    )
