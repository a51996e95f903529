"""An org's ledger: its runs and decided experiments in; the best, the baseline, the noise floor,
the counts and the GPU time out.

The one place these are computed. The loop, the ResearchOrg status, `compare`, the metrics and
the plot all ask a Ledger, so they cannot disagree on what "best" or "baseline" means:

- the **best** is the commit of the latest keep (in the order experiments were decided), and its
  score is the mean over its measurement runs, never the minimum of one lucky run;
- a commit's **measurement runs** are its runs other than the screening run (the baseline's
  noise runs, a candidate's confirmation runs, the champion re-runs of it): the screening run was
  selected for being low, so it would bias the mean. A commit with no other run falls back to it
  (confirmRuns 0, or a journal from before runs existed);
- the **noise floor** sigma is the pooled standard deviation of val_bpb between measurement runs
  of the same commit, over every commit with two or more of them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from .records import ExperimentRecord, Outcome, Role, RunRecord


@dataclass(frozen=True)
class Estimate:
    """A commit's val_bpb over its measurement runs."""

    mean: float
    n: int
    sd: float | None  # the sample standard deviation of these runs; None for one run
    test_mean: float | None = None  # over those of the runs that were scored on the test split


@dataclass(frozen=True)
class Noise:
    """The org's noise floor: pooled sigma of val_bpb between runs of the same code."""

    sigma: float | None  # None until some commit has two measurement runs
    df: int  # degrees of freedom of the pooled estimate (runs minus groups)
    runs: int  # the measurement runs it is pooled from


def measurement_runs(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """Scored runs other than screening runs; the screening runs when there are no others."""
    scored = [r for r in runs if r.val_bpb is not None]
    measured = [r for r in scored if r.role is not Role.SCREEN]
    return measured or scored


def estimate(runs: Iterable[RunRecord]) -> Estimate | None:
    measured = measurement_runs(runs)
    if not measured:
        return None
    values = [r.val_bpb for r in measured if r.val_bpb is not None]
    tests = [r.result.test_bpb for r in measured if r.result.test_bpb is not None]
    return Estimate(
        mean=statistics.fmean(values),
        n=len(values),
        sd=statistics.stdev(values) if len(values) > 1 else None,
        test_mean=statistics.fmean(tests) if tests else None,
    )


def pooled_noise(runs: Iterable[RunRecord]) -> Noise:
    by_commit: dict[str, list[float]] = {}
    for r in runs:
        if r.val_bpb is not None and r.role is not Role.SCREEN:
            by_commit.setdefault(r.commit, []).append(r.val_bpb)
    squares, df, n = 0.0, 0, 0
    for values in by_commit.values():
        if len(values) > 1:
            mean = statistics.fmean(values)
            squares += sum((v - mean) ** 2 for v in values)
            df += len(values) - 1
            n += len(values)
    return Noise(sigma=math.sqrt(squares / df) if df else None, df=df, runs=n)


class Ledger:
    """Read-only view of an org's journal: `records` decided, `open_runs` of experiments still
    being confirmed (journaled, not decided)."""

    def __init__(self, records: Sequence[ExperimentRecord], open_runs: Sequence[RunRecord] = ()):
        self.records = sorted(records, key=lambda r: r.experiment)
        decided = {r.experiment for r in self.records}
        self.open_runs = [r for r in open_runs if r.experiment not in decided]
        self.runs = [run for rec in self.records for run in runs_of_record(rec)] + self.open_runs

    # -- the best and the baseline -----------------------------------------------------------

    @cached_property
    def best_record(self) -> ExperimentRecord | None:
        """The latest keep in decision order (journals from before `decision` existed: by
        experiment number, the order they were written in with one experiment at a time)."""
        kept = [r for r in self.records if r.outcome is Outcome.KEEP and r.commit]
        return max(kept, key=lambda r: (r.decision is not None, r.decision or 0, r.experiment),
                   default=None)  # fmt: skip

    @property
    def best_commit(self) -> str | None:
        return self.best_record.commit if self.best_record else None

    @cached_property
    def best(self) -> Estimate | None:
        """The best's val_bpb: the mean over its measurement runs, re-runs included."""
        if self.best_record is None:
            return None
        return self.estimate(self.best_record.commit) or _legacy(self.best_record)

    @property
    def best_val_bpb(self) -> float | None:
        return self.best.mean if self.best else None

    @cached_property
    def baseline_record(self) -> ExperimentRecord | None:
        return next(
            (r for r in self.records if r.experiment == 0 and r.outcome is not Outcome.CRASH),
            None,
        )

    @cached_property
    def baseline(self) -> Estimate | None:
        """The unmodified train.py over its noise runs (re-runs of it as champion included)."""
        rec = self.baseline_record
        if rec is None:
            return None
        return (self.estimate(rec.commit) if rec.commit else None) or _legacy(rec)

    def estimate(self, commit: str | None) -> Estimate | None:
        return estimate(r for r in self.runs if r.commit == commit) if commit else None

    def runs_of(self, experiment: int) -> list[RunRecord]:
        return sorted((r for r in self.runs if r.experiment == experiment), key=lambda r: r.run)

    # -- noise, counts, cost -----------------------------------------------------------------

    @cached_property
    def noise(self) -> Noise:
        return pooled_noise(self.runs)

    @cached_property
    def counts(self) -> dict[str, int]:
        trained = [r for r in self.records if not r.rejected]
        by = {o: sum(1 for r in trained if r.outcome is o) for o in Outcome}
        return {
            "total": len(trained),
            "kept": by[Outcome.KEEP],
            "discarded": by[Outcome.DISCARD],
            "crashed": by[Outcome.CRASH],
            "rejected": len(self.records) - len(trained),
            "confirmed": sum(1 for r in self.records if _confirmed(r)),
            "runs": len(self.runs),
        }

    @cached_property
    def gpu_seconds(self) -> float:
        """What budget.maxGPUHours is charged: every run's harness wall time, crashes included."""
        return sum(r.result.gpu_seconds for r in self.runs)

    @cached_property
    def verification_gpu_seconds(self) -> float:
        """The part spent on confirmation runs and champion re-runs."""
        return sum(r.result.gpu_seconds for r in self.runs if r.role.verification)

    @cached_property
    def llm_tokens(self) -> int:
        return sum(r.usage.total for r in self.records)

    @cached_property
    def llm_cost_usd(self) -> float | None:
        """What the proposer cost at proposer.pricing; None when no record has a price."""
        costs = [r.cost_usd for r in self.records if r.cost_usd is not None]
        return sum(costs) if costs else None


def runs_of_record(rec: ExperimentRecord) -> list[RunRecord]:
    """Its runs; for a record from before runs existed, the one run its result describes."""
    if rec.runs or rec.result is None:
        return rec.runs
    role = Role.BASELINE if rec.experiment == 0 else Role.SCREEN
    commit = rec.commit or f"experiment-{rec.experiment}"
    return [RunRecord(rec.experiment, 0, role, commit, 0, rec.result, rec.started_at,
                      rec.finished_at)]  # fmt: skip


def _confirmed(rec: ExperimentRecord) -> bool:
    """The experiment went past screening (it had confirmation runs)."""
    return any(r.role is Role.CONFIRM for r in rec.runs)


def _legacy(rec: ExperimentRecord) -> Estimate | None:
    """A record without runs (a journal from before runs existed): its own val_bpb."""
    if rec.val_bpb is None:
        return None
    test = rec.result.test_bpb if rec.result else None
    return Estimate(mean=rec.val_bpb, n=1, sd=None, test_mean=test)
