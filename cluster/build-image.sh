#!/usr/bin/env bash
# Builds the container image linkreg:local without any image registry: a root filesystem made of
# the linkreg binary, the shared libraries it links (and their dynamic loader), /etc/passwd and
# /etc/group with the unprivileged user linkreg (uid 10001), /data owned by it and an empty /tmp,
# loaded with `docker import`. No base image is pulled, so it works offline; rebuilding after a
# code change costs the cargo build plus a few seconds.
#
#   cluster/build-image.sh                 target/release/linkreg, built with cargo when missing
#                                          or older than the sources
#   cluster/build-image.sh --debug         target/debug/linkreg as `cargo test --all-targets`
#                                          builds it; never runs cargo (CI)
#   cluster/build-image.sh --binary PATH   any other linkreg binary; never runs cargo
#
# Other options: --tag NAME (default linkreg:local); --no-strip keeps the binary's debug
# information (by default the image gets a copy without it: same code, a fraction of the size);
# --prune only removes earlier builds that are untagged and used by no container.
# Users with an image registry can use cluster/Dockerfile instead.
set -euo pipefail

die() {
    echo "build-image: $*" >&2
    exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
mode=release
binary=
tag=linkreg:local
strip=yes
prune_only=no
while [ $# -gt 0 ]; do
    case "$1" in
    --debug) mode=debug ;;
    --binary)
        [ $# -ge 2 ] || die "--binary needs a path"
        mode=given binary=$2
        shift
        ;;
    --tag)
        [ $# -ge 2 ] || die "--tag needs a name"
        tag=$2
        shift
        ;;
    --no-strip) strip=no ;;
    --prune) prune_only=yes ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done

# Untagged images that this script made (recognized by their import message) and that no
# container uses any more. Nothing else is touched.
message_prefix="linkreg image from "
prune() {
    local id comment
    for id in $(docker image ls --quiet --no-trunc --filter dangling=true); do
        comment=$(docker image inspect --format '{{.Comment}}' "$id" 2>/dev/null || true)
        case "$comment" in
        "$message_prefix"*)
            if docker image rm "$id" >/dev/null 2>&1; then
                echo "build-image: removed the earlier build $id"
            fi
            ;;
        esac
    done
}

if [ "$prune_only" = yes ]; then
    command -v docker >/dev/null 2>&1 || die "docker is missing"
    prune
    exit 0
fi

for tool in docker ldd tar readlink; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: it is needed to assemble the image"
done
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (docker info failed): is it running, may you use it?"

case "$mode" in
release)
    binary=$repo/target/release/linkreg
    stale=
    if [ -x "$binary" ]; then
        stale=$(cd "$repo" && find src proto build.rs Cargo.toml Cargo.lock -newer "$binary" -print -quit 2>/dev/null || true)
    fi
    if [ ! -x "$binary" ] || [ -n "$stale" ]; then
        command -v cargo >/dev/null 2>&1 || die "$binary is ${stale:+older than $stale}${stale:-missing} and cargo is not installed to build it"
        echo "build-image: building $binary (cargo build --release --locked --bin linkreg)" >&2
        (cd "$repo" && cargo build --release --locked --bin linkreg)
    fi
    ;;
debug)
    binary=$repo/target/debug/linkreg
    [ -x "$binary" ] || die "$binary is missing: build it with \`cargo test --locked --all-targets --no-run\` first (--debug never runs cargo)"
    ;;
given)
    [ -f "$binary" ] || die "--binary $binary: no such file"
    [ -x "$binary" ] || die "--binary $binary: not executable"
    ;;
esac
binary=$(readlink -f "$binary")

