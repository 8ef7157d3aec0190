#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, starting one if needed.
#
# CI machines have no engine running and no container registry. This installs the
# Debian docker.io package when the CLI is missing and starts dockerd in the background
# when no engine answers. It prints what it did, and exits non-zero if no engine could be
# made to answer, so Docker tests then fail rather than being skipped.
set -euo pipefail

log=${DRPROOF_DOCKERD_LOG:-/var/log/drproof-dockerd.log}

if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
  echo "engine.sh: installing docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if docker info >/dev/null 2>&1; then
  echo "engine.sh: a Docker engine already answers ($(docker version --format '{{.Server.Version}}'))"
  exit 0
fi

echo "engine.sh: starting dockerd (log: $log)"
nohup dockerd --storage-driver=overlay2 >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "engine.sh: Docker engine $(docker version --format '{{.Server.Version}}') answers"
    exit 0
  fi
  sleep 1
done
echo "engine.sh: no Docker engine answered within 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
