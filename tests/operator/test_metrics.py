"""Metrics say what the status says, count each experiment and each run once, and share a port
with /healthz."""

from __future__ import annotations

import statistics
import urllib.error
import urllib.request

import pytest
from org_records import RUN_SECONDS, confirmed_history, history, record

from autoresearch_operator.core.records import Outcome
from autoresearch_operator.k8s.status import RUNNING, status_from_state
from autoresearch_operator.metrics import Heartbeat, OperatorMetrics, serve

ORG = {"namespace": "research", "org": "explorer"}


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {**ORG, **labels})


def outcome_total(metrics: OperatorMetrics, outcome: str) -> float:
    return sum(
        s.value
        for m in metrics.registry.collect()
        if m.name == "autoresearch_experiments"
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("outcome") == outcome
    )


def test_metrics_match_the_status_computed_from_the_same_records():
    records, running = history(), {6}
    metrics = OperatorMetrics()
    metrics.replay("research", "explorer", records)
    metrics.set_running("research", "explorer", len(running))
    status = status_from_state(phase=RUNNING, message="", records=records, running=running)

    counts = status["counts"]
    assert outcome_total(metrics, "keep") == counts["kept"]
    assert outcome_total(metrics, "discard") == counts["discarded"]
    # a rejected proposal is an experiment crashed with reason invalid-proposal in /metrics
    assert outcome_total(metrics, "crash") == counts["crashed"] + counts["rejected"]
    assert value(metrics, "autoresearch_running_experiments") == counts["running"]
    assert value(metrics, "autoresearch_best_val_bpb") == status["best"]["valBpb"]
    assert value(metrics, "autoresearch_baseline_val_bpb") == status["baseline"]["valBpb"]
    assert value(metrics, "autoresearch_gpu_seconds_total") == pytest.approx(status["gpuSeconds"])
    assert value(metrics, "autoresearch_llm_tokens_total") == status["llmTokens"]
    scored = [e for e in status["recentExperiments"] if "valBpb" in e]
    assert value(metrics, "autoresearch_last_val_bpb") == scored[-1]["valBpb"]
    assert (
        value(metrics, "autoresearch_experiments_total", outcome="crash", reason="invalid-proposal")
        == 1
    )
    assert value(metrics, "autoresearch_experiments_total", outcome="keep", reason="none") == 2
    # Every trained experiment (a commit) has a duration; the rejected proposal has none.
    assert value(metrics, "autoresearch_experiment_duration_seconds_count") == 5


def test_replaying_the_journal_after_a_restart_never_double_counts():
    metrics = OperatorMetrics()
    metrics.replay("research", "explorer", history()[:3])
    metrics.replay("research", "explorer", history())  # the daemon re-reads the whole journal
    metrics.record("research", "explorer", history()[5])
    assert outcome_total(metrics, "keep") + outcome_total(metrics, "discard") == 4
    assert value(metrics, "autoresearch_llm_tokens_total") == sum(r.usage.total for r in history())


def runs_total(metrics: OperatorMetrics, role: str | None = None) -> float:
    return sum(
        s.value
        for m in metrics.registry.collect()
        if m.name == "autoresearch_runs"
        for s in m.samples
        if s.name.endswith("_total") and role in (None, s.labels["role"])
    )


def test_metrics_of_runs_match_the_status_noise_runs_and_verification_time():
    records, open_runs = confirmed_history()
    metrics = OperatorMetrics()
    metrics.replay("research", "explorer", records, open_runs)
    status = status_from_state(phase=RUNNING, message="", records=records, open_runs=open_runs)

    assert runs_total(metrics) == status["counts"]["runs"] == 12
    assert runs_total(metrics, "baseline") == 3 and runs_total(metrics, "screen") == 3
    assert runs_total(metrics, "confirm") == 3 and runs_total(metrics, "champion") == 3
    assert value(metrics, "autoresearch_gpu_seconds_total") == pytest.approx(status["gpuSeconds"])
    assert value(metrics, "autoresearch_verification_gpu_seconds_total") == pytest.approx(
        status["verificationGpuSeconds"]
    )
    assert value(metrics, "autoresearch_noise_sigma_bpb") == pytest.approx(
        status["noise"]["sigma"], abs=1e-6
    )
    assert value(metrics, "autoresearch_best_val_bpb") == pytest.approx(status["best"]["valBpb"])
    assert value(metrics, "autoresearch_best_test_bpb") == pytest.approx(status["best"]["testBpb"])
    assert value(metrics, "autoresearch_baseline_val_bpb") == pytest.approx(
        status["baseline"]["valBpb"]
    )
    assert value(metrics, "autoresearch_last_val_bpb") == status["lastExperiment"]["valBpb"]


