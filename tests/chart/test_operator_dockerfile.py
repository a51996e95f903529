"""operator/Dockerfile, read statically (it cannot be built here): it matches what the chart and
the operator expect."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from helm_render import one, render

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "operator" / "Dockerfile").read_text()
PACKAGE = ROOT / "operator" / "autoresearch_operator"
# import name -> distribution name, where they differ; urllib3 comes with kubernetes.
DISTRIBUTIONS = {"git": "gitpython", "yaml": "pyyaml", "prometheus_client": "prometheus-client"}
TRANSITIVE = {"urllib3"}


def instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", joined, re.MULTILINE)]


def pinned_packages() -> dict[str, str]:
    pins: dict[str, str] = {}
    for run in instructions("RUN"):
        if "pip install" in run and "==" in run:
            pins.update(re.findall(r"([A-Za-z0-9_.-]+)==([^\s]+)", run))
    return {name.lower(): version for name, version in pins.items()}


def test_base_image_is_pinned_to_a_patch_release():
    (arg,) = [a for a in instructions("ARG") if a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.\d+\.\d+-slim-\w+", arg), arg


def test_entrypoint_runs_the_operator_as_the_user_the_chart_expects():
    assert instructions("ENTRYPOINT") == ['["autoresearch", "operator"]']
    (user,) = instructions("USER")
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    uid, gid = pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    assert user == f"{uid}:{gid}" == "10001:10001"
    assert min(uid, gid) >= 10000  # no user of the host or of the base image
    assert pod["securityContext"]["fsGroup"] == gid  # the state volume is writable
    run = " ".join(instructions("RUN"))
    assert f"groupadd --gid {gid} " in run and f"useradd --uid {uid} --gid {gid} " in run


def test_the_baseline_train_py_is_where_the_operator_reads_it():
    env = " ".join(instructions("ENV"))
    trainer_dir = re.search(r"AUTORESEARCH_TRAINER_DIR=(\S+)", env).group(1)
    assert f"trainer-image/train.py {trainer_dir}/train.py" in instructions("COPY")


def test_every_third_party_module_the_operator_imports_is_installed_and_pinned():
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level: what `autoresearch` loads
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"autoresearch_operator", "__future__"}
    needed = {DISTRIBUTIONS.get(name, name) for name in third_party - TRANSITIVE}
    assert needed, "found no imports: the scan is broken"
    assert needed <= set(pinned_packages()), f"not installed: {needed - set(pinned_packages())}"
