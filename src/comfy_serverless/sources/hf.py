"""``hf://`` inputs: a file of a Hugging Face Hub repository, fetched by the Hub's resolve URL.

The value follows huggingface_hub's HF URI syntax, ``hf://[datasets/|spaces/]owner/repo[@revision]/path``
(revision ``main`` by default), and resolves to
``<HF_ENDPOINT>/[datasets/|spaces/]owner/repo/resolve/<revision>/<path>``, the URL
huggingface_hub downloads from. That URL goes through the same SSRF-guarded
fetcher as URL inputs. HF_TOKEN, for private and gated repositories, is sent to
HF_ENDPOINT's origin only: the Hub redirects large files to a CDN on another
host, which must never see it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from ..errors import InputFetchError
from .base import Fetched, FetchRequest, ParsedSource, Source
from .url import MAX_URL_LENGTH, BearerToken, fetch_guarded

_SYNTAX = "hf://owner/repo[@revision]/path/in/repo"
_REPO_TYPE_PREFIXES = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}
#: The Hub's owner and repository names (at most 96 characters, no '--' or '..'), and revisions: a branch,
#: tag or commit, or one of the Hub's special refs (a pull request, a conversion).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}|refs/pr/[0-9]+|refs/convert/[A-Za-z0-9_]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_STATUS_HINTS = {
    401: "the repository does not exist, or it is private or gated: check its name, or set HF_TOKEN to a token "
         "with access",
    403: "HF_TOKEN's token has no access to this repository; for a gated one, accept its conditions on the Hub",
    404: "check the repository, the revision and the path of the hf:// source",
}


@dataclass(frozen=True)
class HubFile:
    """A file of a Hub repository at a revision; ``repo_prefix`` is "" (models), ``datasets/`` or ``spaces/``."""

    repo_prefix: str
    owner: str
    repo: str
    revision: str
    path: str

    def url(self, endpoint: str) -> str:
        """Its resolve URL on the Hub at ``endpoint``, quoted as huggingface_hub quotes it."""
        return (f"{endpoint.rstrip('/')}/{self.repo_prefix}{self.owner}/{self.repo}/resolve/"
                f"{quote(self.revision, safe='')}/{quote(self.path)}")


def parse_hf_uri(value: str) -> HubFile:
    """``hf://[datasets/|spaces/]owner/repo[@revision]/path``; ``ValueError`` says what is wrong."""
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"is longer than {MAX_URL_LENGTH} characters")
    if value[:5].lower() != "hf://":
        raise ValueError(f"must be of the form {_SYNTAX}")
    segments = value[5:].split("/")
    repo_prefix = _REPO_TYPE_PREFIXES.get(segments[0])
    if repo_prefix is not None:
        segments = segments[1:]
    if len(segments) < 3:
        raise ValueError(f"must name a repository and a file in it: {_SYNTAX}")
    owner, (repo, at, revision), rest = segments[0], segments[1].partition("@"), segments[2:]
    if at and revision == "refs":  # refs/pr/N, refs/convert/NAME: the revision holds two more segments
        revision, rest = "/".join(["refs", *rest[:2]]), rest[2:]
    for what, name in (("owner", owner), ("repository", repo)):
        if not _NAME_RE.fullmatch(name) or "--" in name or ".." in name:
            raise ValueError(f"has an invalid {what} name {name[:40]!r} (letters, digits, '-', '_' and '.', at "
                             "most 96, no '--' or '..')")
    revision = revision if at else "main"
    if not _REVISION_RE.fullmatch(revision) or ".." in revision:
        raise ValueError(f"has an invalid revision {revision[:40]!r} (a branch, tag or commit of letters, digits, "
                         "'-', '_' and '.'; or refs/pr/N)")
    return HubFile(repo_prefix or "", owner, repo, revision, _path_in_repo(rest))


def _path_in_repo(segments: list[str]) -> str:
    path = "/".join(segments)
    if not path:
        raise ValueError(f"names no file in the repository (expected {_SYNTAX})")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError("has an empty, '.' or '..' segment in its path")
    if _CONTROL_RE.search(path):
        raise ValueError("must not contain control characters")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return path


class HfSource(Source):
    """A file of a Hugging Face Hub repository (models, datasets, spaces), at a branch, tag or commit."""

    kind = "hf"
    prefixes = ("hf://",)
    revalidates = True

    def parse(self, value: str, index: int) -> ParsedSource:
        return ParsedSource(self.kind, value, parse_hf_uri(value).path.rsplit("/", 1)[-1])

    async def fetch(self, source: str, request: FetchRequest) -> Fetched:
        label, config = request.label, request.config
        try:
            url = parse_hf_uri(source).url(config.hf_endpoint)
        except ValueError as exc:
            raise InputFetchError(f"{label}: the hf:// source {exc}", input=label) from None
        token = BearerToken(config.hub_origin, config.hf_token) if config.hf_token else None
        return await fetch_guarded(url, request, token=token, status_hints=_STATUS_HINTS)
