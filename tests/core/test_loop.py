"""The loop's bookkeeping: decisions, refs, branch, journal and resume agree.

The executor here is scripted (val_bpb read from the candidate's first line) so that each
outcome is chosen by the test; tests/integration trains real models through the real harness.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from autoresearch_operator.core.gitrepo import OrgRepo
from autoresearch_operator.core.interfaces import QuietObserver
from autoresearch_operator.core.journal import Journal
from autoresearch_operator.core.loop import (
    BaselineFailed,
    OrgState,
    ResearchLoop,
    budget_exhausted,
    reconcile,
)
from autoresearch_operator.core.records import (
    ExperimentRecord,
    Outcome,
    Proposal,
    ProposalContext,
    ProposalRejected,
    TokenUsage,
    TrainResult,
)
from autoresearch_operator.executor import ExperimentJob
from autoresearch_operator.spec import OrgSpecError, org_from_resource

BASELINE = "SCORE = 2.0\n"


class ScriptedProposer:
    """Proposes the scores in `script` in order; 'garbage' is a rejected proposal, 'bug' an
    exception no proposer should raise (CPython's parser once raised SystemError in threads)."""

    name = "scripted"

    def __init__(self, script: list[float | str]):
        self.script = list(script)
        self.contexts: list[ProposalContext] = []

    def propose(self, ctx: ProposalContext) -> Proposal:
        self.contexts.append(ctx)
        item = self.script[ctx.experiment - 1]
        if item == "garbage":
            raise ProposalRejected("reply had no SEARCH/REPLACE block", TokenUsage(7, 3))
        if item == "bug":
            raise SystemError("AST constructor recursion depth mismatch")
        return Proposal(f"try {item}", f"SCORE = {item}\n", TokenUsage(100, 20))


class ScriptedExecutor:
    """Returns SCORE from the candidate as val_bpb; a negative score is a NaN crash. Like the
    harness, it scores the test split (SCORE + 0.01) only when val_bpb is below the job's
    test_if_val_below."""

    def __init__(self, interrupt_at: int | None = None):
        self.ran: list[int] = []
        self.jobs: dict[int, ExperimentJob] = {}
        self.interrupt_at = interrupt_at

    slots = 8  # the org's parallelism decides

    def cancel(self) -> None:
        pass

    def run(self, job: ExperimentJob, on_progress=None) -> TrainResult:
        if job.experiment == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt  # the user hits Ctrl-C mid-training
        self.ran.append(job.experiment)
        self.jobs[job.experiment] = job
        score = float(job.train_py.split("=")[1])
        if score < 0:
            return TrainResult(
                status="crash", reason="nan", detail="loss is NaN at step 3", total_seconds=3.0
            )
        asked = job.test_if_val_below is not None and score < job.test_if_val_below
        return TrainResult(
            status="ok", val_bpb=score, test_bpb=score + 0.01 if asked else None,
            training_seconds=5.0, total_seconds=6.0,
        )  # fmt: skip


ONE_RUN_RULE = {"noiseRuns": 1, "confirmRuns": 0, "screenSigmas": 0}


def make_org(max_experiments: int, min_improvement: float = 0.0):
    """The one-run rule, so that each outcome here is the script's; tests/core/
    test_confirmation.py covers noise runs and confirmations."""
    return org_from_resource({
        "metadata": {"name": "demo"},
        "spec": {"program": "minimise SCORE", "budget": {"maxExperiments": max_experiments},
                 "keepPolicy": {"minImprovement": min_improvement, **ONE_RUN_RULE}},
    })  # fmt: skip


def make_loop(tmp_path: Path, org, proposer, executor):
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASELINE)
    journal = Journal(tmp_path / "orgs" / org.name)
    return ResearchLoop(org, repo, journal, executor, proposer), repo, journal


