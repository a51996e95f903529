"""Keep or discard: the one decision the research loop makes, as a pure function over plain data.

`decide` looks at an experiment's runs so far and either decides it or names the runs it needs
first; the loop only schedules what it asks for. The rule (README, "How a keep is decided"):

1. The baseline (experiment 0) runs `noiseRuns` times with different seeds; sigma starts there.
2. A candidate's **screening run** is promising when it beats the best (a mean over the best's
   runs) by more than max(minImprovement, screenSigmas x sigma); anything else is discarded at
   once, for the price of one run.
3. A promising candidate gets `confirmRuns` more runs (fresh seeds) and as many **champion
   re-runs** of the best, paired by seed and scheduled beside them. It is kept iff the re-runs'
   mean minus its confirmation runs' mean exceeds minImprovement at `alpha` (one-sided t-test
   with the org's pooled sigma and its degrees of freedom; scipy's t distribution). The
   screening run is left out of that test: it was picked for being low.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

from .ledger import Noise
from .records import CrashReason, Outcome, Role, RunRecord

SEED_STRIDE = 1000  # run K of experiment N trains with seed N * SEED_STRIDE + K


def run_seed(experiment: int, run: int) -> int:
    return experiment * SEED_STRIDE + run


@dataclass(frozen=True)
class Rule:
    """spec.keepPolicy as plain data."""

    min_improvement: float = 0.0
    noise_runs: int = 3
    confirm_runs: int = 2
    alpha: float = 0.05
    screen_sigmas: float = 1.0
    screen: bool = True

    @classmethod
    def from_spec(cls, policy: Any) -> Rule:
        return cls(
            min_improvement=policy.minImprovement,
            noise_runs=policy.noiseRuns,
            confirm_runs=policy.confirmRuns,
            alpha=policy.alpha,
            screen_sigmas=policy.screenSigmas,
            screen=policy.screen,
        )


@dataclass(frozen=True)
class RunRequest:
    run: int
    role: Role
    commit: str
    seed: int


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome | None  # None: train `requests` first, then ask again
    requests: tuple[RunRequest, ...] = ()
    reason: str | None = None  # the CrashReason of a crash
    detail: str = ""  # one sentence on why
    val_bpb: float | None = None  # the candidate's estimate: its confirmation mean, else screen
    p_value: float | None = None


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _crash(run: RunRecord, what: str) -> Verdict:
    result = run.result
    reason = result.reason or CrashReason.NAN.value
    detail = result.detail or f"val_bpb {result.val_bpb} is not a finite number"
    return Verdict(Outcome.CRASH, reason=reason, detail=f"{what} crashed: {detail}")


def _baseline(commit: str, runs: dict[int, RunRecord], rule: Rule) -> Verdict:
    wanted = [RunRequest(k, Role.BASELINE, commit, run_seed(0, k)) for k in range(rule.noise_runs)]
    for k, run in sorted(runs.items()):
        if run.val_bpb is None:
            return _crash(run, f"baseline run {k}")
    missing = tuple(q for q in wanted if q.run not in runs)
    if missing:
        return Verdict(None, missing)
    values = [r.val_bpb for r in runs.values() if r.val_bpb is not None]
    return Verdict(Outcome.KEEP, val_bpb=statistics.fmean(values),
                   detail=f"the baseline over {len(values)} runs")  # fmt: skip


def _champion_runs(
    runs: dict[int, RunRecord], best_commit: str, c: int
) -> tuple[int, dict[int, RunRecord]]:
    """(first run number of the current best's re-runs, those re-runs by pair index 1..c).

    Re-runs of a best that has since been replaced stay recorded (they still measure that
    commit) but do not count; the new best gets its own block of run numbers after them."""
    champions: list[str] = []
    for k in sorted(runs):
        if runs[k].role is Role.CHAMPION and runs[k].commit not in champions:
            champions.append(runs[k].commit)
    block = champions.index(best_commit) if best_commit in champions else len(champions)
    first = 1 + c + block * c
    return first, {k - first + 1: runs[k] for k in range(first, first + c) if k in runs}


def decide(
    experiment: int,
    commit: str,
    runs: Sequence[RunRecord],
    *,
    best_commit: str | None,
    best_mean: float | None,
    noise: Noise,
    rule: Rule,
) -> Verdict:
    """The experiment's verdict given its journaled runs, the best now, and the org's noise
    (pooled over every journaled run, this experiment's included)."""
    by_run = {r.run: r for r in runs if r.experiment == experiment}
    if experiment == 0 or best_commit is None or best_mean is None:
        return _baseline(commit, by_run, rule)
    screen = by_run.get(0)
    if screen is None:
        return Verdict(None, (RunRequest(0, Role.SCREEN, commit, run_seed(experiment, 0)),))
    if screen.val_bpb is None:
        return _crash(screen, "the screening run")
    sigma = noise.sigma
    gain = best_mean - screen.val_bpb
    bar = max(rule.min_improvement, rule.screen_sigmas * sigma) if sigma else rule.min_improvement
    promising = gain > bar
    screened = (
        f"screening run {_fmt(screen.val_bpb)} vs best {_fmt(best_mean)}: gain {gain:+.4f}, "
        f"bar {_fmt(bar)}" + (f" (max(minImprovement, {rule.screen_sigmas:g} sigma))" if sigma else "")
    )  # fmt: skip
    if rule.confirm_runs == 0:
        keep = promising if rule.screen else gain > rule.min_improvement
        return Verdict(Outcome.KEEP if keep else Outcome.DISCARD, val_bpb=screen.val_bpb,
                       detail=f"{screened}; no confirmation (confirmRuns 0)")  # fmt: skip
    if rule.screen and not promising:
        return Verdict(Outcome.DISCARD, val_bpb=screen.val_bpb, detail=f"{screened}: not promising")
    return _confirm(experiment, commit, by_run, best_commit, noise, rule, screened)


def _confirm(
    experiment: int,
    commit: str,
    by_run: dict[int, RunRecord],
    best_commit: str,
    noise: Noise,
    rule: Rule,
    screened: str,
) -> Verdict:
    c = rule.confirm_runs
    first, champion = _champion_runs(by_run, best_commit, c)
    needed: list[RunRequest] = []
    for j in range(1, c + 1):  # interleaved, so that each pair runs side by side
        if j not in by_run:
            needed.append(RunRequest(j, Role.CONFIRM, commit, run_seed(experiment, j)))
        if j not in champion:
            needed.append(RunRequest(first + j - 1, Role.CHAMPION, best_commit,
                                     run_seed(experiment, j)))  # fmt: skip
    for j in range(1, c + 1):
        if j in by_run and by_run[j].val_bpb is None:
            return _crash(by_run[j], f"confirmation run {j}")
    if needed:
        return Verdict(None, tuple(needed))
    x = [by_run[j].val_bpb for j in range(1, c + 1)]
    y = [r.val_bpb for r in champion.values() if r.val_bpb is not None]
    cand = statistics.fmean(v for v in x if v is not None)
    if not y:
        return Verdict(Outcome.DISCARD, val_bpb=cand,
                       detail=f"{screened}; no re-run of the best finished, so nothing to confirm "
                              "against")  # fmt: skip
    diff = statistics.fmean(y) - cand
    sigma, m = noise.sigma, rule.min_improvement
    summary = (
        f"confirmed over {len(x)} runs: {_fmt(cand)} vs {_fmt(statistics.fmean(y))} for "
        f"{len(y)} re-runs of the best, improvement {diff:+.4f}"
    )
    if sigma is None or noise.df == 0:
        keep = diff > m
        return Verdict(Outcome.KEEP if keep else Outcome.DISCARD, val_bpb=cand,
                       detail=f"{summary}; no noise estimate yet, so no test (needs noiseRuns > 1 "
                              "or confirmRuns > 1)")  # fmt: skip
    se = sigma * math.sqrt(1 / len(x) + 1 / len(y))
    t = (diff - m) / se if se > 0 else (math.inf if diff > m else -math.inf)
    p = float(stats.t.sf(t, noise.df))
    keep = p < rule.alpha and diff > m
    verdict = "significant" if keep else "not significant"
    return Verdict(
        Outcome.KEEP if keep else Outcome.DISCARD,
        val_bpb=cand,
        p_value=p,
        detail=f"{summary} > {m:g}: p = {p:.3g} ({verdict} at alpha {rule.alpha:g}; "
        f"sigma {sigma:.4f}, df {noise.df})",
    )


def one_run_rule(val_bpb: float | None, best: float | None, min_improvement: float) -> Outcome:
    """The rule before this module: one run against one run. Kept for benchmarks/integrity.py,
    which measures both rules on the same runs."""
    if val_bpb is None or not math.isfinite(val_bpb):
        return Outcome.CRASH
    if best is None:
        return Outcome.KEEP
    return Outcome.KEEP if val_bpb < best - min_improvement else Outcome.DISCARD
