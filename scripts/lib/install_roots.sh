# Clean Debian roots where the install tests put the wheel as a plugin team
# would (issue 27): `debootstrap --variant=minbase` with only Python and its
# venv module (no MySQL client, no TLS library beyond what Python itself
# pulls in), a venv with the real framework and the test plugin project's
# requirements, then `pip install` of the wheel. Sourced after services.sh.
#
# The roots and their venvs are cached under $ROOTS_CACHE (rebuilt when the
# requirements change); the wheel is installed afresh every run.

ROOTS_CACHE="${CELERITY_ROOTS_CACHE:-$HOME/.cache/celerity/roots}"
ROOT_MIRROR="${CELERITY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# The venv's requirements: the framework's, without the interop tests' pins
# (Celery 5.7 needs a newer Python than bullseye's 3.9).
install_requirements() {
    grep -v '^#' tests/python/framework-requirements.txt
    echo 'celery>=5.2,<6'
    echo 'pymysql>=1.0,<2'
    echo 'pydantic>=2,<3'
}

# A cached minbase root of RELEASE with Python and a venv holding the framework.
ensure_root() {
    local release="$1" root="$ROOTS_CACHE/$1"
    if ! [ -x "$root/usr/bin/python3" ]; then
        command -v debootstrap >/dev/null 2>&1 || apt-get install -y -qq debootstrap >/dev/null
        log "debootstrap $release (minbase; once)"
        rm -rf "$root.part"
        debootstrap --variant=minbase --include=python3,python3-venv "$release" "$root.part" "$ROOT_MIRROR" >/dev/null &&
            mv "$root.part" "$root" || return 1
    fi
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount_root "$root"
    local want stamp="$root/opt/plugin/.requirements.sha256"
    want=$(install_requirements | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "the plugin project's venv in the $release root (once)"
        rm -rf "$root/opt/plugin/venv"
        mkdir -p "$root/opt/plugin"
        install_requirements > "$root/opt/plugin/requirements.txt"
        chroot "$root" /usr/bin/python3 -m venv /opt/plugin/venv &&
            root_pip "$root" -r /opt/plugin/requirements.txt &&
            root_pip "$root" --no-deps bk-plugin-framework==2.3.15 &&
            echo "$want" > "$stamp" || return 1
    fi
}

# pip in ROOT's venv. A CA bundle this machine's pip is told to trust (a
# proxy's) goes with it, beside the venv, not into the root's /etc/ssl.
root_pip() {
    local root="$1"
    shift
    local cert=()
    if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
        cp "$PIP_CERT" "$root/opt/plugin/pip-ca.crt"
        cert=(--cert /opt/plugin/pip-ca.crt)
    fi
    # Nothing of this machine's environment: its CA variables name files the root does not have.
    chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root /opt/plugin/venv/bin/pip install -q \
        --disable-pip-version-check "${cert[@]}" "$@"
}

# /proc, /sys and /dev inside ROOT (a chrooted process finds its own
# executable through /proc), once.
mount_root() {
    local root="$1" fs
    for fs in proc sys dev; do
        mountpoint -q "$root/$fs" || mount --bind "/$fs" "$root/$fs"
    done
}

unmount_root() {
    local root="$1" fs
    for fs in dev sys proc; do
        mountpoint -q "$root/$fs" && umount -l "$root/$fs"
    done
    return 0
}

# Installs WHEEL and the test plugin project into the venv of RELEASE's root.
install_wheel() {
    local release="$1" wheel="$2" root="$ROOTS_CACHE/$1"
    cp "$wheel" "$root/opt/plugin/" || return 1
    root_pip "$root" --force-reinstall --no-deps "/opt/plugin/$(basename "$wheel")"
    rm -rf "$root/opt/plugin/project"
    cp -r tests/python/plugin_project "$root/opt/plugin/project"
}
