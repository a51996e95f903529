"""The pure half of benchmarks/integrity.py: the one-run rule's shadow, a Monte Carlo of the real
keep policy, the figures read from a ledger, and the targets. Nothing here trains.

The simulation drives the real `core.policy.decide` and the real `core.ledger.Ledger` over an
in-memory org whose runs are draws from a normal distribution: each commit has a true val_bpb,
and every run of it scores that plus N(0, sigma). The org runs as the loop runs it: the baseline's
noise runs, then each candidate's screening run, then the confirmation runs and champion re-runs
that `decide` asks for, with sigma pooled over every run so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from autoresearch_operator.core.ledger import Ledger
from autoresearch_operator.core.policy import Rule, Verdict, decide, one_run_rule
from autoresearch_operator.core.records import (
    ExperimentRecord,
    Outcome,
    RunRecord,
    TrainResult,
)

EFFECTS_SIGMA = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)  # true gains to simulate, in units of sigma
PROMISING_RATES = (0.05, 0.1, 0.2, 0.3, 0.5)  # where to give the verification cost


# -- the old rule, and rates --------------------------------------------------------------------


@dataclass
class OneRunShadow:
    """The old rule, run beside the new one on the same screening runs: its best starts at the
    baseline's first run and falls to each run it keeps."""

    min_improvement: float = 0.0
    best: float | None = None

    def judge(self, val_bpb: float | None) -> Outcome:
        outcome = one_run_rule(val_bpb, self.best, self.min_improvement)
        if outcome is Outcome.KEEP:
            self.best = val_bpb
        return outcome


@dataclass(frozen=True)
class Rate:
    """k of n, with its 95 % Wilson interval."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        if not self.n:
            return (float("nan"), float("nan"))
        low, high = stats.binomtest(self.k, self.n).proportion_ci(0.95, method="wilson")
        return (float(low), float(high))

    def to_json(self) -> dict:
        return {"k": self.k, "n": self.n, "rate": self.value, "ci95": list(self.ci)}

    def __str__(self) -> str:
        low, high = self.ci
        return f"{self.k}/{self.n} = {100 * self.value:.1f} % [{100 * low:.0f}, {100 * high:.0f}]"


def screen_run(rec: ExperimentRecord) -> RunRecord | None:
    """The experiment's run 0: the screening run (the baseline's first run)."""
    return next((r for r in rec.runs if r.run == 0), None)


def verification_fraction(promising_rate: float, confirm_runs: int) -> float:
    """Verification runs / all runs of the candidates when a share `promising_rate` of them is
    confirmed: each costs one screening run, a promising one 2 x confirmRuns more (its own and
    the champion's). All runs cost the same window."""
    extra = 2 * confirm_runs * promising_rate
    return extra / (1 + extra)


# -- the simulation ------------------------------------------------------------------------------


@dataclass
class SimOrg:
    """An org in memory: the loop's order of runs and decisions, normal draws for the training."""

    rule: Rule
    sigma: float
    rng: np.random.Generator
    means: dict[str, float] = field(default_factory=dict)  # commit -> its true val_bpb
    records: list[ExperimentRecord] = field(default_factory=list)
    old: OneRunShadow = field(default_factory=OneRunShadow)

    def __post_init__(self) -> None:
        self.old = OneRunShadow(self.rule.min_improvement)

    def experiment(self, true_val_bpb: float) -> tuple[ExperimentRecord, Outcome]:
        """Propose, train and decide one experiment (the first is the baseline); its record and
        what the one-run rule made of its screening run."""
        n = len(self.records)
        commit = f"c{n}"
        self.means[commit] = true_val_bpb
        runs: list[RunRecord] = []
        while True:
            verdict = self._verdict(n, commit, runs)
            if verdict.outcome is not None:
                break
            runs += [self._train(n, q.run, q.role, q.commit, q.seed) for q in verdict.requests]
        rec = ExperimentRecord(n, "simulated", verdict.outcome, commit=commit,
                               val_bpb=verdict.val_bpb, p_value=verdict.p_value,
                               decision=len(self.records), runs=runs)  # fmt: skip
        self.records.append(rec)
        screen = screen_run(rec)
        return rec, self.old.judge(screen.val_bpb if screen else None)

    def _verdict(self, n: int, commit: str, runs: list[RunRecord]) -> Verdict:
        ledger = Ledger(self.records, runs)
        best = ledger.best
        return decide(n, commit, runs, best_commit=ledger.best_commit,
                      best_mean=best.mean if best else None, noise=ledger.noise,
                      rule=self.rule)  # fmt: skip

    def _train(self, n: int, run: int, role, commit: str, seed: int) -> RunRecord:
        value = float(self.rng.normal(self.means[commit], self.sigma))
        result = TrainResult(status="ok", val_bpb=value, total_seconds=1.0)
        return RunRecord(n, run, role, commit, seed, result)

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.records)