def test_outcomes_refs_branch_and_journal_agree(tmp_path: Path):
    org = make_org(5, min_improvement=0.05)  # the rejected proposal is no experiment
    proposer = ScriptedProposer([1.5, 1.7, "garbage", -1, 1.47])
    loop, repo, journal = make_loop(tmp_path, org, proposer, ScriptedExecutor())
    state = loop.run()

    recs = journal.load()
    assert [(r.experiment, r.outcome, r.reason) for r in recs] == [
        (0, Outcome.KEEP, None),  # baseline, always kept
        (1, Outcome.KEEP, None),  # 1.5 < 2.0 - 0.05
        (2, Outcome.DISCARD, None),
        (3, Outcome.CRASH, "invalid-proposal"),  # never reached training
        (4, Outcome.CRASH, "nan"),
        (5, Outcome.DISCARD, None),  # 1.47 is better, but not by minImprovement
    ]
    assert recs[0].description == "baseline: unmodified train.py"
    assert state.best_val_bpb == 1.5 and state.best_commit == recs[1].commit
    assert repo.branch_head(org.branch) == recs[1].commit
    tried = repo.tried_experiments("demo")
    assert sorted(tried) == [0, 1, 2, 4, 5]  # every trained candidate stays reachable
    assert repo.read_train_py(tried[2]) == "SCORE = 1.7\n"
    assert repo.message(tried[5]) == "try 1.47"
    assert sum(r.usage.total for r in recs) == 4 * 120 + 10
    # experiment 5 was proposed while 4 trained (prefetch), so it saw 0-3, the rejection included
    assert proposer.contexts[-1].experiment == 5
    assert [r.experiment for r in proposer.contexts[-1].history] == [0, 1, 2, 3]
    assert journal.tsv.read_text().count("\n") == 7


def test_the_test_split_is_scored_for_the_baseline_and_every_candidate_that_could_be_kept(
    tmp_path: Path,
):
    org = make_org(5, min_improvement=0.05)
    executor = ScriptedExecutor()
    loop, _, journal = make_loop(
        tmp_path, org, ScriptedProposer([1.5, 1.7, "garbage", -1, 1.47]), executor
    )
    loop.run()
    # the baseline always; a candidate below the best at its launch minus minImprovement
    thresholds = {n: job.test_if_val_below for n, job in executor.jobs.items()}
    assert thresholds == {0: math.inf, 1: 2.0 - 0.05, 2: 1.5 - 0.05, 4: 1.45, 5: 1.45}
    assert {n: job.seed for n, job in executor.jobs.items()} == {n: 1000 * n for n in thresholds}
    recs = journal.load()
    assert [r.result.test_bpb for r in recs if r.outcome is Outcome.KEEP] == [2.01, 1.51]
    assert all(r.result.test_bpb is None for r in recs if r.outcome is Outcome.DISCARD)
    # the JSONL carries it, so status, compare and the plot can show it
    assert '"test_bpb": 2.01' in (journal.directory / "experiments.jsonl").read_text()


def test_gpu_time_charges_every_run_and_running_ones_count_their_whole_window(tmp_path: Path):
    org = make_org(10)
    crash = TrainResult(
        status="crash", reason="timeout", training_seconds=470.0, total_seconds=480.0
    )
    killed = TrainResult(status="crash", reason="infrastructure", training_seconds=30.0)
    records = [
        ExperimentRecord(experiment=0, description="b", outcome=Outcome.CRASH, result=crash),
        ExperimentRecord(experiment=1, description="c", outcome=Outcome.CRASH, result=killed),
    ]
    assert OrgState(records=records).gpu_seconds == 480.0 + 30.0
    window = org.spec.trainer.window_seconds
    assert window == 120 + 300 + 20
    hours = (510.0 + window - 1) / 3600  # one running experiment's window does not fit
    capped = org.model_copy(update={"spec": org.spec.model_copy(
        update={"budget": org.spec.budget.model_copy(update={"maxGPUHours": hours})})})  # fmt: skip
    assert budget_exhausted(capped, OrgState(records=records)) is None
    assert "budget.maxGPUHours" in (budget_exhausted(capped, OrgState(records, running={2})) or "")


def test_resume_after_interrupt_reruns_the_committed_candidate_without_reproposing(tmp_path: Path):
    org = make_org(5)
    proposer = ScriptedProposer([1.9, 1.8, 1.7, 1.6])
    executor = ScriptedExecutor(interrupt_at=2)
    loop, repo, journal = make_loop(tmp_path, org, proposer, executor)
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    assert [r.experiment for r in journal.load()] == [0, 1]
    assert repo.tried("demo", 2) is not None  # committed before the interrupt
    asked = [c.experiment for c in proposer.contexts]

    loop2, _, _ = make_loop(tmp_path, org, proposer, executor)
    loop2.run()
    recs = journal.load()
    assert [r.experiment for r in recs] == [0, 1, 2, 3, 4]
    assert executor.ran == [0, 1, 2, 3, 4]  # each trained exactly once
    assert [c.experiment for c in proposer.contexts].count(2) == asked.count(2) == 1
    assert repo.branch_head(org.branch) == recs[-1].commit
    assert recs[-1].val_bpb == 1.6


