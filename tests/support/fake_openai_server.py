"""A scripted OpenAI-compatible chat completions server on 127.0.0.1, for proposer tests.

Runs aiohttp on its own event loop in a thread, so the synchronous openai client can call it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.monotonic() when the request arrived


@dataclass
class Step:
    status: int = 200
    content: str | None = None  # the assistant message, for 200 replies
    body: Any = None  # a raw JSON body instead, for errors
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


class FakeOpenAI:
    """Serves POST /v1/chat/completions from a script of steps, one per request, and records them."""

    def __init__(self) -> None:
        self.script: list[Step] = []
        self.requests: list[Received] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reply(
        self,
        content: str,
        *,
        prompt_tokens: int = 120,
        completion_tokens: int = 40,
        finish_reason: str = "stop",
        delay: float = 0.0,
    ) -> None:
        self.script.append(
            Step(
                200,
                content,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                finish_reason=finish_reason,
                delay=delay,
            )
        )

    def error(
        self, status: int, message: str = "scripted error", headers: dict[str, str] | None = None
    ) -> None:
        body = {"error": {"message": message, "type": "scripted", "code": None}}
        self.script.append(Step(status, body=body, headers=headers or {}))

    def hang(self, seconds: float) -> None:
        """Answer only after `seconds`, long after the client has given up."""
        self.script.append(Step(200, "too late", delay=seconds))

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        # Do not wait for a hanging handler on shutdown.
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # A handler still sleeping on a hang() step would otherwise die with the loop, noisily.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            Received(await request.json(), dict(request.headers), time.monotonic())
        )
        if not self.script:
            return web.json_response({"error": {"message": "script exhausted"}}, status=500)
        step = self.script.pop(0)
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.status != 200:
            return web.json_response(step.body, status=step.status, headers=step.headers)
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "fake-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": step.content},
                        "finish_reason": step.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": step.prompt_tokens,
                    "completion_tokens": step.completion_tokens,
                    "total_tokens": step.prompt_tokens + step.completion_tokens,
                },
            },
            headers=step.headers,
        )

    def last_user_message(self) -> str:
        messages = self.requests[-1].body["messages"]
        return "\n".join(m["content"] for m in messages if m["role"] == "user")
