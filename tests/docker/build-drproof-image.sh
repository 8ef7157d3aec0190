#!/usr/bin/env bash
# Build docs/examples/container/Dockerfile here, where no container registry can be reached.
#
# The Dockerfile expects a python:3.11-slim-bookworm-like base from the user's registry. This
# script makes one with debootstrap (Debian bookworm: Python 3.11 and its venv module, as the
# official image has), builds a wheelhouse of this checkout and its dependencies with pip, and
# builds the image from that wheelhouse. Images: drproof-local/python:3.11-bookworm (the base)
# and drproof-local/drproof:<version>. The base's root file system is cached like
# build-images.sh's (DRPROOF_ROOTFS_CACHE, default /var/cache/drproof).
set -euo pipefail

mirror=${DRPROOF_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${DRPROOF_ROOTFS_CACHE:-/var/cache/drproof}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
base=drproof-local/python:3.11-bookworm
tarball="$cache/rootfs-bookworm-python3.tar"
python=${PYTHON:-python3}

if ! docker image inspect "$base" >/dev/null 2>&1; then
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "build-drproof-image.sh: debootstrap bookworm with python3 and python3-venv (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/root" "$mirror" \
      >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$work"/root/var/cache/apt/archives/*.deb "$work"/root/usr/share/doc "$work"/root/usr/share/man
    tar -C "$work/root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$work"
    trap - EXIT
  fi
  docker import --change "ENV LANG=C.UTF-8" --change 'CMD ["python3"]' "$tarball" "$base" >/dev/null
  echo "build-drproof-image.sh: built the base $base"
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
echo "build-drproof-image.sh: wheelhouse of $repo and its dependencies"
"$python" -m pip wheel --quiet --wheel-dir "$context" "$repo" >"$context.pip.log" 2>&1 || { tail -n 30 "$context.pip.log" >&2; exit 1; }
rm -f "$context.pip.log"
version=$("$python" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$repo/pyproject.toml")
echo "build-drproof-image.sh: docker build drproof-local/drproof:$version"
docker build --quiet -f "$repo/docs/examples/container/Dockerfile" --build-arg "BASE=$base" \
  -t "drproof-local/drproof:$version" "$context" >/dev/null
echo "build-drproof-image.sh: built drproof-local/drproof:$version"
