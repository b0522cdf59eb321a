#!/usr/bin/env bash
# The reference age command-line tool (Debian's `age` package: `age`, `age-keygen`): the tests of
# encrypt_to destinations (tests/uploader/test_encrypt_to.py) decrypt what the uploader sent with
# it, so the files are checked against the standard format, not only against pyrage.
# Idempotent: skipped when both commands are already there.
set -euo pipefail
if command -v age >/dev/null 2>&1 && command -v age-keygen >/dev/null 2>&1; then
  exit 0
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends age
