"""Fake providers on loopback for the outbound delivery tests: a tiny HTTP server that
records requests and answers from a script (Twilio and WhatsApp Cloud shapes), and an
in-process SMTP server (aiosmtpd) that keeps the messages it receives."""

from __future__ import annotations

import asyncio
import base64
import email
import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        return {key: values[0] for key, values in parse_qs(self.body.decode()).items()}

    def json(self) -> Any:
        return json.loads(self.body)

    def basic_auth(self) -> tuple[str, str]:
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        assert scheme.lower() == "basic"
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user, password


@dataclass
class FakeHttpProvider:
    """Answers `POST`s from `script` (status, JSON body) in order, then with `default`."""

    script: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    default: tuple[int, dict[str, Any]] = (200, {})
    requests: list[Recorded] = field(default_factory=list)
    base_url: str = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Recorded(method, path, headers, body))
            status, answer = self.script.pop(0) if self.script else self.default
            payload = json.dumps(answer).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def fake_http_provider(
    script: list[tuple[int, dict[str, Any]]], default: tuple[int, dict[str, Any]]
) -> AsyncIterator[FakeHttpProvider]:
    provider = FakeHttpProvider(script=list(script), default=default)
    server = await asyncio.start_server(provider._handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider.base_url = f"http://127.0.0.1:{port}"
    try:
        yield provider
    finally:
        server.close()
        await server.wait_closed()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def fake_smtp_server(port: int) -> Iterator[_Mailbox]:
    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()
