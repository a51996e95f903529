"""Shared test set-up.

`tests/` is importable (test support code lives in tests/support/), and the fixtures for tests
against the local control plane live here, so tests/cluster and tests/operator share one cluster.
The cluster logic is in hack/cluster/testcluster.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
for path in (TESTS, TESTS.parent / "hack" / "cluster"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import testcluster  # noqa: E402

from support.fake_openai_server import FakeOpenAI  # noqa: E402


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before any test starts: a cold build outlasts the per-test timeout."""
    wanted = any(item.get_closest_marker("cluster") for item in session.items)
    if wanted and not session.config.option.collectonly:
        capture = session.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            testcluster.build()


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[testcluster.Cluster]:
    """The cluster: reused when already up, else built (first time: many minutes) and started.

    A cluster that test sessions started stops when the last of them ends, unless
    AUTORESEARCH_KEEP_CLUSTER=1; one from `make cluster-up` keeps running.
    """
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # show build progress even without -s
        started = testcluster.Cluster.up()
    yield started
    if os.environ.get("AUTORESEARCH_KEEP_CLUSTER") != "1":
        started.release()


@pytest.fixture
def namespace(cluster: testcluster.Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = cluster.create_namespace(request.node.name)
    yield name
    cluster.delete_namespace(name)


@pytest.fixture
def process_node(cluster: testcluster.Cluster) -> Iterator:
    """Start process-kubelet nodes: `process_node("gpu-0", gpus=1)`; all stop after the test."""
    nodes: list[testcluster.ProcessNode] = []

    def start(name: str, **options) -> testcluster.ProcessNode:
        node = cluster.start_process_node(name, **options)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A scripted OpenAI-compatible server on loopback (proposer and meta-proposer tests)."""
    server = FakeOpenAI()
    server.start()
    try:
        yield server
    finally:
        server.stop()
