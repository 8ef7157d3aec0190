"""The contract every component kind fulfils.

A component kind is one class: its ``name`` is the YAML ``kind:``, its ``Params`` model
validates the ``seed:`` section, and the methods below are everything a drill or the
standalone engine needs. Faults reach into a component only through its public methods
and its ``service``/``path``, so a fault never needs to know which runtime is in use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import IO, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from engine.fingerprint import LEGACY_SCHEME, Fingerprint
from engine.manifest import ArtifactRecord, ComponentRecord
from engine.repository.base import BackupSetWriter
from engine.runtime.base import Runtime, ServerWanted

# Records of the drill's live workload carry this name (table, key prefix, directory).
# Fingerprints leave them out: the workload is judged by the recovery point it measures,
# and its writes after a backup must not make every restore look unfaithful.
WORKLOAD_MARK = "drproof_workload"


# The component detail in which the engine records that the source failed its health check
# at backup time (``Component.health_at_backup``): the health check's own words.
UNHEALTHY_AT_BACKUP = "unhealthy_at_backup"


# Metadata artifacts (removal lists, roles, pgBackRest's info) are read whole into memory;
# above this size their compression ratio must also be plausible.
MIN_BOMB_CHECK = 1 << 20
MAX_METADATA_RATIO = 1000


class SeedParams(BaseModel):
    """Base of every component's ``seed:`` model; unknown keys are errors."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    random_seed: int = 42


