"""benchmarks/integrity.py (`make bench-integrity`): the pure parts, without training — the old
rule's shadow, the simulation over the real decide(), the figures and the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import integrity  # noqa: E402
import integrity_figures  # noqa: E402
from integrity_figures import OneRunShadow, Rate, SimOrg  # noqa: E402

from autoresearch_operator.core.policy import Rule  # noqa: E402
from autoresearch_operator.core.records import Outcome, ProposalContext, Role  # noqa: E402

SIGMA = 0.02


def test_the_old_rule_keeps_against_its_own_best_which_falls_with_each_keep() -> None:
    shadow = OneRunShadow(min_improvement=0.01)
    assert shadow.judge(2.80) is Outcome.KEEP  # the baseline's first run
    assert shadow.judge(2.795) is Outcome.DISCARD  # not below 2.80 - 0.01
    assert shadow.judge(2.70) is Outcome.KEEP
    assert shadow.judge(2.75) is Outcome.DISCARD  # judged against 2.70 now, not 2.80
    assert shadow.judge(None) is Outcome.CRASH
    assert shadow.best == 2.70


def test_a_simulated_org_trains_the_runs_decide_asks_for_as_the_loop_does() -> None:
    org = SimOrg(Rule(), SIGMA, np.random.default_rng(1))
    baseline, old = org.experiment(2.7)
    assert [r.role for r in baseline.runs] == [Role.BASELINE] * 3
    assert baseline.outcome is Outcome.KEEP and old is Outcome.KEEP

    worse, old = org.experiment(2.7 + 20 * SIGMA)  # screened out: one run, both rules discard
    assert [r.role for r in worse.runs] == [Role.SCREEN]
    assert worse.outcome is Outcome.DISCARD and old is Outcome.DISCARD

    better, old = org.experiment(2.7 - 20 * SIGMA)  # screened, confirmed beside the champion
    roles = sorted(r.role.value for r in better.runs)
    assert roles == ["champion", "champion", "confirm", "confirm", "screen"]
    assert {r.commit for r in better.runs if r.role is Role.CHAMPION} == {baseline.commit}
    assert better.outcome is Outcome.KEEP and old is Outcome.KEEP
    assert better.p_value is not None and better.p_value < 0.05
    assert org.ledger.best_commit == better.commit


def test_keep_rates_separate_noise_from_a_large_gain_under_the_new_rule_only() -> None:
    rows = integrity_figures.keep_rates_by_effect(Rule(), SIGMA, trials=200,
                                              rng=np.random.default_rng(0), effects=(0.0, 8.0))  # fmt: skip
    noise, gain = rows
    assert noise["new"].value < 0.1  # a seed-only candidate is rarely kept ...
    assert 0.3 < noise["old"].value < 0.7  # ... where one run against one run is a coin flip
    assert gain["new"].value > 0.9 and gain["old"].value > 0.9


def test_the_verification_share_of_simulated_orgs_is_the_ledgers_count_of_their_runs() -> None:
    rule = Rule()
    out = integrity_figures.noise_orgs(rule, SIGMA, orgs=5, candidates=10,
                                   rng=np.random.default_rng(3))  # fmt: skip
    promising = out["promising"].k
    assert promising > 0
    verification = 2 * rule.confirm_runs * promising  # every run costs the same in the simulation
    total = 5 * (rule.noise_runs + 10) + verification
    assert out["verification_fraction"] == pytest.approx(verification / total)
    assert integrity_figures.verification_fraction(0.1, 2) == pytest.approx(0.4 / 1.4)
    assert integrity_figures.verification_fraction(0.0, 2) == 0.0


def test_a_rate_reports_its_wilson_interval() -> None:
    low, high = Rate(1, 20).ci
    assert low == pytest.approx(0.0089, abs=1e-4) and high == pytest.approx(0.2361, abs=1e-4)
    assert Rate(1, 20).to_json() == {"k": 1, "n": 20, "rate": 0.05, "ci95": [low, high]}
    assert str(Rate(1, 20)).startswith("1/20 = 5.0 %")


def test_noise_org_figures_count_false_keeps_under_both_rules_from_the_ledger() -> None:
    org = SimOrg(Rule(), SIGMA, np.random.default_rng(5))
    old = {}
    for _ in range(9):  # the baseline, then 8 seed-only candidates
        rec, outcome = org.experiment(2.7)
        old[rec.experiment] = outcome
    figures = integrity_figures.noise_org_figures(org.ledger, old, list(range(1, 9)))
    recs = org.ledger.records[1:]
    assert figures["candidates"] == 8
    assert figures["new"].k == sum(r.outcome is Outcome.KEEP for r in recs)
    assert figures["old"].k == sum(old[r.experiment] is Outcome.KEEP for r in recs)
    assert figures["promising"].k == sum(any(x.role.verification for x in r.runs) for r in recs)
    assert figures["sigma"] == org.ledger.noise.sigma
    fraction = org.ledger.verification_gpu_seconds / org.ledger.gpu_seconds
    assert figures["verification_fraction"] == pytest.approx(fraction)


def test_targets_judge_each_rule_and_name_what_is_missed() -> None:
    sim = integrity_figures.simulate(Rule(), SIGMA, trials=20, orgs=2, candidates=3)
    real = {
        "noise_org": {"new": Rate(1, 20), "old": Rate(5, 20), "verification_fraction": 0.3},
        "load": {"new": "discard", "old": "keep"},
        "handicap": {"new": "keep", "old": "keep"},
    }
    rows = integrity_figures.targets(real, sim)

    def row(start: str) -> dict:
        return next(r for r in rows if r["target"].startswith(start))

    false_keeps = row("false keeps, seed-only candidates (real)")
    assert false_keeps["new_met"] and not false_keeps["old_met"]  # 5 % is within <= 5 %
    load = row("a screening run under a CPU hog is not kept")
    assert load["new_met"] and not load["old_met"]
    cost = row("verification GPU time / total")
    assert not cost["new_met"] and cost["old_met"]
    assert row("the restored learning rates are kept")["new_met"]


def test_the_report_prints_every_target_beside_the_old_rule_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "integrity.json"
    argv = ["--sim-only", "--sigma", "0.02", "--trials", "20", "--sim-orgs", "2",
            "--candidates", "3", "--alternative", "confirm_runs=4", "--report", str(report)]  # fmt: skip
    assert integrity.main(argv) == 0
    out = capsys.readouterr().out
    assert "SIMULATED" in out and "ALTERNATIVE SETTING (simulated only" in out
    assert "new rule:" in out and "old one-run rule:" in out
    data = json.loads(report.read_text())
    assert data["real"] is None and data["rule"]["confirm_runs"] == 2
    assert data["alternative"]["rule"]["confirm_runs"] == 4
    effects = [row["effect_sigma"] for row in data["simulated"]["effects"]]
    assert effects == list(integrity_figures.EFFECTS_SIGMA)
    assert set(data["simulated"]["effects"][0]["new"]) == {"k", "n", "rate", "ci95"}
    for row in data["targets"]:
        assert isinstance(row["new_met"], bool) and isinstance(row["old_met"], bool)
        assert ("met" if row["new_met"] else "NOT met") in out


def test_a_seed_only_candidate_changes_nothing_but_a_comment() -> None:
    best = "X = 1  # a knob\nprint(X)\n"
    ctx = ProposalContext(org="o", experiment=4, program="", best_train_py=best, best_val_bpb=2.7)
    proposal = integrity.SeedOnly().propose(ctx)
    code = [line for line in proposal.train_py.splitlines() if not line.startswith("#")]
    assert code == best.splitlines() and proposal.train_py != best
    assert "4" in proposal.train_py.splitlines()[-1]  # distinct per experiment


def test_the_handicap_scales_every_learning_rate_of_the_shipped_train_py() -> None:
    shipped = (REPO / "trainer-image" / "train.py").read_text()
    slow = integrity.handicap(shipped, 0.1)
    for knob in integrity.LEARNING_RATES:
        before = next(line for line in shipped.splitlines() if line.startswith(f"{knob} = "))
        after = next(line for line in slow.splitlines() if line.startswith(f"{knob} = "))
        assert float(after.split()[2]) == pytest.approx(float(before.split()[2]) * 0.1)
    with pytest.raises(SystemExit, match="MATRIX_LR"):
        integrity.handicap("EMBEDDING_LR = 0.6\n", 0.1)


def test_the_load_runs_for_the_chosen_screening_run_only() -> None:
    class FakeHog:
        cores = 2
        procs: list[str] = []

        def start(self, seconds: float) -> None:
            self.procs = ["busy"]

        def stop(self) -> None:
            self.procs = []

    hog = FakeHog()
    watcher = integrity.Watcher(0.0, hog, ("noise", 3), 60.0)  # type: ignore[arg-type]
    watcher.phase("noise", 2, "training")
    watcher.phase("handicap", 3, "training")
    assert hog.procs == []
    watcher.phase("noise", 3, "training")
    assert hog.procs == ["busy"]
    org = SimOrg(Rule(), SIGMA, np.random.default_rng(0))
    org.experiment(2.7)
    for _ in range(3):
        rec, _ = org.experiment(2.7)
    watcher.run_recorded("noise", rec.runs[0])
    assert hog.procs == []


def test_parse_rule_changes_only_the_named_fields() -> None:
    rule = integrity.parse_rule("confirm_runs=4,screen=false,alpha=0.1", Rule())
    assert (rule.confirm_runs, rule.screen, rule.alpha, rule.noise_runs) == (4, False, 0.1, 3)