def test_reconcile_moves_a_branch_left_behind_by_a_kill(tmp_path: Path):
    org = make_org(3)
    loop, repo, journal = make_loop(tmp_path, org, ScriptedProposer([1.5, 1.4]), ScriptedExecutor())
    loop.run()
    best = journal.load()[-1].commit
    baseline = repo.resolve("refs/heads/baseline")
    repo.advance(org.branch, baseline)  # as if killed between the journal write and the ref update
    state = reconcile(org, repo, journal)
    assert repo.branch_head(org.branch) == best == state.best_commit


def test_a_finished_org_does_nothing_more(tmp_path: Path):
    org = make_org(2)
    executor = ScriptedExecutor()
    loop, _, journal = make_loop(tmp_path, org, ScriptedProposer([1.0]), executor)
    loop.run()
    loop2, _, _ = make_loop(tmp_path, org, ScriptedProposer([]), executor)
    loop2.run()
    assert executor.ran == [0, 1] and len(journal.load()) == 2


def budgeted_org(budget: dict, proposer: dict | None = None):
    return org_from_resource({
        "metadata": {"name": "demo"},
        "spec": {"program": "minimise SCORE", "budget": budget, "keepPolicy": ONE_RUN_RULE,
                 "proposer": proposer or {}},
    })  # fmt: skip


def test_a_rejected_proposal_is_no_experiment_and_max_proposals_stops_a_model_that_only_sends_garbage(
    tmp_path: Path,
):
    # rejected proposals train nothing, so they leave maxExperiments alone ...
    org = budgeted_org({"maxExperiments": 3})
    loop, repo, journal = make_loop(
        tmp_path / "a", org, ScriptedProposer(["garbage", 1.9, "garbage", 1.8]), ScriptedExecutor()
    )
    state = loop.run()
    assert [(r.experiment, r.rejected) for r in journal.load()] == [
        (0, False), (1, True), (2, False), (3, True), (4, False),
    ]  # fmt: skip
    assert state.ledger.counts["total"] == 3 and state.ledger.counts["rejected"] == 2
    assert sorted(repo.tried_experiments("demo")) == [0, 2, 4]
    # ... and a model that never sends a usable reply stops at 3 x maxExperiments proposals
    org = budgeted_org({"maxExperiments": 2})
    loop, _, journal = make_loop(tmp_path / "b", org, ScriptedProposer(["garbage"] * 9),
                                 ScriptedExecutor())  # fmt: skip
    state = loop.run()
    assert len(journal.load()) == 6 and state.ledger.counts["total"] == 1
    assert budget_exhausted(org, state) == (
        "made 6 proposals, 5 rejected (budget.maxProposals, 3 x maxExperiments)"
    )
    org = budgeted_org({"maxExperiments": 2, "maxProposals": 3})
    loop, _, journal = make_loop(tmp_path / "c", org, ScriptedProposer(["garbage"] * 9),
                                 ScriptedExecutor())  # fmt: skip
    state = loop.run()
    assert len(journal.load()) == 3
    assert budget_exhausted(org, state) == "made 3 proposals, 2 rejected (budget.maxProposals)"


def test_a_proposer_that_raises_rejects_that_proposal_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    org = budgeted_org({"maxExperiments": 3})
    loop, _, journal = make_loop(
        tmp_path, org, ScriptedProposer([1.9, "bug", 1.8]), ScriptedExecutor()
    )
    state = loop.run()
    recs = journal.load()
    assert [(r.experiment, r.rejected) for r in recs] == [
        (0, False),
        (1, False),
        (2, True),
        (3, False),
    ]
    assert recs[2].reason == "invalid-proposal"
    assert recs[2].detail == (
        "the scripted proposer failed: SystemError: AST constructor recursion depth mismatch"
    )
    assert state.best_val_bpb == 1.8 and state.ledger.counts["total"] == 3
    assert "the scripted proposer failed" in caplog.text  # with its traceback, for the operator


