"""shared.chunkcrypt: known vectors (checked against the spec), round trips, every tamper case."""

from __future__ import annotations

import hmac
import io
import os
import pickle
import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared import chunkcrypt as cc

KEY = bytes(range(32))
SALT = bytes(range(0x80, 0xA0))
RID = "rec_00112233445566778899aabb"
NAME = "capture/alice/video/000001.rgc"
FOX = b"The quick brown fox jumps over the lazy dog"
CS = 16  # small chunks: many chunks from few bytes

# Computed once with this implementation; each byte is re-derived from the spec in
# test_vector_matches_the_spec, so a change to the format breaks both tests, not neither.
FOX_VECTOR = bytes.fromhex(
    "5247454e430a010000000010808182838485868788898a8b8c8d8e8f909192939495969798999a9b"
    "9c9d9e9f6d1529a6b1231230efcbe3deababca92fc1a15694e22fde0031ee74805004f93696c6db7"
    "4d9e68a6cf3dd1dfbbd9705b58db9133b84ef70b5e5cdc971351236bb47385a3620f5a9fe85795bf"
    "a07ff3484295ad73ccdcc982ed1ea4027daaf1da4a86988f3aebf8f28281dea34202eafba1d57ff4"
    "13f8653868d452"
)
EMPTY_NAME = "output-1/composite.webm"
EMPTY_VECTOR = bytes.fromhex(
    "5247454e430a010000010000808182838485868788898a8b8c8d8e8f909192939495969798999a9b"
    "9c9d9e9fd96e612a52763cdea6354add784146900f0e329ad6e8b2fabfaafa7633cfca531601c6b8"
    "6638f71c31e766d64bef3f3e"
)


def encrypt(
    plaintext: bytes,
    *,
    key: bytes = KEY,
    rid: str = RID,
    name: str = NAME,
    chunk_size: int = CS,
    salt: bytes | None = None,
) -> bytes:
    enc = cc.Encryptor(key, recording_id=rid, name=name, chunk_size=chunk_size, _salt=salt)
    return b"".join([*enc.update(plaintext), *enc.finalize()])


# ---- readers: every test that reads runs against each of them ------------------------------


def read_stream(ct: bytes, key: bytes, rid: str, name: str, out: list[bytes]) -> None:
    for plain in cc.decrypt_stream(io.BytesIO(ct), key, recording_id=rid, name=name):
        out.append(plain)


def read_to(ct: bytes, key: bytes, rid: str, name: str, out: list[bytes]) -> None:
    cc.decrypt_to(io.BytesIO(ct), lambda v: out.append(bytes(v)), key, recording_id=rid, name=name)


def read_push(ct: bytes, key: bytes, rid: str, name: str, out: list[bytes]) -> None:
    dec = cc.Decryptor(key, recording_id=rid, name=name)
    rng = random.Random(len(ct))
    pos = 0
    while pos < len(ct):
        n = rng.randint(1, 40)
        out.extend(dec.update(ct[pos : pos + n]))
        pos += n
    out.extend(dec.finalize())


def read_push_views(ct: bytes, key: bytes, rid: str, name: str, out: list[bytes]) -> None:
    dec = cc.Decryptor(key, recording_id=rid, name=name)
    sink: Callable[[cc.format.BytesLike], None] = lambda v: out.append(bytes(v))  # noqa: E731
    dec.feed(ct, sink)
    dec.finish(sink)


READERS = [read_stream, read_to, read_push, read_push_views]
Reader = Callable[[bytes, bytes, str, str, list[bytes]], None]


def decrypt(
    ct: bytes, reader: Reader = read_stream, *, key: bytes = KEY, name: str = NAME
) -> bytes:
    out: list[bytes] = []
    reader(ct, key, RID, name, out)
    return b"".join(out)


# ---- known vectors -------------------------------------------------------------------------


def test_known_vectors() -> None:
    assert encrypt(FOX, salt=SALT) == FOX_VECTOR
    assert encrypt(b"", name=EMPTY_NAME, chunk_size=65536, salt=SALT) == EMPTY_VECTOR
    assert decrypt(FOX_VECTOR) == FOX
    assert decrypt(EMPTY_VECTOR, name=EMPTY_NAME) == b""


