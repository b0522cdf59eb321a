#!/usr/bin/env bash
# Debian's chromium for the proxy's real-browser WHIP test (tests/proxy/test_browser.py), driven
# by Playwright's Python package with executable_path=/usr/bin/chromium. Playwright never
# downloads a browser here. Idempotent: does nothing when /usr/bin/chromium exists.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "browser.sh: /usr/bin/chromium is missing; run as root (apt-get install chromium)." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
test -x /usr/bin/chromium
