"""Encryption at rest for the backup: a streaming, chunked AES-256-GCM file format.

Each recording has its own random 32-byte data key; each file gets a fresh salt, a subkey derived
from both (HKDF-SHA256), and is cut into fixed-size chunks, each sealed with its index as the nonce
and AAD binding the header, the recording id, the file's name, the index and a last-chunk flag.
So no chunk can be altered, reordered, dropped, cut short or moved to another file or recording
without ``TamperedError``. The format, byte by byte: ``docs/backup-encryption.md``.

    with open(path, "wb") as fh, open_writer(fh, key, recording_id=rid, name=name) as w:
        w.write(data)                                # any sizes, any number of calls
    for plain in decrypt_stream(open(path, "rb"), key, recording_id=rid, name=name):
        ...                                          # verified, chunk by chunk

``Encryptor`` / ``Decryptor`` are the same push-style (bytes in, list of bytes out), for sources
such as an S3 body; ``Decryptor(offset=...)`` with ``chunk_start`` resumes a range read.
"""

from __future__ import annotations

from .files import (
    ChunkWriter,
    PlainReader,
    Source,
    decrypt_file,
    decrypt_from,
    decrypt_prefix,
    decrypt_stream,
    decrypt_to,
    encrypt_file,
    encrypt_stream,
    open_writer,
    verify_file,
    verify_stream,
)
from .format import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    KEY_SIZE,
    MAGIC,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    TAG_SIZE,
    VERSION,
    ChunkCryptError,
    Header,
    HeaderError,
    TamperedError,
    TruncatedError,
    chunk_start,
    ciphertext_size,
    plaintext_size,
    read_header,
)
from .stream import Decryptor, Encryptor

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "TAG_SIZE",
    "VERSION",
    "ChunkCryptError",
    "ChunkWriter",
    "Decryptor",
    "Encryptor",
    "Header",
    "HeaderError",
    "PlainReader",
    "Source",
    "TamperedError",
    "TruncatedError",
    "chunk_start",
    "ciphertext_size",
    "decrypt_file",
    "decrypt_from",
    "decrypt_prefix",
    "decrypt_stream",
    "decrypt_to",
    "encrypt_file",
    "encrypt_stream",
    "open_writer",
    "plaintext_size",
    "read_header",
    "verify_file",
    "verify_stream",
]
