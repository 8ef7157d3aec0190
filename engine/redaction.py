"""Keeping secrets out of everything drproof prints, records or reports.

Both the CLI (error messages) and the engine (audit log lines, configuration fingerprints)
must mask the same things, so the rules live here, below both: the engine may not import
the CLI. Deciding by key *name* is deliberate: drproof cannot tell a password from a port
number by looking at the value, but configuration authors name their secrets.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

REDACTED = "***"

# Words that make a key a secret's. Multi-word names (api key, private key, access key) are
# matched as consecutive words; the glued forms are single words of their own.
_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "privatekey",
        "accesskey",
        "credential",
        "auth",
        "authorization",
    }
)
_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key")})
# A word *ending* in one of these is a secret too (PGPASSWORD, clientsecret, bottoken):
# configuration keys glue words together more often than they separate them.
_GLUED = ("password", "passwd", "passphrase", "secret", "token", "apikey", "privatekey", "accesskey", "credential")

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _words(name: str) -> list[str]:
    """``DB_PASSWORD`` → db, password; ``apiKey`` → api, key; ``X-Auth-Token`` → x, auth, token."""
    return [w.lower() for w in _WORD.findall(name)]


def _singular(word: str) -> str:
    """``tokens`` → ``token``, ``keys`` → ``key``; ``access`` and ``address`` stay as they are."""
    stem = word[:-1]
    if word.endswith("s") and (stem in _WORDS or stem == "key" or stem.endswith(_GLUED)):
        return stem
    return word


def is_secret_key(name: str) -> bool:
    """True when a key's name says its value is a secret (case-insensitive, by word part).

    Whole words are compared, so ``author`` or ``tokenizer`` are not secrets, while
    ``db_password``, ``apiKey``, ``AWS_SECRET_ACCESS_KEY`` and ``pgpassword`` are.
    Plurals count (``credentials``, ``tokens``).
    """
    words = [_singular(w) for w in _words(name)]
    if any(w in _WORDS or w.endswith(_GLUED) for w in words):
        return True
    return any(pair in _PAIRS for pair in itertools.pairwise(words))


def redact_value(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of the given secret values replaced by ``***``.

    The guard for free text built from files drproof reads (a parser's error message may
    quote the line it choked on). Longest values go first, so a secret that contains
    another is masked whole.
    """
    for value in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


_ASSIGNMENT = re.compile(r"([A-Za-z0-9_.\-]+)=(\S+)")
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@")


# Credentials recognisable by their own shape, wherever they appear in free text (a
# sign-off note kept a GitHub token in clear, signed into the evidence: found by review).
# Only formats whose prefix makes a false match unlikely.
_SHAPED = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"
    r"|\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}"
    r"|eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})\b",
    re.DOTALL,
)
# An HTTP credential: the scheme's word, then a token with a digit in it (so prose such as
# "Basic authentication" is left alone).
_BEARER = re.compile(r"\b(Bearer|Basic|bearer)[ \t]+(?=[A-Za-z._~+/\-]*[0-9])[A-Za-z0-9._~+/\-]{8,}=*")


def redact(text: str) -> str:
    """Last line of defence: mask anything that looks like a credential in a message.

    Tool and library errors quote connection strings (``password=...``) and URLs
    (``scheme://user:password@host``); people paste tokens into notes. Those values are
    masked before a message reaches a terminal, a webhook, the audit log or evidence.
    """
    text = _SHAPED.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + " " + REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return _ASSIGNMENT.sub(lambda m: m.group(1) + "=" + REDACTED if is_secret_key(m.group(1)) else m.group(0), text)


# Keys that *name* where a secret is kept (``password_env: PGPASSWORD``,
# ``token_file: /run/secrets/t``) hold no secret themselves; masking them would only hide
# which variable or file a reader should look at.
_POINTER_WORDS = frozenset({"env", "file", "path"})


def holds_secret(name: str) -> bool:
    """A key whose *value* is a secret: :func:`is_secret_key`, minus keys naming a variable or file."""
    words = _words(name)
    return is_secret_key(name) and not (words and words[-1] in _POINTER_WORDS)


# ``key: value``, ``key = value``, ``"key": "value",``, ``export KEY=value``: a setting on a
# line of its own, as configuration files and YAML write them. Group 3 is the value.
_SETTING_LINE = re.compile(
    r"""^(?P<head>[ \t]*(?:-[ \t]+)?(?:export[ \t]+)?(?P<q>["']?)(?P<key>[A-Za-z0-9_.\-]+)(?P=q)[ \t]*[:=][ \t]*)"""
    r"""(?P<value>[^\n]*?)(?P<tail>[ \t]*,?[ \t]*)$""",
    re.MULTILINE,
)
_BLOCK_INDICATOR = re.compile(r"[|>][0-9+\-]*")


def mask_settings(text: str) -> str:
    """Mask the value of every ``key: value`` (or ``key = value``) line whose key holds a secret.

    For text that quotes configuration drproof did not parse itself: a scenario's seed
    files inside its YAML, a file shown in an error. Values of any length are masked here,
    since the key says what they are; a YAML block indicator (``password: |``) is left,
    its lines are the caller's to mask.
    """

    def mask(m: re.Match[str]) -> str:
        value = m.group("value")
        if not value or not holds_secret(m.group("key")) or _BLOCK_INDICATOR.fullmatch(value.strip()):
            return m.group(0)
        quote = value[0] if value[0] in "'\"" and len(value) > 1 and value[-1] == value[0] else ""
        return f"{m.group('head')}{quote}{REDACTED}{quote}{m.group('tail')}"

    return _SETTING_LINE.sub(mask, text)


def scrub_text(text: str, secrets: Iterable[str] = (), min_chars: int = 4) -> str:
    """Every rule at once: known secret values (``min_chars`` or longer), secret settings, credentials.

    Short known values are left to the key-based rules: masking a two-letter password
    everywhere would garble every word that contains it.
    """
    text = redact_value(text, [s for s in secrets if len(s) >= min_chars])
    return redact(mask_settings(text))
