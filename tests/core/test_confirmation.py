"""The loop with noise runs and confirmations: what it schedules, what it journals, and that a
resume in the middle of a confirmation trains each missing run once and no run twice.

The executor is scripted: val_bpb is the candidate's SCORE plus a deterministic function of the
harness seed (±0.01), so identical code scores differently run to run as real training does;
tests/integration runs the same loop with real training.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_loop import BASELINE, ScriptedProposer

from autoresearch_operator.core.gitrepo import OrgRepo
from autoresearch_operator.core.journal import Journal
from autoresearch_operator.core.ledger import Ledger
from autoresearch_operator.core.loop import ResearchLoop
from autoresearch_operator.core.records import Outcome, Role, TrainResult
from autoresearch_operator.executor import ExperimentJob
from autoresearch_operator.spec import org_from_resource


def noise(seed: int) -> float:
    return ((seed * 2654435761) % 1000 / 1000 - 0.5) * 0.02


class NoisyExecutor:
    def __init__(self, interrupt_at: tuple[int, int] | None = None, delay: float = 0.0):
        self.ran: list[tuple[int, int]] = []
        self.jobs: dict[tuple[int, int], ExperimentJob] = {}
        self.interrupt_at, self.delay = interrupt_at, delay
        self.lock = threading.Lock()
        self.active: set[tuple[int, int]] = set()
        self.together: list[set[tuple[int, int]]] = []

    slots = 8  # the org's parallelism decides

    def cancel(self) -> None:
        pass

    def run(self, job: ExperimentJob, on_progress=None) -> TrainResult:
        key = (job.experiment, job.run)
        if key == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt  # Ctrl-C while this run trains
        with self.lock:
            self.ran.append(key)
            self.jobs[key] = job
            self.active.add(key)
            self.together.append(set(self.active))
        time.sleep(self.delay)
        with self.lock:
            self.active.discard(key)
        score = float(job.train_py.split("=")[1]) + noise(job.seed)
        tested = job.test_if_val_below is not None and score < job.test_if_val_below
        return TrainResult(status="ok", val_bpb=score, test_bpb=score + 0.1 if tested else None,
                           training_seconds=5.0, total_seconds=6.0, seed=job.seed)  # fmt: skip


def make_org(max_experiments: int, parallelism: int = 1, **policy):
    return org_from_resource({
        "metadata": {"name": "demo"},
        "spec": {"program": "minimise SCORE", "parallelism": parallelism,
                 "budget": {"maxExperiments": max_experiments}, "keepPolicy": policy},
    })  # fmt: skip


def run_loop(tmp_path: Path, org, proposer, executor) -> tuple[Journal, OrgRepo]:
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASELINE)
    journal = Journal(tmp_path / "orgs" / org.name)
    ResearchLoop(org, repo, journal, executor, proposer).run()
    return journal, repo


def test_noise_runs_then_screen_then_confirm_with_paired_champion_re_runs(tmp_path: Path):
    executor = NoisyExecutor()
    # 1: a real gain; 2: slightly worse; 3: a real gain over the new best
    journal, repo = run_loop(tmp_path, make_org(4), ScriptedProposer([1.5, 1.52, 1.2]), executor)
    recs = journal.load()
    assert [(r.experiment, r.outcome) for r in recs] == [
        (0, Outcome.KEEP), (1, Outcome.KEEP), (2, Outcome.DISCARD), (3, Outcome.KEEP),
    ]  # fmt: skip
    assert [(r.run, r.role) for r in recs[0].runs] == [(k, Role.BASELINE) for k in range(3)]
    assert [(r.run, r.role, r.commit) for r in recs[1].runs] == [
        (0, Role.SCREEN, recs[1].commit),
        (1, Role.CONFIRM, recs[1].commit),
        (2, Role.CONFIRM, recs[1].commit),
        (3, Role.CHAMPION, recs[0].commit),
        (4, Role.CHAMPION, recs[0].commit),
    ]
    # the seeds pair each confirmation run with a champion re-run
    assert [r.seed for r in recs[1].runs] == [1000, 1001, 1002, 1001, 1002]
    assert recs[1].p_value is not None and recs[1].p_value < 0.05
    assert "screening run" in recs[2].detail and "not promising" in recs[2].detail
    assert len(recs[2].runs) == 1  # discarded at once: one run
    # every run was trained once, in the order pairs sit side by side
    assert len(executor.ran) == len(set(executor.ran)) == 3 + 5 + 1 + 5
    assert executor.ran[3:8] == [(1, 0), (1, 1), (1, 3), (1, 2), (1, 4)]
    ledger = Ledger(recs)
    assert ledger.best_commit == recs[3].commit == repo.branch_head("autoresearch/demo")
    # the best is a mean over its confirmation runs and the later re-runs of it
    best_runs = [r.val_bpb for r in ledger.runs if r.commit == recs[3].commit and r.run != 0]
    assert ledger.best.n == 2 and ledger.best.mean == pytest.approx(sum(best_runs) / 2)
    # pooled by commit: baseline 3 + 2 re-runs, #1 2 + 2 re-runs, #3 2 (screens left out)
    assert ledger.noise.df == (5 - 1) + (4 - 1) + (2 - 1) and ledger.noise.runs == 11
    assert ledger.verification_gpu_seconds == 8 * 6.0 and ledger.gpu_seconds == 14 * 6.0
    # every non-screening run scores the test split, so the best's test_bpb is a mean too
    assert all(j.test_if_val_below == float("inf") for k, j in executor.jobs.items() if k[1])
    assert ledger.best.test_mean is not None
    # results.tsv keeps the reference's columns, one row per experiment
    assert journal.tsv.read_text().count("\n") == 1 + 4


def test_a_resume_in_the_middle_of_a_confirmation_trains_only_the_missing_runs(tmp_path: Path):
    org = make_org(3)
    proposer = ScriptedProposer([1.5, 1.4])
    executor = NoisyExecutor(interrupt_at=(1, 2))  # after run 1 (confirm) and 3 (champion)
    with pytest.raises(KeyboardInterrupt):
        run_loop(tmp_path, org, proposer, executor)
    records, open_runs = Journal(tmp_path / "orgs" / "demo").read()
    assert [r.experiment for r in records] == [0]
    assert [r.key for r in open_runs] == [(1, 0), (1, 1), (1, 3)]
    asked = len(proposer.contexts)

    journal, _ = run_loop(tmp_path, org, proposer, executor)
    recs = journal.load()
    assert [(r.experiment, r.outcome) for r in recs] == [
        (0, Outcome.KEEP), (1, Outcome.KEEP), (2, Outcome.KEEP),
    ]  # fmt: skip
    assert sorted(r.run for r in recs[1].runs) == [0, 1, 2, 3, 4]
    assert len(executor.ran) == len(set(executor.ran))  # no run trained twice
    assert executor.ran.index((1, 2)) == 6  # resumed where it stopped: runs 2 and 4 only
    assert executor.ran[6:8] == [(1, 2), (1, 4)]
    assert proposer.contexts[asked:][0].experiment == 2  # experiment 1 was never re-proposed


def test_parallel_slots_run_each_confirmation_beside_its_champion_re_run(tmp_path: Path):
    executor = NoisyExecutor(delay=0.05)
    org = make_org(2, parallelism=2, noiseRuns=2, confirmRuns=2)
    journal, _ = run_loop(tmp_path, org, ScriptedProposer([1.5]), executor)
    recs = journal.load()
    assert recs[1].outcome is Outcome.KEEP and len(recs[1].runs) == 5
    assert {(1, 1), (1, 3)} in executor.together and {(1, 2), (1, 4)} in executor.together


def test_screen_false_confirms_every_candidate_and_confirm_zero_is_the_one_run_rule(
    tmp_path: Path,
):
    executor = NoisyExecutor()
    org = make_org(2, noiseRuns=2, confirmRuns=1, screen=False)
    journal, _ = run_loop(tmp_path / "a", org, ScriptedProposer([2.5]), executor)
    worse = journal.load()[1]
    assert worse.outcome is Outcome.DISCARD and len(worse.runs) == 3 and worse.p_value > 0.5

    org = make_org(2, noiseRuns=1, confirmRuns=0, screenSigmas=0)
    journal, _ = run_loop(tmp_path / "b", org, ScriptedProposer([1.9]), NoisyExecutor())
    assert [len(r.runs) for r in journal.load()] == [1, 1]
