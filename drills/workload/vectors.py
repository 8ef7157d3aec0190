"""Workload vectors added to the FAISS store, each written durably before it counts.

A FAISS store has no server to acknowledge a write: the store's files are the truth.
A write records its id (``WORKLOAD_IDS + seq``) in the store's workload file (which
opens with ``WORKLOAD_HEADER``, the mark the fingerprint leaves it out on), adds one
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
    WORKLOAD_HEADER,
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
        self.index: Any = None
        self.written: tuple[int, int, int] | None = None  # the index file as this writer last left it
        with self.store.store_lock:
            self._current()

    def _current(self) -> Any:
        """The store's index as it is on disk now, read again when anyone but this writer replaced it.

        Why: the writer kept its own copy and wrote it back with each vector, so its first
        write after a restore put the writes the restore had removed back over the
        restored store (and the drill measured an RPO of 0 s, with 0 lost writes).
        """
        path = self.store.path / INDEX
        st = os.stat(path, follow_symlinks=False)
        if self.index is None or (st.st_ino, st.st_size, st.st_mtime_ns) != self.written:
            check_index_layout(path)
            self.index = faiss.read_index(str(path))
            self.written = (st.st_ino, st.st_size, st.st_mtime_ns)
        return self.index

    def write(self, seq: int) -> None:
        vid = WORKLOAD_IDS + seq
        with self.store.store_lock:
            try:
                self._write(seq, vid)
            except BaseException:
                self.index = None  # it may hold a vector the store does not: read the store again
                raise

    def _write(self, seq: int, vid: int) -> None:
        """One vector, recorded, added and renamed into place; the caller holds the store's lock."""
        index = self._current()
        vector = np.random.default_rng(seq).standard_normal((1, index.d), dtype=np.float32)
        # Recorded first, so the fingerprint can always tell this vector from the seed's; the
        # record opens with the workload's mark, the fact the fingerprint leaves it out on.
        with open(self.store.path / WORKLOAD_FILE, "a", encoding="ascii") as fh:
            if fh.tell() == 0:
                fh.write(WORKLOAD_HEADER)
            fh.write(f"{vid}\n")
            fh.flush()
            os.fsync(fh.fileno())
        index.add_with_ids(vector, np.array([vid], dtype=np.int64))
        tmp = self.store.path / f".{INDEX}.workload"
        faiss.write_index(index, str(tmp))
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
        st = os.stat(self.store.path / INDEX, follow_symlinks=False)
        self.written = (st.st_ino, st.st_size, st.st_mtime_ns)

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
