"""A FAISS index another program wrote with ``faiss.write_index``, alone or in a directory.

drproof's ``vectorstore`` kind keeps one layout (an IndexIDMap2 over a flat index, an id
map, the model's metadata), which is what its health check, probe query and fingerprint
read. A foreign index is therefore not copied: its vectors are read back under their
ids and written in that layout. That is possible only where the index keeps the vectors
themselves (Flat, HNSWFlat, IVFFlat, under IDMap/IDMap2 or not); an index of lossy codes
(PQ, SQ, ...) is refused while inspecting, naming its type, because nothing could prove
its vectors back.

The backup is an index file, or a directory holding one (``index``, default the only
``*.faiss`` or ``*.index`` file) with, optionally, an id map of JSON lines
``{"id": ..., "document": ...}`` (``documents``, default ``ids.jsonl`` if present) that
must name exactly the index's ids, and a ``metadata.json`` whose ``model`` is recorded.
faiss reads the file in a child process (``faiss_reader``): a damaged index can crash
faiss, and must not take the run with it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from engine.childenv import tool_environment
from engine.components.base import Component
from engine.components.vectorstore import VectorstoreComponent, VectorstoreParams
from engine.errors import ComponentError
from engine.foreign.base import ForeignFacts, ForeignFormat, ForeignParams
from engine.foreign.stamps import file_time
from engine.foreign.trees import NOTHING

_NAME = r"^[^/\\]+$"  # a file name inside the backup's directory, never a path out of it
_READ_TIMEOUT = 6 * 3600


class FaissParams(ForeignParams):
    index: str | None = Field(
        default=None,
        pattern=_NAME,
        description="When `path` is a directory: the index file in it; default: its only `*.faiss` or `*.index` file.",
    )
    documents: str | None = Field(
        default=None,
        pattern=_NAME,
        description='When `path` is a directory: its id map, JSON lines `{"id": 7, "document": "..."}` naming '
        "exactly the index's ids; default: `ids.jsonl` if there is one, else each id stands for itself.",
    )
    model: str | None = Field(
        default=None,
        description="The embedding model the vectors came from, recorded in the sandbox's metadata; default: "
        "`model` of the directory's metadata.json, else `unknown`.",
    )


class FaissIndex(ForeignFormat):
    name: ClassVar[str] = "faiss"
    kinds: ClassVar[tuple[str, ...]] = ("vectorstore",)
    Params: ClassVar[type[ForeignParams]] = FaissParams
    description: ClassVar[str] = (
        "A FAISS index written by faiss.write_index (Flat, HNSWFlat or IVFFlat, under IDMap/IDMap2 or not), alone "
        "or in a directory with an id map; its vectors are rewritten under their ids as drproof's vector store."
    )

    params: FaissParams

    def inspect(self, local: Path) -> ForeignFacts:
        index, documents = self._files(local)
        found = _reader(["inspect", str(index)], f"{index}")
        if not found.get("vectors"):
            raise ComponentError(f"{index}: {NOTHING}: the index holds 0 vectors (an empty restore proves nothing)")
        return ForeignFacts(
            taken_at=file_time(index),
            taken_at_from="the index file's modification time (a faiss index records no time)",
            size_bytes=index.stat().st_size,
            details={
                **found,
                "index_file": index.name,
                "documents": documents.name if documents else None,
                "model": self._model(local),
            },
        )

    def _files(self, local: Path) -> tuple[Path, Path | None]:
        """The index file and the id map (if any) of the backup at ``local``."""
        if not local.is_dir():
            if self.params.index or self.params.documents:
                raise ComponentError(f"{local}: `index` and `documents` name files in a directory; this is a file")
            _refuse_special(local)
            return local, None
        if self.params.index:
            index = local / self.params.index
        else:
            found = sorted(p for p in local.iterdir() if p.suffix in (".faiss", ".index") and p.is_file())
            if len(found) != 1:
                names = ", ".join(p.name for p in found) or "none"
                raise ComponentError(f"{local}: expected one *.faiss or *.index file (found: {names}); name it: index")
            index = found[0]
        documents = local / (self.params.documents or "ids.jsonl")
        for path in (index, documents):
            if path.is_symlink():
                raise ComponentError(f"{path}: a symlink; the backup's files must be in its directory")
        _refuse_special(index)
        _refuse_special(documents)
        if not index.is_file():
            raise ComponentError(f"{index}: no such index file")
        if not documents.is_file():
            if self.params.documents:
                raise ComponentError(f"{documents}: no such id map")
            return index, None
        return index, documents

    def _model(self, local: Path) -> str:
        if self.params.model:
            return self.params.model
        meta = local / "metadata.json"
        if local.is_dir() and meta.is_file() and not meta.is_symlink():
            try:
                model = json.loads(meta.read_text(encoding="utf-8")).get("model")
            except (ValueError, AttributeError, OSError, RecursionError):  # nested 200,000 deep: found by review
                model = None
            if isinstance(model, str) and model:
                return model
        return "unknown"

    def component_params(self, kind: type[Component], facts: ForeignFacts) -> Any:
        d = facts.details
        return VectorstoreParams.model_construct(
            vectors=d["vectors"], dimension=d["dimension"], metric=d["metric"], model=d["model"], random_seed=42
        )

    def restore(self, component: Component, local: Path, facts: ForeignFacts) -> dict[str, Any]:
        if not isinstance(component, VectorstoreComponent):
            raise ComponentError(f"a faiss index restores into a vectorstore component, not a {component.name}")
        index, documents = self._files(local)
        with component.store_lock:
            if any(component.path.iterdir()):
                raise ComponentError(f"the sandbox store {component.path} is not empty; refusing to merge into it")
            args = ["convert", str(index), str(component.path), str(facts.details["model"])]
            done = _reader([*args, str(documents)] if documents else args, f"{index}")
        return {"converted_from": done["index_type"], "vectors": done["vectors"], "documents": done["documents"]}


_SPECIAL = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def _refuse_special(path: Path) -> None:
    """Refuse ``path`` if it exists and is not a regular file, without opening it.

    Why: found by review, a `path` (or index, or id map) that was a FIFO made the reader
    child wait in faiss's open for a writer, until its 6-hour timeout, with no verdict; an
    id map that was one was skipped in silence, each id then standing for itself.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing: the caller says so
    if not stat.S_ISREG(mode):
        what = _SPECIAL.get(stat.S_IFMT(mode), "not a regular file")
        raise ComponentError(f"{path}: {what}, not a file; a faiss backup is an index file or a directory of files")


def _reader(args: list[str], what: str) -> dict[str, Any]:
    """Run ``engine.foreign.faiss_reader`` in a child; its JSON answer, or a ComponentError."""
    env = tool_environment({"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "engine.foreign.faiss_reader", *args],
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            timeout=_READ_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ComponentError(f"{what}: could not run the faiss reader: {exc}") from None
    if proc.returncode < 0:
        raise ComponentError(
            f"{what}: faiss died reading the index (signal {-proc.returncode}): the file is damaged or not an index "
            "faiss wrote"
        )
    lines = proc.stdout.strip().splitlines()
    try:
        answer: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if "error" in answer:
        raise ComponentError(f"{what}: {answer['error']}")
    if proc.returncode != 0 or not answer:
        tail = " ".join(proc.stderr.split())[-600:]
        raise ComponentError(f"{what}: the faiss reader failed (exit {proc.returncode}): {tail or 'no output'}")
    return answer
