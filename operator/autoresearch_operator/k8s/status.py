"""A ResearchOrg's status, computed from the journal: pure functions, no Kubernetes.

The operator never keeps counts of its own; it rebuilds the status from the recorded
experiments (and the set running now) every time, so the status, the journal and the metrics
cannot drift apart. A None value means "absent": the merge patch that writes it removes the key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..records import ExperimentRecord, Outcome, baseline_record, best_record, gpu_seconds

PENDING, PREPARING, RUNNING, PAUSED, COMPLETED, FAILED = (
    "Pending",
    "Preparing",
    "Running",
    "Paused",
    "Completed",
    "Failed",
)
PHASES = (PENDING, PREPARING, RUNNING, PAUSED, COMPLETED, FAILED)
RECENT_EXPERIMENTS = 20
DETAIL_CHARS = 300  # keeps twenty experiments well inside an object's size limit
DESCRIPTION_CHARS = 200


def rfc3339(when: float | datetime) -> str:
    moment = when if isinstance(when, datetime) else datetime.fromtimestamp(when, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def experiment_summary(rec: ExperimentRecord) -> dict[str, Any]:
    """One experiment as status.lastExperiment / recentExperiments shows it (no nulls)."""
    summary: dict[str, Any] = {
        "experiment": rec.experiment,
        "commit": rec.commit,
        "outcome": rec.outcome.value,
        "reason": rec.reason,
        "detail": _clip(rec.detail, DETAIL_CHARS),
        "valBpb": rec.val_bpb,
        "testBpb": rec.result.test_bpb if rec.result else None,
        "description": _clip(rec.description, DESCRIPTION_CHARS),
        "trainingSeconds": rec.result.training_seconds if rec.result else None,
        "finishedAt": rfc3339(rec.finished_at) if rec.finished_at is not None else None,
    }
    return {k: v for k, v in summary.items() if v is not None}


def _point(rec: ExperimentRecord | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    point = {
        "valBpb": rec.val_bpb,
        "testBpb": rec.result.test_bpb if rec.result else None,
        "commit": rec.commit,
        "experiment": rec.experiment,
    }
    return {k: v for k, v in point.items() if v is not None}


def llm_tokens(records: Iterable[ExperimentRecord]) -> int:
    return sum(r.usage.total for r in records)


def counts(records: Sequence[ExperimentRecord], running: Collection[int]) -> dict[str, int]:
    by = {o: sum(1 for r in records if r.outcome is o) for o in Outcome}
    return {
        "total": len(records),
        "kept": by[Outcome.KEEP],
        "discarded": by[Outcome.DISCARD],
        "crashed": by[Outcome.CRASH],
        "running": len(running),
    }


def conditions_for(
    phase: str,
    message: str,
    previous: Iterable[dict[str, Any]],
    now: datetime,
    push_error: str | None | bool = False,
) -> list[dict[str, Any]]:
    """Ready (not Failed) and Progressing (Preparing or Running), plus RepoPushed once a push to
    spec.repo.url was tried (`push_error`: None for success, the error text for a failure,
    False for no push yet). Transition times are kept from `previous` while a condition's status
    does not change; other conditions in `previous` (an earlier RepoPushed) carry over."""
    wanted = {
        "Ready": ("True" if phase != FAILED else "False", phase, message),
        "Progressing": ("True" if phase in (PREPARING, RUNNING) else "False", phase, message),
    }
    if push_error is not False:
        wanted["RepoPushed"] = (
            ("True", "Pushed", "the branch and tried refs are on spec.repo.url")
            if push_error is None
            else ("False", "PushFailed", f"{push_error}; results are kept locally and pushed later")
        )
    before = {c.get("type"): c for c in previous}
    out = []
    for kind, (status, reason, text) in wanted.items():
        old = before.get(kind) or {}
        kept = old.get("status") == status and old.get("lastTransitionTime")
        out.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": text,
                "lastTransitionTime": kept or rfc3339(now),
            }
        )
    out += [c for kind, c in before.items() if kind not in wanted]
    return out


def status_from_state(
    *,
    phase: str,
    message: str,
    records: Sequence[ExperimentRecord],
    running: Collection[int] = (),
    branch: str | None = None,
    observed_generation: int | None = None,
    previous_conditions: Iterable[dict[str, Any]] = (),
    now: datetime | None = None,
    push_error: str | None | bool = False,
) -> dict[str, Any]:
    """The whole status of an org, from its recorded experiments and the ones running now."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    now = now or datetime.now(UTC)
    used = gpu_seconds(records)
    last = max(records, key=lambda r: (r.finished_at or 0.0, r.experiment), default=None)
    return {
        "phase": phase,
        "message": message,
        "observedGeneration": observed_generation,
        "branch": branch,
        "baseline": _point(baseline_record(records)),
        "best": _point(best_record(records)),
        "counts": counts(records, running),
        "gpuSeconds": round(used, 3),
        "gpuHours": round(used / 3600, 4),
        "llmTokens": llm_tokens(records),
        "lastExperiment": experiment_summary(last) if last else None,
        "recentExperiments": [experiment_summary(r) for r in list(records)[-RECENT_EXPERIMENTS:]],
        "conditions": conditions_for(phase, message, previous_conditions, now, push_error),
    }


def failed_status(message: str, previous_conditions: Iterable[dict[str, Any]] = ()) -> dict:
    """The status patch for a body that does not validate: the rest of the status is kept."""
    return {
        "phase": FAILED,
        "message": message,
        "conditions": conditions_for(FAILED, message, previous_conditions, datetime.now(UTC)),
    }


def next_phase(
    *, paused: bool, exhausted: str | None, data_ready: bool, recorded: int
) -> tuple[str, str]:
    """What a valid org does next, and the sentence saying so: stopping for a pause or a spent
    budget wins over preparing data, and preparing comes before running."""
    if paused:
        return PAUSED, f"spec.paused is true; {recorded} experiments recorded"
    if exhausted is not None:
        return COMPLETED, f"budget spent: {exhausted}"
    if not data_ready:
        return PREPARING, "preparing the data claim (prepare Job)"
    return RUNNING, "running the research loop"
