"""comfy-serverless: a RunPod serverless worker for ComfyUI that accepts workflows as they were saved.

The public API::

    connector = await ComfyConnector.create("config.json")   # boots ComfyUI + Chromium once
    prompt = await connector.get_prompt_from_workflow(ui_workflow)
    history = await connector.run_workflow(ui_or_api_workflow)
    path = connector.upload_data("photo.png", "input", is_ephemeral=True)   # synchronous, as the reference has it
    await connector.kill_api()

    async with ComfyConnector(Config.load("config.json")) as connector:      # or scoped, not the singleton
        ...

Every error it raises on purpose is a :class:`ComfyServerlessError` (see :mod:`.errors`).
"""

from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import (
    BrowserError,
    ComfyServerlessError,
    ComfyStartError,
    ComfyUnavailableError,
    ConfigError,
    ConnectorStateError,
    ConversionError,
    ConversionTimeoutError,
    ExecutionError,
    ExecutionInterruptedError,
    FrontendDisabledError,
    InputFetchError,
    JobInputError,
    PromptValidationError,
    RunTimeoutError,
    StorageError,
    UnexpectedResponseError,
    UnknownNodeTypesError,
    WorkflowError,
)
from .events import ConnectorState, Progress

if TYPE_CHECKING:
    from .connector import ComfyConnector

__all__ = [
    "BrowserError", "ComfyConnector", "ComfyServerlessError", "ComfyStartError", "ComfyUnavailableError", "Config",
    "ConfigError", "ConnectorState", "ConnectorStateError", "ConversionError", "ConversionTimeoutError",
    "ExecutionError", "ExecutionInterruptedError", "FrontendDisabledError", "InputFetchError", "JobInputError",
    "Progress", "PromptValidationError", "RunTimeoutError", "StorageError", "UnexpectedResponseError",
    "UnknownNodeTypesError", "WorkflowError",
]


def __getattr__(name: str) -> Any:
    """``ComfyConnector`` is imported on first use: the light modules (the job schema) must not load aiohttp and
    boto3 with the package."""
    if name == "ComfyConnector":
        from .connector import ComfyConnector

        return ComfyConnector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
