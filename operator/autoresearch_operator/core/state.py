"""What the loop knows about an org, rebuilt from the journal, the tried refs and the branch.

`reconcile` is the loop's way in: it reads the journal (decided experiments and the runs of
undecided ones), finds experiments committed but never decided, and moves the branch back to
the best if a kill left it behind the journal. `budget_exhausted` says whether another
experiment may start. `observe` reads the same state and repairs nothing, for other readers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..spec import Org
from .gitrepo import OrgRepo
from .journal import Journal
from .ledger import Ledger
from .records import ExperimentRecord, RunRecord, TokenUsage


@dataclass
class Candidate:
    """An experiment committed and not yet decided."""

    experiment: int
    commit: str
    parent: str
    description: str
    usage: TokenUsage
    started_at: float = field(default_factory=time.time)
    announced: bool = False  # the observer was told it is being confirmed


@dataclass
class OrgState:
    """What the loop knows after reconciling the journal, the refs and the branch."""

    records: list[ExperimentRecord] = field(default_factory=list)
    open_runs: list[RunRecord] = field(default_factory=list)  # journaled, experiment undecided
    best_commit: str | None = None
    unrecorded: list[int] = field(default_factory=list)  # committed before a kill, never decided
    open: dict[int, Candidate] = field(default_factory=dict)
    running: set[tuple[int, int]] = field(default_factory=set)  # (experiment, run) in flight

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.records, self.open_runs)

    @property
    def best_val_bpb(self) -> float | None:
        return self.ledger.best_val_bpb

    @property
    def recorded(self) -> set[int]:
        return {r.experiment for r in self.records}

    @property
    def next_experiment(self) -> int:
        """A committed-but-undecided experiment first; otherwise a fresh number."""
        for n in self.unrecorded:
            if n not in self.open:
                return n
        return max(self.recorded | set(self.open) | set(self.unrecorded), default=-1) + 1

    @property
    def scheduled(self) -> int:
        """Experiments (candidates) decided or under way: what budget.maxExperiments counts.
        A rejected proposal is none: it never became a candidate."""
        rejected = {r.experiment for r in self.records if r.rejected}
        return len((self.recorded - rejected) | set(self.open))

    @property
    def gpu_seconds(self) -> float:
        return self.ledger.gpu_seconds

    @property
    def proposals(self) -> int:
        """Proposals made (the baseline included), rejected ones too: budget.maxProposals."""
        return len(self.recorded | set(self.open))


def budget_exhausted(org: Org, state: OrgState) -> str | None:
    """Why the org must not start another experiment, or None while budget remains.

    An experiment committed but not decided is always finished, so this is None while there
    is one. Runs in flight count as if they used their whole window (start-up + budget +
    export), so parallel runs do not overshoot maxGPUHours by more than their evaluations;
    the confirmation of an experiment already started may overshoot by its runs.
    """
    if state.unrecorded:
        return None
    budget = org.spec.budget
    if state.scheduled >= budget.maxExperiments:
        return f"ran {budget.maxExperiments} experiments (budget.maxExperiments)"
    ledger = state.ledger  # one pass over the records for every limit below
    used = ledger.gpu_seconds
    committed = used + len(state.running) * org.spec.trainer.window_seconds
    if budget.maxGPUHours is not None and committed >= budget.maxGPUHours * 3600:
        return f"used {used / 3600:.2f} GPU-hours (budget.maxGPUHours)"
    if budget.maxLLMTokens is not None and ledger.llm_tokens >= budget.maxLLMTokens:
        return f"used {ledger.llm_tokens} LLM tokens (budget.maxLLMTokens)"
    cost = ledger.llm_cost_usd
    if budget.maxLLMCostUSD is not None and cost is not None and cost >= budget.maxLLMCostUSD:
        return f"the proposer cost ${cost:.2f} (budget.maxLLMCostUSD)"
    if state.proposals >= budget.proposal_cap:
        rejected = ledger.counts["rejected"]
        field = (
            "maxProposals"
            if budget.maxProposals is not None
            else "maxProposals, 3 x maxExperiments"
        )
        return f"made {state.proposals} proposals, {rejected} rejected (budget.{field})"
    return None


def observe(org: Org, repo: OrgRepo, journal: Journal) -> OrgState:
    """The org's state as its journal and tried refs show it, changing nothing: for readers
    beside the org's own loop (its contest), which must not move the branch under it."""
    records, open_runs = journal.read()
    state = OrgState(
        records=records,
        open_runs=[r for r in open_runs if r.experiment != 0 or r.val_bpb is not None],
    )
    state.best_commit = state.ledger.best_commit
    state.unrecorded = sorted(set(repo.tried_experiments(org.name)) - state.recorded)
    return state


def reconcile(org: Org, repo: OrgRepo, journal: Journal) -> OrgState:
    """Rebuild the org's state and repair the branch if a kill left it behind the journal."""
    repo.ensure_branch(org.branch, org.spec.startCommit)
    state = observe(org, repo, journal)
    if state.best_commit is None:
        state.best_commit = repo.branch_head(org.branch)
    elif repo.branch_head(org.branch) != state.best_commit:
        repo.advance(org.branch, state.best_commit)
    return state
