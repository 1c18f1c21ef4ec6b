"""Inputs sent in the job itself: ``data:<mime>;base64,<data>`` URIs, and bare base64 (worker-comfyui's ``images``).

One set of checks serves the job schema and the decoder: the payload is
checked cheaply (alphabet, padding) so that a typo fails before any work, and
sized before anything is decoded, so an oversized payload fails at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from pathlib import Path

from ..errors import InputFetchError
from ..files import describe_size
from .base import Charge, Fetched, FetchRequest, ParsedSource, Source, scheme_of, uncharged

_MIME_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_DATA_URI_RE = re.compile(rf"data:(?P<mime>{_MIME_TOKEN}/{_MIME_TOKEN})(?:;{_MIME_TOKEN}=[^;,]*)*;base64,",
                          re.IGNORECASE)
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE_RE = re.compile(r"\s+")
_SUBTYPE_AS_EXTENSION_RE = re.compile(r"[a-z0-9]{1,10}")
#: Types whose subtype is not the usual file extension; others use the subtype (``image/png`` -> ``png``).
_MIME_EXTENSIONS = {
    "image/jpeg": "jpg", "image/svg+xml": "svg", "audio/mpeg": "mp3", "audio/x-wav": "wav",
    "video/quicktime": "mov", "text/plain": "txt", "application/octet-stream": "bin", "model/gltf-binary": "glb",
}
#: Base64 is decoded in slices of this many characters (a multiple of 4), so memory stays flat.
_BASE64_SLICE = 4 * 1024 * 1024


def split_data_uri(uri: str) -> tuple[str, str]:
    """``(mime, base64 payload)`` of ``data:<mime>[;param=value]*;base64,<data>``, the payload checked."""
    mime, payload = _data_uri_parts(uri)
    return mime, base64_payload(payload)


def _data_uri_parts(uri: str) -> tuple[str, str]:
    match = _DATA_URI_RE.match(uri)
    if not match:
        raise ValueError("must be a base64 data URI: data:<mime>;base64,<data> (only base64 data URIs are supported)")
    return match["mime"].lower(), uri[match.end():]


def base64_payload(text: str) -> str:
    """The payload without whitespace, checked cheaply (alphabet, padding); ``ValueError`` says what is wrong."""
    compact = _WHITESPACE_RE.sub("", text)
    if not compact:
        raise ValueError("holds no data (its base64 text is empty)")
    if len(compact) % 4 or not _BASE64_RE.fullmatch(compact):
        raise ValueError("is not valid base64 (standard alphabet A-Z a-z 0-9 + /, padded with '=')")
    return compact


def _extension(mime: str) -> str:
    if mime in _MIME_EXTENSIONS:
        return _MIME_EXTENSIONS[mime]
    subtype = mime.split("/", 1)[1].removeprefix("x-")
    return subtype if _SUBTYPE_AS_EXTENSION_RE.fullmatch(subtype) else "bin"


def decode_base64_to_file(data: str, destination: Path, *, max_bytes: int, label: str,
                          charge: Charge = uncharged) -> int:
    """Decode standard base64 (whitespace ignored) into ``destination``; bytes written.

    Sized before anything is decoded, so an oversized payload fails at once; decoded in slices, so memory
    stays flat.
    """
    try:
        compact = base64_payload(data)
    except ValueError as exc:
        raise InputFetchError(f"{label}: the input {exc}", input=label) from None
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


class DataSource(Source):
    """Data carried in the job: a base64 ``data:`` URI, or bare base64 (a value without a scheme)."""

    kind = "base64"
    prefixes = ("data:",)

    def parse(self, value: str, index: int) -> ParsedSource:
        mime, data = split_data_uri(value)
        return ParsedSource(self.kind, data, f"input_{index}.{_extension(mime)}")

    async def fetch(self, source: str, request: FetchRequest) -> Fetched:
        if scheme_of(source) == "data":
            try:
                source = _data_uri_parts(source)[1]
            except ValueError as exc:
                raise InputFetchError(f"{request.label}: the input {exc}", input=request.label) from None
        return Fetched(await asyncio.to_thread(decode_base64_to_file, source, request.destination,
                                               max_bytes=request.config.input_max_bytes, label=request.label,
                                               charge=request.charge))
