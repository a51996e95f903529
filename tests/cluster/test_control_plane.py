"""The local control plane is real Kubernetes: API server validation, controllers, RBAC, scheduler."""

from __future__ import annotations

import json
import secrets

import pytest
import testcluster
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster

GROUP = "test.autoresearch.dev"


def test_api_server_is_the_kubernetes_release_built_here(cluster):
    version = client.VersionApi(cluster.api).get_code()
    assert version.git_version.startswith("v1.34.")
    assert (
        cluster.kubectl("version", "-o", "json").stdout.count(version.git_version) == 2
    )  # client and server


@pytest.fixture
def widget_crd(cluster):
    """A namespaced CRD with a structural schema and a status subresource (unique per test)."""
    plural = f"widgets{secrets.token_hex(3)}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": f"Widget{plural[7:]}"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1, "maximum": 8},
                                        "color": {"type": "string", "enum": ["red", "blue"]},
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"best": {"type": "number"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    extensions = client.ApiextensionsV1Api(cluster.api)
    extensions.create_custom_resource_definition(crd)

    def established():
        found = extensions.read_custom_resource_definition(crd["metadata"]["name"])
        return any(
            c.type == "Established" and c.status == "True" for c in found.status.conditions or []
        )

    testcluster.wait_for(established, 30, "the CRD to be established")
    yield plural, crd["spec"]["names"]["kind"]
    extensions.delete_custom_resource_definition(crd["metadata"]["name"])


def test_crd_prunes_unknown_fields_and_rejects_invalid_values(cluster, namespace, widget_crd):
    plural, kind = widget_crd
    objects = client.CustomObjectsApi(cluster.api)
    body = {
        "apiVersion": f"{GROUP}/v1",
        "kind": kind,
        "metadata": {"name": "w"},
        "spec": {"size": 2, "color": "red", "flavour": "unknown field"},
        "status": {"best": 1.5},
    }
    created = objects.create_namespaced_custom_object(GROUP, "v1", namespace, plural, body)
    assert created["spec"] == {"size": 2, "color": "red"}  # the unknown field is pruned
    assert "status" not in created  # with a status subresource, the main resource ignores status

    objects.patch_namespaced_custom_object_status(
        GROUP, "v1", namespace, plural, "w", {"status": {"best": 0.9}}
    )
    assert objects.get_namespaced_custom_object(GROUP, "v1", namespace, plural, "w")["status"] == {
        "best": 0.9
    }

    invalid = {**body, "metadata": {"name": "bad"}, "spec": {"size": 99, "color": "green"}}
    with pytest.raises(ApiException) as rejected:
        objects.create_namespaced_custom_object(GROUP, "v1", namespace, plural, invalid)
    assert rejected.value.status == 422
    causes = {
        c["field"]: c["message"] for c in json.loads(rejected.value.body)["details"]["causes"]
    }
    assert (
        causes["spec.size"]
        == "Invalid value: 99: spec.size in body should be less than or equal to 8"
    )
    assert causes["spec.color"].startswith(
        'Unsupported value: "green": supported values: "red", "blue"'
    )


def test_deleting_an_owner_garbage_collects_its_job(cluster, namespace):
    owner = cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    batch = client.BatchV1Api(cluster.api)
    batch.create_namespaced_job(
        namespace,
        {
            "metadata": {
                "name": "owned",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner.metadata.uid,
                    }
                ],
            },
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "none", "command": ["true"]}],
                    }
                },
            },
        },
    )
    cluster.core.delete_namespaced_config_map("owner", namespace)

    def job_gone() -> bool:
        return not cluster._exists(batch.read_namespaced_job, "owned", namespace)

    testcluster.wait_for(job_gone, 60, "the garbage collector to delete the owned Job")


def test_service_account_with_a_narrow_role_is_forbidden_outside_it(cluster, namespace):
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-configmaps",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    token = cluster.core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    as_reader = client.CoreV1Api(cluster.client_for_token(token))

    as_reader.list_namespaced_config_map(namespace)  # allowed by the Role
    user = f"system:serviceaccount:{namespace}:reader"
    for forbidden in (
        lambda: as_reader.list_namespaced_secret(namespace),
        lambda: as_reader.list_namespaced_config_map("default"),
        lambda: as_reader.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}}),
    ):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403
        assert f'User "{user}" cannot' in json.loads(denied.value.body)["message"]


def test_kwok_simulates_many_gpu_nodes_and_the_scheduler_spreads_gpu_pods(cluster, namespace):
    pool = f"kwok-{secrets.token_hex(2)}"
    names = cluster.add_kwok_nodes(40, prefix=f"{pool}-", gpus=8, labels={"pool": pool})
    try:

        def all_ready() -> bool:
            nodes = cluster.core.list_node(label_selector=f"pool={pool}").items
            return len(nodes) == 40 and all(
                any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                for n in nodes
            )

        testcluster.wait_for(all_ready, 60, "kwok to make 40 nodes Ready")
        batch = client.BatchV1Api(cluster.api)
        batch.create_namespaced_job(
            namespace,
            {
                "metadata": {"name": "wide"},
                "spec": {
                    "parallelism": 5,
                    "completions": 5,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "nodeSelector": {"pool": pool},
                            "tolerations": [
                                {
                                    "key": "kwok.x-k8s.io/node",
                                    "operator": "Exists",
                                    "effect": "NoSchedule",
                                }
                            ],
                            "containers": [
                                {
                                    "name": "train",
                                    "image": "trainer",
                                    "command": ["python", "train.py"],
                                    "resources": {"limits": {"nvidia.com/gpu": "8"}},
                                }
                            ],
                        }
                    },
                },
            },
        )

        def completed() -> bool:
            status = batch.read_namespaced_job_status("wide", namespace).status
            return (status.succeeded or 0) == 5

        testcluster.wait_for(completed, 90, "the Job on simulated nodes to complete")
        pods = cluster.core.list_namespaced_pod(namespace, label_selector="job-name=wide").items
        assert len({p.spec.node_name for p in pods}) == 5  # 8 GPUs each: one pod per node
    finally:
        cluster.delete_nodes(names)
