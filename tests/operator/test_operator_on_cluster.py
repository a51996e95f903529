"""End to end on the local control plane: `autoresearch operator` as a local process with its
ServiceAccount's token, a real API server, Job controller and scheduler, and a process kubelet
that runs the trainer pods' commands.

A ResearchOrg with the tiny profile and the mutate proposer must prepare its data, train every
experiment of its budget in Jobs, and reach Completed with status, Events and metrics agreeing,
both as /metrics serves them and as a real Prometheus scraped them, through the PromQL of every
panel of the chart's Grafana dashboard.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from pathlib import Path

import pytest
import testcluster
from kubernetes import client
from kubernetes.client.rest import ApiException
from on_cluster import GROUP, PLURAL, REPO, VERSION, Orgs, research_org

from support.prometheus import Prometheus

pytestmark = pytest.mark.cluster

EXPERIMENTS = 3
DASHBOARD = REPO / "charts" / "autoresearch-operator" / "files" / "dashboard.json"
BEST_PANEL = "val_bpb per org: best and each experiment; the best's test_bpb (held out)"


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
    cluster, namespace, process_node, operator, prometheus
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
        f"explorer-exp-{n:05d}-run-0" for n in range(EXPERIMENTS)
    ]
    # Candidate code gets no network: the operator made the deny-all policy of the namespace,
    # and it selects exactly the experiment pods, never the prepare pod (it downloads its
    # sources). The process kubelet has no CNI to enforce it: the object is what is asserted.
    policy = client.NetworkingV1Api(cluster.api).read_namespaced_network_policy(
        "autoresearch-experiments", namespace
    )
    assert policy.spec.policy_types == ["Ingress", "Egress"]
    assert not policy.spec.ingress and not policy.spec.egress
    wanted = policy.spec.pod_selector.match_labels
    selected = {
        j.metadata.name: wanted.items() <= j.spec.template.metadata.labels.items() for j in jobs
    }
    assert selected == {name: name != "autoresearch-data-prepare" for name in names}

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

    assert_prometheus_agrees_with_status(prometheus, namespace, "explorer", final)


def dashboard_queries(path: Path, org: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, with Grafana's variables as it fills them."""
    panels = json.loads(path.read_text())["panels"]
    return [
        (panel["title"], target["expr"].replace("$org", org).replace("$__rate_interval", "5m"))
        for panel in panels
        for target in panel.get("targets", [])
    ]


def assert_prometheus_agrees_with_status(
    prometheus: Prometheus, namespace: str, org: str, final: dict
) -> None:
    """What a cluster's Prometheus stored from /metrics is what `kubectl get` shows."""
    selector = f'namespace="{namespace}",org="{org}"'
    testcluster.wait_for(
        lambda: prometheus.query(f'autoresearch_org_phase{{{selector},phase="Completed"}} == 1'),
        60,
        "Prometheus to scrape the Completed phase",
        interval=1,
    )
    (best,) = prometheus.query(f"autoresearch_best_val_bpb{{{selector}}}")
    assert best["value"] == final["best"]["valBpb"]
    (best_test,) = prometheus.query(f"autoresearch_best_test_bpb{{{selector}}}")
    assert best_test["value"] == final["best"]["testBpb"]
    (baseline,) = prometheus.query(f"autoresearch_baseline_val_bpb{{{selector}}}")
    assert baseline["value"] == final["baseline"]["valBpb"]
    stored = {
        sample["metric"]["outcome"]: sample["value"]
        for sample in prometheus.query(
            f"sum by (outcome) (autoresearch_experiments_total{{{selector}}})"
        )
    }
    counts = final["counts"]
    assert sum(stored.values()) == counts["total"]
    assert stored.get("keep", 0) == counts["kept"]
    assert stored.get("discard", 0) == counts["discarded"]
    assert stored.get("crash", 0) == counts["crashed"]
    (gpu,) = prometheus.query(f"sum(autoresearch_gpu_seconds_total{{{selector}}})")
    assert gpu["value"] == pytest.approx(final["gpuSeconds"], rel=0.01, abs=1.0)

    # Every panel's query runs on a real Prometheus (a PromQL error raises here), and the panels
    # that need no rate window show this org, with the numbers the status has.
    results = {}
    for title, expr in dashboard_queries(DASHBOARD, org):
        results.setdefault(title, []).append(prometheus.query(expr))
    for title in (BEST_PANEL, "Keep rate", "GPU-hours per org",
                  "Experiments per GPU-hour", "Running experiments", "Org phase"):  # fmt: skip
        assert all(result for result in results[title]), f"panel {title!r} shows nothing"
    (keep_rate,) = results["Keep rate"][0]
    assert keep_rate["value"] == pytest.approx(counts["kept"] / counts["total"])
    (best_panel,) = results[BEST_PANEL][0]
    assert best_panel["value"] == final["best"]["valBpb"]
    (best_test_panel,) = results[BEST_PANEL][3]  # the best's held-out score, asked for when kept
    assert best_test_panel["value"] == final["best"]["testBpb"]


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
            j.metadata.name == "short-exp-00000-run-0"
            for j in batch.list_namespaced_job(namespace).items
        ),
        300,
        "the first experiment's Job",
        interval=2,
    )
    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "short")
    deleted = time.monotonic()

    def gone() -> bool:
        try:
            objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "short")
        except ApiException as err:
            return err.status == 404
        return False

    # Its GPUs are released at once: the daemon stops within a second, kopf releases the
    # finalizer at its next check (every 2 s), the garbage collector deletes the running Job.
    try:
        testcluster.wait_for(gone, 15, "the org to be deleted (kopf's finalizer released)")
    except TimeoutError:
        raise AssertionError(operator.log_tail()) from None
    core = client.CoreV1Api(cluster.api)
    testcluster.wait_for(
        lambda: (
            not [j for j in batch.list_namespaced_job(namespace).items
                 if j.metadata.name.startswith("short-")]
            and not core.list_namespaced_pod(
                namespace, label_selector="autoresearch.dev/org=short").items
        ),
        30,
        "the garbage collector to delete the org's Jobs and their pods",
        interval=1,
    )  # fmt: skip
    print(f"org and its Jobs gone {time.monotonic() - deleted:.1f} s after the delete")
