"""A reverse proxy on 127.0.0.1 that counts the Kubernetes API requests passing through it.

Point a client's kubeconfig at `proxy.url` (plain HTTP, its own bearer token kept): the proxy
forwards each request to the API server over HTTPS (checked against the cluster's CA) and
streams the answer back as it arrives, so watches work. `counts()` says how many requests of
each verb and resource were made, with the API server's own verbs (get, list, watch, create,
patch, update, delete, deletecollection) and resource names (`pods`, `jobs.batch`,
`researchorgs/status.autoresearch.dev`).

    with CountingProxy("https://127.0.0.1:6443", ca_file="ca.crt") as proxy:
        ...  # a client whose server is proxy.url
        print(proxy.counts())  # Counter({("get", "jobs.batch"): 180, ...})

Runs aiohttp on its own event loop in a thread, as fake_openai_server.py does.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import Counter
from collections.abc import Mapping
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

# Headers about one connection, not the request: never forwarded (RFC 9110, section 7.6.1).
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip
# Headers aiohttp would add when the client sent none. The API server reads a body without a
# Content-Type as JSON (the Python client sends none on create), but refuses application/octet-stream.
NOT_ADDED = ("Content-Type", "Accept", "Accept-Encoding", "User-Agent")


def classify(method: str, path: str, query: Mapping[str, list[str]]) -> tuple[str, str]:
    """(verb, resource) of an API request, as the API server names them in its audit log and
    `apiserver_request_total`; a path outside /api and /apis is (method, path)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return method.lower(), path
    if not rest:  # discovery: /api/v1, /apis/batch/v1
        return method.lower(), path
    watching = rest[0] == "watch"
    if watching:  # the old /watch/ prefix
        rest = rest[1:]
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # namespaced: drop namespaces/<ns>
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if group:
        resource = f"{resource}.{group}"
    watching = watching or query.get("watch", [""])[0] in ("true", "1")
    verb = {
        "POST": "create", "PUT": "update", "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method.upper())  # fmt: skip
    if verb is None:  # GET, HEAD
        verb = "watch" if watching else ("get" if name else "list")
    return verb, resource


class CountingProxy:
    """Forward everything to `upstream`, counting (verb, resource); `start()`/`stop()` or `with`."""

    def __init__(self, upstream: str, *, ca_file: str | None = None):
        self.upstream = upstream.rstrip("/")
        self.ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_file) if upstream.startswith("https") else False
        )
        self.port = 0
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def counts(self) -> Counter[tuple[str, str]]:
        """Requests so far by (verb, resource); a copy."""
        with self._lock:
            return Counter(self._counts)

    def start(self) -> CountingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _start(self) -> None:
        # No limit on connections: every watch holds one for as long as it lasts. Bodies pass
        # through as they are (no decompression), so Content-Encoding stays true.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=self.ssl),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._forward)
        # handler_cancellation: a client that hangs up on a watch ends its upstream request too.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        verb, resource = classify(request.method, request.path, parse_qs(request.query_string))
        with self._lock:
            self._counts[(verb, resource)] += 1
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers,
            data=body or None, allow_redirects=False, skip_auto_headers=NOT_ADDED,
        ) as upstream:  # fmt: skip
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():  # as it comes: watch events
                await response.write(chunk)
            await response.write_eof()
            return response
