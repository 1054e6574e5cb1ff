"""Session ids, signed session cookies and constant-time token checks."""

from __future__ import annotations

import base64
import secrets

import pytest

from georouter.http.admin import tokens_equal
from georouter.sessions.ids import (
    CookieSigner,
    new_id,
    set_cookie_header,
    valid_id,
)

KEY_NEW = b"k" * 16 + b"-new"
KEY_OLD = b"o" * 16 + b"-old"


@pytest.mark.parametrize(
    ("session_id", "ok"),
    [
        pytest.param("abc123", True, id="plain"),
        pytest.param("a", True, id="one-char"),
        pytest.param("x" * 128, True, id="128-chars"),
        pytest.param("x" * 129, False, id="129-chars"),
        pytest.param("", False, id="empty"),
        pytest.param("Zm9vYmFy+/==", True, id="base64"),
        pytest.param("user:42.sess_9~x-1", True, id="punctuation"),
        pytest.param("has space", False, id="space"),
        pytest.param("a\nb", False, id="newline"),
        pytest.param("a\x00b", False, id="nul"),
        pytest.param("é", False, id="non-ascii"),
        pytest.param("a;b", False, id="semicolon"),
        pytest.param("a*b", False, id="glob"),
        pytest.param("a\r\nSET x y", False, id="crlf-injection"),
        pytest.param("abc\n", False, id="trailing-newline"),
    ],
)
def test_session_ids_are_validated(session_id: str, ok: bool) -> None:
    assert valid_id(session_id) is ok


def test_new_ids_carry_at_least_128_random_bits() -> None:
    sid = new_id(secrets.token_bytes(16))
    assert valid_id(sid)
    assert len(base64.urlsafe_b64decode(sid + "==")) == 16
    assert new_id(secrets.token_bytes(16)) != sid
    with pytest.raises(ValueError, match="16 random bytes"):
        new_id(b"short")


def test_signed_cookie_verifies_to_its_id() -> None:
    signer = CookieSigner((KEY_NEW,))
    cookie = signer.sign("abc123")
    assert cookie.startswith("abc123.")
    assert signer.verify(cookie) == "abc123"


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param("abc123", id="unsigned"),
        pytest.param("abc123.", id="empty-signature"),
        pytest.param("abc123." + "A" * 43, id="wrong-signature"),
        pytest.param("abd123.{sig}", id="signature-of-another-id"),
        pytest.param("abc123.{sig}x", id="signature-too-long"),
        pytest.param("abc123.{sig_short}", id="signature-truncated"),
        pytest.param("abc 123.{sig}", id="invalid-id"),
        pytest.param("abc123." + "é" * 43, id="non-ascii-signature"),
        pytest.param(".{sig}", id="no-id"),
    ],
)
def test_forged_cookies_are_refused(forged: str) -> None:
    signer = CookieSigner((KEY_NEW,))
    sig = signer.sign("abc123").split(".", 1)[1]
    assert signer.verify(forged.format(sig=sig, sig_short=sig[:-1])) is None


def test_key_rotation_accepts_old_signatures_and_signs_with_the_new_key() -> None:
    old = CookieSigner((KEY_OLD,))
    rotated = CookieSigner((KEY_NEW, KEY_OLD))
    new_only = CookieSigner((KEY_NEW,))
    old_cookie = old.sign("sess-1")
    assert rotated.verify(old_cookie) == "sess-1"
    assert rotated.sign("sess-1") == new_only.sign("sess-1")
    assert new_only.verify(old_cookie) is None  # once the old key is dropped


def test_signing_keys_come_from_a_comma_separated_value() -> None:
    signer = CookieSigner.from_env_value(f" {KEY_NEW.decode()} , {KEY_OLD.decode()} ")
    assert signer.keys == (KEY_NEW, KEY_OLD)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        CookieSigner.from_env_value("short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        CookieSigner.from_env_value(" , ")


def test_session_cookie_attributes() -> None:
    header = set_cookie_header("georouter_session", "abc.sig", max_age_s=3600)
    parts = header.split("; ")
    assert parts[0] == "georouter_session=abc.sig"
    assert {"Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age=3600"} <= set(parts)


@pytest.mark.parametrize(
    ("presented", "expected", "equal"),
    [
        pytest.param("s3cret-token-value", "s3cret-token-value", True, id="same"),
        pytest.param("s3cret-token-valuX", "s3cret-token-value", False, id="different"),
        pytest.param("", "s3cret-token-value", False, id="empty"),
        pytest.param("tökén", "s3cret-token-value", False, id="non-ascii"),
        pytest.param("tökén", "tökén", True, id="non-ascii-same"),
        pytest.param("\udcff", "x", False, id="lone-surrogate"),
    ],
)
def test_tokens_compare_without_raising(presented: str, expected: str, equal: bool) -> None:
    assert tokens_equal(presented, expected) is equal
