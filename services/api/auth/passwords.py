"""Passwords: argon2id (argon2-cffi's ``PasswordHasher``, RFC 9106's low-memory profile), hashed
and checked in a worker thread, at most a few at once so a burst of sign-ins cannot take the
process's memory (each hash takes 64 MiB for a moment). Unknown emails are checked against a
dummy hash, so a sign-in takes as long whether or not the email exists."""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import ApiError

MIN_LENGTH = 12
MAX_LENGTH = 256
CONCURRENT_HASHES = 4

_hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4
_slots: asyncio.Semaphore | None = None


def check_policy(password: str, field: str = "password") -> str:
    """The password if it may be used; else 422 naming ``field`` (never echoing the password)."""
    if len(password) < MIN_LENGTH:
        raise ApiError(
            422,
            f"The password must be at least {MIN_LENGTH} characters; choose a longer one.",
            field,
        )
    if len(password) > MAX_LENGTH:
        raise ApiError(
            422,
            f"The password must be at most {MAX_LENGTH} characters; choose a shorter one.",
            field,
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise ApiError(
            422,
            "The password must not hold control characters (tabs, newlines); remove them.",
            field,
        )
    return password


def _slots_now() -> asyncio.Semaphore:
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(CONCURRENT_HASHES)
    return _slots


async def hash_password(password: str) -> str:
    async with _slots_now():
        return await asyncio.to_thread(_hasher.hash, password)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(24))


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True if ``password`` matches ``stored``. ``stored=None`` (no such user, or no password set
    yet) takes as long and is always False."""
    async with _slots_now():
        return await asyncio.to_thread(_verify, stored, password)


def needs_rehash(stored: str) -> bool:
    """True when ``stored`` was made with other parameters than today's (rehash on sign-in)."""
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def warm() -> None:
    """Make the dummy hash now, so the first unknown email is not slower than the rest."""
    _dummy_hash()


def is_argon2id(stored: str) -> bool:
    return stored.startswith("$argon2id$")
