"""The one exception hierarchy of comfy-serverless.

Callers catch precisely: ``WorkflowError`` means "fix your workflow",
``ComfyUnavailableError`` means "the worker is unhealthy", ``JobInputError``
means "fix the job payload". The errors a failed start can raise (configuration,
state, ComfyUI, Chromium) are also ``RuntimeError``s, as the ComfyConnector API
reference promises its users (``except RuntimeError`` around ``create()``).
Every error carries the facts a user needs to act
(file and key, node id and class, the tail of a log) in its message, and the
structured version of those facts in ``details`` for machine consumers. The
facts the worker's own control flow decides on are typed attributes of their
class (``RunTimeoutError.stuck``, ``ComfyUnavailableError.restart_failed``,
``PromptValidationError.queued``), never read back from ``details``.

    ComfyServerlessError
    ├── ConfigError              (also a RuntimeError)
    ├── ConnectorStateError      (also a RuntimeError)
    ├── ComfyStartError          (also a RuntimeError)
    ├── ComfyUnavailableError    (also a RuntimeError)
    ├── BrowserError             (also a RuntimeError)
    ├── WorkflowError
    │   ├── UnknownNodeTypesError
    │   ├── ConversionError
    │   └── FrontendDisabledError
    ├── PromptValidationError
    ├── UnexpectedResponseError
    ├── ExecutionError
    ├── ExecutionInterruptedError
    ├── ConversionTimeoutError   (also a TimeoutError)
    ├── RunTimeoutError          (also a TimeoutError)
    ├── JobInputError
    ├── InputFetchError
    └── StorageError
"""

from __future__ import annotations

from typing import Any


class ComfyServerlessError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form for job results: the one-line message plus the details."""
        return {"error": self.message, "error_type": type(self).__name__, **self.details}


class ConfigError(ComfyServerlessError, RuntimeError):
    """A setting (configuration file or environment variable) is unknown, of the wrong type, out of its
    bounds or unusable (a bad URL_ALLOWLIST entry, a partial S3 setup); ``details`` name the key or the file."""


class ConnectorStateError(ComfyServerlessError, RuntimeError):
    """The connector was used before it was ready, or after ``kill_api()``."""


class ComfyStartError(ComfyServerlessError, RuntimeError):
    """ComfyUI could not be started: it exited during boot, or did not answer within the budget."""


class ComfyUnavailableError(ComfyServerlessError, RuntimeError):
    """ComfyUI stopped answering (crashed, killed) while the worker needed it.

    ``restart_failed``: it could not be brought back either, so only a fresh worker helps.
    """

    def __init__(self, message: str, *, restart_failed: bool = False, **details: Any) -> None:
        super().__init__(message, **({"restart_failed": True} if restart_failed else {}), **details)
        self.restart_failed = restart_failed


class BrowserError(ComfyServerlessError, RuntimeError):
    """Chromium could not be found, launched, or could not load ComfyUI's frontend."""


class WorkflowError(ComfyServerlessError):
    """The workflow is not a valid ComfyUI workflow (neither UI nor API format, bad JSON, bad graph)."""


class UnknownNodeTypesError(WorkflowError):
    """The workflow uses node types this ComfyUI does not have (custom nodes not installed)."""

    def __init__(self, node_types: list[str], **details: Any) -> None:
        names = ", ".join(sorted(node_types))
        super().__init__(
            f"the workflow uses node types this ComfyUI does not know: {names} "
            "(install the custom nodes that provide them, or remove those nodes)",
            unknown_node_types=sorted(node_types),
            **details,
        )
        self.node_types = sorted(node_types)


class ConversionError(WorkflowError):
    """The frontend could not turn a UI-format workflow into an API prompt."""


class FrontendDisabledError(WorkflowError):
    """A UI-format workflow reached a worker that runs no browser (FRONTEND_START=never)."""

    def __init__(self) -> None:
        super().__init__("this is a UI-format workflow, and FRONTEND_START=never runs no browser to convert it: "
                         "send API format (ComfyUI's Export (API)), or set FRONTEND_START=boot")


class PromptValidationError(ComfyServerlessError):
    """ComfyUI refused the prompt (HTTP 400) or dropped some of its outputs (``node_errors`` on a 200).

    ``queued``: ComfyUI queued the valid part of the prompt (the 200 case), which must be stopped.
    """

    def __init__(self, message: str, *, queued: bool = False, **details: Any) -> None:
        super().__init__(message, **({"queued": True} if queued else {}), **details)
        self.queued = queued


class UnexpectedResponseError(ComfyServerlessError):
    """ComfyUI answered, but not as its protocol says it does (an error status, a missing history entry)."""


class ExecutionError(ComfyServerlessError):
    """A node raised while ComfyUI executed the prompt (``execution_error``)."""


class ExecutionInterruptedError(ComfyServerlessError):
    """The prompt was interrupted (``execution_interrupted``), by a timeout, a cancel or a user."""


class ConversionTimeoutError(ComfyServerlessError, TimeoutError):
    """Every conversion attempt ran out of time, page and browser restarts included."""


class RunTimeoutError(ComfyServerlessError, TimeoutError):
    """The prompt did not finish within its timeout; it was interrupted.

    ``phase``: ``queue`` (it waited behind other prompts too long) or ``execute``;
    ``stuck``: ComfyUI ignored the interrupt, so it must be restarted.
    """

    def __init__(self, message: str, *, phase: str, stuck: bool, **details: Any) -> None:
        super().__init__(message, phase=phase, stuck=stuck, **details)
        self.phase = phase
        self.stuck = stuck


class JobInputError(ComfyServerlessError):
    """The job payload is invalid. ``details["problems"]`` lists each problem with its field path."""

    def __init__(self, problems: list[str]) -> None:
        count = len(problems)
        head = "; ".join(problems[:10]) + ("; …" if count > 10 else "")
        super().__init__(f"invalid job input ({count} problem{'s' if count != 1 else ''}): {head}",
                         problems=problems)
        self.problems = problems


class _SizeLimitedError(ComfyServerlessError):
    """An error that may be a size limit's: ``limit_bytes`` is that limit (``details["limit"]``), else ``None``."""

    def __init__(self, message: str, *, limit_bytes: int | None = None, **details: Any) -> None:
        if limit_bytes is not None:
            details["limit"] = limit_bytes
        super().__init__(message, **details)
        self.limit_bytes = limit_bytes


class InputFetchError(_SizeLimitedError):
    """A job input (S3 object, URL, base64 data) could not be fetched; the message names the input."""


class StorageError(_SizeLimitedError):
    """S3 is misconfigured, or an upload to it failed."""
