"""Candidates that break, cheat or hang each become a `crash` with its reason, on the cluster:
the openai proposer talks to a scripted OpenAI-compatible server, with its API key read by the
operator from the org's Secret, and the trainer pods never see that key."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
from kubernetes import client
from on_cluster import Orgs, research_org

from autoresearch_operator.k8s.secrets import ALLOWED_HOSTS_ANNOTATION
from support.fake_openai_server import FakeOpenAI

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

API_KEY = f"sk-test-{secrets.token_hex(8)}"


def edit(hypothesis: str, search: str, replace: str) -> str:
    return f"HYPOTHESIS: {hypothesis}\n\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


RAISES = edit(
    "a bug",
    "optimizers = [muon, adamw]",
    'optimizers = [muon, adamw]\nraise RuntimeError("candidate bug")',
)
PEEKS = edit(
    "let attention see the whole sequence",
    "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)",
    "        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)",
)
HANGS = edit(
    "wait for inspiration",
    "optimizers = [muon, adamw]",
    "optimizers = [muon, adamw]\nwhile True:\n    time.sleep(1)",
)


@pytest.fixture
def llm():
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


def test_a_bug_a_cheat_and_a_hang_each_crash_with_their_reason(
    cluster, namespace, process_node, operator, llm
):
    process_node(f"cpu-{secrets.token_hex(3)}")
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_secret(
        namespace,
        {
            # the Secret itself allows the scripted server's host to receive it (k8s/secrets.py)
            "metadata": {"name": "llm", "annotations": {ALLOWED_HOSTS_ANNOTATION: "127.0.0.1"}},
            "data": {"apiKey": base64.b64encode(API_KEY.encode()).decode()},
        },
    )
    for reply in (RAISES, PEEKS, HANGS):
        llm.reply(reply)
    body = research_org(
        "breaker", 4,
        proposer={"type": "openai", "model": "fake-model", "baseURL": llm.base_url,
                  "apiKeySecretRef": {"name": "llm", "key": "apiKey"}, "maxRetries": 0},
    )  # fmt: skip
    orgs = Orgs(cluster, namespace)
    orgs.create(body)
    final = orgs.wait_completed("breaker", operator, 840)

    outcomes = [
        (e["experiment"], e["outcome"], e.get("reason")) for e in final["recentExperiments"]
    ]
    assert outcomes == [
        (0, "keep", None),
        (1, "crash", "exception"),
        (2, "crash", "rejected-by-harness"),
        (3, "crash", "timeout"),
    ], final["recentExperiments"]
    details = {e["experiment"]: e.get("detail", "") for e in final["recentExperiments"]}
    assert "candidate bug" in details[1]
    assert "sees the future" in details[2]
    assert "end of its window" in details[3]
    assert final["counts"]["crashed"] == 3 and final["counts"]["kept"] == 1

    # The key went to the LLM, from the operator, and nowhere else.
    assert {r.headers.get("Authorization") for r in llm.requests} == {f"Bearer {API_KEY}"}
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(
        namespace, label_selector="autoresearch.dev/org=breaker"
    )
    assert len(jobs.items) == 4
    for job in jobs.items:
        pod = cluster.api.sanitize_for_serialization(job.spec.template.spec)
        text = json.dumps(pod)
        assert API_KEY not in text and "secretKeyRef" not in text and "secretRef" not in text
        assert not [v for v in pod.get("volumes", []) if "secret" in v or "projected" in v]
        assert pod["automountServiceAccountToken"] is False
