"""The openai proposer, with the real openai client, against a scripted server on loopback."""

from __future__ import annotations

import random
import socket
import time
from typing import Any

import pytest

from autoresearch_operator.core.records import ProposalContext, ProposalRejected, TokenUsage
from autoresearch_operator.proposers import ProposerConfigError, make_proposer
from autoresearch_operator.proposers.openai_proposer import (
    Backoff,
    OpenAIProposer,
    retry_after_seconds,
)
from support.fake_openai_server import FakeOpenAI

FAST = Backoff(base_delay=0.01, max_delay=0.05, retry_after_cap=5.0)

GOOD_REPLY = """\
HYPOTHESIS: a 50% higher Muon learning rate converges faster within the budget.

<<<<<<< SEARCH
MATRIX_LR = 0.04  # learning rate for matrix parameters (Muon)
=======
MATRIX_LR = 0.06  # learning rate for matrix parameters (Muon)
>>>>>>> REPLACE
"""


def proposer_for(server: FakeOpenAI, **settings: Any) -> OpenAIProposer:
    spec = {
        "type": "openai",
        "model": "fake-model",
        "baseURL": server.base_url,
        "apiKeyEnv": "FAKE_KEY",
        "timeoutSeconds": 5,
        "maxRetries": 3,
        **settings,
    }
    proposer = make_proposer(spec, env={"FAKE_KEY": "sk-test"}, backoff=FAST)
    assert isinstance(proposer, OpenAIProposer)
    return proposer


@pytest.fixture
def ctx(train_py: str, program_md: str) -> ProposalContext:
    return ProposalContext(
        org="demo", experiment=2, program=program_md, best_train_py=train_py, best_val_bpb=1.05
    )


def test_good_reply_becomes_a_validated_proposal_with_usage(
    fake_openai: FakeOpenAI, ctx: ProposalContext, train_py: str
) -> None:
    fake_openai.reply(GOOD_REPLY, prompt_tokens=1500, completion_tokens=80)
    proposer = proposer_for(fake_openai, temperature=0.3, maxTokens=2000)

    proposal = proposer.propose(ctx)

    assert proposal.train_py == train_py.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.06")
    assert (
        proposal.description
        == "a 50% higher Muon learning rate converges faster within the budget."
    )
    assert proposal.usage == TokenUsage(1500, 80)
    assert proposer.name == "openai:fake-model"
    [request] = fake_openai.requests
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.body["model"] == "fake-model"
    assert request.body["temperature"] == 0.3 and request.body["max_tokens"] == 2000
    user = fake_openai.last_user_message()
    assert "tangerine-gradient" in user  # program.md
    assert train_py.rstrip() in user  # the best train.py, whole


