"""Fetching job inputs (S3 objects, http(s) URLs, base64 data) into local files, safely.

Job payloads are untrusted and the worker runs inside a cloud network, so a URL
input is a server-side request forgery vector: ``http://169.254.169.254/`` would
hand the instance's credentials to whoever wrote the job. Every address a host
resolves to must therefore be public unless URL_ALLOWLIST covers it; the
connection then goes to exactly the addresses that were checked (a pinned
resolver), so a DNS answer that changes between check and connect (rebinding)
cannot steer it elsewhere; and redirects are followed by hand, each hop checked
again. Everything is streamed to disk under a size cap, into a temporary name
that only replaces the destination once complete, so a failed fetch leaves no
file behind.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import ipaddress
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from .errors import InputFetchError, StorageError
from .storage import S3Storage, describe_size, parse_s3_uri

if TYPE_CHECKING:
    from .config import Config
    from .jobspec import InputSpec
    from .model_cache import CacheEntry, ModelCache

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 8192
MAX_REDIRECTS = 5
#: Inputs fetched at the same time by :func:`fetch_all`.
FETCH_CONCURRENCY = 8
CHUNK_BYTES = 1024 * 1024
#: Base64 is decoded in slices of this many characters (a multiple of 4), so memory stays flat.
_BASE64_SLICE = 4 * 1024 * 1024
_CONNECT_TIMEOUT_S = 30.0
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_URL_FORBIDDEN_RE = re.compile(r"[\s\x00-\x1f\x7f]")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9_-]{1,63}")
_DATA_URI_RE = re.compile(r"data:[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(?:;[A-Za-z0-9!#$&^_.+-]+=[^;,]*)*"
                          r";base64,", re.IGNORECASE)
_WHITESPACE_RE = re.compile(r"\s+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ALLOWLIST_HINT = "add the host, IP or CIDR to URL_ALLOWLIST to allow it"


# --- syntax -----------------------------------------------------------------------------------

def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a URL input, or ``None``; syntax only, no DNS (the job schema calls it).

    The answer is a predicate to put after the field's name ("input.inputs[0].source must ...").
    It never echoes the URL: a URL may carry a token.
    """
    try:
        parse_url(url)
    except ValueError as exc:
        return str(exc)
    return None


def parse_url(url: str) -> URL:
    """The URL exactly as it will be requested; ``ValueError`` says why it cannot be one (see url_problem).

    Every check the request machinery would make later (IDNA encoding of the
    host, brackets, escapes, empty labels) is made here, so a hostile URL is a
    clear job error, never an exception from deep inside aiohttp or yarl.
    """
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


def _shown(url: URL) -> str:
    """The URL for messages: no query or fragment (presigned URLs carry signatures there)."""
    return str(url.with_query(None).with_fragment(None))[:200]


# --- entry points -------------------------------------------------------------------------------

