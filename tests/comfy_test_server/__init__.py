"""A ComfyUI 0.3.64-compatible test server for CI.

Real ComfyUI (torch, models) cannot be installed in CI, so the worker's integration and
contract tests run against this server instead. It reproduces ComfyUI's HTTP routes,
websocket message sequences, validation errors, history entries and caching quirks closely
enough that the same client code and tests pass against both. It can only *execute* a few
image nodes (EmptyImage, LoadImage, ImageInvert, ImageScale, ImageBlur, SaveImage,
PreviewImage) but serves and validates against every recorded core node definition.

Run it as a script: ``python tests/comfy_test_server/main.py --port 8190 --cpu``.
"""
