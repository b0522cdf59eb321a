"""The uploader: sealed recordings (and resend requests) to the customer's storage, confirmed.

Consumers: ``uploader-sealed`` (TRANSCODES, ``transcodes.*.sealed``) and ``uploader-resend``
(RECORDINGS, ``recordings.*.resend_requested``); ``uploader-probe`` (VAULT,
``vault.*.probe_requested``) runs destination tests (``probe.py``). One job = one attempt at one
destination: it announces itself (``upload.attempt_started``), gets a one-shot grant from the
vault, uploads and confirms every sealed file, then deletes the backup unless the destination
keeps it. Across instances a job holds the lease ``upload.<rid>`` (``.claim``) and publishes
only while it does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared import leases, natsio, service
from shared.backup import UnsafePath, inside, recording_dir
from shared.backupstore import BackupStoreError
from shared.backupstore.spool import Spool
from shared.events import AnyEvent, event_id
from shared.events import recordings as rec_events
from shared.events import transcodes as tr_events
from shared.events import uploads as up_events
from shared.events.transcodes import RecordingSealed, SealedFile
from shared.ids import TENANT_ID_RE, is_recording_id, is_safe_name
from shared.leases import Lease
from shared.natsio import ConsumerSpec, Reject, Retry, SubjectTaken
from shared.service import ServiceContext

from . import agefiles, claim, metrics, plan, probe
from . import backend as backends
from .backupcrypt import Crypt, recording_key
from .config import UploaderConfig
from .errors import PermanentUploadError, TransientUploadError
from .grant import request_grant
from .layout import check_file_name, render_key
from .plan import Job
from .purge import Purged, persists, purge_recording
from .resume import ResumeStore
from .source import LocalSource, Source, StoreSource

log = logging.getLogger(__name__)


def sealed_consumer(cfg: UploaderConfig) -> ConsumerSpec:
    return ConsumerSpec(
        stream=tr_events.STREAM,
        durable="uploader-sealed",
        filter_subjects=(tr_events.STREAM.filter("sealed"),),
        ack_wait_s=cfg.upload_ack_wait_s,
        # Only as many unacked jobs as we work on: none waits in our queue while its ack
        # deadline runs out (which would hand it to a second worker).
        max_ack_pending=cfg.upload_concurrency,
    )


def resend_consumer(cfg: UploaderConfig) -> ConsumerSpec:
    return ConsumerSpec(
        stream=rec_events.STREAM,
        durable="uploader-resend",
        filter_subjects=(rec_events.STREAM.filter("resend_requested"),),
        ack_wait_s=cfg.upload_ack_wait_s,
        max_ack_pending=cfg.upload_concurrency,
    )


@dataclass
class Attempt:
    """What one job learned on the way, for its metrics: the provider, once it has a grant."""

    provider: str = metrics.UNKNOWN


@dataclass
class Uploader:
    cfg: UploaderConfig
    nc: NATS
    js: JetStreamContext
    kv: KeyValue  # the lease bucket (shared.leases)
    spool: Spool | None = None  # None or a local store: the backup folder is the store
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        return self.spool is not None and self.spool.remote

    @property
    def root(self) -> Path:
        return self.cfg.backup_root

    @asynccontextmanager
    async def _recording_lock(self, rid: str) -> AsyncIterator[Lease]:
        """One job per recording at a time: in this process (a redelivery waits its turn), and
        across instances (the lease; ``Retry`` while another instance holds it)."""
        lock = self._locks.setdefault(rid, asyncio.Lock())
        try:
            async with lock, claim.claimed(self.kv, rid, self.cfg.upload_ack_wait_s) as lease:
                yield lease
        finally:
            if not lock.locked() and self._locks.get(rid) is lock:
                del self._locks[rid]

    # -- consumers ------------------------------------------------------------------------------
    async def on_sealed(self, event: AnyEvent, msg: Msg) -> None:
        if not isinstance(event, RecordingSealed):
            return
        _check_ids(event.recording_id, event.tenant_id)
        rid = event.recording_id
        async with self._recording_lock(rid) as lease:
            done = await natsio.last_event(self.js, up_events.STREAM, f"uploads.{rid}.uploaded")
            if isinstance(done, up_events.RecordingUploaded):
                await self._finish_purge(done, lease)
                return
            started = await self._started(rid)
            job = Job(
                recording_id=rid,
                tenant_id=event.tenant_id,
                destination_id=started.destination_id,
                trigger=plan.SEALED,
                attempt=msg.metadata.num_delivered,
            )
            await self._run(job, event, started, lease)

    async def on_resend(self, event: AnyEvent, msg: Msg) -> None:
        if not isinstance(event, rec_events.ResendRequested):
            return
        _check_ids(event.recording_id, event.tenant_id)
        rid = event.recording_id
        trigger = "resend-" + (
            event.request_id if is_safe_name(event.request_id) else event_id(event.request_id)[:16]
        )
        async with self._recording_lock(rid) as lease:
            history = await natsio.read_subject(
                self.js, up_events.STREAM, f"uploads.{rid}.uploaded"
            )
            if any(
                isinstance(e, up_events.RecordingUploaded) and plan.trigger_of(e.job_id) == trigger
                for _, e in history
            ):
                return
            job = Job(
                recording_id=rid,
                tenant_id=event.tenant_id,
                destination_id=event.destination_id,
                trigger=trigger,
                attempt=msg.metadata.num_delivered,
            )
            sealed = await natsio.last_event(self.js, tr_events.STREAM, f"transcodes.{rid}.sealed")
            recording_dir(self.root, event.tenant_id, rid)  # refuses ids that are no folder
            if not isinstance(sealed, RecordingSealed) or not await self._backup_exists(sealed):
                reason = (
                    "nothing to resend: the recording was never sealed"
                    if not isinstance(sealed, RecordingSealed)
                    else "nothing to resend: the backup was already deleted after the first "
                    "confirmed upload (set persist_backup on a destination to keep it)"
                )
                await lease.confirm()
                await natsio.publish(self.js, plan.attempt_started(job))
                await natsio.publish(
                    self.js, plan.failed(job, reason, transient=False, retry=False)
                )
                metrics.JOBS.labels(provider=metrics.UNKNOWN, outcome="failed").inc()
                log.warning("resend refused", extra={"recording_id": rid, "reason": reason})
                return
            started = await self._started(rid)
            await self._run(job, sealed, started, lease)

    # -- one job --------------------------------------------------------------------------------
    async def _started(self, rid: str) -> rec_events.RecordingStarted:
        started = await natsio.last_event(self.js, rec_events.STREAM, f"recordings.{rid}.started")
        if not isinstance(started, rec_events.RecordingStarted):
            raise Reject(f"recording {rid} has no recording.started event; nothing to upload to")
        return started

    async def _run(
        self, job: Job, sealed: RecordingSealed, started: rec_events.RecordingStarted, lease: Lease
    ) -> None:
        ctx = {"recording_id": job.recording_id, "job_id": job.job_id}
        if job.attempt > self.cfg.upload_max_attempts:
            # Deliveries beyond the limit (crashes mid-job count too): stop here, keep the backup.
            await lease.confirm()
            await self._give_up(job, "the upload was interrupted too many times", transient=True)
            return
        await natsio.publish(self.js, plan.attempt_started(job))
        log.info("upload attempt started", extra={**ctx, "attempt": job.attempt})
        attempt, t0 = Attempt(), time.monotonic()
        try:
            persist = await self._deliver(job, sealed, started, attempt, lease)
        except TransientUploadError as exc:
            await lease.confirm()  # a job that lost its lease reports nothing
            reason = str(exc)
            metrics.FAILURES.labels(provider=attempt.provider, kind="transient").inc()
            if not plan.will_retry(job.attempt, self.cfg.upload_max_attempts, transient=True):
                await self._give_up(job, reason, transient=True, provider=attempt.provider)
                return
            await natsio.publish(self.js, plan.failed(job, reason, transient=True, retry=True))
            metrics.JOBS.labels(provider=attempt.provider, outcome="retry").inc()
            delay = plan.backoff(self.cfg.upload_backoff_s, job.attempt)
            log.warning(
                "upload failed; will retry", extra={**ctx, "reason": reason, "delay_s": delay}
            )
            raise Retry(reason, delay=delay) from None
        except PermanentUploadError as exc:
            await lease.confirm()
            metrics.FAILURES.labels(provider=attempt.provider, kind="permanent").inc()
            await self._give_up(job, str(exc), transient=False, provider=attempt.provider)
            return
        metrics.JOBS.labels(provider=attempt.provider, outcome="uploaded").inc()
        metrics.UPLOAD_SECONDS.labels(provider=attempt.provider).observe(time.monotonic() - t0)
        if persist:
            log.info("backup kept (persist_backup)", extra=ctx)
            return
        await self._purge(job.recording_id, job.tenant_id, job.job_id, lease)

    async def _deliver(
        self,
        job: Job,
        sealed: RecordingSealed,
        started: rec_events.RecordingStarted,
        attempt: Attempt,
        lease: Lease,
    ) -> bool:
        """Upload and confirm every sealed file; publish what was confirmed. Returns whether
        the destination keeps the backup (persist_backup)."""
        output = self._output_dir(sealed)
        rkey = await recording_key(self.nc, job.recording_id, job.tenant_id)
        try:
            return await self._send(job, sealed, started, attempt, lease, output, rkey.data_key)
        finally:
            rkey.wipe()  # the job's copy of the recording key: gone with the job

    async def _send(
        self,
        job: Job,
        sealed: RecordingSealed,
        started: rec_events.RecordingStarted,
        attempt: Attempt,
        lease: Lease,
        output: Path,
        data_key: bytearray,
    ) -> bool:
        material = await request_grant(
            self.nc,
            job_id=job.job_id,
            recording_id=job.recording_id,
            tenant_id=job.tenant_id,
            destination_id=job.destination_id,
            timeout=self.cfg.upload_grant_timeout_s,
        )
        attempt.provider = metrics.provider_label(material.grant.provider)
        try:
            config = dict(material.grant.config)
            store = backends.build(
                material.grant,
                part_size=self.cfg.upload_part_size,
                part_concurrency=self.cfg.upload_part_concurrency,
            )
            resume = self._resume_store(job)
            try:
                remote: list[up_events.RemoteFile] = []
                async with agefiles.sending(
                    sealed.files,
                    lambda f: self._source(output, f, data_key, job.recording_id),
                    config,
                    self.cfg,
                ) as files:
                    async for source, f in files:  # as sealed, or encrypted to encrypt_to
                        lease.check()  # a job paused past its lease stops here
                        key = render_key(
                            config.get("key_template"),
                            prefix=config.get("prefix"),
                            tenant_id=job.tenant_id,
                            started_at=started.occurred_at,
                            recording_id=job.recording_id,
                            file_name=f.name,
                        )
                        slot = resume.slot(job.destination_id, key, f)
                        rf = await store.upload(source, key, f, slot)
                        metrics.FILES.labels(provider=attempt.provider).inc()
                        metrics.BYTES.labels(provider=attempt.provider).inc(rf.size)
                        await natsio.publish(self.js, plan.file_uploaded(job, rf))
                        where = {"file": f.name, "uri": rf.uri}
                        log.info("file uploaded", extra={"recording_id": job.recording_id, **where})
                        remote.append(rf)
            finally:
                await store.close()
        finally:
            material.wipe()
        await lease.confirm()
        await natsio.publish(self.js, plan.uploaded(job, remote))
        log.info(
            "recording uploaded", extra={"recording_id": job.recording_id, "files": len(remote)}
        )
        return config.get("persist_backup") is True

    async def _backup_exists(self, sealed: RecordingSealed) -> bool:
        if not self.remote:
            return recording_dir(self.root, sealed.tenant_id, sealed.recording_id).exists()
        assert self.spool is not None
        try:
            return bool(sealed.files) and await self.spool.exists(
                self._local_file(self._output_dir(sealed), sealed.files[0].stored_name)
            )
        except BackupStoreError as exc:
            raise Retry(f"the backup store did not answer: {exc}", delay=5) from None

    def _resume_store(self, job: Job) -> ResumeStore:
        rec = recording_dir(self.root, job.tenant_id, job.recording_id)
        if not self.remote:
            return ResumeStore(rec)
        assert self.spool is not None  # in the store: any instance resumes what another began
        return ResumeStore(None, store=self.spool.store, key=self.spool.key(rec))

    def _source(
        self, output: Path, sealed_file: SealedFile, data_key: bytearray, recording_id: str
    ) -> Source:
        """Where the file is read from: this folder, or (with an object store) the store itself,
        streamed to the destination without a local copy; decrypted as it is read (the name
        the encryption binds is the file's path in the recording: output folder, stored name)."""
        stored = sealed_file.stored_name
        local = self._local_file(output, stored)
        crypt = Crypt(data_key, recording_id, f"{output.name}/{stored}")
        if not self.remote:
            return LocalSource(local, sealed_file, crypt)
        assert self.spool is not None
        return StoreSource(self.spool.store, self.spool.key(local), sealed_file, crypt)

    def _output_dir(self, sealed: RecordingSealed) -> Path:
        rec = recording_dir(self.root, sealed.tenant_id, sealed.recording_id)
        try:
            out = inside(self.root, sealed.output_dir)
        except UnsafePath:
            out = None
        if out is None or not out.is_relative_to(rec.resolve()):
            raise PermanentUploadError(
                "the sealed output folder is outside the recording's backup folder; "
                "the recording was not sent"
            )
        return out

    def _local_file(self, output: Path, name: str) -> Path:
        try:
            return inside(output, check_file_name(name))
        except UnsafePath:
            raise PermanentUploadError(
                f"sealed file {name!r} is outside the output folder; the recording was not sent"
            ) from None

    async def _give_up(
        self, job: Job, reason: str, *, transient: bool, provider: str = metrics.UNKNOWN
    ) -> None:
        await natsio.publish(self.js, plan.failed(job, reason, transient=transient, retry=False))
        kept = reason if not transient else f"{reason} (gave up after {job.attempt} attempts)"
        await natsio.publish(self.js, plan.retained(job, kept + "; the backup is kept"))
        metrics.JOBS.labels(provider=provider, outcome="retained").inc()
        log.error(
            "upload failed; recording retained",
            extra={"recording_id": job.recording_id, "job_id": job.job_id, "reason": kept},
        )

    async def _purge(self, rid: str, tenant_id: str, job_id: str, lease: Lease) -> None:
        await lease.confirm()
        purged = await asyncio.to_thread(purge_recording, self.root, tenant_id, rid)
        if self.remote:
            assert self.spool is not None
            # Every object of the recording (captures and outputs), wherever it was written.
            files, size = await self.spool.purge(recording_dir(self.root, tenant_id, rid))
            purged = Purged(bytes_freed=size, files=files)
        if purged.files:
            metrics.PURGES.inc()
            metrics.PURGED_BYTES.inc(purged.bytes_freed)
        event = plan.backup_purged(rid, tenant_id, job_id, purged.bytes_freed, purged.files)
        try:
            await natsio.publish(self.js, event, first_on_subject=True)  # once per recording
        except SubjectTaken:
            log.info("backup purged already", extra={"recording_id": rid})
            return
        log.info(
            "backup purged",
            extra={"recording_id": rid, "bytes_freed": purged.bytes_freed, "files": purged.files},
        )

    async def _finish_purge(self, done: up_events.RecordingUploaded, lease: Lease) -> None:
        """Uploaded already (a redelivery, maybe after a crash): make sure the purge happened."""
        rid = done.recording_id
        purged = await natsio.last_event(self.js, up_events.STREAM, f"uploads.{rid}.backup_purged")
        if purged is not None:
            return
        if await persists(self.nc, self.cfg, done.tenant_id, done.destination_id):
            return
        await self._purge(rid, done.tenant_id, done.job_id, lease)


def _check_ids(recording_id: str, tenant_id: str) -> None:
    if not is_recording_id(recording_id) or not TENANT_ID_RE.match(tenant_id):
        raise Reject("the event's recording or tenant id is not valid")


async def serve(ctx: ServiceContext[UploaderConfig]) -> None:
    cfg = ctx.config
    spool = await service.backup_spool(ctx)
    await asyncio.to_thread(agefiles.clean_stale, cfg.data_dir)  # left by a killed job
    kv = await leases.ensure_bucket(ctx.js, replicas=ctx.config.stream_replicas)
    uploader = Uploader(cfg=cfg, nc=ctx.nc, js=ctx.js, kv=kv, spool=spool)
    ctx.consume(sealed_consumer(cfg), uploader.on_sealed, concurrency=cfg.upload_concurrency)
    ctx.consume(resend_consumer(cfg), uploader.on_resend, concurrency=cfg.upload_concurrency)
    # Destination tests the vault asks for (``probe.py``): beside the uploads, never behind them.
    ctx.consume(
        probe.consumer(cfg), probe.handler(ctx.nc, ctx.js, cfg), concurrency=probe.CONCURRENCY
    )
    log.info(
        "uploader ready",
        extra={"backup_root": str(cfg.backup_root), "concurrency": cfg.upload_concurrency},
    )


def run() -> None:
    service.main("uploader", UploaderConfig, serve)
