import math
from pathlib import Path

import pytest

from autoresearch_operator.core.journal import TSV_HEADER, Journal
from autoresearch_operator.core.ledger import Ledger
from autoresearch_operator.core.policy import one_run_rule
from autoresearch_operator.core.records import (
    ExperimentRecord,
    Outcome,
    Role,
    RunRecord,
    TokenUsage,
    TrainResult,
)


def ok(bpb: float) -> TrainResult:
    return TrainResult(status="ok", val_bpb=bpb, peak_vram_mb=2048.0, training_seconds=10.0)


@pytest.mark.parametrize(
    "bpb, best, min_imp, expected",
    [
        (1.50, None, 0.0, Outcome.KEEP),  # the baseline
        (1.49, 1.50, 0.0, Outcome.KEEP),
        (1.50, 1.50, 0.0, Outcome.DISCARD),  # a tie is not an improvement
        (1.495, 1.50, 0.01, Outcome.DISCARD),  # better, but not by minImprovement
        (1.48, 1.50, 0.01, Outcome.KEEP),
    ],
)
def test_the_old_one_run_rule_the_benchmark_compares_against(bpb, best, min_imp, expected):
    assert one_run_rule(bpb, best, min_imp) is expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_non_finite_or_missing_scores_are_never_kept_by_the_old_rule(bad):
    assert one_run_rule(bad, 2.0, 0.0) is Outcome.CRASH


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_a_run_without_a_finite_score_has_no_val_bpb_even_if_status_ok(bad):
    run = RunRecord(1, 0, Role.SCREEN, "c", 1000, TrainResult(status="ok", val_bpb=bad))
    assert run.val_bpb is None


def rec(n: int, outcome: Outcome, bpb: float | None = None, **kw) -> ExperimentRecord:
    return ExperimentRecord(
        experiment=n, description=f"exp {n}", outcome=outcome, commit=f"{n:040x}", val_bpb=bpb,
        result=ok(bpb) if bpb is not None else TrainResult(status="crash", reason="nan"),
        usage=TokenUsage(10, 5), **kw,
    )  # fmt: skip


def test_journal_round_trips_and_writes_reference_tsv(tmp_path: Path):
    j = Journal(tmp_path)
    j.append(rec(0, Outcome.KEEP, 1.5))
    j.append(rec(1, Outcome.CRASH, reason="nan"))
    j.append(rec(2, Outcome.DISCARD, 1.6))
    loaded = j.load()
    assert [r.outcome for r in loaded] == [Outcome.KEEP, Outcome.CRASH, Outcome.DISCARD]
    assert loaded[0].usage.total == 15 and loaded[0].result.val_bpb == 1.5
    lines = j.tsv.read_text().splitlines(keepends=True)
    assert lines[0] == TSV_HEADER
    assert lines[1] == "0000000\t1.500000\t2.0\tkeep\texp 0\n"
    assert lines[2] == "0000000\t0.000000\t0.0\tcrash\texp 1 [nan]\n"


def test_torn_last_line_is_ignored_and_repaired_and_duplicates_never_count(tmp_path: Path):
    j = Journal(tmp_path)
    j.append(rec(0, Outcome.KEEP, 1.5))
    with j.jsonl.open("a") as f:
        f.write('{"experiment": 1, "outc')  # killed mid-write
    assert [r.experiment for r in j.load()] == [0]
    j.append(rec(1, Outcome.DISCARD, 1.7))
    j.append(rec(1, Outcome.KEEP, 1.2))  # a second write of the same experiment is ignored
    assert [(r.experiment, r.outcome) for r in j.load()] == [
        (0, Outcome.KEEP),
        (1, Outcome.DISCARD),
    ]


def run(n: int, k: int, role: Role, bpb: float | None, commit: str = "") -> RunRecord:
    result = ok(bpb) if bpb is not None else TrainResult(status="crash", reason="timeout")
    return RunRecord(n, k, role, commit or f"{n:040x}", 1000 * n + k, result, 1.0, 2.0)


def test_runs_are_journaled_as_they_finish_and_attached_to_their_experiment(tmp_path: Path):
    j = Journal(tmp_path)
    for k, bpb in enumerate((1.50, 1.52, 1.49)):
        j.append_run(run(0, k, Role.BASELINE, bpb))
    j.append(rec(0, Outcome.KEEP, 1.5033))
    j.append_run(run(1, 0, Role.SCREEN, 1.40))
    j.append_run(run(1, 1, Role.CONFIRM, 1.41))
    j.append_run(run(1, 1, Role.CONFIRM, 9.99))  # a second write of a run is ignored
    records, open_runs = j.read()
    assert [(r.experiment, [x.run for x in r.runs]) for r in records] == [(0, [0, 1, 2])]
    assert [(r.key, r.role, r.val_bpb) for r in open_runs] == [
        ((1, 0), Role.SCREEN, 1.40),
        ((1, 1), Role.CONFIRM, 1.41),
    ]
    # results.tsv keeps the reference's columns, one row per decided experiment
    assert j.tsv.read_text().splitlines()[1:] == ["0000000\t1.503300\t2.0\tkeep\texp 0"]


def test_an_old_journal_reads_as_one_run_per_experiment_in_line_order(tmp_path: Path):
    j = Journal(tmp_path)
    for n, bpb in ((0, 2.0), (2, 1.5), (1, 1.4)):  # parallel: 2 was decided before 1
        j.append(rec(n, Outcome.KEEP, bpb))
    records = j.load()
    assert [r.decision for r in records] == [0, 2, 1]
    ledger = Ledger(records)
    assert [(r.key, r.role) for r in ledger.runs] == [
        ((0, 0), Role.BASELINE), ((1, 0), Role.SCREEN), ((2, 0), Role.SCREEN),
    ]  # fmt: skip
    assert ledger.best_record.experiment == 1 and ledger.best_val_bpb == 1.4
    assert ledger.baseline.mean == 2.0 and ledger.noise.sigma is None
