"""Configuration: the files a service needs to start (YAML, JSON, INI, env files).

Health is stricter than for volumes: every file must still parse in its format, because
a configuration file that exists but no longer parses takes a service down as surely as
a missing one.

The fingerprint has one part per *setting* as well as one per file, so a fidelity finding
says ``key app.yaml:database.port`` rather than only ``file app.yaml``. Configuration
holds secrets, and drill reports are shared widely, so nothing this component outputs
carries a setting's value: part names carry key paths, digests are hashes, a secret's
digest is a slow salted hash (a plain SHA-256 of a short password is a dictionary lookup
away), and free text built from file contents passes through
:func:`engine.redaction.redact_value`.
"""

from __future__ import annotations

import configparser
import functools
import hashlib
import io
import json
import os
import random
import re
import string
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import yaml
from pydantic import Field, field_validator

from engine.components.base import ArtifactSource, Component, Health, SeedParams
from engine.components.files import (
    DIR,
    FLAGS_NOT_RECORDED,
    LINKS_NOT_RECORDED,
    OWNERS_NOT_RECORDED,
    ROOT_NOT_RECORDED,
    ROOT_PART,
    PartSink,
    expected_root_part,
    extract_tar,
    flagged_root_details,
    give_root_flags,
    room_for,
    root_part,
    tree_parts_into,
    walk_files,
    write_tar,
)
from engine.components.livechanges import MAX_LISTED, LiveChanges, with_changes
from engine.errors import ComponentError
from engine.fingerprint import LEGACY_SCHEME, Fingerprint, Part
from engine.partstream import PartSpool
from engine.redaction import is_secret_key, redact, redact_value
from engine.repository.base import BackupSetWriter

KEY = "key "  # fingerprint part names of settings: "key <relative path>:<dotted.key.path>"
MAX_PARSE_BYTES = 8 << 20  # larger files are data, not settings: whole-file part only
MAX_SETTINGS_NODES = 100_000  # YAML aliases can make a small file a huge (or cyclic) tree
_UNMASKED = "configuration/4"  # the last scheme that named a credential-like key as written
_FLAGGED = ("configuration/6", "configuration/7")  # inode flags recorded
_MASKED = ("configuration/5", *_FLAGGED)  # a credential-like key masked (and hard links recorded)
MIN_SCRUB_CHARS = 4  # shorter "secrets" (flags, TTLs under secret-looking names) would garble text


class ConfigurationParams(SeedParams):
    files: dict[str, str] | None = Field(
        default=None,
        description="File name → content. When absent, a realistic set of app, database and feature-flag files.",
    )

    @field_validator("files")
    @classmethod
    def _inside(cls, files: dict[str, str] | None) -> dict[str, str] | None:
        """Names are relative paths that stay in the directory: the seed writes them as
        the drill's user, and ``/etc/cron.d/x`` or ``../x`` would land outside it."""
        for name in files or {}:
            parts = name.split("/")
            if name.startswith("/") or "\0" in name or any(p in ("", ".", "..") for p in parts):
                raise ValueError(
                    f"file name {name!r} must be a relative path inside the configuration directory "
                    "(no leading '/', no '.', '..' or empty parts)"
                )
        return files


