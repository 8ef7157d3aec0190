"""When a restore may leave its proof before the swap to the fidelity check, and when never.

The rule (drills/steps/restore.py ``_proof_deferrable``, ``Fidelity.proves_restore``)
decides whether a restore test's sandbox database is fingerprinted once or twice; a
wrong "yes" would leave a restore unproven. Each condition is checked on its own here:
one quiet control where every condition holds, and one negative control per condition.
The engine's own refusal to defer into a database that holds data is in
tests/integration/test_deferred_proof.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from drills.assertions.base import DrillState
from drills.assertions.fidelity import Fidelity, FidelityParams
from drills.source import SOURCE_BACKUP
from drills.steps.restore import _proof_deferrable

SET = SimpleNamespace(id="20261206T000000Z-aaaaaa")


def _run(fidelity: dict[str, Any] | None = None, steps: int = 1, **state: Any) -> Any:
    drill_state = DrillState(repository=None)  # type: ignore[arg-type]
    drill_state.source = object()  # type: ignore[assignment]
    drill_state.backups[SOURCE_BACKUP] = SET  # type: ignore[assignment]
    for key, value in state.items():
        setattr(drill_state, key, value)
    params = FidelityParams(**(fidelity or {}))

    def proven(component: str, backup: str) -> bool:
        return fidelity is not None and Fidelity().proves_restore(params, component, backup)

    return SimpleNamespace(
        state=drill_state, scenario=SimpleNamespace(steps=[None] * steps), restore_proven_afterwards=proven
    )


def _spec(expect: str = "success") -> Any:
    return SimpleNamespace(expect=expect)


def test_a_restore_test_checked_by_fidelity_may_leave_its_proof() -> None:
    assert _proof_deferrable(_run({}), 0, _spec(), "shop-db", SET) is True


@pytest.mark.parametrize(
    ("run", "index", "spec", "manifest"),
    [
        pytest.param(_run(None), 0, _spec(), SET, id="no fidelity check"),
        pytest.param(_run({"expect": "fail"}), 0, _spec(), SET, id="fidelity is a negative control"),
        pytest.param(_run({"components": ["other"]}), 0, _spec(), SET, id="fidelity checks other components"),
        pytest.param(_run({"against": "before_disaster"}), 0, _spec(), SET, id="fidelity against before_disaster"),
        pytest.param(_run({"backup": "nightly"}), 0, _spec(), SET, id="fidelity against another backup"),
        pytest.param(_run({}, steps=2), 0, _spec(), SET, id="steps follow the restore"),
        pytest.param(_run({}, workload_ran=True), 0, _spec(), SET, id="a workload writes"),
        pytest.param(_run({}), 0, _spec("refused"), SET, id="the restore is expected to be refused"),
        pytest.param(_run({}), 0, _spec(), SimpleNamespace(id="another-set"), id="not the source's set"),
        pytest.param(_run({}, source=None), 0, _spec(), SET, id="not a restore test"),
    ],
)
def test_otherwise_the_restore_proves_before_the_swap(run: Any, index: int, spec: Any, manifest: Any) -> None:
    assert _proof_deferrable(run, index, spec, "shop-db", manifest) is False
