"""Workload vectors added to the FAISS store, each written durably before it counts.

A FAISS store has no server to acknowledge a write: the store's files are the truth.
A write records its id (``WORKLOAD_IDS + seq``) in the store's workload file, adds one
vector and its id-map line, writes the index to a temporary file, fsyncs and renames it
into place, all under the store's lock so a backup never archives an index and an id map
from different moments. The fingerprint leaves out exactly the recorded ids.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from drills.workload.base import Writer
from engine.components.vectorstore import (
    IDS,
    INDEX,
    WORKLOAD_FILE,
    WORKLOAD_IDS,
    VectorstoreComponent,
    check_index_layout,
)
from engine.lazy import lazy

faiss = lazy("faiss")  # loaded on first use: see engine/lazy.py
np = lazy("numpy")


class VectorWriter(Writer):
    name: ClassVar[str] = "vectorstore"

    def open(self) -> None:
        assert isinstance(self.component, VectorstoreComponent)
        self.store = self.component
        with self.store.store_lock:
            self.index: Any = faiss.read_index(str(self.store.path / INDEX))

    def write(self, seq: int) -> None:
        vector = np.random.default_rng(seq).standard_normal((1, self.index.d), dtype=np.float32)
        vid = WORKLOAD_IDS + seq
        with self.store.store_lock:
            # Recorded first, so the fingerprint can always tell this vector from the seed's.
            with open(self.store.path / WORKLOAD_FILE, "a", encoding="ascii") as fh:
                fh.write(f"{vid}\n")
                fh.flush()
                os.fsync(fh.fileno())
            self.index.add_with_ids(vector, np.array([vid], dtype=np.int64))
            tmp = self.store.path / f".{INDEX}.workload"
            faiss.write_index(self.index, str(tmp))
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            with open(self.store.path / IDS, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"id": vid, "document": f"workload-{seq}"}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.store.path / INDEX)

    def survivors(self) -> set[int]:
        assert isinstance(self.component, VectorstoreComponent)
        path = self.component.path / INDEX
        try:
            check_index_layout(path)
            index: Any = faiss.read_index(str(path))
        except Exception:  # a damaged or missing store kept nothing
            return set()
        ids = faiss.vector_to_array(index.id_map)
        return {int(i) - WORKLOAD_IDS for i in ids if i >= WORKLOAD_IDS}
