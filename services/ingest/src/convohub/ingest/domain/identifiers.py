"""Customer identifiers as CRM resolves them: E.164 phones, lower-cased e-mail addresses,
WhatsApp ids, web visitor ids and integrators' own ids.

A *customer key* is the normalised identifier that recognises the same customer across
channels ("phone:+8613800138000" on SMS, WhatsApp and voice alike), so a customer who
switches channel while a conversation is open continues it.
"""

from __future__ import annotations

import re

import phonenumbers

__all__ = [
    "InvalidIdentifierError",
    "email_key",
    "external_key",
    "normalise_email",
    "normalise_phone",
    "phone_key",
    "visitor_key",
    "whatsapp_phone",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidIdentifierError(ValueError):
    """An identifier that cannot be normalised (not a phone number, not an address)."""


def normalise_phone(raw: str, default_region: str | None = None) -> str:
    """E.164 form of a phone number (`whatsapp:` prefixes and spacing removed)."""
    text = raw.strip()
    if text.lower().startswith(("whatsapp:", "tel:", "sms:")):
        text = text.split(":", 1)[1]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as error:
        raise InvalidIdentifierError(f"not a phone number: {error}") from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidIdentifierError("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def whatsapp_phone(wa_id: str) -> str:
    """The E.164 phone of a WhatsApp id (Meta's wa_id is the number without `+`)."""
    digits = wa_id.strip().lstrip("+")
    if not digits.isdigit():
        raise InvalidIdentifierError("a WhatsApp id is the phone number's digits")
    return normalise_phone("+" + digits)


def normalise_email(raw: str) -> str:
    """The address lower-cased and trimmed; InvalidIdentifierError when it is none."""
    address = raw.strip().lower()
    if not _EMAIL.match(address):
        raise InvalidIdentifierError("not an e-mail address")
    return address


def phone_key(e164: str) -> str:
    return f"phone:{e164}"


def email_key(address: str) -> str:
    return f"email:{address}"


def visitor_key(channel_id: str, visitor_id: str) -> str:
    return f"visitor:{channel_id}:{visitor_id}"


def external_key(channel_id: str, external_id: str) -> str:
    return f"external:{channel_id}:{external_id}"
