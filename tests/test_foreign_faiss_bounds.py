"""A foreign FAISS index is read by a child whose memory is bounded, and an empty one restores nothing.

faiss trusts the lengths an index file stores: a 93-byte IndexFlatL2 whose vector length
claims 2 GiB made the reader child allocate 2.1 GiB before failing, from host memory the
run shares. An index of 0 vectors restored as a healthy, empty vector store and passed.
An index whose layers disagree on the metric is refused, and a sidecar metadata.json
nested too deeply names no model instead of raising a traceback.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from engine.errors import ComponentError
from engine.foreign.faiss_index import FaissIndex, FaissParams


def _bomb(path: Path, gib: int) -> None:
    index = faiss.IndexFlatL2(4)
    index.add(np.arange(12, dtype="float32").reshape(3, 4))
    faiss.write_index(index, str(path))
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<Q", 12))  # the stored vectors' element count
    data[at : at + 8] = struct.pack("<Q", (gib << 30) // 4)
    path.write_bytes(data)


def test_an_index_claiming_gigabytes_fails_within_the_childs_memory_bound(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.faiss"
    _bomb(bomb, 2)
    # In a fresh process, so the children's peak memory is this reader's alone.
    probe = (
        "import json, resource, sys\n"
        "from engine.foreign.faiss_index import _reader\n"
        "try:\n"
        "    _reader(['inspect', sys.argv[1]], 'bomb')\n"
        "    error = None\n"
        "except Exception as exc:\n"
        "    error = str(exc)\n"
        "print(json.dumps({'error': error, 'peak': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss << 10}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["error"] and "faiss cannot read it" in found["error"], found
    assert found["peak"] < 1200 << 20, f"the reader child peaked at {found['peak'] >> 20} MiB"


def test_a_sound_index_is_still_read_under_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "ok.faiss"
    index = faiss.IndexIDMap2(faiss.IndexFlatL2(64))
    index.add_with_ids(np.random.default_rng(1).random((20_000, 64), dtype="float32"), np.arange(20_000) * 3)
    faiss.write_index(index, str(path))
    facts = FaissIndex(FaissParams(path=str(path))).inspect(path)
    assert facts.details["vectors"] == 20_000


def test_an_empty_index_holds_nothing_to_restore(tmp_path: Path) -> None:
    path = tmp_path / "empty.faiss"
    faiss.write_index(faiss.IndexFlatL2(8), str(path))
    with pytest.raises(ComponentError, match="holds nothing to restore: the index holds 0 vectors"):
        FaissIndex(FaissParams(path=str(path))).inspect(path)


def _idmap2_ip(path: Path) -> None:
    vectors = np.random.default_rng(3).standard_normal((300, 8), dtype="float32")
    faiss.normalize_L2(vectors)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    index.add_with_ids(vectors, np.arange(300) * 3)
    faiss.write_index(index, str(path))


def test_an_index_whose_layers_disagree_on_the_metric_is_refused(tmp_path: Path) -> None:
    """faiss searches by the inner index's metric: an id map's header saying L2 over IndexFlatIP is damage.

    It was converted into an L2 store, healthy, and its restore test passed.
    """
    path = tmp_path / "ip.faiss"
    _idmap2_ip(path)
    fmt = FaissIndex(FaissParams(path=str(path)))
    assert fmt.inspect(path).details["metric"] == "inner_product"  # quiet control: the sound file
    data = bytearray(path.read_bytes())
    assert data[:4] == b"IxM2" and struct.unpack("<i", data[33:37]) == (0,)  # the id map's metric field
    data[33:37] = struct.pack("<i", 1)  # METRIC_L2
    path.write_bytes(bytes(data))
    with pytest.raises(ComponentError, match=r"layers disagree \(IndexIDMap2 d=8 metric 1, IndexFlatIP d=8 metric 0\)"):
        fmt.inspect(path)


def test_a_metadata_json_nested_too_deeply_names_no_model(tmp_path: Path) -> None:
    """A sidecar nested 200,000 deep is no model name: it was a RecursionError traceback from inspect."""
    _idmap2_ip(tmp_path / "index.faiss")
    (tmp_path / "metadata.json").write_text("[" * 200_000)
    assert FaissIndex(FaissParams(path=str(tmp_path))).inspect(tmp_path).details["model"] == "unknown"
    (tmp_path / "metadata.json").write_text('{"model": "e5-small"}')  # quiet control
    assert FaissIndex(FaissParams(path=str(tmp_path))).inspect(tmp_path).details["model"] == "e5-small"


def _with_documents(root: Path, lines: list[str]) -> Path:
    root.mkdir()
    _idmap2_ip(root / "index.faiss")
    (root / "ids.jsonl").write_text("".join(line + "\n" for line in lines))
    return root


def _documents(ids: list[int]) -> list[str]:
    return [json.dumps({"id": i, "document": f"doc-{i}"}) for i in ids]


def test_an_id_map_naming_an_id_twice_is_refused_by_name(tmp_path: Path) -> None:
    """Found by review: the last of two lines for one id won in silence, and the other document was lost."""
    lines = _documents([i * 3 for i in range(300)])
    lines.insert(10, json.dumps({"id": 21, "document": "another-doc"}))
    root = _with_documents(tmp_path / "dup", lines)
    fmt = FaissIndex(FaissParams(path=str(root)))
    facts = fmt.inspect(root)
    from engine.components.vectorstore import VectorstoreComponent
    from tests.conftest import DirsRuntime

    comp = VectorstoreComponent("v", fmt.component_params(VectorstoreComponent, facts), DirsRuntime(tmp_path / "sb"))  # type: ignore[arg-type]
    comp.provision()
    with pytest.raises(ComponentError, match=r"ids.jsonl line 11: id 21 is named a second time"):
        fmt.restore(comp, root, facts)


def test_an_id_map_naming_each_id_once_is_converted(tmp_path: Path) -> None:
    """Quiet control for the one above."""
    root = _with_documents(tmp_path / "ok", _documents([i * 3 for i in range(300)]))
    fmt = FaissIndex(FaissParams(path=str(root)))
    facts = fmt.inspect(root)
    from engine.components.vectorstore import VectorstoreComponent
    from tests.conftest import DirsRuntime

    comp = VectorstoreComponent("v", fmt.component_params(VectorstoreComponent, facts), DirsRuntime(tmp_path / "sb"))  # type: ignore[arg-type]
    comp.provision()
    assert fmt.restore(comp, root, facts)["documents"] == 300
    assert comp.health().ok


def _inspect_within(fmt: FaissIndex, local: Path, fifo: Path, seconds: float) -> BaseException | None:
    """``inspect`` in a thread; the old code waited for a writer, so the FIFO is released if it still runs."""
    import contextlib
    import os
    import threading

    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            fmt.inspect(local)
            raised.append(None)
        except BaseException as exc:  # handed back to the test
            raised.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    hung = worker.is_alive()
    while worker.is_alive():  # let the blocked reader child see a writer come and go
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(0.5)
    assert not hung, f"inspect waited on the FIFO {fifo.name} for a writer"
    return raised[0]


@pytest.mark.parametrize("where", ["path", "index in a directory", "id map in a directory"])
def test_a_fifo_is_refused_without_waiting(tmp_path: Path, where: str) -> None:
    """Found by review: a FIFO as `path` made the reader child block until its 6-hour timeout."""
    import os

    root = tmp_path / "backup"
    root.mkdir()
    if where == "path":
        fifo = local = tmp_path / "index.faiss"
        os.mkfifo(fifo)
        params = FaissParams(path=str(fifo))
    elif where == "index in a directory":
        fifo, local = root / "index.faiss", root
        os.mkfifo(fifo)
        params = FaissParams(path=str(root), index="index.faiss")
    else:
        _idmap2_ip(root / "index.faiss")
        fifo, local = root / "ids.jsonl", root
        os.mkfifo(fifo)
        params = FaissParams(path=str(root))
    raised = _inspect_within(FaissIndex(params), local, fifo, 20)
    assert isinstance(raised, ComponentError), raised
    assert f"{fifo}: a FIFO (named pipe), not a file" in str(raised)
