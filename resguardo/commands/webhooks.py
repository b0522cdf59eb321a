"""``resguardo webhooks add|list|show|remove|rotate-secret|deliveries|redeliver``: where
Resguardo tells your systems what happened to a recording (Standard Webhooks, signed).

``add`` and ``rotate-secret`` print the endpoint's signing secret (``whsec_...``) once: it is
never shown again, so store it where your receiver verifies signatures. During a rotation the
old secret keeps signing next to the new one for ``--grace-s`` seconds (default a day).
"""

from __future__ import annotations

import argparse
import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

from ..cli import CliError
from ..client import ApiClient, print_json, segment, short_time, table

_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str) -> str:
    """ISO 8601 (``2026-01-02T03:04:05Z``, a date, ...) or a span back from now (``30m``, ``2h``,
    ``1d``): the ISO 8601 time the API expects."""
    text = value.strip()
    match = _RELATIVE.match(text.lower())
    if match:
        span = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (datetime.now(UTC) - span).isoformat()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"{value!r} is not a time; give an ISO 8601 time (2026-01-02T03:04:05Z) or a span "
            "back from now (30m, 2h, 1d)."
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def _events(value: str | None) -> list[str]:
    return [e.strip() for e in (value or "").split(",") if e.strip()]


def _describe(e: dict[str, Any]) -> None:
    print(f"Endpoint     {e['endpoint_id']}")
    print(f"URL          {e['url']}")
    events = e.get("events") or []
    print(f"Events       {', '.join(events) if events else 'all'}")
    if e.get("description"):
        print(f"Description  {e['description']}")
    state = "enabled" if e.get("enabled", True) else f"disabled ({e.get('disabled_reason', '')})"
    print(f"State        {state}")
    print(f"Secrets      {e.get('secrets', 1)} signing (newest {e.get('secret_fingerprint', '')})")
    print(f"Created      {short_time(e.get('created_at'))}")


def _print_secret(secret: str) -> None:
    print(f"Secret       {secret}")
    print("Store the secret now: it is not shown again (rotate it with `webhooks rotate-secret`).")


def _add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"url": args.url, "events": _events(args.events)}
    if args.description:
        body["description"] = args.description
    out = ApiClient.from_env().request("POST", "/v1/webhooks", body)
    if args.json:
        print_json(out)
        return 0
    endpoint = out["endpoint"]
    print(f"Added webhook endpoint {endpoint['endpoint_id']}.")
    _describe(endpoint)
    _print_secret(out["secret"])
    return 0


def _list(args: argparse.Namespace) -> int:
    out = ApiClient.from_env().request("GET", "/v1/webhooks")["endpoints"]
    if args.json:
        print_json(out)
        return 0
    if not out:
        print("No webhook endpoints yet; add one with `resguardo webhooks add URL`.")
        return 0
    rows = [
        [
            e["endpoint_id"],
            e["url"],
            ",".join(e.get("events") or []) or "all",
            "yes" if e.get("enabled", True) else "no",
            str(e.get("secrets", 1)),
            short_time(e.get("created_at")),
        ]
        for e in out
    ]
    print(table(rows, ["ID", "URL", "EVENTS", "ENABLED", "SECRETS", "CREATED"]))
    return 0


def _show(args: argparse.Namespace) -> int:
    out = ApiClient.from_env().request("GET", f"/v1/webhooks/{segment(args.endpoint_id)}")
    if args.json:
        print_json(out)
    else:
        _describe(out["endpoint"])
    return 0


def _remove(args: argparse.Namespace) -> int:
    out = ApiClient.from_env().request("DELETE", f"/v1/webhooks/{segment(args.endpoint_id)}")
    if args.json:
        print_json(out)
    else:
        print(f"Removed webhook endpoint {out['endpoint']['endpoint_id']}.")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    body = {} if args.grace_s is None else {"grace_s": args.grace_s}
    path = f"/v1/webhooks/{segment(args.endpoint_id)}/rotate-secret"
    out = ApiClient.from_env().request("POST", path, body)
    if args.json:
        print_json(out)
        return 0
    endpoint = out["endpoint"]
    print(
        f"Rotated the secret of {endpoint['endpoint_id']}: "
        f"{endpoint.get('secrets', 1)} secrets sign during the grace period."
    )
    _print_secret(out["secret"])
    return 0


