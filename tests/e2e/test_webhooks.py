"""Webhooks through the whole system (`resguardo up`): an endpoint added with the CLI hears of a
real recording, in order, each delivery verified by the Standard Webhooks reference library;
`webhooks deliveries` and the notifier's metrics say the same."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.embedded import free_port

from .. import scrape
from ..servers import wait_until
from .system import start_system, stop_system
from .test_metrics import record_one


class Hooks:
    def __init__(self) -> None:
        self.secret = ""
        self.verified: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.refused = 0


def serve(hooks: Hooks, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            try:
                event = Webhook(hooks.secret).verify(body, dict(self.headers))
            except WebhookVerificationError:
                hooks.refused += 1
                self.send_response(401)
            else:
                hooks.verified.append(event)
                hooks.ids.append(self.headers["webhook-id"])
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def hooks() -> Iterator[tuple[Hooks, int]]:
    state, port = Hooks(), free_port()
    server = serve(state, port)
    try:
        yield state, port
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_a_recording_is_told_to_its_webhook(tmp_path: Path, hooks: tuple[Hooks, int]) -> None:
    state, port = hooks
    system = start_system(tmp_path, {"RESGUARDO_WEBHOOK_ALLOW_PRIVATE": "true"})
    try:
        added = system.cli_json("webhooks", "add", f"http://127.0.0.1:{port}/in")
        state.secret = added["secret"]
        endpoint_id = added["endpoint"]["endpoint_id"]
        listed = system.cli("webhooks", "list").stdout
        assert endpoint_id in listed and state.secret not in listed
        rid, final = record_one(system, tmp_path)
        wait_until(
            lambda: [e["type"] for e in state.verified][-1:] == ["backup.purged"],
            timeout=60,
            message=f"the purge's webhook\n{system.logs()}",
        )
        mine = [e for e in state.verified if e["data"]["recording_id"] == rid]
        assert [e["type"] for e in mine] == [
            "recording.started",
            "recording.uploaded",
            "backup.purged",
        ]
        assert state.refused == 0 and len(set(state.ids)) == len(state.ids)
        uploaded = mine[1]["data"]
        sent = {f["name"]: f for f in uploaded["files"]}
        for f in final["files"]:
            assert sent[f["name"]]["sha256"] == f["sha256"]
            assert sent[f["name"]]["size"] == f["size"]
        assert uploaded["manifest"]["name"].startswith("manifest.json")

        def delivered() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = system.cli_json("webhooks", "deliveries", endpoint_id)
            return rows if len(rows) == 3 and {r["state"] for r in rows} == {"delivered"} else []

        rows = wait_until(delivered, timeout=30, interval=0.5, message="3 deliveries listed")
        assert {r["webhook_id"] for r in rows} == set(state.ids)
        page = scrape.scrape(scrape.health_url(system.data_dir / "run", "notifier"))
        assert page.value("resguardo_webhook_attempts_total", outcome="delivered") == 3
        assert page.value("resguardo_webhook_attempts_total", outcome="retry") == 0
        assert sum(page.named("resguardo_webhook_queued_total").values()) == 3
        logs = system.logs() + json.dumps(rows)
        assert state.secret not in logs and state.secret.removeprefix("whsec_") not in logs
    finally:
        stop_system(system)
