#!/usr/bin/env bash
# Local development: prepare what is missing, then run the worker or the tests.
# Called by the Makefile (`make run`, `make test`, `make lint`); every step is skipped
# when its stamp says it is already done, so a second run costs well under a second.
#
#   local_setup.sh run  [handler.py args]   venv + Chromium + ComfyUI, then python handler.py
#   local_setup.sh test [pytest args]       venv + Chromium + newest frontend + ComfyUI, then pytest per tier
#   local_setup.sh lint                     venv, then ruff, mypy (strict), hadolint and bash -n
#   local_setup.sh venv | chromium | comfyui | nodes-comfyui | newest-frontend
#   local_setup.sh apt-install PACKAGE...    apt-get install, waiting for the package lock (CI's tools)
#
# Environment:
#   PYTHON            interpreter that creates the venvs (default python3; 3.11 or newer)
#   COMFYUI_PATH      an existing ComfyUI to use; otherwise the pinned one is cloned into .comfyui/
#   API_COMMAND_LINE  how to start that ComfyUI (default: "$COMFY_PYTHON main.py --cpu")
#   COMFY_PYTHON      the Python of an existing COMFYUI_PATH (default python3)
#   COMFYUI_REPO      where .comfyui/ is cloned from (default: the Dockerfile's COMFYUI_REPO)
#   COMFYUI_REF       ComfyUI version for .comfyui/ (default: the Dockerfile's COMFYUI_REF)
#   LOCK_PYTHON       interpreter for .comfyui-venv (default: python3.X on PATH or in pyenv, X from the
#                     lock's header: the lock holds wheels for that Python only)
#   TORCH_BUILDS      cpu (default): .comfyui-venv gets the lock's torch versions as CPU builds from
#                     TORCH_INDEX_URL (default: PyTorch's CPU index); lock: the lock's own builds from
#                     PyPI, as in the image (CUDA, several GB), where PyTorch's index is out of reach
#   TIERS             what `test` runs, any of "real nodes server" (the default: all three); see cmd_test
#   NODE_PACKS_BUNDLES  a folder of git bundles of the custom-nodes tier's packs, where GitHub is out of reach
#   CHROMIUM_EXECUTABLE  a Chromium to use instead of the system's or Playwright's
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PYTHON=${PYTHON:-python3}
VENV=$ROOT/.venv
RUNTIME_VENV=$ROOT/.venv-runtime
COMFY_DIR=$ROOT/.comfyui
COMFY_VENV=$ROOT/.comfyui-venv
NEWEST_FRONTEND_DIR=$ROOT/.frontend-latest
NODES_DIR=$ROOT/.comfyui-nodes
NODE_PACKS=$ROOT/tests/custom_nodes.txt
# One source of truth for the ComfyUI version: the Dockerfile's build arguments.
dockerfile_arg() { sed -n "s/^ARG $1=//p" "$ROOT/Dockerfile" | head -n 1 | tr -d '"'; }
COMFYUI_REPO=${COMFYUI_REPO:-$(dockerfile_arg COMFYUI_REPO)}
COMFYUI_REF=${COMFYUI_REF:-$(dockerfile_arg COMFYUI_REF)}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
TORCH_BUILDS=${TORCH_BUILDS:-cpu}
TIERS=${TIERS:-real nodes server}
LOCK=$ROOT/builder/requirements.lock

log() { echo "local_setup: $*" >&2; }
# DIE_HINT, where set, is what the user can do instead (printed after the error).
die() {
    echo "local_setup: error: $*" >&2
    if [[ -n ${DIE_HINT:-} ]]; then echo "local_setup: $DIE_HINT" >&2; fi
    exit 1
}

fingerprint() {  # sha256 of the given strings and files' contents
    local item
    {
        printf '%s\n' "$@"
        for item in "$@"; do
            if [[ -f $item ]]; then cat "$item"; fi
        done
    } | sha256sum | cut -d' ' -f1
}

check_python() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.11+ or set PYTHON"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); the worker needs Python 3.11 or newer (set PYTHON)"
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
        || die "$PYTHON cannot create virtual environments; install python3-venv (apt-get install python3-venv)"
}

