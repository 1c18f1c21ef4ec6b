"""S3 storage for job inputs and outputs (boto3, any S3-compatible endpoint).

Written against the failure modes of RunPod's ``rp_upload`` and the peer
workers: a partial configuration (an endpoint without keys, one key without the
other) fails at startup naming the missing variable (``Config`` checks it)
instead of silently writing "uploads" to a local folder; objects are streamed to and from disk in worker
threads instead of being buffered whole in memory; custom endpoints get
path-style addressing, SigV4 and a region, so presigned URLs work on MinIO and
R2; and every error names the object and the fix, never a credential.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .errors import StorageError
from .files import describe_size

if TYPE_CHECKING:
    from botocore.client import BaseClient

    from .config import Config

logger = logging.getLogger(__name__)

#: Objects are copied to disk in pieces of this size, so a 2 GB model never sits in memory.
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
#: Uploads above this size go in parts, uploaded concurrently.
MULTIPART_THRESHOLD_BYTES = 8 * 1024**2
_DEFAULT_ENDPOINT_REGION = "us-east-1"
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                           "InvalidToken", "ExpiredToken", "AllAccessDisabled"})
_CREDENTIALS_HINT = ("check BUCKET_ACCESS_KEY_ID / BUCKET_SECRET_ACCESS_KEY (or the AWS credentials) and that they "
                     "grant access to this bucket")
_CHAIN_HINT = ("set BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (plus BUCKET_ENDPOINT_URL for storage other "
               "than AWS S3), or provide AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
               "or an instance role)")


@dataclass(frozen=True)
class ObjectVersion:
    """What S3 reports about an object without sending it: its ETag, VersionId (versioned buckets) and size."""

    etag: str
    version_id: str
    size: int

    @property
    def version(self) -> str:
        """The version that identifies this content: the VersionId where the bucket has one, else the ETag."""
        return self.version_id or self.etag


class S3Storage:
    """One boto3 S3 client (thread-safe, created once) and the transfers the worker needs.

    Transfers run in worker threads; the event loop only awaits them.
    """

    def __init__(self, client: BaseClient, *, secrets: Sequence[str] = ()) -> None:
        self._client = client
        self._secrets = tuple(secrets)
        self._transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD_BYTES,
                                        multipart_chunksize=MULTIPART_THRESHOLD_BYTES, max_concurrency=8)

    @classmethod
    def from_config(cls, config: Config) -> S3Storage | None:
        """The storage the configuration describes; ``None`` when S3 is not configured at all.

        S3 counts as configured as soon as any BUCKET_* variable or OUTPUT_S3_URI
        is set. ``Config`` has already refused a partial set of them; what is left
        to check here, at startup rather than at the first upload, is that the AWS
        credential chain has credentials when no BUCKET_* keys are given.
        """
        endpoint, key_id, secret = config.bucket_settings
        if not (endpoint or key_id or secret or config.output_s3_uri):
            return None
        secrets = [*config.secrets(), key_id, secret]
        session = boto3.session.Session()
        if not key_id:
            _require_chain_credentials(session, secrets)
        region = (config.s3_region or endpoint_region(endpoint) or session.region_name
                  or (_DEFAULT_ENDPOINT_REGION if endpoint else None))
        client = session.client("s3", endpoint_url=endpoint or None, region_name=region,
                                aws_access_key_id=key_id or None, aws_secret_access_key=secret or None,
                                config=_client_config(custom_endpoint=bool(endpoint)))
        logger.info("S3 storage: endpoint %s, region %s, credentials from %s",
                    _redact(str(client.meta.endpoint_url), secrets),
                    client.meta.region_name, "BUCKET_* variables" if key_id else "the AWS chain")
        return cls(client, secrets=secrets)

    @property
    def endpoint_url(self) -> str:
        return str(self._client.meta.endpoint_url)

    @property
    def client(self) -> Any:
        """The boto3 S3 client, for what this class has no method for (botocore's event hooks, say)."""
        return self._client

    async def head(self, bucket: str, key: str) -> ObjectVersion:
        """The object's current version and size, without its body: one HEAD request (the cache's revalidation)."""
        uri = f"s3://{bucket}/{key}"
        try:
            response = await asyncio.to_thread(self._client.head_object, Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, uri) from exc
        return ObjectVersion(etag=str(response.get("ETag", "")), version_id=str(response.get("VersionId") or ""),
                             size=int(response["ContentLength"]))

    async def download(self, bucket: str, key: str, destination: Path, *, max_bytes: int,
                       on_chunk: Callable[[int], None] | None = None, if_match: str = "") -> int:
        """Stream ``s3://bucket/key`` to ``destination``; the number of bytes written.

        The size is checked twice: against the response's ContentLength before
        any byte of the body is read, and while streaming (a server may not tell
        the truth). ``on_chunk`` sees every chunk's size before it is written (a
        job's total budget; what it raises ends the download). ``if_match`` (an
        ETag) makes S3 refuse the request if the object changed since it was
        looked at. On failure or cancellation the partial file is deleted.
        """
        abandoned = threading.Event()
        conditions = {"IfMatch": if_match} if if_match else {}
        try:
            return await asyncio.to_thread(self._download, bucket, key, destination, max_bytes, abandoned,
                                           on_chunk, conditions)
        except asyncio.CancelledError:
            abandoned.set()  # the thread cannot be killed; it stops at its next chunk and cleans up
            raise

    def _download(self, bucket: str, key: str, destination: Path, max_bytes: int, abandoned: threading.Event,
                  on_chunk: Callable[[int], None] | None, conditions: dict[str, str]) -> int:
        uri = f"s3://{bucket}/{key}"
        created = False
        try:
            response = self._client.get_object(Bucket=bucket, Key=key, **conditions)  # one request: no HEAD first
            body = response["Body"]
            try:
                _check_size(uri, int(response["ContentLength"]), max_bytes, complete=True)
            except StorageError:
                body.close()
                raise
            written = 0
            with closing(body), destination.open("wb") as out:
                created = True
                for chunk in body.iter_chunks(DOWNLOAD_CHUNK_BYTES):
                    if abandoned.is_set():
                        raise asyncio.CancelledError
                    written += len(chunk)
                    _check_size(uri, written, max_bytes, complete=False)
                    if on_chunk is not None:
                        on_chunk(len(chunk))
                    out.write(chunk)
        except BaseException as exc:
            if created:
                destination.unlink(missing_ok=True)
            if isinstance(exc, BotoCoreError | ClientError):
                raise self._error(exc, uri) from exc
            if isinstance(exc, OSError):
                raise StorageError(f"could not write {uri} to the worker's disk: {exc.strerror or exc}",
                                   uri=uri) from exc
            raise
        logger.debug("downloaded %s to %s (%s)", uri, destination, describe_size(written))
        return written

    async def upload(self, path: Path, bucket: str, key: str, *, content_type: str) -> None:
        """Upload a file, in concurrent parts above 8 MiB; a :class:`StorageError` names the destination.

        Below the multipart threshold a single PUT streams the file: the transfer
        manager's thread pool and futures cost more than the request itself there.
        """
        uri = f"s3://{bucket}/{key}"
        try:
            await asyncio.to_thread(self._upload, path, bucket, key, content_type)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            cause = _unwrap_upload_error(exc)
            raise StorageError(f"could not upload {path.name} to {uri}: {self._error(cause, uri).message}",
                               uri=uri) from exc
        except OSError as exc:
            raise StorageError(f"could not upload {path.name} to {uri}: {exc.strerror or exc}", uri=uri) from exc
        logger.debug("uploaded %s to %s", path, uri)

    def _upload(self, path: Path, bucket: str, key: str, content_type: str) -> None:
        if path.stat().st_size >= MULTIPART_THRESHOLD_BYTES:
            self._client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type},
                                     Config=self._transfer)
            return
        with path.open("rb") as body:
            self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    def presign(self, bucket: str, key: str, expires_s: int) -> str:
        """A presigned GET URL; computed locally, no request is made."""
        uri = f"s3://{bucket}/{key}"
        try:
            return str(self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not presign {uri}: {self._error(exc, uri).message}", uri=uri) from exc

    # --- errors -----------------------------------------------------------------------------
    def _error(self, exc: BaseException, uri: str) -> StorageError:
        """What went wrong, in terms of the object and the fix; credentials redacted."""
        if isinstance(exc, ClientError):
            message = self._client_error_message(exc, uri)
        elif isinstance(exc, BotoConnectionError):
            message = f"S3 endpoint {self.endpoint_url} is unreachable (check BUCKET_ENDPOINT_URL and the network)"
        elif isinstance(exc, NoCredentialsError):
            message = f"no S3 credentials for {uri}: {_CHAIN_HINT}"
        else:
            message = f"S3 request for {uri} to {self.endpoint_url} failed: {type(exc).__name__}: {exc}"
        return StorageError(_redact(message, self._secrets), uri=uri)

    def _client_error_message(self, exc: ClientError, uri: str) -> str:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return f"bucket {uri.split('/')[2]!r} does not exist ({uri})"
        if code in ("PreconditionFailed", "412"):
            return f"{uri} changed while it was being fetched; run the job again"
        if code in _NOT_FOUND_CODES:
            return f"{uri} does not exist"
        if code in _DENIED_CODES:
            said = f"HTTP {code}" if code.isdigit() else code
            return f"access denied to {uri} ({_CREDENTIALS_HINT}; S3 answered {said})"
        detail = str(error.get("Message", "")).strip()
        return f"S3 refused the request for {uri}: {code or 'error'} (HTTP {status}){': ' + detail if detail else ''}"


def _check_size(uri: str, size: int, max_bytes: int, *, complete: bool) -> None:
    if size > max_bytes:
        raise StorageError(f"{uri} is {'' if complete else 'at least '}{describe_size(size)}, over the limit of "
                           f"{describe_size(max_bytes)}", uri=uri, size=size, limit_bytes=max_bytes)


def endpoint_region(endpoint: str) -> str | None:
    """The region an endpoint URL names, read where runpod's ``rp_upload`` reads it, so that a worker-comfyui
    endpoint signs for the same region: the label after ``s3.`` (AWS, Backblaze:
    ``bucket.s3.us-east-2.amazonaws.com``), or the one before ``digitaloceanspaces.com``. None where the URL
    names none (``s3.amazonaws.com``, R2), where rp_upload would take ``amazonaws`` or ``digitaloceanspaces``."""
    labels = (urlsplit(endpoint).hostname or "").split(".")
    if "s3" in labels[:-1]:
        region = labels[labels.index("s3") + 1]
        return None if region == "amazonaws" else region
    if labels[-2:] == ["digitaloceanspaces", "com"] and len(labels) > 2:
        return labels[-3]
    return None


def _redact(text: str, secrets: Sequence[str]) -> str:
    """Replace every secret by ``***``: a key may hide in an endpoint URL or an exception's text."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _unwrap_upload_error(exc: BaseException) -> BaseException:
    """boto3 wraps an upload's ClientError in S3UploadFailedError, keeping the original as context only."""
    original = exc.__context__
    if isinstance(exc, S3UploadFailedError) and original is not None and _is_botocore_error(original):
        return original
    return exc


def _is_botocore_error(exc: BaseException) -> bool:
    return isinstance(exc, BotoCoreError | ClientError)


def _require_chain_credentials(session: boto3.session.Session, secrets: Sequence[str]) -> None:
    """Without BUCKET_* keys the AWS chain must find credentials now, not at the first upload."""
    try:
        credentials = session.get_credentials()
    except BotoCoreError as exc:
        raise StorageError(_redact(f"the AWS credential chain failed ({type(exc).__name__}: {exc}); {_CHAIN_HINT}",
                                   secrets),
                           variable="BUCKET_ACCESS_KEY_ID") from None
    if credentials is None:
        raise StorageError(f"S3 is configured (OUTPUT_S3_URI is set) but no credentials were found: {_CHAIN_HINT}",
                           variable="BUCKET_ACCESS_KEY_ID")


def _client_config(*, custom_endpoint: bool) -> BotoConfig:
    """Timeouts so a dead endpoint fails a job instead of hanging it; a pool for concurrent transfers.

    S3-compatible services (MinIO, R2, GCS) want path-style addressing, and
    several reject the CRC checksums boto3 sends by default since 1.36
    (``SignatureDoesNotMatch``, worker-comfyui #156), so checksums are only
    sent where the operation requires them.
    """
    options: dict[str, Any] = {
        "signature_version": "s3v4",
        "connect_timeout": 10,
        "read_timeout": 60,
        "retries": {"mode": "standard", "max_attempts": 3},
        "max_pool_connections": 32,
    }
    if custom_endpoint:
        options |= {"s3": {"addressing_style": "path"}, "request_checksum_calculation": "when_required",
                    "response_checksum_validation": "when_required"}
    return BotoConfig(**options)
