#!/usr/bin/env bash
# Only for `make bench` (not the tests): the transcoder benchmark compares against Debian's ffmpeg command line (issue 5).
# Idempotent: does nothing when ffmpeg is already on PATH. Needs root for apt-get.
set -euo pipefail
if command -v ffmpeg >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
command -v ffmpeg >/dev/null
