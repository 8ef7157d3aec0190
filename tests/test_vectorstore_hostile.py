"""A vector store's restore refuses what it cannot prove, before anything live changes (review of the kind).

Negative controls: a set whose metadata.json nests its JSON 200,000 deep is refused with a
domain error (it was a RecursionError traceback); a set whose metadata.json claims the
expected dimension and metric over an index of another is refused before the swap (it
replaced a healthy live store, found unhealthy only afterwards); a fingerprint that covers
none of the vectors a store holds is refused (a scheme 1 fingerprint of a store keyed by
63-bit hashes compared as a match whatever its vectors). Quiet controls: the genuine set
restores, and a store with hashed ids is fingerprinted whole by the current scheme.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.components.base import ArtifactSource
from engine.components.vectorstore import META, VectorstoreComponent, VectorstoreParams
from engine.errors import ComponentError
from engine.fingerprint import Fingerprint
from tests.conftest import DirsRuntime


def _store(root: Path) -> VectorstoreComponent:
    comp = VectorstoreComponent("vec", VectorstoreParams(vectors=200, dimension=8), DirsRuntime(root))  # type: ignore[arg-type]
    comp.provision()
    comp.seed()
    return comp


def _tree(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _set(files: dict[str, bytes], fingerprint: Fingerprint) -> ArtifactSource:
    """A backup set serving a store.tar of ``files`` (as a repository writer could have made it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

    @contextlib.contextmanager
    def opener(record: Any, whole: bool = True) -> Iterator[io.BytesIO]:
        yield io.BytesIO(buf.getvalue())

    return ArtifactSource({"store.tar": object()}, opener, fingerprint=fingerprint)  # type: ignore[dict-item]


def test_a_set_whose_metadata_nests_too_deeply_is_refused_by_name(tmp_path: Path) -> None:
    live = _store(tmp_path)
    fp, genuine = live.fingerprint(), _tree(live.path)
    with pytest.raises(ComponentError, match=r"metadata.json nests its JSON too deeply.*live store was left untouched"):
        live.restore(_set({**genuine, META: b"[" * 200_000}, fp))
    assert _tree(live.path) == genuine
    assert [p.name for p in tmp_path.iterdir()] == ["vec"]  # no staging left behind
    live.restore(_set(genuine, fp))  # quiet control: the genuine files restore
    assert live.health().ok and _tree(live.path) == genuine
