"""End to end on the local control plane: `autoresearch operator` as a local process with its
ServiceAccount's token, a real API server, Job controller and scheduler, and a process kubelet
that runs the trainer pods' commands.

A ResearchOrg with the tiny profile and the mutate proposer must prepare its data, train every
experiment of its budget in Jobs, and reach Completed with status, Events and metrics agreeing.
"""

from __future__ import annotations

import secrets
import urllib.request

import pytest
import testcluster
from kubernetes import client
from kubernetes.client.rest import ApiException
from on_cluster import GROUP, PLURAL, VERSION, Orgs, research_org

pytestmark = pytest.mark.cluster

EXPERIMENTS = 3


def scrape(metrics_url: str) -> dict[str, float]:
    """Every sample of /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def test_a_tiny_org_prepares_trains_its_budget_and_completes(
    cluster, namespace, process_node, operator
):
    process_node(f"cpu-{secrets.token_hex(3)}")
    orgs = Orgs(cluster, namespace)
    orgs.create(research_org("explorer", EXPERIMENTS))
    final = orgs.wait_completed("explorer", operator, 780)
    assert final["counts"]["total"] == EXPERIMENTS and final["counts"]["running"] == 0
    assert final["counts"]["crashed"] == 0, final["recentExperiments"]
    assert final["baseline"]["experiment"] == 0
    assert final["best"]["valBpb"] <= final["baseline"]["valBpb"]
    assert final["gpuSeconds"] > 0 and final["branch"] == "autoresearch/explorer"

    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
    names = sorted(j.metadata.name for j in jobs)
    assert names == ["autoresearch-data-prepare"] + [
        f"explorer-exp-{n:05d}" for n in range(EXPERIMENTS)
    ]

    events = client.CoreV1Api(cluster.api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=explorer"
    )
    reasons = [e.reason for e in events.items]
    assert "ExperimentKept" in reasons and "Completed" in reasons

    samples = scrape(operator.metrics_url)
    labels = f'namespace="{namespace}",org="explorer"'
    by_outcome = {
        outcome: sum(
            v for k, v in samples.items()
            if k.startswith("autoresearch_experiments_total{") and labels in k
            and f'outcome="{outcome}"' in k
        )
        for outcome in ("keep", "discard", "crash")
    }  # fmt: skip
    counts = final["counts"]
    assert by_outcome == {
        "keep": counts["kept"], "discard": counts["discarded"], "crash": counts["crashed"]
    }  # fmt: skip
    assert samples[f"autoresearch_best_val_bpb{{{labels}}}"] == final["best"]["valBpb"]
    assert samples[f"autoresearch_baseline_val_bpb{{{labels}}}"] == final["baseline"]["valBpb"]
    assert samples[f'autoresearch_org_phase{{{labels},phase="Completed"}}'] == 1
    assert samples[f"autoresearch_running_experiments{{{labels}}}"] == 0
    with urllib.request.urlopen(f"{operator.metrics_url}/healthz", timeout=10) as resp:
        assert resp.status == 200


def test_deleting_an_org_stops_its_daemon_and_collects_its_jobs(
    cluster, namespace, process_node, operator
):
    """Nothing is left behind but the git history: Jobs and ConfigMaps go with their owner."""
    process_node(f"cpu-{secrets.token_hex(3)}")
    objects = client.CustomObjectsApi(cluster.api)
    Orgs(cluster, namespace).create(research_org("short", 1))
    batch = client.BatchV1Api(cluster.api)
    testcluster.wait_for(
        lambda: any(
            j.metadata.name == "short-exp-00000" for j in batch.list_namespaced_job(namespace).items
        ),
        300,
        "the first experiment's Job",
        interval=2,
    )
    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "short")

    def gone() -> bool:
        try:
            objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "short")
        except ApiException as err:
            return err.status == 404
        return False

    try:
        testcluster.wait_for(gone, 120, "the org to be deleted (kopf's finalizer released)")
    except TimeoutError:
        raise AssertionError(operator.log_tail()) from None
    testcluster.wait_for(
        lambda: (
            not [
                j
                for j in batch.list_namespaced_job(namespace).items
                if j.metadata.name.startswith("short-")
            ]
        ),
        120,
        "the garbage collector to delete the org's Jobs",
        interval=2,
    )
