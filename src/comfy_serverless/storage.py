"""S3 storage for job inputs and outputs (boto3, any S3-compatible endpoint)."""

from __future__ import annotations

import re

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
    if require_key and not key:
        raise ValueError("names no object key (expected s3://bucket/key)")
    return bucket, key.strip("/") if not require_key else key
