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
trap 'rm -rf "$context" "$context.pip.log"' EXIT
# Wheels for the base's Python and C library, not this machine's: environment markers differ
# between patch releases (redis needs async-timeout below Python 3.11.3, as bookworm's 3.11.2 is).
pyver=$(docker run --rm "$base" python3 -c 'import platform; print(platform.python_version())')
glibc=$(docker run --rm "$base" python3 -c 'import platform; print(platform.libc_ver()[1].replace(".", "_"))')
echo "build-drproof-image.sh: wheelhouse of $repo and its dependencies for Python $pyver, glibc ${glibc//_/.}"
# pip does not widen a manylinux_2_N platform to the older ones the C library also runs: list them.
platforms=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
for minor in $(seq 5 "${glibc#2_}"); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
{
  "$python" -m pip wheel --no-deps --wheel-dir "$context" "$repo" &&
  "$python" -m pip download --dest "$context" --only-binary=:all: --python-version "$pyver" \
    "${platforms[@]}" "$context"/drproof-*.whl
} >"$context.pip.log" 2>&1 || { tail -n 30 "$context.pip.log" >&2; exit 1; }
# pip evaluates environment markers for this machine's Python, not the target's: add what the
# target's markers require and no wheel provides (redis needs async-timeout below 3.11.3).
missing() {
  "$python" - "$context" "$pyver" <<'PY'
import pathlib, sys, zipfile
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
ctx, pyver = pathlib.Path(sys.argv[1]), sys.argv[2]
env = {"python_full_version": pyver, "python_version": ".".join(pyver.split(".")[:2]), "extra": ""}
wheels = list(ctx.glob("*.whl"))
have = {canonicalize_name(parse_wheel_filename(w.name)[0]) for w in wheels}
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:"):
                req = Requirement(line.split(":", 1)[1].strip())
                if (req.marker is None or req.marker.evaluate(env)) and canonicalize_name(req.name) not in have:
                    print(f"{req.name}{req.specifier}")
PY
}
for _ in 1 2 3 4 5; do
  extra=$(missing | sort -u)
  [ -z "$extra" ] && break
  echo "build-drproof-image.sh: also for Python $pyver: $(echo $extra)"
  # shellcheck disable=SC2086
  "$python" -m pip download --dest "$context" --only-binary=:all: --python-version "$pyver" "${platforms[@]}" $extra \
    >"$context.pip.log" 2>&1 || { tail -n 30 "$context.pip.log" >&2; exit 1; }
done
version=$("$python" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$repo/pyproject.toml")
echo "build-drproof-image.sh: docker build drproof-local/drproof:$version"
docker build --quiet -f "$repo/docs/examples/container/Dockerfile" --build-arg "BASE=$base" \
  -t "drproof-local/drproof:$version" "$context" >/dev/null
echo "build-drproof-image.sh: built drproof-local/drproof:$version"
