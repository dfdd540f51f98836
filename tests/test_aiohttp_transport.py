"""The simulator's httpx-over-aiohttp transport: what goes out and comes back is httpx's."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket

import httpx
import pytest

from convohub.cli.aiohttp_transport import AiohttpTransport


async def test_a_request_and_its_answer_travel_whole() -> None:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        seen.append(head + await reader.readexactly(length))
        body = gzip.compress(json.dumps({"ok": True}).encode())
        writer.write(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"X-Trace: a\r\nX-Trace: b\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", transport=AiohttpTransport(4)
        ) as client,
    ):
        response = await client.post("/v1/things?x=1", json={"name": "li"}, headers={"X-Key": "k"})

    assert response.status_code == 201
    assert response.json() == {"ok": True}  # decoded as httpx decodes gzip
    assert response.headers.get_list("x-trace") == ["a", "b"]
    request = seen[0].decode()
    assert request.startswith("POST /v1/things?x=1 HTTP/1.1\r\n")
    assert "x-key: k" in request.lower()
    assert request.endswith('{"name":"li"}')


async def test_a_refused_connection_is_an_httpx_transport_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient(transport=AiohttpTransport(1)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/healthz")
