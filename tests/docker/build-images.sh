#!/usr/bin/env bash
# Build the PostgreSQL and Redis images drproof's Docker runtime uses, locally, because
# this machine can reach no container registry. One Debian root file system (debootstrap)
# carries both servers; it is imported twice with the configuration of each service and
# tagged with the true versions inside (e.g. drproof-local/postgres:17.12) and with the
# short names the runtime uses by default (postgres:17, redis:8).
#
# The root file system is cached (DRPROOF_ROOTFS_CACHE, default /var/cache/drproof), so a
# machine that keeps it builds images in seconds; otherwise debootstrap takes about a minute.
set -euo pipefail

suite=${DRPROOF_DEBIAN_SUITE:-trixie}
pg_major=${DRPROOF_PG_MAJOR:-17}
mirror=${DRPROOF_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${DRPROOF_ROOTFS_CACHE:-/var/cache/drproof}
here=$(cd "$(dirname "$0")" && pwd)
tarball="$cache/rootfs-$suite-pg$pg_major.tar"

if docker image inspect "postgres:$pg_major" >/dev/null 2>&1 && docker image inspect redis:8 >/dev/null 2>&1 \
   && [ "$(docker image inspect -f '{{index .Config.Labels "dev.drproof.built"}}' "postgres:$pg_major")" = "true" ]; then
  echo "build-images.sh: images postgres:$pg_major and redis:8 already present"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "build-images.sh: installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  work=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "build-images.sh: debootstrap $suite with postgresql-$pg_major and redis-server (about a minute)"
  debootstrap --variant=minbase --include="postgresql-$pg_major,redis-server,ca-certificates" \
    "$suite" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
      tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  root="$work/root"
  # Smaller image: no package caches, docs, or the cluster Debian's postinst created.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
         "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale \
         "$root/var/lib/postgresql/$pg_major" "$root/etc/postgresql/$pg_major"
  install -m 0755 "$here/rootfs/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  chroot "$root" dpkg-query -W -f='${Version}' "postgresql-$pg_major" >"$root/.drproof-postgres-version"
  chroot "$root" dpkg-query -W -f='${Version}' redis-server >"$root/.drproof-redis-version"
  tar -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$work"
  trap - EXIT
else
  echo "build-images.sh: using cached root file system $tarball"
fi

pg_version=$(tar -xOf "$tarball" ./.drproof-postgres-version)   # e.g. 17.12-0+deb13u1
redis_version=$(tar -xOf "$tarball" ./.drproof-redis-version)   # e.g. 5:8.0.2-3+deb13u3
pg_tag=${pg_version%%-*}
redis_tag=${redis_version#*:}; redis_tag=${redis_tag%%-*}

docker import \
  --change "ENV PATH=/usr/lib/postgresql/$pg_major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV PGDATA=/var/lib/postgresql/data" \
  --change "ENV LANG=C.UTF-8" \
  --change "LABEL dev.drproof.built=true org.opencontainers.image.version=$pg_version" \
  --change "EXPOSE 5432" \
  --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  --change 'CMD ["postgres"]' \
  "$tarball" "drproof-local/postgres:$pg_tag" >/dev/null
docker tag "drproof-local/postgres:$pg_tag" "postgres:$pg_major"

docker import \
  --change "ENV LANG=C.UTF-8" \
  --change "LABEL dev.drproof.built=true org.opencontainers.image.version=$redis_version" \
  --change "EXPOSE 6379" \
  --change "WORKDIR /data" \
  --change 'CMD ["redis-server"]' \
  "$tarball" "drproof-local/redis:$redis_tag" >/dev/null
docker tag "drproof-local/redis:$redis_tag" redis:8

echo "build-images.sh: built drproof-local/postgres:$pg_tag (postgres:$pg_major) and drproof-local/redis:$redis_tag (redis:8)"
