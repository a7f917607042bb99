"""The HMAC signature scheme (payments.signing): by example and by property."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from payments.gateway import CallbackRejected
from payments.signing import request_payload, sign, sign_all, verify

T = 1_732_600_000
NOW = datetime.fromtimestamp(T, timezone.utc)
SECRET = b"whsec_current"
OLD = b"whsec_previous"
BODY = b'{"id":"evt_1","amount_minor":100}'


def rejected(code: str, header: str | None, body: bytes = BODY, secrets=(SECRET,), now: datetime = NOW, **kw):
    with pytest.raises(CallbackRejected) as info:
        verify(header, body, list(secrets), now, **kw)
    assert info.value.code == code, info.value
    return info.value


def test_a_signed_body_verifies_and_gives_its_timestamp():
    header = sign(SECRET, T, BODY)
    assert header.startswith(f"t={T},v1=")
    assert verify(header, BODY, [SECRET], NOW) == T


def test_the_signature_is_stripes_hmac_over_timestamp_dot_body():
    # Known answer, so a storefront can implement the check from the docs.
    import hashlib
    import hmac

    expected = hmac.new(SECRET, f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, T, BODY) == f"t={T},v1={expected}"


def test_a_tampered_body_is_a_bad_signature():
    rejected("bad_signature", sign(SECRET, T, BODY), BODY.replace(b"100", b"900"))


def test_another_secret_is_a_bad_signature():
    rejected("bad_signature", sign(b"someone else", T, BODY))


def test_a_changed_timestamp_is_a_bad_signature():
    header = sign(SECRET, T, BODY).replace(f"t={T}", f"t={T + 1}")
    rejected("bad_signature", header)


def test_rotation_either_secret_verifies_and_two_v1_values_are_allowed():
    assert verify(sign(OLD, T, BODY), BODY, [SECRET, OLD], NOW) == T
    assert verify(sign(SECRET, T, BODY), BODY, [SECRET, OLD], NOW) == T

    both = sign_all([SECRET, OLD], T, BODY)
    assert both.count("v1=") == 2
    assert verify(both, BODY, [OLD], NOW) == T       # receiver not yet rotated
    assert verify(both, BODY, [SECRET], NOW) == T    # receiver already rotated
    rejected("bad_signature", both, secrets=[b"third"])


def test_unknown_schemes_are_ignored_next_to_v1():
    header = sign(SECRET, T, BODY) + ",v0=deadbeef"
    assert verify(header, BODY, [SECRET], NOW) == T


@pytest.mark.parametrize("offset", [301, -301, 86_400, -86_400])
def test_a_timestamp_outside_the_tolerance_either_way_is_stale(offset):
    error = rejected("stale_timestamp", sign(SECRET, T, BODY), now=NOW + timedelta(seconds=offset))
    assert error.details["timestamp"] == T


@pytest.mark.parametrize("offset", [300, -300, 0])
def test_the_tolerance_edge_is_inclusive(offset):
    assert verify(sign(SECRET, T, BODY), BODY, [SECRET], NOW + timedelta(seconds=offset)) == T


def test_one_microsecond_past_the_edge_is_stale():
    later = NOW + timedelta(seconds=300, microseconds=1)
    rejected("stale_timestamp", sign(SECRET, T, BODY), now=later)


def test_the_tolerance_is_configurable():
    assert verify(sign(SECRET, T, BODY), BODY, [SECRET], NOW + timedelta(seconds=500), tolerance_s=600) == T
    rejected("stale_timestamp", sign(SECRET, T, BODY), now=NOW + timedelta(seconds=61), tolerance_s=60)


def test_a_forged_stale_message_is_reported_as_forged():
    rejected("bad_signature", sign(b"forger", T, BODY), now=NOW + timedelta(days=1))


def test_now_must_be_aware():
    with pytest.raises(ValueError):
        verify(sign(SECRET, T, BODY), BODY, [SECRET], NOW.replace(tzinfo=None))


GOOD_V1 = sign(SECRET, T, BODY).split(",")[1]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        GOOD_V1,                                   # no t
        f"t={T}",                                  # no v1
        f"t=soon,{GOOD_V1}",                       # t not an integer
        f"t=-{T},{GOOD_V1}",                       # negative
        f"t={T}.5,{GOOD_V1}",
        f"t=١٢٣,{GOOD_V1}",                        # int() would accept these digits
        f"t={T},t={T},{GOOD_V1}",                  # two timestamps
        f"t={T},v1=nothex",                        # garbled signature
        f"t={T},v1={GOOD_V1[3:].upper()}",
        f"t={T};{GOOD_V1}",
        "garbage",
    ],
)
def test_malformed_headers_are_refused_as_malformed(header):
    rejected("malformed", header)


def test_empty_secrets_are_a_configuration_error_not_a_rejection():
    with pytest.raises(ValueError):
        verify(sign(SECRET, T, BODY), BODY, [], NOW)
    with pytest.raises(ValueError):
        sign(b"", T, BODY)
    with pytest.raises(TypeError):
        verify(sign(SECRET, T, BODY), BODY, SECRET, NOW)  # one secret where a list is due


def test_a_request_payload_binds_method_and_path():
    assert request_payload("get", "/payments/A", b"") == b"GET /payments/A\n"
    header = sign(SECRET, T, request_payload("GET", "/payments/A", b""))
    rejected("bad_signature", header, request_payload("GET", "/payments/B", b""))


secrets = st.binary(min_size=1, max_size=64)


@given(secret=secrets, body=st.binary(max_size=2048), timestamp=st.integers(0, 10**11))
def test_property_any_body_signed_with_any_secret_verifies(secret, body, timestamp):
    now = datetime.fromtimestamp(timestamp, timezone.utc)
    assert verify(sign(secret, timestamp, body), body, [secret], now) == timestamp


@given(secret=secrets, body=st.binary(min_size=1, max_size=512), data=st.data())
def test_property_any_single_byte_change_fails(secret, body, data):
    index = data.draw(st.integers(0, len(body) - 1), label="index")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]), label="byte")
    changed = body[:index] + bytes([byte]) + body[index + 1:]
    with pytest.raises(CallbackRejected) as info:
        verify(sign(secret, T, body), changed, [secret], NOW)
    assert info.value.code == "bad_signature"


@given(secret=secrets, other=secrets, body=st.binary(max_size=256))
def test_property_another_secret_fails(secret, other, body):
    assume(other != secret)
    with pytest.raises(CallbackRejected):
        verify(sign(other, T, body), body, [secret], NOW)
