"""Fixtures for running the operator against the local control plane (tests/conftest.py).

The operator runs as a local process with the token of the ServiceAccount in deploy/rbac.yaml,
never with the admin credentials the tests use, so every test also proves the RBAC rules.
Helpers the tests call directly are in on_cluster.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from on_cluster import (
    CORPUS,
    CRD,
    GROUP,
    PLURAL,
    DataClaim,
    OperatorProcess,
    operator_account_kubeconfig,
)


@pytest.fixture(scope="session")
def crd(cluster) -> None:
    """The canonical CRD from crds/, exactly as a user would apply it."""
    applied = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CRD), check=False
    )
    assert applied.returncode == 0, f"the API server refused {CRD}: {applied.stderr}"
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    f"crd/{PLURAL}.{GROUP}")  # fmt: skip


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig holding only a token of deploy/rbac.yaml's ServiceAccount."""
    return operator_account_kubeconfig(cluster, tmp_path_factory.mktemp("operator-account"))


@pytest.fixture
def data_claim(cluster, namespace: str) -> Iterator[str]:
    """A claim bound to a hostPath volume: the process kubelet mounts the host directory."""
    claim = DataClaim.create(cluster, namespace)
    yield claim.name
    claim.delete()


@pytest.fixture
def operator_process(
    cluster, namespace: str, data_claim: str, operator_kubeconfig: Path, tmp_path: Path, crd
) -> Iterator[OperatorProcess]:
    """The operator watching the test's namespace, not yet started."""
    if not CORPUS.is_file():
        pytest.skip(f"corpus {CORPUS} not found (set AUTORESEARCH_CORPUS)")
    process = OperatorProcess.watching(
        namespace, kubeconfig=operator_kubeconfig, data_claim=data_claim, directory=tmp_path
    )
    try:
        yield process
    finally:
        process.stop()
    log = process.log.read_text(errors="replace") if process.log.exists() else ""
    forbidden = [
        line for line in log.splitlines() if "orbidden" in line or "Not enough permissions" in line
    ]
    assert not forbidden, "the operator's ServiceAccount lacks a rule:\n" + "\n".join(forbidden)


@pytest.fixture
def operator(operator_process: OperatorProcess) -> OperatorProcess:
    """The operator, running."""
    operator_process.start()
    return operator_process
