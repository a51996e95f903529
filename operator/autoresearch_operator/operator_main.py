"""`autoresearch operator`: run the ResearchOrg operator against the current cluster.

Configuration comes from AUTORESEARCH_* environment variables only (k8s/config.py), checked
before anything starts. Credentials: in-cluster service account, else $KUBECONFIG / ~/.kube/config.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from kubernetes import client, config


def api_client() -> client.ApiClient:
    """In-cluster when running in a pod, else the current kubeconfig context."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    settings = client.Configuration.get_default_copy()
    settings.connection_pool_maxsize = 32  # many orgs' experiments poll their Jobs at once
    return client.ApiClient(settings)


def main(args: argparse.Namespace | None = None) -> int:
    import kopf

    from .k8s.config import ConfigError, load_config
    from .metrics import Heartbeat, OperatorMetrics, serve

    try:
        settings = load_config(os.environ)
    except ConfigError as err:
        print(f"autoresearch operator: {err}", file=sys.stderr)
        return 2
    try:
        api = api_client()
    except config.ConfigException as err:
        print(f"autoresearch operator: no cluster credentials: {err}", file=sys.stderr)
        return 2

    from .k8s import handlers  # noqa: F401  (registers the handlers with kopf)
    from .k8s.contests import handlers as contest_handlers  # noqa: F401
    from .k8s.daemon import Runtime

    kopf.configure(verbose=bool(getattr(args, "verbose", False)), log_format=kopf.LogFormat.PLAIN)
    metrics, heartbeat = OperatorMetrics(), Heartbeat()
    server = serve(metrics, heartbeat, settings.metrics_port) if settings.metrics_port else None
    where = ", ".join(settings.namespaces) or "all namespaces"
    logging.getLogger(__name__).info(
        "watching ResearchOrgs and ResearchContests in %s; state in %s; metrics on :%s",
        where, settings.state_dir, settings.metrics_port or "off",
    )  # fmt: skip
    try:
        kopf.run(
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            memo=kopf.Memo(runtime=Runtime(settings, api, metrics), heartbeat=heartbeat),
        )
    finally:
        if server is not None:
            server.shutdown()
    return 0
