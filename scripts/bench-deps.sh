#!/usr/bin/env bash
# Installs what `make bench` needs beyond PyPI: each part in scripts/bench-deps/*.sh (ffmpeg for
# the transcoder bench), then Debian's janus (the Janus WebRTC server, for bench/bench_janus.py:
# the proxy's CPU per recorded stream against Janus's VideoRoom recording).
# Idempotent: every step is skipped when already satisfied (janus: when it is on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
for part in scripts/bench-deps/*.sh; do
  [ -e "$part" ] || continue
  bash "$part"
done
if command -v janus >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-deps.sh: janus is missing; run as root (apt-get install janus)." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends janus >/dev/null
command -v janus >/dev/null
