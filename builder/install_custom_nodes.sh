#!/usr/bin/env bash
# Install the custom nodes pinned in a list file into ComfyUI, and check the final environment;
# fail loudly on any error.
#
#   install_custom_nodes.sh LIST COMFYUI_DIR [PYTHON]   install the listed node packs
#   install_custom_nodes.sh --verify COMFYUI_DIR [PYTHON]  pip check, then ComfyUI imports them all
#   install_custom_nodes.sh --check LIST                only validate the list (no network)
#   install_custom_nodes.sh --entries LIST              print "url ref name" per entry (no network)
#
# LIST has one `https://host/owner/repo@<ref>` per line (ref: a 40-hex commit, or a tag);
# blank lines and `#` comments are ignored. Each entry is cloned into
# COMFYUI_DIR/custom_nodes/<repo>, checked out at <ref> (with submodules), and its
# requirements.txt and install.py, if present, are run with PYTHON (default: python3 on
# PATH, i.e. the image's venv).
#
# GIT_MIRROR (a test stand-in where GitHub cannot be reached, e.g. git://127.0.0.1/) clones each
# entry from GIT_MIRROR<repo> instead of its URL; the list itself stays as users write it.
#
# --verify is a separate step so that the build runs it last, once nothing else will install
# a package: a later install could move a package a node pack shares, and pip would only print
# a warning. It fails if `pip check` finds any conflict, or, unless VERIFY_CUSTOM_NODES=0
# (e.g. for a node pack that needs a GPU at import time), if ComfyUI does not start with
# --quick-test-for-ci (it exits after loading all nodes) or any custom node failed to import.
# It runs even with no custom nodes: it is also the build's "ComfyUI starts" smoke test.
set -euo pipefail

ENTRY_RE='^(https://[A-Za-z0-9.-]+/[A-Za-z0-9._~/-]+)@([0-9a-f]{40}|[A-Za-z0-9][A-Za-z0-9._/-]*)$'

die() { echo "install_custom_nodes: error: $*" >&2; exit 1; }

# Prints "url ref name" for each entry; dies on a malformed line or a duplicate name.
parse_list() {
    local list=$1 line number=0 url ref name
    local -A seen=()
    [[ -f $list ]] || die "$list does not exist"
    while IFS= read -r line || [[ -n $line ]]; do
        number=$((number + 1))
        line=${line%%#*}                       # comments, whole-line or trailing
        line=${line//[$'\t\r ']/}              # whitespace and CRLF
        [[ -z $line ]] && continue
        [[ $line =~ $ENTRY_RE ]] || die "$list:$number: expected https://host/owner/repo@<40-hex commit or tag>, got '$line'"
        url=${BASH_REMATCH[1]}
        ref=${BASH_REMATCH[2]}
        name=${url%/}
        name=${name##*/}
        name=${name%.git}
        [[ -n $name && $name != . && $name != .. ]] || die "$list:$number: cannot derive a folder name from $url"
        [[ -z ${seen[$name]:-} ]] || die "$list:$number: $name is already listed on line ${seen[$name]}"
        seen[$name]=$number
        printf '%s %s %s\n' "$url" "$ref" "$name"
    done < "$list"
}

install_one() {
    local url=$1 ref=$2 name=$3 comfy=$4 python=$5
    local dest="$comfy/custom_nodes/$name"
    echo "==> $name: $url @ $ref"
    [[ ! -e $dest ]] || die "$dest already exists"
    if [[ -n ${GIT_MIRROR:-} ]]; then
        url=$GIT_MIRROR$name
        echo "    from the mirror $url"
    fi
    git clone --quiet --filter=blob:none "$url" "$dest" || die "$name: git clone $url failed"
    git -C "$dest" -c advice.detachedHead=false checkout --quiet --detach "$ref" \
        || die "$name: ref $ref not found in $url"
    if [[ -f $dest/.gitmodules ]]; then
        git -C "$dest" submodule update --quiet --init --recursive --depth 1 || die "$name: submodules failed"
    fi
    echo "    at $(git -C "$dest" rev-parse HEAD)"
    if [[ -f $dest/requirements.txt ]]; then
        echo "    pip install -r requirements.txt"
        "$python" -m pip install --no-cache-dir -r "$dest/requirements.txt" \
            || die "$name: installing its requirements.txt failed"
    fi
    if [[ -f $dest/install.py ]]; then
        echo "    python install.py"
        (cd "$dest" && "$python" install.py) || die "$name: its install.py failed"
    fi
}

# pip check, then start ComfyUI once (it exits right after loading every node) and fail on
# any conflict or import failure.
verify() {
    local comfy=$1 python=$2 log
    [[ -f $comfy/main.py ]] || die "$comfy does not look like ComfyUI (no main.py)"
    echo "==> pip check"
    "$python" -m pip check || die "the environment has conflicting or missing dependencies (above)"
    if [[ ${VERIFY_CUSTOM_NODES:-1} == 0 ]]; then
        echo "==> VERIFY_CUSTOM_NODES=0: not starting ComfyUI"
        return
    fi
    log=$(mktemp)
    echo "==> checking that ComfyUI starts and imports every custom node (--quick-test-for-ci --cpu)"
    if ! (cd "$comfy" && timeout 900 "$python" main.py --quick-test-for-ci --cpu) >"$log" 2>&1; then
        cat "$log" >&2
        die "ComfyUI failed to start with the custom nodes installed (log above)"
    fi
    if grep -E '\(IMPORT FAILED\)|Cannot import .*/custom_nodes/' "$log" >&2; then
        cat "$log" >&2
        die "a custom node failed to import (see 'IMPORT FAILED' above); fix its pin or its dependencies"
    fi
    grep -E 'seconds: .*custom_nodes' "$log" || true
    rm -f "$log" "$comfy/user/comfyui.db"
}

main() {
    if [[ ${1:-} == --check ]]; then
        [[ $# -eq 2 ]] || die "usage: $0 --check LIST"
        parse_list "$2" >/dev/null
        echo "$2: ok"
        return
    fi
    if [[ ${1:-} == --entries ]]; then
        [[ $# -eq 2 ]] || die "usage: $0 --entries LIST"
        parse_list "$2"
        return
    fi
    if [[ ${1:-} == --verify ]]; then
        [[ $# -ge 2 && $# -le 3 ]] || die "usage: $0 --verify COMFYUI_DIR [PYTHON]"
        verify "$2" "${3:-python3}"
        return
    fi
    [[ $# -ge 2 && $# -le 3 ]] || die "usage: $0 LIST COMFYUI_DIR [PYTHON]  |  $0 --verify COMFYUI_DIR [PYTHON]  |  $0 --check LIST"
    local list=$1 comfy=$2 python=${3:-python3} entries count=0 url ref name
    [[ -f $comfy/main.py ]] || die "$comfy does not look like ComfyUI (no main.py)"
    entries=$(parse_list "$list")
    mkdir -p "$comfy/custom_nodes"
    while read -r url ref name; do
        [[ -n $url ]] || continue
        install_one "$url" "$ref" "$name" "$comfy" "$python"
        count=$((count + 1))
    done <<< "$entries"
    echo "installed $count custom node(s) from $list; check them with --verify once the environment is final"
}

main "$@"
