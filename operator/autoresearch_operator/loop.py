"""The research loop: propose, commit, train, decide, record — until the org's budget is spent.

Resumable by construction. State lives in three places that are reconciled on start:
the journal (what was recorded), the tried refs (what was committed) and the org branch
(what was kept). An experiment committed but never recorded is re-run from its commit, never
re-proposed; one recorded is never run again.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .decide import keep_or_discard
from .executor import Executor, ExperimentJob, Progress
from .gitrepo import CredentialsUnavailable, OrgRepo, PushCredentials, PushError
from .journal import Journal
from .proposers import Proposer
from .records import (
    CrashReason,
    ExperimentRecord,
    Outcome,
    Proposal,
    ProposalContext,
    ProposalRejected,
    TokenUsage,
    gpu_seconds,
)
from .spec import Org

HISTORY_FOR_PROMPT = 20
PUSH_ATTEMPTS = 3
PUSH_BACKOFF_SECONDS = 1.0
_Pending = cf.Future[tuple[str, "Proposal | ProposalRejected", float]]
BASELINE_MESSAGE = "baseline: unmodified train.py"


class BaselineFailed(RuntimeError):
    """The unmodified train.py did not produce a score: the environment, not a candidate, is broken.

    Not recorded, so that running again (after fixing the cause) retries the baseline.
    """

    def __init__(self, rec: ExperimentRecord):
        result = rec.result
        detail = (result.detail if result else None) or "no detail"
        tail = (result.log_tail if result else "").strip()[-2000:]
        super().__init__(
            f"the baseline (experiment 0) crashed: {rec.reason}: {detail}\n{tail}".rstrip()
        )
        self.record = rec


class LoopObserver(Protocol):
    def phase(self, org: str, experiment: int, phase: str, detail: str = "") -> None: ...
    def progress(self, org: str, p: Progress) -> None: ...
    def recorded(self, org: str, rec: ExperimentRecord) -> None: ...


class _Quiet:
    def phase(self, org: str, experiment: int, phase: str, detail: str = "") -> None:
        pass

    def progress(self, org: str, p: Progress) -> None:
        pass

    def recorded(self, org: str, rec: ExperimentRecord) -> None:
        pass


@dataclass
class OrgState:
    """What the loop knows after reconciling the journal, the refs and the branch."""

    records: list[ExperimentRecord] = field(default_factory=list)
    best_commit: str | None = None
    best_val_bpb: float | None = None
    unrecorded: list[int] = field(default_factory=list)  # committed before a kill, never recorded
    running: set[int] = field(default_factory=set)

    @property
    def recorded(self) -> set[int]:
        return {r.experiment for r in self.records}

    @property
    def next_experiment(self) -> int:
        """A committed-but-unrecorded experiment first; otherwise a fresh number."""
        for n in self.unrecorded:
            if n not in self.running:
                return n
        return max(self.recorded | self.running | set(self.unrecorded), default=-1) + 1

    @property
    def scheduled(self) -> int:
        return len(self.recorded | self.running)

    @property
    def gpu_seconds(self) -> float:
        return gpu_seconds(self.records)

    @property
    def llm_tokens(self) -> int:
        return sum(r.usage.total for r in self.records)


def budget_exhausted(org: Org, state: OrgState) -> str | None:
    """Why the org must not schedule another experiment, or None while budget remains.

    Running experiments count as if they used their whole window (start-up + budget + export),
    so parallel experiments do not overshoot maxGPUHours by more than their evaluations.
    """
    budget = org.spec.budget
    if state.scheduled >= budget.maxExperiments:
        return f"ran {budget.maxExperiments} experiments (budget.maxExperiments)"
    committed = state.gpu_seconds + len(state.running) * org.spec.trainer.window_seconds
    if budget.maxGPUHours is not None and committed >= budget.maxGPUHours * 3600:
        return f"used {state.gpu_seconds / 3600:.2f} GPU-hours (budget.maxGPUHours)"
    if budget.maxLLMTokens is not None and state.llm_tokens >= budget.maxLLMTokens:
        return f"used {state.llm_tokens} LLM tokens (budget.maxLLMTokens)"
    return None


def reconcile(org: Org, repo: OrgRepo, journal: Journal) -> OrgState:
    """Rebuild the org's state and repair the branch if a kill left it behind the journal."""
    state = OrgState(records=journal.load())
    repo.ensure_branch(org.branch)
    kept = [r for r in state.records if r.outcome is Outcome.KEEP and r.val_bpb is not None]
    if kept:  # parallel experiments finish out of order: the best is the lowest, not the last
        best = min(kept, key=lambda r: r.val_bpb or 0.0)
        state.best_commit, state.best_val_bpb = best.commit, best.val_bpb
    if state.best_commit is None:
        state.best_commit = repo.branch_head(org.branch)
    elif repo.branch_head(org.branch) != state.best_commit:
        repo.advance(org.branch, state.best_commit)
    state.unrecorded = sorted(set(repo.tried_experiments(org.name)) - state.recorded)
    return state


