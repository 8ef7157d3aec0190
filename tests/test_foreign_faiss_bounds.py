"""A foreign FAISS index is read by a child whose memory is bounded, and an empty one restores nothing.

faiss trusts the lengths an index file stores: a 93-byte IndexFlatL2 whose vector length
claims 2 GiB made the reader child allocate 2.1 GiB before failing, from host memory the
run shares. An index of 0 vectors restored as a healthy, empty vector store and passed.
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
