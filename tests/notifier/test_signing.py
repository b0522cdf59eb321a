"""Standard Webhooks signing, cross-checked against the reference library (standardwebhooks)."""

from __future__ import annotations

import base64
import pickle
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks

from services.notifier import signing
from services.notifier.signing import (
    InvalidSecret,
    WebhookSecret,
    WebhookVerificationError,
    generate_secret,
    sign,
    verify,
)

# The vector published with the reference libraries (libraries/*/tests: test_sign_function).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

BODY = b'{"type":"recording.verified","data":{"recording_id":"rec_01","bytes":12345}}'


def test_published_vector() -> None:
    headers = sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS) == VECTOR_ID


def test_reference_library_accepts_ours() -> None:
    secret = generate_secret()
    headers = sign(secret, "evt_ref_accepts", int(time.time()), BODY)
    parsed = standardwebhooks.Webhook(secret.reveal()).verify(BODY, headers)
    assert parsed["data"]["recording_id"] == "rec_01"


def test_reference_library_accepts_every_secret_of_a_rotation() -> None:
    new, old = generate_secret(), generate_secret()
    headers = sign([new, old], "evt_rotation", int(time.time()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    # A receiver still on the old secret and one already on the new one both verify.
    for secret in (new, old):
        standardwebhooks.Webhook(secret.reveal()).verify(BODY, headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(generate_secret().reveal()).verify(BODY, headers)


def test_we_accept_the_reference_librarys_signatures() -> None:
    secret = generate_secret()
    now = int(time.time())
    wh = standardwebhooks.Webhook(secret.reveal())
    theirs = wh.sign("evt_theirs", datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    # Mixed-case names, as some frameworks hand them over.
    headers = {
        "Webhook-Id": "evt_theirs",
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": theirs,
    }
    assert verify(secret, headers, BODY) == "evt_theirs"
    assert theirs == sign(secret, "evt_theirs", now, BODY)["webhook-signature"]


def test_id_is_stable_across_retries_and_the_signature_follows_the_timestamp() -> None:
    secret = generate_secret()
    first = sign(secret, "evt_retry", 1_700_000_000, BODY)
    retry = sign(secret, "evt_retry", 1_700_000_060, BODY)
    assert first["webhook-id"] == retry["webhook-id"] == "evt_retry"
    assert first["webhook-signature"] != retry["webhook-signature"]


def test_verify_accepts_rotation_from_either_side() -> None:
    new, old = generate_secret(), generate_secret()
    now = int(time.time())
    signed_by_old_only = sign(old, "evt_a", now, BODY)
    assert verify([new, old], signed_by_old_only, BODY) == "evt_a"
    signed_by_both = sign([new, old], "evt_b", now, BODY)
    assert verify(new, signed_by_both, BODY) == "evt_b"
    assert verify(old.reveal(), signed_by_both, BODY) == "evt_b"


def test_verify_skips_other_versions_and_junk_entries() -> None:
    secret = generate_secret()
    now = int(time.time())
    good = sign(secret, "evt_mixed", now, BODY)["webhook-signature"]
    wrong_v1 = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    junk = f"v2,AAAA v1,not-base64!! v1a,abc noseparator {wrong_v1}"
    headers = {"webhook-id": "evt_mixed", "webhook-timestamp": str(now)}
    headers["webhook-signature"] = f"{junk} {good}"
    assert verify(secret, headers, BODY) == "evt_mixed"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, b: (h | {"webhook-signature": "v1," + "A" * 44}, b), "no webhook signature"),
        (lambda h, b: (h, b + b" "), "no webhook signature"),
        (lambda h, b: (h | {"webhook-id": "evt_other"}, b), "no webhook signature"),
        (lambda h, b: (h | {"webhook-timestamp": "999999000"}, b), "too old"),
        (lambda h, b: (h | {"webhook-timestamp": "9999999999"}, b), "future"),
        (lambda h, b: (h | {"webhook-timestamp": "01000000000"}, b), "malformed"),
        (lambda h, b: (h | {"webhook-timestamp": "1e9"}, b), "malformed"),
        (lambda h, b: (h | {"webhook-signature": "v2,abc"}, b), "no v1 signature"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "missing"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing"),
    ],
)
def test_verify_refuses(change, message: str) -> None:  # type: ignore[no-untyped-def]
    secret = generate_secret()
    now = 1_000_000_000
    headers, body = change(sign(secret, "evt_x", now, BODY), BODY)
    with pytest.raises(WebhookVerificationError, match=message) as caught:
        verify(secret, headers, body, now=now + 1)
    assert secret.reveal() not in str(caught.value)


def test_tolerance_window_edges() -> None:
    secret = generate_secret()
    headers = sign(secret, "evt_edge", 1_000_000_000, BODY)
    assert verify(secret, headers, BODY, now=1_000_000_300) == "evt_edge"
    assert verify(secret, headers, BODY, now=999_999_700) == "evt_edge"
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, BODY, now=1_000_000_301)
    assert verify(secret, headers, BODY, now=1_000_003_600, tolerance=3600) == "evt_edge"


def test_secrets_never_show_in_repr_str_or_errors() -> None:
    secret = generate_secret()
    revealed = secret.reveal()
    key_b64 = revealed.removeprefix("whsec_")
    for text in (repr(secret), str(secret), f"{secret}", repr([secret])):
        assert key_b64 not in text
        assert secret.fingerprint in text
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_secret_format() -> None:
    secret = generate_secret()
    revealed = secret.reveal()
    assert revealed.startswith("whsec_")
    assert len(base64.b64decode(revealed[6:])) == signing.GENERATED_KEY_BYTES
    assert WebhookSecret.parse(revealed) == secret
    assert generate_secret() != secret


@pytest.mark.parametrize(
    "text",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_",  # empty
        "whsec_not*base64",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
    ],
)
def test_bad_secrets_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(InvalidSecret) as caught:
        WebhookSecret.parse(text)
    assert text.removeprefix("whsec_") not in str(caught.value) or text == "whsec_"


@pytest.mark.parametrize("msg_id", ["", "a.b", "evt 1", "evt\r\nx", "é", "x" * 257])
def test_sign_refuses_ids_that_would_be_ambiguous_or_break_headers(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        sign(generate_secret(), msg_id, 1, BODY)


@pytest.mark.parametrize("timestamp", [-1, 1.5, True])
def test_sign_refuses_bad_timestamps(timestamp: object) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        sign(generate_secret(), "evt", timestamp, BODY)  # type: ignore[arg-type]


def test_sign_needs_a_secret_and_signs_a_duplicate_once() -> None:
    with pytest.raises(InvalidSecret):
        sign([], "evt", 1, BODY)
    secret = generate_secret()
    headers = sign([secret, secret.reveal()], "evt", 1, BODY)
    assert " " not in headers["webhook-signature"]


def test_binary_bodies_are_signed_byte_for_byte() -> None:
    secret = generate_secret()
    body = bytes(range(256))
    headers = sign(secret, "evt_bin", 5, body)
    assert verify(secret, headers, body, now=5) == "evt_bin"
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body[:-1], now=5)
