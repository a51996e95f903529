"""The small interfaces the loop needs, implemented by the adapters beside core/: executors
(autoresearch_operator.executor runs the harness locally, k8s.executor as Jobs) and proposers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .records import ExperimentRecord, Proposal, ProposalContext, RunRecord, TrainResult


@dataclass(frozen=True)
class ExperimentJob:
    org: str
    experiment: int
    commit: str
    train_py: str
    time_budget: int
    startup_seconds: int
    profile: str
    seed: int = 0  # the data-order seed the harness passes to train.py
    run: int = 0  # which run of the experiment (core/policy.py): part of the Job's name
    test_if_val_below: float | None = None  # score the test split too when val_bpb is below


@dataclass
class Progress:
    experiment: int
    wall_seconds: float
    run: int = 0
    step: int | None = None
    loss: float | None = None
    line: str = ""


ProgressCallback = Callable[[Progress], None]


class Executor(Protocol):
    """Trains one run under the trusted harness and returns what the harness measured."""

    slots: int  # runs it can train at once; the loop runs min(spec.parallelism, slots)

    def run(
        self, job: ExperimentJob, on_progress: ProgressCallback | None = None
    ) -> TrainResult: ...

    def cancel(self) -> None:
        """The loop was interrupted with runs in flight: stop them if they die with us (local
        runs), or leave them to be adopted by the next start (a cluster's Jobs)."""


@runtime_checkable
class Proposer(Protocol):
    """Proposes the next candidate train.py.

    `propose` returns a Proposal whose train_py has passed validate_candidate, or raises
    ProposalRejected with a one-sentence reason and the tokens spent getting there.
    """

    name: str

    def propose(self, ctx: ProposalContext) -> Proposal: ...


class LoopObserver(Protocol):
    """What the loop tells whoever shows an org (the terminal, the ResearchOrg status, Events,
    metrics, benchmarks). Called from the loop's and the trainer threads."""

    def phase(self, org: str, experiment: int, phase: str, detail: str = "") -> None:
        """'resuming', 'proposing', 'proposed', 'training' (a screening or baseline run),
        'confirming' (once, when a promising experiment's confirmation starts; detail "N more
        runs and N re-runs of the best") and 'verifying' (each confirmation run or re-run)."""

    def progress(self, org: str, p: Progress) -> None:
        """Training progress while a run trains. An observer with an attribute
        `wants_progress = False` gets none, and the executor reads no training log for it."""

    def run_recorded(self, org: str, run: RunRecord) -> None:
        """A run finished and is journaled (before anything is decided from it)."""

    def recorded(self, org: str, rec: ExperimentRecord) -> None:
        """An experiment was decided and journaled."""

    def pushed(self, org: str, experiment: int, error: str | None) -> None:
        """After each decision with spec.repo.url set: None on success, else why it failed."""


class QuietObserver:
    """A LoopObserver that ignores everything: subclass it and override what you show."""

    def phase(self, org: str, experiment: int, phase: str, detail: str = "") -> None:
        pass

    def progress(self, org: str, p: Progress) -> None:
        pass

    def run_recorded(self, org: str, run: RunRecord) -> None:
        pass

    def recorded(self, org: str, rec: ExperimentRecord) -> None:
        pass

    def pushed(self, org: str, experiment: int, error: str | None) -> None:
        pass
