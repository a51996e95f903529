"""The chart's RBAC: the same rules as deploy/rbac.yaml, covering every API call the operator makes,
granted cluster-wide only when the operator serves every namespace."""

from __future__ import annotations

import re

import pytest
import yaml
from helm_render import NAMESPACE, ROOT, objects, one, render

OPERATOR_SOURCE = ROOT / "operator" / "autoresearch_operator"
DEPLOY_RBAC = ROOT / "deploy" / "rbac.yaml"

# kubernetes-client method -> (apiGroup, resource, verb), per file: the custom-object calls in
# k8s/jobs.py go to batch/v1 Jobs, the one in k8s/daemon.py to the ResearchOrg status.
CALLS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("jobs.py", "get_namespaced_custom_object"): ("batch", "jobs", "get"),
    ("jobs.py", "create_namespaced_custom_object"): ("batch", "jobs", "create"),
    ("jobs.py", "delete_namespaced_custom_object"): ("batch", "jobs", "delete"),
    ("jobs.py", "create_namespaced_config_map"): ("", "configmaps", "create"),
    ("jobs.py", "read_namespaced_config_map"): ("", "configmaps", "get"),
    ("jobs.py", "list_namespaced_pod"): ("", "pods", "list"),
    ("jobs.py", "read_namespaced_pod_log"): ("", "pods/log", "get"),
    ("jobs.py", "read_namespaced_secret"): ("", "secrets", "get"),
    # the namespace's Job and pod informers: a list, then a watch through the same method
    ("informer.py", "list_namespaced_custom_object"): ("batch", "jobs", "list"),
    ("informer.py", "list_namespaced_pod"): ("", "pods", "list"),
    # the deny-all NetworkPolicy around experiment pods, once per served namespace
    ("jobs.py", "create_namespaced_network_policy"): (
        "networking.k8s.io",
        "networkpolicies",
        "create",
    ),
    ("daemon.py", "patch_namespaced_custom_object_status"): (
        "autoresearch.dev",
        "researchorgs/status",
        "patch",
    ),  # fmt: skip
    # a contest's orgs (k8s/contests/orgs.py) and the contest's status (k8s/contests/runner.py)
    ("orgs.py", "list_namespaced_custom_object"): ("autoresearch.dev", "researchorgs", "list"),
    ("orgs.py", "create_namespaced_custom_object"): ("autoresearch.dev", "researchorgs", "create"),
    ("orgs.py", "patch_namespaced_custom_object"): ("autoresearch.dev", "researchorgs", "patch"),
    ("runner.py", "patch_namespaced_custom_object_status"): (
        "autoresearch.dev",
        "researchcontests/status",
        "patch",
    ),
}
# What kopf itself does for the handlers in k8s/handlers.py and k8s/contests/handlers.py: watch
# the orgs and contests, patch their finalizer, annotations and status, and post Events; and the
# watch of the Jobs informer, a stream over a list method that the scan above cannot tell apart.
KOPF = {
    ("autoresearch.dev", "researchorgs", "list"),
    ("autoresearch.dev", "researchorgs", "watch"),
    ("autoresearch.dev", "researchorgs", "patch"),
    ("autoresearch.dev", "researchcontests", "list"),
    ("autoresearch.dev", "researchcontests", "watch"),
    ("autoresearch.dev", "researchcontests", "patch"),
    ("autoresearch.dev", "researchcontests/status", "patch"),
    ("", "events", "create"),
    ("batch", "jobs", "watch"),  # k8s/informer.py streams list_namespaced_custom_object
    ("", "pods", "watch"),  # ... and list_namespaced_pod
}
# Modules that call the API with the user's own credentials, never the operator's:
# `autoresearch compare --cluster` and `plot --cluster` list ResearchOrgs across namespaces.
USER_SIDE = {"cluster_report.py"}
CLIENT_CALL = re.compile(
    r"\.((?:create|read|get|list|patch|replace|delete)_(?:namespaced_|cluster_)?\w+)\b"
)


def granted(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_chart_clusterrole_rules_are_identical_to_deploy_rbac_yaml():
    if not DEPLOY_RBAC.exists():
        pytest.skip("deploy/rbac.yaml does not exist yet; nothing to compare the chart's rules to")
    deploy = [d for d in yaml.safe_load_all(DEPLOY_RBAC.read_text()) if d]
    (expected,) = [d["rules"] for d in deploy if d["kind"] == "ClusterRole"]
    assert one(render(), "ClusterRole")["rules"] == expected, (
        "copy the rules of deploy/rbac.yaml into templates/clusterrole.yaml"
    )


def test_clusterrole_allows_every_api_call_in_the_operators_code():
    needed, unknown = set(KOPF), []
    for path in sorted(OPERATOR_SOURCE.rglob("*.py")):
        if path.name in USER_SIDE:
            continue
        for method in CLIENT_CALL.findall(path.read_text()):
            if not re.search(r"namespaced|cluster|custom_object", method):
                continue  # not a kubernetes-client call (e.g. read_job, create_or_adopt_job)
            if (path.name, method) not in CALLS:
                unknown.append(f"{path.name}: {method}")
            else:
                needed.add(CALLS[(path.name, method)])
    assert unknown == [], "new API calls: add them to CALLS and to the ClusterRole"
    missing = needed - granted(one(render(), "ClusterRole")["rules"])
    assert missing == set()


def test_clusterrole_grants_no_wildcards_and_never_escalates():
    rules = one(render(), "ClusterRole")["rules"]
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key]
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        assert "nonResourceURLs" not in rule
    assert not any(r.startswith(("roles", "clusterroles")) for _, r, _ in granted(rules))


def test_binding_gives_the_role_to_the_service_account_the_operator_runs_as():
    rendered = render()
    role, binding = one(rendered, "ClusterRole"), one(rendered, "ClusterRoleBinding")
    account = one(rendered, "ServiceAccount")
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_an_existing_service_account_is_used_when_the_chart_creates_none():
    rendered = render({"serviceAccount": {"create": False, "name": "existing"}})
    assert rendered["serviceaccount.yaml"] == []
    assert one(rendered, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == (
        "existing"
    )
    assert one(rendered, "ClusterRoleBinding")["subjects"][0]["name"] == "existing"


# -- watchNamespaces: one Role per watched namespace, nothing cluster-wide ----------------------

WATCHED = {"watchNamespaces": ["team-a", "team-b"]}


def test_watched_namespaces_get_a_role_each_with_exactly_the_rules_and_nothing_cluster_wide():
    rendered = render(WATCHED)
    kinds = [doc["kind"] for doc in objects(rendered)]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    roles = {
        doc["metadata"]["namespace"]: doc for doc in objects(rendered) if doc["kind"] == "Role"
    }
    assert sorted(roles) == ["team-a", "team-b"]
    cluster_wide = one(render(), "ClusterRole")["rules"]
    for role in roles.values():
        assert role["rules"] == cluster_wide  # one list of rules: the two cannot drift


def test_each_role_binding_gives_its_namespaces_role_to_the_charts_service_account():
    rendered = render(WATCHED)
    account = one(rendered, "ServiceAccount")
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in objects(rendered)
             if d["kind"] == "Role"}  # fmt: skip
    bindings = [doc for doc in objects(rendered) if doc["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
        assert binding["roleRef"]["kind"] == "Role"
        assert (binding["metadata"]["namespace"], binding["roleRef"]["name"]) in roles
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
        ]


def test_rbac_create_false_renders_no_role_anywhere():
    for values in ({}, WATCHED):
        rendered = render({**values, "rbac": {"create": False}})
        kinds = {doc["kind"] for doc in objects(rendered)}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