def keep_rates_by_effect(
    rule: Rule,
    sigma: float,
    trials: int,
    rng: np.random.Generator,
    effects: Sequence[float] = EFFECTS_SIGMA,
    baseline_val_bpb: float = 2.7,
) -> list[dict]:
    """For each true gain (in sigma): a fresh org's baseline, then one candidate that much better;
    how often each rule keeps it, on the same draws."""
    rows = []
    for effect in effects:
        new = old = 0
        for _ in range(trials):
            org = SimOrg(rule, sigma, rng)
            org.experiment(baseline_val_bpb)
            rec, old_outcome = org.experiment(baseline_val_bpb - effect * sigma)
            new += rec.outcome is Outcome.KEEP
            old += old_outcome is Outcome.KEEP
        rows.append({"effect_sigma": effect, "new": Rate(new, trials), "old": Rate(old, trials)})
    return rows


def noise_orgs(
    rule: Rule,
    sigma: float,
    orgs: int,
    candidates: int,
    rng: np.random.Generator,
    baseline_val_bpb: float = 2.7,
) -> dict:
    """`orgs` orgs of `candidates` seed-only candidates each (every commit has the baseline's
    true val_bpb): false keeps under both rules, the promising rate, the verification share."""
    new = old = promising = 0
    verification = total = 0.0
    for _ in range(orgs):
        org = SimOrg(rule, sigma, rng)
        for _ in range(candidates + 1):
            rec, old_outcome = org.experiment(baseline_val_bpb)
            if rec.experiment == 0:
                continue
            new += rec.outcome is Outcome.KEEP
            old += old_outcome is Outcome.KEEP
            promising += any(r.role.verification for r in rec.runs)
        verification += org.ledger.verification_gpu_seconds
        total += org.ledger.gpu_seconds
    n = orgs * candidates
    return {
        "orgs": orgs,
        "candidates": candidates,
        "new": Rate(new, n),
        "old": Rate(old, n),
        "promising": Rate(promising, n),
        "verification_fraction": verification / total if total else float("nan"),
    }


def simulate(
    rule: Rule,
    sigma: float,
    *,
    trials: int,
    orgs: int,
    candidates: int,
    seed: int = 0,
    observed_promising_rate: float | None = None,
) -> dict:
    """The simulated half of the report, every Rate still a Rate (see `to_json`)."""
    rng = np.random.default_rng(seed)
    rates = sorted({*PROMISING_RATES, *([observed_promising_rate] if observed_promising_rate
                                         is not None else [])})  # fmt: skip
    return {
        "sigma": sigma,
        "trials": trials,
        "effects": keep_rates_by_effect(rule, sigma, trials, rng),
        "noise_orgs": noise_orgs(rule, sigma, orgs, candidates, rng),
        "cost": [
            {
                "promising_rate": p,
                "verification_fraction": verification_fraction(p, rule.confirm_runs),
                "observed": p == observed_promising_rate,
            }
            for p in rates
        ],  # fmt: skip
    }


def to_json(value):
    """The report's plain-data form: every Rate becomes {k, n, rate, ci95}."""
    if isinstance(value, Rate):
        return value.to_json()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


# -- what the real runs say ----------------------------------------------------------------------


