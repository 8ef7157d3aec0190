"""The pure parts of the side-database restore: renaming a dump's database-level SQL, and roles first."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.components.postgres import dump_major, keep_own_password, server_major
from engine.components.postgres_restore import creation_only, database_sql, dumped_name, quote_ident
from engine.errors import ComponentError

SCRIPT = """--
-- PostgreSQL database dump
--

\\restrict K3y

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: {plain}; Type: DATABASE; Schema: -; Owner: bob
--

CREATE DATABASE {q} WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C';


ALTER DATABASE {q} OWNER TO bob;

\\unrestrict K3y
\\encoding SQL_ASCII
\\connect -reuse-previous=on "dbname='{plain}'"
\\restrict K3y

--
-- Name: DATABASE {q}; Type: COMMENT; Schema: -; Owner: bob
--

COMMENT ON DATABASE {q} IS 'the DATABASE {q} of the shop';

--
-- Name: {plain}; Type: DATABASE PROPERTIES; Schema: -; Owner: bob
--

ALTER DATABASE {q} SET work_mem TO '8MB';
ALTER ROLE bob IN DATABASE {q} SET search_path TO 'shop';

--
-- Name: orders; Type: TABLE; Schema: public; Owner: bob
--

CREATE TABLE public.orders (id integer);

--
-- Name: DATABASE {q}; Type: ACL; Schema: -; Owner: bob
--

REVOKE CONNECT,TEMPORARY ON DATABASE {q} FROM PUBLIC;
GRANT CONNECT ON DATABASE {q} TO app_readonly;

\\unrestrict K3y
"""


def _script(name: str) -> str:
    quoted = name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else quote_ident(name)
    return SCRIPT.replace("{plain}", name).replace("{q}", quoted)


@given(name=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30))
def test_every_database_statement_is_renamed_and_nothing_else(name: str) -> None:
    assert dumped_name(_script(name)) == name
    sql = database_sql(_script(name), "drproof_restore_abc")
    side = '"drproof_restore_abc"'
    assert sql.create.strip().startswith(f"CREATE DATABASE {side} WITH TEMPLATE = template0")
    props = sql.properties
    for statement in (
        f"ALTER DATABASE {side} OWNER TO bob;",
        f"ALTER DATABASE {side} SET work_mem TO '8MB';",
        f"ALTER ROLE bob IN DATABASE {side} SET search_path TO 'shop';",
        f"REVOKE CONNECT,TEMPORARY ON DATABASE {side} FROM PUBLIC;",
        f"GRANT CONNECT ON DATABASE {side} TO app_readonly;",
    ):
        assert statement in props, statement
    # The comment is renamed on its object, not in its text.
    assert f"COMMENT ON DATABASE {side} IS 'the DATABASE " in props
    assert "CREATE TABLE" not in props, "entries inside the database are pg_restore's to load"
    assert "\\connect" not in props and "\\encoding" not in props
    assert props.startswith("\\restrict K3y") and props.rstrip().endswith("\\unrestrict K3y")


def test_a_script_without_create_database_is_refused() -> None:
    with pytest.raises(ComponentError, match="no CREATE DATABASE"):
        database_sql("SET x = 1;\n", "side")


def test_only_role_and_tablespace_creation_runs_before_the_side_database() -> None:
    odd = b'"Odd ""Name"""'
    globals_sql = b"\n".join(
        [
            b"SET default_transaction_read_only = off;",
            b"CREATE ROLE app_readonly;",
            b"ALTER ROLE app_readonly WITH NOSUPERUSER NOLOGIN;",
            b"CREATE ROLE " + odd + b";",
            b"ALTER ROLE " + odd + b" WITH LOGIN PASSWORD 'SCRAM-SHA-256$x';",
            b"GRANT app_readonly TO " + odd + b" GRANTED BY postgres;",
            b"CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';",
            b"",
        ]
    )
    first = creation_only(globals_sql)
    assert b"CREATE ROLE app_readonly;" in first and b"CREATE ROLE " + odd + b";" in first
    assert b"CREATE TABLESPACE fast" in first
    assert b"ALTER ROLE" not in first and b"GRANT" not in first and b"PASSWORD" not in first


def test_the_connecting_role_keeps_its_password() -> None:
    sql = b"ALTER ROLE postgres WITH SUPERUSER LOGIN PASSWORD 'old';\nALTER ROLE bob WITH LOGIN PASSWORD 'b';\n"
    out = keep_own_password(sql, "postgres")
    assert b"'old'" not in out and b"PASSWORD 'b'" in out


@pytest.mark.parametrize(
    ("text", "major"),
    [("pg_dump (PostgreSQL) 18.6", 18), ("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)", 15), ("", None)],
)
def test_dump_major(text: str, major: int | None) -> None:
    assert dump_major(text) == major


@pytest.mark.parametrize(
    ("text", "major"),
    [("PostgreSQL 15.20", 15), ("postgres (PostgreSQL) 18.6", 18), ("PostgreSQL 9.6.24", 9), ("unknown", None)],
)
def test_server_major(text: str, major: int | None) -> None:
    assert server_major(text) == major


def test_sequence_values_are_read_from_setval_lines_with_any_name() -> None:
    from engine.components.postgres_sequences import values_from_script

    script = (
        "SELECT pg_catalog.setval('public.orders_id_seq', 1500, true);\n"
        "SELECT pg_catalog.setval('public.lonely', 1, false);\n"
        'SELECT pg_catalog.setval(\'"My Schema"."it\'\'s.""odd"""\', 7, true);\n'
    )
    values = values_from_script(script)
    assert values == {
        ("public", "orders_id_seq"): "1500",
        ("public", "lonely"): "1 not called",
        ("My Schema", 'it\'s."odd"'): "7",
    }


def test_the_tablespaces_the_globals_create_are_found_where_they_create_them() -> None:
    """What the room check looks at for a tablespace the server lacks (pg_dumpall's own quoting)."""
    from engine.components.postgres_restore import tablespace_locations

    globals_sql = (
        b"CREATE ROLE bob;\n"
        b"CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';\n"
        b"CREATE TABLESPACE \"Odd \"\"Space\" OWNER \"LOCATION 'x'\" LOCATION '/srv/it''s here';\n"
        b"ALTER TABLESPACE fast SET (random_page_cost='1.1');\n"
    )
    assert tablespace_locations(globals_sql) == {"fast": "/srv/fast", 'Odd "Space': "/srv/it's here"}
    assert tablespace_locations(b"") == {}
