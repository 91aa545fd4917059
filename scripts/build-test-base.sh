#!/usr/bin/env bash
# Build a stand-in for python:3.11-slim-bookworm from Debian packages, for
# machines that cannot reach Docker Hub (the image tests and bench/image_size.py).
#
#   scripts/build-test-base.sh [IMAGE_REF]      default IMAGE_REF: localhost/kga-base:test
#
# What the stand-in mirrors from python:3.11-slim-bookworm:
#   - Debian 12 (bookworm), minimal package set, docs/man/locales excluded
#     from dpkg like the debian:*-slim images;
#   - python 3.11 with `python`, `python3`, `pip`, the venv module, and the C
#     headers (python:3.11-slim ships /usr/local/include/python3.11, without
#     which pip cannot compile an sdist; here only the headers are unpacked
#     from libpython3.11-dev, not libc6-dev or the static library);
#   - pip may install into the system interpreter (python:3.11-slim's
#     /usr/local python is not PEP 668 "externally managed"; Debian's is, so
#     the marker file is removed);
#   - apt sources for bookworm, bookworm-updates and bookworm-security, so the
#     Dockerfiles' pinned package versions resolve.
# What differs: python lives in /usr/bin (not /usr/local/bin) and is Debian's
# 3.11.2 build, not python.org's latest 3.11.x. The Dockerfiles only call
# `python`/`python3` through PATH, so both bases work.
#
# The root filesystem is cached as a tarball in ${KGA_IMAGE_CACHE:-.cache/images}
# (keyed by this script's content), so reruns only re-import it.
# Requires root, debootstrap, and podman (or buildah) for the import.
# Storage: ${KGA_PODMAN_ROOT:-<cache>/storage-overlay} on the overlay driver, or <cache>/storage
# with vfs where the kernel lacks overlay, so the host's container
# storage is left alone. Export KGA_PODMAN_ROOT="" to use the default storage.
set -euo pipefail

IMAGE_REF="${1:-localhost/kga-base:test}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${KGA_IMAGE_CACHE:-$REPO_ROOT/.cache/images}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates

mkdir -p "$CACHE_DIR"
KEY="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
TARBALL="$CACHE_DIR/kga-base-$SUITE-$KEY.tar"

# overlay where the kernel has it, else vfs, which works everywhere but copies every layer
# (tests/image_build.py picks the same; KGA_STORAGE_DRIVER overrides both).
default_driver=vfs; grep -qw overlay /proc/filesystems 2>/dev/null && default_driver=overlay
DRIVER="${KGA_STORAGE_DRIVER:-$default_driver}"
if [[ "$DRIVER" == vfs ]]; then STORE="$CACHE_DIR/storage"; SUFFIX=""; else STORE="$CACHE_DIR/storage-$DRIVER"; SUFFIX="-$DRIVER"; fi
podman_cmd() {
  local args=()
  if [[ -n "${KGA_PODMAN_ROOT-$STORE}" ]]; then
    args=(--root "${KGA_PODMAN_ROOT-$STORE}" --runroot "${KGA_PODMAN_RUNROOT:-/run/kga-podman}$SUFFIX" --storage-driver "$DRIVER")
  fi
  podman "${args[@]}" "$@"
}

if [[ ! -s "$TARBALL" ]]; then
  [[ $EUID -eq 0 ]] || { echo "build-test-base: debootstrap needs root" >&2; exit 1; }
  command -v debootstrap >/dev/null || { echo "build-test-base: apt-get install debootstrap" >&2; exit 1; }
  rm -f "$CACHE_DIR"/kga-base-"$SUITE"-*.tar   # stale keys
  ROOTFS="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
  chmod 0755 "$ROOTFS"   # mktemp makes it 0700; it becomes the image's /
  trap 'rm -rf "$ROOTFS"' EXIT
  echo "build-test-base: debootstrap $SUITE into $ROOTFS" >&2
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >&2

  # Same dpkg excludes as the debian slim images (they keep copyright files).
  cat > "$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian/*
  find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +

  # apt settings of the debian docker images (debuerreotype): no .deb or
  # pkgcache left behind after install, no translations, no suggests.
  cat > "$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
  echo 'Acquire::Languages "none";' > "$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' > "$ROOTFS/etc/apt/apt.conf.d/docker-gzip-indexes"
  printf 'Apt::AutoRemove::SuggestsImportant "false";\n' > "$ROOTFS/etc/apt/apt.conf.d/docker-autoremove-suggests"

  cat > "$ROOTFS/etc/apt/sources.list" <<SRC
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SRC
  # Bring the base up to the current point release + security updates, as a
  # freshly published python:3.11-slim-bookworm would be.
  cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  chroot "$ROOTFS" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -ec '
    apt-get update -qq
    apt-get -y -qq -o Dpkg::Options::=--force-confold dist-upgrade >/dev/null
    cd /tmp && apt-get download -qq libpython3.11-dev
  ' >&2
  # Python headers only (what python:3.11-slim ships), not the -dev package's deps.
  DEB="$(ls "$ROOTFS"/tmp/libpython3.11-dev_*.deb)"
  X="$(mktemp -d)"
  dpkg-deb -x "$DEB" "$X"
  cp -a "$X/usr/include/python3.11" "$ROOTFS/usr/include/"
  mkdir -p "$ROOTFS/usr/include/x86_64-linux-gnu"
  cp -a "$X/usr/include/x86_64-linux-gnu/python3.11" "$ROOTFS/usr/include/x86_64-linux-gnu/"
  rm -rf "$X" "$DEB"
  rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
  chroot "$ROOTFS" apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/log/* "$ROOTFS"/tmp/*
  : > "$ROOTFS/etc/resolv.conf"
  find "$ROOTFS" -name '__pycache__' -type d -prune -exec rm -rf {} +
  tar --numeric-owner -C "$ROOTFS" -cf "$TARBALL.partial" .
  mv "$TARBALL.partial" "$TARBALL"
  echo "build-test-base: cached $TARBALL ($(du -h "$TARBALL" | cut -f1))" >&2
fi

if podman_cmd image exists "$IMAGE_REF" 2>/dev/null \
   && [[ "$(podman_cmd image inspect --format '{{index .Labels "kga.base.key"}}' "$IMAGE_REF" 2>/dev/null)" == "$KEY" ]]; then
  echo "build-test-base: $IMAGE_REF is current" >&2
else
  podman_cmd import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL kga.base.key=$KEY" \
    --change 'CMD ["python3"]' \
    "$TARBALL" "$IMAGE_REF" >&2
fi
echo "$IMAGE_REF"
