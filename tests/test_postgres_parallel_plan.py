"""The pure parts of the overlapped pg_restore: which table each file fills, what runs first, the lock order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.components.postgres_parallel import gate_levels, is_acl, targets_in

SCRIPT = """--
-- TOC entry 3361 (class 0 OID 16387)
-- Dependencies: 215
-- Data for Name: customers; Type: TABLE DATA; Schema: public; Owner: postgres
-- File: 3361.dat
--

COPY public.customers (id, name, email, created_at) FROM stdin;
\\.

--
-- TOC entry 3370 (class 0 OID 16440)
-- File: 3370.dat
--

COPY "My Schema"."odd ""name"" (x)" (id) FROM stdin;
\\.

--
-- TOC entry 3380 (class 0 OID 0)
-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -
-- File: blobs.toc
--

SELECT pg_catalog.lo_open('424242', 131072);
--
-- TOC entry 3375 (class 0 OID 0)
--

SELECT pg_catalog.setval('public.customers_id_seq', 2000, true);
"""


def test_each_data_file_is_matched_with_the_table_its_copy_fills() -> None:
    names = {"3361.dat", "3370.dat", "blobs.toc", "blob_424242.dat"}
    assert targets_in(SCRIPT, names) == {
        "3361.dat": "public.customers",
        "3370.dat": '"My Schema"."odd ""name"" (x)"',
    }


def test_a_copy_of_a_file_not_in_the_listing_is_ignored() -> None:
    assert targets_in(SCRIPT, {"3361.dat"}) == {"3361.dat": "public.customers"}


@pytest.mark.parametrize(
    "line",
    [
        "COPY public.t; DROP DATABASE app; (id) FROM stdin;",
        "COPY public.t(id) FROM stdin;",
        'COPY "unterminated.t (id) FROM stdin;',
    ],
)
def test_a_copy_line_that_is_not_a_plain_table_name_gives_no_lock_target(line: str) -> None:
    """Negative control: nothing but a quoted or plain qualified name ever reaches LOCK TABLE."""
    assert targets_in(f"-- File: 1.dat\n{line}\n", {"1.dat"}) == {}


@pytest.mark.parametrize(
    ("line", "acl"),
    [
        ("3370; 0 0 ACL public TABLE customers postgres", True),
        ("3371; 826 16500 DEFAULT ACL shop DEFAULT PRIVILEGES FOR TABLES postgres", True),
        ("3206; 2604 16390 DEFAULT public customers id postgres", False),
        ("3207; 2604 16391 DEFAULT ACL customers id postgres", False),  # a column default in schema "ACL"
        ("215; 1259 16387 TABLE public customers postgres", False),
        ("3372; 0 0 COMMENT public TABLE customers postgres", False),
    ],
)
def test_only_privileges_wait_for_the_second_run(line: str, acl: bool) -> None:
    assert is_acl(line) is acl


def test_tables_are_released_in_the_order_their_last_file_completes() -> None:
    listing = [("1.dat", 9), ("2.dat", 5), ("3.dat", 7), ("4.dat", 1), ("blobs.toc", 3)]
    targets = {"1.dat": "a", "2.dat": "root", "3.dat": "b", "4.dat": "root"}
    assert gate_levels(listing, targets) == [(3, "root"), (2, "b"), (0, "a")]


@given(st.lists(st.sampled_from(["a", "b", "c", "d", None]), max_size=12))
def test_a_table_is_never_released_before_its_last_file(fills: list[str | None]) -> None:
    listing = [(f"{i}.dat", 1) for i in range(len(fills))]
    targets = {f"{i}.dat": t for i, t in enumerate(fills) if t is not None}
    levels = gate_levels(listing, targets)
    assert [i for i, _ in levels] == sorted((i for i, _ in levels), reverse=True)
    for index, table in levels:
        assert index == max(i for i, t in enumerate(fills) if t == table)
    assert {t for _, t in levels} == set(targets.values())
