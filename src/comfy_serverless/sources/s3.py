"""``s3://bucket/key`` inputs, and the ``s3://`` syntax that output locations share.

The syntax lives here rather than in ``storage.py`` so that the job schema can
check S3 URIs without importing boto3; the download itself goes through the
worker's :class:`~comfy_serverless.storage.S3Storage`, which the fetch is given.
"""

from __future__ import annotations

import re

from ..errors import InputFetchError, StorageError
from .base import Fetched, FetchRequest, ParsedSource, Source

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def parse_s3_uri(uri: object, *, require_key: bool) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; ``ValueError`` says what is wrong.

    ``require_key`` is true for input objects (a key is needed) and false for
    output prefixes (``s3://bucket`` alone is a valid destination).
    """
    if not isinstance(uri, str):
        raise ValueError("must be a string of the form s3://bucket/key")
    if not uri.startswith("s3://"):
        raise ValueError(f"must start with s3:// (got {uri[:40]!r})")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ValueError(f"has an invalid bucket name {bucket!r}")
    if "\x00" in key:
        raise ValueError("must not contain a NUL byte")
    if any(segment in (".", "..") for segment in key.split("/")):
        # Sent raw, they would be resolved by the HTTP layer: s3://b/../other/k reaches bucket "other".
        raise ValueError("must not contain '.' or '..' segments in its key")
    if require_key and not key:
        raise ValueError("names no object key (expected s3://bucket/key)")
    return bucket, key.strip("/") if not require_key else key


def bucket_names(allowlist: str) -> frozenset[str]:
    """S3_BUCKET_ALLOWLIST's buckets (parsed once, with the configuration)."""
    return frozenset(name.strip() for name in allowlist.split(",") if name.strip())


def bucket_problem(bucket: str, allowed: frozenset[str]) -> str | None:
    """Why ``bucket`` may not be used under S3_BUCKET_ALLOWLIST (``allowed``; empty: any bucket), or ``None``."""
    if allowed and bucket not in allowed:
        return f"bucket {bucket!r} is not in S3_BUCKET_ALLOWLIST ({', '.join(sorted(allowed))})"
    return None


class S3Source(Source):
    """An object in S3 or an S3-compatible store, downloaded with the worker's credentials."""

    kind = "s3"
    prefixes = ("s3://",)

    def parse(self, value: str, index: int) -> ParsedSource:
        _, key = parse_s3_uri(value, require_key=True)
        return ParsedSource(self.kind, value, key.rsplit("/", 1)[-1])

    async def fetch(self, source: str, request: FetchRequest) -> Fetched:
        label = request.label
        try:
            bucket, key = parse_s3_uri(source, require_key=True)
        except ValueError as exc:
            raise InputFetchError(f"{label}: the S3 URI {exc}", input=label) from None
        if request.storage is None:
            raise InputFetchError(f"{label}: {source} is an S3 input but this worker has no S3 configured; set "
                                  "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (and BUCKET_ENDPOINT_URL for "
                                  "storage other than AWS S3)", input=label)
        try:
            size = await request.storage.download(bucket, key, request.destination,
                                                  max_bytes=request.config.input_max_bytes, on_chunk=request.charge,
                                                  if_match=request.conditions.get("If-Match", ""))
        except StorageError as exc:
            hint = "; raise INPUT_MAX_BYTES to allow larger inputs" if exc.limit_bytes is not None else ""
            raise InputFetchError(f"{label}: {exc.message}{hint}", input=label, limit_bytes=exc.limit_bytes,
                                  **exc.details) from exc
        return Fetched(size)
