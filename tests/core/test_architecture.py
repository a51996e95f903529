"""The package's shape: core/ (records, ledger, policy, journal, git history, loop, the
interfaces the loop needs) imports neither Kubernetes, an LLM client nor a terminal UI, and
points only down: the adapters beside it import core, never the reverse."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "operator" / "autoresearch_operator" / "core"
OUTSIDE_CORE_ALLOWED = {"spec", "contest_spec"}  # the schemas: plain pydantic, every layer


def test_core_loads_with_kubernetes_openai_rich_and_kopf_unimportable():
    modules = sorted(p.stem for p in CORE.glob("*.py") if p.stem != "__init__")
    code = (
        "import sys\n"
        "for name in ('kubernetes', 'openai', 'rich', 'kopf'):\n"
        "    sys.modules[name] = None  # any import of them raises ImportError\n"
        + "".join(f"import autoresearch_operator.core.{m}\n" for m in modules)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert {"loop", "ledger", "policy", "journal", "records", "gitrepo"} <= set(modules)


def test_core_imports_nothing_from_the_adapters():
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                top = (node.module or "").split(".")[0]
                assert top in OUTSIDE_CORE_ALLOWED, f"{path.name} imports ..{node.module}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "autoresearch_operator."
            ):
                assert node.module.startswith("autoresearch_operator.core"), path.name
