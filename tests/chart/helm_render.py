"""Rendering the Helm chart with Helm's own Go SDK (helm-python-sdk bundles it; no helm binary).

`render(values, api_versions=...)` is `helm template --api-versions ...`: the values are
validated against values.schema.json first (a bad value raises HelmValuesError), then every
template is rendered. The result maps a template's file name to the manifests it produced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
from helm_python import _native  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "autoresearch-operator"
RELEASE, NAMESPACE = "ar", "research"

Rendered = dict[str, list[dict[str, Any]]]


def render_files(
    values: dict[str, Any] | None = None, *, api_versions: Sequence[str] = ()
) -> dict[str, str]:
    """Template file name (e.g. "deployment.yaml", "NOTES.txt") -> its rendered text."""
    opts: dict[str, Any] = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True}
    if api_versions:
        opts["api_versions"] = list(api_versions)
    with helm.Chart.load(CHART) as chart:
        # Chart.render does not expose api_versions, but the library's render options do (they
        # become .Capabilities.APIVersions, as with `helm template --api-versions`); the
        # ServiceMonitor tests fail if that ever stops working.
        raw = _native.call_string(
            "helm_render", chart._raw(), json.dumps(values) if values else None, json.dumps(opts)
        )
    files: dict[str, str] = json.loads(raw)
    return {Path(name).name: text for name, text in files.items()}


def render(values: dict[str, Any] | None = None, *, api_versions: Sequence[str] = ()) -> Rendered:
    """Template file name -> the Kubernetes objects it rendered (NOTES.txt left out)."""
    return {
        name: [doc for doc in yaml.safe_load_all(text) if doc]
        for name, text in render_files(values, api_versions=api_versions).items()
        if name.endswith(".yaml")
    }


def objects(rendered: Rendered) -> list[dict[str, Any]]:
    return [doc for docs in rendered.values() for doc in docs]


def one(rendered: Rendered, kind: str) -> dict[str, Any]:
    found = [doc for doc in objects(rendered) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
