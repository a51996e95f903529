"""The ResearchOrg status is a pure function of the journal and the running set."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from org_records import RUN_SECONDS, confirmed_history, history, record

from autoresearch_operator.core.ledger import Ledger
from autoresearch_operator.core.records import Outcome
from autoresearch_operator.crd import build_crd
from autoresearch_operator.k8s.status import (
    COMPLETED,
    FAILED,
    PAUSED,
    PREPARING,
    RECENT_EXPERIMENTS,
    RUNNING,
    conditions_for,
    failed_status,
    next_phase,
    status_from_state,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_counts_best_baseline_and_usage_follow_the_journal():
    status = status_from_state(
        phase=RUNNING, message="running", records=history(), running={6, 7},
        branch="autoresearch/explorer", observed_generation=3, now=NOW,
    )  # fmt: skip
    assert status["counts"] == {
        "total": 5, "kept": 2, "discarded": 2, "crashed": 1, "rejected": 1, "running": 2,
        "confirming": 0, "confirmed": 0, "runs": 5,  # one run each; the rejected proposal none
    }  # fmt: skip
    assert status["baseline"] == {"valBpb": 1.50, "runs": 1, "commit": f"{0:040x}", "experiment": 0}
    assert status["best"] == {"valBpb": 1.42, "runs": 1, "commit": f"{2:040x}", "experiment": 2}
    assert status["noise"] == {"runs": 0, "df": 0}  # no commit ran twice: no sigma yet
    # Training seconds of every experiment that trained, crashes included (the GPU was used).
    assert status["gpuSeconds"] == 4 * 300 + 40
    assert status["verificationGpuSeconds"] == 0
    assert status["gpuHours"] == round(1240 / 3600, 4)
    assert status["llmTokens"] == sum(t + t // 2 for t in (1000, 1200, 900, 700, 1100))
    assert status["branch"] == "autoresearch/explorer" and status["observedGeneration"] == 3


def test_last_experiment_describes_the_latest_decision_without_nulls():
    status = status_from_state(phase=RUNNING, message="", records=history(), now=NOW)
    last = status["lastExperiment"]
    assert last["experiment"] == 5 and last["outcome"] == "discard" and last["valBpb"] == 1.44
    assert last["finishedAt"].endswith("Z")
    assert None not in last.values()
    crash = status["recentExperiments"][3]
    assert crash["outcome"] == "crash" and crash["reason"] == "nan" and "valBpb" not in crash


def test_best_is_the_latest_keep_in_decision_order_when_parallel_experiments_finish_out_of_order():
    # Experiment 5 was kept first (1.40), then 4 was decided against it and kept (1.38).
    records = [
        record(0, Outcome.KEEP, 1.5),
        record(4, Outcome.KEEP, 1.38, finished_at=2e9 + 10),
        record(5, Outcome.KEEP, 1.40, finished_at=2e9),
    ]
    for decision, n in enumerate((0, 5, 4)):
        next(r for r in records if r.experiment == n).decision = decision
    status = status_from_state(phase=RUNNING, message="", records=records, now=NOW)
    assert status["best"]["experiment"] == 4
    # lastExperiment is the latest decision, not the highest experiment number.
    assert status["lastExperiment"]["experiment"] == 4


def test_best_and_baseline_are_means_over_their_runs_and_sigma_is_pooled_from_repeats():
    records, open_runs = confirmed_history()
    status = status_from_state(
        phase=RUNNING, message="", records=records, open_runs=open_runs, running={3},
        confirming=1, now=NOW,
    )  # fmt: skip
    ledger = Ledger(records, open_runs)
    # the best (experiment 2) over its confirmation runs and the re-run of it beside experiment 3
    # (never its screening run, picked for being low)
    assert status["best"]["experiment"] == 2 and status["best"]["runs"] == 3
    assert status["best"]["valBpb"] == pytest.approx((1.41 + 1.43 + 1.43) / 3)
    assert status["best"]["valBpbSd"] == pytest.approx(statistics.stdev([1.41, 1.43, 1.43]))
    assert status["best"]["testBpb"] == pytest.approx((1.42 + 1.44 + 1.44) / 3)
    # the baseline over its three noise runs and the two re-runs of it beside experiment 2
    assert status["baseline"]["runs"] == 5
    assert status["baseline"]["valBpb"] == pytest.approx(1.50)
    assert ledger.noise.sigma is not None
    assert status["noise"] == {
        "sigma": round(ledger.noise.sigma, 6), "runs": ledger.noise.runs, "df": ledger.noise.df
    }  # fmt: skip
    assert status["noise"]["runs"] == 8  # baseline 5, experiment 2's commit 3; a lone run is none
    assert status["counts"] == {
        "total": 3, "kept": 2, "discarded": 1, "crashed": 0, "rejected": 0, "running": 1,
        "confirming": 1, "confirmed": 1, "runs": 12,
    }  # fmt: skip


def test_verification_gpu_time_is_the_part_spent_on_confirmations_and_re_runs():
    records, open_runs = confirmed_history()
    status = status_from_state(
        phase=RUNNING, message="", records=records, open_runs=open_runs, now=NOW
    )
    assert status["gpuSeconds"] == 12 * RUN_SECONDS  # every run, open experiments' included
    assert status["verificationGpuSeconds"] == 6 * RUN_SECONDS  # 4 for experiment 2, 2 for 3
    decided_only = status_from_state(phase=RUNNING, message="", records=records, now=NOW)
    assert decided_only["gpuSeconds"] == 9 * RUN_SECONDS


def test_an_experiment_shows_its_runs_and_the_p_value_of_its_confirmation():
    records, _ = confirmed_history()
    status = status_from_state(phase=RUNNING, message="", records=records, now=NOW)
    kept = status["lastExperiment"]
    assert (kept["experiment"], kept["runs"], kept["pValue"]) == (2, 5, 0.0042)
    assert "significant" in kept["detail"]
    screened = status["recentExperiments"][1]
    assert (
        screened["runs"] == 1 and "pValue" not in screened and "not promising" in screened["detail"]
    )


def test_a_crashed_baseline_leaves_baseline_and_best_absent():
    status = status_from_state(
        phase=RUNNING, message="", records=[record(0, Outcome.CRASH, reason="exception")], now=NOW
    )
    assert status["baseline"] is None and status["best"] is None  # null: removed by the merge patch


def test_recent_experiments_are_bounded_newest_last_and_details_are_clipped():
    records = [record(n, Outcome.DISCARD, 1.6) for n in range(45)]
    records[-1].description = "x" * 5000
    status = status_from_state(phase=RUNNING, message="", records=records, now=NOW)
    recent = status["recentExperiments"]
    assert len(recent) == RECENT_EXPERIMENTS
    assert [r["experiment"] for r in recent] == list(range(25, 45))
    assert len(recent[-1]["description"]) <= 200


def test_conditions_keep_their_transition_time_until_their_status_changes():
    first = status_from_state(phase=PREPARING, message="", records=[], now=NOW)
    later = NOW + timedelta(hours=1)
    running = status_from_state(
        phase=RUNNING, message="", records=[], previous_conditions=first["conditions"], now=later
    )
    done = status_from_state(
        phase=COMPLETED, message="", records=[], previous_conditions=running["conditions"],
        now=later + timedelta(hours=1),
    )  # fmt: skip
    by_type = {c["type"]: c for c in running["conditions"]}
    assert by_type["Ready"]["status"] == "True" and by_type["Progressing"]["status"] == "True"
    assert by_type["Progressing"]["lastTransitionTime"] == "2025-01-02T03:04:05Z"
    assert by_type["Progressing"]["reason"] == RUNNING
    done_by_type = {c["type"]: c for c in done["conditions"]}
    assert done_by_type["Progressing"]["status"] == "False"
    assert done_by_type["Progressing"]["lastTransitionTime"] == "2025-01-02T05:04:05Z"
    assert done_by_type["Ready"]["lastTransitionTime"] == "2025-01-02T03:04:05Z"


def test_failed_status_says_why_and_is_not_ready():
    status = failed_status("spec.budget.maxExperiments: must be at least 1")
    assert status["phase"] == FAILED and "maxExperiments" in status["message"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


def test_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="unknown phase"):
        status_from_state(phase="Exploding", message="", records=[])


@pytest.mark.parametrize(
    ("paused", "exhausted", "data_ready", "phase"),
    [
        (True, "ran 20 experiments", False, PAUSED),  # a pause wins over everything
        (False, "ran 20 experiments", False, COMPLETED),  # a spent budget needs no data
        (False, None, False, PREPARING),
        (False, None, True, RUNNING),
    ],
)
def test_next_phase(paused, exhausted, data_ready, phase):
    got, message = next_phase(paused=paused, exhausted=exhausted, data_ready=data_ready, recorded=7)
    assert got == phase and message
    if phase == COMPLETED:
        assert "ran 20 experiments" in message


def test_repo_pushed_condition_reports_the_last_push_and_survives_until_the_next():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    none_yet = conditions_for(RUNNING, "running", [], now)
    assert [c["type"] for c in none_yet] == ["Ready", "Progressing"]  # no repo.url, no condition

    failed = conditions_for(RUNNING, "running", none_yet, now, push_error="remote rejected")
    pushed = {c["type"]: c for c in failed}["RepoPushed"]
    assert (pushed["status"], pushed["reason"]) == ("False", "PushFailed")
    assert "remote rejected" in pushed["message"] and "kept locally" in pushed["message"]

    # after an operator restart nothing has been pushed yet: the last known condition carries over
    carried = {c["type"]: c for c in conditions_for(RUNNING, "running", failed, now + timedelta(1))}
    assert carried["RepoPushed"] == pushed

    ok = {c["type"]: c for c in conditions_for(RUNNING, "running", failed, now, push_error=None)}
    assert (ok["RepoPushed"]["status"], ok["RepoPushed"]["reason"]) == ("True", "Pushed")


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    """The paths in `value` that the structural schema does not declare: the API server would
    prune them from the status without a word."""
    if isinstance(value, list):
        items = schema.get("items", {})
        return [m for item in value for m in unknown_fields(item, items, f"{path}[]")]
    if not isinstance(value, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    props = schema.get("properties") or {}
    found = []
    for key, child in value.items():
        if key in props:
            found += unknown_fields(child, props[key], f"{path}.{key}")
        else:
            found.append(f"{path}.{key}")
    return found


def test_every_status_field_is_declared_in_the_crd_so_none_is_pruned():
    records, open_runs = confirmed_history()
    status = status_from_state(
        phase=RUNNING, message="", records=records + [record(4, Outcome.CRASH, reason="nan")],
        open_runs=open_runs, running={3}, confirming=1, now=NOW,
    )  # fmt: skip
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert unknown_fields(status, schema["status"]) == []
    status["recentExperiments"][0]["runz"] = 1  # the check itself finds a field the CRD lacks
    assert unknown_fields(status, schema["status"]) == ["status.recentExperiments[].runz"]
    assert {"noise", "verificationGpuSeconds"} <= set(status)
