"""Loading a scenario file into a validated, path-resolved model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from drills import yamlsource
from drills.scenario import Scenario
from drills.validation import validate
from engine.errors import ValidationFailed


@dataclass(frozen=True)
class LoadedScenario:
    scenario: Scenario
    document: yamlsource.Document
    path: Path
    sha256: str

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_scenario(path: Path) -> LoadedScenario:
    doc = yamlsource.load(path)
    scenario, problems = validate(doc)
    if problems or scenario is None:
        raise ValidationFailed(problems)
    digest = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
    return LoadedScenario(scenario=scenario, document=doc, path=path.resolve(), sha256=digest)
