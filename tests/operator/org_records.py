"""Journal records for the operator tests: a short history with every outcome in it."""

from __future__ import annotations

from autoresearch_operator.records import ExperimentRecord, Outcome, TokenUsage, TrainResult


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
