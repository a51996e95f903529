"""`autoresearch compare --cluster` and `plot --cluster` read the orgs' status from the API server,
as a user comparing orgs on a cluster runs them (KUBECONFIG, -n, -A)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client
from on_cluster import GROUP, PLURAL, REPO, VERSION, Orgs, research_org

from autoresearch_operator.core.records import ExperimentRecord, Outcome, TrainResult
from autoresearch_operator.k8s.status import status_from_state

pytestmark = pytest.mark.cluster


def history(scores: list[float | None]) -> list[ExperimentRecord]:
    """Experiments with these val_bpb (None: a crash), kept when they beat the best so far; a
    kept one was also scored on the held-out test split, 0.01 above its val_bpb."""
    records, best = [], None
    for n, score in enumerate(scores):
        if score is None:
            outcome = Outcome.CRASH
        elif best is None or score < best:
            outcome, best = Outcome.KEEP, score
        else:
            outcome = Outcome.DISCARD
        test = score + 0.01 if outcome is Outcome.KEEP and score is not None else None
        records.append(
            ExperimentRecord(
                experiment=n, description=f"idea {n}", outcome=outcome, commit=f"{n:040x}",
                reason="exception" if score is None else None, val_bpb=score,
                result=TrainResult(status="crash" if score is None else "ok", val_bpb=score,
                                   test_bpb=test, total_seconds=60.0),
                finished_at=1_780_000_000.0 + n,
            )
        )  # fmt: skip
    return records


def create_with_status(cluster, namespace: str, name: str, scores: list[float | None]) -> None:
    Orgs(cluster, namespace).create(research_org(name, len(scores)))
    status = status_from_state(
        phase="Completed", message="done", records=history(scores), branch=f"autoresearch/{name}"
    )
    client.CustomObjectsApi(cluster.api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}
    )


def autoresearch(cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-m", "autoresearch_operator.cli", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_compare_and_plot_read_the_orgs_status_from_the_cluster(
    cluster, namespace, crd, tmp_path: Path
):
    # 25 experiments: more than the status's recent window holds; the totals must still be exact.
    create_with_status(cluster, namespace, "explorer", [2.0, 1.9, None, 1.95] + [1.8] + [1.85] * 20)
    create_with_status(cluster, namespace, "careful", [2.0, 2.1, 1.99])

    compared = autoresearch(cluster, "compare", "--cluster", "-n", namespace)
    assert compared.returncode == 0, compared.stderr + compared.stdout
    rows = [
        line for line in compared.stdout.splitlines() if "explorer" in line or "careful" in line
    ]
    assert [("explorer" in row) for row in rows] == [True, False], "best first"
    explorer = rows[0].replace("│", " ").split()
    # best (over its 1 run), the best's held-out test_bpb, baseline, improvement, sigma (none:
    # one run per commit), experiments
    assert explorer[:9] == [
        "explorer", "mutate", "1.8000", "(1)", "1.8100", "2.0000", "+0.2000", "-", "25",
    ]  # fmt: skip
    # kept, discarded, crashed, confirmed: all 25, not the window
    assert explorer[9:13] == ["3", "21", "1", "0"]

    everywhere = autoresearch(cluster, "compare", "--cluster", "-A", "--org", "careful")
    assert f"{namespace}/careful" in everywhere.stdout, everywhere.stdout
    assert "explorer" not in everywhere.stdout

    png = tmp_path / "cluster.png"
    plotted = autoresearch(cluster, "plot", "--cluster", "-n", namespace, "--output", str(png))
    assert plotted.returncode == 0, plotted.stderr + plotted.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_says_so_when_a_namespace_has_no_orgs(cluster, namespace, crd):
    compared = autoresearch(cluster, "compare", "--cluster", "-n", namespace)
    assert compared.returncode == 1
    assert f"no ResearchOrgs in namespace {namespace}" in compared.stdout
