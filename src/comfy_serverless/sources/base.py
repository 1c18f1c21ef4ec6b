"""What an input source is: a pure ``parse`` of the job's value and an async ``fetch`` of the file it names.

Kept apart from the registry (``sources/__init__.py``) so that the scheme
modules can import it while the registry imports them. Nothing here, nor in
any scheme module at import time, loads a network library: the job schema
imports the registry, and must stay cheap and pure.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ..config import Config
    from ..storage import S3Storage

#: Called with the size of every piece a fetch writes, before it is written: a job's byte budget.
Charge = Callable[[int], None]

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def scheme_of(value: str) -> str:
    """The scheme ``value`` starts with, lower-cased; "" if it has none (bare base64 has none)."""
    match = _SCHEME_RE.match(value)
    return match.group(1).lower() if match else ""


def uncharged(size: int) -> None:
    """The charge of a fetch that no job's byte budget limits."""


@dataclass(frozen=True, slots=True)
class ParsedSource:
    """A job's source value, checked: its kind, the value to fetch, and the file name it suggests ("" if none)."""

    kind: str
    source: str
    default_name: str


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


@dataclass(frozen=True)
class FetchRequest:
    """One fetch: the file to write, the worker's settings and S3 client, the input's label for errors,
    the budget to charge, and the HTTP validators that make it conditional (``If-Match`` for S3)."""

    destination: Path
    config: Config
    storage: S3Storage | None
    label: str
    charge: Charge = uncharged
    conditions: Mapping[str, str] = field(default_factory=dict)


class Source(ABC):
    """One kind of input, for the schemes of its ``prefixes``.

    ``parse`` runs on untrusted payloads inside the job schema: no I/O, no network library.
    ``fetch`` runs later, for a value ``parse`` accepted (or one a caller passes directly, so it
    checks what it relies on again), and raises :class:`InputFetchError` naming the input's label.
    """

    #: What ``InputSpec.kind`` records ("s3", "url", ...).
    kind: ClassVar[str]
    #: How values of this source start, one per scheme, as error messages offer them ("https://", "data:").
    prefixes: ClassVar[tuple[str, ...]]
    #: Whether its server answers conditional requests (``If-None-Match``): the model cache then
    #: revalidates a stored copy that way instead of downloading it again.
    revalidates: ClassVar[bool] = False

    @abstractmethod
    def parse(self, value: str, index: int) -> ParsedSource:
        """``value`` checked; ``ValueError`` says what is wrong, as a predicate for the field ("must ...").

        ``index`` is the entry's position in the job, for a file name when the value suggests none.
        """

    @abstractmethod
    async def fetch(self, source: str, request: FetchRequest) -> Fetched:
        """Write ``source`` to ``request.destination``, charging every byte to ``request.charge``."""
