"""What ``bench_grants`` runs against: the vault processes, an echo (and publish-then-reply)
responder, and genuine grant jobs (recording started, upload attempt announced)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NATS

from shared import natsio, sealedbox, vault_rpc
from shared.events import encode, event_id, now
from shared.events import recordings as rec_events
from shared.events import uploads as up_events
from shared.events import vault as vault_events
from shared.ids import new_recording_id, new_tenant_id

Popen = subprocess.Popen[bytes]
ECHO_SUBJECT = "bench.echo"
AUDIT_SUBJECT = "bench.audit_then_reply"
# An echo, and the least any audit-before-reply responder can do: one fsync'd publish on a fresh
# subject (as the vault's lock), then the reply; no checks, no crypto, one task per request.
ECHO_SERVER = """
import asyncio, sys, uuid
import nats

async def main():
    nc = await nats.connect(sys.argv[1], user="operator", password=sys.argv[2],
        inbox_prefix="_INBOX_operator")  # the only replies the operator may read
    js = nc.jetstream()
    async def echo(msg):
        await msg.respond(msg.data)
    async def audited(msg):
        token = uuid.uuid4().hex
        await js.publish(f"vault.rec_{'0' * 24}.grant_issued.{token}", msg.data[:300],
            headers={"Nats-Msg-Id": token, "Nats-Expected-Last-Subject-Sequence": "0"})
        await msg.respond(msg.data)
    async def in_task(msg):
        asyncio.get_running_loop().create_task(audited(msg))
    await nc.subscribe(sys.argv[3], cb=echo)
    await nc.subscribe(sys.argv[4], cb=in_task)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Vaults:
    """The vault processes: the first for the whole run, a second one on demand."""

    def __init__(self, tmp: Path, env: dict[str, str], repo: Path) -> None:
        self.tmp, self.env, self.repo = tmp, env, repo
        self.first = self._start("vault-a", profile=os.environ.get("RESGUARDO_BENCH_PROFILE"))
        self.second: Popen | None = None

    def _start(self, name: str, profile: str | None = None, **extra: str) -> Popen:
        env = self.env | {"RESGUARDO_DATA_DIR": str(self.tmp / f"{name}-data")} | extra
        wrap = ["-m", "cProfile", "-o", str(Path(profile) / f"{name}.prof")] if profile else []
        # RESGUARDO_BENCH_VAULT_TREE: another checkout's vault (A/B against an older version).
        tree = os.environ.get("RESGUARDO_BENCH_VAULT_TREE") or str(self.repo)
        env["PYTHONPATH"] = tree
        with (self.tmp / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, *wrap, "-m", "services.credentials"],
                cwd=tree,
                env=env,
                stdout=log,
                stderr=log,
            )

    async def start_second(self) -> None:
        keys = self.tmp / "vault-a-data" / "keys"
        self.second = self._start(
            "vault-b",
            RESGUARDO_MASTER_KEY_FILE=str(keys / "master.keys"),
            RESGUARDO_VAULT_KEY_FILE=str(keys / "vault-x25519.key"),
        )
        log = self.tmp / "vault-b.log"
        for _ in range(600):  # it logs "vault ready" once its queue subscriptions are flushed
            if log.exists() and "vault ready" in log.read_text(errors="replace"):
                return
            if self.second.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the second vault did not start:\n{log.read_text()[-2000:]}")

    def stop_second(self) -> None:
        if self.second is not None:
            self.second.terminate()
            self.second.wait(15)
            (self.tmp / "vault-b.log").unlink()  # the next start waits for a fresh "vault ready"
            self.second = None

    def stop(self) -> None:
        self.stop_second()
        self.first.terminate()
        self.first.wait(30)


