"""`helm install` of the chart into the local control plane, with Helm's own Go SDK.

The API server admits every object the chart renders (the Deployment, its RBAC, the Service, the
state claim, the dashboard ConfigMap), and the starter org that NOTES.txt prints. The operator's
pod itself cannot run here (there is no image to run), so the tests pin it to a node that does
not exist; every operator test instead runs the operator as a process with this release's
ServiceAccount token and Deployment environment (conftest.py).
"""

from __future__ import annotations

import json
import re

import helm_python as helm
import pytest
import testcluster
import yaml
from kubernetes import client
from on_cluster import CHART, CHART_RELEASE, OPERATOR_NAMESPACE

pytestmark = pytest.mark.cluster


def test_helm_install_creates_every_object_the_chart_renders(cluster, chart_release):
    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=OPERATOR_NAMESPACE) as cfg:
        release = cfg.status(CHART_RELEASE)
    assert release["status"] == "deployed", release
    assert release["chart_version"] == yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]

    kinds = sorted(doc["kind"] for doc in chart_release.manifest)
    assert kinds == sorted([
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "PersistentVolumeClaim",
        "Service", "ServiceAccount",
    ])  # fmt: skip
    listed = cluster.kubectl(
        "get", "-f", "-", "-o", "json", input=yaml.safe_dump_all(chart_release.manifest)
    )
    found = {
        (item["kind"], item["metadata"]["name"]) for item in json.loads(listed.stdout)["items"]
    }
    assert found == {(doc["kind"], doc["metadata"]["name"]) for doc in chart_release.manifest}


def test_the_operator_pod_is_admitted_locked_down_and_left_pending(cluster, chart_release):
    """The Deployment's pod exists as the chart wrote it. It stays Pending: its state claim has no
    volume here, and the test values pin it to a node that does not exist."""
    core = client.CoreV1Api(cluster.api)

    def operator_pod():
        pods = core.list_namespaced_pod(
            chart_release.namespace,
            label_selector=f"app.kubernetes.io/instance={CHART_RELEASE}",
        ).items
        return pods[0] if pods else None

    pod = testcluster.wait_for(operator_pod, 60, "the operator Deployment's pod", interval=1)
    assert pod.spec.service_account_name == chart_release.service_account
    assert pod.spec.security_context.run_as_non_root is True
    (container,) = pod.spec.containers
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.liveness_probe.http_get.path == "/healthz"
    unschedulable = testcluster.wait_for(
        lambda: next(
            (c for c in core.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
             .status.conditions or [] if c.type == "PodScheduled" and c.status == "False"),
            None,
        ),
        60,
        "the scheduler to report the operator pod unschedulable",
        interval=1,
    )  # fmt: skip
    assert unschedulable.reason == "Unschedulable", unschedulable


def test_the_starter_org_from_notes_is_accepted_by_the_api_server(cluster, namespace, crd):
    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=OPERATOR_NAMESPACE) as cfg:
        notes = cfg.status(CHART_RELEASE)["notes"]
    starter = re.search(r"<<'YAML'\n(.*?)\nYAML", notes, re.S)
    assert starter, notes
    applied = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
        input=starter.group(1), check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert "researchorg.autoresearch.dev/starter created (server dry run)" in applied.stdout
