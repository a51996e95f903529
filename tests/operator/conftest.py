"""Fixtures for the operator's cluster tests (the unit tests here need none of them).

They wrap hack/cluster/testcluster.py the way tests/cluster/conftest.py does: the control plane
is built on first use, reused when already up, and stopped at the end only if this session
started it (unless AUTORESEARCH_KEEP_CLUSTER=1).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack" / "cluster"))
import testcluster  # noqa: E402


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before any test starts: a cold build outlasts the per-test timeout."""
    wanted = any(item.get_closest_marker("cluster") for item in session.items)
    if wanted and not session.config.option.collectonly:
        capture = session.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            testcluster.build()  # seconds when tests/cluster/conftest.py has built already


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[testcluster.Cluster]:
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # a cold build prints progress for many minutes
        started = testcluster.Cluster.up()
    yield started
    if os.environ.get("AUTORESEARCH_KEEP_CLUSTER") != "1":
        started.down()


@pytest.fixture
def namespace(cluster: testcluster.Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.create_namespace(request.node.name)
    yield name
    cluster.delete_namespace(name)


@pytest.fixture
def process_node(cluster: testcluster.Cluster) -> Iterator:
    nodes: list[testcluster.ProcessNode] = []

    def start(name: str, **options) -> testcluster.ProcessNode:
        node = cluster.start_process_node(name, **options)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()
