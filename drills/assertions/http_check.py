"""http: the restored service answers: a request on loopback, retried until a deadline.

The address is a URL on this machine (127.0.0.1, localhost, ::1) or an application
component of the run (``target``, the port it was given); drproof never sends a check to
another host. The check passes on the first answer with the expected status whose body
matches ``body`` and whose JSON value at ``json.path`` meets ``json.expect``; it fails
with the last answer (or connection error) when the deadline passes.

The answer judged is the address's own: a redirect is not followed (its 3xx status is
the answer, with where it pointed), and no proxy of the environment is used. Found by
review: urllib followed a 302 to a login page, whose 200 and text met ``status: 200``
and ``body: orders``, so an application that lost its data or its sessions passed; and
a redirect (or an ``http_proxy``) could take the request to another host.
"""

from __future__ import annotations

import functools
import json
import re
import time
from typing import TYPE_CHECKING, Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from drills.assertions.base import Assertion, AssertionParams, DrillState, result
from drills.assertions.expect import (
    COLLECTION,
    ExpectSpec,
    Unjudgeable,
    check_short_form,
    describe,
    judge,
    not_rows,
    shown,
)
from drills.crosscheck import CheckContext
from drills.durations import Duration
from drills.yamlsource import WrittenFloat
from engine.journal import AssertionResult
from engine.redaction import redact

if TYPE_CHECKING:
    import urllib.request

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_BODY = 1 << 20  # bytes of an answer read
SHOWN_BODY = 2000


