"""Plain data shared by the loop, the proposers, the executors and the operator.

Everything here is a dataclass of JSON-friendly values, so a record can be written to
`experiments.jsonl`, to a ResearchOrg's status, or to a Job's termination message unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from typing import Any


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of `data` that are fields of dataclass `cls`: a line written by a newer or
    older version still reads (unknown keys such as a run line's "kind" are dropped)."""
    known = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in known}


class Outcome(enum.StrEnum):
    KEEP = "keep"  # beat the org's best significantly (core/policy.py): the branch advances
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
        return cls(**_known_fields(cls, data))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Role(enum.StrEnum):
    """Why a run was trained (an experiment can have several runs, see core/policy.py)."""

    BASELINE = "baseline"  # experiment 0: the unmodified train.py, noiseRuns times
    SCREEN = "screen"  # a candidate's first run
    CONFIRM = "confirm"  # more runs of a promising candidate, fresh seeds
    CHAMPION = "champion"  # re-runs of the best beside the confirmations, paired by seed

    @property
    def verification(self) -> bool:
        """Runs spent checking a result rather than finding one (status: verification GPU)."""
        return self in (Role.CONFIRM, Role.CHAMPION)


@dataclass
class RunRecord:
    """One training run under the harness: the unit the journal, Job names and GPU time count."""

    experiment: int
    run: int  # 0 is the screening run (or the baseline's first); unique within the experiment
    role: Role
    commit: str  # what was trained: the candidate, or the champion for a re-run
    seed: int
    result: TrainResult
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def val_bpb(self) -> float | None:
        """The run's score; None for a crash or a non-finite number."""
        v = self.result.val_bpb
        ok = self.result.status == "ok" and v is not None and math.isfinite(v)
        return v if ok else None

    @property
    def key(self) -> tuple[int, int]:
        return (self.experiment, self.run)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["role"] = self.role.value
        return {"kind": "run", **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        data = dict(data)
        data["role"] = Role(data["role"])
        data["result"] = TrainResult.from_json(data["result"])
        return cls(**_known_fields(cls, data))


@dataclass
class Proposal:
    """A candidate train.py and the hypothesis behind it (the commit message)."""

    description: str
    train_py: str
    usage: TokenUsage = field(default_factory=TokenUsage)


class ProposalRejected(Exception):
    """The proposer could not produce a valid candidate; `reason` says why in one sentence."""

    def __init__(
        self,
        reason: str,
        usage: TokenUsage | None = None,
        raw_reply: str = "",
        attempt: str | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.usage = usage or TokenUsage()
        self.raw_reply = raw_reply
        # what it tried, as the next prompt may show it: the reply without its reasoning
        self.attempt = raw_reply if attempt is None else attempt


@dataclass
class ExperimentRecord:
    """One experiment (one candidate commit), decided: a line of experiments.jsonl and a row of
    results.tsv. Its runs are journaled apart, as each finishes, and attached on load."""

    experiment: int
    description: str
    outcome: Outcome
    commit: str | None = None  # the candidate commit (None when the proposal was invalid)
    parent: str | None = None  # the best commit it was derived from
    reason: str | None = None  # CrashReason value for crashes
    detail: str | None = None
    val_bpb: float | None = None  # the candidate's mean over its own runs (screen + confirm)
    best_val_bpb: float | None = None  # the org's best (a mean over its runs) after this decision
    result: TrainResult | None = None  # the screening run's (the baseline's first run's)
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float | None = None  # the usage at proposer.pricing; None without a price
    proposer: str = ""
    started_at: float | None = None  # unix seconds
    finished_at: float | None = None  # when it was decided
    p_value: float | None = None  # of the confirmation test, when there was one
    decision: int | None = None  # 0, 1, 2, ... in the order experiments were decided
    attempt: str = ""  # a rejected proposal: the first lines of what the proposer sent
    runs: list[RunRecord] = field(default_factory=list)  # journaled apart; attached on load

    @property
    def rejected(self) -> bool:
        """A proposal that never became a candidate: no experiment, no GPU time."""
        return self.outcome is Outcome.CRASH and self.reason == CrashReason.INVALID_PROPOSAL

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["outcome"] = self.outcome.value
        data.pop("runs")  # each run has its own line, written when it finished
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExperimentRecord:
        data = dict(data)
        data["outcome"] = Outcome(data["outcome"])
        data["usage"] = TokenUsage(**(data.get("usage") or {}))
        if data.get("result") is not None:
            data["result"] = TrainResult.from_json(data["result"])
        data.pop("runs", None)  # attached from the run lines by the journal
        return cls(**_known_fields(cls, data))


@dataclass
class ProposalContext:
    """Everything a proposer may look at when proposing experiment `experiment`."""

    org: str
    experiment: int
    program: str  # program.md text
    best_train_py: str
    best_val_bpb: float | None
    noise_sigma: float | None = None  # the org's measured noise floor, once known
    history: list[ExperimentRecord] = field(default_factory=list)  # recent, oldest first
    log_tails: dict[int, str] = field(default_factory=dict)  # experiment -> crash log tail
    time_budget_seconds: int | None = None  # spec.trainer.timeBudgetSeconds
    startup_seconds: int | None = None  # the start-up allowance before the budget
    export_seconds: int | None = None  # after start-up + budget, to save the model
    device: str = ""  # what the trainer runs on, as far as the spec says before any run
    best_result: TrainResult | None = None  # a run of the best: its steps, tokens/s, memory
    packages: tuple[str, ...] = ()  # what train.py may import besides the standard library
