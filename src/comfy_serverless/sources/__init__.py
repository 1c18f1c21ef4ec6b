"""The kinds of job input, by URI scheme: one registry that the job schema and the fetcher both consult.

Like httpx's transports mounted per scheme: each kind of input is one
:class:`Source` (a pure ``parse`` for the job schema, an async ``fetch`` for
the download), and :func:`register` mounts it on the schemes of its
``prefixes``. A new kind of input is one class and one ``register`` call; the
job schema's checks, the fetcher's dispatch and the schemes that error
messages list follow from the registry.

Importing this package loads no network library (aiohttp is imported by the
first URL download, and the S3 client is handed to a fetch), so the job schema
stays pure.
"""

from __future__ import annotations

from .base import Fetched, FetchRequest, ParsedSource, Source, scheme_of, uncharged
from .data import DataSource
from .hf import HfSource
from .s3 import S3Source
from .url import UrlSource

__all__ = ["FetchRequest", "Fetched", "ParsedSource", "Source", "prefixes_text", "register", "scheme_of", "source_for",
           "source_of", "uncharged"]

_SOURCES: dict[str, Source] = {}
#: The prefix shown for each scheme, in the order registered.
_PREFIXES: dict[str, str] = {}


def register(source: Source) -> None:
    """Mount ``source`` on the schemes of its prefixes; a later registration of a scheme replaces the earlier."""
    for prefix in source.prefixes:
        scheme = scheme_of(prefix)
        _SOURCES[scheme] = source
        _PREFIXES[scheme] = prefix


def source_for(scheme: str) -> Source | None:
    """The source mounted on ``scheme`` (lower case), or ``None``."""
    return _SOURCES.get(scheme)


def source_of(value: str) -> Source | None:
    """The source that fetches ``value``, by its scheme; a value without a scheme is bare base64.

    Bare base64 is what the job schema makes of worker-comfyui's ``images`` and of data URIs; the job
    schema itself accepts no scheme-less ``source`` (it asks :func:`source_for`).
    """
    return source_for(scheme_of(value) or "data")


def prefixes_text() -> str:
    """The accepted beginnings, for messages: ``s3://, https://, http://, data: or hf://``."""
    shown = list(_PREFIXES.values())
    return f"{', '.join(shown[:-1])} or {shown[-1]}" if len(shown) > 1 else "".join(shown)


register(S3Source())
register(UrlSource())
register(DataSource())
register(HfSource())