class Health(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    ok: bool
    detail: str


class ArtifactSource:
    """Opens the artifacts of one component in one backup set, verified.

    ``fingerprint`` is the component's fingerprint taken when that set was written: what
    a restore that builds its result apart from the live data compares it with before
    swapping it in (:meth:`Component.prove_restored`). ``details`` and ``tools`` are the
    manifest's record of how the backup was taken, so a restore can refuse a target the
    backup cannot be loaded into before it touches anything.
    """

    def __init__(
        self,
        artifacts: dict[str, ArtifactRecord],
        opener: Any,
        fingerprint: Fingerprint | None = None,
        details: dict[str, Any] | None = None,
        tools: dict[str, str] | None = None,
    ) -> None:
        self.artifacts = artifacts
        self._opener = opener
        self.fingerprint = fingerprint
        self.details = details or {}  # what the component recorded about its backup
        self.tools = tools or {}  # the tools that wrote it, by tool name
        # Set by the caller: the restore goes into a target that holds nothing, and the
        # caller proves the result against ``fingerprint`` itself once it is restored (a
        # restore test's fidelity check). A kind whose proof before the swap is costly
        # may then leave it to the caller, and says so in ``proof_deferred``.
        self.defer_proof = False
        self.proof_deferred = False

    def names(self) -> list[str]:
        return sorted(self.artifacts)

    def record(self, name: str) -> ArtifactRecord:
        """The manifest's record of artifact ``name``; a set without it is refused, not a ``KeyError``.

        Why: a manifest that renames a kind's artifact (consistently, so it verifies) left
        the restore to fail with a traceback looking for the name the kind writes.
        """
        from engine.errors import IntegrityError

        try:
            return self.artifacts[name]
        except KeyError:
            raise IntegrityError(
                f"the backup holds no artifact {name!r} for this component (it holds: "
                f"{', '.join(self.names()) or 'none'}): drproof did not write this set so; nothing was restored"
            ) from None

    def open(self, name: str) -> Any:
        """Context manager yielding a readable stream of the decompressed artifact."""
        return self._opener(self.record(name))

    def open_head(self, name: str) -> Any:
        """Like ``open``, for a reader that needs only the start (a dump's table of contents).

        Nothing is proven on exit, and the rest is not read: use it only for artifacts the
        engine proved in full before the restore began (kinds that do not stage).
        """
        return self._opener(self.record(name), whole=False)

    def read_small(self, name: str, limit: int) -> bytes:
        """A metadata artifact read whole, refused before memory grows if it is not small.

        Its recorded content size must be within ``limit``, and above 1 MiB within 1,000
        times its stored size: a few KiB that claim to hold a GiB of JSON are a
        decompression bomb (or a forged manifest), not a list of paths. The stream itself
        stops at the recorded size, so a manifest that under-states it fails too.
        """
        from engine.errors import IntegrityError

        record = self.record(name)
        if record.raw_size > limit:
            raise IntegrityError(
                f"artifact {record.key} would decompress to {record.raw_size} bytes, over the {limit}-byte limit "
                "for this kind of metadata; refused before reading it"
            )
        if record.raw_size > MIN_BOMB_CHECK and record.raw_size > MAX_METADATA_RATIO * max(record.size, 1):
            raise IntegrityError(
                f"artifact {record.key} claims {record.raw_size} bytes from {record.size} stored: a compression "
                f"ratio over {MAX_METADATA_RATIO}:1 is a decompression bomb, not metadata; refused before reading it"
            )
        with self.open(name) as stream:
            data: bytes = stream.read(record.raw_size + 1)
        return data


class Component(ABC):
    name: ClassVar[str]
    Params: ClassVar[type[SeedParams]]
    description: ClassVar[str]

    # Kinds that hold data are backed up, restored from backups and fingerprinted. A kind
    # that holds none (a service process) sets this False: backups and fidelity leave it
    # out, and its "restore" is starting it again once what it depends on is back.
    stateful: ClassVar[bool] = True
    # The key of a component's entry that holds ``Params``: what is seeded for data kinds,
    # how to run it for a service.
    params_key: ClassVar[str] = "seed"

    def __init__(self, instance: str, params: SeedParams, runtime: Runtime) -> None:
        self.instance = instance
        self.params = params
        self.runtime = runtime

    @abstractmethod
    def provision(self) -> None:
        """Ask the runtime for the server or directory; wait until it answers."""

    @abstractmethod
    def seed(self) -> dict[str, Any]:
        """Fill with deterministic data; return what was created (for the report)."""

    @abstractmethod
    def fingerprint(self) -> Fingerprint: ...

    @abstractmethod
    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        """Write full-backup artifacts; return details for the manifest."""

    @abstractmethod
    def restore(self, source: ArtifactSource) -> None:
        """Bring the component back to the backed-up state, replacing what is there."""

    def backup_fingerprinted(
        self, writer: BackupSetWriter, incremental: tuple[Fingerprint, ArtifactSource] | None = None
    ) -> tuple[dict[str, Any], Fingerprint]:
        """Back up and fingerprint what was backed up: the manifest's reference for fidelity.

        The default reads the component twice, fingerprint first. Kinds that read every
        byte while archiving anyway (directory trees) override it to digest in the same
        pass, so a backup costs one read of the data, and the fingerprint describes
        exactly the bytes archived even when files change meanwhile.
        """
        fp = self.fingerprint()
        if incremental is not None:
            return self.backup_incremental(writer, *incremental), fp
        return self.backup(writer), fp

    # Kinds whose restore reads every artifact to its end into a staging area (a directory
    # beside the target, a scratch server) and changes nothing live before that read
    # ended and the staged state was proven, set this. The stream's own checks (GCM
    # tags, the whole zstd frame, the stored digest) then refuse damage before the swap,
    # and the engine skips reading every artifact once more beforehand. All other kinds
    # get every artifact proven in full before their restore starts.
    proves_while_staging: ClassVar[bool] = False

    def prove_restored(self, expected: Fingerprint | None, actual: Fingerprint, where: str) -> None:
        """Refuse a staged restore whose content differs from the backup's fingerprint.

        Called before the staged state replaces anything live, so a refusal leaves the
        live data exactly as they were. ``where`` says what was staged, for the message.
        """
        from engine.errors import RestoreMismatch
        from engine.fingerprint import compare

        if expected is None:
            raise RestoreMismatch(
                f"{self.name} {self.instance!r}: the backup holds no fingerprint to prove the restored copy against"
            )
        diffs = compare(expected, actual, limit=5)
        if diffs:
            shown = "; ".join(d.describe() for d in diffs) + (f"; and {diffs.unlisted} more" if diffs.unlisted else "")
            raise RestoreMismatch(
                f"{self.name} {self.instance!r}: the restored copy ({where}) differs from the backup's fingerprint "
                f"in {diffs.total} part(s): {shown}; the copy was discarded"
            )

    @classmethod
    def restorability(cls, details: dict[str, Any], tools: dict[str, str]) -> list[str]:
        """Why a backup of this kind, as its manifest describes it, could not be restored
        into the server it came from; found by ``verify`` without reading any data."""
        return []

    @classmethod
    def limits(cls, details: dict[str, Any]) -> list[str]:
        """What a sound, restorable backup of this kind cannot do, as its manifest describes it.

        Why: a set can verify and restore to its own end while an objective is already lost
        (a hole in the WAL archive before a physical backup: no point-in-time recovery
        across it). ``backup`` and ``verify`` say it, with a non-zero exit; it is never a
        reason to refuse the set or to drop its verification mark.
        """
        return []

    @classmethod
    def server_wanted(cls, record: ComponentRecord, backup_id: str) -> ServerWanted | None:
        """The server a sandbox needs to restore this backup into, or None where any will do.

        A restore test of a real backup asks the runtime for this before it creates the
        sandbox's server (``Runtime.want``); kinds without a server need nothing.
        """
        return None

    # The server kind the component asks its runtime for (``Runtime.server``: postgres,
    # redis, directory, or a topology), None for none; and the runtime capabilities it
    # needs (``engine.runtime.base.CAPABILITIES``). A drill on a runtime that lacks either
    # stops before provisioning, with a message naming the runtimes that have them.
    server: ClassVar[str | None] = None
    needs: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def needs_for(cls, params: SeedParams) -> frozenset[str]:
        """The capabilities a component with these parameters needs (a form may need more than ``needs``)."""
        return cls.needs

    # Incremental backups: only kinds that set ``supports_incremental`` implement these.
    supports_incremental: ClassVar[bool] = False

    def backup_incremental(
        self, writer: BackupSetWriter, parent: Fingerprint, parent_source: ArtifactSource
    ) -> dict[str, Any]:
        """Write only what changed since the parent backup (its fingerprint and artifacts)."""
        raise NotImplementedError(f"{self.name} components take full backups only")

    def restore_chain(self, sources: list[ArtifactSource]) -> None:
        """Restore from a full backup followed by incremental ones, oldest first."""
        if len(sources) != 1:
            raise NotImplementedError(f"{self.name} components take full backups only")
        self.restore(sources[0])

    # Kinds whose backups continue the previous one (a WAL history) set ``wants_history``;
    # the engine then hands them the newest earlier record of the same instance.
    wants_history: ClassVar[bool] = False

    def backup_history(self, previous: ComponentRecord | None) -> None:
        """Receive the newest earlier backup record of this instance, before ``backup``."""
        return None

    @abstractmethod
    def health(self) -> Health: ...

    def health_at_backup(self, details: dict[str, Any]) -> Health:
        """The source's health as the backup just taken of it (``details``) found it.

        Why: a backup of a damaged source (a vector store holding a NaN, metadata that
        contradicts its index) was accepted in silence, and its restore faithfully swapped
        the damage in, found only then, on the worst day. The engine records a failure as a
        finding of the set (``UNHEALTHY_AT_BACKUP``): the set is kept, as it may be all there
        is, and ``drproof backup`` exits 1 the night it happens. The default asks ``health``
        once more, after the backup; a kind whose backup already reads what its health check
        would overrides this to judge those bytes, so the check costs no second read.
        """
        return self.health()

    def tool_versions(self) -> dict[str, str]:
        return {}

    def connection_env(self) -> dict[str, str]:
        """How a program reaches this component, as ``KEY -> value`` (``URL``, ``PASSWORD``, ``PATH``).

        Given to the user's checks and to application components as ``DRPROOF_<NAME>_<KEY>``
        (``engine.components.connections``); a password only ever travels this way, never
        in a URL or an argument. The default serves the directory kinds: their ``path``.
        """
        path = getattr(self, "path", None)
        return {"PATH": str(path)} if path is not None else {}

    def network_connection_env(self) -> dict[str, str] | None:
        """Like ``connection_env``, as a container on the run's private network reaches it.

        None where the component has no address on such a network (a directory, or any
        component off the docker runtime): an application container cannot use it.
        """
        return None

    # Kinds that can hold a canary (``engine.canary``) set this and implement the two below.
    supports_canary: ClassVar[bool] = False

    def plant_canary(self, value: str) -> str:
        """Store ``value`` as this component's canary, replacing any earlier one; say where."""
        raise NotImplementedError(f"{self.name} components hold no canary")

    def read_canary(self) -> str | None:
        """The canary value this component holds now, or None if it holds none."""
        raise NotImplementedError(f"{self.name} components hold no canary")

    def recover(self) -> None:
        """Bring a stateless component back (start it again); data kinds restore from backups."""
        raise NotImplementedError(f"{self.name} components are restored from backups")

    # The scheme of the fingerprints this kind takes now; ``fingerprint_like`` also
    # computes older ones, so a backup taken by an earlier drproof is still compared.
    fingerprint_scheme: ClassVar[str] = LEGACY_SCHEME

    def fingerprint_like(self, expected: Fingerprint) -> Fingerprint:
        """The fingerprint in ``expected``'s scheme, to compare with it."""
        if expected.scheme == self.fingerprint_scheme:
            return self.fingerprint()
        legacy = self.legacy_fingerprint(expected.scheme)
        if legacy is None:
            from engine.errors import NotComparable

            raise NotComparable(
                f"{self.name} {self.instance!r}: the backup's fingerprint is of scheme {expected.scheme}, which this "
                f"drproof cannot compute (it computes {self.fingerprint_scheme} and the older ones it documents)"
            )
        return legacy

    def legacy_fingerprint(self, scheme: str) -> Fingerprint | None:
        """The fingerprint in an older ``scheme`` this kind still computes, or None."""
        return None

    # What a fingerprint of an older scheme did not record, so a comparison with it cannot
    # say: shown beside its verdict. Scheme -> sentence.
    legacy_blind_spots: ClassVar[dict[str, str]] = {}

    def blind_spot(self, scheme: str) -> str | None:
        """What a comparison in ``scheme`` cannot see, or None when it is the current one."""
        if scheme == self.fingerprint_scheme:
            return None
        return self.legacy_blind_spots.get(scheme, f"the backup's fingerprint is of an older scheme ({scheme})")

    def comparison_notes(self, details: dict[str, Any]) -> list[str]:
        """What a comparison with the set whose component ``details`` these are cannot see, by name.

        Beside ``blind_spot`` (what a whole scheme does not record): what one set says it
        did not keep, e.g. hard links between symbolic links or FIFOs (``HARD_LINKS_NOT_KEPT``),
        so a "match" never hides them.
        """
        from engine.components.livechanges import flags_note, links_note

        return [note for note in (links_note(details), flags_note(details)) if note is not None]

    def _fp(self, parts: dict[str, Any], scheme: str | None = None) -> Fingerprint:
        return Fingerprint.build(self.instance, self.name, parts, scheme or self.fingerprint_scheme)


def copy_into(stream: IO[bytes], sink: IO[bytes]) -> int:
    from engine.streams import copy_stream

    return copy_stream(stream, sink)
