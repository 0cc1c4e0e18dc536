#!/bin/sh
# Build the project's Dockerfile here, where no image registry is reachable (issue 19):
#   1. a Debian bookworm base with python3 and python3-venv, by debootstrap, made an
#      image with `buildah from scratch` (once; kept as localhost/kidney-node-base);
#   2. the Dockerfile on that base with `buildah bud` (chroot isolation, vfs storage),
#      this machine's pip configuration mounted read-only into the RUN steps (index URLs,
#      find-links, constraints, CA bundle), never copied into the image.
# Needs root and Debian's buildah and debootstrap (`make image` installs them).
# Usage: docker/build-local.sh [WORKDIR]   (default /var/tmp/kidney-node-image)
set -eu
WORK=${1:-/var/tmp/kidney-node-image}
TAG=${IMAGE_TAG:-localhost/kidney-node:latest}
BASE=localhost/kidney-node-base:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export BUILDAH_ISOLATION=chroot
# vfs: works on every filesystem and kernel (overlay may not); podman reads the same.
buildah() { command buildah --storage-driver vfs "$@"; }
mkdir -p "$WORK"

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  if [ ! -x "$WORK/rootfs/usr/bin/python3" ]; then
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$WORK/rootfs" "$MIRROR"
  fi
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$WORK/rootfs.tar" /
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash "$ctr"
  buildah commit --rm "$ctr" "$BASE"
  rm -f "$WORK/rootfs.tar"
fi

# This machine's pip settings, for the build only: one pip.conf in a folder mounted at
# /etc/xdg/pip (pip's site-wide configuration), with the files it names.
PIPDIR="$WORK/pip"
rm -rf "$PIPDIR" && mkdir -p "$PIPDIR"
mounts="-v $PIPDIR:/etc/xdg/pip:ro"
{
  echo "[global]"
  pip config list 2>/dev/null | sed -n "s/^global\.\([a-z-]*\)='\(.*\)'$/\1 \2/p" |
  while read -r key value; do
    case "$key" in
      cert) cp "$value" "$PIPDIR/ca.crt"; echo "cert = /etc/xdg/pip/ca.crt" ;;
      constraint) cp "$value" "$PIPDIR/constraints.txt"
                  echo "constraint = /etc/xdg/pip/constraints.txt" ;;
      *) echo "$key = $value" ;;
    esac
  done
} > "$PIPDIR/pip.conf"
for folder in $(sed -n 's/^\(find-links\|extra-index-url\|index-url\) = //p' "$PIPDIR/pip.conf" |
                tr ' ' '\n' | sed -n 's#^file://##; s#/simple/*$##; s#^\(/.*\)#\1#p' |
                sort -u); do
  [ -d "$folder" ] && mounts="$mounts -v $folder:$folder:ro"
done

start=$(date +%s)
# shellcheck disable=SC2086 # $mounts is a list of options
buildah bud --format docker --layers=false $mounts --build-arg BASE_IMAGE="$BASE" \
  --build-arg TORCH="${TORCH-}" -t "$TAG" "$(dirname "$0")/.."
end=$(date +%s)
echo "built $TAG in $((end - start)) s"
echo "$((end - start))" > "$WORK/build-seconds"
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$TAG"