work=$(mktemp -d "${TMPDIR:-/tmp}/linkreg-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/data" "$rootfs/tmp"
chmod 0755 "$rootfs" "$rootfs/usr" "$rootfs/usr/local" "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/data"
chmod 1777 "$rootfs/tmp"

if [ "$strip" = yes ] && command -v objcopy >/dev/null 2>&1; then
    objcopy --strip-debug "$binary" "$rootfs/usr/local/bin/linkreg"
else
    [ "$strip" = no ] || echo "build-image: objcopy not found, copying the binary with its debug information" >&2
    cp "$binary" "$rootfs/usr/local/bin/linkreg"
fi
chmod 0755 "$rootfs/usr/local/bin/linkreg"

# Every library ldd names, and the loader, at the path the binary and the loader look for it,
# holding the real file (not the symlink). `ldd` lines look like
#   libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)     a library found on the search path
#   /lib64/ld-linux-x86-64.so.2 (0x...)                       the loader, by its absolute path
#   linux-vdso.so.1 (0x...)                                   provided by the kernel: nothing to copy
if ! deps=$(ldd "$binary" 2>&1); then
    case "$deps" in
    *"not a dynamic executable"* | *"statically linked"*) deps= ;;
    *) die "ldd $binary failed: $deps" ;;
    esac
fi
if grep -q 'not found' <<<"$deps"; then
    die "libraries of $binary are missing on this machine: $(grep 'not found' <<<"$deps" | tr -s ' \t' ' ' | paste -sd ';')"
fi
libdirs=()
while read -r path; do
    [ -n "$path" ] || continue
    real=$(readlink -f "$path") || die "cannot resolve $path"
    [ -f "$real" ] || die "$path (named by ldd) resolves to $real, which is not a file"
    mkdir -p "$rootfs$(dirname "$path")"
    cp "$real" "$rootfs$path"
    libdirs+=("$(dirname "$path")")
done < <(sed -n -e 's/^.*=> \(\/[^ ]*\) (0x[0-9a-f]*)$/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (0x[0-9a-f]*)$/\1/p' <<<"$deps" | sort -u)

# The loader finds the libraries in its default directories; a cache also covers any other
# directory ldd found one in (e.g. /usr/local/lib).
if [ ${#libdirs[@]} -gt 0 ]; then
    printf '%s\n' "${libdirs[@]}" | sort -u >"$rootfs/etc/ld.so.conf"
    ldconfig_bin=$(command -v ldconfig || echo /sbin/ldconfig)
    if [ -x "$ldconfig_bin" ]; then
        "$ldconfig_bin" -r "$rootfs" || die "ldconfig -r $rootfs failed"
    fi
fi

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/nonexistent:/sbin/nologin
linkreg:x:10001:10001:linkreg:/data:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
linkreg:x:10001:
EOF
# Peer names (node1-peer, ...) come from Docker's DNS; /etc/hosts and /etc/resolv.conf are
# mounted by Docker at run time.
cat >"$rootfs/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"

# Everything owned by root except /data; ownership is set in the archive, so this needs no root.
tar --numeric-owner --owner=0 --group=0 --exclude=./data -C "$rootfs" -cf "$work/rootfs.tar" .
tar --numeric-owner --owner=10001 --group=10001 --no-recursion -C "$rootfs" -rf "$work/rootfs.tar" ./data

version=$("$binary" --version 2>/dev/null || echo "linkreg unknown")
docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/linkreg"]' \
    --change 'CMD ["--help"]' \
    --change 'USER 10001' \
    --change 'WORKDIR /data' \
    --change 'EXPOSE 50051 7000 8080' \
    --change "LABEL org.opencontainers.image.title=linkreg org.opencontainers.image.version=\"${version#linkreg }\"" \
    --message "$message_prefix$binary" \
    - "$tag" <"$work/rootfs.tar" >/dev/null
new=$(docker image inspect --format '{{.Id}}' "$tag")
# Earlier builds are now untagged: remove those no container uses any more (the others go on
# the next build, or with `cluster/build-image.sh --prune` once their containers are gone).
prune
size=$(docker image inspect --format '{{.Size}}' "$tag")
echo "built $tag from $binary ($version)"
echo "image $new, $((size / 1024 / 1024)) MiB ($size bytes)"
