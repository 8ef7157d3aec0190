"""Unit tests of the foreign backup formats' own reading: no server, no tool run.

What each format reads from a backup before anything starts (an RDB's header fields,
a tar's member names and times, a base backup's WAL range) decides which sandbox is
built and what is refused, so each reader is held to crafted input here; the real
tools' output is proven by the integration tests.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drills.loader import load_scenario
from engine.components.untar import HostileArchive
from engine.errors import ComponentError, ValidationFailed
from engine.foreign.pg_basebackup import _stop_segment
from engine.foreign.pgbackrest import _segments
from engine.foreign.rdb import RedisRdb, aux_fields
from engine.foreign.tar_archive import TarArchive, TarParams
from engine.foreign.trees import stripped

# -- tar member names ---------------------------------------------------------------------------


def test_member_names_are_stripped_only_after_being_judged() -> None:
    assert stripped("./", 0) is None and stripped(".", 0) is None  # the root: the target itself
    assert stripped("./a/b.txt", 0) == "a/b.txt"
    assert stripped("top/a/b.txt", 1) == "a/b.txt"
    assert stripped("top", 1) is None  # above what strip_components keeps
    for hostile in ("../etc/passwd", "/etc/passwd", "top/../../x", "a//b"):
        with pytest.raises(HostileArchive):
            stripped(hostile, 1)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", ".", "..", "", "c.d", "é"]), min_size=1, max_size=6).map("/".join),
    st.integers(min_value=0, max_value=3),
)
def test_no_stripped_name_leaves_the_target(name: str, strip: int) -> None:
    try:
        result = stripped(name, strip)
    except HostileArchive:
        return
    if result is not None:
        parts = result.split("/")
        assert not result.startswith("/") and ".." not in parts and "" not in parts


# -- tar archives -------------------------------------------------------------------------------


def _tar(path: Path, members: dict[str, int]) -> Path:
    """A tar whose members have the given modification times."""
    with tarfile.open(path, "w") as tar:
        for name, mtime in members.items():
            info = tarfile.TarInfo(name)
            info.mtime, info.size = mtime, 2
            tar.addfile(info, io.BytesIO(b"hi"))
    return path


def test_a_tar_is_as_old_as_the_earlier_of_its_newest_member_and_its_file(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", {"old.txt": 1_000_000, "new.txt": 1_700_000_000})
    os.utime(archive, (1_800_000_000, 1_800_000_000))
    facts = TarArchive(TarParams(path=str(archive))).inspect(archive)
    assert facts.taken_at == datetime.fromtimestamp(1_700_000_000, UTC) and "newest" in facts.taken_at_from
    assert facts.details["files"] == 2 and facts.details["compression"] == "none"

    os.utime(archive, (1_600_000_000, 1_600_000_000))  # a member claims a time after the archive was written
    facts = TarArchive(TarParams(path=str(archive))).inspect(archive)
    assert facts.taken_at == datetime.fromtimestamp(1_600_000_000, UTC) and "a member is newer" in facts.taken_at_from

    facts = TarArchive(TarParams(path=str(archive), taken_at="file")).inspect(archive)
    assert facts.taken_at_from == "the archive file's modification time"


def test_a_tar_with_a_hostile_name_is_refused_while_inspecting(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", {"ok.txt": 1, "../../escape.txt": 1})
    with pytest.raises(HostileArchive, match=r"'\.\.' path component"):
        TarArchive(TarParams(path=str(archive))).inspect(archive)


# -- RDB headers --------------------------------------------------------------------------------


def _aux(key: bytes, value: bytes | int) -> bytes:
    encoded = bytes([0xC2]) + struct.pack("<i", value) if isinstance(value, int) else bytes([len(value)]) + value
    return b"\xfa" + bytes([len(key)]) + key + encoded


def _rdb(version: int, *fields: bytes, end: bool = True, crc: bytes = b"\x5a" * 8) -> bytes:
    body = b"REDIS%04d" % version + b"".join(fields) + b"\xfe\x00\xfb\x00\x00"
    return body + (b"\xff" + crc if end else b"\x00" * 9)


def test_the_rdb_header_says_which_redis_wrote_it_and_when() -> None:
    head = _rdb(11, _aux(b"redis-ver", b"7.2.4"), _aux(b"redis-bits", 64), _aux(b"ctime", 1_765_000_000))
    assert aux_fields(head) == {"redis-ver": "7.2.4", "redis-bits": 64, "ctime": 1_765_000_000}
    assert aux_fields(head[:20]) == {}  # a field cut off ends the list, never raises


def test_an_rdb_is_inspected_for_its_writer_time_and_end(tmp_path: Path) -> None:
    fmt = RedisRdb(RedisRdb.Params(path="x"))
    path = tmp_path / "dump.rdb"
    path.write_bytes(_rdb(11, _aux(b"redis-ver", b"7.2.4"), _aux(b"ctime", 1_765_000_000)))
    facts = fmt.inspect(path)
    assert facts.taken_at == datetime.fromtimestamp(1_765_000_000, UTC) and "ctime" in facts.taken_at_from
    assert (facts.server_version, facts.server_major) == ("Redis 7.2.4", 7)

    path.write_bytes(_rdb(12))  # no redis-ver: the format says which Redis reads it
    assert fmt.inspect(path).server_version == "Redis 7.4 (RDB format 12)"
    path.write_bytes(_rdb(9))
    facts = fmt.inspect(path)
    assert facts.server_version is None and "modification time" in facts.taken_at_from

    path.write_bytes(_rdb(10, end=False))
    with pytest.raises(ComponentError, match="cut short"):
        fmt.inspect(path)
    path.write_bytes(b"PGDMP" + b"\x00" * 40)
    with pytest.raises(ComponentError, match="not an RDB file"):
        fmt.inspect(path)


def test_an_rdb_without_a_checksum_cannot_be_proven_whole(tmp_path: Path) -> None:
    """CRC 0 is "no checksum" to Redis: a damaged or cut-and-re-terminated file would load and pass."""
    fmt = RedisRdb(RedisRdb.Params(path="x"))
    path = tmp_path / "dump.rdb"
    path.write_bytes(_rdb(10, _aux(b"redis-ver", b"7.0.15"), crc=b"\x00" * 8))
    with pytest.raises(ComponentError, match=r"carries no checksum .*rdbchecksum no"):
        fmt.inspect(path)
    path.write_bytes(_rdb(10, _aux(b"redis-ver", b"7.0.15")))
    assert fmt.inspect(path).server_major == 7


# -- WAL ranges ---------------------------------------------------------------------------------


def test_wal_segments_follow_across_a_log_file() -> None:
    size = 16 * 1024 * 1024  # 256 segments per log file
    names = list(_segments("0000000100000000000000FE", "000000010000000100000001", size))
    assert names == [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    with pytest.raises(ComponentError):
        list(_segments("000000010000000000000005", "000000020000000000000006", size))  # another timeline


def test_a_base_backups_last_segment_comes_from_its_backup_file_or_its_manifest(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    first = "00000001000000000000000D"
    (archive / first).write_bytes(b"\0" * (1024 * 1024))  # 1 MiB segments, as drproof's runtime makes them
    manifest = tmp_path / "backup_manifest"
    manifest.write_text(json.dumps({"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/D00028", "End-LSN": "0/F00100"}]}))
    assert _stop_segment(archive, first, manifest) == "00000001000000000000000F"
    (archive / f"{first}.00000028.backup").write_text(
        "START WAL LOCATION: 0/D00028 (file 00000001000000000000000D)\n"
        "STOP WAL LOCATION: 0/E00100 (file 00000001000000000000000E)\n"
    )
    assert _stop_segment(archive, first, manifest) == "00000001000000000000000E"  # the archive's own record wins
    assert _stop_segment(tmp_path / "archive", "000000010000000000000099", None) is None


# -- scenarios ------------------------------------------------------------------------------------


def test_a_pgbackrest_repository_in_s3_is_refused_at_validation(tmp_path: Path) -> None:
    (tmp_path / "rt.yaml").write_text(
        "name: foreign\nsource:\n  backups:\n"
        "    db: {format: pgbackrest, path: 's3://bucket/repo', stanza: main}\n"
        "    files: {format: tar, path: a.tar, kind: postgres}\n"
        "assertions: [fidelity]\n"
    )
    with pytest.raises(ValidationFailed) as caught:
        load_scenario(tmp_path / "rt.yaml")
    messages = [p.message for p in caught.value.problems]
    assert any("pgBackRest reads its repository itself" in m for m in messages), messages
    assert any("'volumes' or 'configuration' (got 'postgres')" in m for m in messages), messages
    assert len(messages) == 2, messages


# -- foreign clusters -------------------------------------------------------------------------------


def test_a_restored_cluster_gets_the_sandboxs_access_rules_and_none_of_productions_outward_settings(
    tmp_path: Path,
) -> None:
    from engine.foreign.pg_cluster import SANDBOX_HBA, _sandbox_config

    data = tmp_path / "data"
    data.mkdir()
    (data / "pg_hba.conf").write_text("host all all 10.0.0.0/8 trust\n")
    (data / "postgresql.conf").write_text(
        "shared_buffers = 1GB\ndata_directory = '/var/lib/postgresql/15/main'\nssl = on\n"
        "ssl_cert_file = '/etc/ssl/prod.pem'\ninclude_dir = 'conf.d'\nmax_connections = 300\n"
    )
    (data / "postgresql.auto.conf").write_text("primary_conninfo = 'host=prod'\nwork_mem = '64MB'\n")
    (data / "standby.signal").touch()
    _sandbox_config(data)
    assert (data / "pg_hba.conf").read_text() == SANDBOX_HBA
    assert (data / "pg_hba.conf.from-backup").read_text() == "host all all 10.0.0.0/8 trust\n"
    live = [line for line in (data / "postgresql.conf").read_text().splitlines() if not line.startswith("#")]
    assert live == ["shared_buffers = 1GB", "max_connections = 300"]
    assert [line for line in (data / "postgresql.auto.conf").read_text().splitlines() if not line.startswith("#")] == [
        "work_mem = '64MB'"
    ]
    assert not (data / "standby.signal").exists() and (data / "pg_ident.conf").exists()

    debian = tmp_path / "debian"  # Debian keeps postgresql.conf in /etc: the backup has none
    debian.mkdir()
    _sandbox_config(debian)
    assert (debian / "postgresql.conf").read_text().startswith("# written by drproof")


def test_a_restored_cluster_with_a_link_out_of_its_data_directory_is_refused(tmp_path: Path) -> None:
    from engine.foreign.pg_cluster import refuse_links

    data = tmp_path / "data"
    (data / "base").mkdir(parents=True)
    refuse_links(data)  # nothing to refuse
    os.symlink("/var/lib/postgresql/wal", data / "pg_wal")
    with pytest.raises(ComponentError, match="symlink pg_wal -> /var/lib/postgresql/wal"):
        refuse_links(data)


def test_the_admission_script_quotes_the_role_and_its_password() -> None:
    from engine.foreign.pg_cluster import _admission

    script = _admission("we\"ird'role", "pa'ss")
    assert 'CREATE ROLE "we""ird\'role"' in script and "rolname = 'we\"ird''role'" in script
    assert "PASSWORD 'pa''ss'" in script
    assert all(line for line in script.splitlines())  # one statement a line, as single-user mode reads them


@pytest.mark.parametrize(
    ("version", "refused"),
    [
        ("psql (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)", True),
        ("psql (PostgreSQL) 15.14", False),
        ("psql (PostgreSQL) 16.9", True),
        ("psql (PostgreSQL) 17.6", False),
        ("psql (PostgreSQL) 18.0", False),
        ("psql (PostgreSQL) 12.22", True),
        ("not psql", True),
    ],
)
def test_a_plain_dump_needs_a_psql_with_restrict(version: str, refused: bool, tmp_path: Path) -> None:
    """Without psql's \\restrict a hostile plain dump can hide a command from the line filter."""
    from engine.foreign.pg_dump import _restrict_key

    if refused:
        with pytest.raises(ComponentError, match=r"lacks \\restrict"):
            _restrict_key(version, tmp_path / "shop.sql")
    else:
        assert len(_restrict_key(version, tmp_path / "shop.sql")) == 32
