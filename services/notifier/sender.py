"""One HTTP attempt of one delivery: signed, bounded in time, through the SSRF guard.

The outcome is data (status, latency, an error sentence), never an exception: the caller turns
it into the attempt's event. Error sentences name the cause (refused, timed out, the guard's
reason), never the body, a header or a secret.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from .signing import WebhookSecret, sign
from .targets import TargetPolicy, TargetRefused

MAX_ERROR = 300
# Receivers' answers are not read beyond this: a hostile one cannot make us buffer much.
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "Resguardo-Webhooks/1"


@dataclass(frozen=True)
class Outcome:
    status: int  # 0: no HTTP answer
    latency_ms: float
    error: str = ""

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410


class Sender:
    def __init__(self, policy: TargetPolicy, *, timeout_s: float) -> None:
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._policy.session(
                timeout=self._timeout, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self, url: str, body: str, webhook_id: str, secrets: list[WebhookSecret]
    ) -> Outcome:
        data = body.encode()
        headers = sign(secrets, webhook_id, int(time.time()), data)
        headers["content-type"] = "application/json"
        started = time.perf_counter()

        def elapsed() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        try:
            async with self._client().post(
                url, data=data, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(MAX_RESPONSE_BYTES)
                return Outcome(status=response.status, latency_ms=elapsed())
        except TargetRefused as exc:
            return Outcome(0, elapsed(), f"refused by the webhook target rules: {exc}"[:MAX_ERROR])
        except TimeoutError:
            return Outcome(0, elapsed(), "the receiver did not answer in time")
        except aiohttp.ClientConnectorError as exc:
            refused = _guard_refusal(exc)
            if refused is not None:
                return Outcome(0, elapsed(), refused)
            return Outcome(0, elapsed(), f"could not connect: {exc.os_error}"[:MAX_ERROR])
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            return Outcome(0, elapsed(), f"the request failed: {type(exc).__name__}"[:MAX_ERROR])


def _guard_refusal(exc: aiohttp.ClientConnectorError) -> str | None:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, TargetRefused):
            return f"refused by the webhook target rules: {cause}"[:MAX_ERROR]
        cause = cause.__cause__ or cause.__context__
    return None
