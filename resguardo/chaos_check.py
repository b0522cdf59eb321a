"""What a chaos run checks at the end, from the outside: the destination bucket, the event log.

- lost: a started recording that is not ``uploaded``, or whose delivered files are incomplete
  (no SHA256SUMS, or a file it lists is missing);
- duplicated: a recording with two objects of the same file name at the destination (two copies
  under different keys), or with more than one ``upload.uploaded`` event;
- hash mismatch: a delivered file whose SHA-256 is not the one in its SHA256SUMS;
- dead letters: every message in the DEADLETTER stream, with the consumer and its reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.js import api

from shared import natsio
from shared.events import uploads
from shared.events.deadletter import STREAM as DEADLETTER
from shared.integrity import parse_sha256sums


@dataclass
class Verdict:
    states: Counter[str] = field(default_factory=Counter)
    uploaded: list[str] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)  # recording id -> why
    duplicated: dict[str, str] = field(default_factory=dict)
    mismatched: dict[str, str] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    backup_left: int = 0


def bucket_objects(s3: Any, bucket: str) -> dict[str, list[str]]:
    """Recording id -> every key under it (keys are ``<prefix>/.../<recording id>/<file>``)."""
    out: dict[str, list[str]] = defaultdict(list)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            parts = obj["Key"].split("/")
            if len(parts) >= 2:
                out[parts[-2]].append(obj["Key"])
    return out


def check_files(s3: Any, bucket: str, rid: str, keys: list[str], verdict: Verdict) -> None:
    names = Counter(k.rsplit("/", 1)[1] for k in keys)
    twice = sorted(n for n, c in names.items() if c > 1)
    if twice:
        verdict.duplicated[rid] = f"two objects for {twice}: {sorted(keys)}"
    body = {k.rsplit("/", 1)[1]: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
    sums = body.get("SHA256SUMS")
    if sums is None:
        verdict.lost[rid] = f"no SHA256SUMS among {sorted(body)}"
        return
    try:
        listed = parse_sha256sums(sums.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        verdict.mismatched[rid] = f"SHA256SUMS is malformed: {exc}"
        return
    missing = sorted(set(listed) - set(body))
    if missing:
        verdict.lost[rid] = f"SHA256SUMS lists {missing}, not delivered"
    wrong = sorted(
        n for n, d in listed.items() if n in body and hashlib.sha256(body[n]).hexdigest() != d
    )
    if wrong:
        verdict.mismatched[rid] = f"SHA-256 differs from SHA256SUMS for {wrong}"
    media = {n for n in listed if n.endswith((".webm", ".mkv"))}
    if not media:
        verdict.lost[rid] = f"no media in SHA256SUMS: {sorted(listed)}"


async def uploaded_events(nats_url: str) -> Counter[str]:
    """How many ``upload.uploaded`` events each recording has."""
    nc = await nats.connect(nats_url.split(","))
    try:
        history = await natsio.read_subject(nc.jetstream(), uploads.STREAM, "uploads.>")
    finally:
        await nc.close()
    return Counter(e.recording_id for _, e in history if isinstance(e, uploads.RecordingUploaded))


async def dead_letters(nats_url: str) -> list[dict[str, Any]]:
    """Every dead letter (not an event: read raw), without its payload."""
    nc = await nats.connect(nats_url.split(","))
    js = nc.jetstream()
    out: list[dict[str, Any]] = []
    try:
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE, mem_storage=True, inactive_threshold=30.0
        )
        sub = await js.pull_subscribe(
            f"{DEADLETTER.prefix}.>", stream=DEADLETTER.name, config=config
        )
        try:
            pending = (await sub.consumer_info()).num_pending or 0
            while pending > 0:
                for msg in await sub.fetch(batch=min(pending, 256), timeout=5.0):
                    letter = json.loads(msg.data)
                    out.append(
                        {
                            k: letter.get(k)
                            for k in ("stream", "subject", "consumer", "reason", "stream_seq")
                        }
                    )
                    pending = msg.metadata.num_pending
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    finally:
        await nc.close()
    return out


async def verify(
    recordings: dict[str, str],
    s3: Any,
    bucket: str,
    nats_url: str,
    backup: Any,
    backup_bucket: str,
) -> Verdict:
    """``recordings``: id -> final state as the API shows it."""
    verdict = Verdict(states=Counter(recordings.values()))
    objects = bucket_objects(s3, bucket)
    events = await uploaded_events(nats_url)
    for rid, state in sorted(recordings.items()):
        keys = objects.get(rid, [])
        if state != "uploaded":
            verdict.lost[rid] = f"state {state}" + (
                f", {len(keys)} objects delivered" if keys else ""
            )
            continue
        if not keys:
            verdict.lost[rid] = "uploaded, but nothing at the destination"
            continue
        verdict.uploaded.append(rid)
        check_files(s3, bucket, rid, keys, verdict)
        if events[rid] > 1:
            verdict.duplicated.setdefault(rid, f"{events[rid]} upload.uploaded events")
    verdict.dead_letters = await dead_letters(nats_url)
    verdict.backup_left = int(backup.list_objects_v2(Bucket=backup_bucket).get("KeyCount", 0))
    return verdict
