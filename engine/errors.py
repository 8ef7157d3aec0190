"""The errors drproof shows to users.

Everything a user can cause or fix (bad input, a server that will not start, a damaged
backup) is raised as one of these, with a message that says what to do. Any other
exception escaping drproof is a bug and is shown with its traceback.

    DrproofError                   exit code 2 unless noted
    ├── ConfigError                the scenario or configuration is invalid
    │   └── ValidationFailed       many located problems at once (file:line:col)
    ├── RuntimeStartError          a server or directory of the stack could not be provided
    ├── ComponentError             a component could not be seeded, fingerprinted or restored
    │   └── InsufficientSpace      a restore would leave (or left) its filesystem without its reserve
    ├── FaultError                 a fault could not be injected
    ├── BackupFindings             a backup completed and verified, but falls short (a WAL gap; exit 1)
    ├── RepositoryError            the backup repository could not be read or written
    │   ├── BackupNotFound         no backup set with that id or name
    │   ├── RepositoryLocked       the repository lock was not free in time (names the holder)
    │   └── IntegrityError         stored bytes differ from the manifest (exit 1 in verify)
    │       ├── UntrustedSet       a manifest unsigned, signed by another key, or altered
    │       ├── ChainBroken        the chain of sets says a set is missing, replayed or out of place
    │       ├── WrongKey           the set was encrypted with another key
    │       ├── RestoreMismatch    a staged restore differs from the backup's fingerprint
    │       ├── NotComparable      no fingerprint to prove a restore against
    │       └── PointInTimeUnreachable  no base backup and archived WAL reach the moment (also a BackupNotFound)
    └── Interrupted                the user pressed Ctrl-C or the process got SIGTERM
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DrproofError(Exception):
    """Base of every error meant for a user rather than a developer."""

    exit_code = 2


class ConfigError(DrproofError):
    """Input (scenario, configuration, command line) that drproof cannot accept."""


@dataclass(frozen=True)
class Problem:
    """One located problem in an input file."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ValidationFailed(ConfigError):
    """All the problems found in one input, reported together so users fix them in one go."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found"
        super().__init__(head + ":\n" + "\n".join(str(p) for p in self.problems))


class RuntimeStartError(DrproofError):
    """A runtime could not provide a server or directory the scenario asks for."""


class ComponentError(DrproofError):
    """A component operation (seed, fingerprint, backup, restore, health) failed."""


class InsufficientSpace(ComponentError):
    """A restore refused (or stopped) because its filesystem lacks room for what it writes.

    Raised before anything is written when the set will not fit beside the live data with
    a reserve left for the applications there, or while writing when something else
    filled the disk meanwhile; the staged copy is removed and the live data are as they
    were (``engine.diskspace``).
    """


class FaultError(DrproofError):
    """A fault could not be injected as configured."""


class BackupFindings(DrproofError):
    """A backup set was written, verified and kept, but what it gives falls short of what it should.

    A hole in the WAL archive before a physical backup: the base backup restores, but no
    point-in-time recovery crosses the hole. Exit 1 like a set that failed its own
    verification, because the objective is already lost and someone must be told today,
    not on the restore day; unlike that case, the set is good and stays.
    """

    exit_code = 1


class RepositoryError(DrproofError):
    """The backup repository could not be read or written."""


class BackupNotFound(RepositoryError):
    """No backup set matches the requested id or name."""


class RepositoryLocked(RepositoryError):
    """The repository lock could not be taken in time; the message names who holds it."""


class IntegrityError(RepositoryError):
    """Stored backup data no longer match the checksums in their manifest.

    ``detector`` names the check that refused, so a drill that expects a refusal can
    tell a refusal by the right check from one by another (``restore: refused_by``).
    """

    exit_code = 1
    detector = "artifact"


class UnhealthySet(IntegrityError):
    """A set whose source failed its health check when it was backed up, asked to replace live data."""

    detector = "health at backup"


class UntrustedSet(IntegrityError):
    """A set's manifest is unsigned, signed by a key not trusted here, or altered after signing.

    Raised on a repository that verifies signatures, before anything of the set is used.
    """

    detector = "signature"


class ChainBroken(IntegrityError):
    """The chain of sets leaves it open which set this is or which is newest: a set missing,
    replayed, forked or with its manifest deleted."""

    detector = "chain"


class WrongKey(IntegrityError):
    """The configured key is not the one a backup was encrypted with.

    A refusal like a damaged artifact (exit 1): the backup cannot be read back with what
    the operator holds, and nothing live is touched.
    """

    detector = "encryption-key"


class RestoreMismatch(IntegrityError):
    """What a restore built apart from the live data is not what the backup captured.

    Raised before the staged copy replaces anything, so like a damaged artifact it is a
    refusal (exit 1) that leaves the live data as they were.
    """

    detector = "fingerprint"


class NotComparable(IntegrityError):
    """A backup holds no fingerprint of a component, so no restore of it can be proven.

    A restore that nothing can be compared with would be reported as restored on trust;
    drproof refuses it before touching anything instead.
    """

    detector = "fingerprint"


class PointInTimeUnreachable(IntegrityError, BackupNotFound):
    """No base backup and archived WAL can bring a component to the moment asked for.

    A refusal like a damaged artifact (exit 1), raised before anything live is touched:
    before the first base backup, in the future, past the newest archived WAL, or on a
    timeline no base backup leads to. It is also a ``BackupNotFound`` (no set reaches
    the moment), which it was before review finding 8 made it a refusal.
    """

    detector = "point-in-time"


class Interrupted(DrproofError):
    """The run was interrupted (Ctrl-C or SIGTERM); cleanup has run."""

    exit_code = 130
