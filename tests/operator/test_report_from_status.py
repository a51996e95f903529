"""The comparison row and the plot's records come from a ResearchOrg status, window and all."""

from __future__ import annotations

from test_compare_on_cluster import history

from autoresearch_operator.cluster_report import plot_title, records_from_status, summary_from_org
from autoresearch_operator.core.records import Outcome
from autoresearch_operator.k8s.status import RECENT_EXPERIMENTS, status_from_state


def org(status: dict, proposer: dict) -> dict:
    return {"metadata": {"name": "o", "namespace": "ns"}, "spec": {"proposer": proposer},
            "status": status}  # fmt: skip


def test_the_row_uses_the_status_totals_not_the_recent_window():
    scores = [2.0, 1.7] + [1.9] * 30
    status = status_from_state(phase="Running", message="", records=history(scores))
    row = summary_from_org(org(status, {"type": "openai", "model": "m1"}), "ns/o")
    assert (row.experiments, row.kept, row.discarded, row.crashed) == (32, 2, 30, 0)
    assert (row.best, row.best_test, row.baseline, row.proposer) == (1.7, 1.71, 2.0, "openai:m1")
    assert row.gpu_seconds == 32 * 60.0


def test_records_hold_the_window_plus_the_baseline_and_best_before_it():
    scores = [2.0, 1.7] + [1.9] * 30
    status = status_from_state(phase="Running", message="", records=history(scores))
    records = records_from_status(status)
    assert [r.experiment for r in records] == [0, 1] + list(range(32 - RECENT_EXPERIMENTS, 32))
    assert records[1].outcome is Outcome.KEEP and records[1].val_bpb == 1.7
    # the plot marks the held-out score of the best and the baseline, though both are off-window
    assert [r.result.test_bpb for r in records[:2] if r.result] == [2.01, 1.71]
    assert "last 20 of 32 experiments, best 1.7000" in plot_title("o", status)


def test_a_short_history_is_shown_whole_with_crashes():
    status = status_from_state(phase="Completed", message="", records=history([2.0, None, 1.9]))
    records = records_from_status(status)
    assert [(r.experiment, r.outcome) for r in records] == [
        (0, Outcome.KEEP), (1, Outcome.CRASH), (2, Outcome.KEEP)
    ]  # fmt: skip
    assert plot_title("o", status) == "o (Completed): 3 experiments, best 1.9000"