# A venv at $1 holding the requirements file $2 and the worker installed editable; done again
# when either changes. With $3 = fresh it is made anew rather than updated, so that it holds
# exactly those requirements.
ensure_worker_venv() {
    local venv=$1 requirements=$2 fresh=${3:-} stamp=$1/.setup-stamp key
    key=$(fingerprint builder/requirements.txt "$requirements" pyproject.toml)
    if [[ -x $venv/bin/python && -f $stamp && $(<"$stamp") == "$key" ]]; then
        return
    fi
    if [[ $fresh == fresh ]]; then
        rm -rf "$venv"
    fi
    if [[ ! -x $venv/bin/python ]]; then
        check_python
        log "creating $venv"
        "$PYTHON" -m venv "$venv"
    fi
    log "installing $requirements into $venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$requirements" \
        || die "installing $requirements into $venv failed (see above)"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e . \
        || die "installing the worker (pip install -e .) into $venv failed (see above)"
    echo "$key" > "$stamp"
}

# .venv: everything `make test` and `make lint` need.
ensure_venv() { ensure_worker_venv "$VENV" builder/requirements-dev.txt; }

# .venv-runtime: the worker as README's COMFYUI_PATH layout installs it, from builder/requirements.txt
# alone (no frontend package, no test tools); the tests start the worker from it once, so a start
# that only works with the dev requirements fails `make test`.
ensure_runtime_venv() { ensure_worker_venv "$RUNTIME_VENV" builder/requirements.txt fresh; }

# The newest frontend release, which the conversion tests run against beside the pinned one:
# installed into .frontend-latest/, as the venv cannot hold a second version of the package.
# Its pin is the "# newest-frontend:" line of builder/requirements-dev.txt (tests/support/frontends.py reads it too).
ensure_newest_frontend() {
    local stamp=$NEWEST_FRONTEND_DIR/.setup-stamp spec
    spec=$(sed -n 's/^# newest-frontend: *//p' builder/requirements-dev.txt)
    [[ $spec == comfyui-frontend-package==* ]] \
        || die "builder/requirements-dev.txt has no '# newest-frontend: comfyui-frontend-package==VERSION' line"
    if [[ -f $stamp && $(<"$stamp") == "$spec" ]]; then
        return
    fi
    log "installing $spec into $NEWEST_FRONTEND_DIR"
    rm -rf "$NEWEST_FRONTEND_DIR"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --target "$NEWEST_FRONTEND_DIR" "$spec" \
        || die "installing $spec into $NEWEST_FRONTEND_DIR failed (see above)"
    echo "$spec" > "$stamp"
}

# A Chromium the worker and the tests can launch: CHROMIUM_EXECUTABLE, a system one, Playwright's
# download, else the distribution's package (installed here when running as root; otherwise the
# exact command is printed).
ensure_chromium() {
    local stamp=$VENV/.chromium-stamp path
    if [[ -n ${CHROMIUM_EXECUTABLE:-} ]]; then
        [[ -x $CHROMIUM_EXECUTABLE ]] || die "CHROMIUM_EXECUTABLE=$CHROMIUM_EXECUTABLE is not an executable file"
        return
    fi
    system_chromium && return
    if [[ -f $stamp ]] && [[ -x $(<"$stamp") ]]; then
        return
    fi
    log "no system Chromium; downloading Playwright's (playwright install chromium)"
    if timeout 600 "$VENV/bin/playwright" install --no-shell chromium; then
        path=$("$VENV/bin/python" -c \
            'from playwright.sync_api import sync_playwright as s; p = s().start(); print(p.chromium.executable_path); p.stop()')
        [[ -x $path ]] || die "Playwright installed Chromium, but $path is not executable"
        echo "$path" > "$stamp"
        return
    fi
    install_distribution_chromium
}

system_chromium() {
    local name
    for name in chromium chromium-browser google-chrome; do
        command -v "$name" >/dev/null && return 0
    done
    return 1
}

# apt-get, waiting while another apt holds the package lock (unattended-upgrades does at a fresh
# machine's boot) instead of failing at once. apt waits for the dpkg lock itself
# (DPkg::Lock::Timeout), but `apt-get update` fails at once on the lists lock: it is tried again.
APT_LOCK_TIMEOUT_S=300
apt_get() {
    local deadline=$((SECONDS + APT_LOCK_TIMEOUT_S)) output status holder
    output=$(mktemp)
    log "apt-get $* (waits up to ${APT_LOCK_TIMEOUT_S}s for the package lock if another apt holds it)"
    while true; do
        status=0
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT_S" "$@" 2>&1 \
            | tee "$output" >&2 || status=${PIPESTATUS[0]}
        if ((status == 0)) || ! grep -q "Could not get lock" "$output" || ((SECONDS >= deadline)); then
            rm -f "$output"
            return "$status"
        fi
        holder=$(grep -o 'held by process [0-9]* ([^)]*)' "$output" | head -n 1)
        log "waiting for the package lock, ${holder:-held by another apt}; up to $((deadline - SECONDS))s more"
        sleep 5
    done
}

