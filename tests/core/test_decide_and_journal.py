import math
from pathlib import Path

import pytest

from autoresearch_operator.decide import keep_or_discard
from autoresearch_operator.journal import TSV_HEADER, Journal
from autoresearch_operator.records import ExperimentRecord, Outcome, TokenUsage, TrainResult


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
def test_keep_iff_below_best_minus_min_improvement(bpb, best, min_imp, expected):
    assert keep_or_discard(ok(bpb), best, min_imp) is expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_non_finite_or_missing_scores_are_crashes_even_if_status_ok(bad):
    assert keep_or_discard(TrainResult(status="ok", val_bpb=bad), 2.0, 0.0) is Outcome.CRASH
    assert (
        keep_or_discard(TrainResult(status="crash", reason="timeout"), None, 0.0) is Outcome.CRASH
    )


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
