"""The vault stays small: importing every module of it (its entry point included) loads no storage
SDK and none of the uploader's adapters, so it cannot talk to customer storage. Destination
tests run in the uploader (tests/uploader/test_probe.py also checks the vault's live sockets)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.servers import REPO

# Loaded by a fresh interpreter that imports every module of services.credentials but its
# __main__ (which would start the service), then prints what sys.modules holds.
PROGRAM = """
import importlib, json, pkgutil, sys
import services.credentials as pkg
for info in pkgutil.iter_modules(pkg.__path__):
    if info.name != "__main__":
        importlib.import_module(f"services.credentials.{info.name}")
print(json.dumps(sorted(sys.modules)))
"""

FORBIDDEN = (
    "aiobotocore",
    "botocore",
    "boto3",
    "s3transfer",
    "gcloud",
    "google.cloud",
    "google.resumable_media",
    "azure",
    "aioftp",
    "services.uploader",  # its adapters, and anything that builds one
    "shared.backupstore.s3",  # the operator's object store client: not the vault's business
)


def test_the_vault_imports_no_storage_sdk() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    modules = json.loads(out.stdout)
    assert "services.credentials.service" in modules and "services.credentials.grants" in modules
    loaded = [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert loaded == [], loaded
