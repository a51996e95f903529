"""The keep policy (core/policy.py) and the ledger it reads (core/ledger.py), over plain data:
no training, no git. The figures in the p-value checks come from a t table, not from the code."""

from __future__ import annotations

import statistics

import pytest

from autoresearch_operator.core.ledger import Ledger, Noise, pooled_noise
from autoresearch_operator.core.policy import Rule, RunRequest, decide, run_seed
from autoresearch_operator.core.records import (
    ExperimentRecord,
    Outcome,
    Role,
    RunRecord,
    TrainResult,
)

BEST, CAND = "b" * 40, "c" * 40
RULE = Rule(min_improvement=0.0, noise_runs=3, confirm_runs=2, alpha=0.05, screen_sigmas=1.0)
NOISE = Noise(sigma=0.01, df=4, runs=6)


def run(k: int, role: Role, bpb: float | None, commit: str = CAND, n: int = 5) -> RunRecord:
    if bpb is None:
        result = TrainResult(status="crash", reason="timeout", detail="killed", total_seconds=9)
    else:
        result = TrainResult(status="ok", val_bpb=bpb, total_seconds=10.0)
    return RunRecord(n, k, role, commit, run_seed(n, k), result)


def verdict(runs, *, best=BEST, mean=2.0, noise=NOISE, rule=RULE, n=5):
    return decide(n, CAND, runs, best_commit=best, best_mean=mean, noise=noise, rule=rule)


# -- the baseline ----------------------------------------------------------------------------


def test_the_baseline_asks_for_noise_runs_with_distinct_seeds_then_keeps_their_mean():
    v = decide(0, BEST, [], best_commit=None, best_mean=None, noise=NOISE, rule=RULE)
    assert v.outcome is None
    assert v.requests == tuple(RunRequest(k, Role.BASELINE, BEST, k) for k in range(3))
    runs = [run(k, Role.BASELINE, b, BEST, n=0) for k, b in enumerate((2.0, 2.03, 1.97))]
    v = decide(0, BEST, runs[:2], best_commit=None, best_mean=None, noise=NOISE, rule=RULE)
    assert [q.run for q in v.requests] == [2]
    v = decide(0, BEST, runs, best_commit=None, best_mean=None, noise=NOISE, rule=RULE)
    assert v.outcome is Outcome.KEEP and v.val_bpb == pytest.approx(2.0)


def test_a_crashed_baseline_run_is_a_crash_naming_the_run():
    runs = [run(0, Role.BASELINE, 2.0, BEST, n=0), run(1, Role.BASELINE, None, BEST, n=0)]
    v = decide(0, BEST, runs, best_commit=None, best_mean=None, noise=NOISE, rule=RULE)
    assert v.outcome is Outcome.CRASH and v.reason == "timeout"
    assert v.detail == "baseline run 1 crashed: killed"


# -- screening -------------------------------------------------------------------------------


def test_a_candidate_starts_with_one_screening_run():
    assert verdict([]).requests == (RunRequest(0, Role.SCREEN, CAND, run_seed(5, 0)),)
    assert run_seed(5, 0) == 5000


def test_a_screening_run_within_one_sigma_of_the_best_is_discarded_at_once():
    v = verdict([run(0, Role.SCREEN, 1.991)])  # better than 2.0, but by less than sigma 0.01
    assert v.outcome is Outcome.DISCARD and v.requests == ()
    assert "gain +0.0090, bar 0.0100" in v.detail and "not promising" in v.detail


def test_min_improvement_raises_the_screening_bar_above_the_sigma_multiple():
    rule = Rule(min_improvement=0.05, confirm_runs=2)
    assert verdict([run(0, Role.SCREEN, 1.96)], rule=rule).outcome is Outcome.DISCARD


def test_a_crashed_screening_run_is_a_crash_with_the_harness_reason():
    v = verdict([run(0, Role.SCREEN, None)])
    assert (v.outcome, v.reason) == (Outcome.CRASH, "timeout")


# -- confirmation ----------------------------------------------------------------------------


