#!/usr/bin/env bash
# Storage emulators for the uploader's contract tests (tests/uploader/):
#   - Azurite (npm) for Azure Blob, installed into build/node/ (project-local, no global install).
#   - fake-gcs-server / gcp-storage-emulator and pyftpdlib come from PyPI (see the report/pyproject).
# Idempotent: skips when the pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
AZURITE_VERSION=3.37.0
PREFIX=build/node
BIN="$PREFIX/node_modules/.bin/azurite-blob"
installed=""
if [ -f "$PREFIX/node_modules/azurite/package.json" ]; then
  installed=$(node -p "require('./$PREFIX/node_modules/azurite/package.json').version" 2>/dev/null || true)
fi
if [ -x "$BIN" ] && [ "$installed" = "$AZURITE_VERSION" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends nodejs npm
fi
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
