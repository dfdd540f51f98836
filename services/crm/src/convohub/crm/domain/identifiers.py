"""Normalising what channels report into customer identifiers.

Phone numbers become E.164 (`phonenumbers`), e-mail addresses are lower-cased, a WhatsApp
id is the E.164 number's digits (and reveals the phone number too), social handles lose
their `@` and case, web visitor ids and the integrator's ids are kept as given (trimmed).
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

from convohub.contracts.events.common import Channel, ChannelIdentity
from convohub.contracts.events.customer import IdentifierKind

# The provider carried it, so the customer controls it; an e-mail From line or a web
# cookie proves nothing.
_VERIFIED_KINDS = {
    IdentifierKind.PHONE,
    IdentifierKind.WHATSAPP_ID,
    IdentifierKind.SOCIAL_HANDLE,
    IdentifierKind.EXTERNAL_ID,
}
_KIND_OF_CHANNEL = {
    Channel.WEB_CHAT: IdentifierKind.WEB_VISITOR_ID,
    Channel.EMAIL: IdentifierKind.EMAIL,
    Channel.SMS: IdentifierKind.PHONE,
    Channel.VOICE: IdentifierKind.PHONE,
    Channel.WHATSAPP: IdentifierKind.WHATSAPP_ID,
    Channel.SOCIAL: IdentifierKind.SOCIAL_HANDLE,
    Channel.API: IdentifierKind.EXTERNAL_ID,
}


class InvalidIdentifierError(ValueError):
    """The value cannot be an identifier of that kind."""


@dataclass(frozen=True, order=True)
class Identifier:
    """A normalised identifier: equal values mean the same person's address."""

    kind: IdentifierKind
    value: str


@dataclass(frozen=True)
class SeenIdentifier:
    """An identifier as observed: whether it is verified, and on which channel."""

    identifier: Identifier
    verified: bool
    channel_id: str | None = None


def normalise_phone(raw: str, default_region: str) -> str:
    """E.164 form of a phone number; InvalidIdentifierError when it is not a valid number."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException as error:
        raise InvalidIdentifierError(f"not a phone number: {error.error_type}") from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidIdentifierError("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise(kind: IdentifierKind, raw: str, default_region: str) -> Identifier:
    """The normalised identifier of `kind` for `raw`; InvalidIdentifierError when invalid."""
    text = raw.strip()
    if not text:
        raise InvalidIdentifierError("empty identifier")
    match kind:
        case IdentifierKind.PHONE:
            value = normalise_phone(text, default_region)
        case IdentifierKind.WHATSAPP_ID:
            value = normalise_phone("+" + text.lstrip("+"), default_region)[1:]
        case IdentifierKind.EMAIL:
            local, at, domain = text.partition("@")
            if not at or not local or "." not in domain or " " in text:
                raise InvalidIdentifierError("not an e-mail address")
            value = text.lower()
        case IdentifierKind.SOCIAL_HANDLE:
            value = text.lstrip("@").lower()
            if not value:
                raise InvalidIdentifierError("empty handle")
        case _:
            value = text
    return Identifier(kind, value)


def identifiers_of(identity: ChannelIdentity, default_region: str) -> list[SeenIdentifier]:
    """The identifiers a channel identity reveals (a WhatsApp id also reveals the phone).

    An address that does not normalise is kept as given, unverified, so the customer is
    still recognised on that channel.
    """
    kind = _KIND_OF_CHANNEL[identity.channel]
    verified = kind in _VERIFIED_KINDS
    try:
        main = normalise(kind, identity.address, default_region)
    except InvalidIdentifierError:
        text = identity.address.strip()
        if not text:
            return []
        return [SeenIdentifier(Identifier(kind, text), False, identity.channel_id)]
    seen = [SeenIdentifier(main, verified, identity.channel_id)]
    if kind == IdentifierKind.WHATSAPP_ID:
        phone = Identifier(IdentifierKind.PHONE, "+" + main.value)
        seen.append(SeenIdentifier(phone, True, identity.channel_id))
    return seen


def guess_kinds(raw: str) -> list[IdentifierKind]:
    """Kinds a bare lookup value may be, most likely first."""
    text = raw.strip()
    if "@" in text[1:]:
        return [IdentifierKind.EMAIL]
    kinds = []
    if text.lstrip("+").translate(str.maketrans("", "", " -().")).isdigit():
        kinds += [IdentifierKind.PHONE, IdentifierKind.WHATSAPP_ID]
    return [
        *kinds,
        IdentifierKind.EXTERNAL_ID,
        IdentifierKind.WEB_VISITOR_ID,
        IdentifierKind.SOCIAL_HANDLE,
    ]