def _default_files(rng: random.Random) -> dict[str, str]:
    workers = rng.randrange(2, 16)
    flags = json.dumps({f"flag_{i}": rng.random() < 0.5 for i in range(12)}, indent=2, sort_keys=True) + "\n"
    # Drawn last so the other files stay as they were for a given random_seed. Real
    # configuration holds secrets; seeding them keeps the redaction checks meaningful.
    alphabet = string.ascii_letters + string.digits
    db_password = "".join(rng.choices(alphabet, k=24))
    session_secret = "".join(rng.choices(alphabet, k=32))
    return {
        "app.yaml": (
            "service: checkout\n"
            f"workers: {workers}\n"
            "listen: 0.0.0.0:8080\n"
            "log_level: info\n"
            f"session_secret: {session_secret}\n"
            "database:\n  host: db.internal\n  port: 5432\n  pool_size: 20\n"
        ),
        "database.ini": (
            "[primary]\nhost = db.internal\nport = 5432\nsslmode = require\n"
            f"user = checkout\npassword = {db_password}\n\n[replica]\nhost = db-ro.internal\n"
        ),
        "feature-flags.json": flags,
        "nginx/site.conf": "server {\n    listen 80;\n    location / { proxy_pass http://127.0.0.1:8080; }\n}\n",
    }


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a document whose merge keys copy too many entries,
    and whose errors never quote a value.

    Why: PyYAML copies every merged entry (``<<: *defaults``) into each mapping *while
    loading*, before drproof's node limit can count the result. Mappings that each merge
    the previous one make n²/2 entries from n lines: a 180 KB file took 23 s and 0.5 GB,
    a 2.4 MB one ran out of memory, in backup, fingerprint and health alike. And a value
    its tag does not fit (``password: !!int hunter2``) made the constructor raise Python's
    own errors: ValueError quoting the value (into health texts), KeyError for ``!!bool``
    and AttributeError for ``!!timestamp`` (tracebacks in backup and health).
    """

    merged = 0

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise yaml.constructor.ConstructorError(
                None, None, f"a value that is not a valid {tag} ({type(exc).__name__})", node.start_mark
            ) from None

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        before = len(node.value)
        super().flatten_mapping(node)  # calls back here for every mapping it merges
        self.merged += max(0, len(node.value) - before)
        if self.merged > MAX_SETTINGS_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"merge keys (<<) copy more than {MAX_SETTINGS_NODES} entries", node.start_mark
            )


def _load_yaml(text: str) -> list[Any]:
    """Every document of ``text``, as ``yaml.safe_load_all`` reads them, with merges bounded."""
    return list(yaml.load_all(text, Loader=_BoundedLoader))


def parse_check(path: Path) -> str | None:
    """None if the file parses in the format its extension names, else the problem.

    Only the first line of a parser's message is kept: the following ones quote the
    offending line of the file, which may hold a secret. A file nested too deeply for
    the parsers (``[[[[…``) is a problem, not a traceback.
    """
    text = path.read_text(encoding="utf-8")
    fmt = _format(path)  # case-blind, as for key parts: a broken APP.YAML was "healthy"
    try:
        if fmt == "yaml":
            _load_yaml(text)
        elif fmt == "json":
            json.loads(text)
        elif path.suffix.lower() == ".ini":
            configparser.ConfigParser().read_string(text)
    except (yaml.YAMLError, ValueError, configparser.Error) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    except RecursionError:
        return "nested too deeply to parse"
    return None


# -- settings: files read as nested keys ------------------------------------------------------


def _format(path: Path | PurePosixPath) -> str | None:
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        return "yaml"
    if suffix == ".json":
        return "json"
    if suffix in {".ini", ".cfg", ".conf"}:
        return "ini"
    if suffix == ".env" or path.name == ".env" or path.name.startswith(".env."):
        return "dotenv"
    return None


_ENV_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*(.*?)\s*")


def _dotenv(text: str) -> dict[str, str] | None:
    """KEY=VALUE lines (``export``, ``#`` comments and quotes allowed); None if any line is not."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_LINE.fullmatch(line)
        if m is None:
            return None
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        settings[m.group(1)] = value
    return settings


def _ini(text: str) -> dict[str, dict[str, str]]:
    # No interpolation and no DEFAULT inheritance: settings as written, each exactly once.
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep the key's case
    parser.read_string(text)
    return {section: dict(parser[section].items()) for section in parser.sections()}


def read_settings(path: Path) -> Any:
    """The file's settings as nested dicts and lists, or None when it has none drproof can read.

    A ``.conf``/``.cfg`` file that is not INI may still be ``KEY=VALUE`` lines; anything
    else (nginx syntax, a file that does not parse) has no settings, only its file part.
    """
    fmt = _format(path)
    if fmt is None or path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_PARSE_BYTES:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return _parse_bytes(fmt, data)


def _parse_bytes(fmt: str, data: bytes) -> Any:
    """``data`` read as text the way ``Path.read_text`` reads it (strict UTF-8, universal newlines), parsed."""
    try:
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8").read()
    except UnicodeDecodeError:
        return None
    return _parse(fmt, text)


def _parse(fmt: str, text: str) -> Any:
    try:
        if fmt == "yaml":
            docs = _load_yaml(text)
            return docs[0] if len(docs) == 1 else docs or None
        if fmt == "json":
            return json.loads(text)
        if fmt == "ini":
            try:
                return _ini(text)
            except configparser.MissingSectionHeaderError:
                return _dotenv(text)
        return _dotenv(text)
    except (yaml.YAMLError, ValueError, configparser.Error, RecursionError):
        return None


_BARE = re.compile(r"[^\s.\[\]\"'\\]+")


def _segment(key: object) -> str:
    """``name``, or ``["a.b"]`` / ``[1]`` when a bare key would read like another path."""
    if isinstance(key, str) and _BARE.fullmatch(key):
        return key
    return "[" + json.dumps(key, default=str, ensure_ascii=False) + "]"


def _join(path: tuple[str, ...]) -> str:
    return "".join(seg if i == 0 or seg.startswith("[") else "." + seg for i, seg in enumerate(path))


def _secret_value(value: object) -> bool:
    """A URL or connection string with a password in it is a secret whatever its key is called."""
    return isinstance(value, str) and redact(value) != value


def flatten(doc: Any, masked: bool = True) -> dict[str, tuple[Any, bool]] | None:
    """Dotted key path → (value, is secret), or None when two paths would read the same.

    Everything under a secret-looking key is one secret leaf: its child keys may be
    secrets themselves (``api_keys: {sk-live-…: billing}``), so they are not named. A key
    that is a credential itself (a mapping keyed by DSN or by ``https://user:pw@host``) is
    named as :func:`~engine.redaction.redact` masks it: part names reach every report.
    Two such keys that differ only in what is masked read the same: a clash, as above.
    ``masked=False`` names them as written, as schemes up to ``configuration/4`` did.
    """
    out: dict[str, tuple[Any, bool]] = {}
    clash = False

    def leaf(path: tuple[str, ...], value: Any, secret: bool) -> None:
        nonlocal clash
        name = _join(path)
        clash = clash or name in out
        out[name] = (value, secret)

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                if masked and _secret_value(k):  # a key that is a credential itself: shown masked, hashed with its value
                    leaf((*path, _segment(redact(k))), {k: v}, True)
                    continue
                child = (*path, _segment(k))
                if isinstance(k, str) and is_secret_key(k):
                    leaf(child, v, True)
                else:
                    walk(v, child)
        elif isinstance(value, list) and value:
            for i, v in enumerate(value):
                walk(v, (*path, f"[{i}]"))
        elif path:  # a file that is one bare scalar has no keys
            leaf(path, value, _secret_value(value))

    walk(doc, ())
    return None if clash else out


def _canonical(value: Any) -> str:
    """A stable text form that tells types apart (5432 and "5432" are different settings)."""
    if isinstance(value, dict):
        items = sorted((_canonical(k), _canonical(v)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, set | frozenset):
        return "set[" + ",".join(sorted(_canonical(v) for v in value)) + "]"
    return f"{type(value).__name__}:{json.dumps(value, default=str, ensure_ascii=False)}"


@functools.lru_cache(maxsize=4096)
def _slow_digest(salt: bytes, canonical: bytes) -> str:
    # scrypt as for passphrases in engine/crypto.py, lighter (N=2^14): this runs on every
    # fingerprint, but still makes guessing a short password from a report expensive.
    return hashlib.scrypt(canonical, salt=salt, n=2**14, r=8, p=1, dklen=32).hex()


def _digest(rel: str, path: str, value: Any, secret: bool) -> str:
    canonical = _canonical(value).encode("utf-8", "surrogateescape")
    # Salted per file and key: equal values in two places give unrelated digests.
    salt = hashlib.sha256(f"drproof configuration setting\0{rel}\0{path}".encode("utf-8", "surrogateescape"))
    if secret:
        return _slow_digest(salt.digest(), canonical)
    return hashlib.sha256(salt.digest() + canonical).hexdigest()


def _bounded(doc: Any) -> bool:
    """False for a tree of more than MAX_SETTINGS_NODES nodes, which includes every cyclic one."""
    stack, seen = [doc], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_SETTINGS_NODES:
            return False
        if isinstance(value, dict):
            stack += [*value.keys(), *value.values()]
        elif isinstance(value, list | tuple | set | frozenset):
            stack += list(value)
    return True


def _settings(path: Path, masked: bool = True) -> dict[str, tuple[Any, bool]] | None:
    return _flat(read_settings(path), masked)


def _flat(doc: Any, masked: bool = True) -> dict[str, tuple[Any, bool]] | None:
    if doc is None or not _bounded(doc):
        return None
    try:
        return flatten(doc, masked)
    except RecursionError:
        return None


def key_parts_into(root: Path, sink: PartSink, masked: bool = True) -> None:
    """One ``key <file>:<path>`` part per setting of every file drproof can read as settings
    (``masked``: see :func:`flatten`)."""
    for f in walk_files(root):
        _file_keys_into(f.relative_to(root).as_posix(), _settings(f, masked), sink)


def _settings_parts(totals: dict[str, int]) -> int:
    """The parts of a fingerprint that are settings, not files (one ``key`` part, count 1, each):
    no inode of the restored tree (``room_for``)."""
    return totals.get("keys", 0)


def _file_keys_into(rel: str, settings: dict[str, tuple[Any, bool]] | None, sink: PartSink) -> None:
    if not settings:
        return
    try:
        digests = {path: _digest(rel, path, value, secret) for path, (value, secret) in settings.items()}
    except RecursionError:  # nested too deeply to hash key by key: the file part still covers it
        return
    for path, d in digests.items():
        sink[f"{KEY}{rel}:{path}"] = Part(digest=d, count=1, unit="keys")


class _ArchivedKeys:
    """Key parts taken from the bytes a backup archives (a :class:`~engine.components.files.ContentTap`).

    Why not from the files: a second read of a live file (an app rewriting its state
    file) could see other bytes than the archive holds, and the set's fingerprint then
    refused every restore of it. The restore reads the staged files, so the rules are
    the same as ``read_settings``'s: a file of a settings format of at most
    ``MAX_PARSE_BYTES`` (what ``limit`` asks of the archive).
    """

    limit = MAX_PARSE_BYTES

    def __init__(self, sink: PartSink) -> None:
        self._sink = sink

    def take(self, rel: str, data: bytes) -> None:
        fmt = _format(PurePosixPath(rel))
        if fmt is not None:
            _file_keys_into(rel, _flat(_parse_bytes(fmt, data)), self._sink)


def key_parts(root: Path) -> dict[str, Part]:
    parts: dict[str, Part] = {}
    key_parts_into(root, parts)
    return parts


def secret_keys(root: Path) -> list[str]:
    """``<file>:<path>`` of every setting treated as a secret."""
    names = []
    for f in walk_files(root):
        rel = f.relative_to(root).as_posix()
        names += [f"{rel}:{path}" for path, (_, secret) in (_settings(f) or {}).items() if secret]
    return sorted(names)


_LOOSE_ASSIGNMENT = re.compile(r"""\s*["']?([A-Za-z0-9_.\-]+)["']?\s*[:=]\s*["']?(.*?)["']?\s*,?\s*""")
_YAML_TAG = re.compile(r"""!\S*\s+["']?(.*?)["']?""")  # `password: !!int hunter2`: the value after the tag


def _loose_secrets(line: str) -> list[str]:
    """The value of a secret-looking ``key: value`` line of a file that did not parse; with
    a YAML tag in front (``!!str x``), also the value without it, as a parser's error quotes it."""
    m = _LOOSE_ASSIGNMENT.fullmatch(line)
    if m is None or not is_secret_key(m.group(1)) or not m.group(2):
        return []
    tagged = _YAML_TAG.fullmatch(m.group(2))
    return [m.group(2), tagged.group(1)] if tagged else [m.group(2)]


def _scalars(value: Any) -> list[str]:
    """Every string in ``value``, keys included; a loop, because a secret's value may nest
    almost as deep as the parser allowed and this runs deeper in the stack than the parser."""
    found, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack += [*v.keys(), *v.values()]
        elif isinstance(v, list | tuple | set | frozenset):
            stack += list(v)
        elif isinstance(v, str):
            found.append(v)
    return found


def secret_values(root: Path) -> set[str]:
    """The values of secret-looking keys in the files under ``root``, to mask in free text.

    Files that parse give exact values; files that do not (the ones whose parse errors end
    up in health texts) are read line by line for ``key: value`` and ``key = value``.
    """
    found: set[str] = set()
    for f in walk_files(root):
        settings = _settings(f)
        if settings:
            for value, secret in settings.values():
                if secret:
                    found.update(_scalars(value))
            continue
        try:
            if f.is_symlink() or not f.is_file() or f.stat().st_size > MAX_PARSE_BYTES:
                continue
            lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            found.update(_loose_secrets(line))
    return {v for v in found if len(v) >= MIN_SCRUB_CHARS}


def secrets_in_text(name: str, text: str) -> set[str]:
    """The secret values of a file not on disk (a scenario's ``seed.files`` entry), by the same rules.

    Why here: a scenario quotes the files it seeds, and whatever echoes the scenario must
    mask exactly what this component would never show. All lengths are returned; the
    caller decides which are long enough to mask by value.
    """
    fmt = _format(PurePosixPath(name))
    doc = _parse(fmt, text) if fmt is not None and len(text) <= MAX_PARSE_BYTES else None
    found: set[str] = set()
    if doc is not None and _bounded(doc):
        try:
            settings = flatten(doc) or {}
        except RecursionError:
            settings = {}
        for value, secret in settings.values():
            if secret:
                found.update(_scalars(value))
    for line in text.splitlines():
        found.update(_loose_secrets(line))
    return found


OUTSIDE_KEY = "links_outside"  # backup details: symbolic links that leave the configuration directory
OUTSIDE_NOTE = (
    "{count} symbolic link(s) point outside the configuration directory (e.g. {first}): the backup holds the "
    "links, not what they point to, so that content is neither restored nor compared"
)


def links_outside(root: Path) -> list[str]:
    """``name -> target`` of every symbolic link under ``root`` that resolves outside it.

    Why: a configuration file that is a link to ``/srv/shared/app.yaml`` is archived as
    the link. Health reads through it, fidelity compares the link's target text: the
    shared file can be lost or rewritten and a restore still compares "match".
    """
    base = os.path.realpath(root)
    found = []
    for f in walk_files(root):
        if f.is_symlink() and os.path.commonpath([base, os.path.realpath(f)]) != base:
            found.append(f"{f.relative_to(root).as_posix()} -> {os.readlink(f)}")
    return sorted(found)


def _with_outside(details: dict[str, Any], root: Path) -> dict[str, Any]:
    outside = links_outside(root)
    if not outside:
        return details
    return {**details, OUTSIDE_KEY: {"count": len(outside), "entries": outside[:MAX_LISTED]}}


class ConfigurationComponent(Component):
    name: ClassVar[str] = "configuration"
    server: ClassVar[str | None] = "directory"
    Params: ClassVar[type[SeedParams]] = ConfigurationParams
    description: ClassVar[str] = "Configuration files that must exist and parse, backed up as a streamed tar."

    params: ConfigurationParams
    path: Path

    def provision(self) -> None:
        self.path = self.runtime.directory(self.instance)

    def seed(self) -> dict[str, Any]:
        files = self.params.files or _default_files(random.Random(self.params.random_seed))
        for rel, content in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        # Names only: which settings count as secrets (hashed slowly, never shown), not their values.
        return {"files": sorted(files), "secret_keys": secret_keys(self.path)}

    def files(self) -> list[Path]:
        return [f for f in walk_files(self.path) if f.is_file()]

    # Scheme 4 adds which names share a file (hard links); scheme 3 each entry's owner;
    # scheme 2 a part per directory (empty ones and modes); scheme 1 had files only.
    # Scheme 5 masks a key that is a credential itself (see ``flatten``); scheme 4 named it
    # as written. Scheme 6 adds inode flags (chattr +i on a pinned file: engine.components.fflags).
    # Scheme 7 adds the directory itself (``dir .``: its owner and inode flags).
    fingerprint_scheme: ClassVar[str] = "configuration/7"
    legacy_blind_spots: ClassVar[dict[str, str]] = {
        LEGACY_SCHEME: "the backup's fingerprint (scheme 1, from an earlier drproof) recorded files only: empty "
        "directories, directory modes, owners, extended attributes (ACLs, capabilities, user.*) and hard links "
        "are not compared; " + ROOT_NOT_RECORDED,
        "configuration/2": f"{OWNERS_NOT_RECORDED}; {ROOT_NOT_RECORDED}",
        "configuration/3": f"{LINKS_NOT_RECORDED}; {ROOT_NOT_RECORDED}",
        "configuration/5": f"{FLAGS_NOT_RECORDED}; {ROOT_NOT_RECORDED}",
        "configuration/6": ROOT_NOT_RECORDED,
    }

    def blind_spot(self, scheme: str) -> str | None:
        """Scheme 4 as scheme 5: it differs from 5 in how a few parts are named, not in what is compared."""
        return super().blind_spot("configuration/5" if scheme == _UNMASKED else scheme)

    def _spool(self, scheme: str | None = None) -> PartSpool:
        """Where the parts of the fingerprint in ``scheme`` go (1 had no directory parts, 2 no owners, 3 no links)."""
        scheme = scheme or self.fingerprint_scheme
        owners = scheme not in (LEGACY_SCHEME, "configuration/2")
        links = scheme in (*_MASKED, _UNMASKED)
        return PartSpool(
            exclude=(DIR,) if scheme == LEGACY_SCHEME else (),
            owners=owners,
            links=links,
            fflags=scheme in _FLAGGED,
        )

    def _taken(self, spool: PartSpool, root: Path, scheme: str | None = None) -> Fingerprint:
        # File parts catch every byte (comments, whitespace, modes); key parts name the setting.
        scheme = scheme or self.fingerprint_scheme
        key_parts_into(root, spool, masked=scheme in _MASKED)
        return spool.fingerprint(self.instance, self.name, scheme)

    def backup_fingerprinted(
        self, writer: BackupSetWriter, incremental: tuple[Fingerprint, ArtifactSource] | None = None
    ) -> tuple[dict[str, Any], Fingerprint]:
        """One read of the tree: file and key parts both come from the bytes archived.

        The default (fingerprint, then archive) read each file twice; a file rewritten in
        between gave a verified set whose every restore was refused (6 of 10 sets with an
        app rewriting its state file every 0.5 ms).
        """
        if incremental is not None:  # not a kind with incremental backups: the base says so
            return super().backup_fingerprinted(writer, incremental)
        spool, changes = self._spool(), LiveChanges()
        spool[ROOT_PART] = root_part(self.path)
        with writer.artifact(self.instance, "config.tar") as sink:
            entries = write_tar(self.path, sink, parts=spool, changes=changes, tap=_ArchivedKeys(spool))
        fp = spool.fingerprint(self.instance, self.name, self.fingerprint_scheme)
        root = flagged_root_details(self.path, changes)  # its flags given after the swap (``give_root_flags``)
        details = {"entries": entries, "method": "streamed tar", "root": root}
        return with_changes(_with_outside(details, self.path), changes), fp

    def fingerprint(self) -> Fingerprint:
        spool = self._spool()
        spool[ROOT_PART] = root_part(self.path)
        tree_parts_into(self.path, spool)
        return self._taken(spool, self.path)

    def legacy_fingerprint(self, scheme: str) -> Fingerprint | None:
        if scheme not in self.legacy_blind_spots and scheme != _UNMASKED:
            return None
        spool = self._spool(scheme)
        tree_parts_into(self.path, spool)
        return self._taken(spool, self.path, scheme)

    def comparison_notes(self, details: dict[str, Any]) -> list[str]:
        """And the symbolic links the set holds that point outside the directory (``links_outside``)."""
        notes = super().comparison_notes(details)
        found = details.get(OUTSIDE_KEY)
        if isinstance(found, dict) and found.get("count"):
            entries = [str(e) for e in found.get("entries", [])]
            notes.append(OUTSIDE_NOTE.format(count=int(found["count"]), first=entries[0] if entries else "?"))
        return notes

    # A canary is a file at the root (engine.canary): part of the tree, so it is backed up,
    # fingerprinted and restored like any other file.
    supports_canary: ClassVar[bool] = True

    def plant_canary(self, value: str) -> str:
        from engine.canary import plant_file

        return plant_file(self.path, value)

    def read_canary(self) -> str | None:
        from engine.canary import read_file

        return read_file(self.path)

    proves_while_staging: ClassVar[bool] = True

    def backup(self, writer: BackupSetWriter) -> dict[str, Any]:
        with writer.artifact(self.instance, "config.tar") as sink:
            entries = write_tar(self.path, sink)
        changes = LiveChanges()  # only whether the directory's own flags could be read
        root = flagged_root_details(self.path, changes)
        details = {"entries": entries, "method": "streamed tar", "root": root}
        return with_changes(_with_outside(details, self.path), changes)

    def restore(self, source: ArtifactSource) -> None:
        scheme = source.fingerprint.scheme if source.fingerprint is not None else None
        spool = self._spool(scheme)

        def check(staging: Path) -> None:
            recorded = expected_root_part(source.fingerprint)
            if recorded is not None:  # given after the swap (``give_root_flags``): the fidelity check reads it
                spool[ROOT_PART] = recorded
            fp = self._taken(spool, staging, scheme)
            self.prove_restored(source.fingerprint, fp, f"staged in {staging}")

        root = source.details.get("root")
        room = room_for([source], "config.tar", other_parts=_settings_parts)
        extract_tar(functools.partial(source.open, "config.tar"), self.path, check, spool, root, room)
        give_root_flags(self.path, root, f"configuration {self.instance!r}")

    def health(self) -> Health:
        try:
            files = self.files()
        except ComponentError as exc:  # a directory that cannot be listed: not healthy, and why
            return Health(ok=False, detail=str(exc))
        if not files:
            return Health(ok=False, detail="no configuration files")
        problems = []
        for f in files:
            try:
                issue = parse_check(f)
            except (OSError, UnicodeDecodeError) as exc:
                issue = str(exc)
            if issue:
                problems.append(f"{f.relative_to(self.path)}: {issue}")
        if problems:
            detail = redact_value(redact("; ".join(problems)), secret_values(self.path))
            return Health(ok=False, detail=detail)
        return Health(ok=True, detail=f"{len(files)} files present and parse")