def noise_org_figures(ledger: Ledger, old: dict[int, Outcome], candidates: list[int]) -> dict:
    """False keeps under both rules among `candidates` (all seed-only), the promising rate, and
    the verification share of the org's whole GPU time (the ledger's own definition)."""
    recs = {r.experiment: r for r in ledger.records}
    decided = [recs[n] for n in candidates if n in recs]
    baseline = ledger.baseline
    return {
        "candidates": len(decided),
        "baseline_val_bpb": baseline.mean if baseline else None,
        "sigma": ledger.noise.sigma,
        "sigma_df": ledger.noise.df,
        "new": Rate(sum(r.outcome is Outcome.KEEP for r in decided), len(decided)),
        "old": Rate(sum(old.get(r.experiment) is Outcome.KEEP for r in decided), len(decided)),
        "promising": Rate(
            sum(any(x.role.verification for x in r.runs) for r in decided), len(decided)
        ),
        "crashed": sum(r.outcome is Outcome.CRASH for r in decided),
        "verification_gpu_seconds": ledger.verification_gpu_seconds,
        "gpu_seconds": ledger.gpu_seconds,
        "verification_fraction": (
            ledger.verification_gpu_seconds / ledger.gpu_seconds if ledger.gpu_seconds else None
        ),
    }


def one_candidate(ledger: Ledger, n: int, old: Outcome | None, sigma: float | None) -> dict:
    """What happened to candidate n: both rules' outcomes, its screening run, its effect."""
    rec = next((r for r in ledger.records if r.experiment == n), None)
    screen = screen_run(rec) if rec else None
    base = ledger.baseline
    effect = None
    if rec and base and rec.val_bpb is not None and sigma:
        effect = (base.mean - rec.val_bpb) / sigma
    return {
        "experiment": n,
        "new": rec.outcome.value if rec else None,
        "old": old.value if old else None,
        "p_value": rec.p_value if rec else None,
        "baseline_val_bpb": base.mean if base else None,
        "screen_val_bpb": screen.val_bpb if screen else None,
        "screen_steps": screen.result.num_steps if screen else None,
        "val_bpb": rec.val_bpb if rec else None,
        "effect_sigma": effect,
        "detail": rec.detail if rec else None,
    }


# -- the targets ---------------------------------------------------------------------------------


def targets(real: dict | None, sim: dict) -> list[dict]:
    """Each issue target, judged for the new rule and for the old one."""
    strong = [row for row in sim["effects"] if row["effect_sigma"] >= 2]
    rows = []
    if real is not None:
        noise, load = real["noise_org"], real["load"]
        rows.append({"target": "false keeps, seed-only candidates (real) <= 5 %",
                     "new": noise["new"].value, "old": noise["old"].value, "limit": 0.05,
                     "below": True})  # fmt: skip
    rows.append({"target": "false keeps, seed-only candidates (simulated orgs) <= 5 %",
                 "new": sim["noise_orgs"]["new"].value, "old": sim["noise_orgs"]["old"].value,
                 "limit": 0.05, "below": True})  # fmt: skip
    gains = ", ".join(format(r["effect_sigma"], "g") for r in strong)
    rows.append({"target": f"keep rate at gains >= 2 sigma (simulated, worst of {gains}) >= 80 %",
                 "new": min(r["new"].value for r in strong),
                 "old": min(r["old"].value for r in strong), "limit": 0.8,
                 "below": False})  # fmt: skip
    if real is not None:
        rows.append({"target": "a screening run under a CPU hog is not kept (real)",
                     "new": load["new"], "old": load["old"], "limit": "not keep"})  # fmt: skip
        rows.append({"target": "the restored learning rates are kept (real)",
                     "new": real["handicap"]["new"], "old": real["handicap"]["old"],
                     "limit": "keep"})  # fmt: skip
        rows.append({"target": "verification GPU time / total (real) <= 25 %",
                     "new": noise["verification_fraction"], "old": 0.0, "limit": 0.25,
                     "below": True})  # fmt: skip
    for row in rows:
        for rule in ("new", "old"):
            row[f"{rule}_met"] = met(row[rule], row)
    return rows


def met(value: object, row: dict) -> bool:
    if row["limit"] == "not keep":
        return value != Outcome.KEEP.value
    if row["limit"] == "keep":
        return value == Outcome.KEEP.value
    assert isinstance(value, float)
    return value <= row["limit"] if row["below"] else value >= row["limit"]