def _deliveries(args: argparse.Namespace) -> int:
    query: dict[str, str] = {"limit": str(args.limit)}
    if args.endpoint_id:
        query["endpoint_id"] = args.endpoint_id
    if args.failed:
        query["failed"] = "true"
    if args.since:
        query["since"] = parse_since(args.since)
    path = "/v1/webhooks/deliveries?" + urllib.parse.urlencode(query)
    out = ApiClient.from_env().request("GET", path)["deliveries"]
    if args.json:
        print_json(out)
        return 0
    if not out:
        print("No deliveries match.")
        return 0
    rows = [
        [
            d["delivery_id"],
            d["endpoint_id"],
            d["webhook_type"],
            d["recording_id"],
            d["state"],
            str(d["attempts"]),
            "" if d.get("last_status") is None else str(d["last_status"]),
            short_time(d.get("created_at")),
            (d.get("last_error") or "")[:60],
        ]
        for d in out
    ]
    headers = ["DELIVERY", "ENDPOINT", "TYPE", "RECORDING", "STATE", "TRIES", "HTTP", "QUEUED"]
    print(table(rows, [*headers, "LAST ERROR"]))
    return 0


def _redeliver(args: argparse.Namespace) -> int:
    if bool(args.delivery_id) == bool(args.since):
        raise CliError("Give a DELIVERY_ID or --since TIME (not both); see `webhooks deliveries`.")
    if args.endpoint and not args.since:
        raise CliError("--endpoint goes with --since; drop it, or add --since TIME.")
    body: dict[str, str] = {}
    if args.delivery_id:
        body["delivery_id"] = args.delivery_id
    else:
        body["since"] = parse_since(args.since)
        if args.endpoint:
            body["endpoint_id"] = args.endpoint
    out = ApiClient.from_env().request("POST", "/v1/webhooks/redeliver", body)
    if args.json:
        print_json(out)
        return 0
    requested = out.get("requested") or []
    if not requested:
        print("Nothing to redeliver: no delivery gave up in that time.")
        return 0
    print(f"Asked for {len(requested)} redeliver{'y' if len(requested) == 1 else 'ies'}:")
    for delivery_id in requested:
        print(f"  {delivery_id}")
    if out.get("more"):
        print("More gave up in that time; run the command again for the next ones.")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("webhooks", help="manage webhook endpoints and their deliveries")
    wsub = parser.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)

    p = wsub.add_parser(
        "add",
        help="add an endpoint; prints its signing secret, once",
        description="Add a webhook endpoint. Its signing secret (whsec_...) is printed once: "
        "store it where your receiver verifies signatures.",
    )
    p.add_argument("url", help="https:// URL the deliveries are POSTed to")
    p.add_argument(
        "--events", metavar="TYPE,...", help="event types to send (default: all of them)"
    )
    p.add_argument("--description", metavar="TEXT", default="", help="a note for yourself")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_add)

    p = wsub.add_parser("list", help="your webhook endpoints (never their secrets)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)

    p = wsub.add_parser("show", help="one endpoint (never its secrets)")
    p.add_argument("endpoint_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_show)

    p = wsub.add_parser("remove", help="remove an endpoint (nothing more is sent to it)")
    p.add_argument("endpoint_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_remove)

    p = wsub.add_parser(
        "rotate-secret",
        help="a new signing secret, printed once; the old one signs too for a grace period",
    )
    p.add_argument("endpoint_id", metavar="ID")
    p.add_argument(
        "--grace-s",
        type=int,
        metavar="N",
        help="seconds the old secret keeps signing (default 86400, at most 604800)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_rotate)

    p = wsub.add_parser("deliveries", help="deliveries, newest first")
    p.add_argument("endpoint_id", metavar="ENDPOINT", nargs="?", help="only this endpoint's")
    p.add_argument(
        "--failed", action="store_true", help="only those that gave up or whose last try failed"
    )
    p.add_argument("--since", metavar="TIME", help="queued since: ISO 8601, or 30m, 2h, 1d")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_deliveries)

    p = wsub.add_parser(
        "redeliver",
        help="send a delivery again, or every one that gave up since a time",
        description="Send one delivery again (any state), or, with --since, every delivery that "
        "gave up since then (the newest try of each event; those still being retried are left "
        "to their retries). Receivers see the same webhook-id and body.",
    )
    p.add_argument("delivery_id", metavar="DELIVERY_ID", nargs="?")
    p.add_argument("--since", metavar="TIME", help="ISO 8601, or 30m, 2h, 1d")
    p.add_argument("--endpoint", metavar="ID", help="with --since: only this endpoint's")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_redeliver)