def test_rate_limit_is_retried_after_the_retry_after_delay(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    fake_openai.error(429, "slow down", headers={"Retry-After": "1"})
    fake_openai.reply(GOOD_REPLY)

    proposal = proposer_for(fake_openai).propose(ctx)

    assert "MATRIX_LR = 0.06" in proposal.train_py
    first, second = fake_openai.requests
    assert second.at - first.at >= 0.9  # the backoff alone would wait at most 0.05 s


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_is_retried(
    fake_openai: FakeOpenAI, ctx: ProposalContext, status: int
) -> None:
    fake_openai.error(status, "upstream exploded")
    fake_openai.reply(GOOD_REPLY, prompt_tokens=10, completion_tokens=5)

    proposal = proposer_for(fake_openai).propose(ctx)

    assert len(fake_openai.requests) == 2
    assert proposal.usage == TokenUsage(10, 5)


def test_timeout_is_retried(fake_openai: FakeOpenAI, ctx: ProposalContext) -> None:
    fake_openai.hang(5)
    fake_openai.reply(GOOD_REPLY)
    started = time.monotonic()

    proposal = proposer_for(fake_openai, timeoutSeconds=0.5).propose(ctx)

    assert "MATRIX_LR = 0.06" in proposal.train_py
    assert len(fake_openai.requests) == 2
    assert time.monotonic() - started < 4  # gave up on the hanging request, did not wait it out


def test_garbage_reply_is_rejected_with_reason_usage_and_raw_reply(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    fake_openai.reply(
        "I think a bigger learning rate might help.", prompt_tokens=900, completion_tokens=12
    )

    with pytest.raises(ProposalRejected) as caught:
        proposer_for(fake_openai, repairTurns=0).propose(ctx)

    assert "no SEARCH/REPLACE block" in caught.value.reason
    assert caught.value.usage == TokenUsage(900, 12)
    assert caught.value.raw_reply == "I think a bigger learning rate might help."
    assert len(fake_openai.requests) == 1  # without repair turns, a bad answer is not retried


def test_a_rejected_attempt_is_kept_without_its_reasoning_for_the_next_prompts(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    reply = "<think>\nSECRET-THOUGHT about flash attention\n</think>\nimport flash_attn\n"
    fake_openai.reply(reply)

    with pytest.raises(ProposalRejected) as caught:
        proposer_for(fake_openai, repairTurns=0).propose(ctx)

    assert caught.value.raw_reply == reply  # the log keeps everything
    assert caught.value.attempt == "import flash_attn"


def test_candidate_that_does_not_compile_is_rejected(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    fake_openai.reply(GOOD_REPLY.replace("MATRIX_LR = 0.06", "MATRIX_LR = = 0.06"))

    with pytest.raises(ProposalRejected, match="does not compile"):
        proposer_for(fake_openai, repairTurns=0).propose(ctx)


def test_truncated_reply_says_it_hit_max_tokens(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    fake_openai.reply(GOOD_REPLY.split("=======")[0], finish_reason="length")

    with pytest.raises(ProposalRejected, match=r"cut off at maxTokens \(64\)"):
        proposer_for(fake_openai, maxTokens=64, repairTurns=0).propose(ctx)


def test_cut_off_reply_is_rejected_even_when_what_arrived_parses(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    fake_openai.reply(GOOD_REPLY + "\nI also considered", finish_reason="length")

    with pytest.raises(ProposalRejected, match=r"cut off at maxTokens \(900\)"):
        proposer_for(fake_openai, maxTokens=900, repairTurns=0).propose(ctx)


def test_retries_exhausted_is_rejected_naming_the_last_error(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    for _ in range(3):
        fake_openai.error(502, "bad gateway")

    with pytest.raises(ProposalRejected, match=r"failed 3 times; last error: HTTP 502"):
        proposer_for(fake_openai, maxRetries=2).propose(ctx)
    assert len(fake_openai.requests) == 3


def test_client_error_is_not_retried(fake_openai: FakeOpenAI, ctx: ProposalContext) -> None:
    fake_openai.error(401, "invalid api key")
    fake_openai.reply(GOOD_REPLY)

    with pytest.raises(
        ProposalRejected, match=r"refused the request \(HTTP 401: invalid api key\)"
    ):
        proposer_for(fake_openai).propose(ctx)
    assert len(fake_openai.requests) == 1


def test_unreachable_server_is_retried_then_rejected(ctx: ProposalContext) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = {
        "type": "openai",
        "model": "m",
        "baseURL": f"http://127.0.0.1:{port}/v1",
        "maxRetries": 1,
        "timeoutSeconds": 2,
    }
    proposer = make_proposer(spec, env={"OPENAI_API_KEY": "sk-test"}, backoff=FAST)

    with pytest.raises(ProposalRejected, match=r"failed 2 times; last error: APIConnectionError"):
        proposer.propose(ctx)


def test_missing_api_key_names_the_variable() -> None:
    spec = {"type": "openai", "model": "m", "apiKeyEnv": "MY_LLM_KEY"}
    with pytest.raises(ProposerConfigError, match="MY_LLM_KEY"):
        make_proposer(spec, env={"OPENAI_API_KEY": "not this one"})


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert (
        retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
        == 10.0
    )
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert FAST.delay(0, random.Random(0), retry_after=60) == 5.0  # capped


def test_the_resource_spec_model_keeps_every_camel_case_setting(monkeypatch: pytest.MonkeyPatch):
    """Regression: passing the pydantic spec itself once dropped baseURL, maxRetries and friends."""
    from autoresearch_operator.proposers import ProposerSettings
    from autoresearch_operator.spec import ProposerSpec

    spec = ProposerSpec(type="openai", model="m", baseURL="http://127.0.0.1:9/v1", maxRetries=1,
                        timeoutSeconds=7, maxTokens=99, apiKeyEnv="MY_KEY")  # fmt: skip
    settings = ProposerSettings.coerce(spec)
    assert (settings.base_url, settings.max_retries, settings.timeout_seconds) == (
        "http://127.0.0.1:9/v1",
        1,
        7,
    )
    assert (settings.max_tokens, settings.api_key_env) == (99, "MY_KEY")
    assert settings.repair_turns == 1
    assert ProposerSettings.coerce(ProposerSpec(repairTurns=0)).repair_turns == 0


@pytest.mark.parametrize("turns", [-1, 4])
def test_repair_turns_out_of_range_names_the_setting(turns: int) -> None:
    from autoresearch_operator.proposers import ProposerSettings

    with pytest.raises(ProposerConfigError, match="proposer.repairTurns"):
        ProposerSettings.from_mapping({"repairTurns": turns})
