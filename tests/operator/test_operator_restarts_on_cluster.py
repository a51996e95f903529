"""The operator dies (SIGKILL) while an experiment's Job runs, and again just as a Job finishes
before the result is recorded; each time a new operator adopts what is there. The org still
completes with every experiment trained once and recorded once."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request

import pytest
import testcluster
from kubernetes import client
from on_cluster import GROUP, Orgs, research_org

from autoresearch_operator.gitrepo import OrgRepo
from autoresearch_operator.journal import Journal

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EXPERIMENTS = 4


def job_state(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    """None (no such Job), 'active', or the finished condition ('Complete', 'Failed')."""
    jobs = batch.list_namespaced_job(namespace, field_selector=f"metadata.name={name}").items
    if not jobs:
        return None
    for cond in jobs[0].status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return str(cond.type)
    return "active" if jobs[0].status.active else "pending"


def test_killed_operators_leave_every_experiment_trained_and_recorded_once(
    cluster, namespace, process_node, operator
):
    process_node(f"cpu-{secrets.token_hex(3)}")
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    orgs = Orgs(cluster, namespace)
    orgs.create(research_org("survivor", EXPERIMENTS))

    # 1. Killed while experiment 1 trains.
    testcluster.wait_for(
        lambda: job_state(batch, namespace, "survivor-exp-00001") == "active",
        600, "experiment 1's Job to run", interval=0.5,
    )  # fmt: skip
    operator.kill()
    time.sleep(3)
    operator.start()

    # 2. Killed the moment experiment 2's Job completes, before the operator (polling every
    # second) records it. Best effort: the record may occasionally win the race.
    testcluster.wait_for(
        lambda: job_state(batch, namespace, "survivor-exp-00002") == "active",
        600, "experiment 2's Job to run", interval=0.5,
    )  # fmt: skip
    testcluster.wait_for(
        lambda: job_state(batch, namespace, "survivor-exp-00002") in ("Complete", "Failed"),
        600, "experiment 2's Job to finish", interval=0.05,
    )  # fmt: skip
    operator.kill()
    journal = Journal(operator.state_dir / namespace / "survivor")
    recorded_at_kill = [r.experiment for r in journal.load()]
    time.sleep(3)
    operator.start()

    final = orgs.wait_completed("survivor", operator, 840)
    assert final["counts"]["total"] == EXPERIMENTS and final["counts"]["running"] == 0
    assert final["counts"]["crashed"] == 0, final["recentExperiments"]

    lines = journal.jsonl.read_text().splitlines()
    assert [json.loads(line)["experiment"] for line in lines] == list(range(EXPERIMENTS)), (
        f"recorded at the second kill: {recorded_at_kill}"
    )
    repo = OrgRepo(operator.state_dir / "repos" / namespace)
    assert sorted(repo.tried_experiments("survivor")) == list(range(EXPERIMENTS))

    jobs = batch.list_namespaced_job(namespace, label_selector=f"{GROUP}/org=survivor").items
    assert sorted(j.metadata.name for j in jobs) == [
        f"survivor-exp-{n:05d}" for n in range(EXPERIMENTS)
    ]
    assert all(j.status.succeeded == 1 and not j.status.failed for j in jobs)
    pods = core.list_namespaced_pod(namespace, label_selector=f"{GROUP}/org=survivor").items
    assert len(pods) == EXPERIMENTS, "an experiment was trained twice"

    with urllib.request.urlopen(f"{operator.metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    labels = f'namespace="{namespace}",org="survivor"'
    recorded = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("autoresearch_experiments_total{") and labels in line
    )
    assert recorded == EXPERIMENTS
    assert operator.restarts == 2
    events = core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=survivor,reason=ExperimentResumed"
    )
    resumed = sorted(int(e.message.split(":")[0].split()[-1]) for e in events.items)
    assert resumed == ([1] if 2 in recorded_at_kill else [1, 2]), resumed