# apt-get install of $@ after an update, as root (CI's and the image tier's system packages).
apt_install() {
    [[ $(id -u) -eq 0 ]] || die "installing $* needs root: sudo apt-get install $*"
    apt_get update -qq || die "apt-get update failed (see above)"
    apt_get install -y -qq --no-install-recommends "$@" || die "installing $* failed (see above)"
}

# Debian's package is `chromium` (Ubuntu's deb is `chromium-browser`, a snap wrapper).
install_distribution_chromium() {
    local packages=(chromium)
    if ! apt-cache show chromium >/dev/null 2>&1 && apt-cache show chromium-browser >/dev/null 2>&1; then
        packages=(chromium-browser)
    fi
    # Debian also ships the headless shell the worker prefers (less memory; same conversions).
    if [[ ${packages[0]} == chromium ]] && apt-cache show chromium-headless-shell >/dev/null 2>&1; then
        packages+=(chromium-headless-shell)
    fi
    if [[ $(id -u) -ne 0 ]]; then
        die "no Chromium: none on PATH and Playwright's download failed. Install the distribution's package:
    sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends ${packages[*]}'
or set CHROMIUM_EXECUTABLE to a Chromium/Chrome binary"
    fi
    command -v apt-get >/dev/null \
        || die "no Chromium: none on PATH, Playwright's download failed, and there is no apt-get; install Chromium or set CHROMIUM_EXECUTABLE"
    log "Playwright's download failed; installing the distribution's Chromium (${packages[*]})"
    apt_install "${packages[@]}"
    system_chromium || die "installed ${packages[*]}, but no chromium is on PATH"
}

# The lock's entries of torch's CUDA build (torch, torchvision, torchaudio, triton, nvidia-*).
CUDA_TORCH_RE='^(torch|torchvision|torchaudio|triton|nvidia-[a-z0-9-]+)=='

# The lock without those: each entry is an unindented `name==version \` line followed by its
# indented hash and comment lines.
lock_without_cuda_torch() {
    awk -v cuda="$CUDA_TORCH_RE" '/^[A-Za-z0-9]/ { skip = ($0 ~ cuda) } !skip' "$LOCK"
}

