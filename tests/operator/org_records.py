"""Journal records for the operator tests: a short history with every outcome in it, and one
with runs under experiments (noise runs, confirmations, champion re-runs)."""

from __future__ import annotations

from autoresearch_operator.core.records import (
    ExperimentRecord,
    Outcome,
    Role,
    RunRecord,
    TokenUsage,
    TrainResult,
)


def record(
    n: int,
    outcome: Outcome,
    val_bpb: float | None = None,
    *,
    reason: str | None = None,
    training_seconds: float | None = 300.0,
    tokens: int = 0,
    finished_at: float | None = None,
) -> ExperimentRecord:
    trained = reason != "invalid-proposal"
    result = (
        TrainResult(
            status="crash" if outcome is Outcome.CRASH else "ok",
            reason=reason,
            val_bpb=val_bpb,
            training_seconds=training_seconds,
        )
        if trained
        else None
    )
    return ExperimentRecord(
        experiment=n,
        description=f"idea {n}",
        outcome=outcome,
        commit=f"{n:040x}" if trained else None,
        reason=reason,
        detail="it broke" if outcome is Outcome.CRASH else None,
        val_bpb=val_bpb,
        result=result,
        usage=TokenUsage(prompt_tokens=tokens, completion_tokens=tokens // 2),
        started_at=1_700_000_000.0 + 400 * n,
        finished_at=finished_at if finished_at is not None else 1_700_000_000.0 + 400 * n + 350,
    )


def history() -> list[ExperimentRecord]:
    """Baseline kept, a discard, a keep, a NaN crash, a rejected proposal, another discard."""
    return [
        record(0, Outcome.KEEP, 1.50),
        record(1, Outcome.DISCARD, 1.55, tokens=1000),
        record(2, Outcome.KEEP, 1.42, tokens=1200),
        record(3, Outcome.CRASH, reason="nan", training_seconds=40.0, tokens=900),
        record(4, Outcome.CRASH, reason="invalid-proposal", tokens=700),
        record(5, Outcome.DISCARD, 1.44, tokens=1100),
    ]


BASE, SECOND, THIRD = "b" * 40, "2" * 40, "3" * 40
RUN_SECONDS = 100.0


def run(n: int, k: int, role: Role, commit: str, val_bpb: float | None) -> RunRecord:
    result = TrainResult(
        status="ok" if val_bpb is not None else "crash",
        reason=None if val_bpb is not None else "nan",
        val_bpb=val_bpb,
        total_seconds=RUN_SECONDS,
        test_bpb=val_bpb + 0.01 if val_bpb is not None and role is not Role.SCREEN else None,
    )
    return RunRecord(
        n, k, role, commit, 1000 * n + k, result, finished_at=1_700_000_000.0 + 10 * n + k
    )


def confirmed_history() -> tuple[list[ExperimentRecord], list[RunRecord]]:
    """(decided, open runs) under the keep policy with noiseRuns 3 and confirmRuns 2: the
    baseline's three noise runs, a candidate discarded at screening, one kept after two
    confirmation runs and two re-runs of the baseline beside them, and a third still being
    confirmed (its screening run, one confirmation run and one re-run of the best journaled)."""
    baseline = [run(0, k, Role.BASELINE, BASE, v) for k, v in enumerate((1.50, 1.52, 1.48))]
    second = [
        run(2, 0, Role.SCREEN, SECOND, 1.40),
        run(2, 1, Role.CONFIRM, SECOND, 1.41),
        run(2, 2, Role.CONFIRM, SECOND, 1.43),
        run(2, 3, Role.CHAMPION, BASE, 1.51),
        run(2, 4, Role.CHAMPION, BASE, 1.49),
    ]
    records = [
        ExperimentRecord(0, "baseline", Outcome.KEEP, commit=BASE, val_bpb=1.50,
                         result=baseline[0].result, runs=baseline, decision=0,
                         finished_at=1_700_000_010.0),
        ExperimentRecord(1, "idea 1", Outcome.DISCARD, commit="1" * 40, val_bpb=1.55,
                         best_val_bpb=1.50, detail="screening run 1.5500 vs best 1.5000: "
                         "not promising", runs=[run(1, 0, Role.SCREEN, "1" * 40, 1.55)],
                         decision=1, finished_at=1_700_000_020.0),
        ExperimentRecord(2, "idea 2", Outcome.KEEP, commit=SECOND, val_bpb=1.42,
                         best_val_bpb=1.42, p_value=0.0042, detail="confirmed over 2 runs: "
                         "p = 0.0042 (significant at alpha 0.05)", result=second[0].result,
                         runs=second, decision=2, finished_at=1_700_000_030.0),
    ]  # fmt: skip
    open_runs = [
        run(3, 0, Role.SCREEN, THIRD, 1.38),
        run(3, 1, Role.CONFIRM, THIRD, 1.39),
        run(3, 3, Role.CHAMPION, SECOND, 1.43),
    ]
    return records, open_runs
