"""``https://`` and ``http://`` inputs: the URL's syntax, checked without DNS, and its guarded download.

Every check the request machinery would make later (IDNA encoding of the host,
brackets, escapes, empty labels) is made when the job is parsed, so a hostile
URL is a clear job error, never an exception from deep inside aiohttp or yarl.
Which addresses a URL may reach is decided when it is fetched, by
:mod:`.guarded_http`; that module (and aiohttp with it) is imported by the
first download, not by the job schema.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from yarl import URL

from .base import Fetched, FetchRequest, ParsedSource, Source

MAX_URL_LENGTH = 8192
_URL_FORBIDDEN_RE = re.compile(r"[\s\x00-\x1f\x7f]")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9_-]{1,63}")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a URL input, or ``None``; syntax only, no DNS.

    The answer is a predicate to put after the field's name ("input.inputs[0].source must ...").
    It never echoes the URL: a URL may carry a token.
    """
    try:
        parse_url(url)
    except ValueError as exc:
        return str(exc)
    return None


def parse_url(url: str) -> URL:
    """The URL exactly as it will be requested; ``ValueError`` says why it cannot be one (see url_problem)."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"is longer than {MAX_URL_LENGTH} characters")
    if _URL_FORBIDDEN_RE.search(url):
        raise ValueError("must not contain whitespace or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        has_credentials = parts.username is not None or parts.password is not None
        hostname, _ = parts.hostname, parts.port
    except ValueError:
        raise ValueError("is not a valid URL (malformed host or port)") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL (got scheme {parts.scheme[:20]!r})")
    if has_credentials:
        raise ValueError("must not contain credentials (user:password@); use a presigned or tokenised URL")
    if not hostname:
        raise ValueError("names no host (expected http(s)://host/path)")
    try:
        parsed = URL(url, encoded=url.isascii())  # ASCII is sent byte for byte: a signature covers it
        host = parsed.raw_host or ""
    except ValueError:  # UnicodeError (IDNA) included
        raise ValueError("has a host name that cannot be encoded (invisible or unusual characters, "
                         "or an invalid internationalised name)") from None
    problem = _host_problem(host)
    if problem:
        raise ValueError(f"has a host name that {problem}")
    return parsed


def _host_problem(host: str) -> str | None:
    """Why ``host`` (IDNA-encoded) is neither an IP address nor a DNS name, or ``None``."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = (host[:-1] if host.endswith(".") else host).split(".")
    if len(host) > 253 or not all(labels):
        return "is too long or has an empty label ('..')"
    if not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
        return "may only hold letters, digits, '-' and '_' between dots (at most 63 per label)"
    return None


@dataclass(frozen=True)
class BearerToken:
    """A token for one origin (scheme, host, port): sent there, and to no other host a redirect leads to."""

    origin: URL
    token: str = field(repr=False)

    def headers_for(self, url: URL) -> dict[str, str]:
        """The ``Authorization`` header if ``url`` is on the token's origin, else none."""
        same = (url.scheme, (url.raw_host or "").lower(), url.port) == (
            self.origin.scheme, (self.origin.raw_host or "").lower(), self.origin.port)
        return {"Authorization": f"Bearer {self.token}"} if same else {}


async def fetch_guarded(url: str, request: FetchRequest, *, token: BearerToken | None = None,
                        status_hints: Mapping[int, str] | None = None) -> Fetched:
    """Download ``url`` through the SSRF guard: every hop's addresses checked, and connected to as checked.

    ``token`` goes only to its own origin; ``status_hints`` say what an error status means for this
    kind of source (by default: check the URL).
    """
    from .guarded_http import fetch_url  # aiohttp is loaded by the first download, not by the job schema

    return await fetch_url(url, request, token=token, status_hints=status_hints or {})


class UrlSource(Source):
    """A file on a web server, reachable only at public addresses unless URL_ALLOWLIST says otherwise."""

    kind = "url"
    prefixes = ("https://", "http://")
    revalidates = True

    def parse(self, value: str, index: int) -> ParsedSource:
        parse_url(value)
        return ParsedSource(self.kind, value, unquote(urlsplit(value).path.rsplit("/", 1)[-1]))

    async def fetch(self, source: str, request: FetchRequest) -> Fetched:
        return await fetch_guarded(source, request)
