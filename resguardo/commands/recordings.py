"""``resguardo recordings start|stop|show|list|resend``: talk to the API."""

from __future__ import annotations

import argparse
from typing import Any

from ..client import ApiClient, human_size, print_json, segment, short_time, table


def _start(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"destination": args.destination}
    if args.label:
        body["label"] = args.label
    out = ApiClient.from_env().request("POST", "/v1/recordings", body)
    if args.json:
        print_json(out)
        return 0
    print(f"Recording {out['recording_id']} started ({out['state']}), to {out['destination']}.")
    print(f"WHIP URL:   {out['whip_url']}")
    print(f"WHIP token: {out['token']}")
    print("The token is shown only once: give it to the WHIP client, then forget it.")
    return 0


def _stop(args: argparse.Namespace) -> int:
    path = f"/v1/recordings/{segment(args.recording_id)}/stop"
    out = ApiClient.from_env().request("POST", path)
    if args.json:
        print_json(out)
    else:
        print(f"Stop requested for {out['recording_id']}; it is {out['state']}.")
    return 0


def _show(args: argparse.Namespace) -> int:
    rec = ApiClient.from_env().request("GET", f"/v1/recordings/{segment(args.recording_id)}")
    if args.json:
        print_json(rec)
        return 0
    print(f"Recording    {rec['recording_id']}")
    print(f"State        {rec['state']}{' (stop requested)' if rec.get('stop_requested') else ''}")
    print(f"Destination  {rec['destination']}")
    if rec.get("label"):
        print(f"Label        {rec['label']}")
    print(f"Created      {short_time(rec['created_at'])}")
    print(f"Updated      {short_time(rec['updated_at'])}")
    participants = rec.get("participants") or []
    if participants:
        print("\nParticipants")
        rows = [
            [
                p["participant_id"],
                p.get("display_name") or "",
                str(p.get("sessions", 0)),
                "yes" if p.get("connected") else "no",
            ]
            for p in participants
        ]
        print(table(rows, ["ID", "NAME", "SESSIONS", "CONNECTED"]))
    files = rec.get("files") or []
    if files:
        print("\nFiles")
        rows = [
            [
                f["name"],
                f.get("role") or "",
                human_size(f.get("size")),
                (f.get("sha256") or "")[:16],
                f.get("remote_uri") or "-",
            ]
            for f in files
        ]
        print(table(rows, ["NAME", "ROLE", "SIZE", "SHA-256", "REMOTE"]))
    events = rec.get("events") or []
    if events:
        shown = events[-20:]
        total = rec.get("events_total", len(events))
        print(f"\nEvents (last {len(shown)} of {total})")
        rows = [
            [short_time(e["occurred_at"]), e["type"], f"{e['stream']}#{e['seq']}"] for e in shown
        ]
        print(table(rows, ["WHEN", "EVENT", "STREAM#SEQ"]))
    return 0


def _list(args: argparse.Namespace) -> int:
    query = f"?limit={args.limit}"
    if args.state:
        query += f"&state={segment(args.state)}"
    out = ApiClient.from_env().request("GET", f"/v1/recordings{query}")
    recordings = out["recordings"]
    if args.json:
        print_json(recordings)
        return 0
    if not recordings:
        print("No recordings yet; start one with `resguardo recordings start --destination NAME`.")
        return 0
    rows = [
        [r["recording_id"], r["state"], r["destination"], short_time(r["created_at"]), r["label"]]
        for r in recordings
    ]
    print(table(rows, ["ID", "STATE", "DESTINATION", "CREATED", "LABEL"]))
    return 0


def _resend(args: argparse.Namespace) -> int:
    body = {"destination": args.destination} if args.destination else {}
    path = f"/v1/recordings/{segment(args.recording_id)}/resend"
    out = ApiClient.from_env().request("POST", path, body)
    if args.json:
        print_json(out)
    else:
        print(
            f"Resend of {out['recording_id']} to {out['destination']} requested "
            f"(request {out['request_id']})."
        )
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("recordings", help="start, stop and inspect recordings")
    rsub = parser.add_subparsers(dest="recordings_command", metavar="ACTION", required=True)

    p = rsub.add_parser("start", help="start a recording; prints its WHIP URL and token")
    p.add_argument("--destination", required=True, help="destination name (see `destinations`)")
    p.add_argument("--label", default="", help="a free-text label")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_start)

    p = rsub.add_parser("stop", help="stop a recording (safe to repeat)")
    p.add_argument("recording_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_stop)

    p = rsub.add_parser("show", help="a recording's state, files and events")
    p.add_argument("recording_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_show)

    p = rsub.add_parser("list", help="recordings, newest first")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--state", default="", help="only recordings in this state")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)

    p = rsub.add_parser("resend", help="upload an uploaded or retained recording again")
    p.add_argument("recording_id")
    p.add_argument("--destination", default="", help="another destination (default: the same)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_resend)
