"""Machine-readable contracts: one JSON Schema per event and an AsyncAPI 3 document.

Generated from the msgspec Structs themselves, so they cannot drift from the code.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from .events import EVENT_TYPES, STREAMS, stream_of_type, tag_of
from .events import deadletter as dl
from .webhook_bodies import DATA_OF_TYPE

# Who reads what (publishers are each stream's owner). Mirrors docs/architecture.md.
CONSUMERS: dict[str, list[tuple[str, str]]] = {
    "RECORDINGS": [
        ("proxy", "recordings.*.stop_requested"),
        ("uploader", "recordings.*.resend_requested"),
        ("api", "recordings.>"),
        ("credentials", "recordings.*.started"),
        ("credentials", "recordings.*.resend_requested"),
        ("notifier", "recordings.*.started, resend_requested, webhook_redelivery_requested"),
    ],
    "CAPTURES": [("transcoder", "captures.*.closed"), ("api", "captures.>")],
    "TRANSCODES": [
        ("uploader", "transcodes.*.sealed"),
        ("api", "transcodes.>"),
        ("notifier", "transcodes.*.quarantined"),
    ],
    "UPLOADS": [
        ("credentials", "uploads.*.attempt_started"),
        ("api", "uploads.>"),
        ("notifier", "uploads.*.uploaded, retained, failed, backup_purged"),
    ],
    "VAULT": [("api", "vault.>")],
    "WEBHOOKS": [("notifier", "webhooks.*.queued.*"), ("api", "webhooks.>")],
    "DEADLETTER": [("operators", "deadletter.>")],
}


def event_schemas() -> dict[str, dict[str, Any]]:
    """{tag: JSON Schema} for every event, plus the dead letter."""
    out: dict[str, dict[str, Any]] = {}
    for event_type in EVENT_TYPES:
        out[tag_of(event_type)] = msgspec.json.schema(event_type)
    out["deadletter"] = msgspec.json.schema(dl.DeadLetter)
    return out


def webhook_schemas() -> dict[str, dict[str, Any]]:
    """{webhook type: JSON Schema of its body} for what receivers are sent."""
    out: dict[str, dict[str, Any]] = {}
    for webhook_type, data in DATA_OF_TYPE.items():
        body = msgspec.defstruct(
            "Webhook_" + _key(webhook_type),
            [("type", Literal[webhook_type]), ("timestamp", datetime), ("data", data)],  # type: ignore[valid-type]
            kw_only=True,
        )
        out[webhook_type] = msgspec.json.schema(body)
    return out


def asyncapi() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    by_stream: dict[str, list[str]] = {s.name: [] for s in STREAMS}
    for event_type in EVENT_TYPES:
        by_stream[stream_of_type(event_type).name].append(tag_of(event_type))
    by_stream["DEADLETTER"].append("deadletter")
    for spec in STREAMS:
        tags = by_stream[spec.name]
        for tag in tags:
            messages[_key(tag)] = {
                "name": tag,
                "contentType": "application/json",
                "payload": {"$ref": f"./{tag}.json"},
                "headers": {
                    "type": "object",
                    "properties": {
                        "Nats-Msg-Id": {
                            "type": "string",
                            "description": "= event_id: deterministic, for dedup",
                        }
                    },
                },
            }
        address = (
            f"{spec.prefix}.{{recording_id}}.{{kind}}"
            if spec.name != "DEADLETTER"
            else f"{spec.prefix}.{{stream}}"
        )
        channels[spec.name] = {
            "address": address,
            "description": f"JetStream stream {spec.name}: {spec.description}",
            "messages": {_key(t): {"$ref": f"#/components/messages/{_key(t)}"} for t in tags},
        }
        operations[f"publish{spec.name.title()}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{spec.name}"},
            "summary": f"published by {spec.owner}",
        }
        for consumer, filt in CONSUMERS.get(spec.name, []):
            operations[f"{consumer}Consumes{spec.name.title()}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{spec.name}"},
                "summary": f"{consumer} consumes {filt}",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Resguardo events",
            "version": "1.0.0",
            "description": "Event-sourced recording pipeline over NATS JetStream.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _key(tag: str) -> str:
    return tag.replace(".", "_")


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for tag, schema in event_schemas().items():
        path = directory / f"{tag}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    hooks = directory / "webhooks"
    hooks.mkdir(exist_ok=True)
    for webhook_type, schema in webhook_schemas().items():
        path = hooks / f"{webhook_type}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    path = directory / "asyncapi.json"
    path.write_text(json.dumps(asyncapi(), indent=2) + "\n")
    written.append(path)
    return written
