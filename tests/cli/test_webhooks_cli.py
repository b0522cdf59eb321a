"""`resguardo webhooks ...` as a user runs it (subprocesses) against the real API and vault: the
secret is printed once, by add and rotate-secret only; deliveries and redeliveries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from shared import natsio
from shared.events import recordings
from shared.events.webhooks import WEBHOOK_TYPES
from shared.ids import new_recording_id
from tests.api import factories as f
from tests.api.support import ApiProcess, VaultProcess, dev_tenant_id, publish_all, wait_offset

from .test_cli import cli_env, ok_json, one_sentence_error, run

URL = "https://1.1.1.1/hooks/resguardo"


async def test_add_list_rotate_remove(api: ApiProcess, vault: VaultProcess, tmp_path: Path) -> None:
    env = cli_env(api, tmp_path)
    human = run(
        env, "webhooks", "add", URL, "--events", "recording.uploaded, recording.failed",
        "--description", "billing",
    )  # fmt: skip
    assert human.returncode == 0, human.stderr
    secret = next(w for w in human.stdout.split() if w.startswith("whsec_"))
    endpoint_id = next(w.rstrip(".") for w in human.stdout.split() if w.startswith("wh_"))
    assert human.stdout.count(secret) == 1
    assert "not shown again" in human.stdout

    added = ok_json(env, "webhooks", "add", URL)
    assert added["secret"].startswith("whsec_") and added["secret"] != secret
    assert added["endpoint"]["events"] == [] and added["endpoint"]["secrets"] == 1
    other_id = added["endpoint"]["endpoint_id"]

    listed = run(env, "webhooks", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    endpoints = json.loads(listed.stdout)
    assert sorted(e["endpoint_id"] for e in endpoints) == sorted([endpoint_id, other_id])
    mine = next(e for e in endpoints if e["endpoint_id"] == endpoint_id)
    assert sorted(mine["events"]) == ["recording.failed", "recording.uploaded"]
    assert mine["description"] == "billing"
    table = run(env, "webhooks", "list")
    assert table.returncode == 0 and endpoint_id in table.stdout and "all" in table.stdout
    shown = run(env, "webhooks", "show", endpoint_id)
    assert shown.returncode == 0 and "billing" in shown.stdout, shown.stderr

    rotated = ok_json(env, "webhooks", "rotate-secret", endpoint_id, "--grace-s", "60")
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    assert rotated["endpoint"]["secrets"] == 2
    again = run(env, "webhooks", "rotate-secret", endpoint_id)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("whsec_") == 1
    newest = next(w for w in again.stdout.split() if w.startswith("whsec_"))
    mine = next(e for e in ok_json(env, "webhooks", "list") if e["endpoint_id"] == endpoint_id)
    assert mine["secrets"] == 3  # both rotated-out secrets are still in their grace period

    # No secret is printed by anything but the commands that made them.
    quiet = [listed, table, shown, run(env, "webhooks", "show", endpoint_id, "--json")]
    for proc in quiet:
        for s in (secret, added["secret"], rotated["secret"], newest):
            assert s not in proc.stdout + proc.stderr

    removed = run(env, "webhooks", "remove", endpoint_id)
    assert removed.returncode == 0 and f"Removed webhook endpoint {endpoint_id}" in removed.stdout
    line = one_sentence_error(run(env, "webhooks", "show", endpoint_id))
    assert "No webhook endpoint" in line
    assert [e["endpoint_id"] for e in ok_json(env, "webhooks", "list")] == [other_id]


async def test_one_sentence_errors(api: ApiProcess, tmp_path: Path) -> None:
    env = cli_env(api, tmp_path)
    line = one_sentence_error(run(env, "webhooks", "add", URL, "--events", "recording.nope"))
    assert "recording.nope" in line and WEBHOOK_TYPES[0] in line
    line = one_sentence_error(run(env, "webhooks", "add", "https://127.0.0.1:8443/hook"))
    assert "loopback" in line
    line = one_sentence_error(run(env, "webhooks", "add", "http://1.1.1.1/hook"))
    assert "https" in line
    line = one_sentence_error(run(env, "webhooks", "show", "nope"))
    assert "wh_" in line
    line = one_sentence_error(run(env, "webhooks", "rotate-secret", "wh_0123456789abcdef",
                                  "--grace-s", "-5"))  # fmt: skip
    assert "grace_s" in line
    one_sentence_error(run(env, "webhooks", "redeliver"))
    one_sentence_error(run(env, "webhooks", "redeliver", "0" * 32, "--since", "1h"))
    line = one_sentence_error(run(env, "webhooks", "redeliver", "--since", "a while"))
    assert "ISO 8601" in line
    line = one_sentence_error(run(env, "webhooks", "deliveries", "--since", "soon"))
    assert "ISO 8601" in line


def _at(event: Any, when: datetime) -> Any:
    return msgspec.structs.replace(event, occurred_at=when)


async def test_deliveries_and_redeliver(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path, js: Any, database_url: str
) -> None:
    env = cli_env(api, tmp_path)
    endpoint_id = ok_json(env, "webhooks", "add", URL)["endpoint"]["endpoint_id"]
    tenant = await dev_tenant_id(database_url)
    rid = new_recording_id()
    start = datetime.now(UTC) - timedelta(hours=3)
    ok = _at(f.queued(rid, tenant, endpoint_id, webhook_id="msg_ok"), start)
    dead = _at(
        f.queued(rid, tenant, endpoint_id, webhook_id="msg_dead"), start + timedelta(minutes=1)
    )
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    recent = _at(f.queued(rid, tenant, endpoint_id, webhook_id="msg_recent"), ten_minutes_ago)
    seq = await publish_all(
        js,
        [ok, f.delivered(ok), dead, f.attempted(dead, 1, 500), f.gave_up(dead, attempts=1),
         recent, f.attempted(recent, 1, 0, "connection refused"), f.gave_up(recent, attempts=1)],
    )  # fmt: skip
    await wait_offset(database_url, "WEBHOOKS", seq)

    everything = ok_json(env, "webhooks", "deliveries")
    assert [d["webhook_id"] for d in everything] == ["msg_recent", "msg_dead", "msg_ok"]
    failed = ok_json(env, "webhooks", "deliveries", endpoint_id, "--failed")
    assert [d["delivery_id"] for d in failed] == [recent.event_id, dead.event_id]
    assert ok_json(env, "webhooks", "deliveries", "--since", "1h") == [everything[0]]
    table = run(env, "webhooks", "deliveries")
    assert table.returncode == 0, table.stderr
    assert dead.event_id in table.stdout and "gave_up" in table.stdout
    assert "retries spent" in table.stdout  # the reason it gave up

    one = ok_json(env, "webhooks", "redeliver", ok.event_id)
    assert one["requested"] == [ok.event_id]
    since = ok_json(env, "webhooks", "redeliver", "--since", "1h", "--endpoint", endpoint_id)
    assert since["requested"] == [recent.event_id]
    human = run(env, "webhooks", "redeliver", "--since", start.isoformat())
    assert human.returncode == 0, human.stderr
    assert dead.event_id in human.stdout and recent.event_id in human.stdout
    asked = await natsio.read_subject(js, recordings.STREAM, f"recordings.{rid}.>")
    got = [e.delivery_id for _, e in asked if isinstance(e, recordings.WebhookRedeliveryRequested)]
    assert got == [ok.event_id, recent.event_id, dead.event_id, recent.event_id]
    nothing = run(env, "webhooks", "redeliver", "--since", "1s")
    assert nothing.returncode == 0 and "Nothing to redeliver" in nothing.stdout