def test_each_run_counts_once_whether_seen_as_it_finished_on_replay_or_with_its_decision():
    records, open_runs = confirmed_history()
    metrics = OperatorMetrics()
    metrics.replay("research", "explorer", records[:1])  # the operator restarts after the baseline
    for rec in records[1:]:
        for run in rec.runs:  # the loop reports each run as it is journaled ...
            metrics.record_run("research", "explorer", run)
        metrics.record("research", "explorer", rec)  # ... then the decision, with the same runs
    for run in open_runs:
        metrics.record_run("research", "explorer", run)
        metrics.record_run("research", "explorer", run)
    metrics.replay("research", "explorer", records, open_runs)  # and restarts again
    assert runs_total(metrics) == 12
    assert value(metrics, "autoresearch_gpu_seconds_total") == 12 * RUN_SECONDS
    assert value(metrics, "autoresearch_verification_gpu_seconds_total") == 6 * RUN_SECONDS
    assert outcome_total(metrics, "keep") + outcome_total(metrics, "discard") == 3


def test_sigma_appears_once_a_commit_has_two_measured_runs():
    records, _ = confirmed_history()
    baseline = records[0]
    metrics = OperatorMetrics()
    metrics.record_run("research", "explorer", baseline.runs[0])
    assert value(metrics, "autoresearch_noise_sigma_bpb") is None
    metrics.record_run("research", "explorer", baseline.runs[1])
    assert value(metrics, "autoresearch_noise_sigma_bpb") == pytest.approx(
        statistics.stdev([1.50, 1.52])
    )


def test_a_deleted_org_leaves_no_series_behind():
    metrics = OperatorMetrics()
    metrics.replay("research", "explorer", history())
    metrics.set_phase("research", "explorer", RUNNING)
    metrics.observe_proposal("research", "explorer", 3.0)
    metrics.replay("research", "other", [record(0, Outcome.KEEP, 1.5)])
    metrics.forget("research", "explorer")
    text = metrics.render().decode()
    assert 'org="explorer"' not in text and 'org="other"' in text


def test_phase_gauge_marks_exactly_the_current_phase():
    metrics = OperatorMetrics()
    metrics.set_phase("research", "explorer", "Preparing")
    metrics.set_phase("research", "explorer", "Running")
    assert value(metrics, "autoresearch_org_phase", phase="Running") == 1
    assert value(metrics, "autoresearch_org_phase", phase="Preparing") == 0


def test_one_port_serves_metrics_and_a_health_check_that_fails_when_the_loop_stalls():
    now = [0.0]
    metrics, heartbeat = OperatorMetrics(), Heartbeat(max_age=30, clock=lambda: now[0])
    metrics.replay("research", "explorer", history())
    server = serve(metrics, heartbeat, port=0, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as err:  # not ready before kopf has started
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert err.value.code == 503 and b"starting" in err.value.read()
        heartbeat.beat()  # kopf's startup handler beats first
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            assert 'autoresearch_best_val_bpb{namespace="research",org="explorer"} 1.42' in (
                resp.read().decode()
            )
        now[0] = 31.0  # no heartbeat for longer than max_age
        for probe in ("healthz", "readyz"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{base}/{probe}", timeout=5)
            assert err.value.code == 503
    finally:
        server.shutdown()
