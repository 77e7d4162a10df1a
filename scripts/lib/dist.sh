# The self-contained build of celerity (issue 27), shared by scripts/dist and
# the install tests. Sourced after services.sh, not run.
#
# What makes it run on any glibc >= 2.17 with no library beyond glibc's own:
# - zig's C compiler and linker, which carry glibc 2.17's symbol versions
#   (cargo-zigbuild drives rustc with it: target `<arch>-unknown-linux-gnu.2.17`);
# - OpenSSL built from its pinned source with that compiler, and Debian's
#   static MariaDB Connector/C and zlib (pinned packages), merged into one
#   archive (`libcelerity_mysql.a`) that mysqlclient-sys links statically:
#   diesel and r2d2 stay as they are.
# Everything is cached under $DIST_CACHE: the downloads (checked against
# their SHA-256), the C libraries per architecture, the zig toolchain, and a
# cargo target directory, so a second build only recompiles Celerity.

DIST_CACHE="${CELERITY_DIST_CACHE:-$HOME/.cache/celerity/dist}"
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
# OpenSSL 3.5 (LTS) as the openssl-src crate ships it, from crates.io.
OPENSSL_CRATE=openssl-src-300.5.4+3.5.4
OPENSSL_CRATE_URL="https://static.crates.io/crates/openssl-src/$OPENSSL_CRATE.crate"
OPENSSL_CRATE_SHA256=a507b3792995dae9b0df8a1c1e3771e8418b7c2d9f0baeba32e6fe8b06c7cb72
# The Connector/C version of Debian's libmariadb-dev below (for mysqlclient-sys's bindings).
MARIADB_CONNECTOR_VERSION=3.3.20
# The oldest glibc the binary may need, and the only libraries it may load.
DIST_GLIBC=2.17
DIST_ALLOWED_LIBS="libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libgcc_s.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1"

dist_version() {
    sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1
}

# zig from PyPI (the ziglang wheel) and cargo-zigbuild from crates.io, pinned.
ensure_dist_tools() {
    local venv="$DIST_CACHE/zig-venv"
    if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -m ziglang version 2>/dev/null | grep -qx "$ZIGLANG_VERSION"; then
        log "installing zig $ZIGLANG_VERSION (PyPI: ziglang)"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
    fi
    ZIG="$("$venv/bin/python" -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')"
    export PATH="$(dirname "$ZIG"):$PATH"
    if ! cargo-zigbuild --version 2>/dev/null | grep -q "$CARGO_ZIGBUILD_VERSION"; then
        log "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION"
        cargo install -q --locked --version "$CARGO_ZIGBUILD_VERSION" cargo-zigbuild
    fi
}

# Downloads FILE from URL into the cache once, and checks its SHA-256 every time.
fetch_pinned() {
    local url="$1" file="$2" sha="$3"
    mkdir -p "$DIST_CACHE/src"
    if ! [ -f "$DIST_CACHE/src/$file" ]; then
        log "downloading $url"
        curl -sSfL -o "$DIST_CACHE/src/$file.part" "$url"
        mv "$DIST_CACHE/src/$file.part" "$DIST_CACHE/src/$file"
    fi
    echo "$sha  $DIST_CACHE/src/$file" | sha256sum -c --quiet - >&2 || {
        log "$file does not match its pinned SHA-256; delete it to download again"
        return 1
    }
}

# Compiler wrappers for one architecture: zig cc for glibc 2.17, zig's ar and ranlib.
zig_wrappers() {
    local arch="$1" bin="$DIST_CACHE/$1/bin"
    mkdir -p "$bin"
    printf '#!/bin/sh\nexec "%s" cc -target %s-linux-gnu.%s "$@"\n' "$ZIG" "$arch" "$DIST_GLIBC" > "$bin/cc"
    printf '#!/bin/sh\nexec "%s" ar "$@"\n' "$ZIG" > "$bin/ar"
    printf '#!/bin/sh\nexec "%s" ranlib "$@"\n' "$ZIG" > "$bin/ranlib"
    chmod +x "$bin/cc" "$bin/ar" "$bin/ranlib"
    echo "$bin"
}

