"""Pushing an org's history with spec.repo.credentialsSecretRef, on the local control plane.

The remote is a real git smart-HTTP server that requires basic auth (tests/support/
git_http_server.py) on 127.0.0.1, where the operator, a local process, reaches it. The Secret
appears only after the first push failed: that push must be reported (PushFailed, RepoPushed
False) naming the reference and the Secret, the org must go on, and the next push, with the
token, must carry everything, the first experiment's refs included.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import testcluster
from kubernetes import client
from on_cluster import Orgs, research_org

from autoresearch_operator.core.gitrepo import DEFAULT_HTTPS_USERNAME
from support.git_http_server import GitHttpServer

pytestmark = pytest.mark.cluster

EXPERIMENTS = 2
SECRET, KEY = "git-push", "token"


def events_of(cluster, namespace: str, name: str) -> list[client.CoreV1Event]:
    return (
        client.CoreV1Api(cluster.api)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        .items
    )


def test_an_org_pushes_its_branch_and_tried_refs_with_the_token_in_its_secret(
    cluster, namespace, process_node, operator_process, tmp_path: Path
):
    process_node(f"cpu-{secrets.token_hex(3)}")
    # the operator's configuration (chart value security.secretHosts) allows the git server
    hosts = operator_process.env.get("AUTORESEARCH_SECRET_HOSTS", "")
    operator_process.env["AUTORESEARCH_SECRET_HOSTS"] = f"{hosts},127.0.0.1".lstrip(",")
    operator = operator_process
    operator.start()
    token = f"tok-{secrets.token_hex(12)}"
    orgs = Orgs(cluster, namespace)
    with GitHttpServer(tmp_path / "served", DEFAULT_HTTPS_USERNAME, token) as server:
        server.create_bare("orgs.git")
        body = research_org(
            "pusher",
            EXPERIMENTS,
            repo={"url": server.url("orgs.git"),
                  "credentialsSecretRef": {"name": SECRET, "key": KEY}},
        )  # fmt: skip
        # Training lasts at least this long, so the Secret is there before experiment 1 ends.
        body["spec"]["trainer"]["timeBudgetSeconds"] = 10
        orgs.create(body)

        def push_failed() -> list[str]:
            return [e.message for e in events_of(cluster, namespace, "pusher")
                    if e.reason == "PushFailed"]  # fmt: skip

        try:
            testcluster.wait_for(push_failed, 600, "the first push to fail", interval=1)
        except TimeoutError:
            raise AssertionError(f"{orgs.status('pusher')}\n{operator.log_tail()}") from None
        (warning,) = push_failed()
        assert "spec.repo.credentialsSecretRef" in warning, warning
        assert f"Secret {namespace}/{SECRET}" in warning, warning
        client.CoreV1Api(cluster.api).create_namespaced_secret(
            namespace, {"metadata": {"name": SECRET}, "stringData": {KEY: token + "\n"}}
        )

        final = orgs.wait_completed("pusher", operator, 780)
        refs = server.refs("orgs.git")

    assert final["counts"]["total"] == EXPERIMENTS, final
    assert refs["refs/heads/autoresearch/pusher"] == final["best"]["commit"]
    tried = {r: sha for r, sha in refs.items() if r.startswith("refs/autoresearch/pusher/tried/")}
    assert sorted(tried) == [f"refs/autoresearch/pusher/tried/{n}" for n in range(EXPERIMENTS)]
    assert {e["commit"] for e in final["recentExperiments"]} == set(tried.values())
    pushed = {c["type"]: c for c in final["conditions"]}["RepoPushed"]
    assert (pushed["status"], pushed["reason"]) == ("True", "Pushed"), pushed
    assert len(push_failed()) == 1  # the pushes after the Secret appeared all succeeded

    # the token is nowhere a user or a log collector looks
    messages = [e.message or "" for e in events_of(cluster, namespace, "pusher")]
    assert token not in json.dumps(final) and not any(token in m for m in messages)
    assert token not in operator.log.read_text(errors="replace")
