"""A proposer that asks an OpenAI-compatible chat model for the next change to train.py.

The client's own retries are off (max_retries=0): the loop below retries 429s, 5xx, timeouts
and dropped connections with exponential backoff and jitter, honouring Retry-After, so what
happens on a flaky endpoint is visible in the logs and in the tests.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import openai
from openai import OpenAI

from autoresearch_operator.candidate import CandidateError, parse_reply, validate_candidate
from autoresearch_operator.candidate_formats import final_answer
from autoresearch_operator.core.records import (
    Proposal,
    ProposalContext,
    ProposalRejected,
    TokenUsage,
)
from autoresearch_operator.proposers.base import ProposerSettings
from autoresearch_operator.proposers.prompt import build_messages

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n (0-based): base * 2**n, capped, times a random factor in [0.5, 1]."""

    base_delay: float = 1.0
    max_delay: float = 30.0
    retry_after_cap: float = 60.0  # a server asking for longer than this is not waited on in full

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        return min(self.max_delay, self.base_delay * 2.0**retry) * rng.uniform(0.5, 1.0)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, or Retry-After seconds or date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - (time.time() if now is None else now)


class OpenAIProposer:
    """Asks a chat model for a HYPOTHESIS and SEARCH/REPLACE blocks, and checks the result."""

    def __init__(
        self,
        settings: ProposerSettings,
        *,
        api_key: str,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        if not settings.model:
            raise ValueError("proposer.model is required for the openai proposer")
        self.settings = settings
        self.model = settings.model
        self.name = f"openai:{settings.model}"
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._client = OpenAI(
            base_url=settings.base_url,
            api_key=api_key,
            timeout=settings.timeout_seconds,
            max_retries=0,
        )

    def propose(self, ctx: ProposalContext) -> Proposal:
        """Ask for a change; a reply that cannot be used is sent back with the reason, as aider
        does, up to proposer.repairTurns times. Every turn's tokens are counted."""
        messages = build_messages(ctx)
        usage = TokenUsage()
        reply = reason = ""
        for turn in range(self.settings.repair_turns + 1):
            try:
                reply, finish_reason, turn_usage = self.complete(messages)
            except ProposalRejected as error:
                if turn == 0:
                    raise
                raise ProposalRejected(
                    f"{reason}; the repair turn got no reply ({error.reason})",
                    usage + error.usage,
                    reply,
                    attempt=shown_attempt(reply),
                ) from error
            usage += turn_usage
            try:
                description, train_py = self._candidate(reply, finish_reason, ctx.best_train_py)
            except CandidateError as error:
                reason = error.reason
                messages = [
                    *messages,
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": repair_request(reason)},
                ]
                continue
            return Proposal(description=description, train_py=train_py, usage=usage)
        raise ProposalRejected(
            _after_repairs(reason, turn), usage, reply, attempt=shown_attempt(reply)
        )

    def _candidate(self, reply: str, finish_reason: str | None, best: str) -> tuple[str, str]:
        """(description, train.py) from one reply; a reply cut off at the token limit never
        counts, even when what arrived happens to parse."""
        if finish_reason == "length":
            tokens = self.settings.max_tokens
            limit = f"maxTokens ({tokens})" if tokens else "the server's token limit"
            raise CandidateError(
                f"the reply was cut off at {limit} before it ended; send a shorter answer: "
                "only the SEARCH/REPLACE blocks that change train.py"
            )
        description, train_py = parse_reply(reply, best)
        validate_candidate(train_py, best)
        return description, train_py

    def complete(self, messages: list[dict[str, str]]) -> tuple[str, str | None, TokenUsage]:
        """The reply text, its finish reason and the tokens spent, retrying transient failures."""
        options: dict[str, Any] = {}
        if self.settings.temperature is not None:
            options["temperature"] = self.settings.temperature
        if self.settings.max_tokens is not None:
            options["max_tokens"] = self.settings.max_tokens
        attempts = self.settings.max_retries + 1
        usage = TokenUsage()
        last_error = ""
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = self._client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    **options,
                )
            except openai.APIStatusError as error:
                last_error = f"HTTP {error.status_code}: {_message(error)}"
                if not (error.status_code in RETRYABLE_STATUS or error.status_code >= 500):
                    raise ProposalRejected(
                        f"the model API refused the request ({last_error})", usage
                    ) from error
                retry_after = retry_after_seconds(error.response.headers)
            except openai.APIConnectionError as error:  # includes APITimeoutError
                last_error = f"{type(error).__name__}: {_message(error)}"
            except openai.OpenAIError as error:
                raise ProposalRejected(
                    f"the model API returned an unusable response ({error})", usage
                ) from error
            else:
                if response.usage is not None:
                    usage += TokenUsage(
                        response.usage.prompt_tokens or 0, response.usage.completion_tokens or 0
                    )
                choice = response.choices[0] if response.choices else None
                text = choice.message.content if choice is not None else None
                if not text or not text.strip():
                    raise ProposalRejected("the model returned an empty reply", usage)
                return text, choice.finish_reason if choice is not None else None, usage
            if attempt + 1 < attempts:
                delay = self.backoff.delay(attempt, self._rng, retry_after)
                log.warning(
                    "%s: attempt %d/%d failed (%s); retrying in %.2fs",
                    self.name,
                    attempt + 1,
                    attempts,
                    last_error,
                    delay,
                )
                self._sleep(delay)
        raise ProposalRejected(
            f"the model API failed {attempts} times; last error: {last_error}", usage
        )


def repair_request(reason: str) -> str:
    """The user turn that sends an unusable reply's problem back to the model."""
    return (
        f"Your reply could not be used: {reason}.\n\n"
        "Send the corrected change for the current train.py in the requested format: the "
        "HYPOTHESIS line, then SEARCH/REPLACE blocks whose SEARCH lines are copied exactly from "
        "the current train.py (or the complete new train.py in one ```python fence)."
    )


def shown_attempt(reply: str) -> str:
    """The reply as the next prompts show a rejected attempt: its answer, not its reasoning (a
    reply that is all reasoning is shown as it is, its start being all it tried)."""
    try:
        return final_answer(reply).strip()
    except CandidateError:
        return reply.strip()


def _after_repairs(reason: str, repairs: int) -> str:
    if repairs == 0:
        return reason
    return f"{reason} (still so after {repairs} repair turn{'s' if repairs > 1 else ''})"


def _message(error: openai.APIError) -> str:
    """The server's own error message when it sent one, else the client's."""
    body = error.body
    message = body.get("message") if isinstance(body, dict) else None
    text = " ".join(str(message if isinstance(message, str) else error.message).split())
    return text if len(text) <= 200 else text[:197] + "..."
