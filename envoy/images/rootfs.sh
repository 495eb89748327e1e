#!/usr/bin/env bash
# rootfs.sh BINARY ROOT PATH_IN_IMAGE
#
# Lays out a root filesystem for a `FROM scratch` image: BINARY at ROOT/PATH_IN_IMAGE,
# plus exactly the shared libraries `ldd` lists for it (the dynamic loader included),
# each at the path ldd names, symlinks resolved. Nothing is downloaded.
set -euo pipefail
bin=$1 root=$2 dest=$3
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }
rm -rf "$root"
mkdir -p "$root$(dirname "$dest")"
cp -L "$bin" "$root$dest"
if ! deps=$(ldd "$bin" 2>&1); then
    # A static binary: nothing else to copy.
    grep -q 'not a dynamic executable' <<<"$deps" && exit 0
    echo "rootfs.sh: ldd $bin failed: $deps" >&2; exit 1
fi
if grep -q 'not found' <<<"$deps"; then
    echo "rootfs.sh: $bin has unresolved libraries:" >&2; echo "$deps" >&2; exit 1
fi
# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)";
# linux-vdso has no file.
awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$deps" |
while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
echo "rootfs.sh: $(basename "$bin") + $(find "$root" -type f | wc -l | awk '{print $1 - 1}') libraries in $root"
