"""A damaged artifact whose manifest entry was rewritten to match never touches live data.

For every component kind: back up, change the live data (so a restore would show),
flip one byte of one stored artifact anywhere and rewrite its SHA-256 and size in the
manifest, so the stored digest no longer sees anything. The restore must then either be
refused with the live data exactly as they were, or (for a change that decodes to the
same content) restore exactly the backup. Plain and encrypted repositories alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine import backup as engine_backup
from engine.components.base import Component
from engine.components.configuration import ConfigurationComponent, ConfigurationParams
from engine.components.postgres import PostgresComponent, PostgresParams
from engine.components.redis import RedisComponent, RedisParams
from engine.components.redis_rdb import RedisRdbComponent
from engine.components.vectorstore import VectorstoreComponent, VectorstoreParams
from engine.components.volumes import VolumesComponent, VolumesParams
from engine.crypto import Encryption
from engine.errors import IntegrityError
from engine.manifest import Manifest
from engine.repository import LocalRepository
from engine.runtime.local import LocalRuntime
from tests.integration.helpers import unchanged

pytestmark = [pytest.mark.integration]

KEY = bytes(range(32))


def _drop_rows(comp: Any) -> None:
    conn = comp.connect()
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM orders WHERE id % 2 = 0")
    conn.close()


def _drop_keys(comp: Any) -> None:
    r = comp.client()
    for key in list(r.scan_iter(count=1000))[::3]:
        r.delete(key)


def _drop_files(comp: Any) -> None:
    for f in sorted(p for p in comp.path.rglob("*") if p.is_file())[::2]:
        f.unlink()


KINDS: dict[str, tuple[Callable[[LocalRuntime], Component], Callable[[Any], None]]] = {
    "postgres": (lambda rt: PostgresComponent("db", PostgresParams(customers=60), rt), _drop_rows),
    # pg_dump -Fd -j2: toc, data stream and listing, each a place damage can hit
    "postgres-jobs-2": (lambda rt: PostgresComponent("dbj", PostgresParams(customers=60, jobs=2), rt), _drop_rows),
    "redis": (lambda rt: RedisComponent("cache", RedisParams(keys=150), rt), _drop_keys),
    "redis-rdb": (lambda rt: RedisRdbComponent("snap", RedisParams(keys=150), rt), _drop_keys),
    "volumes": (lambda rt: VolumesComponent("files", VolumesParams(files=12, file_size=3000), rt), _drop_files),
    "configuration": (lambda rt: ConfigurationComponent("conf", ConfigurationParams(), rt), _drop_files),
    "vectorstore": (
        lambda rt: VectorstoreComponent("vec", VectorstoreParams(vectors=120, dimension=8), rt),
        _drop_files,
    ),
}


Live = dict[str, tuple[Component, LocalRepository, Manifest]]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Each kind seeded once, with a sound backup of the seed that puts it back after every example."""
    with LocalRuntime(tmp_path_factory.mktemp("live")) as rt:
        pristine = LocalRepository(tmp_path_factory.mktemp("pristine"))
        comps: Live = {}
        for kind, (make, _change) in KINDS.items():
            comp = make(rt)
            comp.provision()
            comp.seed()
            comps[kind] = (comp, pristine, engine_backup.backup(pristine, [comp]))
        yield comps


def _files(comp: Any) -> dict[str, tuple[int, bytes]] | None:
    """Every file of a directory kind, byte for byte with its mode; None for a server kind."""
    root = getattr(comp, "path", None)
    if root is None:
        return None
    return {
        str(p.relative_to(root)): (p.lstat().st_mode, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()
    }


def _rehash(repo: LocalRepository, manifest: Manifest, key: str) -> Manifest:
    """Rewrite the manifest entry of artifact ``key`` to match its (damaged) stored bytes."""
    path = repo.root / "sets" / manifest.id / "manifest.json"
    doc = json.loads(path.read_text())
    for entry in doc["artifacts"]:
        if f"{entry['component']}/{entry['name']}" == key:
            stored = (repo.root / "sets" / manifest.id / entry["path"]).read_bytes()
            entry["sha256"], entry["size"] = hashlib.sha256(stored).hexdigest(), len(stored)
    path.write_text(json.dumps(doc))
    return repo.get(manifest.id)


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), encrypted=st.booleans())
def test_rehashed_damage_is_refused_and_live_data_stay(
    kind: str, live: Live, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, encrypted: bool
) -> None:
    comp, pristine, seed = live[kind]
    repo_root = tmp_path_factory.mktemp("repo")
    repo = LocalRepository(repo_root, Encryption(key=KEY, source="test") if encrypted else None)
    manifest = engine_backup.backup(repo, [comp])
    backed_up = manifest.component(comp.instance).fingerprint
    assert backed_up is not None
    try:
        KINDS[kind][1](comp)  # the live data move on after the backup
        before = comp.fingerprint()
        assert before.digest != backed_up.digest
        files_before = _files(comp)
        # Drawn as fractions: sizes differ from run to run (encryption nonces, timestamps).
        artifacts = manifest.artifacts_of(comp.instance)
        artifact = artifacts[data.draw(st.integers(0, 1 << 16), label="artifact") % len(artifacts)]
        stored = repo_root / "sets" / manifest.id / artifact.path
        raw = bytearray(stored.read_bytes())
        offset = int(data.draw(st.floats(0, 1), label="where") * (len(raw) - 1))
        raw[offset] ^= data.draw(st.integers(1, 255), label="xor")
        stored.write_bytes(bytes(raw))
        damaged = _rehash(repo, manifest, artifact.key)
        try:
            engine_backup.restore(repo, damaged, comp)
        except IntegrityError as exc:
            event("refused")
            assert "refusing to restore" in str(exc)
            if files_before is not None:  # a store with files gone reads as placeholders, which never match
                assert _files(comp) == files_before, "a refused restore changed the live data"
            else:
                assert unchanged(before, comp.fingerprint()), "a refused restore changed the live data"
        else:
            event("decoded to the same content: restored")
            assert comp.fingerprint().digest == backed_up.digest, "a restore went ahead with other content"
    finally:
        engine_backup.restore(pristine, seed, comp)
