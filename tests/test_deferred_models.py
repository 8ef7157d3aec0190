"""Models are built on first use (``defer_build``), and first use may be on many threads at once.

Restores run side by side on threads, and each validates fingerprints and parameters; the
first of them builds the model. pydantic before 2.14 rebuilt a deferred model without a
lock, and a concurrent first use could validate with the parent class's validator (an
extra key refused, or a subclass's field refused as unknown). Checked in a fresh
interpreter, where nothing is built yet: this test process has built everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_PROBE = """
import json, threading
from pydantic import ValidationError
from engine.components.postgres_replicated import PostgresReplicatedParams
from engine.fingerprint import Fingerprint

THREADS = 16
start = threading.Barrier(THREADS)
outcomes = []

def first_use(i):
    start.wait()
    if i % 2:
        try:
            Fingerprint.model_validate({"component": "a", "kind": "k", "digest": "d", "parts": {}, "extra": 1})
            outcomes.append("fingerprint: extra key accepted")
        except ValidationError as exc:
            outcomes.append("fingerprint: " + exc.errors()[0]["type"])
    else:
        params = PostgresReplicatedParams.model_validate({"replicas": 2, "synchronous": True})
        outcomes.append(f"replicated: {params.replicas} {params.synchronous}")

threads = [threading.Thread(target=first_use, args=(i,)) for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(sorted(set(outcomes))))
"""


def test_first_use_on_many_threads_builds_the_right_validator() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert json.loads(out.strip().splitlines()[-1]) == ["fingerprint: extra_forbidden", "replicated: 2 True"]


def test_models_are_deferred_until_used() -> None:
    """What the start-up of `validate` relies on: importing the registries builds no model."""
    probe = (
        "import json, drills.scenario\n"
        "from drills.scenario import Scenario\n"
        "from engine.fingerprint import Fingerprint\n"
        "print(json.dumps([Scenario.__pydantic_complete__, Fingerprint.__pydantic_complete__]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [False, False]
