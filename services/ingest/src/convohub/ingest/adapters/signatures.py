"""The providers' own webhook signature schemes, each compared in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

__all__ = [
    "body_hmac_sha256_valid",
    "mailgun_signature_valid",
    "meta_signature_valid",
    "twilio_signature",
    "twilio_signature_valid",
]


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 of the full URL followed by every POST
    parameter's name and value, sorted by name."""
    payload = url + "".join(name + value for name, value in sorted(params, key=lambda p: p[0]))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_signature_valid(
    auth_token: str, urls: Iterable[str], params: list[tuple[str, str]], presented: str
) -> bool:
    """Whether `presented` signs the request for any of the candidate URLs (Twilio signs
    the URL with and without the default port, depending on how it was configured)."""
    found = False
    for url in urls:
        expected = twilio_signature(auth_token, url, params)
        found |= hmac.compare_digest(expected.encode(), presented.encode())
    return found


def meta_signature_valid(app_secret: str, body: bytes, header: str) -> bool:
    """Meta's X-Hub-Signature-256: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    scheme, _, presented = header.partition("=")
    if scheme != "sha256" or not presented:
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), presented.strip().lower().encode())


def body_hmac_sha256_valid(secret: str, body: bytes, header: str) -> bool:
    """ConvoHub's own scheme for raw e-mail piped by a mail server: `sha256=<hex>`."""
    return meta_signature_valid(secret, body, header)


def mailgun_signature_valid(signing_key: str, timestamp: str, token: str, signature: str) -> bool:
    """Mailgun's webhook signature: hex HMAC-SHA256 of timestamp + token with the
    account's HTTP webhook signing key."""
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest().encode(), signature.strip().lower().encode())