# Static OpenSSL for ARCH into $DIST_CACHE/ARCH/openssl.
build_openssl() {
    local arch="$1" prefix="$DIST_CACHE/$1/openssl"
    [ -f "$prefix/lib/libssl.a" ] && [ -f "$prefix/lib/libcrypto.a" ] && return 0
    fetch_pinned "$OPENSSL_CRATE_URL" "$OPENSSL_CRATE.crate" "$OPENSSL_CRATE_SHA256"
    local bin work
    bin=$(zig_wrappers "$arch")
    work=$(mktemp -d)
    tar xzf "$DIST_CACHE/src/$OPENSSL_CRATE.crate" -C "$work"
    log "building OpenSSL for $arch (a few minutes, once)"
    (
        cd "$work/$OPENSSL_CRATE/openssl"
        # The system's CA directory (Debian's and Ubuntu's /etc/ssl) as the default trust store.
        ./Configure "linux-$arch" no-shared no-module no-tests no-docs no-apps no-engine \
            --prefix="$prefix" --libdir=lib --openssldir=/etc/ssl \
            CC="$bin/cc" AR="$bin/ar" RANLIB="$bin/ranlib" >/dev/null
        make -s -j"$(nproc)" build_libs >/dev/null
        make -s install_dev >/dev/null
    )
    rm -rf "$work"
}

# Debian's own static MariaDB Connector/C (libmariadb-dev's libmariadbclient.a,
# 3.3.20 from MariaDB 10.11.19) and zlib for ARCH, merged with OpenSSL and a
# shim into $DIST_CACHE/ARCH/mysql/lib/libcelerity_mysql.a. (A Connector/C
# 3.3.19 built here from source returned empty strings to diesel's
# truncated-column fetch; Debian's build of the next release does not.)
declare -A MARIADB_DEV_SHA256=(
    [x86_64]=c8009f73b46d181aeb89b39476fc86634626979b1925c240a1faf428fb9a108c
    [aarch64]=477e9e40f3c82fae02563b77399399c08f2cae9d29ecd0c863aa52236a261517
)
declare -A ZLIB_DEV_SHA256=(
    [x86_64]=f9ce531f60cbd5df37996af9370e0171be96902a17ec2bdbd8d62038c354094f
    [aarch64]=afb60f0bae432f2f0edfe2d674e99c1a13a147c9aa2b52f2f23e3df19ece76f5
)
MARIADB_DEV_URL=http://deb.debian.org/debian-security/pool/updates/main/m/mariadb/libmariadb-dev_10.11.19-0%2bdeb12u1
ZLIB_DEV_URL=http://deb.debian.org/debian/pool/main/z/zlib/zlib1g-dev_1.2.13.dfsg-1
debian_arch() { case "$1" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; esac; }

