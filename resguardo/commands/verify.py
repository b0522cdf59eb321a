"""``resguardo verify DIR``: check a downloaded recording against SHA256SUMS and manifest.json.

Exit 0 when every file matches; otherwise exit 1 and name each file that does not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shared.integrity import Digest, iter_file, parse_sha256sums

from ..cli import CliError
from ..progress import Progress


def verify_dir(directory: Path, *, show_progress: bool = True) -> list[dict[str, Any]]:
    """One result per file: {name, ok, reason}."""
    sums_path = directory / "SHA256SUMS"
    if not sums_path.is_file():
        raise CliError(
            f"{directory} has no SHA256SUMS file; point verify at a downloaded recording folder."
        )
    try:
        expected = parse_sha256sums(sums_path.read_text())
    except ValueError as exc:
        raise CliError(f"SHA256SUMS is malformed ({exc}); download it again.") from None
    manifest_files: dict[str, dict[str, Any]] = {}
    manifest_path = directory / "manifest.json"
    results: list[dict[str, Any]] = []
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            manifest_files = {f["name"]: f for f in manifest.get("files", [])}
        except (ValueError, KeyError, TypeError):
            results.append(
                {"name": "manifest.json", "ok": False, "reason": "manifest.json is not valid JSON"}
            )
    for name, sha in expected.items():
        path = directory / name
        if not path.resolve().is_relative_to(directory.resolve()):
            results.append({"name": name, "ok": False, "reason": "path leaves the folder"})
            continue
        if not path.is_file():
            results.append({"name": name, "ok": False, "reason": "missing"})
            continue
        digest = Digest()
        progress = Progress(f"verifying {name}", path.stat().st_size) if show_progress else None
        for chunk in iter_file(path, digest):
            if progress:
                progress.advance(len(chunk))
        reason = ""
        if digest.sha256 != sha:
            reason = "SHA-256 does not match SHA256SUMS"
        entry = manifest_files.get(name)
        if not reason and entry is not None:
            if entry.get("sha256") != digest.sha256:
                reason = "SHA-256 does not match manifest.json"
            elif entry.get("size") not in (None, digest.size):
                reason = "size does not match manifest.json"
        if progress:
            progress.finish("ok" if not reason else "MISMATCH")
        results.append(
            {
                "name": name,
                "ok": not reason,
                "reason": reason,
                "sha256": digest.sha256,
                "size": digest.size,
            }
        )
    for name in manifest_files:
        if name not in expected:
            results.append(
                {
                    "name": name,
                    "ok": False,
                    "reason": "listed in manifest.json but not in SHA256SUMS",
                }
            )
    return results


def _run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not directory.is_dir():
        raise CliError(f"{directory} is not a folder; pass the folder you downloaded.")
    results = verify_dir(directory, show_progress=not args.json)
    bad = [r for r in results if not r["ok"]]
    if args.json:
        print(json.dumps({"ok": not bad, "files": results}, indent=2))
    else:
        for r in results:
            print(
                f"{'OK ' if r['ok'] else 'BAD'}  {r['name']}"
                + (f"  ({r['reason']})" if r["reason"] else "")
            )
        print("All files verified." if not bad else f"{len(bad)} file(s) failed verification.")
    return 1 if bad else 0


def register(sub: Any) -> None:
    parser = sub.add_parser("verify", help="check a downloaded recording's files and hashes")
    parser.add_argument("directory", help="the downloaded recording folder")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_run)
