"""An httpx transport that sends through aiohttp, for clients with many requests in flight.

httpx's own connection pool costs more the more connections it holds: against an idle
`convohub up`, 64 concurrent `GET /healthz` calls through one `httpx.AsyncClient` got 77
answers a second where a plain asyncio socket client got 1,170 (encode/httpx#3215). The
simulator keeps httpx's API (requests, responses, errors) and lets aiohttp carry the bytes.
"""

from __future__ import annotations

import aiohttp
import httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Send httpx requests over one `aiohttp.ClientSession` of at most `connections`
    keep-alive connections; each response is read whole before it is returned."""

    def __init__(self, connections: int) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on first use, inside the running event loop
            connector = aiohttp.TCPConnector(limit=self._connections, force_close=False)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            sock_connect=timeouts.get("connect"), sock_read=timeouts.get("read")
        )
        try:
            async with self._require_session().request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=await request.aread(),
                allow_redirects=False,
                timeout=timeout,
            ) as answer:
                body = await answer.read()
                return httpx.Response(
                    answer.status, headers=answer.raw_headers, content=body, request=request
                )
        except TimeoutError as error:
            raise httpx.ReadTimeout(str(error) or "timed out", request=request) from error
        except aiohttp.ClientConnectionError as error:
            raise httpx.ConnectError(str(error), request=request) from error
        except aiohttp.ClientError as error:
            raise httpx.TransportError(str(error)) from error

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
