"""The servers a proxy benchmark runs against: an embedded nats-server with the streams, an
embedded PostgreSQL and a real vault on it (the proxy asks the vault for each recording's key).
Every one is stopped when the block ends, whichever failed."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Servers:
    nats: Any  # shared.embedded.NatsServer
    js: Any  # a JetStream context on it, the streams ensured
    stack: contextlib.AsyncExitStack  # for the caller's own servers, stopped with these


@contextlib.asynccontextmanager
async def proxy_servers(work: Path, name: str) -> AsyncIterator[Servers]:
    sys.path.insert(0, str(ROOT))
    from shared import natsio
    from shared.embedded import NatsServer, Postgres
    from tests.credentials.helpers import start_ready_vault

    async with contextlib.AsyncExitStack() as stack:
        server = NatsServer(work / "nats").start()
        stack.callback(server.stop)
        pg = Postgres(work / "pg").start()
        stack.callback(pg.stop)
        vault = await asyncio.to_thread(start_ready_vault, work, server.url, pg.url)
        stack.callback(vault.stop)
        nc = await natsio.connect(server.url, name=name)

        async def close() -> None:
            with contextlib.suppress(Exception):
                await nc.close()

        stack.push_async_callback(close)
        js = nc.jetstream()
        await natsio.ensure_streams(js)
        yield Servers(server, js, stack)


def encoded_media(work: Path) -> Path:
    """The publishers' pre-encoded media (``resguardo.packet_media``) in ``work``; says its
    bitrates."""
    from resguardo.packet_media import encode_media

    media = work / "media.msgpack"
    rates = encode_media(media)
    print(
        f"  media: VP8 {rates['video_kbit_s']:.0f} kbit/s, Opus {rates['audio_kbit_s']:.0f} "
        "kbit/s (pre-encoded, looped)",
        file=sys.stderr,
    )
    return media