def test_pricing_turns_tokens_into_dollars_per_experiment_and_max_llm_cost_stops_the_org(
    tmp_path: Path,
):
    # every scripted proposal uses 100 prompt and 20 completion tokens, a rejected one 7 + 3
    pricing = {"inputPerMillion": 1000.0, "outputPerMillion": 5000.0}
    org = budgeted_org({"maxExperiments": 10, "maxLLMCostUSD": 0.5}, {"pricing": pricing})
    loop, _, journal = make_loop(
        tmp_path, org, ScriptedProposer([1.9, "garbage", 1.8, 1.7, 1.6]), ScriptedExecutor()
    )
    state = loop.run()
    recs = journal.load()
    assert [r.cost_usd for r in recs] == pytest.approx([0.0, 0.2, 0.022, 0.2, 0.2])
    assert state.ledger.llm_cost_usd == pytest.approx(0.622)
    assert budget_exhausted(org, state) == "the proposer cost $0.62 (budget.maxLLMCostUSD)"
    assert '"cost_usd": 0.2' in (journal.directory / "experiments.jsonl").read_text()
    # no price, no cost: None, not a misleading $0
    loop, _, journal = make_loop(tmp_path / "free", make_org(2), ScriptedProposer([1.9]),
                                 ScriptedExecutor())  # fmt: skip
    assert loop.run().ledger.llm_cost_usd is None


def test_a_cost_cap_without_a_price_is_an_error_naming_both_fields():
    with pytest.raises(OrgSpecError, match=r"maxLLMCostUSD needs spec\.proposer\.pricing"):
        budgeted_org({"maxLLMCostUSD": 5})


class SlowExecutor(ScriptedExecutor):
    """Sleeps so that later experiments finish first; records how many ran at once."""

    def __init__(self):
        super().__init__()
        import threading

        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def run(self, job: ExperimentJob, on_progress=None) -> TrainResult:
        import time

        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.05 * (5 - job.experiment % 5))
            return super().run(job, on_progress)
        finally:
            with self.lock:
                self.active -= 1


def test_parallel_experiments_respect_parallelism_and_budget(tmp_path: Path):
    org = make_org(8)
    org = org.model_copy(update={"spec": org.spec.model_copy(update={"parallelism": 3})})
    executor = SlowExecutor()
    loop, repo, journal = make_loop(
        tmp_path, org, ScriptedProposer([1.9 - i / 100 for i in range(7)]), executor
    )
    state = loop.run()
    recs = journal.load()
    assert sorted(r.experiment for r in recs) == list(range(8))
    assert sorted(executor.ran) == list(range(8))
    assert executor.peak == 3
    assert state.running == set()
    assert repo.branch_head(org.branch) == state.best_commit
    assert state.best_val_bpb == min(r.val_bpb for r in recs if r.val_bpb is not None)
    # whatever order they finished in, every kept experiment was scored on the test split
    assert all(r.result.test_bpb is not None for r in recs if r.outcome is Outcome.KEEP)


def test_resume_reruns_every_unrecorded_commit_even_when_a_later_one_was_recorded(tmp_path: Path):
    org = make_org(3)
    executor = ScriptedExecutor()
    loop, repo, journal = make_loop(tmp_path, org, ScriptedProposer([1.9, 1.8]), executor)
    loop.run()
    # as if two experiments ran in parallel, 4 finished and was recorded, then the process died
    head = repo.branch_head(org.branch)
    repo.commit_candidate("demo", 3, head, "SCORE = 1.7\n", "three")
    c4 = repo.commit_candidate("demo", 4, head, "SCORE = 1.75\n", "four")
    journal.append(ExperimentRecord(experiment=4, description="four", outcome=Outcome.DISCARD,
                                    commit=c4, val_bpb=1.75, result=TrainResult("ok", val_bpb=1.75)))  # fmt: skip
    proposer = ScriptedProposer([0, 0, 0, 0, 0, 1.6])
    loop6, _, _ = make_loop(tmp_path, make_org(6), proposer, executor)
    loop6.run()
    assert [r.experiment for r in journal.load()] == [0, 1, 2, 3, 4, 5]
    assert executor.ran == [0, 1, 2, 3, 5]  # 3 re-run from its commit, 4 never again
    assert [c.experiment for c in proposer.contexts] == [5]  # only 5 needed a proposal
    assert journal.load()[3].description == "three"