class ResearchLoop:
    def __init__(
        self,
        org: Org,
        repo: OrgRepo,
        journal: Journal,
        executor: Executor,
        proposer: Proposer,
        observer: LoopObserver | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        push_credentials: Callable[[], PushCredentials | None] = lambda: None,
    ):
        """`push_credentials` is asked before every push to spec.repo.url, so a credential that
        appears or changes later is used; it raises CredentialsUnavailable when it has none."""
        self.org = org
        self.repo = repo
        self.journal = journal
        self.executor = executor
        self.proposer = proposer
        self.observer = observer or _Quiet()
        self.should_stop = should_stop
        self.push_credentials = push_credentials
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"propose-{org.name}")

    # -- proposals --------------------------------------------------------------------------

    def _context(self, state: OrgState, experiment: int) -> ProposalContext:
        assert state.best_commit is not None
        history = state.records[-HISTORY_FOR_PROMPT:]
        return ProposalContext(
            org=self.org.name,
            experiment=experiment,
            program=self.org.program_text,
            best_train_py=self.repo.read_train_py(state.best_commit),
            best_val_bpb=state.best_val_bpb,
            history=list(history),
            log_tails={
                r.experiment: r.result.log_tail
                for r in history
                if r.outcome is Outcome.CRASH and r.result and r.result.log_tail
            },
        )

    def _propose(
        self, ctx: ProposalContext, parent: str
    ) -> tuple[str, Proposal | ProposalRejected, float]:
        start = time.monotonic()
        try:
            outcome: Proposal | ProposalRejected = self.proposer.propose(ctx)
        except ProposalRejected as rejected:
            outcome = rejected
        return parent, outcome, time.monotonic() - start

    def _prefetch(self, state: OrgState, experiment: int) -> _Pending | None:
        if state.scheduled >= self.org.spec.budget.maxExperiments or self.repo.tried(
            self.org.name, experiment
        ):
            return None
        assert state.best_commit is not None
        return self._pool.submit(self._propose, self._context(state, experiment), state.best_commit)

    # -- the loop ---------------------------------------------------------------------------

    def slots(self) -> int:
        """Experiments at once: the org's parallelism, capped by what the executor can run."""
        return max(
            1,
            min(
                self.org.spec.parallelism,
                getattr(self.executor, "slots", self.org.spec.parallelism),
            ),
        )

    def run(self) -> OrgState:
        state = reconcile(self.org, self.repo, self.journal)
        prefetched: _Pending | None = None
        in_flight: dict[cf.Future[ExperimentRecord], int] = {}
        trainers = cf.ThreadPoolExecutor(
            max_workers=self.slots(), thread_name_prefix=f"train-{self.org.name}"
        )
        try:
            while True:
                while (
                    len(in_flight) < self.slots()
                    and not self.should_stop()
                    and budget_exhausted(self.org, state) is None
                ):
                    n = state.next_experiment
                    candidate = self._candidate(state, n, prefetched)
                    prefetched = None
                    if isinstance(
                        candidate, ExperimentRecord
                    ):  # the proposal never became a commit
                        self._record(state, candidate)
                        continue
                    if n in state.unrecorded:
                        state.unrecorded.remove(n)
                    state.running.add(n)
                    threshold = self._test_threshold(state, n)
                    in_flight[trainers.submit(self._train, n, threshold, *candidate)] = n
                    # LLM latency hides behind training: the next proposal is prepared now.
                    prefetched = self._prefetch(state, state.next_experiment)
                if not in_flight:
                    break
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    state.running.discard(in_flight.pop(future))
                    rec = self._decide(state, future.result())
                    if rec.experiment == 0 and rec.outcome is Outcome.CRASH:
                        raise BaselineFailed(rec)
                    self._record(state, rec)
        finally:
            if prefetched is not None:
                prefetched.cancel()
            self._pool.shutdown(wait=False, cancel_futures=True)
            if in_flight and (cancel := getattr(self.executor, "cancel", None)) is not None:
                cancel()  # local runs stop their children; cluster Jobs run on and are adopted
            trainers.shutdown(wait=not in_flight, cancel_futures=True)
        return state

    def _candidate(
        self,
        state: OrgState,
        n: int,
        prefetched: _Pending | None,
    ) -> tuple[str, str, str, TokenUsage] | ExperimentRecord:
        org = self.org.name
        assert state.best_commit is not None
        existing = self.repo.tried(org, n)
        if existing is not None:  # committed before a kill, never recorded: run it as it is
            self.observer.phase(org, n, "resuming", existing[:7])
            parents = self.repo.repo.commit(existing).parents
            parent = parents[0].hexsha if parents else existing
            return existing, parent, self.repo.message(existing), TokenUsage()
        if n == 0:
            base = state.best_commit
            commit = self.repo.commit_candidate(
                org, 0, base, self.repo.read_train_py(base), BASELINE_MESSAGE
            )
            return commit, base, BASELINE_MESSAGE, TokenUsage()
        self.observer.phase(org, n, "proposing", self.proposer.name)
        if prefetched is None:
            prefetched = self._pool.submit(
                self._propose, self._context(state, n), state.best_commit
            )
        parent, proposal, latency = prefetched.result()
        self.observer.phase(org, n, "proposed", f"in {latency:.1f}s")
        if isinstance(proposal, ProposalRejected):
            return ExperimentRecord(
                experiment=n,
                description="(no valid candidate)",
                outcome=Outcome.CRASH,
                parent=state.best_commit,
                reason=CrashReason.INVALID_PROPOSAL.value,
                detail=proposal.reason,
                best_val_bpb=state.best_val_bpb,
                usage=proposal.usage,
                proposer=self.proposer.name,
                started_at=time.time(),
                finished_at=time.time(),
            )
        train_py = proposal.train_py
        if parent != state.best_commit:  # the best moved while this was being proposed
            merged = self.repo.merge_onto(parent, train_py, state.best_commit)
            if merged is not None:
                train_py, parent = merged, state.best_commit
        commit = self.repo.commit_candidate(org, n, parent, train_py, proposal.description)
        return commit, parent, proposal.description, proposal.usage

    def _test_threshold(self, state: OrgState, n: int) -> float:
        """Below which val_bpb the harness also scores the held-out test split: always for the
        baseline; for a candidate, the score that would beat the best at its launch. The best
        only falls, so every candidate kept later was scored on test, and no discard needs to."""
        if n == 0 or state.best_val_bpb is None:
            return math.inf
        return state.best_val_bpb - self.org.spec.keepPolicy.minImprovement

    def _train(
        self,
        n: int,
        test_if_val_below: float,
        commit: str,
        parent: str,
        description: str,
        usage: TokenUsage,
    ) -> ExperimentRecord:
        """Runs in a trainer thread; the decision waits for _decide, against the best at the end."""
        org, trainer = self.org.name, self.org.spec.trainer
        self.observer.phase(org, n, "training", description)
        started = time.time()
        job = ExperimentJob(
            org=org,
            experiment=n,
            commit=commit,
            train_py=self.repo.read_train_py(commit),
            time_budget=trainer.timeBudgetSeconds,
            startup_seconds=trainer.startup_seconds,
            profile=trainer.profile,
            seed=0,  # one data order for every run until re-runs ask for fresh seeds
            test_if_val_below=test_if_val_below,
        )
        result = self.executor.run(job, lambda p: self.observer.progress(org, p))
        finite = result.val_bpb is not None and math.isfinite(result.val_bpb)
        return ExperimentRecord(
            experiment=n,
            description=description,
            outcome=Outcome.CRASH,  # until _decide
            commit=commit,
            parent=parent,
            val_bpb=result.val_bpb if finite else None,
            result=result,
            usage=usage,
            proposer="baseline" if n == 0 else self.proposer.name,
            started_at=started,
            finished_at=time.time(),
        )

    def _decide(self, state: OrgState, rec: ExperimentRecord) -> ExperimentRecord:
        assert rec.result is not None
        policy = self.org.spec.keepPolicy
        rec.outcome = keep_or_discard(rec.result, state.best_val_bpb, policy.minImprovement)
        crashed = rec.outcome is Outcome.CRASH
        rec.reason = rec.result.reason if crashed else None
        rec.detail = rec.result.detail if crashed else None
        rec.best_val_bpb = rec.val_bpb if rec.outcome is Outcome.KEEP else state.best_val_bpb
        return rec

    def _record(self, state: OrgState, rec: ExperimentRecord) -> None:
        """Journal first (fsynced), then move the branch: a kill in between is repaired by reconcile."""
        self.journal.append(rec)
        state.records.append(rec)
        if rec.outcome is Outcome.KEEP and rec.commit:
            self.repo.advance(self.org.branch, rec.commit)
            state.best_commit, state.best_val_bpb = rec.commit, rec.val_bpb
        self.observer.recorded(self.org.name, rec)
        if self.org.spec.repo.url:
            self._push(rec.experiment)

    def _push(self, experiment: int) -> None:
        """Mirror the branch and tried refs after every decision; a failure never stops the loop.

        The journal and the local repository keep everything, and the next decision's push
        carries whatever an earlier failed push missed.
        """
        url = self.org.spec.repo.url
        assert url is not None
        error = ""
        for attempt in range(PUSH_ATTEMPTS):
            try:
                self.repo.push(url, self.org.name, self.org.branch, self.push_credentials())
                error = ""
                break
            except CredentialsUnavailable as err:  # e.g. no Secret yet: the next decision retries
                error = str(err)
                break
            except PushError as err:
                error = str(err)
                if attempt + 1 < PUSH_ATTEMPTS and not self.should_stop():
                    time.sleep(PUSH_BACKOFF_SECONDS * 2**attempt)
        pushed = getattr(self.observer, "pushed", None)
        if pushed is not None:
            pushed(self.org.name, experiment, error or None)
        elif error:
            self.observer.phase(self.org.name, experiment, "push failed", error)