def test_vector_matches_the_spec() -> None:
    """Rebuild FOX_VECTOR from docs/backup-encryption.md with the primitives directly."""
    body = b"RGENC\n" + bytes([1, 0]) + struct.pack(">I", CS) + SALT
    okm = HKDF(hashes.SHA256(), 64, SALT, b"resguardo chunkcrypt v1 keys").derive(KEY)
    chunk_key, header_key = okm[:32], okm[32:]
    header = body + hmac.digest(header_key, body, "sha256")
    assert len(header) == cc.HEADER_SIZE == 76
    assert FOX_VECTOR[:76] == header
    context = struct.pack(">H", len(RID)) + RID.encode() + struct.pack(">H", len(NAME))
    context += NAME.encode()
    pieces = [FOX[0:16], FOX[16:32], FOX[32:]]
    expected = header
    for i, piece in enumerate(pieces):
        nonce = bytes(4) + struct.pack(">Q", i)
        aad = header + context + struct.pack(">QB", i, i == len(pieces) - 1)
        expected += AESGCM(chunk_key).encrypt(nonce, piece, aad)
    # The first chunk on its own, at its documented offset, then the whole file.
    first = AESGCM(chunk_key).encrypt(bytes(12), FOX[:16], header + context + bytes(8) + b"\0")
    assert FOX_VECTOR[76 : 76 + 32] == first
    assert expected == FOX_VECTOR


# ---- round trips ---------------------------------------------------------------------------

SIZES = [0, 1, CS - 1, CS, CS + 1, 2 * CS, 3 * CS + 5, 10 * CS, 10 * CS - 1]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_sizes(size: int, reader: Reader) -> None:
    data = os.urandom(size)
    ct = encrypt(data)
    assert len(ct) == cc.ciphertext_size(size, CS)
    assert cc.plaintext_size(len(ct), CS) == size
    assert decrypt(ct, reader) == data


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536 + 7])
def test_round_trip_default_chunk_size(size: int) -> None:
    data = os.urandom(size)
    enc = cc.Encryptor(KEY, recording_id=RID, name=NAME)
    ct = b"".join([*enc.update(data), *enc.finalize()])
    assert len(ct) == cc.ciphertext_size(size)
    assert decrypt(ct) == data
    assert cc.read_header(ct).chunk_size == cc.DEFAULT_CHUNK_SIZE


def test_writers_agree_for_random_write_sizes() -> None:
    rng = random.Random(7)
    for size in [*SIZES, 500, 1000]:
        data = rng.randbytes(size)
        pieces, pos = [], 0
        while pos < size:
            n = rng.choice([0, 1, 3, CS - 1, CS, CS + 1, 50])
            pieces.append(data[pos : pos + n])
            pos += n
        fh = io.BytesIO()
        with cc.open_writer(fh, KEY, recording_id=RID, name=NAME, chunk_size=CS) as w:
            for piece in pieces:
                w.write(piece)
        assert w.plaintext_size == size
        enc = cc.Encryptor(KEY, recording_id=RID, name=NAME, chunk_size=CS)
        upd = b"".join(b"".join(enc.update(p)) for p in pieces) + b"".join(enc.finalize())
        out = io.BytesIO()
        n = cc.encrypt_stream(
            io.BytesIO(data), out, KEY, recording_id=RID, name=NAME, chunk_size=CS
        )
        assert n == size
        for ct in (fh.getvalue(), upd, out.getvalue()):
            assert len(ct) == cc.ciphertext_size(size, CS)
            assert decrypt(ct, read_push) == data


