"""The transcoder: on ``capture.closed``, turn the recording's capture into one verified file per
participant and announce it with ``transcode.sealed`` (or ``transcode.quarantined``).

Idempotent: a recording that is already sealed or quarantined is skipped; a run killed at any
point is redone from scratch on redelivery (the output folder only appears, by rename, when it is
complete, and the sealed event's id is fixed per recording).

Many instances, many machines: an attempt works only while it holds the lease
``transcode.<rid>`` (``shared.leases``; its ttl is the ack wait), and a live lease elsewhere means
"retry later". Its result is published only after a fresh renew (``confirm``), and the sealed
event with ``first_on_subject``: even an attempt paused past its lease between the two cannot
make a second one. Each attempt writes its own ``output-<attempt>`` folder (see ``.output``), so
the one that sealed keeps exactly the files its event describes; a loser deletes its own.

Each attempt asks the vault for the recording's data key once (``.keys``: what a refusal means),
reads the encrypted segments and writes encrypted outputs with it, and wipes it when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared import leases, natsio, service, signing
from shared.backup import UnsafePath, recording_dir
from shared.backupstore import BackupStoreError, ObjectMissing
from shared.backupstore.spool import Spool
from shared.config import ConfigError
from shared.events import AnyEvent, event_id, now
from shared.events import captures as cap
from shared.events import recordings as rec
from shared.events import transcodes as tx
from shared.leases import LeaseHeld, LeaseLost
from shared.natsio import ConsumerSpec, Reject, Retry, SubjectTaken
from shared.recording_key import RecordingKey

from . import keys, metrics
from .composite import CompositePlan, plan_composite
from .config import TranscoderConfig
from .errors import PlanError, TranscoderError
from .output import ATTEMPT_PREFIX, Sealed, build_output, remove_other_outputs
from .plan import OutputOptions, plan_files
from .state import RecordingCapture, fold, missing_parts

log = logging.getLogger(__name__)

NAME = "transcoder"
DURABLE = "transcoder"
IO_RETRY_DELAY_S = 30.0


def consumer_spec(config: TranscoderConfig) -> ConsumerSpec:
    return ConsumerSpec(
        stream=cap.STREAM,
        durable=DURABLE,
        filter_subjects=(cap.STREAM.filter("closed"),),
        ack_wait_s=config.transcoder_ack_wait_s,
        max_ack_pending=max(8, config.transcoder_concurrency * 2),
    )


def sealed_id(recording_id: str) -> str:
    return event_id(recording_id, "sealed")


def lease_key(recording_id: str) -> str:
    return f"transcode.{recording_id}"


def quarantined_id(recording_id: str) -> str:
    return event_id(recording_id, "quarantined")


def load_signing_key(config: TranscoderConfig) -> Ed25519PrivateKey:
    """The operator's manifest key (created on first start); one sentence if it is unusable."""
    path = signing.key_path(config.data_dir, config.signing_key_file)
    try:
        return signing.load_or_create(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"The manifest signing key {path} cannot be used ({reason}); fix "
            "RESGUARDO_SIGNING_KEY_FILE or the file's permissions."
        ) from None


def options_of(started: object) -> OutputOptions:
    """What the recording's destination asked for (defaults when the start is unknown)."""
    if isinstance(started, rec.RecordingStarted):
        return OutputOptions(started.output_format, started.output_tracks)
    return OutputOptions()


