#!/usr/bin/env bash
# Build the hermetic base image the tests use, and tag it with real AIME catalog names so
# catalog lookups resolve locally and nothing is pulled (no registry is reachable in CI).
#
#   scripts/hermetic-base.sh            # build if missing, then (re)tag
#   DS01_BASE_ROOTFS=/path scripts/hermetic-base.sh
set -euo pipefail

BASE=ds01-test/bookworm-base:latest
ROOTFS=${DS01_BASE_ROOTFS:-/var/cache/ds01-ci/rootfs-bookworm}

# Catalog images the test suite creates containers from (see tests/integration/conftest.py).
TAGS=(
  aimehub/pytorch-2.5.1-aime-cuda12.1.1
  aimehub/pytorch-2.5.1-aime-cuda11.8.0
  aimehub/pytorch-2.8.0-aime-cuda12.6.3
  aimehub/pytorch-2.8.0-cuda12.6.3
  aimehub/pytorch-2.7.1-cuda11.8.0
  aimehub/pytorch-2.9.1-cuda12.8.1
  aimehub/tensorflow-2.16.1-cuda12.3
)

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    echo "hermetic-base: debootstrap bookworm into $ROOTFS (about a minute)"
    rm -rf "$ROOTFS"
    mkdir -p "$(dirname "$ROOTFS")"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,sudo \
      bookworm "$ROOTFS" >/tmp/ds01-debootstrap.log 2>&1 || {
        tail -20 /tmp/ds01-debootstrap.log; exit 1; }
  fi
  echo "hermetic-base: importing $ROOTFS as $BASE"
  tar -C "$ROOTFS" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
fi
for tag in "${TAGS[@]}"; do
  docker tag "$BASE" "$tag:latest"
done
echo "hermetic-base: $BASE tagged as ${#TAGS[@]} catalog images"
