#!/usr/bin/env bash
# Installs what the tests need beyond PyPI (a browser, npm servers, ...). Each part lives in
# scripts/test-deps.d/*.sh, is idempotent, and skips itself when already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."
for part in scripts/test-deps.d/*.sh; do
  [ -e "$part" ] || continue
  bash "$part"
done