class Transcoder:
    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        config: TranscoderConfig,
        signing_key: Ed25519PrivateKey,
        kv: KeyValue,
        spool: Spool | None = None,
    ) -> None:
        self.nc = nc  # for the vault's recording-key requests
        self.js = js
        self.kv = kv
        self.config = config
        self.signing_key = signing_key
        self.spool = spool  # None or a local store: the backup folder is the store

    async def finished(self, recording_id: str) -> tx.TranscodeEvent | None:
        for kind in ("sealed", "quarantined"):
            subject = tx.STREAM.filter(kind, recording_id)
            done = await natsio.last_event(self.js, tx.STREAM, subject)
            if isinstance(done, tx.RecordingSealed | tx.RecordingQuarantined):
                return done
        return None

    async def handle(self, event: AnyEvent, msg: Msg) -> None:
        if not isinstance(event, cap.CaptureClosed):
            return
        rid = event.recording_id
        ids = {"recording_id": rid, "tenant_id": event.tenant_id}
        if await self.finished(rid) is not None:
            log.info("already transcoded; skipping", extra=ids)
            return
        try:
            rec_dir = recording_dir(self.config.backup_root, event.tenant_id, rid)
        except UnsafePath as exc:
            raise Reject(f"capture.closed names no valid recording folder: {exc}") from None
        ttl = self.config.transcoder_ack_wait_s
        try:
            async with leases.hold(self.kv, lease_key(rid), leases.new_holder(NAME), ttl) as lease:
                # Checked again under the lease: another instance may have just finished it.
                if await self.finished(rid) is not None:
                    return
                await self.work(event, msg, rec_dir, lease)
        except LeaseHeld as exc:
            log.info("busy elsewhere; retrying later", extra={**ids, "holder": exc.holder})
            metrics.RETRIES.labels(reason="busy").inc()
            raise Retry(str(exc), min(max(exc.expires_in, 0.5), ttl)) from None
        except LeaseLost as exc:
            # Paused or cut off past its lease: another instance has the recording now.
            log.warning("lease lost; nothing published", extra=ids)
            metrics.RETRIES.labels(reason="busy").inc()
            raise Retry(str(exc), ttl) from None
        finally:
            if self.spool is not None and self.spool.remote:
                # Whatever the outcome, this machine's copies (fetched segments, a half-written
                # output) are only a spool: a later attempt fetches again, from the store.
                await self.spool.drop_local(rec_dir)

    async def work(
        self, event: cap.CaptureClosed, msg: Msg, rec_dir: Path, lease: leases.Lease
    ) -> None:
        rid = event.recording_id
        history = await natsio.read_subject(self.js, cap.STREAM, cap.STREAM.filter(">", rid))
        state = fold(e for _, e in history)
        attempt = msg.metadata.num_delivered or 1
        problems = missing_parts(state)
        if problems:
            summary = "; ".join(problems)
            if attempt < self.config.transcoder_incomplete_attempts:
                metrics.RETRIES.labels(reason="incomplete").inc()
                raise Retry(
                    f"capture not complete yet: {summary}", self.config.transcoder_retry_delay_s
                )
            await self.quarantine(
                event,
                f"The capture is incomplete after {attempt} checks ({summary}); "
                "the backup is kept for inspection.",
                lease,
            )
            return
        key = await self.recording_key(event, attempt, lease)
        if key is None:
            return  # quarantined
        try:
            await self.fetch_capture(rec_dir, state)
            await self.transcode(event, rec_dir, state, attempt, lease, key.data_key)
        finally:
            key.wipe()  # held for this attempt only

    async def recording_key(
        self, event: cap.CaptureClosed, attempt: int, lease: leases.Lease
    ) -> RecordingKey | None:
        """The recording's key for this attempt; None once the recording is quarantined."""
        try:
            return await keys.attempt_key(
                self.nc,
                recording_id=event.recording_id,
                tenant_id=event.tenant_id,
                service=NAME,
                attempt=attempt,
                max_attempts=self.config.transcoder_incomplete_attempts,
            )
        except Retry as exc:
            metrics.RETRIES.labels(reason="vault").inc()
            ids = {"recording_id": event.recording_id, "tenant_id": event.tenant_id}
            log.warning("no recording key yet", extra={**ids, "error": str(exc)})
            raise
        except keys.KeyRefused as exc:
            await self.quarantine(event, str(exc), lease)
            return None

    async def fetch_capture(self, rec_dir: Path, state: RecordingCapture) -> None:
        """Bring every segment from the store (when it is not this folder), each verified."""
        if self.spool is None or not self.spool.remote:
            return
        try:
            # No stored-bytes hash: segments are encrypted and their events know the plaintext's;
            # verification decrypts each against it (``verify_segments``).
            await self.spool.fetch_all(
                (rec_dir / seg.path, None) for seg in state.segments.values()
            )
        except ObjectMissing as exc:
            raise Retry(f"a capture segment is not in the backup store yet: {exc}", 5) from None
        except BackupStoreError as exc:
            if exc.transient:
                raise Retry(f"the backup store did not answer: {exc}", 5) from None
            raise  # verification below quarantines a segment that is not what was written

    async def keep_output(self, sealed: Sealed) -> None:
        """Put every output file in the store before the sealed event says it exists."""
        if self.spool is None or not self.spool.remote:
            return
        try:
            for f in sealed.files:
                stored = f.stored_name
                await self.spool.keep(
                    sealed.output / stored, sha256=sealed.stored_sha256[stored], drop_local=False
                )
        except BackupStoreError as exc:
            raise Retry(f"could not put the output in the backup store: {exc}", 5) from None

    async def discard(self, sealed: Sealed) -> None:
        """Delete this attempt's own output (here and in the store): it will not be sealed."""
        await asyncio.to_thread(shutil.rmtree, sealed.output, True)
        if self.spool is not None and self.spool.remote:
            with contextlib.suppress(BackupStoreError):
                await self.spool.store.delete_prefix(self.spool.key(sealed.output))

    async def transcode(
        self,
        event: cap.CaptureClosed,
        rec_dir: Path,
        state: RecordingCapture,
        attempt: int,
        lease: leases.Lease,
        key: bytearray,
    ) -> None:
        rid = event.recording_id
        ids = {"recording_id": rid, "tenant_id": event.tenant_id}
        started = await natsio.last_event(self.js, rec.STREAM, rec.STREAM.filter("started", rid))
        options = options_of(started)
        t0 = time.monotonic()

        def took(outcome: str) -> None:
            metrics.TRANSCODE_SECONDS.labels(outcome=outcome).observe(time.monotonic() - t0)

        try:
            plans = plan_files(state, options)
            if not plans:
                raise PlanError("nothing was captured: no participant sent any media")
            composite: CompositePlan | None = None
            if self.config.transcoder_composite:
                native = plan_files(state, OutputOptions("webm", options.tracks))
                composite = plan_composite(native, options)
            log.info(
                "transcoding",
                extra={**ids, "files": len(plans), "format": options.format},
            )
            sealed = await asyncio.to_thread(
                build_output,
                rec_dir,
                state,
                plans,
                key=key,
                signing_key=self.signing_key,
                options=options,
                composite=composite,
                max_bytes_per_s=self.config.transcoder_max_write_bytes_per_s,
                folder=ATTEMPT_PREFIX + secrets.token_hex(6),
                still_mine=lease.check,
            )
        except LeaseLost:
            took("lost")
            raise
        except TranscoderError as exc:
            took("quarantined")
            await self.quarantine(event, f"{exc}; the backup is kept for inspection.", lease)
            return
        except OSError as exc:
            # Disk full, permissions, I/O errors: nothing is wrong with the capture; try later.
            took("retry")
            metrics.RETRIES.labels(reason="io").inc()
            log.warning("could not write the output", extra={**ids, "error": repr(exc)})
            raise Retry(f"could not write the output: {exc}", IO_RETRY_DELAY_S) from None
        except Exception as exc:
            if attempt < self.config.transcoder_incomplete_attempts:
                took("retry")
                metrics.RETRIES.labels(reason="remux").inc()
                log.exception("remux failed; will retry", extra=ids)
                raise Retry(f"remux failed: {exc}", self.config.transcoder_retry_delay_s) from None
            took("quarantined")
            log.exception("remux failed for good", extra=ids)
            await self.quarantine(
                event,
                f"Remuxing failed {attempt} times ({type(exc).__name__}: {exc}); "
                "the backup is kept for inspection.",
                lease,
            )
            return
        output_rel = sealed.output.relative_to(self.config.backup_root).as_posix()
        try:
            await self.keep_output(sealed)
            if self.spool is not None and self.spool.remote:
                # Before the event: an uploader on this machine then fetches into an empty folder.
                await self.spool.drop_local(sealed.output.parent)
            await lease.confirm()
            await natsio.publish(
                self.js,
                tx.RecordingSealed(
                    event_id=sealed_id(rid),
                    recording_id=rid,
                    tenant_id=event.tenant_id,
                    occurred_at=now(),
                    output_dir=output_rel,
                    files=sealed.files,
                ),
                first_on_subject=True,  # one sealed event per recording, ever
            )
        except SubjectTaken:
            took("lost")
            log.info("sealed by another attempt; this one's output is dropped", extra=ids)
            await self.discard(sealed)
            return
        except (LeaseLost, Retry) as exc:
            took("lost" if isinstance(exc, LeaseLost) else "retry")
            await self.discard(sealed)
            raise
        await asyncio.to_thread(remove_other_outputs, sealed.output)
        took("sealed")
        metrics.sealed(sealed.files)
        log.info(
            "sealed",
            extra={
                **ids,
                "output_dir": output_rel,
                "files": len(sealed.files),
                "bytes": sum(f.size for f in sealed.files),
            },
        )

    async def quarantine(self, event: cap.CaptureClosed, reason: str, lease: leases.Lease) -> None:
        await lease.confirm()
        await natsio.publish(
            self.js,
            tx.RecordingQuarantined(
                event_id=quarantined_id(event.recording_id),
                recording_id=event.recording_id,
                tenant_id=event.tenant_id,
                occurred_at=now(),
                reason=reason,
            ),
        )
        metrics.RECORDINGS.labels(outcome="quarantined").inc()
        log.warning(
            "quarantined",
            extra={
                "recording_id": event.recording_id,
                "tenant_id": event.tenant_id,
                "reason": reason,
            },
        )


async def serve(ctx: service.ServiceContext[TranscoderConfig]) -> None:
    spool = await service.backup_spool(ctx)
    kv = await leases.ensure_bucket(ctx.js, replicas=ctx.config.stream_replicas)
    transcoder = Transcoder(ctx.nc, ctx.js, ctx.config, load_signing_key(ctx.config), kv, spool)
    ctx.consume(
        consumer_spec(ctx.config),
        transcoder.handle,
        batch=ctx.config.transcoder_concurrency,
        concurrency=ctx.config.transcoder_concurrency,
    )


def run() -> None:
    service.main(NAME, TranscoderConfig, serve)
