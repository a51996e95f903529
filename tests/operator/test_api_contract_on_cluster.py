"""What the API server itself enforces, before the operator sees anything: the CRD's schema and
CEL rules reject bad specs naming the field, and the operator's ServiceAccount may do only what
deploy/rbac.yaml grants."""

from __future__ import annotations

import json

import pytest
from on_cluster import GROUP, PLURAL, research_org

pytestmark = pytest.mark.cluster


def with_spec(**changes) -> dict:
    body = research_org("bad", 2)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = body["spec"]
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return body


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (with_spec(trainer__timeBudget=30), 'unknown field "spec.trainer.timeBudget"'),
        (with_spec(trainer__timeBudgetSeconds=0), "spec.trainer.timeBudgetSeconds"),
        (with_spec(proposer__temperature=3), "spec.proposer.temperature"),
        (with_spec(proposer__type="gpt"), "spec.proposer.type"),
        (with_spec(trainer__profile="huge"), "spec.trainer.profile"),
        (
            with_spec(programRef={"name": "program"}),
            "set exactly one of spec.program and spec.programRef",
        ),
    ],
    ids=[
        "unknown-field",
        "out-of-range",
        "above-maximum",
        "wrong-enum",
        "wrong-profile",
        "program-and-programRef",
    ],  # fmt: skip
)
def test_the_api_server_rejects_an_invalid_spec_naming_the_field(
    cluster, namespace, crd, body, says
):
    applied = cluster.kubectl(
        "apply", "--validate=strict", "-n", namespace, "-f", "-", input=json.dumps(body),
        check=False,
    )  # fmt: skip
    assert applied.returncode != 0, f"accepted: {body['spec']}"
    assert says in applied.stderr, applied.stderr
    listed = cluster.kubectl("get", PLURAL, "-n", namespace, "-o", "name")
    assert listed.stdout.strip() == ""


def test_a_valid_spec_is_accepted_with_its_defaults_filled_in(cluster, namespace, crd):
    applied = cluster.kubectl(
        "apply", "--validate=strict", "-n", namespace, "-f", "-",
        input=json.dumps(research_org("good", 2)), check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    got = json.loads(cluster.kubectl("get", f"{PLURAL}.{GROUP}/good", "-n", namespace,
                                     "-o", "json").stdout)  # fmt: skip
    assert got["spec"]["proposer"]["temperature"] == 0.7
    # what the operator's configuration (the chart's values) fills in is left absent, so that
    # the operator can tell an omitted field from a set one
    assert "image" not in got["spec"]["trainer"]
    assert "maxExperiments" in got["spec"]["budget"]  # research_org sets it


def can_i(cluster, account: str, verb: str, resource: str, namespace: str) -> bool:
    resource, _, subresource = resource.partition("/")
    answer = cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace,
        *([f"--subresource={subresource}"] if subresource else []),
        f"--as={account}", check=False,
    )  # fmt: skip
    return answer.stdout.strip() == "yes"


def test_the_charts_operator_account_may_do_what_it_needs_and_nothing_more(
    cluster, namespace, crd, chart_release
):
    account = f"system:serviceaccount:{chart_release.namespace}:{chart_release.service_account}"
    allowed = [
        ("watch", f"{PLURAL}.{GROUP}"), ("patch", f"{PLURAL}.{GROUP}"),
        ("patch", f"{PLURAL}.{GROUP}/status"), ("create", "jobs.batch"), ("delete", "jobs.batch"),
        ("watch", "jobs.batch"),
        ("list", "pods"), ("watch", "pods"), ("get", "pods/log"), ("create", "configmaps"), ("get", "secrets"),
        ("create", "events"), ("create", f"{PLURAL}.{GROUP}"),
        ("create", "networkpolicies.networking.k8s.io"),
        ("watch", f"researchcontests.{GROUP}"), ("patch", f"researchcontests.{GROUP}/status"),
    ]  # fmt: skip
    refused = [
        ("list", "secrets"), ("watch", "secrets"), ("create", "pods"), ("delete", "pods"),
        ("create", "pods/exec"), ("delete", f"{PLURAL}.{GROUP}"), ("create", f"researchcontests.{GROUP}"),
        ("update", "configmaps"), ("delete", "configmaps"), ("create", "rolebindings"),
        ("get", "nodes"), ("create", "serviceaccounts/token"), ("update", f"{PLURAL}.{GROUP}/status"),
        ("patch", "jobs.batch/status"), ("delete", "networkpolicies.networking.k8s.io"),
        ("patch", "networkpolicies.networking.k8s.io"), ("get", "networkpolicies.networking.k8s.io"),
    ]  # fmt: skip
    assert [a for a in allowed if not can_i(cluster, account, *a, namespace)] == []
    assert [r for r in refused if can_i(cluster, account, *r, namespace)] == []


def test_kubectl_explain_teaches_the_fields(cluster, crd):
    explained = cluster.kubectl("explain", f"{PLURAL}.spec.trainer").stdout
    assert "How each experiment trains" in explained
    assert (
        "timeBudgetSeconds" in explained
        and "Training time per experiment, in seconds." in explained
    )
    status = cluster.kubectl("explain", f"{PLURAL}.status.best").stdout
    assert "The best kept result so far; the branch head." in status


def test_kubectl_get_compares_orgs_by_best_val_bpb(cluster, namespace, crd):
    """What users run to compare orgs: the printer columns, sorted by the best val_bpb."""
    for name, best, baseline, total in (
        ("b", 1.31, 1.40, 9),
        ("a", 1.52, 1.55, 4),
        ("c", 1.12, 1.41, 20),
    ):
        cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=json.dumps(research_org(name, 30))
        )
        status = {"status": {"phase": "Running", "best": {"valBpb": best}, "baseline": {"valBpb": baseline},
                             "counts": {"total": total, "kept": 2, "running": 1}, "gpuHours": total * 0.1}}  # fmt: skip
        cluster.kubectl("patch", f"{PLURAL}.{GROUP}", name, "-n", namespace, "--subresource=status",
                        "--type=merge", "-p", json.dumps(status))  # fmt: skip
    listed = cluster.kubectl("get", PLURAL, "-n", namespace, "--sort-by=.status.best.valBpb").stdout
    header, *rows = listed.splitlines()
    assert header.split() == [
        "NAME",
        "PHASE",
        "BEST",
        "BEST-TEST",
        "BASELINE",
        "EXPERIMENTS",
        "KEPT",
        "RUNNING",
        "GPU-HOURS",
        "AGE",
    ]
    assert [r.split()[0] for r in rows] == ["c", "b", "a"]
    # no test_bpb in these statuses: the BEST-TEST cell is blank, so split() skips it
    assert rows[0].split()[1:8] == ["Running", "1.12", "1.41", "20", "2", "1", "2"]
