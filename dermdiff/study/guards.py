"""What the study app refuses before a request reaches its views, for a server on a shared machine.

- **Host allow-list** (against DNS rebinding: a page on another site whose name is re-pointed at
  127.0.0.1 would otherwise reach the app with the rater's browser): only the loopback names, the host
  the server was started on and the names given with `--allowed-hosts`. Werkzeug's `TRUSTED_HOSTS`
  cannot list an IPv6 address (it cuts each entry at the first `:`), hence this small check.
- **Cross-site requests**: every POST (login, logout, answers) must come from the app's own pages. A
  browser says where a request comes from in `Sec-Fetch-Site` and `Origin`; a request that names another
  site is refused. Session cookies are also `SameSite=Strict`, so a cross-site request carries none.
  Clients that are not browsers (scripts, tests) send neither header and are let through: they cannot
  be made to act for a rater.
- **Guessing access codes**: failed attempts are counted per rater and per address in a sliding
  window; past the limit every attempt is refused with 429 and `Retry-After` until the window clears.
- **Hostile JSON**: bodies are bounded in size (`MAX_CONTENT_LENGTH`) and in nesting depth before they
  are parsed (a 30,000-level `[[[...]]]` would otherwise exhaust the parser's recursion limit).
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
import urllib.parse

from .store import StudyError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 4
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def allowed_hosts(bind_host: str, extra: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """Host names the app answers to: loopback names, the bind address (unless a wildcard) and `extra`."""
    names = set(LOOPBACK_NAMES) | {name.strip().lower().strip("[]") for name in extra if name.strip()}
    if bind_host not in WILDCARD_HOSTS:
        names.add(bind_host.lower().strip("[]"))
    return frozenset(names)


def host_name(host_header: str) -> str | None:
    """The name in a `Host` header (`name`, `name:port`, `[v6]:port`), lower-case, or None if malformed."""
    try:
        parsed = urllib.parse.urlsplit("//" + host_header)
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return parsed.hostname


def cross_site_reason(headers, own_origin: str) -> str | None:
    """Why a request comes from another site, or None if it does not.

    `Sec-Fetch-Site` (sent by current browsers, not settable by pages) decides when present; otherwise
    `Origin`, when present, must be the app's own (`null`, from sandboxed or privacy-stripped pages, is not).
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None:
        return None if site in ("same-origin", "none") else f"Sec-Fetch-Site is {site!r}"
    origin = headers.get("Origin")
    if origin is not None and origin != own_origin:
        return f"Origin {origin!r} is not {own_origin}"
    return None


def json_depth(text: str, limit: int) -> int:
    """Nesting depth of a JSON text (strings ignored), counted only up to `limit + 1`."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def parse_json_body(data: bytes, content_type: str | None) -> object:
    """The JSON value of a request body, refusing (as `StudyError`) a wrong type, bad text or deep nesting."""
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise StudyError(f"the body must be JSON (Content-Type: application/json), got {content_type or 'none'!r}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StudyError("the body must be UTF-8 JSON") from None
    if json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise StudyError(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise StudyError(f"the body is not valid JSON: {error}") from None


class AttemptLimiter:
    """Failed attempts per key (a rater, an address) within a sliding window, safe across server threads.

    Args:
        limit (`int`): failures allowed per key within `window_s`; the next attempt is refused.
        window_s (`float`): the window in seconds.
        clock (*optional*): a monotonic clock (tests pass a fake one).

    Example:
        >>> limiter = AttemptLimiter(limit=2, window_s=60)
        >>> limiter.failed("ana"); limiter.failed("ana"); limiter.retry_after("ana") > 0
        True
    """

    MAX_KEYS = 10_000  # bounded memory under a spray of made-up names: stale keys go first

    def __init__(self, limit: int, window_s: float, clock=time.monotonic):
        if limit < 1 or window_s <= 0:
            raise ValueError(f"limit must be >= 1 and window_s > 0, got {limit}, {window_s}")
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._failures: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> collections.deque:
        failures = self._failures.get(key, collections.deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again (0 when it may now)."""
        with self._lock:
            now = self.clock()
            failures = self._recent(key, now)
            if len(failures) < self.limit:
                return 0.0
            return failures[len(failures) - self.limit] + self.window_s - now

    def failed(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            failures = self._recent(key, now)
            failures.append(now)
            self._failures[key] = failures
            if len(self._failures) > self.MAX_KEYS:
                for stale in [k for k in self._failures if not self._recent(k, now)]:
                    del self._failures[stale]
                for oldest in list(self._failures)[: max(0, len(self._failures) - self.MAX_KEYS)]:
                    del self._failures[oldest]
