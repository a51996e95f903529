"""The data-prepare Job and the experiment pod's commands, as built for the cluster."""

from __future__ import annotations

import pytest

from autoresearch_operator.k8s.builders import experiment_job, prepare_job, prepare_job_name
from autoresearch_operator.spec import org_from_resource

BODY = {
    "apiVersion": "autoresearch.dev/v1alpha1",
    "kind": "ResearchOrg",
    "metadata": {"name": "explorer", "namespace": "research", "uid": "u"},
    "spec": {"program": "x"},
}


def test_prepare_job_tokenizes_every_source_into_the_claim_once():
    job = prepare_job(
        "research", image="trainer:1", data_claim="autoresearch-data",
        sources=["https://h/shard_0.parquet", "https://h/shard_1.parquet"], vocab_size=512,
    )  # fmt: skip
    assert (
        job["metadata"]["name"]
        == "autoresearch-data-prepare"
        == prepare_job_name("autoresearch-data")
    )
    assert "ownerReferences" not in job["metadata"]  # shared by the namespace's orgs
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["workingDir"] == "/app"
    assert container["command"] == [
        "python", "prepare.py", "--data-dir", "/data",
        "--source", "https://h/shard_0.parquet", "--source", "https://h/shard_1.parquet",
        "--vocab-size", "512",
    ]  # fmt: skip
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]  # writable
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "autoresearch-data"}
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_prepare_job_needs_a_source():
    with pytest.raises(ValueError, match="at least one source"):
        prepare_job("research", image="i", data_claim="d", sources=[])


def test_prepare_job_names_stay_valid_for_long_claims():
    name = prepare_job_name("c" * 63)
    assert len(name) <= 63 and name.endswith("-prepare")


def test_experiment_containers_run_the_harness_from_the_image_directory():
    job = experiment_job(org_from_resource(BODY), BODY, 1, "a" * 40, data_claim="d")
    pod = job["spec"]["template"]["spec"]
    [train], [evaluate] = pod["initContainers"], pod["containers"]
    for container, phase in ((train, "train"), (evaluate, "evaluate")):
        assert container["workingDir"] == "/app"
        assert container["command"][:4] == ["python", "harness.py", "--phase", phase]
    # A harness failure in training leaves its log tail in the termination message.
    assert train["terminationMessagePolicy"] == "FallbackToLogsOnError"