class Jobs:
    """Genuine grant requests: a destination, then per grant a recording started and its upload
    attempt announced (as the API and the uploader do), and the request bytes made in advance."""

    def __init__(self, api: NATS, uploader: NATS, tenant: str, dest: str) -> None:
        self.api, self.uploader, self.tenant, self.dest = api, uploader, tenant, dest
        self.rids: list[str] = []
        self.requests: list[bytes] = []
        self.refused = 0
        self._sem = asyncio.Semaphore(256)

    @classmethod
    async def create(cls, api: NATS, uploader: NATS) -> Jobs:
        for _ in range(300):  # the vault is up when it answers
            try:
                msg = await api.request(vault_rpc.SUBJECT_PUBLIC_KEY, b"", timeout=0.5)
                break
            except Exception:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError("the vault did not start; see its log")
        vault_pub = msgspec.json.decode(msg.data, type=vault_rpc.VaultKeyReply).public_key
        tenant = new_tenant_id()
        config = {"bucket": "bench", "access_key_id": "AKIDBENCH", "secret_access_key": "x" * 40}
        create = vault_rpc.DestinationCreate(
            tenant_id=tenant,
            name="bench",
            provider="s3",
            sealed_config=sealedbox.seal(
                vault_pub, msgspec.json.encode(config), vault_rpc.create_context(tenant, "bench")
            ),
            probe=False,
        )
        msg = await api.request(vault_rpc.SUBJECT_CREATE, msgspec.json.encode(create), timeout=10)
        created = msgspec.json.decode(msg.data, type=vault_rpc.DestinationReply)
        assert created.destination is not None, created.problem
        return cls(api, uploader, tenant, created.destination.destination_id)

    async def add(self, n: int) -> None:
        """``n`` more recordings, started (their jobs are announced later)."""
        rids = [new_recording_id() for _ in range(n)]
        js = self.api.jetstream()

        async def start(rid: str) -> None:
            async with self._sem:
                await natsio.publish(
                    js,
                    rec_events.RecordingStarted(
                        event_id=event_id(rid, "started"),
                        recording_id=rid,
                        tenant_id=self.tenant,
                        occurred_at=now(),
                        destination_id=self.dest,
                        destination_name="bench",
                        whip_token_sha256="0" * 64,
                    ),
                )

        await asyncio.gather(*(start(r) for r in rids))
        for rid in rids:
            self.rids.append(rid)
            self.requests.append(
                msgspec.json.encode(
                    vault_rpc.GrantRequest(
                        job_id=f"{rid}:1",
                        recording_id=rid,
                        tenant_id=self.tenant,
                        destination_id=self.dest,
                        public_key=sealedbox.public_bytes(X25519PrivateKey.generate()),
                    )
                )
            )

    async def announce(self, i: int) -> None:
        rid = self.rids[i]
        async with self._sem:
            await natsio.publish(
                self.uploader.jetstream(),
                up_events.UploadAttemptStarted(
                    event_id=event_id(rid, "attempt_started", f"{rid}:1"),
                    recording_id=rid,
                    tenant_id=self.tenant,
                    occurred_at=now(),
                    job_id=f"{rid}:1",
                    attempt=1,
                    destination_id=self.dest,
                ),
            )

    async def announce_all(self, ids: range) -> None:
        await asyncio.gather(*(self.announce(i) for i in ids))
        await asyncio.sleep(0.5)  # the vaults copy them as they are stored; not timed

    async def grant(self, i: int) -> None:
        msg = await self.uploader.request(
            vault_rpc.SUBJECT_GRANT,
            self.requests[i],
            timeout=10,
            headers={"Resguardo-Service": "uploader"},
        )
        reply = msgspec.json.decode(msg.data, type=vault_rpc.GrantReply)
        if reply.problem is not None or not reply.sealed:
            self.refused += 1

    def audit_like(self, n: int) -> list[tuple[str, bytes, dict[str, str]]]:
        """``n`` audit events as the vault publishes them, each on a fresh job subject."""
        rid = "rec_" + "0" * 24
        out = []
        for i in range(n):
            event = vault_events.GrantIssued(
                event_id=event_id(rid, "grant_issued", f"floor-{i}", secrets.token_hex(16)),
                recording_id=rid,
                tenant_id=self.tenant,
                occurred_at=now(),
                job_id=f"floor-{i}",
                destination_id=self.dest,
                requester="uploader",
                key_version=1,
            )
            headers = {"Nats-Msg-Id": event.event_id, "Nats-Expected-Last-Subject-Sequence": "0"}
            out.append((vault_events.STREAM.subject(event), encode(event), headers))
        return out