def test_a_promising_candidate_asks_for_paired_confirmation_and_champion_runs_interleaved():
    v = verdict([run(0, Role.SCREEN, 1.95)])
    assert v.outcome is None
    assert v.requests == (
        RunRequest(1, Role.CONFIRM, CAND, 5001),
        RunRequest(3, Role.CHAMPION, BEST, 5001),  # the same seed as its partner
        RunRequest(2, Role.CONFIRM, CAND, 5002),
        RunRequest(4, Role.CHAMPION, BEST, 5002),
    )


def confirmed(cand: tuple[float, float], champ: tuple[float, float]) -> list[RunRecord]:
    return [
        run(0, Role.SCREEN, 1.95),
        run(1, Role.CONFIRM, cand[0]),
        run(2, Role.CONFIRM, cand[1]),
        run(3, Role.CHAMPION, champ[0], BEST),
        run(4, Role.CHAMPION, champ[1], BEST),
    ]


def test_keep_iff_the_improvement_over_the_re_runs_is_significant():
    # improvement 0.02, se = 0.01 * sqrt(1/2 + 1/2) = 0.01: t = 2.0 with 4 df -> p = 0.058
    v = verdict(confirmed((1.97, 1.99), (2.00, 2.00)))
    assert v.outcome is Outcome.DISCARD and v.p_value == pytest.approx(0.0581, abs=5e-4)
    assert "not significant at alpha 0.05" in v.detail
    # improvement 0.03: t = 3.0, 4 df -> p = 0.020
    v = verdict(confirmed((1.96, 1.98), (2.00, 2.00)))
    assert v.outcome is Outcome.KEEP and v.p_value == pytest.approx(0.0200, abs=5e-4)
    assert v.val_bpb == pytest.approx(1.97)  # its confirmation mean, never the lucky screen


def test_the_test_is_against_min_improvement_not_against_zero():
    rule = Rule(min_improvement=0.02, confirm_runs=2, screen_sigmas=1.0)
    v = verdict(confirmed((1.96, 1.98), (2.00, 2.00)), rule=rule)  # t = (0.03-0.02)/0.01 = 1
    assert v.outcome is Outcome.DISCARD and v.p_value == pytest.approx(0.187, abs=1e-3)


def test_a_crashed_confirmation_run_makes_the_candidate_a_crash():
    runs = confirmed((1.96, 1.98), (2.0, 2.0))
    runs[2] = run(2, Role.CONFIRM, None)
    v = verdict(runs)
    assert v.outcome is Outcome.CRASH and v.detail == "confirmation run 2 crashed: killed"


def test_crashed_champion_re_runs_leave_the_test_to_the_others_or_discard():
    runs = confirmed((1.96, 1.98), (2.0, 2.0))
    runs[4] = run(4, Role.CHAMPION, None, BEST)
    assert verdict(runs).outcome is Outcome.KEEP  # against the one re-run that finished
    runs[3] = run(3, Role.CHAMPION, None, BEST)
    v = verdict(runs)
    assert v.outcome is Outcome.DISCARD and "no re-run of the best finished" in v.detail


def test_when_the_best_moves_mid_confirmation_the_new_best_is_re_run_in_a_new_block():
    runs = confirmed((1.96, 1.98), (2.0, 2.0))[:4]  # pair 2's champion run never ran
    new_best = "d" * 40
    v = verdict(runs, best=new_best, mean=1.97)
    assert v.requests == (
        RunRequest(5, Role.CHAMPION, new_best, 5001),
        RunRequest(6, Role.CHAMPION, new_best, 5002),
    )
    runs += [run(5, Role.CHAMPION, 1.97, new_best), run(6, Role.CHAMPION, 1.97, new_best)]
    v = verdict(runs, best=new_best, mean=1.97)
    assert v.outcome is Outcome.DISCARD and "1.9700 for 2 re-runs" in v.detail


def test_without_a_noise_estimate_the_mean_decides_and_says_there_was_no_test():
    rule = Rule(noise_runs=1, confirm_runs=1)
    runs = [run(0, Role.SCREEN, 1.9), run(1, Role.CONFIRM, 1.95), run(2, Role.CHAMPION, 2.0, BEST)]
    v = verdict(runs, noise=Noise(None, 0, 0), rule=rule)
    assert v.outcome is Outcome.KEEP and v.p_value is None and "no test" in v.detail


