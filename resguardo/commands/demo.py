"""``resguardo demo``: a synthetic two-participant call through the running system.

Two aiortc publishers send generated audio and video over WHIP; the demo stops the recording,
follows it through transcoding and upload, and prints where the files are and their hashes.
Without ``--destination`` it records into a local ``file`` destination under the data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from ..cli import CliError
from ..client import ApiClient, data_dir, print_json
from ..progress import Progress

DEMO_DESTINATION = "demo-local"
PARTICIPANTS = ("alice", "bob")
FINAL_STATES = {"uploaded", "retained", "failed"}


def _ensure_local_destination(client: ApiClient) -> str:
    listed = client.request("GET", "/v1/destinations")
    names = {d["name"] for d in listed.get("destinations", [])}
    if DEMO_DESTINATION not in names:
        folder = (data_dir() / "demo-output").resolve()
        client.request(
            "POST",
            "/v1/destinations",
            {
                "name": DEMO_DESTINATION,
                "provider": "file",
                "config": {"path": str(folder)},
                "probe": False,
            },
        )
    return DEMO_DESTINATION


async def _call(
    rec: dict[str, Any], seconds: float, ca_file: Path | None, progress: Progress
) -> None:
    from ..publisher import PublishError, publish

    shares = dict.fromkeys(PARTICIPANTS, 0.0)

    def report(name: str) -> Any:
        def on_progress(fraction: float) -> None:
            before = sum(shares.values())
            shares[name] = fraction
            progress.advance(int((sum(shares.values()) - before) * 50))

        return on_progress

    try:
        await asyncio.gather(
            *(
                publish(
                    rec["whip_url"],
                    rec["token"],
                    participant=p,
                    seconds=seconds,
                    ca_file=ca_file,
                    on_progress=report(p),
                )
                for p in PARTICIPANTS
            )
        )
    except PublishError as exc:
        raise CliError(
            f"The proxy refused the demo call ({exc}); check its log in the data dir's logs folder."
        ) from None


def _follow(client: ApiClient, rid: str, timeout: float, quiet: bool) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        rec: dict[str, Any] = client.request("GET", f"/v1/recordings/{rid}")
        if rec["state"] != last and not quiet:
            print(f"  {rid}: {rec['state']}", file=sys.stderr, flush=True)
            last = rec["state"]
        if rec["state"] in FINAL_STATES:
            return rec
        if time.monotonic() > deadline:
            raise CliError(
                f"{rid} is still {rec['state']} after {timeout:.0f} s; follow it with "
                f"`resguardo recordings show {rid}`."
            )
        time.sleep(0.5)


def _run(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.seconds > 3600:
        raise CliError("--seconds must be between 0 and 3600.")
    client = ApiClient.from_env()
    destination = args.destination or _ensure_local_destination(client)
    rec = client.request("POST", "/v1/recordings", {"destination": destination, "label": "demo"})
    rid = rec["recording_id"]
    if not args.json:
        print(
            f"Recording {rid} to {destination}: publishing {', '.join(PARTICIPANTS)} for "
            f"{args.seconds:g} s...",
            file=sys.stderr,
            flush=True,
        )
    progress = Progress("call", 100, unit="%")
    asyncio.run(_call(rec, args.seconds, client.endpoint.ca_file, progress))
    progress.finish("published")
    client.request("POST", f"/v1/recordings/{rid}/stop")
    final = _follow(client, rid, args.timeout, args.json)
    if args.json:
        print_json(final)
    else:
        print(f"\nRecording {rid} is {final['state']}.")
        for f in final.get("files", []):
            print(f"  {f['sha256']}  {f['name']}  ({f.get('size')} bytes)")
            if f.get("remote_uri"):
                print(f"      -> {f['remote_uri']}")
        print(
            "Check a downloaded copy with `resguardo verify <folder>` or `sha256sum -c SHA256SUMS`."
        )
    return 0 if final["state"] == "uploaded" else 1


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run a synthetic two-participant call end to end")
    parser.add_argument("--destination", help="destination name (default: a local folder)")
    parser.add_argument("--seconds", type=float, default=5.0, help="call length (default 5)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="how long to wait for the upload (default 300 s)",
    )
    parser.add_argument("--json", action="store_true", help="print the final recording as JSON")
    parser.set_defaults(func=_run)
