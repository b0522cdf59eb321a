"""``make bench``: every benchmark, each a ratio against a baseline run in the same process.

Usage: ``python -m bench [name ...]``. Results print as a Markdown table (paste into the README)
and are saved to bench/results/latest.json. ``capacity`` (the capacity model, ~2 minutes: a real
recorded call and a 3-node JetStream cluster) runs only when named: ``python -m bench capacity``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import platform
import sys
import time
from pathlib import Path

BENCHES = (
    "integrity",
    "events",
    "grants",
    "proxy",
    "transcoder",
    "uploader",
    "uploader_store",
    "chunkcrypt",
    "encryption",
    "webhooks",
    "lipsync",
    "join",
    "janus",
)
ON_DEMAND = ("capacity",)  # not in the default run: slow, and it reads the proxy bench's figures


def main(argv: list[str]) -> int:
    wanted = argv or list(BENCHES)
    rows: list[dict[str, object]] = []
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for name in wanted:
        try:
            module = importlib.import_module(f"bench.bench_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.bench_{name}":
                print(f"(no bench_{name} yet)", file=sys.stderr)
                continue
            raise
        print(f"running {name}...", file=sys.stderr, flush=True)
        result = module.run()
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        rows.extend(result)
        # After each bench: a later one of the same run reads the figures it builds on
        # (encryption and capacity read the proxy's).
        (out / "latest.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print("| Benchmark | Ours | Baseline | Ratio (ours/baseline) | Goal |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = r["ratio"]
        shown = f"{ratio:.2f}x" if isinstance(ratio, float | int) else "not measured"
        print(f"| {r['name']} | {r['ours']} | {r['baseline']} | {shown} | {r['goal']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
