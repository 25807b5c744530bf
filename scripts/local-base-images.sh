#!/usr/bin/env bash
# Base images made from Debian's packages, for machines that cannot pull from public container
# registries. Each stands in for a public image the Dockerfile or docker-compose.yml names:
#
#   pgvalet-local/debian:bookworm       debian:bookworm-slim            debootstrap minbase + CA roots
#                                                                       (Debian's, and those the
#                                                                       machine adds in
#                                                                       /usr/local/share/ca-certificates)
#   pgvalet-local/rust:bookworm         rust:1.95-slim-bookworm         the above + gcc, libc6-dev and
#                                                                       this machine's Rust toolchain
#   pgvalet-local/distroless-cc:nonroot gcr.io/distroless/cc-debian12:nonroot
#                                                                       glibc, libgcc_s, Debian's CA roots,
#                                                                       /etc/passwd with nonroot
#                                                                       (65532); no shell
#   pgvalet-local/postgres:15           postgres:15                     Debian's postgresql-15 with
#                                                                       the official entrypoint's
#                                                                       contract (deploy/local-bases)
#   pgvalet-local/moto:5.1.4            motoserver/moto:5.1.4           moto[server] from PyPI
#
# Images that exist already are kept (`--force` makes them again). `build` makes only the first
# three (what `docker build .` needs), `services` only Postgres and moto (on the Debian base). Every image carries the label
# pgvalet.local-base=1. `--env` prints the variables that point the Dockerfile and the compose
# file at them:  eval "$(scripts/local-base-images.sh --env)"
#
# Needs: root, docker, debootstrap (apt-get install debootstrap), a Rust toolchain on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN=pgvalet-local/debian:bookworm
RUST=pgvalet-local/rust:bookworm
RUNTIME=pgvalet-local/distroless-cc:nonroot
POSTGRES=pgvalet-local/postgres:15
MOTO=pgvalet-local/moto:5.1.4
LABEL=pgvalet.local-base=1

print_env() {
  cat <<ENV
export PGVALET_RUST_IMAGE=$RUST
export PGVALET_RUNTIME_IMAGE=$RUNTIME
export PGVALET_DEVTOOLS_IMAGE=$DEBIAN
export PGVALET_POSTGRES_IMAGE=$POSTGRES
export PGVALET_MOTO_IMAGE=$MOTO
ENV
}

FORCE=
WANT=all
for arg in "$@"; do
  case "$arg" in
    --env) print_env; exit 0 ;;
    --force) FORCE=1 ;;
    build | services | all) WANT=$arg ;;
    *) echo "usage: $0 [--force] [build | services | all] | --env" >&2; exit 2 ;;
  esac
done

have() { [ -z "$FORCE" ] && docker image inspect "$1" >/dev/null 2>&1; }

# The mirror this machine's apt uses, so debootstrap needs no other network access.
mirror() {
  local m
  m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n 1 || true)
  if [ -z "$m" ]; then
    m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n 1 || true)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

WORK=$(mktemp -d /tmp/pgvalet-bases.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs

debootstrapped() {
  [ -d "$ROOT/etc" ] && return
  command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
  echo "debootstrap bookworm from $(mirror)"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$ROOT" "$(mirror)" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
  chroot "$ROOT" apt-get clean
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin
  cp "$ROOT/etc/ssl/certs/ca-certificates.crt" "$WORK/debian-ca.crt"
  # CA certificates this machine adds to Debian's (a TLS-inspecting egress proxy, a company CA)
  # are trusted inside the build images too, so apt, pip and cargo there reach what the host does.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null 2>&1
  fi
}

import() { # import DIR NAME [--change …]
  local dir=$1 name=$2
  shift 2
  tar -C "$dir" -c . | docker import --change "LABEL $LABEL" "$@" - "$name" >/dev/null
  echo "made $name ($(docker image inspect -f '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}'))"
}

PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

if { [ "$WANT" != services ] && ! have "$DEBIAN"; } || ! docker image inspect "$DEBIAN" >/dev/null 2>&1; then
  debootstrapped
  import "$ROOT" "$DEBIAN" --change "ENV PATH=$PATH_ENV" --change 'CMD ["bash"]'
fi

# The runtime: only the files of libc6 and libgcc-s1, the CA bundle, and the users, on Debian's
# merged-/usr layout.
if [ "$WANT" != services ] && ! have "$RUNTIME"; then
  debootstrapped
  R=$WORK/runtime
  mkdir -p "$R"/usr/{bin,sbin,lib,lib64} "$R"/etc/ssl/certs "$R"/tmp "$R"/home/nonroot "$R"/root
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$R/$d"; done
  chmod 1777 "$R/tmp"
  chroot "$ROOT" dpkg -L libc6 libgcc-s1 | sort -u | while read -r f; do
    [ -d "$ROOT$f" ] && [ ! -L "$ROOT$f" ] && continue
    [ -e "$ROOT$f" ] || [ -L "$ROOT$f" ] || continue
    parent=$(readlink -f "$ROOT$(dirname "$f")")
    [ "$parent" = "$ROOT" ] && continue # bin, lib, lib64, sbin: made above
    echo "${parent#"$ROOT"/}/$(basename "$f")"
  done >"$WORK/runtime.files"
  tar -C "$ROOT" -c --no-recursion -T "$WORK/runtime.files" | tar -C "$R" -x
  cp "$WORK/debian-ca.crt" "$R/etc/ssl/certs/ca-certificates.crt"
  cp "$ROOT/etc/ld.so.conf" "$R/etc/" 2>/dev/null || true
  cp -r "$ROOT/etc/ld.so.conf.d" "$R/etc/" 2>/dev/null || true
  cat >"$R/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
  cat >"$R/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$R/etc/nsswitch.conf"
  chown 65532:65532 "$R/home/nonroot"
  import "$R" "$RUNTIME" --change "ENV PATH=$PATH_ENV" \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'USER 65532' --change 'WORKDIR /home/nonroot'
fi

# The Rust build image: a C toolchain from Debian (ring compiles C) and the Rust toolchain this
# machine builds pgvalet with, copied in.
if [ "$WANT" != services ] && ! have "$RUST"; then
  debootstrapped
  sysroot=$(rustc --print sysroot)
  echo "Rust toolchain from $sysroot ($(rustc --version))"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  { chroot "$ROOT" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y -qq --no-install-recommends gcc libc6-dev; } \
    >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; exit 1; }
  chroot "$ROOT" apt-get clean
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin
  : >"$ROOT/etc/resolv.conf"
  mkdir -p "$ROOT/usr/local/rust" "$ROOT/usr/local/cargo"
  # Compiler, cargo and the standard library; not the documentation.
  tar -C "$sysroot" -c bin lib libexec etc 2>/dev/null | tar -C "$ROOT/usr/local/rust" -x
  import "$ROOT" "$RUST" --change "ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:$PATH_ENV" \
    --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'CMD ["bash"]'
fi

build() { # build NAME DIR: a Dockerfile in deploy/local-bases on the local Debian base
  local name=$1 dir=$2
  have "$name" && return
  docker build -q --build-arg "BASE=$DEBIAN" --label "$LABEL" -t "$name" "$dir" >/dev/null
  echo "made $name ($(docker image inspect -f '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}'))"
}
if [ "$WANT" != build ]; then
  build "$POSTGRES" deploy/local-bases/postgres
  build "$MOTO" deploy/local-bases/moto
fi
