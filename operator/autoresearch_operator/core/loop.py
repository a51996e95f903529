"""The research loop: propose, commit, train its runs, decide, record — until the budget is spent.

An experiment (one candidate commit) has one or more runs: the screening run, and for a promising
candidate confirmation runs and champion re-runs (core/policy.py decides which; the loop only
schedules what it asks for). Runs of any experiment fill the org's parallel slots, verification
first.

Resumable by construction. State lives in three places that are reconciled on start: the journal
(runs and decisions recorded), the tried refs (what was committed) and the org branch (what was
kept). An experiment committed but never decided is resumed from its commit, never re-proposed,
and only the runs it still lacks are trained; a run or a decision recorded is never repeated.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import time
from collections.abc import Callable

from ..spec import EXPORT_SECONDS, Org, TrainerSpec
from .gitrepo import CredentialsUnavailable, OrgRepo, PushCredentials, PushError
from .interfaces import Executor, ExperimentJob, LoopObserver, Proposer, QuietObserver
from .journal import Journal
from .ledger import Ledger
from .policy import Rule, RunRequest, Verdict, decide
from .records import (
    CrashReason,
    ExperimentRecord,
    Outcome,
    Proposal,
    ProposalContext,
    ProposalRejected,
    Role,
    RunRecord,
    TokenUsage,
)
from .state import Candidate, OrgState, budget_exhausted, reconcile

LOG = logging.getLogger(__name__)
HISTORY_FOR_PROMPT = 20
ATTEMPT_LINES = 8  # of a rejected proposal, kept in its record for the next prompts
ATTEMPT_LINE_CHARS = 200
PUSH_ATTEMPTS = 3
PUSH_BACKOFF_SECONDS = 1.0
_Pending = cf.Future[tuple[str, "Proposal | ProposalRejected", float]]
BASELINE_MESSAGE = "baseline: unmodified train.py"
__all__ = [
    "BaselineFailed",
    "LoopObserver",
    "OrgState",
    "QuietObserver",
    "ResearchLoop",
    "budget_exhausted",
    "reconcile",
]


def trainer_device(trainer: TrainerSpec) -> str:
    """What the org's runs train on, as far as its spec says before any run: the GPUs its
    resources ask for and the GPU labels its nodeSelector picks nodes by (which often name the
    model and its memory). The tiny profile is a small model sized for a CPU."""
    if trainer.profile == "tiny":
        return "the tiny profile: a small model sized for a CPU"
    resources = trainer.resources or {}
    asked = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    gpus = [f"{count} {name}" for name, count in asked.items() if name.endswith("/gpu")]
    labels = [f"{key}={value}" for key, value in sorted(trainer.nodeSelector.items())
              if "gpu" in key.lower() or "accelerator" in key.lower()]  # fmt: skip
    device = " + ".join(gpus) or "no GPU in spec.trainer.resources"
    if labels:
        return f"{device}, on nodes labelled {', '.join(labels)}"
    return f"{device} (the spec names no GPU model or memory)"


def attempt_excerpt(attempt: str) -> str:
    """The first lines of a rejected attempt (the proposer already left out any reasoning):
    what the next prompts show of it."""
    lines = attempt.strip().splitlines()[:ATTEMPT_LINES]
    return "\n".join(line[:ATTEMPT_LINE_CHARS] for line in lines)


class BaselineFailed(RuntimeError):
    """The unmodified train.py did not produce a score: the environment, not a candidate, is broken.

    Not recorded, so that running again (after fixing the cause) retries the baseline.
    """

    def __init__(self, run: RunRecord):
        result = run.result
        detail = result.detail or f"val_bpb {result.val_bpb}"
        tail = result.log_tail.strip()[-2000:]
        super().__init__(
            f"the baseline (experiment 0, run {run.run}) crashed: "
            f"{result.reason or CrashReason.NAN.value}: {detail}\n{tail}".rstrip()
        )
        self.run = run


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
        self.rule = Rule.from_spec(org.spec.keepPolicy)
        self.repo = repo
        self.journal = journal
        self.executor = executor
        self.proposer = proposer
        self.observer = observer or QuietObserver()
        self.should_stop = should_stop
        self.push_credentials = push_credentials
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"propose-{org.name}")

    # -- proposals --------------------------------------------------------------------------

    def _context(self, state: OrgState, experiment: int) -> ProposalContext:
        assert state.best_commit is not None
        history = state.records[-HISTORY_FOR_PROMPT:]
        ledger = state.ledger
        trainer = self.org.spec.trainer
        return ProposalContext(
            org=self.org.name,
            experiment=experiment,
            program=self.org.program_text,
            best_train_py=self.repo.read_train_py(state.best_commit),
            best_val_bpb=ledger.best_val_bpb,
            noise_sigma=ledger.noise.sigma,
            history=list(history),
            log_tails={
                r.experiment: r.result.log_tail
                for r in history
                if r.outcome is Outcome.CRASH and r.result and r.result.log_tail
            },
            time_budget_seconds=trainer.timeBudgetSeconds,
            startup_seconds=trainer.startup_seconds,
            export_seconds=EXPORT_SECONDS[trainer.profile],
            device=trainer_device(trainer),
            best_result=ledger.best_record.result if ledger.best_record else None,
        )

    def _propose(
        self, ctx: ProposalContext, parent: str
    ) -> tuple[str, Proposal | ProposalRejected, float]:
        start = time.monotonic()
        try:
            outcome: Proposal | ProposalRejected = self.proposer.propose(ctx)
        except ProposalRejected as rejected:
            outcome = rejected
        except Exception as error:  # a bug in a proposer rejects this proposal, never the loop
            LOG.exception("org %s: the %s proposer failed", self.org.name, self.proposer.name)
            outcome = ProposalRejected(
                f"the {self.proposer.name} proposer failed: {type(error).__name__}: {error}",
                TokenUsage(),
            )
        return parent, outcome, time.monotonic() - start

    def _prefetch(self, state: OrgState, experiment: int) -> _Pending | None:
        budget = self.org.spec.budget
        if (
            state.scheduled >= budget.maxExperiments
            or state.proposals >= budget.proposal_cap
            or self.repo.tried(self.org.name, experiment)
        ):
            return None
        assert state.best_commit is not None
        return self._pool.submit(self._propose, self._context(state, experiment), state.best_commit)

    # -- the loop ---------------------------------------------------------------------------

    def slots(self) -> int:
        """Runs at once: the org's parallelism, capped by what the executor can run."""
        return max(1, min(self.org.spec.parallelism, self.executor.slots))

    def run(self) -> OrgState:
        state = reconcile(self.org, self.repo, self.journal)
        prefetched: _Pending | None = None
        in_flight: dict[cf.Future[RunRecord], tuple[int, int]] = {}
        trainers = cf.ThreadPoolExecutor(
            max_workers=self.slots(), thread_name_prefix=f"train-{self.org.name}"
        )
        try:
            while True:
                while len(in_flight) < self.slots() and not self.should_stop():
                    request = self._next_request(state)
                    if request is None:
                        if budget_exhausted(self.org, state) is not None:
                            break
                        n = state.next_experiment
                        candidate = self._candidate(state, n, prefetched)
                        prefetched = None
                        if isinstance(candidate, ExperimentRecord):  # never became a commit
                            self._record(state, candidate)
                            continue
                        if n in state.unrecorded:
                            state.unrecorded.remove(n)
                        state.open[n] = candidate
                        self._settle(state)  # a resumed experiment may need no more runs
                        # LLM latency hides behind training: the next proposal is prepared now.
                        if prefetched is None:
                            prefetched = self._prefetch(state, state.next_experiment)
                        continue
                    n, req, verdict = request
                    state.running.add((n, req.run))
                    job = self._job(state, n, req, verdict)
                    in_flight[trainers.submit(self._train, state.open[n], req, job)] = (n, req.run)
                if not in_flight:
                    break
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    state.running.discard(in_flight.pop(future))
                    self._run_finished(state, future.result())
                self._settle(state)
        finally:
            if prefetched is not None:
                prefetched.cancel()
            self._pool.shutdown(wait=False, cancel_futures=True)
            if in_flight:
                self.executor.cancel()  # local runs stop their children; cluster Jobs run on
            trainers.shutdown(wait=not in_flight, cancel_futures=True)
        return state

    # -- runs -------------------------------------------------------------------------------

    def _verdict(self, state: OrgState, n: int, ledger: Ledger) -> Verdict:
        best = ledger.best
        return decide(
            n,
            state.open[n].commit,
            ledger.runs_of(n),
            best_commit=ledger.best_commit,
            best_mean=best.mean if best else None,
            noise=ledger.noise,
            rule=self.rule,
        )

    def _next_request(self, state: OrgState) -> tuple[int, RunRequest, Verdict] | None:
        """The next run an open experiment needs and nobody is training (with the verdict that
        asked for it): oldest experiment first, so confirmations finish before new candidates."""
        ledger = state.ledger
        for n in sorted(state.open):
            verdict = self._verdict(state, n, ledger)
            for req in verdict.requests:
                if (n, req.run) not in state.running:
                    return n, req, verdict
        return None

    def _job(self, state: OrgState, n: int, req: RunRequest, verdict: Verdict) -> ExperimentJob:
        trainer = self.org.spec.trainer
        cand = state.open[n]
        if req.role is Role.CONFIRM and not cand.announced:
            cand.announced = True
            pairs = sum(1 for q in verdict.requests if q.role is Role.CONFIRM)
            self.observer.phase(self.org.name, n, "confirming",
                                f"{pairs} more runs and {pairs} re-runs of the best")  # fmt: skip
        return ExperimentJob(
            org=self.org.name,
            experiment=n,
            commit=req.commit,
            train_py=self.repo.read_train_py(req.commit),
            time_budget=trainer.timeBudgetSeconds,
            startup_seconds=trainer.startup_seconds,
            profile=trainer.profile,
            seed=req.seed,
            run=req.run,
            test_if_val_below=self._test_threshold(state, req),
        )

    def _test_threshold(self, state: OrgState, req: RunRequest) -> float:
        """Below which val_bpb the harness also scores the held-out test split: for a screening
        run, the score that would beat the best at its launch (the best only falls, so every
        candidate kept later was scored on test); for every other run, always, so the test_bpb
        of the best is a mean over its runs like its val_bpb."""
        best = state.ledger.best_val_bpb
        if req.role is not Role.SCREEN or best is None:
            return math.inf
        return best - self.rule.min_improvement

    def _train(self, cand: Candidate, req: RunRequest, job: ExperimentJob) -> RunRecord:
        """Runs in a trainer thread; what it means is decided in the loop's thread."""
        org, n = self.org.name, cand.experiment
        if req.role in (Role.SCREEN, Role.BASELINE):
            what = cand.description if req.run == 0 else f"{cand.description} (run {req.run})"
            self.observer.phase(org, n, "training", what)
        else:
            self.observer.phase(org, n, "verifying", f"run {req.run}: {req.role.value} "
                                f"{req.commit[:7]} seed {req.seed}")  # fmt: skip
        started = time.time()
        # Progress costs the executor a log read per poll on a cluster: only for an observer
        # that shows it (`wants_progress`, default true).
        wanted = getattr(self.observer, "wants_progress", True)
        result = self.executor.run(
            job, (lambda p: self.observer.progress(org, p)) if wanted else None
        )
        return RunRecord(n, req.run, req.role, req.commit, req.seed, result, started, time.time())

    def _run_finished(self, state: OrgState, run: RunRecord) -> None:
        if run.experiment == 0 and run.val_bpb is None:
            raise BaselineFailed(run)  # not journaled: after the fix the baseline runs again
        self.journal.append_run(run)
        decided = next((r for r in state.records if r.experiment == run.experiment), None)
        if decided is not None:  # a run that finished after its experiment was decided
            decided.runs.append(run)
        else:
            state.open_runs.append(run)
        self.observer.run_recorded(self.org.name, run)

    def _settle(self, state: OrgState) -> None:
        """Decide every open experiment that needs no more runs (oldest first: a keep moves the
        best, which the next ones are then judged against)."""
        ledger = state.ledger
        for n in sorted(state.open):
            verdict = self._verdict(state, n, ledger)
            if verdict.outcome is None:
                continue
            cand = state.open.pop(n)
            runs = ledger.runs_of(n)
            state.open_runs = [r for r in state.open_runs if r.experiment != n]
            screen = next((r for r in runs if r.run == 0), None)
            keep = verdict.outcome is Outcome.KEEP
            crashed = verdict.outcome is Outcome.CRASH
            rec = ExperimentRecord(
                experiment=n,
                description=cand.description,
                outcome=verdict.outcome,
                commit=cand.commit,
                parent=cand.parent,
                reason=verdict.reason if crashed else None,
                detail=verdict.detail,
                val_bpb=verdict.val_bpb,
                result=screen.result if screen else None,
                usage=cand.usage,
                proposer="baseline" if n == 0 else self.proposer.name,
                started_at=cand.started_at,
                finished_at=time.time(),
                p_value=verdict.p_value,
                runs=runs,
            )
            rec.best_val_bpb = rec.val_bpb if keep else ledger.best_val_bpb
            self._record(state, rec)
            ledger = state.ledger  # a keep moved the best the next ones are judged against

    def _candidate(
        self,
        state: OrgState,
        n: int,
        prefetched: _Pending | None,
    ) -> Candidate | ExperimentRecord:
        org = self.org.name
        assert state.best_commit is not None
        existing = self.repo.tried(org, n)
        if existing is not None:  # committed before a kill, never recorded: run it as it is
            self.observer.phase(org, n, "resuming", existing[:7])
            parents = self.repo.repo.commit(existing).parents
            parent = parents[0].hexsha if parents else existing
            return Candidate(n, existing, parent, self.repo.message(existing), TokenUsage())
        if n == 0:
            base = state.best_commit
            commit = self.repo.commit_candidate(
                org, 0, base, self.repo.read_train_py(base), BASELINE_MESSAGE
            )
            return Candidate(0, commit, base, BASELINE_MESSAGE, TokenUsage())
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
                attempt=attempt_excerpt(proposal.attempt),
            )
        train_py = proposal.train_py
        if parent != state.best_commit:  # the best moved while this was being proposed
            merged = self.repo.merge_onto(parent, train_py, state.best_commit)
            if merged is not None:
                train_py, parent = merged, state.best_commit
        commit = self.repo.commit_candidate(org, n, parent, train_py, proposal.description)
        return Candidate(n, commit, parent, proposal.description, proposal.usage)

    def _record(self, state: OrgState, rec: ExperimentRecord) -> None:
        """Journal first (fsynced), then move the branch: a kill in between is repaired by reconcile."""
        rec.decision = len(state.records)
        pricing = self.org.spec.proposer.pricing
        if pricing is not None and rec.cost_usd is None:
            rec.cost_usd = pricing.cost(rec.usage.prompt_tokens, rec.usage.completion_tokens)
        self.journal.append(rec)
        state.records.append(rec)
        if rec.outcome is Outcome.KEEP and rec.commit:
            self.repo.advance(self.org.branch, rec.commit)
            state.best_commit = rec.commit
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
        self.observer.pushed(self.org.name, experiment, error or None)