def test_a_crashing_baseline_stops_the_org_unrecorded_and_is_retried_next_run(tmp_path: Path):
    org = make_org(3)
    loop, repo, journal = make_loop(tmp_path, org, ScriptedProposer([1.5, 1.4]), ScriptedExecutor())
    repo.commit_candidate("demo", 0, repo.ensure_branch(org.branch), "SCORE = -1\n", "broken env")
    with pytest.raises(BaselineFailed, match="baseline .* crashed: nan: loss is NaN"):
        loop.run()
    assert journal.load() == []  # nothing recorded, nothing proposed
    repo.repo.git.update_ref("-d", repo.tried_ref("demo", 0))  # "fix the environment"
    loop2, _, _ = make_loop(tmp_path, org, ScriptedProposer([1.5, 1.4]), ScriptedExecutor())
    loop2.run()
    assert [r.outcome for r in journal.load()] == [Outcome.KEEP, Outcome.KEEP, Outcome.KEEP]


def test_the_best_is_the_latest_keep_in_decision_order_not_in_experiment_order(
    tmp_path: Path,
):
    org = make_org(3)
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASELINE)
    journal = Journal(tmp_path / "orgs" / "demo")
    head = repo.ensure_branch(org.branch)
    commits = {
        n: repo.commit_candidate("demo", n, head, f"SCORE = {n}\n", str(n)) for n in range(3)
    }
    # experiment 2 finished first (1.5 < 2.0), then 1 (1.4 < 1.5): both kept, 1 is the best
    for n, bpb in ((0, 2.0), (2, 1.5), (1, 1.4)):
        journal.append(ExperimentRecord(experiment=n, description=str(n), outcome=Outcome.KEEP,
                                        commit=commits[n], val_bpb=bpb))  # fmt: skip
    state = reconcile(org, repo, journal)
    assert (state.best_commit, state.best_val_bpb) == (commits[1], 1.4)
    assert repo.branch_head(org.branch) == commits[1]


class PushWatcher(QuietObserver):
    def __init__(self):
        self.pushes: list[tuple[int, str | None]] = []

    def pushed(self, org, experiment, error):
        self.pushes.append((experiment, error))


def test_branch_and_tried_refs_are_pushed_after_every_decision(tmp_path: Path):
    import git

    remote = git.Repo.init(tmp_path / "remote.git", bare=True)
    org = org_from_resource({
        "metadata": {"name": "demo"},
        "spec": {"program": "x", "budget": {"maxExperiments": 3}, "repo": {"url": str(tmp_path / "remote.git")}},
    })  # fmt: skip
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASELINE)
    watcher = PushWatcher()
    loop = ResearchLoop(
        org,
        repo,
        Journal(tmp_path / "j"),
        ScriptedExecutor(),
        ScriptedProposer([1.5, 1.9]),
        watcher,
    )
    state = loop.run()
    assert watcher.pushes == [(0, None), (1, None), (2, None)]
    assert remote.git.rev_parse("refs/heads/autoresearch/demo") == state.best_commit
    refs = remote.git.for_each_ref("--format=%(refname)", "refs/autoresearch/demo/").split()
    assert refs == [f"refs/autoresearch/demo/tried/{n}" for n in range(3)]


def test_a_failing_push_is_reported_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import autoresearch_operator.core.loop as loop_module

    monkeypatch.setattr(loop_module, "PUSH_BACKOFF_SECONDS", 0.0)
    org = org_from_resource({
        "metadata": {"name": "demo"},
        "spec": {"program": "x", "budget": {"maxExperiments": 2}, "repo": {"url": str(tmp_path / "missing.git")}},
    })  # fmt: skip
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASELINE)
    watcher = PushWatcher()
    journal = Journal(tmp_path / "j")
    ResearchLoop(org, repo, journal, ScriptedExecutor(), ScriptedProposer([1.5]), watcher).run()
    assert [n for n, _ in watcher.pushes] == [0, 1]
    assert all(error and "missing.git" in error for _, error in watcher.pushes)
    assert [r.outcome for r in journal.load()] == [Outcome.KEEP, Outcome.KEEP]
    assert repo.branch_head(org.branch) == journal.load()[-1].commit