class ByteBudget:
    """The bytes all of one job's inputs may take together (MAX_JOB_INPUT_BYTES), shared by concurrent fetches.

    Charged chunk by chunk (from S3's worker threads too, hence the lock), so
    a job of many inputs stops as soon as the total passes the limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def take(self, size: int, label: str) -> None:
        with self._lock:
            self._used += size
            used = self._used
        if used > self.limit:
            raise InputFetchError(f"{label}: the job's inputs together are larger than {describe_size(self.limit)} "
                                  "(MAX_JOB_INPUT_BYTES); send fewer or smaller inputs", input=label,
                                  limit_bytes=self.limit)


@dataclass(frozen=True)
class Fetched:
    """What one fetch brought: its size and the version its server reported, or that nothing changed.

    ``etag`` and ``last_modified`` are the validators of a URL's final response
    (what a later conditional request sends); ``not_modified`` means the server
    answered 304 to such a request, and no file was written.
    """

    size: int
    etag: str = ""
    last_modified: str = ""
    not_modified: bool = False


async def fetch_to_file(source: str, destination: Path, *, storage: S3Storage | None, config: Config,
                        label: str, budget: ByteBudget | None = None) -> int:
    """Fetch ``source`` (``s3://``, ``http(s)://``, ``data:`` or bare base64) to ``destination``; bytes written.

    ``label`` names the input in every :class:`InputFetchError` ("input.inputs[2] (photo.png): ...").
    The whole fetch, redirects included, must finish within DOWNLOAD_TIMEOUT_S; ``budget``, if
    given, is charged with every byte.
    """
    fetched = await fetch_version(source, destination, storage=storage, config=config, label=label, budget=budget)
    return fetched.size


async def fetch_version(source: str, destination: Path, *, storage: S3Storage | None, config: Config,
                        label: str, budget: ByteBudget | None = None,
                        conditions: Mapping[str, str] | None = None) -> Fetched:
    """:func:`fetch_to_file`, telling the version fetched; ``conditions`` are HTTP validators.

    For a URL, ``If-None-Match``/``If-Modified-Since`` make it a conditional request (a 304 is
    ``not_modified``, nothing written); for S3, ``If-Match`` refuses an object that changed.
    """
    started = time.monotonic()
    # Next to the destination, so os.replace is atomic; shortened so the name stays within NAME_MAX.
    partial = destination.with_name(f".{destination.name[:200]}.{secrets.token_hex(4)}.partial")
    limit = config.download_timeout_s or None
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        async with asyncio.timeout(limit) as deadline:
            fetched = await _fetch(source, partial, storage=storage, config=config, label=label,
                                   charge=functools.partial(budget.take, label=label) if budget else _free,
                                   conditions=conditions or {})
        if not fetched.not_modified:
            os.replace(partial, destination)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise InputFetchError(f"{label}: the download took longer than {limit:g} s (DOWNLOAD_TIMEOUT_S); use a "
                              "faster source or raise DOWNLOAD_TIMEOUT_S", input=label) from None
    except OSError as exc:  # the local disk: full, read-only, ...
        raise InputFetchError(f"{label}: could not write the download to the worker's disk: "
                              f"{exc.strerror or type(exc).__name__}", input=label) from exc
    finally:
        with contextlib.suppress(OSError):  # a failed cleanup must not hide the error that caused it
            partial.unlink(missing_ok=True)
    outcome = "not modified" if fetched.not_modified else describe_size(fetched.size)
    logger.info("fetched %s: %s in %.2f s", label, outcome, time.monotonic() - started)
    return fetched


def _free(size: int) -> None:
    """The charge of a fetch without a budget."""


@dataclass(frozen=True)
class InputFetch:
    """How one input was fetched: its size, the seconds it took, and, for a cached input, its cache entry
    (``cached``: found in the cache, nothing downloaded)."""

    size: int
    seconds: float
    entry: CacheEntry | None = None
    cached: bool = False


async def fetch_all(items: Sequence[tuple[InputSpec, Path]], *, storage: S3Storage | None,
                    config: Config, cache: ModelCache | None = None) -> list[InputFetch]:
    """Fetch every ``(input, destination)`` pair, 8 at a time; what each fetch did, in order.

    Inputs marked ``cache`` go through ``cache`` (if given) instead of to their destination.
    All or nothing: on the first failure the other fetches are cancelled and
    awaited, every file already fetched is deleted (cache entries are released, not
    deleted), and that first error is raised.
    Together the inputs may take MAX_JOB_INPUT_BYTES and FETCH_TIMEOUT_S.
    """
    semaphore = asyncio.Semaphore(FETCH_CONCURRENCY)
    budget = ByteBudget(config.max_job_input_bytes)
    fetched: list[Path] = []
    entries: list[CacheEntry] = []

    async def fetch_one(spec: InputSpec, destination: Path) -> InputFetch:
        async with semaphore:
            started = time.monotonic()
            if spec.cache and cache is not None:
                entry, downloaded = await cache.obtain(spec, storage=storage, config=config, budget=budget)
                entries.append(entry)
                return InputFetch(entry.size, time.monotonic() - started, entry, cached=not downloaded)
            size = await fetch_to_file(spec.source, destination, storage=storage, config=config,
                                       label=f"{spec.field} ({spec.name})", budget=budget)
        fetched.append(destination)
        return InputFetch(size, time.monotonic() - started)

    tasks = [asyncio.create_task(fetch_one(spec, destination)) for spec, destination in items]
    deadline = asyncio.timeout(config.fetch_timeout_s or None)
    try:
        async with deadline:
            return list(await asyncio.gather(*tasks))
    except BaseException as exc:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for path in fetched:
            path.unlink(missing_ok=True)
        if cache is not None:
            cache.release(entries)
        if isinstance(exc, TimeoutError) and deadline.expired():
            raise InputFetchError(f"fetching the job's {len(items)} inputs took longer than "
                                  f"{config.fetch_timeout_s:g} s (FETCH_TIMEOUT_S); use faster sources or fewer "
                                  "inputs") from None
        raise


async def _fetch(source: str, destination: Path, *, storage: S3Storage | None, config: Config, label: str,
                 charge: Callable[[int], None], conditions: Mapping[str, str]) -> Fetched:
    match = _SCHEME_RE.match(source)
    scheme = match.group(1).lower() if match else ""
    if scheme == "s3":
        size = await _fetch_s3(source, destination, storage=storage, max_bytes=config.input_max_bytes, label=label,
                               charge=charge, if_match=conditions.get("If-Match", ""))
        return Fetched(size)
    if scheme in ("http", "https"):
        return await _fetch_url(source, destination, config=config, label=label, charge=charge,
                                conditions=conditions)
    if scheme == "data":
        source = _data_uri_payload(source, label)
    elif scheme:
        # Only the scheme is echoed: the rest may hold credentials.
        raise InputFetchError(f"{label}: unsupported source scheme {scheme[:20]!r}; use s3://, https://, http:// "
                              "or data:<mime>;base64,", input=label)
    return Fetched(await asyncio.to_thread(decode_base64_to_file, source, destination,
                                           max_bytes=config.input_max_bytes, label=label, charge=charge))


# --- S3 -----------------------------------------------------------------------------------------

async def _fetch_s3(uri: str, destination: Path, *, storage: S3Storage | None, max_bytes: int, label: str,
                    charge: Callable[[int], None], if_match: str) -> int:
    try:
        bucket, key = parse_s3_uri(uri, require_key=True)
    except ValueError as exc:
        raise InputFetchError(f"{label}: the S3 URI {exc}", input=label) from None
    if storage is None:
        raise InputFetchError(f"{label}: {uri} is an S3 input but this worker has no S3 configured; set "
                              "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (and BUCKET_ENDPOINT_URL for "
                              "storage other than AWS S3)", input=label)
    try:
        return await storage.download(bucket, key, destination, max_bytes=max_bytes, on_chunk=charge,
                                      if_match=if_match)
    except StorageError as exc:
        hint = "; raise INPUT_MAX_BYTES to allow larger inputs" if exc.limit_bytes is not None else ""
        raise InputFetchError(f"{label}: {exc.message}{hint}", input=label, limit_bytes=exc.limit_bytes,
                              **exc.details) from exc


# --- base64 -------------------------------------------------------------------------------------

def _data_uri_payload(uri: str, label: str) -> str:
    match = _DATA_URI_RE.match(uri)
    if not match:
        raise InputFetchError(f"{label}: only base64 data URIs are supported (data:<mime>;base64,<data>)",
                              input=label)
    return uri[match.end():]


def decode_base64_to_file(data: str, destination: Path, *, max_bytes: int, label: str,
                          charge: Callable[[int], None] = _free) -> int:
    """Decode standard base64 (whitespace ignored) into ``destination``; bytes written.

    Checked strictly and sized before anything is decoded, so a typo or an
    oversized payload fails at once; decoded in slices so memory stays flat.
    """
    compact = _WHITESPACE_RE.sub("", data)
    if not compact:
        raise InputFetchError(f"{label}: the base64 data is empty", input=label)
    if len(compact) % 4 or not _BASE64_RE.fullmatch(compact):
        raise InputFetchError(f"{label}: the data is not valid base64 (standard alphabet A-Z a-z 0-9 + /, length "
                              "a multiple of 4, padded with '=')", input=label)
    size = len(compact) // 4 * 3 - (len(compact) - len(compact.rstrip("=")))
    if size > max_bytes:
        raise InputFetchError(f"{label}: the base64 data decodes to {describe_size(size)}, over the limit of "
                              f"{describe_size(max_bytes)} (INPUT_MAX_BYTES); pass large files as s3:// or "
                              "https:// inputs", input=label, size=size, limit_bytes=max_bytes)
    charge(size)
    try:
        with destination.open("wb") as out:
            for start in range(0, len(compact), _BASE64_SLICE):
                out.write(base64.b64decode(compact[start:start + _BASE64_SLICE], validate=True))
    except binascii.Error:
        destination.unlink(missing_ok=True)
        raise InputFetchError(f"{label}: the data is not valid base64", input=label) from None
    except OSError as exc:
        destination.unlink(missing_ok=True)
        raise InputFetchError(f"{label}: could not write the data to the worker's disk: "
                              f"{exc.strerror or type(exc).__name__}", input=label) from exc
    return size


# --- URLs: which addresses may be reached ------------------------------------------------------

@dataclass(frozen=True)
class _Allowlist:
    """URL_ALLOWLIST: hosts by name, and IP networks."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def covers(self, host: str, address: IPAddress) -> bool:
        if _normalise_host(host) in self.hosts:
            return True
        candidates = {address, *_embedded_ipv4(address)}
        return any(ip.version == net.version and ip in net for ip in candidates for net in self.networks)


@functools.lru_cache(maxsize=8)
def _parse_allowlist(text: str) -> _Allowlist:
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in text.split(","):
        entry = raw.strip().removeprefix("[").removesuffix("]")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if "/" in entry or ":" in entry:
                raise ValueError(f"URL_ALLOWLIST entry {raw.strip()!r} is not a host name, IP address or CIDR") \
                    from None
            hosts.add(_normalise_host(entry))
    return _Allowlist(frozenset(hosts), tuple(networks))


def _normalise_host(host: str) -> str:
    return host.rstrip(".").lower()


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses hidden in an IPv6 one (mapped, NAT64, 6to4, Teredo): each must pass the checks too."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None]
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [ip for ip in found if ip is not None]


def non_public_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address ("loopback", "private", ...), or ``None``."""
    for embedded in _embedded_ipv4(address):
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
        self._pinned[_normalise_host(host)] = results

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = [r for r in self._pinned.get(_normalise_host(host), [])
                   if family in (socket.AF_UNSPEC, r["family"])]
        if not results:
            raise OSError(f"{host} was not validated for this download")
        return [_result(r["hostname"], r["host"], port, r["family"], r["proto"]) for r in results]

    async def close(self) -> None:
        self._pinned.clear()


async def _check_destination(url: URL, allowlist: _Allowlist, resolver: PinnedResolver, label: str) -> None:
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


# --- URLs: fetching -----------------------------------------------------------------------------

async def _fetch_url(url: str, destination: Path, *, config: Config, label: str,
                     charge: Callable[[int], None], conditions: Mapping[str, str]) -> Fetched:
    try:
        allowlist = _parse_allowlist(config.url_allowlist)
    except ValueError as exc:
        raise InputFetchError(f"{label}: {exc}", input=label) from None
    resolver = PinnedResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT_S)
    # trust_env=False: an HTTP(S)_PROXY from the environment would connect somewhere unchecked.
    try:
        first = parse_url(url)
    except ValueError as exc:
        raise InputFetchError(f"{label}: the URL {exc}", input=label) from None
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        current = first
        for hop in range(MAX_REDIRECTS + 1):
            await _check_destination(current, allowlist, resolver, f"{label}: redirect {hop}" if hop else label)
            try:
                async with session.get(current, allow_redirects=False,
                                       headers={"Accept-Encoding": "identity", **conditions}) as response:
                    if response.status in _REDIRECT_STATUSES:
                        current = _redirect_target(response, label)
                        continue
                    if response.status == 304 and conditions:
                        return Fetched(0, not_modified=True)
                    if not 200 <= response.status < 300:
                        raise _status_error(response, current, label)
                    size = await _stream_to_file(response, destination, max_bytes=config.input_max_bytes,
                                                 label=label, shown=_shown(current), charge=charge)
                    return Fetched(size, etag=response.headers.get("ETag", ""),
                                   last_modified=response.headers.get("Last-Modified", ""))
            except aiohttp.ClientError as exc:
                raise InputFetchError(f"{label}: {_client_error_message(exc, current)}", input=label) from exc
    raise InputFetchError(f"{label}: more than {MAX_REDIRECTS} redirects starting at {_shown(first)}", input=label)


def _status_error(response: aiohttp.ClientResponse, url: URL, label: str) -> InputFetchError:
    reason = f" {response.reason}" if response.reason else ""
    return InputFetchError(f"{label}: GET {_shown(url)} answered HTTP {response.status}{reason} (check that the URL "
                           "is right and has not expired)", input=label, status=response.status)


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
                          shown: str, charge: Callable[[int], None]) -> int:
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