class JsonValue(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    path: str = Field(min_length=1, description="Dotted path into the JSON answer, list items by index: `orders.0.id`.")
    expect: Annotated[Annotated[str, AfterValidator(check_short_form)] | ExpectSpec, AfterValidator(not_rows)] = Field(
        description="As for `query`, on one value (not `{rows: ...}`)."
    )


class HttpParams(AssertionParams):
    url: str | None = Field(default=None, description="http://127.0.0.1:PORT/... (loopback only).")
    target: str | None = Field(default=None, description="Instead of `url`: an application component, on its port.")
    path: str = Field(default="/", description="With `target`: the path requested.")
    status: int = Field(default=200, ge=100, le=599, description="Expected HTTP status.")
    body: str | None = Field(default=None, description="A regular expression the answer's body must match.")
    json_value: JsonValue | None = Field(default=None, alias="json", description="A value of the JSON answer to judge.")
    timeout: Duration = Field(default=30.0, description="Keep trying until this deadline, e.g. 30s.")
    name: str | None = Field(default=None, description="Name in the report; default: the address.")

    @field_validator("url")
    @classmethod
    def _loopback(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK:
            raise ValueError("a check may only request this machine: http://127.0.0.1:PORT/... (or give `target`)")
        if "@" in parts.netloc:
            # Found by review: `http://user:password@127.0.0.1/` was written whole into the check's
            # id, summary and evidence (results.json, junit.xml, the report), and urllib never sent it.
            raise ValueError(
                "a URL with a user or password (user:password@) is not sent as credentials and would be written "
                "into the report: request an address that needs none, or check it with a `command`"
            )
        return url

    @field_validator("body")
    @classmethod
    def _regex(cls, body: str | None) -> str | None:
        if body is not None:
            try:
                re.compile(body)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return body

    @model_validator(mode="after")
    def _one_address(self) -> HttpParams:
        if (self.url is None) == (self.target is None):
            raise ValueError("give either url or target")
        return self


class HttpCheck(Assertion):
    name: ClassVar[str] = "http"
    Params: ClassVar[type[AssertionParams]] = HttpParams
    description: ClassVar[str] = (
        "A request on loopback (a URL, or an application component's port) retried until a deadline: passes "
        "on the expected status, body and JSON value; fails with the last answer."
    )

    def cross_check(self, ctx: CheckContext, index: int, params: dict[str, Any]) -> None:
        target = params.get("target")
        path = ("assertions", index, self.name, "target")
        ctx.check_component(path, target)
        if isinstance(target, str) and isinstance(ctx.kinds.get(target), str) and not ctx.stateless(target):
            ctx.add(path, f"{target!r} is a {ctx.kinds[target]}, not an application: give a `url` instead")

    def evaluate(self, params: Any, state: DrillState) -> list[AssertionResult]:
        assert isinstance(params, HttpParams)
        url = params.url or _url_of(state, params)
        # What is shown of the address: a token in its query (`?access_token=...`) is masked,
        # as everywhere a run writes (found by review: it was in the id, summary and evidence).
        seen_url = redact(url) if url is not None else None
        rid = f"http[{params.name or params.target or seen_url}]"
        if url is None:
            return [result(rid, self.name, "error", f"{params.target!r} is not an application component of this run")]
        evidence: dict[str, Any] = {"url": seen_url, "expected_status": params.status, "timeout_seconds": params.timeout}
        deadline = time.monotonic() + params.timeout
        attempts = 0
        while True:
            attempts += 1
            ok, seen, measured = _attempt(url, params)
            if ok or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        evidence.update(attempts=attempts, last_answer=seen)
        if not measured:
            # No answer, or no value at json.path: nothing was read, and a typo (a port, a
            # path into the JSON) looks the same; a negative control must not count it as a
            # detection (found by review: a wrong port made an `expect: fail` check pass).
            evidence["measured"] = False
        if ok:
            return [result(rid, self.name, "pass", f"GET {seen_url}: {seen}", evidence=evidence)]
        return [result(rid, self.name, "fail", f"GET {seen_url}: {seen}", evidence=evidence, findings=[seen])]


def _url_of(state: DrillState, params: HttpParams) -> str | None:
    comp = state.components.get(params.target or "")
    port = getattr(comp, "port", None)
    if comp is None or comp.stateful or port is None:
        return None
    return f"http://127.0.0.1:{port}{params.path if params.path.startswith('/') else '/' + params.path}"


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """Built on first use: urllib.request brings http.client and ssl, which validating a scenario does not need."""
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        """Hand a 3xx back as the answer: the page it points to is not the address checked."""

        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    # No ProxyHandler of the environment: a check of 127.0.0.1 must reach 127.0.0.1.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _attempt(url: str, params: HttpParams) -> tuple[bool, str, bool]:
    """(whether this answer meets every expectation, a one-line account of it, whether anything was read)."""
    import urllib.error

    location = None
    try:
        with _opener().open(url, timeout=5) as answer:
            status, body = answer.status, answer.read(MAX_BODY)
    except urllib.error.HTTPError as exc:
        status, body, location = exc.code, exc.read(MAX_BODY), exc.headers.get("Location")
    except (urllib.error.URLError, OSError) as exc:
        return False, f"no answer: {redact(str(getattr(exc, 'reason', exc)))}", False
    # Judged on the answer as sent, shown masked. Found by review: the body was masked before it
    # was judged, so `{"note": "password=x", "orders": 5}` was no JSON any more and failed.
    text = body.decode("utf-8", "replace")
    excerpt = redact(text[:SHOWN_BODY])
    if status != params.status:
        if location is not None and 300 <= status < 400:
            return False, f"status {status}, expected {params.status}: redirected to {redact(location)[:200]!r} (not followed)", True
        return False, f"status {status}, expected {params.status}; body {excerpt[:200]!r}", True
    if params.body is not None and re.search(params.body, text) is None:
        return False, f"status {status}, but the body does not match {params.body!r}: {excerpt[:200]!r}", True
    if params.json_value is not None:
        return _json_value(status, text, params.json_value)
    return True, f"status {status}", True


def _json_value(status: int, text: str, spec: JsonValue) -> tuple[bool, str, bool]:
    try:
        # The number as the body wrote it: a float is not 0.10000000000000001 nor 9007199254740993.5.
        node: Any = json.loads(text, parse_float=WrittenFloat.parse)
        for step in spec.path.split("."):
            node = node[int(step)] if isinstance(node, list) else node[step]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return False, redact(f"status {status}, but no JSON value at {spec.path!r} ({type(exc).__name__}: {exc})"), False
    try:
        held, seen = judge(spec.expect, node)
    except Unjudgeable as exc:  # an array or object judged by its Python text: no value was read
        if isinstance(node, COLLECTION):
            return False, f"status {status}, but {spec.path} is not one value: {exc}; give a path to one item", False
        return False, f"status {status}, but {spec.path} cannot be judged so: {exc}", False
    verdict = "meets" if held else "does not meet"
    return held, redact(f"status {status}, {spec.path} = {shown(seen)} {verdict} '{describe(spec.expect)}'"), True
