"""Configuration: the files a service needs to start (YAML, JSON, INI, env files).

Health is stricter than for volumes: every file must still parse in its format, because
a configuration file that exists but no longer parses takes a service down as surely as
a missing one.
"""

from __future__ import annotations

import configparser
import json
import random
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field

from engine.components.base import ArtifactSource, Component, Health, SeedParams
from engine.components.files import extract_tar, tree_parts, walk_files, write_tar
from engine.fingerprint import Fingerprint
from engine.repository.base import BackupSetWriter


class ConfigurationParams(SeedParams):
    files: dict[str, str] | None = Field(
        default=None,
        description="File name → content. When absent, a realistic set of app, database and feature-flag files.",
    )


def _default_files(rng: random.Random) -> dict[str, str]:
    workers = rng.randrange(2, 16)
    return {
        "app.yaml": (
            "service: checkout\n"
            f"workers: {workers}\n"
            "listen: 0.0.0.0:8080\n"
            "log_level: info\n"
            "database:\n  host: db.internal\n  port: 5432\n  pool_size: 20\n"
        ),
        "database.ini": "[primary]\nhost = db.internal\nport = 5432\nsslmode = require\n\n[replica]\nhost = db-ro.internal\n",
        "feature-flags.json": json.dumps({f"flag_{i}": rng.random() < 0.5 for i in range(12)}, indent=2, sort_keys=True)
        + "\n",
        "nginx/site.conf": "server {\n    listen 80;\n    location / { proxy_pass http://127.0.0.1:8080; }\n}\n",
    }


def parse_check(path: Path) -> str | None:
    """None if the file parses in the format its extension names, else the problem."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in {".yaml", ".yml"}:
            yaml.safe_load(text)
        elif path.suffix == ".json":
            json.loads(text)
        elif path.suffix == ".ini":
            configparser.ConfigParser().read_string(text)
    except (yaml.YAMLError, ValueError, configparser.Error) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


class ConfigurationComponent(Component):
    name: ClassVar[str] = "configuration"
    Params: ClassVar[type[SeedParams]] = ConfigurationParams
    description: ClassVar[str] = "Configuration files that must exist and parse, backed up as a streamed tar."

    params: ConfigurationParams
    path: Path

    def provision(self) -> None:
        self.path = self.runtime.directory(self.instance)

    def seed(self) -> dict[str, Any]:
        files = self.params.files or _default_files(random.Random(self.params.random_seed))
        for rel, content in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        return {"files": sorted(files)}

    def files(self) -> list[Path]:
        return [f for f in walk_files(self.path) if f.is_file()]

    def fingerprint(self) -> Fingerprint:
        return self._fp(tree_parts(self.path))

    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        with writer.artifact(self.instance, "config.tar") as sink:
            entries = write_tar(self.path, sink)
        return {"entries": entries, "method": "streamed tar"}

    def restore(self, source: ArtifactSource) -> None:
        with source.open("config.tar") as stream:
            extract_tar(stream, self.path)

    def health(self) -> Health:
        files = self.files()
        if not files:
            return Health(ok=False, detail="no configuration files")
        problems = []
        for f in files:
            try:
                issue = parse_check(f)
            except (OSError, UnicodeDecodeError) as exc:
                issue = str(exc)
            if issue:
                problems.append(f"{f.relative_to(self.path)}: {issue}")
        if problems:
            return Health(ok=False, detail="; ".join(problems))
        return Health(ok=True, detail=f"{len(files)} files present and parse")
