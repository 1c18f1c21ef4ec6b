# RunPod serverless worker for ComfyUI.
#
#   docker build --platform linux/amd64 -t <registry>/comfy-serverless:<tag> .
#
# Layers go from the least to the most often changed: system packages, the locked Python
# environment with ComfyUI, custom nodes, baked-in models, Chromium, the check of the final
# environment, and the worker's own code last, so a code change rebuilds only the last small
# layers. Python sources are byte-compiled at build time, so a cold start does not compile
# ComfyUI again.
# Build arguments: BASE_IMAGE, COMFYUI_REPO, COMFYUI_REF, VERIFY_CUSTOM_NODES, WITH_BROWSER,
# CHROMIUM, GIT_MIRROR. Gated model downloads: `--secret id=hf_token,env=HF_TOKEN`. No `# syntax=` line: the
# engine's built-in Dockerfile frontend builds it (secret mounts included), with no image to pull.

# The CUDA 12.8 "base" flavour: Ubuntu 24.04 (Python 3.12, the lock's) plus the CUDA runtime
# and the NVIDIA_* settings that make the container runtime mount the driver. Not "runtime" or
# "cudnn-runtime": torch's wheels already carry cuBLAS, cuDNN & co. (the nvidia-* packages in
# the lock), so those flavours would add a second, unused copy to every pull. Its
# NVIDIA_REQUIRE_CUDA=cuda>=12.8 matches the lock's torch (built for CUDA 12.8): restrict the
# endpoint's allowed CUDA versions to 12.8 and newer (README, "Deploying to RunPod").
ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Build-time only (an ARG is not kept in the image's environment).
ARG DEBIAN_FRONTEND=noninteractive

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# --- system -----------------------------------------------------------------------------------
# python3 + venv, git (ComfyUI and custom nodes), build tools and headers (custom nodes that
# compile extensions), libGL/GLib (OpenCV, used by many custom nodes), tini (PID 1 that
# reaps orphaned Chromium/ComfyUI children and forwards signals). No ffmpeg: the `av`
# wheel ComfyUI uses bundles its own. Apt versions are not pinned (DL3008): Ubuntu's archive
# drops superseded versions, so pins would break every rebuild; the base image tag fixes
# the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev \
        git ca-certificates build-essential \
        libgl1 libglib2.0-0t64 libsm6 libxext6 libxrender1 \
        tini \
    && rm -rf /var/lib/apt/lists/*

# --- the locked Python environment + ComfyUI ---------------------------------------------------
ARG COMFYUI_REPO=https://github.com/comfyanonymous/ComfyUI.git
ARG COMFYUI_REF=v0.3.64

# builder/requirements.lock pins every package of the venv with its hashes: ComfyUI's
# requirements, the worker's, and torch with triton and its CUDA libraries, resolved together
# (README says how to re-lock). The build fails if ComfyUI's requirements.txt at COMFYUI_REF is
# not the one the lock was made from. Then everything installed is frozen in a constraints file
# (PIP_CONSTRAINT below): a custom node may add packages but not move one of these, and a
# node pack that needs another version fails the build instead of breaking ComfyUI or the worker.
COPY builder/pip.lock builder/requirements.lock builder/comfyui-requirements.txt /opt/builder/
RUN python3 -m venv /opt/venv \
    && pip install --require-hashes -r /opt/builder/pip.lock \
    && git clone --filter=blob:none "${COMFYUI_REPO}" /comfyui \
    && git -C /comfyui -c advice.detachedHead=false checkout --detach "${COMFYUI_REF}" \
    && echo "ComfyUI ${COMFYUI_REF} = $(git -C /comfyui rev-parse HEAD)" \
    && { diff -u /opt/builder/comfyui-requirements.txt /comfyui/requirements.txt \
         || { echo "ComfyUI ${COMFYUI_REF} has other requirements than builder/comfyui-requirements.txt: re-lock"; exit 1; }; } \
    && pip install --only-binary=:all: --require-hashes -r /opt/builder/requirements.lock \
    && pip freeze > /opt/venv/constraints.txt \
    && { python -m compileall -q -j 0 /comfyui || echo "warning: some files did not byte-compile"; }

ENV PIP_CONSTRAINT=/opt/venv/constraints.txt

# --- custom nodes (installed now, checked once the environment is final) ---------------------
# GIT_MIRROR: a test stand-in for GitHub (builder/install_custom_nodes.sh); empty for real builds.
ARG GIT_MIRROR=""
COPY builder/custom_nodes.txt builder/install_custom_nodes.sh /opt/builder/
RUN GIT_MIRROR="${GIT_MIRROR}" bash /opt/builder/install_custom_nodes.sh /opt/builder/custom_nodes.txt /comfyui /opt/venv/bin/python \
    && { python -m compileall -q -j 0 /comfyui/custom_nodes || echo "warning: some files did not byte-compile"; }

# --- baked-in models (builder/models.json, empty by default) ---------------------------------
COPY builder/models.json builder/download_models.py /opt/builder/
RUN --mount=type=secret,id=hf_token,required=false \
    HF_TOKEN_FILE=/run/secrets/hf_token \
    python /opt/builder/download_models.py /opt/builder/models.json /comfyui/models

# --- Chromium, for UI-to-API conversion (installed now, never at run time) -------------------
# Playwright's headless shell only (--only-shell): it converts exactly as full Chromium does
# (the test suite checks) with less memory, and the worker looks for it first. The launch at the
# end (Playwright's headless default is that shell) proves its system libraries are all there.
# WITH_BROWSER=0 leaves it out, for API-format jobs only: the image then runs with
# FRONTEND_START=never (its config file below; an environment variable still wins).
# CHROMIUM=distribution installs the distribution's chromium-headless-shell instead of
# Playwright's download, where Playwright's CDN cannot be reached (the worker finds it on PATH).
ARG WITH_BROWSER=1
ARG CHROMIUM=playwright
ENV PLAYWRIGHT_BROWSERS_PATH=/ms-playwright
# hadolint ignore=DL3008
RUN if [ "${WITH_BROWSER}" != 1 ]; then exit 0; fi \
    && if [ "${CHROMIUM}" = playwright ]; then \
        playwright install --with-deps --only-shell chromium; executable=""; \
    elif [ "${CHROMIUM}" = distribution ]; then \
        apt-get update && apt-get install -y --no-install-recommends chromium-headless-shell; \
        executable=/usr/bin/chromium-headless-shell; \
    else \
        echo "CHROMIUM must be playwright or distribution, got '${CHROMIUM}'"; exit 1; \
    fi \
    && rm -rf /var/lib/apt/lists/* \
    && EXECUTABLE="${executable}" python -c "import os; from playwright.sync_api import sync_playwright; \
p = sync_playwright().start(); b = p.chromium.launch(executable_path=os.environ['EXECUTABLE'] or None, \
args=['--no-sandbox', '--disable-gpu']); print('Chromium headless shell', b.version); b.close(); p.stop()"

# --- ComfyUI configuration --------------------------------------------------------------------
# Models on a network volume at /runpod-volume/models/<folder>/ (see the file), and the
# frontend's first-run tutorial marked done.
COPY builder/extra_model_paths.yaml /comfyui/extra_model_paths.yaml
COPY builder/comfy.settings.json /comfyui/user/default/comfy.settings.json

# --- the final environment, checked -------------------------------------------------------------
# After everything that installs Python packages or changes what ComfyUI loads: `pip check`
# fails the build on any conflict, then ComfyUI starts once with every custom node and the
# build fails if one does not import (VERIFY_CUSTOM_NODES=0 skips only that start, e.g. for a
# node pack that needs a GPU at import time). The worker below adds one package, with no
# dependencies, and checks again.
ARG VERIFY_CUSTOM_NODES=1
RUN VERIFY_CUSTOM_NODES="${VERIFY_CUSTOM_NODES}" \
    bash /opt/builder/install_custom_nodes.sh --verify /comfyui /opt/venv/bin/python

# --- the worker -----------------------------------------------------------------------------
WORKDIR /app
COPY pyproject.toml README.md handler.py test_input.json ./
COPY src/ ./src/
# Last, the frontend record (README, "Cold start"): ComfyUI starts once more (on the CPU: no GPU
# at build time) and what the frontend reads from it while setting up is kept, so that every
# cold start sets the page up while ComfyUI boots. It is checked against the live ComfyUI at
# each start, so a volume with other models or a GPU-only node costs a reload, never a wrong page.
# The image's settings file names it (FRONTEND_SNAPSHOT), or, without a browser, says
# FRONTEND_START=never; environment variables win over the file.
ENV COMFYUI_PATH=/comfyui \
    API_COMMAND_LINE="/opt/venv/bin/python main.py"
RUN pip install --no-deps . \
    && rm -rf build src/*.egg-info \
    && pip check \
    && python -c "import comfy_serverless, runpod, playwright, aiohttp, psutil" \
    && if [ "${WITH_BROWSER}" = 1 ]; then \
        COMFY_EXTRA_ARGS=--cpu python -m comfy_serverless.snapshot_frontend /app/frontend-snapshot.json \
        && echo '{"FRONTEND_SNAPSHOT": "/app/frontend-snapshot.json"}' > /app/image-settings.json; \
    else \
        echo '{"FRONTEND_START": "never"}' > /app/image-settings.json; \
    fi

ENV COMFY_SERVERLESS_CONFIG=/app/image-settings.json

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-u", "handler.py"]