# The interpreter .comfyui-venv is made with: the lock's Python (its header's --python-version), as
# LOCK_PYTHON, python3.X on PATH, or a pyenv install of it. A pyenv shim on PATH may exist and still
# fail, so each candidate must run and report that version.
lock_python() {
    local version candidate
    version=$(sed -n 's/.*--python-version \([0-9.]*\).*/\1/p' "$LOCK" | head -n 1)
    [[ -n $version ]] || die "builder/requirements.lock's header names no --python-version"
    local candidates=("${LOCK_PYTHON:-}")
    if [[ -z ${LOCK_PYTHON:-} ]]; then
        candidates=("python$version" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version")
    fi
    for candidate in "${candidates[@]}"; do
        if "$candidate" -c "import sys, venv, ensurepip; sys.exit('%d.%d' % sys.version_info[:2] != '$version')" \
                2>/dev/null; then
            command -v "$candidate"
            return
        fi
    done
    if [[ -n ${LOCK_PYTHON:-} ]]; then
        die "LOCK_PYTHON=$LOCK_PYTHON is not a Python $version that can create virtual environments"
    fi
    die "builder/requirements.lock holds wheels for Python $version, and no python$version runs here: install it
(the distribution's python$version and python$version-venv, or pyenv install $version) or set LOCK_PYTHON"
}

# Installs the lock into .comfyui-venv. TORCH_BUILDS=cpu swaps the lock's torch entries for CPU
# builds of the same versions (gigabytes of CUDA libraries a CPU run does not use), so everything
# else is exactly what the image has; TORCH_BUILDS=lock installs the lock as the image does.
install_lock() {
    local torch lock=$LOCK
    if [[ $TORCH_BUILDS == cpu ]]; then
        # Both without dependencies: the lock is complete, and pip check below proves it.
        mapfile -t torch < <(grep -oE '^(torch|torchvision|torchaudio)==[^ ]+' "$LOCK")
        log "installing ${torch[*]} (CPU builds, $TORCH_INDEX_URL) into $COMFY_VENV"
        "$COMFY_VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps \
            --index-url "$TORCH_INDEX_URL" "${torch[@]}" \
            || die "installing ${torch[*]} from $TORCH_INDEX_URL failed (set TORCH_INDEX_URL, or TORCH_BUILDS=lock for PyPI's builds)"
        lock=$COMFY_VENV/requirements-cpu.lock
        lock_without_cuda_torch > "$lock"
    fi
    log "installing builder/requirements.lock into $COMFY_VENV (TORCH_BUILDS=$TORCH_BUILDS)"
    "$COMFY_VENV/bin/python" -m pip install --disable-pip-version-check -q --only-binary=:all: \
        --no-deps --require-hashes -r "$lock" \
        || die "installing builder/requirements.lock failed (see above)"
    "$COMFY_VENV/bin/python" -m pip check || die "$COMFY_VENV has conflicting dependencies (above)"
}

# The pinned ComfyUI checked out in .comfyui/.
ensure_comfyui_checkout() {
    if [[ ! -d $COMFY_DIR/.git ]]; then
        log "cloning ComfyUI $COMFYUI_REF from $COMFYUI_REPO into $COMFY_DIR"
        git clone --quiet --filter=blob:none "$COMFYUI_REPO" "$COMFY_DIR" \
            || die "cloning $COMFYUI_REPO failed; without network access, set COMFYUI_REPO to a reachable copy or point COMFYUI_PATH at an existing ComfyUI"
    fi
    if ! git -C "$COMFY_DIR" rev-parse --verify --quiet "$COMFYUI_REF^{commit}" >/dev/null; then
        git -C "$COMFY_DIR" fetch --quiet --tags origin || die "fetching $COMFYUI_REPO failed"
    fi
    git -C "$COMFY_DIR" -c advice.detachedHead=false checkout --quiet --detach "$COMFYUI_REF" \
        || die "ComfyUI ref $COMFYUI_REF not found (or $COMFY_DIR has local changes)"
    cmp -s "$ROOT/builder/comfyui-requirements.txt" "$COMFY_DIR/requirements.txt" \
        || die "ComfyUI $COMFYUI_REF's requirements.txt is not builder/comfyui-requirements.txt, from which
builder/requirements.lock was made: re-lock (README, \"Deploying to RunPod\")"
    # No first-visit tutorial over the frontend: the worker's page sets this itself, a browser opened
    # on this ComfyUI by hand does not.
    local settings=$COMFY_DIR/user/default/comfy.settings.json
    if [[ ! -f $settings ]]; then
        mkdir -p "$(dirname "$settings")"
        echo '{"Comfy.TutorialCompleted": true}' > "$settings"
    fi
}

# A ComfyUI to run: COMFYUI_PATH as given, or the pinned one (ensure_pinned_comfyui). Exports
# COMFYUI_PATH and API_COMMAND_LINE for the worker.
ensure_comfyui() {
    local python_q
    if [[ -n ${COMFYUI_PATH:-} ]]; then
        [[ -f $COMFYUI_PATH/main.py ]] || die "COMFYUI_PATH=$COMFYUI_PATH has no main.py; is it a ComfyUI checkout?"
        export COMFYUI_PATH
        export API_COMMAND_LINE=${API_COMMAND_LINE:-"${COMFY_PYTHON:-python3} main.py --cpu"}
        return
    fi
    ensure_pinned_comfyui
    export COMFYUI_PATH=$COMFY_DIR
    printf -v python_q '%q' "$COMFY_VENV/bin/python"
    export API_COMMAND_LINE=${API_COMMAND_LINE:-"$python_q main.py --cpu"}
}

# The pinned ref in .comfyui/, with .comfyui-venv made anew whenever what it is made from changes.
ensure_pinned_comfyui() {
    local python stamp=$COMFY_VENV/.setup-stamp key
    [[ $TORCH_BUILDS == cpu || $TORCH_BUILDS == lock ]] || die "TORCH_BUILDS=$TORCH_BUILDS: expected cpu or lock"
    python=$(lock_python)
    key=$(fingerprint "$COMFYUI_REPO" "$COMFYUI_REF" "$TORCH_BUILDS" "$TORCH_INDEX_URL" "$python" "$LOCK")
    if ! [[ -f $COMFY_DIR/main.py && -x $COMFY_VENV/bin/python && -f $stamp && $(<"$stamp") == "$key" ]]; then
        ensure_comfyui_checkout
        rm -rf "$COMFY_VENV"
        log "creating $COMFY_VENV with $python"
        "$python" -m venv "$COMFY_VENV" || die "creating $COMFY_VENV with $python failed"
        install_lock
        echo "$key" > "$stamp"
    fi
}

# The custom-nodes tier's ComfyUI: a second checkout of the pinned one in .comfyui-nodes/ with the packs
# of tests/custom_nodes.txt installed by the image's own builder/install_custom_nodes.sh, their
# requirements into .comfyui-venv (as the image puts them into its one venv), then --verify. Where
# GitHub is out of reach, NODE_PACKS_BUNDLES is a folder of git bundles, <pack>.bundle, each one
# commit whose message names the upstream commit it copies (../shared/fixtures/git/): the packs are
# installed from those commits, once each is checked to copy the pinned one.
ensure_nodes_comfyui() {
    local stamp=$NODES_DIR/.setup-stamp key list url ref name head
    ensure_pinned_comfyui
    key=$(fingerprint "$(<"$COMFY_VENV/.setup-stamp")" "$NODE_PACKS" "${NODE_PACKS_BUNDLES:-}" \
        builder/install_custom_nodes.sh)
    if [[ -f $stamp && $(<"$stamp") == "$key" ]]; then
        return
    fi
    rm -rf "$NODES_DIR"
    log "setting up $NODES_DIR: ComfyUI $COMFYUI_REF with the packs in ${NODE_PACKS#"$ROOT"/}"
    git clone --quiet --shared "$COMFY_DIR" "$NODES_DIR" || die "cloning $COMFY_DIR into $NODES_DIR failed"
    git -C "$NODES_DIR" -c advice.detachedHead=false checkout --quiet --detach "$(git -C "$COMFY_DIR" rev-parse HEAD)"
    mkdir -p "$NODES_DIR/user/default"
    cp "$COMFY_DIR/user/default/comfy.settings.json" "$NODES_DIR/user/default/"
    list=$NODE_PACKS
    if [[ -n ${NODE_PACKS_BUNDLES:-} ]]; then
        list=$NODES_DIR/custom_nodes.txt
        bash builder/install_custom_nodes.sh --entries "$NODE_PACKS" | while read -r url ref name; do
            head=$(git bundle list-heads "$NODE_PACKS_BUNDLES/$name.bundle" HEAD | cut -d' ' -f1)
            [[ -n $head ]] || die "$NODE_PACKS_BUNDLES/$name.bundle is not a git bundle with a HEAD"
            echo "$url@$head"
        done > "$list" || exit 1
    fi
    GIT_MIRROR=${NODE_PACKS_BUNDLES:+$NODE_PACKS_BUNDLES/} bash builder/install_custom_nodes.sh "$list" \
        "$NODES_DIR" "$COMFY_VENV/bin/python" || die "installing the custom node packs failed (above)"
    if [[ -n ${NODE_PACKS_BUNDLES:-} ]]; then
        bash builder/install_custom_nodes.sh --entries "$NODE_PACKS" | while read -r url ref name; do
            git -C "$NODES_DIR/custom_nodes/$name" log -1 --format=%s | grep -q "$ref" \
                || die "$NODE_PACKS_BUNDLES/$name.bundle does not copy $url@$ref"
        done || exit 1
    fi
    bash builder/install_custom_nodes.sh --verify "$NODES_DIR" "$COMFY_VENV/bin/python" \
        || die "the custom node packs do not load (above)"
    echo "$key" > "$stamp"
}

cmd_run() {
    ensure_venv
    ensure_chromium
    ensure_comfyui
    log "COMFYUI_PATH=$COMFYUI_PATH API_COMMAND_LINE=$API_COMMAND_LINE"
    exec "$VENV/bin/python" handler.py "$@"
}

# The tiers: "real" runs the suite against a real ComfyUI (COMFYUI_PATH, else the pinned one set up
# here), "nodes" the custom-node tests (marked needs_custom_nodes; no other tier runs them) against the
# pinned ComfyUI with the packs of tests/custom_nodes.txt, "server" against tests/comfy_test_server.
# With the real tier, the test server runs only the tests that need its fault injection, so no test
# runs twice. A tier that cannot be set up fails the run; TIERS names the ones to run (TIERS=server:
# the test server alone). The last line says what each tier did.
cmd_test() {
    local tier summary="" status=0 tier_status ran=0
    for tier in $TIERS; do
        [[ $tier == server || $tier == real || $tier == nodes ]] \
            || die "TIERS=\"$TIERS\": each tier is real, nodes or server"
    done
    [[ -n ${TIERS// } ]] || die "TIERS is empty: any of \"real nodes server\""
    ensure_venv
    ensure_runtime_venv
    ensure_chromium
    ensure_newest_frontend
    if [[ " $TIERS " == *" real "* ]]; then
        DIE_HINT="the real tier could not be set up (above); make test TIERS=server runs the test-server tier alone"
        ensure_comfyui
        DIE_HINT=
    fi
    if [[ " $TIERS " == *" nodes "* ]]; then
        DIE_HINT="the custom-nodes tier could not be set up (above); TIERS=\"real server\" runs the others alone"
        ensure_nodes_comfyui
        DIE_HINT=
    fi
    for tier in $TIERS; do
        tier_status=0
        run_tier "$tier" "$@" || tier_status=$?
        case $tier_status in
            0) summary+="; $(tier_name "$tier") passed"; ran=1 ;;
            5) summary+="; $(tier_name "$tier") selected no tests" ;;
            *) summary+="; $(tier_name "$tier") FAILED (pytest exit code $tier_status)"; ran=1; status=$tier_status ;;
        esac
    done
    if ((status == 0 && ran == 0)); then
        status=5
    fi
    log "make test tiers: ${summary#; }"
    return "$status"
}

tier_name() {
    if [[ $1 == real ]]; then
        echo "real (ComfyUI in $COMFYUI_PATH)"
    elif [[ $1 == nodes ]]; then
        echo "nodes (ComfyUI with the packs in $NODES_DIR)"
    elif [[ " $TIERS " == *" real "* ]]; then
        echo "server (the tests that need the test server)"
    else
        echo "server (the whole suite on the test server; no real tier: TIERS=server)"
    fi
}

run_tier() {
    local tier=$1
    shift
    if [[ $tier == real ]]; then
        log "tier real: pytest against the ComfyUI in $COMFYUI_PATH ($API_COMMAND_LINE)"
        "$VENV/bin/python" -m pytest -q "$@"
    elif [[ $tier == nodes ]]; then
        log "tier nodes: the custom-node tests against the ComfyUI in $NODES_DIR"
        (export COMFYUI_PATH=$NODES_DIR API_COMMAND_LINE="$(printf '%q' "$COMFY_VENV/bin/python") main.py --cpu"
         CUSTOM_NODES_TIER=1 exec "$VENV/bin/python" -m pytest -q "$@")
    elif [[ " $TIERS " == *" real "* ]]; then
        log "tier server: pytest against the test server, only the tests that need it"
        (unset COMFYUI_PATH API_COMMAND_LINE; TEST_SERVER_TESTS_ONLY=1 exec "$VENV/bin/python" -m pytest -q "$@")
    else
        log "tier server: pytest against the test server (TIERS=server: no real ComfyUI)"
        (unset COMFYUI_PATH API_COMMAND_LINE; exec "$VENV/bin/python" -m pytest -q "$@")
    fi
}

cmd_lint() {
    ensure_venv
    local status=0
    "$VENV/bin/ruff" check . || status=1
    "$VENV/bin/mypy" || status=1
    "$VENV/bin/hadolint" Dockerfile || status=1
    for script in builder/*.sh; do
        bash -n "$script" || status=1
    done
    return "$status"
}

case ${1:-} in
    run) shift; cmd_run "$@" ;;
    test) shift; cmd_test "$@" ;;
    lint) shift; cmd_lint ;;
    venv) ensure_venv ;;
    apt-install) shift; apt_install "$@" ;;
    chromium) ensure_venv; ensure_chromium ;;
    newest-frontend) ensure_venv; ensure_newest_frontend ;;
    comfyui) ensure_comfyui; echo "COMFYUI_PATH=$COMFYUI_PATH"; echo "API_COMMAND_LINE=$API_COMMAND_LINE" ;;
    nodes-comfyui) ensure_nodes_comfyui; echo "COMFYUI_PATH=$NODES_DIR" ;;
    *) die "usage: $0 run|test|lint|venv|chromium|comfyui|nodes-comfyui|newest-frontend|apt-install [args]" ;;
esac
