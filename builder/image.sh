#!/usr/bin/env bash
# The image: build it (`make image`), or build it with the test stand-ins and run the image tier
# against it (`make image-test`). Docker is set up first when it is missing: as root, Debian's
# docker.io is installed and dockerd started with host networking only; otherwise the script
# says what to run.
#
#   image.sh build [docker build args]     the image as users build it: IMAGE (default comfy-serverless:local)
#   image.sh test  [pytest args]           the test base, git daemon and builds, then pytest tests/image
#
# Environment (build): IMAGE; BUILD_ARGS, more `docker build` arguments (e.g. "--build-arg
# BASE_IMAGE=…"). Environment (test): TEST_IMAGE (default comfy-serverless:image-test), TEST_BASE
# (the base image stand-in, made by tests/image/base_image.sh). Every container and build uses the
# host's network: a bridge network's addresses are private ones.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DOCKER=${DOCKER:-/usr/bin/docker}
IMAGE=${IMAGE:-comfy-serverless:local}
TEST_IMAGE=${TEST_IMAGE:-comfy-serverless:image-test}
TEST_BASE=${TEST_BASE:-comfy-serverless-test-base:trixie-py3.12}
WORK=$ROOT/.image-test
GIT_PORT=${GIT_PORT:-9418}
BUNDLES=${BUNDLES:-$ROOT/../shared/fixtures/git}

log() { echo "image: $*" >&2; }
die() { echo "image: error: $*" >&2; exit 1; }

ensure_docker() {
    if [[ ! -x $DOCKER ]]; then
        [[ $(id -u) == 0 ]] || die "no Docker client at $DOCKER: install Debian's docker.io (sudo apt-get install docker.io) or set DOCKER"
        log "installing docker.io"
        bash builder/local_setup.sh apt-install docker.io
    fi
    if "$DOCKER" info >/dev/null 2>&1; then
        return
    fi
    [[ $(id -u) == 0 ]] || die "the Docker daemon does not answer: start it (sudo dockerd --bridge=none --iptables=false &) or join the docker group"
    mkdir -p "$WORK"
    log "starting dockerd (host networking only; log in $WORK/dockerd.log)"
    nohup dockerd --storage-driver=overlay2 --bridge=none --iptables=false --ip-masq=false \
        >"$WORK/dockerd.log" 2>&1 &
    for _ in $(seq 120); do
        if "$DOCKER" info >/dev/null 2>&1; then return; fi
        sleep 0.5
    done
    die "dockerd did not answer within 60 s; see $WORK/dockerd.log"
}

build() {  # build TAG [docker build args]
    local tag=$1
    shift
    log "building $tag $*"
    local started=$SECONDS
    local status=0
    DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain -t "$tag" "$@" . 2>&1 \
        | sed -u 's/^/  /' >&2 || status=$?
    ((status == 0)) || die "the build of $tag failed (above)"
    log "built $tag in $((SECONDS - started)) s ($("$DOCKER" image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}'))"
}

# The GitHub stand-in: the bundles as bare repositories, served read-only on 127.0.0.1.
serve_git() {
    local served=$WORK/git
    [[ -d $BUNDLES ]] || die "no git bundles in $BUNDLES (set BUNDLES): the image tier clones ComfyUI from them"
    mkdir -p "$served"
    local bundle name
    for bundle in "$BUNDLES"/*.bundle; do
        name=$(basename "$bundle" .bundle)
        [[ -d $served/$name.git ]] || git clone -q --bare "$bundle" "$served/$name.git"
    done
    if ! git ls-remote "git://127.0.0.1:$GIT_PORT/ComfyUI.git" >/dev/null 2>&1; then
        log "serving $served on git://127.0.0.1:$GIT_PORT"
        nohup git daemon --base-path="$served" --export-all --reuseaddr --listen=127.0.0.1 --port="$GIT_PORT" \
            "$served" >"$WORK/git-daemon.log" 2>&1 &
        for _ in $(seq 50); do
            git ls-remote "git://127.0.0.1:$GIT_PORT/ComfyUI.git" >/dev/null 2>&1 && return
            sleep 0.2
        done
        die "git daemon did not answer; see $WORK/git-daemon.log"
    fi
}

cmd_build() {
    ensure_docker
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of words
    build "$IMAGE" ${BUILD_ARGS:-} "$@"
}

cmd_test() {
    ensure_docker
    if ! command -v debootstrap >/dev/null; then
        [[ $(id -u) == 0 ]] || die "the test base needs debootstrap: sudo apt-get install debootstrap"
        bash builder/local_setup.sh apt-install debootstrap
    fi
    bash builder/local_setup.sh venv >/dev/null
    bash tests/image/base_image.sh "$TEST_BASE"
    serve_git
    local stand_ins=(--build-arg "BASE_IMAGE=$TEST_BASE" --build-arg "COMFYUI_REPO=git://127.0.0.1:$GIT_PORT/ComfyUI.git"
                     --build-arg CHROMIUM=distribution)
    build "$TEST_IMAGE" "${stand_ins[@]}"
    build "$TEST_IMAGE-slim" "${stand_ins[@]}" --build-arg WITH_BROWSER=0
    log "image tier: pytest tests/image against $TEST_IMAGE (and builds with other inputs)"
    IMAGE_UNDER_TEST=$TEST_IMAGE SLIM_IMAGE_UNDER_TEST=$TEST_IMAGE-slim IMAGE_BUILD_ARGS="${stand_ins[*]}" \
        GIT_SERVED=$WORK/git GIT_URL=git://127.0.0.1:$GIT_PORT/ .venv/bin/python -m pytest -q tests/image "$@"
}

case ${1:-} in
    build) shift; cmd_build "$@" ;;
    test) shift; cmd_test "$@" ;;
    *) die "usage: $0 build|test [args]" ;;
esac
