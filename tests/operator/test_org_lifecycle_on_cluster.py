"""How an org waits and fails on the cluster: paused until resumed, failed with a message that
says what to fix when its Secret is missing, its data cannot be prepared, or its baseline
crashes."""

from __future__ import annotations

import secrets
import time

import pytest
import testcluster
from kubernetes import client
from on_cluster import GROUP, PLURAL, VERSION, Orgs, research_org

from support.fake_openai_server import FakeOpenAI

pytestmark = pytest.mark.cluster


def wait_phase(orgs: Orgs, name: str, phase: str, operator, timeout: float = 240) -> dict:
    try:
        testcluster.wait_for(
            lambda: orgs.status(name).get("phase") == phase, timeout, f"{name} to be {phase}"
        )
    except TimeoutError:
        raise AssertionError(f"{orgs.status(name)}\n{operator.log_tail()}") from None
    return orgs.status(name)


def job_names(cluster, namespace: str) -> list[str]:
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
    return sorted(j.metadata.name for j in jobs)


def warnings_about(cluster, namespace: str, name: str) -> list[str]:
    events = client.CoreV1Api(cluster.api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},type=Warning"
    )
    return [e.message for e in events.items]


@pytest.mark.slow
def test_a_paused_org_starts_nothing_until_resumed(cluster, namespace, process_node, operator):
    process_node(f"cpu-{secrets.token_hex(3)}")
    orgs = Orgs(cluster, namespace)
    orgs.create(research_org("sleeper", 1, paused=True))
    status = wait_phase(orgs, "sleeper", "Paused", operator)
    assert "spec.paused" in status["message"]
    time.sleep(5)
    assert job_names(cluster, namespace) == []
    orgs.objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "sleeper", {"spec": {"paused": False}}
    )
    final = orgs.wait_completed("sleeper", operator, 600)
    assert final["counts"]["total"] == 1 and final["observedGeneration"] == 2


def test_a_missing_api_key_secret_fails_the_org_naming_the_secret(cluster, namespace, operator):
    orgs = Orgs(cluster, namespace)
    proposer = {"type": "openai", "model": "gpt-x",
                "apiKeySecretRef": {"name": "llm", "key": "token"}}  # fmt: skip
    orgs.create(research_org("keyless", 2, proposer=proposer))
    status = wait_phase(orgs, "keyless", "Failed", operator, 60)
    assert f"Secret {namespace}/llm" in status["message"] and "404" in status["message"]
    assert status["message"] in warnings_about(cluster, namespace, "keyless")
    assert job_names(cluster, namespace) == []  # nothing runs without a proposer


def test_a_secret_is_never_sent_to_a_host_nobody_allowed(cluster, namespace, operator):
    """Creating an org must not amount to reading the namespace's Secrets: the operator's
    configuration (the chart's default: api.openai.com) and the Secret allow no 127.0.0.1."""
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        namespace, {"metadata": {"name": "team-key"}, "stringData": {"apiKey": "sk-not-yours"}}
    )
    llm = FakeOpenAI()  # the endpoint of whoever wrote the org
    llm.start()
    try:
        proposer = {"type": "openai", "model": "m", "baseURL": llm.base_url,
                    "apiKeySecretRef": {"name": "team-key"}}  # fmt: skip
        Orgs(cluster, namespace).create(research_org("exfiltrator", 2, proposer=proposer))
        status = wait_phase(Orgs(cluster, namespace), "exfiltrator", "Failed", operator, 60)
        time.sleep(2)  # anything sent after the refusal would arrive by now
    finally:
        llm.stop()
    assert llm.requests == []
    message = status["message"]
    assert message.startswith("spec.proposer.baseURL:") and f"{namespace}/team-key" in message
    assert "autoresearch.dev/allowed-hosts" in message and "sk-not-yours" not in message
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["message"] == message
    assert message in warnings_about(cluster, namespace, "exfiltrator")
    assert job_names(cluster, namespace) == []


def test_a_failed_prepare_job_fails_the_org_and_says_how_to_retry(
    cluster, namespace, process_node, operator_process
):
    process_node(f"cpu-{secrets.token_hex(3)}")
    operator_process.env["AUTORESEARCH_DATA_SOURCES"] = "/nonexistent/corpus.txt"
    operator_process.start()
    orgs = Orgs(cluster, namespace)
    orgs.create(research_org("unprepared", 2))
    status = wait_phase(orgs, "unprepared", "Failed", operator_process, 300)
    assert "preparing the data failed" in status["message"], status["message"]
    assert "/nonexistent/corpus.txt" in status["message"] and "delete the Job" in status["message"]
    assert job_names(cluster, namespace) == ["autoresearch-data-prepare"]


def test_a_crashed_baseline_fails_the_org_without_recording_it(
    cluster, namespace, process_node, operator_process
):
    """No data sources: the claim is taken as prepared; here it is empty, so the baseline
    crashes, which says the environment is broken rather than anything about a candidate."""
    process_node(f"cpu-{secrets.token_hex(3)}")
    operator_process.env["AUTORESEARCH_DATA_SOURCES"] = ""
    operator_process.start()
    orgs = Orgs(cluster, namespace)
    orgs.create(research_org("grounded", 2))
    status = wait_phase(orgs, "grounded", "Failed", operator_process, 300)
    assert "baseline" in status["message"], status["message"]
    assert "change the spec" in status["message"]
    assert status.get("counts", {}).get("total", 0) == 0  # not recorded: it runs again once fixed
    assert status.get("counts", {}).get("running", 0) == 0  # the crashed run is not running
    assert job_names(cluster, namespace) == ["grounded-exp-00000-run-0"]  # no prepare Job
