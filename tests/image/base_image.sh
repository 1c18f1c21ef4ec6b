#!/usr/bin/env bash
# A local stand-in for the Dockerfile's base image, for the image tier on machines that cannot reach
# Docker Hub: a debootstrap --variant=minbase of Debian trixie, plus this machine's CPython 3.12 (the
# lock's Python) at /usr/local, plus this machine's CA certificates (registries may be reached through
# a TLS-inspecting proxy here). Never used for a real build: users build FROM the CUDA base.
#
#   tests/image/base_image.sh [TAG]        # default comfy-serverless-test-base:trixie-py3.12
#
# PYTHON_PREFIX (default: pyenv's 3.12) is copied as it is; /usr/local/lib goes into ld.so.conf so
# that its libpython is found from the new place. Idempotent: an existing TAG is kept.
set -euo pipefail

tag=${1:-comfy-serverless-test-base:trixie-py3.12}
prefix=${PYTHON_PREFIX:-$(ls -d /root/.pyenv/versions/3.12.* 2>/dev/null | sort -V | tail -n 1)}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-/usr/bin/docker}

say() { echo "base_image: $*" >&2; }

if "$docker" image inspect "$tag" >/dev/null 2>&1; then
    say "$tag exists"
    exit 0
fi
[[ -x $prefix/bin/python3.12 ]] || { say "no CPython 3.12 in '$prefix' (set PYTHON_PREFIX)"; exit 1; }
command -v debootstrap >/dev/null || { say "needs debootstrap (apt-get install debootstrap)"; exit 1; }

root=$(mktemp -d /tmp/comfy-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
say "debootstrap trixie (minbase) into $root"
# The libraries CPython's extension modules link against, and ca-certificates to install ours.
debootstrap --variant=minbase \
    --include=ca-certificates,libssl3t64,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libreadline8t64,libncursesw6,libuuid1 \
    trixie "$root" "$mirror" >/dev/null
say "CPython from $prefix into /usr/local"
cp -a "$prefix/." "$root/usr/local/"
echo /usr/local/lib > "$root/etc/ld.so.conf.d/usr-local.conf"
chroot "$root" ldconfig
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
chroot "$root" update-ca-certificates >/dev/null
chroot "$root" /usr/local/bin/python3.12 -c "import ssl, sqlite3, ctypes, lzma, bz2, zlib, venv; print('python', __import__('sys').version.split()[0])"
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
tar -C "$root" -c . | "$docker" import \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
say "made $tag"
