"""Fixtures for running the operator against the local control plane (tests/conftest.py).

The chart is installed into the cluster with Helm's Go SDK, and the operator runs as a local
process with the token of the chart's ServiceAccount and the environment of the chart's
Deployment, never with the admin credentials the tests use: every test also proves the chart's
RBAC rules and settings.
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
    ChartRelease,
    DataClaim,
    OperatorProcess,
    operator_account_kubeconfig,
)

from support.prometheus import Prometheus
from support.prometheus import find_binary as find_prometheus


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
def chart_release(cluster, crd) -> ChartRelease:
    """The chart, installed (or upgraded) with Helm's Go SDK, as `helm upgrade --install`."""
    return ChartRelease.install(cluster)


@pytest.fixture(scope="session")
def operator_kubeconfig(
    cluster, chart_release: ChartRelease, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig holding only a token of the chart's ServiceAccount."""
    return operator_account_kubeconfig(
        cluster, tmp_path_factory.mktemp("operator-account"), chart_release
    )


@pytest.fixture
def data_claim(cluster, namespace: str) -> Iterator[str]:
    """A claim bound to a hostPath volume: the process kubelet mounts the host directory."""
    claim = DataClaim.create(cluster, namespace)
    yield claim.name
    claim.delete()


@pytest.fixture
def operator_process(
    cluster,
    namespace: str,
    data_claim: str,
    chart_release: ChartRelease,
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """The operator watching the test's namespace, not yet started."""
    if not CORPUS.is_file():
        pytest.skip(f"corpus {CORPUS} not found (set AUTORESEARCH_CORPUS)")
    process = OperatorProcess.watching(
        namespace,
        kubeconfig=operator_kubeconfig,
        data_claim=data_claim,
        directory=tmp_path,
        chart=chart_release,
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


@pytest.fixture
def prometheus(operator_process: OperatorProcess, tmp_path: Path) -> Iterator[Prometheus]:
    """A real Prometheus (Debian's package, from `make prometheus`) scraping the operator every
    second, as the chart's ServiceMonitor has a cluster's Prometheus do."""
    if find_prometheus() is None:
        pytest.skip("prometheus not found: `make prometheus` fetches Debian's package")
    target = operator_process.metrics_url.removeprefix("http://")
    server = Prometheus.start(tmp_path / "prometheus", [target], scrape_interval="1s")
    yield server
    server.stop()
