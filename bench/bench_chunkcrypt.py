"""Chunked AES-256-GCM (shared.chunkcrypt) against one raw AES-256-GCM call over the same bytes
(the floor: no chunking, no framing, output buffer allocated once) and against SHA-256 alone (the
hash every backup file already pays for)."""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import time
from collections.abc import Callable

SIZE = 64 << 20  # 64 MiB per run: ~0.1 s of AES-GCM here, small enough for a shared 2-core box
PIECE = 1 << 20  # what a service hands the writer per call (a segment's or an S3 body's read size)
ROUNDS = 9


def _cpu_medians(fns: list[Callable[[], None]], rounds: int = ROUNDS) -> list[float]:
    """Median CPU time of each after a warm-up, interleaved so that machine state (frequency,
    the other core's load) hits all alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.process_time()
            fn()
            times[i].append(time.process_time() - t0)
    return [statistics.median(t) for t in times]


def run() -> list[dict[str, object]]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from shared.chunkcrypt import DEFAULT_CHUNK_SIZE, Decryptor, Encryptor, decrypt_stream

    key = os.urandom(32)
    data = os.urandom(SIZE)
    nonce = os.urandom(12)
    raw = AESGCM(key)
    raw_ct = bytearray(SIZE + 16)  # allocated and touched once: the floor pays no page faults
    raw_pt = bytearray(SIZE)
    raw.encrypt_into(nonce, data, None, raw_ct)
    rid, name = "rec_" + "0" * 24, "capture/alice/video/000001.rgc"
    enc = Encryptor(key, recording_id=rid, name=name)
    ours_ct = b"".join([*enc.update(data), *enc.finalize()])
    view = memoryview(data)
    cview = memoryview(ours_ct)

    def raw_encrypt() -> None:
        raw.encrypt_into(nonce, data, None, raw_ct)

    def raw_decrypt() -> None:
        raw.decrypt_into(nonce, raw_ct, None, raw_pt)

    def sha_only() -> None:
        hashlib.sha256(data).digest()

    def sink(_: object) -> None:
        pass  # a file's write, minus the copy into the page cache that both sides would pay

    def ours_encrypt() -> None:  # what open_writer(...).write does
        e = Encryptor(key, recording_id=rid, name=name)
        for i in range(0, SIZE, PIECE):
            e.feed(view[i : i + PIECE], sink)
        e.finish(sink)

    def ours_encrypt_bytes() -> None:  # a new bytes object per chunk, 16 per call
        e = Encryptor(key, recording_id=rid, name=name)
        for i in range(0, SIZE, PIECE):
            e.update(view[i : i + PIECE])
        e.finalize()

    def ours_decrypt() -> None:
        d = Decryptor(key, recording_id=rid, name=name)
        for i in range(0, len(ours_ct), PIECE):
            d.feed(cview[i : i + PIECE], sink)
        d.finish(sink)

    def ours_decrypt_stream() -> None:  # pull reader, a new bytes object per chunk
        for _ in decrypt_stream(io.BytesIO(ours_ct), key, recording_id=rid, name=name):
            pass

    base_e, base_d, sha, enc_t, enc_b, dec_t, dec_s = _cpu_medians(
        [
            raw_encrypt,
            raw_decrypt,
            sha_only,
            ours_encrypt,
            ours_encrypt_bytes,
            ours_decrypt,
            ours_decrypt_stream,
        ]
    )
    mib = SIZE / (1 << 20)

    def rate(t: float) -> str:
        return f"{mib / t:.0f} MiB/s"

    chunk = f"{DEFAULT_CHUNK_SIZE // 1024} KiB chunks"
    floor = "(one AES-256-GCM call)"
    return [
        {
            "name": f"chunkcrypt encrypt, {chunk}, 1 MiB writes (open_writer / feed)",
            "ours": rate(enc_t),
            "baseline": f"{rate(base_e)} {floor}",
            "ratio": enc_t / base_e,
            "goal": "<= 1.2x",
        },
        {
            "name": f"chunkcrypt encrypt, {chunk}, 1 MiB writes (Encryptor.update -> bytes)",
            "ours": rate(enc_b),
            "baseline": f"{rate(base_e)} {floor}",
            "ratio": enc_b / base_e,
            "goal": "report only",
        },
        {
            "name": f"chunkcrypt decrypt, {chunk}, 1 MiB reads (Decryptor.feed)",
            "ours": rate(dec_t),
            "baseline": f"{rate(base_d)} {floor}",
            "ratio": dec_t / base_d,
            "goal": "<= 1.2x",
        },
        {
            "name": f"chunkcrypt decrypt, {chunk}, from a file (decrypt_stream -> bytes)",
            "ours": rate(dec_s),
            "baseline": f"{rate(base_d)} {floor}",
            "ratio": dec_s / base_d,
            "goal": "report only",
        },
        {
            "name": f"chunkcrypt encrypt, {chunk}, vs the SHA-256 already paid",
            "ours": rate(enc_t),
            "baseline": f"{rate(sha)} (SHA-256 alone)",
            "ratio": enc_t / sha,
            "goal": "report only",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']}: {row['ours']} vs {row['baseline']} = {row['ratio']:.2f}x")
