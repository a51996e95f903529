"""The operator dies (SIGKILL) in the middle of a confirmation: once while a confirmation run's Job
trains, and again just as a re-run of the best finishes, before its result is journaled. Each
time a new operator adopts the Jobs that are there. The org still completes with every run
trained once, in one Job, and journaled once, and its status and metrics count each run once."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request

import pytest
import testcluster
from kubernetes import client
from on_cluster import GROUP, Orgs, research_org

from autoresearch_operator.core.gitrepo import OrgRepo
from autoresearch_operator.core.journal import Journal

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# The baseline and one candidate. screen: false sends the candidate to confirmation whatever its
# screening run scores, so the kills always land in a confirmation.
EXPERIMENTS = 2
NOISE_RUNS, CONFIRM_RUNS = 2, 1  # one confirmation run and its re-run: each kill has its run
POLICY = {"noiseRuns": NOISE_RUNS, "confirmRuns": CONFIRM_RUNS, "screen": False}
# (experiment, run): the baseline's noise runs; the candidate's screening run, its confirmation
# runs 1..C and the re-runs of the best C+1..2C (core/policy.py).
RUNS = [(0, k) for k in range(NOISE_RUNS)] + [(1, k) for k in range(1 + 2 * CONFIRM_RUNS)]


def job_name(experiment: int, run: int) -> str:
    return f"survivor-exp-{experiment:05d}-run-{run}"


def job_state(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    """None (no such Job), 'active', or the finished condition ('Complete', 'Failed')."""
    jobs = batch.list_namespaced_job(namespace, field_selector=f"metadata.name={name}").items
    if not jobs:
        return None
    for cond in jobs[0].status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return str(cond.type)
    return "active" if jobs[0].status.active else "pending"


def job_uids(batch: client.BatchV1Api, namespace: str) -> dict[str, str]:
    jobs = batch.list_namespaced_job(namespace, label_selector=f"{GROUP}/org=survivor").items
    return {j.metadata.name: j.metadata.uid for j in jobs}


def test_killed_operators_mid_confirmation_leave_every_run_trained_and_recorded_once(
    cluster, namespace, process_node, operator
):
    process_node(f"cpu-{secrets.token_hex(3)}")
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    orgs = Orgs(cluster, namespace)
    orgs.create(research_org("survivor", EXPERIMENTS, keepPolicy=POLICY))
    journal = Journal(operator.state_dir / namespace / "survivor")

    # 1. Killed while the candidate's first confirmation run trains.
    testcluster.wait_for(
        lambda: job_state(batch, namespace, job_name(1, 1)) == "active",
        600, "experiment 1's first confirmation run to train", interval=0.5,
    )  # fmt: skip
    operator.kill()
    seen = job_uids(batch, namespace)
    time.sleep(3)
    operator.start()

    # 2. Killed the moment the first re-run of the best completes, before the operator (polling
    # every second) journals it. Best effort: the journal may occasionally win the race.
    champion = job_name(1, 1 + CONFIRM_RUNS)
    testcluster.wait_for(
        lambda: job_state(batch, namespace, champion) in ("Complete", "Failed"),
        600, "the first re-run of the best to finish", interval=0.05,
    )  # fmt: skip
    operator.kill()
    seen |= job_uids(batch, namespace)
    journaled_at_kill = {r.key for r in journal.read()[1]}
    time.sleep(3)
    operator.start()

    final = orgs.wait_completed("survivor", operator, 840)
    counts = final["counts"]
    assert (counts["total"], counts["crashed"], counts["running"]) == (EXPERIMENTS, 0, 0), final
    assert (counts["confirmed"], counts["confirming"], counts["runs"]) == (1, 0, len(RUNS))

    # Every run and every decision journaled exactly once.
    lines = [json.loads(line) for line in journal.jsonl.read_text().splitlines()]
    runs = [(d["experiment"], d["run"]) for d in lines if d.get("kind") == "run"]
    assert sorted(runs) == RUNS, f"journaled at the second kill: {sorted(journaled_at_kill)}"
    assert [d["experiment"] for d in lines if d.get("kind") != "run"] == list(range(EXPERIMENTS))
    records, open_runs = journal.read()
    assert open_runs == []
    baseline, candidate = records
    roles = [r.role.value for r in candidate.runs]
    assert roles == ["screen"] + ["confirm"] * CONFIRM_RUNS + ["champion"] * CONFIRM_RUNS
    assert {r.commit for r in candidate.runs if r.role.value == "champion"} == {baseline.commit}
    assert len({r.seed for r in candidate.runs}) == 1 + CONFIRM_RUNS  # re-runs paired by seed
    repo = OrgRepo(operator.state_dir / "repos" / namespace)
    assert sorted(repo.tried_experiments("survivor")) == list(range(EXPERIMENTS))

    # One Job per run, each created once: the Jobs seen at the kills were adopted, not replaced.
    uids = job_uids(batch, namespace)
    assert sorted(uids) == sorted(job_name(n, k) for n, k in RUNS)
    assert {name: uids[name] for name in seen} == seen
    jobs = batch.list_namespaced_job(namespace, label_selector=f"{GROUP}/org=survivor").items
    assert all(j.status.succeeded == 1 and not j.status.failed for j in jobs)
    pods = core.list_namespaced_pod(namespace, label_selector=f"{GROUP}/org=survivor").items
    assert len(pods) == len(RUNS), "a run was trained twice"
    assert "replacing it" not in operator.log.read_text(errors="replace")

    # The status counts what the journal holds, the confirmation's test included.
    all_runs = [r for rec in records for r in rec.runs]
    gpu = sum(r.result.gpu_seconds for r in all_runs)
    verification = sum(r.result.gpu_seconds for r in all_runs if r.role.verification)
    assert final["gpuSeconds"] == pytest.approx(gpu, abs=0.01)
    assert final["verificationGpuSeconds"] == pytest.approx(verification, abs=0.01)
    assert 0 < verification < gpu
    summary = final["recentExperiments"][1]
    assert summary["runs"] == 1 + 2 * CONFIRM_RUNS and "pValue" in summary, summary
    assert final["noise"]["sigma"] > 0 and final["baseline"]["runs"] >= NOISE_RUNS

    with urllib.request.urlopen(f"{operator.metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    labels = f'namespace="{namespace}",org="survivor"'

    def total(metric: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(f"{metric}{{") and labels in line
        )

    assert total("autoresearch_experiments_total") == EXPERIMENTS
    assert total("autoresearch_runs_total") == len(RUNS)
    assert total("autoresearch_verification_gpu_seconds_total") == pytest.approx(
        final["verificationGpuSeconds"], abs=0.01
    )
    assert total("autoresearch_noise_sigma_bpb") == pytest.approx(final["noise"]["sigma"], abs=1e-6)

    assert operator.restarts == 2
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=survivor")
    by_reason: dict[str, set[int]] = {}
    for event in events.items:
        if event.reason in ("ExperimentResumed", "ExperimentConfirming"):
            number = int(event.message.split(":")[0].split()[1])
            by_reason.setdefault(event.reason, set()).add(number)
    assert by_reason == {"ExperimentResumed": {1}, "ExperimentConfirming": {1}}, by_reason
