"""The problems found in a job's payload: each with its field path, few and short enough for a log line.

Shared by the job schema (:mod:`.jobspec`) and the prompt edits a job makes
(:mod:`.workflow`), so that every bad-input error reads the same way.
"""

from __future__ import annotations

import re

from .errors import JobInputError

#: Problems listed in one error; the rest are counted.
MAX_PROBLEMS = 20
SHOWN_CHARS = 60
_MAX_PROBLEM_CHARS = 200
#: C0 and C1 controls and Unicode line breaks: text holding one would be written raw into logs.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Problems:
    """The problems found so far, each prefixed with its field path, capped in number and length.

    Control characters are escaped, so a problem stays on one line of a log
    whatever the payload's keys hold.
    """

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    @property
    def full(self) -> bool:
        """True once the cap is reached: callers skip costly work (suggestions) for problems not listed."""
        return len(self.items) >= MAX_PROBLEMS

    def add(self, path: str, message: str) -> None:
        if self.full:
            self.dropped += 1
            return
        text = f"{path}: {message}"
        text = text if len(text) <= _MAX_PROBLEM_CHARS else text[:_MAX_PROBLEM_CHARS - 3] + "..."
        self.items.append(CONTROL_RE.sub(lambda match: repr(match.group())[1:-1], text))

    def __bool__(self) -> bool:
        return bool(self.items)

    def error(self) -> JobInputError:
        more = [f"input: {self.dropped} more problems not listed"] if self.dropped else []
        return JobInputError(self.items + more)


def show(value: object) -> str:
    """A short rendering of a value for a problem: strings truncated, other values by JSON type only.

    Problems are logged and returned to the caller, so they must stay small
    whatever the payload holds (and numbers are not echoed: some cannot be
    converted to text cheaply).
    """
    if isinstance(value, str):
        return repr(value[:SHOWN_CHARS]) + ("..." if len(value) > SHOWN_CHARS else "")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    names = ((int, "a number"), (float, "a number"), (list, "an array"), (dict, "an object"))
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)
