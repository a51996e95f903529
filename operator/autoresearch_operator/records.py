"""Plain data shared by the loop, the proposers, the executors and the operator.

Everything here is a dataclass of JSON-friendly values, so a record can be written to
`experiments.jsonl`, to a ResearchOrg's status, or to a Job's termination message unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.StrEnum):
    KEEP = "keep"  # beat the org's best by at least minImprovement: the branch advances
    DISCARD = "discard"  # trained fine but did not beat the best: the branch stays
    CRASH = "crash"  # produced no trustworthy val_bpb (see CrashReason)


class CrashReason(enum.StrEnum):
    EXCEPTION = "exception"  # train.py exited non-zero
    NAN = "nan"  # loss went NaN/inf or diverged
    TIMEOUT = "timeout"  # never exported within its window (start-up + budget + export): killed
    REJECTED_BY_HARNESS = "rejected-by-harness"  # cheating: peeked ahead, printed a score, ...
    INVALID_PROPOSAL = "invalid-proposal"  # the proposer's candidate never reached training
    INFRASTRUCTURE = "infrastructure"  # the executor itself failed (pod evicted, ...)


@dataclass
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass
class TrainResult:
    """What the trusted harness measured. Mirrors trainer-image/harness.py's result JSON.

    The harness's own measurements: the scores, the clock (training_seconds, total_seconds), the
    window it gave the run, the seed and num_params_M. The training child's figures about itself
    (steps, tokens, tokens/s, MFU, VRAM) are its claims, named in `claimed`.
    """

    status: str  # "ok" or "crash"
    reason: str | None = None  # a CrashReason value when status == "crash"
    detail: str | None = None  # one human sentence on why, for crashes
    val_bpb: float | None = None
    test_bpb: float | None = None  # the held-out split, scored only when the loop asked
    training_seconds: float | None = None  # the child's wall time, crashes and timeouts included
    total_seconds: float | None = None  # the harness's whole run, evaluation included
    startup_seconds: float | None = None  # the window this run was given ...
    time_budget: float | None = None
    export_seconds: float | None = None  # ... start-up + budget + export
    seed: int | None = None  # the data-order seed the harness passed
    peak_vram_mb: float | None = None
    mfu_percent: float | None = None
    total_tokens_M: float | None = None
    tokens_per_second: float | None = None
    num_steps: int | None = None
    num_params_M: float | None = None
    claimed: list[str] = field(default_factory=list)  # fields above that the child reported
    log_tail: str = ""

    @property
    def gpu_seconds(self) -> float:
        """What this run charges to budget.maxGPUHours: the harness's whole wall time, for
        every run, crashes and timeouts included."""
        return self.total_seconds or self.training_seconds or 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Proposal:
    """A candidate train.py and the hypothesis behind it (the commit message)."""

    description: str
    train_py: str
    usage: TokenUsage = field(default_factory=TokenUsage)


class ProposalRejected(Exception):
    """The proposer could not produce a valid candidate; `reason` says why in one sentence."""

    def __init__(self, reason: str, usage: TokenUsage | None = None, raw_reply: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.usage = usage or TokenUsage()
        self.raw_reply = raw_reply


@dataclass
class ExperimentRecord:
    """One experiment, as logged to experiments.jsonl and summarised in results.tsv."""

    experiment: int
    description: str
    outcome: Outcome
    commit: str | None = None  # the candidate commit (None when the proposal was invalid)
    parent: str | None = None  # the best commit it was derived from
    reason: str | None = None  # CrashReason value for crashes
    detail: str | None = None
    val_bpb: float | None = None
    best_val_bpb: float | None = None  # the org's best after this decision
    result: TrainResult | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    proposer: str = ""
    started_at: float | None = None  # unix seconds
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["outcome"] = self.outcome.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExperimentRecord:
        data = dict(data)
        data["outcome"] = Outcome(data["outcome"])
        data["usage"] = TokenUsage(**(data.get("usage") or {}))
        if data.get("result") is not None:
            data["result"] = TrainResult.from_json(data["result"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def best_record(records: Iterable[ExperimentRecord]) -> ExperimentRecord | None:
    """The branch head: every keep beat the best before it, so the lowest kept val_bpb wins.

    Not simply the last keep: with parallel experiments the journal is ordered by experiment
    number, which is not the order in which they were decided.
    """
    kept = [r for r in records if r.outcome is Outcome.KEEP and r.val_bpb is not None]
    return min(kept, key=lambda r: (r.val_bpb, -r.experiment), default=None)


def baseline_record(records: Iterable[ExperimentRecord]) -> ExperimentRecord | None:
    return next((r for r in records if r.experiment == 0 and r.outcome is not Outcome.CRASH), None)


def gpu_seconds(records: Iterable[ExperimentRecord]) -> float:
    """GPU seconds used by these experiments: the one sum that budget.maxGPUHours, the status,
    the metrics and the comparison table all show."""
    return sum(r.result.gpu_seconds for r in records if r.result)


@dataclass
class ProposalContext:
    """Everything a proposer may look at when proposing experiment `experiment`."""

    org: str
    experiment: int
    program: str  # program.md text
    best_train_py: str
    best_val_bpb: float | None
    history: list[ExperimentRecord] = field(default_factory=list)  # recent, oldest first
    log_tails: dict[int, str] = field(default_factory=dict)  # experiment -> crash log tail
