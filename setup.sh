#!/usr/bin/env bash
# xenscope set-up, demo and tests.
#   ./setup.sh          install what is missing, then run the demo on a bundled core (gdb, then CLI)
#   ./setup.sh test     install what is missing, then run the whole test suite
#   ./setup.sh install  install only
# Idempotent: a second run installs nothing and takes a second or two.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
action=${1:-demo}
venv=${XENSCOPE_VENV:-$here/.venv}
# gdb embeds Debian's /usr/bin/python3: the venv must be made from it, not from the python3 on PATH.
syspy=/usr/bin/python3
# the real-system test tier boots Debian's own kernels under QEMU (x86_64, and i386 PAE: its
# kernel and busybox are downloaded with apt-get download, so the i386 architecture is enabled)
# crash (with /usr/include/crash/defs.h), gcc and python3-dev build the crash extension.
# make and gcc-12 (the compiler Debian builds its 6.1 kernels with) build the test tier's kernel
# modules against the booted kernel's linux-headers, which the tier fetches into its cache itself;
# flex and bison build the debug Xen of the real-system tier; dpkg-dev unpacks Debian's Xen source
# (dpkg-source) and dates its rebuild with -g (dpkg-parsechangelog) for the shipped Xen profiles' check.
# chromium renders `check --html`'s report headless in the tests (its text and a screenshot).
# debian-archive-keyring signs the bullseye/trixie lists the tier fetches with a sources list of its own.
debs=(gdb python3 python3-venv python3-pip python3-libkdumpfile makedumpfile qemu-system-x86 busybox-static
      crash gcc libc6-dev python3-dev make gcc-12 flex bison dpkg-dev chromium debian-archive-keyring)

say() { printf '== %s\n' "$*"; }

install_debs() {
    local missing=() update=0 sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    for p in "${debs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ! dpkg --print-foreign-architectures | grep -qx i386; then
        say "enabling the i386 architecture (for the i386 PAE kernel of the test tier)"
        $sudo dpkg --add-architecture i386
        update=1
    fi
    [ ${#missing[@]} -gt 0 ] && update=1
    if [ "$update" = 1 ]; then
        # a mirror in mid-sync can fail one index: go on with what was fetched
        $sudo apt-get update -q >/dev/null 2>&1 || say "apt-get update reported errors; continuing"
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

install_venv() {
    local stamp="$venv/.xenscope-stamp" want
    want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv from $syspy (the Python gdb embeds), with Debian's site-packages for libkdumpfile"
        "$syspy" -m venv --system-site-packages "$venv"
    fi
    say "installing xenscope and its Python dependencies into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,dask]"
    echo "$want" > "$stamp"
}

# The crash extension (crashext/xenscope.so): a thin C bridge embedding $syspy's libpython, built
# by `xenscope crash-extension` (the same command an installed wheel uses: gcc against crash's
# defs.h); rebuilt only when its source, crash's defs.h or the Python library changes.
build_crash_ext() {
    local out
    out=$("$venv/bin/xenscope" crash-extension) || { echo "$out" >&2; return 1; }
    case "$out" in *": built ("*) say "built the crash extension crashext/xenscope.so (against crash's defs.h)" ;; esac
}

demo() {
    local core=cores/x86_64-4level.core
    say "gdb: $core with the extension loaded"
    gdb -nx -batch \
        -ex "source $here/gdbext/xenscope.py" \
        -ex "core-file $core" \
        -ex "xen info" \
        -ex "xen walk ffff888000001000" \
        -ex "xen maps --limit 12" \
        -ex "xen pte 0x800000007fffe067"
    say "CLI: the same through xenscope"
    "$venv/bin/xenscope" info "$core"
    "$venv/bin/xenscope" walk "$core" ffff888000001000
    "$venv/bin/xenscope" maps "$core" --limit 12
    "$venv/bin/xenscope" pte 0x800000007fffe067
    say "crash: the same inside the crash utility (minimal mode: the bundled cores are not real kernels)"
    local cmds
    cmds=$(mktemp)
    printf '%s\n' "extend $here/crashext/xenscope.so" "xen walk ffff888000001000" "xen modules" \
        "xen modcheck" "exit" > "$cmds"
    XENSCOPE_VENV=$venv crash -s --minimal cores/mod-x86_64.vmlinux cores/mod-x86_64.core -i "$cmds" </dev/null
    rm -f "$cmds"
}

install_debs
install_venv
build_crash_ext
case "$action" in
    demo) demo ;;
    install) ;;
    test)
        shift || true
        set +e
        "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" tests
        rc=$?
        exit $rc ;;
    *) echo "usage: $0 [demo|test|install]" >&2; exit 2 ;;
esac
