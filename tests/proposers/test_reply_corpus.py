"""Realistic model replies through the real openai proposer and the scripted server: each becomes
its intended candidate or its intended rejection (tests/proposers/replies/expected.yaml), and an
unusable reply gets one repair turn in the same conversation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autoresearch_operator.candidate import validate_candidate
from autoresearch_operator.core.records import (
    Proposal,
    ProposalContext,
    ProposalRejected,
    TokenUsage,
)
from autoresearch_operator.proposers import make_proposer
from support.fake_openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import reply_corpus  # noqa: E402

BASELINE = reply_corpus.BASELINE.read_text()
CORPUS = reply_corpus.load_corpus()

GOOD = """\
HYPOTHESIS: a higher Muon learning rate converges faster.

<<<<<<< SEARCH
MATRIX_LR = 0.04  # Muon, for the 2D weights inside the blocks
=======
MATRIX_LR = 0.05  # Muon, for the 2D weights inside the blocks
>>>>>>> REPLACE
"""
MISCOPIED = GOOD.replace("MATRIX_LR = 0.04  # Muon, for", "MATRIX_LR = 0.04  # Muon for")


def test_the_corpus_is_large_and_varied_enough_to_mean_something() -> None:
    assert len(CORPUS) >= 30
    assert len({reply.category for reply in CORPUS}) >= 10
    assert sum(reply.reject is None for reply in CORPUS) >= 15  # both directions count
    assert sum(reply.reject is not None for reply in CORPUS) >= 15
    assert {path.name for path in reply_corpus.CORPUS.glob("*.txt")} == {r.name for r in CORPUS}


@pytest.mark.parametrize("reply", CORPUS, ids=[reply.name for reply in CORPUS])
def test_reply_becomes_its_intended_candidate_or_rejection(
    fake_openai: FakeOpenAI, reply: reply_corpus.Reply
) -> None:
    result = reply_corpus.propose(fake_openai, reply, BASELINE)

    if reply.reject is None:
        intended = reply_corpus.intended_source(reply, BASELINE)
        validate_candidate(intended, BASELINE)  # the expectation itself is a trainable file
        assert isinstance(result, Proposal), result
        assert result.train_py == intended
        assert reply.description is not None and reply.description in result.description
    else:
        assert isinstance(result, ProposalRejected), result
        assert reply.reject in result.reason
    assert len(fake_openai.requests) == 1


def test_the_benchmark_counts_intended_outcomes_and_kinds() -> None:
    by_name = {reply.name: reply for reply in CORPUS}
    good = by_name["01-gpt4o-one-block.txt"]
    bad = by_name["34-flash-attn-import.txt"]
    intended = reply_corpus.intended_source(good, BASELINE)
    verdicts = [
        reply_corpus.judge(good, BASELINE, Proposal("25% higher Muon learning rate", intended)),
        reply_corpus.judge(good, BASELINE, Proposal("25% higher Muon learning rate", BASELINE)),
        reply_corpus.judge(bad, BASELINE, ProposalRejected("SEARCH block 1 matches nothing")),
        reply_corpus.judge(bad, BASELINE, RuntimeError("old code broke")),
    ]
    assert [(v.ok, v.right_kind) for v in verdicts] == [
        (True, True), (False, True), (False, True), (False, False),
    ]  # fmt: skip
    rows = {
        line[:20].strip(): line[20:].split() for line in reply_corpus.report(verdicts).splitlines()
    }
    assert rows["all"] == ["1/4", "(25%)", "3/4", "(75%)"]
    assert rows["meant as candidates"] == ["1/2", "(50%)", "2/2", "(100%)"]
    assert rows["meant as rejections"] == ["0/2", "(0%)", "1/2", "(50%)"]


def proposer(server: FakeOpenAI, **settings: object):
    spec = {
        "type": "openai",
        "model": "fake-model",
        "baseURL": server.base_url,
        "apiKeyEnv": "FAKE_KEY",
        "maxRetries": 0,
        "timeoutSeconds": 5,
        **settings,
    }
    return make_proposer(spec, env={"FAKE_KEY": "sk-test"})


@pytest.fixture
def ctx() -> ProposalContext:
    return ProposalContext(
        org="demo", experiment=3, program="Lower val_bpb.", best_train_py=BASELINE,
        best_val_bpb=1.0,
    )  # fmt: skip


def test_a_wrong_first_answer_is_repaired_in_the_same_conversation(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    fake_openai.reply(MISCOPIED, prompt_tokens=3000, completion_tokens=90)
    fake_openai.reply(GOOD, prompt_tokens=3200, completion_tokens=80)

    proposal = proposer(fake_openai).propose(ctx)

    assert proposal.train_py == BASELINE.replace("MATRIX_LR = 0.04  #", "MATRIX_LR = 0.05  #")
    assert proposal.description == "a higher Muon learning rate converges faster."
    assert proposal.usage == TokenUsage(6200, 170)  # both turns
    first, second = (request.body["messages"] for request in fake_openai.requests)
    assert second[: len(first)] == first  # the same conversation, continued
    assert second[len(first)] == {"role": "assistant", "content": MISCOPIED}
    repair = second[len(first) + 1]
    assert repair["role"] == "user" and len(second) == len(first) + 2
    assert "SEARCH block 1 matches nothing in train.py" in repair["content"]
    assert "MATRIX_LR = 0.04  # Muon for" in repair["content"]  # the snippet it got wrong


def test_a_cut_off_reply_is_repaired_by_asking_for_a_shorter_one(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    fake_openai.reply(GOOD + "\nWhy: the", finish_reason="length")
    fake_openai.reply(GOOD)

    proposal = proposer(fake_openai, maxTokens=500).propose(ctx)

    assert "MATRIX_LR = 0.05" in proposal.train_py
    repair = fake_openai.requests[1].body["messages"][-1]["content"]
    assert "cut off at maxTokens (500)" in repair and "shorter" in repair


def test_a_reply_still_wrong_after_the_repair_turn_is_rejected_with_the_last_reason(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    fake_openai.reply(MISCOPIED, prompt_tokens=100, completion_tokens=10)
    fake_openai.reply("I cannot find that line, sorry.", prompt_tokens=150, completion_tokens=8)

    with pytest.raises(ProposalRejected) as caught:
        proposer(fake_openai).propose(ctx)

    assert caught.value.reason.startswith("the reply has no SEARCH/REPLACE block")
    assert caught.value.reason.endswith("(still so after 1 repair turn)")
    assert caught.value.usage == TokenUsage(250, 18)
    assert caught.value.raw_reply == "I cannot find that line, sorry."
    assert len(fake_openai.requests) == 2


def test_repair_turns_zero_makes_no_second_request(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    fake_openai.reply(MISCOPIED, prompt_tokens=100, completion_tokens=10)
    fake_openai.reply(GOOD)

    with pytest.raises(ProposalRejected, match="SEARCH block 1 matches nothing") as caught:
        proposer(fake_openai, repairTurns=0).propose(ctx)

    assert "repair" not in caught.value.reason
    assert caught.value.usage == TokenUsage(100, 10)
    assert len(fake_openai.requests) == 1


def test_more_repair_turns_are_taken_up_to_the_setting(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    for _ in range(3):
        fake_openai.reply(MISCOPIED, prompt_tokens=10, completion_tokens=1)
    fake_openai.reply(GOOD, prompt_tokens=10, completion_tokens=1)

    with pytest.raises(ProposalRejected, match=r"still so after 2 repair turns"):
        proposer(fake_openai, repairTurns=2).propose(ctx)
    assert len(fake_openai.requests) == 3
    assert len(fake_openai.requests[2].body["messages"]) == 6  # system, user, then 2 x 2 turns


def test_an_api_failure_during_the_repair_turn_keeps_the_first_reason_and_all_tokens(
    fake_openai: FakeOpenAI, ctx: ProposalContext
) -> None:
    fake_openai.reply(MISCOPIED, prompt_tokens=100, completion_tokens=10)
    fake_openai.error(401, "key revoked")

    with pytest.raises(ProposalRejected) as caught:
        proposer(fake_openai).propose(ctx)

    assert caught.value.reason.startswith("SEARCH block 1 matches nothing")
    assert "the repair turn got no reply (the model API refused" in caught.value.reason
    assert caught.value.usage == TokenUsage(100, 10)