build_connector() {
    local arch="$1" prefix="$DIST_CACHE/$1/mysql"
    [ -f "$prefix/lib/libcelerity_mysql.a" ] && return 0
    build_openssl "$arch" || return 1
    local deb bin work openssl="$DIST_CACHE/$arch/openssl"
    deb=$(debian_arch "$arch")
    fetch_pinned "${MARIADB_DEV_URL}_$deb.deb" "libmariadb-dev_$deb.deb" "${MARIADB_DEV_SHA256[$arch]}" || return 1
    fetch_pinned "${ZLIB_DEV_URL}_$deb.deb" "zlib1g-dev_$deb.deb" "${ZLIB_DEV_SHA256[$arch]}" || return 1
    bin=$(zig_wrappers "$arch")
    work=$(mktemp -d)
    dpkg-deb -x "$DIST_CACHE/src/libmariadb-dev_$deb.deb" "$work/root"
    dpkg-deb -x "$DIST_CACHE/src/zlib1g-dev_$deb.deb" "$work/root"
    # Debian builds against glibc 2.36, whose fcntl is fcntl64 (2.28): the
    # same call under glibc 2.17's name.
    cat > "$work/fcntl64.c" <<'SHIM'
#include <fcntl.h>
#include <stdarg.h>
int fcntl64(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fcntl(fd, cmd, arg);
}
SHIM
    "$bin/cc" -O2 -c "$work/fcntl64.c" -o "$work/fcntl64.o" || return 1
    "$bin/ar" rcs "$work/libshim.a" "$work/fcntl64.o"
    mkdir -p "$prefix/lib"
    # One archive with the client, zlib and TLS: mysqlclient-sys links one library.
    printf 'create %s\naddlib %s\naddlib %s\naddlib %s\naddlib %s\naddlib %s\nsave\nend\n' \
        "$prefix/lib/libcelerity_mysql.a" "$work/root/usr/lib/$arch-linux-gnu/libmariadbclient.a" \
        "$work/root/usr/lib/$arch-linux-gnu/libz.a" "$openssl/lib/libssl.a" "$openssl/lib/libcrypto.a" \
        "$work/libshim.a" | "$bin/ar" -M || return 1
    rm -rf "$work"
}

# The Rust target of ARCH, and its triple for zig with the glibc floor.
rust_triple() { echo "$1-unknown-linux-gnu"; }

# Builds the stripped binary for ARCH; prints its path.
build_portable() {
    local arch="$1" triple
    triple=$(rust_triple "$arch")
    ensure_dist_tools
    rustup target list --installed 2>/dev/null | grep -qx "$triple" || rustup target add "$triple" >&2
    build_connector "$arch" || return 1
    local target_dir="$DIST_CACHE/target"
    log "building celerity for $arch (glibc >= $DIST_GLIBC)"
    # pkg-config must not find the build machine's shared libmariadb.
    # jemalloc for aarch64 with 64 KiB pages, which some aarch64 kernels use
    # (it refuses to start on pages larger than it was built for).
    local pages=()
    [ "$arch" = aarch64 ] && pages=(JEMALLOC_SYS_WITH_LG_PAGE=16)
    env PKG_CONFIG_LIBDIR=/nonexistent "${pages[@]}" \
        MYSQLCLIENT_LIB_DIR="$DIST_CACHE/$arch/mysql/lib" MYSQLCLIENT_LIBNAME=celerity_mysql \
        MYSQLCLIENT_STATIC=1 MYSQLCLIENT_VERSION="$MARIADB_CONNECTOR_VERSION" \
        CARGO_TARGET_DIR="$target_dir" \
        cargo zigbuild -q --locked --profile dist -p celerity --bin celerity --target "$triple.$DIST_GLIBC" >&2 ||
        return 1
    echo "$target_dir/$triple/dist/celerity"
}

# Fails unless BINARY needs glibc <= 2.17 and no library beyond glibc's own
# and libgcc_s. Prints what it found.
check_portable() {
    local binary="$1" needed newest lib status=0
    [ -f "$binary" ] || { log "no binary at $binary"; return 1; }
    needed=$(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
    for lib in $needed; do
        case " $DIST_ALLOWED_LIBS " in
            *" $lib "*) ;;
            *) log "$binary needs $lib, which is not part of glibc"; status=1 ;;
        esac
    done
    newest=$(readelf -V "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1)
    if [ "$(printf '%s\n%s\n' "$newest" "$DIST_GLIBC" | sort -V | tail -n1)" != "$DIST_GLIBC" ]; then
        log "$binary needs GLIBC_$newest, newer than $DIST_GLIBC"
        status=1
    fi
    if readelf -S "$binary" | grep -q '\.debug_\|\.symtab'; then
        log "$binary is not stripped"
        status=1
    fi
    log "$(basename "$(dirname "$(dirname "$binary")")"): needs glibc $newest; libraries: $(echo $needed); $(stat -c %s "$binary") bytes"
    return "$status"
}
