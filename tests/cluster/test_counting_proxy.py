"""The counting proxy of tests/support: it names requests as the API server does, forwards them
untouched and streams watch events as they come (no cluster needed: a local fake upstream)."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web

from support.counting_proxy import CountingProxy, classify


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", "/api/v1/namespaces/ns/pods?labelSelector=a%3Db", ("list", "pods")),
        ("GET", "/api/v1/namespaces/ns/pods?watch=true", ("watch", "pods")),
        ("GET", "/api/v1/watch/namespaces/ns/pods", ("watch", "pods")),
        ("GET", "/api/v1/namespaces/ns/pods/p1/log", ("get", "pods/log")),
        ("GET", "/api/v1/namespaces/ns", ("get", "namespaces")),
        ("GET", "/api/v1/nodes", ("list", "nodes")),
        ("POST", "/apis/batch/v1/namespaces/ns/jobs", ("create", "jobs.batch")),
        ("GET", "/apis/batch/v1/namespaces/ns/jobs/j", ("get", "jobs.batch")),
        ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j", ("delete", "jobs.batch")),
        ("DELETE", "/apis/batch/v1/namespaces/ns/jobs", ("deletecollection", "jobs.batch")),
        (
            "PATCH",
            "/apis/autoresearch.dev/v1alpha1/namespaces/ns/researchorgs/o/status",
            ("patch", "researchorgs/status.autoresearch.dev"),
        ),
        (
            "PUT",
            "/apis/events.k8s.io/v1/namespaces/ns/events/e",
            ("update", "events.events.k8s.io"),
        ),
        ("GET", "/apis/batch/v1", ("get", "/apis/batch/v1")),
        ("GET", "/version", ("get", "/version")),
    ],
)
def test_requests_are_named_by_verb_and_resource_as_the_api_server_names_them(
    method, url, expected
):
    parts = urlsplit(url)
    assert classify(method, parts.path, parse_qs(parts.query)) == expected


class Upstream:
    """A stand-in API server: echoes what it got, streams a watch in two steps, answers 404."""

    def __init__(self) -> None:
        self.second_event = threading.Event()  # the watch's second event waits for this
        self.gave_up_waiting = False  # sent the second event without being told to
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "body": body.decode(),
                "authorization": request.headers.get("Authorization"),
                "content_type": request.headers.get("Content-Type"),
                "accept_encoding": request.headers.get("Accept-Encoding"),
            },
            status=201,
        )

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"type":"ADDED"}\n')
        told = await asyncio.get_running_loop().run_in_executor(None, self.second_event.wait, 5)
        self.gave_up_waiting = not told
        await response.write(b'{"type":"MODIFIED"}\n')
        await response.write_eof()
        return response

    async def _missing(self, request: web.Request) -> web.Response:
        return web.json_response({"reason": "NotFound"}, status=404)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/apis/batch/v1/namespaces/ns/jobs", self._echo)
        app.router.add_get("/api/v1/namespaces/ns/pods", self._watch)
        app.router.add_get("/apis/batch/v1/namespaces/ns/jobs/gone", self._missing)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    def stop(self) -> None:
        self.second_event.set()
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def proxied() -> Iterator[tuple[Upstream, CountingProxy]]:
    upstream = Upstream()
    upstream.start()
    proxy = CountingProxy(f"http://127.0.0.1:{upstream.port}").start()
    yield upstream, proxy
    proxy.stop()
    upstream.stop()


def test_requests_pass_through_unchanged_and_are_counted(proxied):
    _, proxy = proxied
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request(
        "POST", "/apis/batch/v1/namespaces/ns/jobs", body=b'{"kind":"Job"}',
        headers={"Authorization": "Bearer t0ken"},  # no Content-Type, as the Python client
    )  # fmt: skip
    created = conn.getresponse()
    assert created.status == 201
    assert json.loads(created.read()) == {
        "body": '{"kind":"Job"}',
        "authorization": "Bearer t0ken",
        "content_type": None,  # not application/octet-stream, which the API server refuses
        "accept_encoding": "identity",  # http.client's, not aiohttp's gzip
    }
    conn.request("GET", "/apis/batch/v1/namespaces/ns/jobs/gone")  # the same connection
    missing = conn.getresponse()
    assert missing.status == 404
    assert json.loads(missing.read()) == {"reason": "NotFound"}
    conn.close()
    assert proxy.counts() == Counter({("create", "jobs.batch"): 1, ("get", "jobs.batch"): 1})


def test_a_watch_event_arrives_before_the_upstream_sends_the_next(proxied):
    upstream, proxy = proxied
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/api/v1/namespaces/ns/pods?watch=true")
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.readline()) == {"type": "ADDED"}
    assert not upstream.gave_up_waiting  # the first event came while the stream was held open
    upstream.second_event.set()
    assert json.loads(response.readline()) == {"type": "MODIFIED"}
    assert response.read() == b""
    conn.close()
    assert proxy.counts() == Counter({("watch", "pods"): 1})