def test_file_helpers(tmp_path: Path) -> None:
    src, enc, dec = tmp_path / "a.bin", tmp_path / "a.enc", tmp_path / "a.out"
    data = os.urandom(200_000)
    src.write_bytes(data)
    assert cc.encrypt_file(src, enc, KEY, recording_id=RID, name=NAME) == len(data)
    assert enc.stat().st_size == cc.ciphertext_size(len(data))
    assert cc.verify_file(enc, KEY, recording_id=RID, name=NAME) == len(data)
    assert cc.decrypt_file(enc, dec, KEY, recording_id=RID, name=NAME) == len(data)
    assert dec.read_bytes() == data
    # A file that fails leaves no output behind, not even the chunks that did verify.
    raw = bytearray(enc.read_bytes())
    raw[-1] ^= 1
    enc.write_bytes(raw)
    dec.unlink()
    with pytest.raises(cc.TamperedError):
        cc.decrypt_file(enc, dec, KEY, recording_id=RID, name=NAME)
    assert not dec.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("size", [0, 1, CS, CS + 1, 3 * CS, 3 * CS + 5])
def test_random_access_every_offset(size: int) -> None:
    data = os.urandom(size)
    ct = encrypt(data)
    for offset in range(size + 1):
        got = cc.decrypt_stream(io.BytesIO(ct), KEY, recording_id=RID, name=NAME, offset=offset)
        assert b"".join(got) == data[offset:]
        # A range read: the header, then the bytes from chunk_start on, pushed in pieces.
        header = cc.read_header(ct[: cc.HEADER_SIZE])
        start = cc.chunk_start(offset, header.chunk_size)
        dec = cc.Decryptor(KEY, recording_id=RID, name=NAME, offset=offset)
        out = dec.update(ct[: cc.HEADER_SIZE])
        for i in range(start, len(ct), 5):
            out += dec.update(ct[i : i + 5])
        out += dec.finalize()
        assert b"".join(out) == data[offset:]
    with pytest.raises(ValueError, match="past the end"):
        list(cc.decrypt_stream(io.BytesIO(ct), KEY, recording_id=RID, name=NAME, offset=size + 1))


def test_random_access_still_catches_truncation() -> None:
    ct = encrypt(os.urandom(5 * CS))
    cut = ct[: -(CS + cc.TAG_SIZE)]  # last chunk dropped: a valid-looking size
    with pytest.raises(cc.TamperedError, match="chunk 3"):
        list(cc.decrypt_stream(io.BytesIO(cut), KEY, recording_id=RID, name=NAME, offset=2 * CS))


def test_sizes() -> None:
    for cs in (16, 100, 65536):
        for n in [*range(0, 3 * cs + 2), 10**6]:
            assert cc.plaintext_size(cc.ciphertext_size(n, cs), cs) == n
    assert cc.ciphertext_size(0) == 76 + 16
    assert cc.ciphertext_size(65536) == 76 + 65536 + 16
    assert cc.ciphertext_size(65537) == 76 + 65537 + 32
    for bad in (0, 75, 76, 91, 76 + (CS + 16) + 5, 76 + (CS + 16) + 16):
        with pytest.raises(cc.TruncatedError):
            cc.plaintext_size(bad, CS)
    for bad_cs in (0, 15, cc.MAX_CHUNK_SIZE + 1):
        with pytest.raises(ValueError):
            cc.ciphertext_size(1, bad_cs)
        with pytest.raises(ValueError):
            cc.Encryptor(KEY, recording_id=RID, name=NAME, chunk_size=bad_cs)
    assert cc.chunk_start(0, CS) == 76
    assert cc.chunk_start(CS, CS) == 76  # a boundary resumes from the end of the chunk before
    assert cc.chunk_start(CS + 1, CS) == 76 + CS + 16


# ---- tampering -----------------------------------------------------------------------------

PLAIN = bytes(range(256)) * 5  # 1280 bytes: 80 chunks of 16
CHUNKS = len(PLAIN) // CS
STEP = CS + cc.TAG_SIZE


def chunk_at(i: int) -> int:
    return cc.HEADER_SIZE + i * STEP


def expect_tamper(
    ct: bytes,
    reader: Reader,
    *,
    good_chunks: int | None,
    key: bytes = KEY,
    rid: str = RID,
    name: str = NAME,
    kind: type[cc.TamperedError] = cc.TamperedError,
) -> cc.TamperedError:
    """Reading fails with ``kind``, after yielding exactly the first ``good_chunks`` chunks
    (None: the readers may differ on how much came out before, but all of it was authentic)."""
    out: list[bytes] = []
    with pytest.raises(kind) as info:
        reader(ct, key, rid, name, out)
    got = b"".join(out)
    if good_chunks is not None:
        assert got == PLAIN[: good_chunks * CS]
    else:
        assert PLAIN.startswith(got)
    message = str(info.value)
    assert KEY.hex() not in message and key.hex() not in message
    return info.value


