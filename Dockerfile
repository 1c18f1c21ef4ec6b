# syntax=docker/dockerfile:1
#
# RunPod serverless worker for ComfyUI.
#
#   docker build --platform linux/amd64 -t <registry>/comfy-serverless:<tag> .
#
# Layers go from the least to the most often changed: system packages, ComfyUI and torch,
# custom nodes, baked-in models, the worker's dependencies, Chromium, and the worker's own
# code last, so a code change rebuilds only the last few small layers. Python sources are
# byte-compiled at build time, so a cold start does not compile ComfyUI again.
# Build arguments: BASE_IMAGE, COMFYUI_REPO, COMFYUI_REF, TORCH_INDEX_URL, TORCH_PACKAGES,
# VERIFY_CUSTOM_NODES. Gated model downloads: `--secret id=hf_token,env=HF_TOKEN`.

ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
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

# --- Python venv + ComfyUI ----------------------------------------------------------------------
ARG COMFYUI_REPO=https://github.com/comfyanonymous/ComfyUI.git
ARG COMFYUI_REF=v0.3.64
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_PACKAGES="torch==2.8.0 torchvision==0.23.0 torchaudio==2.8.0"

# torch comes from the CUDA index first, then is frozen in a constraints file (PIP_CONSTRAINT
# below) so that neither ComfyUI's requirements nor a custom node can swap it for another
# build; such a conflict fails the build instead. TORCH_PACKAGES is split into words on
# purpose (SC2086), and its versions are pinned in the ARG, where hadolint cannot see them (DL3013).
# hadolint ignore=DL3013,SC2086
RUN python3 -m venv /opt/venv \
    && git clone --filter=blob:none "${COMFYUI_REPO}" /comfyui \
    && git -C /comfyui -c advice.detachedHead=false checkout --detach "${COMFYUI_REF}" \
    && echo "ComfyUI ${COMFYUI_REF} = $(git -C /comfyui rev-parse HEAD)" \
    && pip install --index-url "${TORCH_INDEX_URL}" ${TORCH_PACKAGES} \
    && pip freeze | grep -iE '^(torch|torchvision|torchaudio)==' > /opt/venv/constraints.txt \
    && pip install -c /opt/venv/constraints.txt -r /comfyui/requirements.txt \
    && { python -m compileall -q -j 0 /comfyui || echo "warning: some files did not byte-compile"; }

ENV PIP_CONSTRAINT=/opt/venv/constraints.txt

# --- custom nodes ---------------------------------------------------------------------------
ARG VERIFY_CUSTOM_NODES=1
COPY builder/custom_nodes.txt builder/install_custom_nodes.sh /opt/builder/
RUN VERIFY_CUSTOM_NODES="${VERIFY_CUSTOM_NODES}" \
    bash /opt/builder/install_custom_nodes.sh /opt/builder/custom_nodes.txt /comfyui /opt/venv/bin/python \
    && { python -m compileall -q -j 0 /comfyui/custom_nodes || echo "warning: some files did not byte-compile"; }

# --- baked-in models (builder/models.json, empty by default) ---------------------------------
COPY builder/models.json builder/download_models.py /opt/builder/
RUN --mount=type=secret,id=hf_token,required=false \
    HF_TOKEN_FILE=/run/secrets/hf_token \
    python /opt/builder/download_models.py /opt/builder/models.json /comfyui/models

# --- the worker's dependencies ----------------------------------------------------------------
COPY builder/requirements.txt /opt/builder/requirements.txt
RUN pip install -r /opt/builder/requirements.txt

# --- Chromium, for UI-to-API conversion (installed now, never at run time) -------------------
# Full Chromium only (--no-shell): the worker launches Playwright's `chromium` executable, never
# the headless shell. The launch at the end proves its system libraries are all there.
ENV PLAYWRIGHT_BROWSERS_PATH=/ms-playwright
RUN playwright install --with-deps --no-shell chromium \
    && rm -rf /var/lib/apt/lists/* \
    && python -c "from playwright.sync_api import sync_playwright; \
p = sync_playwright().start(); path = p.chromium.executable_path; \
b = p.chromium.launch(executable_path=path, args=['--no-sandbox', '--disable-gpu']); \
print('Chromium', b.version, 'at', path); b.close(); p.stop()"

# --- ComfyUI configuration --------------------------------------------------------------------
# Models on a network volume at /runpod-volume/models/<folder>/ (see the file), and the
# frontend's first-run tutorial marked done.
COPY builder/extra_model_paths.yaml /comfyui/extra_model_paths.yaml
COPY builder/comfy.settings.json /comfyui/user/default/comfy.settings.json

# --- the worker -----------------------------------------------------------------------------
WORKDIR /app
COPY pyproject.toml README.md handler.py test_input.json ./
COPY src/ ./src/
RUN pip install --no-deps . \
    && rm -rf build src/*.egg-info \
    && python -c "import comfy_serverless, runpod, playwright, aiohttp, psutil"

ENV COMFYUI_PATH=/comfyui \
    API_COMMAND_LINE="/opt/venv/bin/python main.py"

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-u", "handler.py"]
