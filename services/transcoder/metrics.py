"""The transcoder's metrics: how long recordings take, what they produce, and how they end.

``output_kind`` is a pure mapping from a sealed file to a fixed word, so the labels stay bounded
(file names carry participant ids).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.events.transcodes import SealedFile

OUTCOMES = ("sealed", "quarantined")
OUTPUT_KINDS = ("participant", "composite", "manifest", "signature", "checksums")
RETRY_REASONS = ("incomplete", "io", "remux", "busy", "vault")

TRANSCODE_SECONDS = Histogram(
    "resguardo_transcoder_transcode_seconds",
    "Wall time to build one recording's output (plan, remux, composite, manifest, signature), "
    "by outcome: sealed, quarantined (its capture could not be transcoded) or retry (an I/O or "
    "remux error, tried again later).",
    ["outcome"],
    buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
RECORDINGS = Counter(
    "resguardo_transcoder_recordings_total",
    "Recordings this transcoder finished, by outcome: sealed (output verified and announced) or "
    "quarantined (the backup is kept for inspection).",
    ["outcome"],
)
OUTPUTS = Counter(
    "resguardo_transcoder_outputs_total",
    "Files of sealed recordings, by kind: participant (one per participant), composite (the "
    "call's grid), manifest, signature, checksums (SHA256SUMS).",
    ["kind"],
)
OUTPUT_BYTES = Counter(
    "resguardo_transcoder_output_bytes_total",
    "Bytes of the files of sealed recordings, by kind (as resguardo_transcoder_outputs_total).",
    ["kind"],
)
RETRIES = Counter(
    "resguardo_transcoder_retries_total",
    "Recordings put back for a later try, by reason: incomplete (the capture is not all there "
    "yet), io (the output could not be written), remux (remuxing failed), busy (another "
    "instance holds the recording), vault (the recording's key could not be had yet).",
    ["reason"],
)

for _outcome in OUTCOMES:
    RECORDINGS.labels(outcome=_outcome)
for _kind in OUTPUT_KINDS:
    OUTPUTS.labels(kind=_kind)
    OUTPUT_BYTES.labels(kind=_kind)
for _reason in RETRY_REASONS:
    RETRIES.labels(reason=_reason)


def output_kind(sealed: SealedFile) -> str:
    """The kind of one sealed file: a media file names its participant, the composite none."""
    if sealed.role == "media":
        return "participant" if sealed.participant_id else "composite"
    return sealed.role


def sealed(files: list[SealedFile]) -> None:
    RECORDINGS.labels(outcome="sealed").inc()
    for f in files:
        kind = output_kind(f)
        OUTPUTS.labels(kind=kind).inc()
        OUTPUT_BYTES.labels(kind=kind).inc(f.size)