@pytest.fixture(scope="module")
def ct() -> bytes:
    return encrypt(PLAIN)


def flipped(ct: bytes, pos: int) -> bytes:
    raw = bytearray(ct)
    raw[pos] ^= 0x01
    return bytes(raw)


@pytest.mark.parametrize("reader", READERS)
def test_every_header_byte(ct: bytes, reader: Reader) -> None:
    for pos in range(cc.HEADER_SIZE):
        err = expect_tamper(flipped(ct, pos), reader, good_chunks=0, kind=cc.HeaderError)
        assert err.chunk is None


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("index", [0, 1, CHUNKS // 2, CHUNKS - 1])
def test_flipped_byte_in_a_chunk_or_its_tag(ct: bytes, reader: Reader, index: int) -> None:
    for offset in (0, CS // 2, CS - 1, CS, STEP - 1):  # ciphertext, then the tag
        err = expect_tamper(flipped(ct, chunk_at(index) + offset), reader, good_chunks=index)
        assert err.chunk == index
        assert "does not authenticate" in str(err)


@pytest.mark.parametrize("reader", READERS)
def test_last_chunk_dropped(ct: bytes, reader: Reader) -> None:
    cut = ct[: chunk_at(CHUNKS - 1)]
    err = expect_tamper(cut, reader, good_chunks=CHUNKS - 2)
    assert err.chunk == CHUNKS - 2 and "cut short" in str(err)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("index", [0, 3, CHUNKS - 1])
def test_truncated_mid_chunk(ct: bytes, reader: Reader, index: int) -> None:
    for into in (1, cc.TAG_SIZE - 1, cc.TAG_SIZE, CS, STEP - 1):
        err = expect_tamper(ct[: chunk_at(index) + into], reader, good_chunks=index)
        assert err.chunk == index


@pytest.mark.parametrize("reader", READERS)
def test_truncated_to_the_header_or_inside_it(ct: bytes, reader: Reader) -> None:
    err = expect_tamper(ct[: cc.HEADER_SIZE], reader, good_chunks=0, kind=cc.TruncatedError)
    assert err.chunk == 0
    for size in (0, 1, cc.HEADER_SIZE - 1):
        expect_tamper(ct[:size], reader, good_chunks=0, kind=cc.TruncatedError)
    # An empty file's one chunk dropped.
    empty = encrypt(b"")
    expect_tamper(empty[: cc.HEADER_SIZE], reader, good_chunks=0, kind=cc.TruncatedError)


@pytest.mark.parametrize("reader", READERS)
def test_extended(ct: bytes, reader: Reader) -> None:
    # The old last chunk is now read as a middle chunk: it was sealed as the last.
    extra = ct[chunk_at(3) : chunk_at(4)]
    expect_tamper(ct + extra, reader, good_chunks=CHUNKS - 1)
    expect_tamper(ct + b"\0", reader, good_chunks=CHUNKS - 1)


@pytest.mark.parametrize("reader", READERS)
def test_two_chunks_swapped(ct: bytes, reader: Reader) -> None:
    a, b = ct[chunk_at(2) : chunk_at(3)], ct[chunk_at(3) : chunk_at(4)]
    swapped = ct[: chunk_at(2)] + b + a + ct[chunk_at(4) :]
    err = expect_tamper(swapped, reader, good_chunks=2)
    assert err.chunk == 2


@pytest.mark.parametrize("reader", READERS)
def test_chunk_dropped_from_the_middle(ct: bytes, reader: Reader) -> None:
    expect_tamper(ct[: chunk_at(5)] + ct[chunk_at(6) :], reader, good_chunks=5)


@pytest.mark.parametrize("reader", READERS)
def test_chunk_from_another_file_of_the_same_recording(ct: bytes, reader: Reader) -> None:
    # Same key, recording, name and plaintext: only the salt differs, and that is enough.
    again = encrypt(PLAIN)
    mixed = ct[: chunk_at(4)] + again[chunk_at(4) : chunk_at(5)] + ct[chunk_at(5) :]
    expect_tamper(mixed, reader, good_chunks=4)
    other = encrypt(PLAIN, name="capture/alice/video/000002.rgc")
    mixed = ct[: chunk_at(4)] + other[chunk_at(4) : chunk_at(5)] + ct[chunk_at(5) :]
    expect_tamper(mixed, reader, good_chunks=4)
    # The header of one file on the chunks of another.
    expect_tamper(again[: cc.HEADER_SIZE] + ct[cc.HEADER_SIZE :], reader, good_chunks=0)


@pytest.mark.parametrize("reader", READERS)
def test_whole_file_under_another_recording_or_name(ct: bytes, reader: Reader) -> None:
    err = expect_tamper(ct, reader, good_chunks=0, rid="rec_ffffffffffffffffffffffff")
    assert err.chunk == 0
    err = expect_tamper(ct, reader, good_chunks=0, name="capture/alice/video/000002.rgc")
    assert err.chunk == 0


@pytest.mark.parametrize("reader", READERS)
def test_wrong_key(ct: bytes, reader: Reader) -> None:
    other = os.urandom(32)
    err = expect_tamper(ct, reader, good_chunks=0, key=other, kind=cc.HeaderError)
    assert "wrong data key" in str(err)


def test_error_tree() -> None:
    assert issubclass(cc.HeaderError, cc.TamperedError)
    assert issubclass(cc.TruncatedError, cc.TamperedError)
    assert issubclass(cc.TamperedError, cc.ChunkCryptError)


# ---- key hygiene and misuse ----------------------------------------------------------------


def test_keys_stay_out_of_reprs_and_pickles() -> None:
    enc = cc.Encryptor(KEY, recording_id=RID, name=NAME)
    dec = cc.Decryptor(KEY, recording_id=RID, name=NAME)
    w = cc.open_writer(io.BytesIO(), KEY, recording_id=RID, name=NAME)
    for obj in (enc, dec, w, enc._cipher):
        text = repr(obj)
        assert KEY.hex() not in text and repr(KEY) not in text
    for obj in (enc, dec, enc._cipher):
        with pytest.raises(TypeError):
            pickle.dumps(obj)


def test_wipe() -> None:
    enc = cc.Encryptor(KEY, recording_id=RID, name=NAME, chunk_size=CS)
    enc.update(b"secret plaintext, buffered")
    cipher = enc._cipher
    enc.wipe()
    assert cipher._chunk_key == bytearray(32)
    assert enc._buf == bytearray(len(enc._buf))
    with pytest.raises(ValueError):
        enc.update(b"more")
    with pytest.raises(ValueError):
        cipher.seal(0, b"", True)
    dec = cc.Decryptor(KEY, recording_id=RID, name=NAME)
    held = dec._data_key
    dec.wipe()
    assert held == bytearray(32)
    with pytest.raises(ValueError):
        dec.update(b"")


def test_finalize_wipes_keys() -> None:
    enc = cc.Encryptor(KEY, recording_id=RID, name=NAME)
    enc.finalize()
    assert enc._cipher._chunk_key == bytearray(32)
    with pytest.raises(ValueError):
        enc.finalize()


def test_failed_open_into_leaves_no_unverified_plaintext(ct: bytes) -> None:
    bad = flipped(ct, chunk_at(0) + STEP - 1)  # the tag: the ciphertext itself decrypts fine
    dec = cc.Decryptor(KEY, recording_id=RID, name=NAME)
    seen: list[bytes] = []
    with pytest.raises(cc.TamperedError):
        dec.feed(bad, lambda v: seen.append(bytes(v)))
    assert seen == []
    assert dec._outbuf is not None and bytes(dec._outbuf) == bytes(CS)


def test_writer_aborted_by_an_exception_leaves_a_truncated_file() -> None:
    fh = io.BytesIO()
    with pytest.raises(RuntimeError):
        with cc.open_writer(fh, KEY, recording_id=RID, name=NAME, chunk_size=CS) as w:
            w.write(PLAIN)
            raise RuntimeError("crash mid-write")
    with pytest.raises(cc.TamperedError):
        decrypt(fh.getvalue())


def test_bad_arguments() -> None:
    for bad_key in (b"", bytes(16), bytes(33)):
        with pytest.raises(ValueError, match="32 bytes"):
            cc.Encryptor(bad_key, recording_id=RID, name=NAME)
        with pytest.raises(ValueError, match="32 bytes"):
            cc.Decryptor(bad_key, recording_id=RID, name=NAME)
    for rid, name in (("", NAME), (RID, ""), (RID, "x" * 70000)):
        with pytest.raises(ValueError):
            cc.Encryptor(KEY, recording_id=rid, name=name)
    # A bytearray key works and is not kept by the caller-visible objects.
    key = bytearray(KEY)
    assert decrypt(encrypt(FOX, key=bytes(key)), key=bytes(key)) == FOX
    assert (
        b"".join(cc.decrypt_stream(io.BytesIO(encrypt(FOX)), key, recording_id=RID, name=NAME))
        == FOX
    )


def test_a_failing_sink_stops_the_writer() -> None:
    class Full(io.BytesIO):
        def write(self, data: object) -> int:
            if self.tell() > 100:
                raise OSError("disk full")
            return super().write(data)  # type: ignore[arg-type]

    fh = Full()
    w = cc.open_writer(fh, KEY, recording_id=RID, name=NAME, chunk_size=CS)
    with pytest.raises(OSError, match="disk full"):
        w.write(PLAIN)
    with pytest.raises(ValueError):
        w.write(b"more")
    with pytest.raises(cc.TamperedError):
        decrypt(fh.getvalue())


def test_decrypt_from_resumes_a_range_read_and_still_catches_tampering() -> None:
    key, data = bytes(range(32)), os.urandom(10_000)
    out = io.BytesIO()
    with cc.open_writer(out, key, recording_id="rec_a", name="f", chunk_size=1024) as w:
        w.write(data)
    blob = out.getvalue()
    header = blob[: cc.HEADER_SIZE]
    for offset in (0, 1, 1023, 1024, 5000, 9999, 10_000):
        start = cc.chunk_start(offset, 1024)
        chunks = cc.decrypt_from(
            io.BytesIO(blob[start:]),
            key,
            recording_id="rec_a",
            name="f",
            header=header,
            offset=offset,
        )
        reader = cc.PlainReader(chunks)
        got = bytearray(len(data))
        n = reader.readinto(memoryview(got))
        assert bytes(got[:n]) == data[offset:], offset
    start = cc.chunk_start(5000, 1024)
    cut = blob[start:-10]
    with pytest.raises(cc.TamperedError):
        list(
            cc.decrypt_from(
                io.BytesIO(cut), key, recording_id="rec_a", name="f", header=header, offset=5000
            )
        )
    flipped = bytearray(blob[start:])
    flipped[3000] ^= 1
    with pytest.raises(cc.TamperedError):
        list(
            cc.decrypt_from(
                io.BytesIO(bytes(flipped)),
                key,
                recording_id="rec_a",
                name="f",
                header=header,
                offset=5000,
            )
        )


def test_decrypt_prefix_reads_what_a_killed_writer_left() -> None:
    key, data = bytes(range(32)), os.urandom(5000)
    out = io.BytesIO()
    w = cc.open_writer(out, key, recording_id="rec_a", name="f", chunk_size=1024)
    w.write(data)  # never closed: 4 chunks sealed, the rest still in the writer
    blob = out.getvalue()
    got = b"".join(cc.decrypt_prefix(io.BytesIO(blob[:-5]), key, recording_id="rec_a", name="f"))
    assert got == data[: 3 * 1024]  # the cut-off fourth chunk is dropped
    whole = b"".join(cc.decrypt_prefix(io.BytesIO(blob), key, recording_id="rec_a", name="f"))
    assert whole == data[: 4 * 1024]
    w.abort()
    with pytest.raises(cc.TamperedError):
        list(cc.decrypt_prefix(io.BytesIO(blob), bytes(32), recording_id="rec_a", name="f"))
