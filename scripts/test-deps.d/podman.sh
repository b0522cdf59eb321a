#!/usr/bin/env bash
# Containers for tests/deploy (the compose files run for real): podman + runc, a Debian base image
# built locally with debootstrap (no container registry is reachable from these machines), and
# podman-compose (a dev extra from PyPI, installed by `make setup`).
# Idempotent: each step is skipped when it is already satisfied.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF="$PWD/deploy/podman/containers.conf"
BASE_IMAGE=localhost/debian-base:bookworm

missing=()
# iptables: netavark sets up the bridge network's firewall rules with it ("netavark: No such
# file or directory" when a machine lacks it).
for tool in podman runc debootstrap iptables; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    podman runc debootstrap netavark aardvark-dns uidmap iptables
fi

if ! podman image exists "$BASE_IMAGE"; then
  # The same mirror apt already uses here, so the base matches what the machine can reach.
  mirror=$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ \
    2>/dev/null | head -n1 | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  root=$(mktemp -d /tmp/debian-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase bookworm "$root" "$mirror"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | podman import - "$BASE_IMAGE"
fi

if ! .venv/bin/podman-compose version >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet -c constraints.txt 'podman-compose==1.6.0'
fi
