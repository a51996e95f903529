"""The chart's RBAC with `watchNamespaces` set, on the local control plane: a release that serves
one namespace can read that namespace's Secrets, and nothing in any other namespace.

A second release of the chart, with its own name and namespace, beside the `ar` release that the
other tests share; it is uninstalled at the end.
"""

from __future__ import annotations

import helm_python as helm
import pytest
import testcluster
from kubernetes import client
from kubernetes.client.rest import ApiException
from on_cluster import CHART_VALUES, ChartRelease

pytestmark = pytest.mark.cluster

RELEASE = "scoped"


def status_of(call, *args) -> int:
    """The HTTP status of one API call: 200, or the ApiException's."""
    try:
        call(*args)
    except ApiException as err:
        return err.status
    return 200


def test_a_release_watching_one_namespace_can_touch_nothing_outside_it(cluster, crd, namespace):
    release_namespace = cluster.create_namespace("scoped-release")
    other = cluster.create_namespace("scoped-other")
    try:
        values = {**CHART_VALUES, "watchNamespaces": [namespace], "rbac": {"create": True}}
        release = ChartRelease.install(
            cluster, name=RELEASE, namespace=release_namespace, values=values
        )
        kinds = {(d["kind"], d["metadata"].get("namespace")) for d in release.manifest}
        assert {("Role", namespace), ("RoleBinding", namespace)} <= kinds
        assert not {kind for kind, _ in kinds} & {"ClusterRole", "ClusterRoleBinding"}

        admin = client.CoreV1Api(cluster.api)
        for ns in (namespace, other):
            secret = {"metadata": {"name": "llm"}, "stringData": {"apiKey": "not-a-real-key"}}
            admin.create_namespaced_secret(ns, secret)
        token = cluster.kubectl(
            "create", "token", release.service_account, "-n", release.namespace,
            "--duration=10m",
        ).stdout.strip()  # fmt: skip
        as_operator = cluster.client_for_token(token)
        core, batch = client.CoreV1Api(as_operator), client.BatchV1Api(as_operator)

        # The authorizer learns of a new RoleBinding from its informer, a moment after the write.
        testcluster.wait_for(
            lambda: status_of(core.read_namespaced_secret, "llm", namespace) == 200,
            15,
            "the release's Role to allow reading a Secret in its watched namespace",
        )
        assert status_of(core.read_namespaced_secret, "llm", other) == 403
        assert status_of(batch.list_namespaced_job, other) == 403
    finally:
        with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=release_namespace) as cfg:
            cfg.uninstall(RELEASE, ignore_not_found=True, timeout=60)
        cluster.delete_namespace(other)
        cluster.delete_namespace(release_namespace)
