"""The SSRF-guarded HTTP fetcher behind URL inputs (and any source that resolves to a URL).

Job payloads are untrusted and the worker runs inside a cloud network, so a URL
input is a server-side request forgery vector: ``http://169.254.169.254/`` would
hand the instance's credentials to whoever wrote the job. Every address a host
resolves to must therefore be public unless URL_ALLOWLIST covers it; the
connection then goes to exactly the addresses that were checked (a pinned
resolver), so a DNS answer that changes between check and connect (rebinding)
cannot steer it elsewhere; and redirects are followed by hand, each hop checked
again. The body is streamed to disk under a size cap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ..addresses import IPAddress, UrlAllowlist, embedded_ipv4, normalise_host
from ..errors import InputFetchError
from ..files import describe_size
from .base import Charge, Fetched, FetchRequest
from .url import BearerToken, parse_url

MAX_REDIRECTS = 5
CHUNK_BYTES = 1024 * 1024
_CONNECT_TIMEOUT_S = 30.0
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_ALLOWLIST_HINT = "add the host, IP or CIDR to URL_ALLOWLIST to allow it"
_STATUS_HINT = "check that the URL is right and has not expired"


def _shown(url: URL) -> str:
    """The URL for messages: no query or fragment (presigned URLs carry signatures there)."""
    return str(url.with_query(None).with_fragment(None))[:200]


# --- which addresses may be reached ------------------------------------------------------------

def non_public_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address ("loopback", "private", ...), or ``None``."""
    for embedded in embedded_ipv4(address):
        reason = non_public_reason(embedded)
        if reason:
            return f"{reason}, as {embedded} embedded in IPv6"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return None  # ::ffff:a.b.c.d sits in ::/8 ("reserved"), but only the mapped address matters
    checks: list[tuple[bool, str]] = [
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local, where cloud metadata services live"),
        (address.is_multicast, "multicast"),
        (address.version == 4 and address in _CGNAT, "carrier-grade NAT"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
        (not address.is_global, "non-global"),
    ]
    return next((reason for failed, reason in checks if failed), None)


async def _resolve(host: str, port: int, label: str) -> list[ResolveResult]:
    """Every address ``host`` resolves to, as aiohttp wants them (getaddrinfo runs in the loop's executor)."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [_result(host, host, port, family, 0)]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "invalid host name"
        raise InputFetchError(f"{label}: host {host} could not be resolved ({reason})", input=label) from None
    results: dict[str, ResolveResult] = {}
    for family, _, proto, _, sockaddr in infos:
        results.setdefault(str(sockaddr[0]), _result(host, str(sockaddr[0]), port, family, proto))
    return list(results.values())


def _result(host: str, address: str, port: int, family: int, proto: int) -> ResolveResult:
    return ResolveResult(hostname=host, host=address, port=port, family=family, proto=proto,
                         flags=socket.AI_NUMERICHOST)


class PinnedResolver(AbstractResolver):
    """Answers only with addresses that were validated, so the connection goes exactly there.

    aiohttp still sends the host name as Host header and TLS SNI (and verifies the
    certificate against it); only the address it connects to is fixed. A host
    that was not pinned does not resolve at all.
    """

    def __init__(self) -> None:
        self._pinned: dict[str, list[ResolveResult]] = {}

    def pin(self, host: str, results: list[ResolveResult]) -> None:
        self._pinned[normalise_host(host)] = results

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = [r for r in self._pinned.get(normalise_host(host), [])
                   if family in (socket.AF_UNSPEC, r["family"])]
        if not results:
            raise OSError(f"{host} was not validated for this download")
        return [_result(r["hostname"], r["host"], port, r["family"], r["proto"]) for r in results]

    async def close(self) -> None:
        self._pinned.clear()


async def _check_destination(url: URL, allowlist: UrlAllowlist, resolver: PinnedResolver, label: str) -> None:
    """Refuse ``url`` (from :func:`parse_url`) unless every address of its host is public or allowlisted;
    pin those addresses."""
    host = url.raw_host or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    results = await _resolve(host, port, label)
    for result in results:
        address = ipaddress.ip_address(result["host"])
        reason = non_public_reason(address)
        if reason and not allowlist.covers(host, address):
            where = host if host == result["host"] else f"{host} ({address})"
            raise InputFetchError(f"{label}: refused to fetch {_shown(url)}: {where} is not a public address "
                                  f"({reason}); inputs may only come from public addresses ({_ALLOWLIST_HINT})",
                                  input=label)
    resolver.pin(host, results)


# --- fetching -----------------------------------------------------------------------------------

async def fetch_url(url: str, request: FetchRequest, *, token: BearerToken | None,
                    status_hints: Mapping[int, str]) -> Fetched:
    """Download ``url`` to ``request.destination``, following redirects by hand, each hop checked and pinned.

    With ``request.conditions`` (``If-None-Match``/``If-Modified-Since``) a 304 is ``not_modified``.
    ``token`` is sent on the hops to its origin only; ``status_hints`` replace the default advice of an
    error status.
    """
    label = request.label
    allowlist = request.config.parsed_url_allowlist
    try:
        first = parse_url(url)
    except ValueError as exc:
        raise InputFetchError(f"{label}: the URL {exc}", input=label) from None
    resolver = PinnedResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT_S)
    # trust_env=False: an HTTP(S)_PROXY from the environment would connect somewhere unchecked.
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        current = first
        for hop in range(MAX_REDIRECTS + 1):
            await _check_destination(current, allowlist, resolver, f"{label}: redirect {hop}" if hop else label)
            try:
                headers = {"Accept-Encoding": "identity", **request.conditions,
                           **(token.headers_for(current) if token else {})}
                async with session.get(current, allow_redirects=False, headers=headers) as response:
                    if response.status in _REDIRECT_STATUSES:
                        current = _redirect_target(response, label)
                        continue
                    if response.status == 304 and request.conditions:
                        return Fetched(0, not_modified=True)
                    if not 200 <= response.status < 300:
                        raise _status_error(response, current, label,
                                            status_hints.get(response.status, _STATUS_HINT))
                    size = await _stream_to_file(response, request.destination,
                                                 max_bytes=request.config.input_max_bytes, label=label,
                                                 shown=_shown(current), charge=request.charge)
                    return Fetched(size, etag=response.headers.get("ETag", ""),
                                   last_modified=response.headers.get("Last-Modified", ""))
            except aiohttp.ClientError as exc:
                raise InputFetchError(f"{label}: {_client_error_message(exc, current)}", input=label) from exc
    raise InputFetchError(f"{label}: more than {MAX_REDIRECTS} redirects starting at {_shown(first)}", input=label)


def _status_error(response: aiohttp.ClientResponse, url: URL, label: str, hint: str) -> InputFetchError:
    reason = f" {response.reason}" if response.reason else ""
    return InputFetchError(f"{label}: GET {_shown(url)} answered HTTP {response.status}{reason} ({hint})",
                           input=label, status=response.status)


def _redirect_target(response: aiohttp.ClientResponse, label: str) -> URL:
    """Where a redirect points, checked like the job's own URL: a malformed target is a job error."""
    location = response.headers.get("Location")
    if not location:
        raise InputFetchError(f"{label}: HTTP {response.status} redirect without a Location header", input=label)
    try:
        target = str(response.url.join(URL(location, encoded=location.isascii())))
    except ValueError:  # what yarl raises for an unclosed bracket, a backslash, a bad escape
        raise InputFetchError(f"{label}: HTTP {response.status} redirect to a malformed URL", input=label) from None
    try:
        return parse_url(target)
    except ValueError as exc:
        raise InputFetchError(f"{label}: HTTP {response.status} redirect to a URL that {exc}", input=label) from None


async def _stream_to_file(response: aiohttp.ClientResponse, destination: Path, *, max_bytes: int, label: str,
                          shown: str, charge: Charge) -> int:
    """Copy the body to disk chunk by chunk, enforcing the cap on the announced and on the actual size."""
    too_large = (f"{label}: {shown} is larger than the limit of {describe_size(max_bytes)} (INPUT_MAX_BYTES); "
                 "raise INPUT_MAX_BYTES to allow larger inputs")
    if response.content_length is not None and response.content_length > max_bytes:
        raise InputFetchError(f"{too_large} (Content-Length: {response.content_length})", input=label,
                              size=response.content_length, limit_bytes=max_bytes)
    written = 0
    out = await asyncio.to_thread(destination.open, "wb")
    try:
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            written += len(chunk)
            if written > max_bytes:
                raise InputFetchError(too_large, input=label, limit_bytes=max_bytes)
            charge(len(chunk))
            await asyncio.to_thread(out.write, chunk)
    finally:
        out.close()
    return written


def _client_error_message(exc: aiohttp.ClientError, url: URL) -> str:
    """aiohttp's failure in words; its own text is not used, as it may contain the full URL."""
    host = url.raw_host
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"the TLS certificate of {host} could not be verified"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return f"could not connect to {host} port {exc.port} ({reason})"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return f"{host} did not answer in time"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the download from {_shown(url)} broke off before it was complete"
    return f"fetching {_shown(url)} failed ({type(exc).__name__})"
