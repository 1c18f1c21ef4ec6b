# Local development. The two entry points:
#
#   make run    prepare what is missing (venv, Chromium, ComfyUI), then run the worker once on
#               test_input.json. ARGS are passed to handler.py, e.g. ARGS=--rp_serve_api.
#               COMFYUI_PATH=/path/to/ComfyUI uses that ComfyUI (API_COMMAND_LINE or
#               COMFY_PYTHON say how to start it); otherwise the pinned ComfyUI is cloned
#               into .comfyui/ with CPU torch in .comfyui-venv/.
#   make test   prepare the venv, Chromium and ComfyUI (as `make run` does), then run the test
#               suite against that real ComfyUI, and the tests that need the test server's
#               fault injection against it. TIERS=server: the test server alone, TIERS=real:
#               the real ComfyUI alone. ARGS are passed to pytest, e.g. ARGS="-k connector -x".
#
# Both are idempotent: a second run installs nothing. builder/local_setup.sh does the work.
#
# The image (builder/image.sh; Docker is installed and started first when run as root):
#   make image        docker build of the image as users build it (IMAGE=, BUILD_ARGS=)
#   make image-test   the image with the test stand-ins (a local base, ComfyUI from the git bundles,
#                     the distribution's Chromium), its slim variant, then pytest tests/image

SETUP := bash builder/local_setup.sh
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test lint venv chromium comfyui image image-test

help:
	@sed -n '/^#   make run/,/^# Both/s/^# \{0,1\}//p' Makefile
	@echo "helpers: make lint | venv | chromium | comfyui | image | image-test"

run:
	@$(SETUP) run $(ARGS)

test:
	@$(SETUP) test $(ARGS)

# Helpers.
lint:
	@$(SETUP) lint

venv:
	@$(SETUP) venv

chromium:
	@$(SETUP) chromium

comfyui:
	@$(SETUP) comfyui

image:
	@bash builder/image.sh build

image-test:
	@bash builder/image.sh test $(ARGS)