def test_confirm_runs_zero_is_the_one_run_rule_with_the_screening_bar():
    rule = Rule(confirm_runs=0, screen_sigmas=0.0)
    assert verdict([run(0, Role.SCREEN, 1.999)], rule=rule).outcome is Outcome.KEEP
    assert verdict([run(0, Role.SCREEN, 2.0)], rule=rule).outcome is Outcome.DISCARD


def test_screen_false_confirms_even_a_candidate_that_screened_worse():
    rule = Rule(confirm_runs=2, screen=False)
    v = verdict([run(0, Role.SCREEN, 2.5)], rule=rule)
    assert v.outcome is None and len(v.requests) == 4


# -- the ledger --------------------------------------------------------------------------------


def rec(n: int, outcome: Outcome, commit: str, runs: list[RunRecord], decision: int):
    return ExperimentRecord(n, f"e{n}", outcome, commit=commit, runs=runs, decision=decision,
                            val_bpb=statistics.fmean(r.val_bpb for r in runs if r.val_bpb))  # fmt: skip


def test_the_ledger_pools_sigma_over_commits_and_leaves_screening_runs_out():
    base = [run(k, Role.BASELINE, b, BEST, n=0) for k, b in enumerate((2.00, 2.02, 2.04))]
    cand = [run(0, Role.SCREEN, 1.80), run(1, Role.CONFIRM, 1.90), run(2, Role.CONFIRM, 1.94)]
    champ = [run(3, Role.CHAMPION, 2.01, BEST), run(4, Role.CHAMPION, 2.05, BEST)]
    ledger = Ledger(
        [rec(0, Outcome.KEEP, BEST, base, 0), rec(5, Outcome.KEEP, CAND, cand + champ, 1)]
    )
    # BEST: 2.00 2.02 2.04 2.01 2.05 (mean 2.024); CAND: 1.90 1.94 (mean 1.92)
    squares = sum((v - 2.024) ** 2 for v in (2.00, 2.02, 2.04, 2.01, 2.05)) + 2 * 0.02**2
    assert ledger.noise.df == 4 + 1 and ledger.noise.runs == 7
    assert ledger.noise.sigma == pytest.approx((squares / 5) ** 0.5)
    assert ledger.noise == pooled_noise(ledger.runs)
    assert ledger.best_commit == CAND and ledger.best.mean == pytest.approx(1.92)
    assert ledger.best.n == 2  # the screening run's 1.80 is not in the best's mean
    assert ledger.baseline.mean == pytest.approx(2.024) and ledger.baseline.n == 5
    assert ledger.counts == {"total": 2, "kept": 2, "discarded": 0, "crashed": 0,
                             "rejected": 0, "confirmed": 1, "runs": 8}  # fmt: skip
    assert ledger.gpu_seconds == 80.0 and ledger.verification_gpu_seconds == 40.0


def test_the_best_is_the_latest_keep_even_if_an_earlier_keep_has_a_lower_mean():
    a = [run(0, Role.BASELINE, 2.0, BEST, n=0)]
    b = [run(0, Role.SCREEN, 1.5, "e" * 40, n=1)]
    c = [run(0, Role.SCREEN, 1.6, "f" * 40, n=2)]
    ledger = Ledger([rec(0, Outcome.KEEP, BEST, a, 0), rec(1, Outcome.KEEP, "e" * 40, b, 2),
                     rec(2, Outcome.KEEP, "f" * 40, c, 1)])  # fmt: skip
    assert ledger.best_record.experiment == 1


def test_open_runs_count_for_gpu_time_and_sigma_but_not_for_counts():
    base = [run(k, Role.BASELINE, b, BEST, n=0) for k, b in enumerate((2.0, 2.02))]
    ledger = Ledger([rec(0, Outcome.KEEP, BEST, base, 0)],
                    [run(0, Role.SCREEN, 1.9), run(1, Role.CONFIRM, None)])  # fmt: skip
    assert ledger.counts["total"] == 1 and ledger.counts["runs"] == 4
    assert ledger.gpu_seconds == 39.0 and ledger.verification_gpu_seconds == 9.0
    assert [r.run for r in ledger.runs_of(5)] == [0, 1]
