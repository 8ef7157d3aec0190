"""Scheme ``postgres/5``: security labels are compared (found by review).

Labels hold sepgsql's contexts and PostgreSQL Anonymizer's masking rules; pg_dump and
pg_dumpall carry them. A restore that loses a masking rule exposes what it masked, and
scheme 4 compared it equal. Negative controls: each label changed or removed is named;
quiet control: a healthy backup and restore into another server keeps every label and
compares equal. On PostgreSQL 18 (embedded) and 15 (Debian), with a label provider built
for the test (``label_provider``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import backup as engine_backup
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.fingerprint import compare
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime
from tests.integration import label_provider
from tests.integration.helpers import pg_sql
from tests.integration.servers import require_pg15

pytestmark = [pytest.mark.integration]

P = label_provider.PROVIDER
SETUP = """
CREATE SCHEMA app;
CREATE TABLE app.customers(id int PRIMARY KEY, email text, iban text);
INSERT INTO app.customers VALUES (1, 'a@example.org', 'DE89'), (2, 'b@example.org', 'FR76');
CREATE VIEW app.v AS SELECT id FROM app.customers;
CREATE FUNCTION app.f() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE ROLE drproof_label_role;
"""
LABELS = f"""
SECURITY LABEL FOR {P} ON SCHEMA app IS 'schema-label';
SECURITY LABEL FOR {P} ON TABLE app.customers IS 'table-label';
SECURITY LABEL FOR {P} ON COLUMN app.customers.email IS 'MASKED WITH FUNCTION anon.fake_email()';
SECURITY LABEL FOR {P} ON VIEW app.v IS 'view-label';
SECURITY LABEL FOR {P} ON FUNCTION app.f() IS 'function-label';
SECURITY LABEL FOR {P} ON ROLE drproof_label_role IS 'MASKED';
SECURITY LABEL FOR {P} ON COLUMN app.customers.iban IS NULL;
SECURITY LABEL FOR {P} ON DATABASE db IS NULL;
"""
# damage a faulty restore could do -> the part that must name it
DAMAGE = {
    f"SECURITY LABEL FOR {P} ON COLUMN app.customers.email IS NULL": f"security label on column app.customers.email ({P})",
    f"SECURITY LABEL FOR {P} ON COLUMN app.customers.email IS 'other'": f"security label on column app.customers.email ({P})",
    f"SECURITY LABEL FOR {P} ON COLUMN app.customers.iban IS 'new'": f"security label on column app.customers.iban ({P})",
    f"SECURITY LABEL FOR {P} ON TABLE app.customers IS NULL": f"security label on table app.customers ({P})",
    f"SECURITY LABEL FOR {P} ON SCHEMA app IS NULL": f"security label on schema app ({P})",
    f"SECURITY LABEL FOR {P} ON VIEW app.v IS NULL": f"security label on view app.v ({P})",
    f"SECURITY LABEL FOR {P} ON FUNCTION app.f() IS 'x'": f"security label on function app.f() ({P})",
    f"SECURITY LABEL FOR {P} ON ROLE drproof_label_role IS NULL": "role drproof_label_role",
    f"SECURITY LABEL FOR {P} ON DATABASE db IS 'db-label'": f"security label on database ({P})",
}


def _images(server: str) -> dict[str, str] | None:
    return {"postgres": str(require_pg15())} if server == "15" else None


def _labelled(runtime: LocalRuntime, library: Path) -> PostgresComponent:
    comp = PostgresComponent("db", PostgresParams(database="db", generate=False), runtime)
    comp.provision()
    label_provider.preload(comp, library)
    return comp


@pytest.fixture(scope="module", params=["18", "15"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PostgresComponent, PostgresComponent, Path]]:
    """A labelled source and an empty target, both with the provider loaded, and a repository."""
    server: str = request.param
    images = _images(server)
    library = label_provider.build(int(server))
    root = tmp_path_factory.mktemp(f"labels{server}")
    with LocalRuntime(root / "src", images) as src, LocalRuntime(root / "dst", images) as dst:
        source = _labelled(src, library)
        source.seed()  # the empty database
        pg_sql(source, SETUP + LABELS)
        yield source, _labelled(dst, library), root / "repo"


def test_a_healthy_round_trip_keeps_every_label_and_compares_equal(
    pair: tuple[PostgresComponent, PostgresComponent, Path],
) -> None:
    source, target, repo_dir = pair
    repo = LocalRepository(repo_dir)
    manifest = engine_backup.backup(repo, [source])
    expected = manifest.component("db").fingerprint
    assert expected is not None and expected.scheme == "postgres/7"  # scheme 5's labels, and more
    labels = {n for n in expected.parts if n.startswith("security label ")}
    assert len(labels) == 5, labels  # schema, table, column, view, function (the role's is in its role part)
    engine_backup.restore(repo, manifest, target)
    diffs = compare(expected, target.fingerprint())
    assert diffs == [], [d.describe() for d in diffs]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_every_label_changed_or_lost_is_named(
    pair: tuple[PostgresComponent, PostgresComponent, Path], damage: str
) -> None:
    source = pair[0]
    before = source.fingerprint()
    pg_sql(source, damage)
    try:
        assert DAMAGE[damage] in {d.part for d in compare(before, source.fingerprint())}
    finally:
        pg_sql(source, LABELS)  # every label as set up, for the next case
    assert compare(before, source.fingerprint()) == []  # the quiet control: as before, no difference


def test_a_scheme_4_backup_cannot_see_labels_and_says_so(
    pair: tuple[PostgresComponent, PostgresComponent, Path],
) -> None:
    """An earlier drproof's backup is compared in its own scheme; the comparison's note names what it cannot see."""
    source = pair[0]
    before = source.legacy_fingerprint("postgres/4")
    assert before is not None and not any(n.startswith("security label ") for n in before.parts)
    assert "security labels" in (source.blind_spot("postgres/4") or "")
    assert "security labels" not in (source.blind_spot("postgres/5") or "")  # scheme 5 records them
