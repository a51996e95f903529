import copy
from pathlib import Path

from autoresearch_operator.crd import build_crd
from autoresearch_operator.crd_reference import COMMAND, render, render_reference

ROOT = Path(__file__).resolve().parents[2]


def _schema(crd):
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _paths(node, path):
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}"
        yield from _paths(child, f"{path}.{name}")
    if "items" in node:
        yield from _paths(node["items"], f"{path}[]")


def _row(doc, path):
    (row,) = [line for line in doc.splitlines() if line.startswith(f"| `{path}` |")]
    return [cell.strip() for cell in row.strip("|").split(" | ")]


def test_committed_reference_is_generated_from_the_crd():
    committed = (ROOT / "docs" / "crd-reference.md").read_text()
    assert committed == render(), f"run: make docs  (or .venv/bin/{COMMAND})"


def test_every_spec_and_status_field_has_a_row():
    doc = render()
    schema = _schema(build_crd())
    for top in ("spec", "status"):
        paths = list(_paths(schema["properties"][top], top))
        assert len(paths) > 10
        missing = [p for p in paths if f"| `{p}` |" not in doc]
        assert missing == []


def test_a_row_shows_type_default_constraints_and_description():
    doc = render()
    assert _row(doc, "spec.proposer.maxRetries") == [
        "`spec.proposer.maxRetries`", "integer", "`5`", ">= 0; <= 20", "",
        "Retries on 429, 5xx and timeouts.",
    ]  # fmt: skip
    # no API server default where the operator's own (the chart's values) fills the field in
    assert _row(doc, "spec.trainer.timeBudgetSeconds")[2:4] == ["", ">= 1; <= 86400"]
    assert "operator's default (chart value trainer.timeBudgetSeconds), else 300" in _row(
        doc, "spec.trainer.timeBudgetSeconds"
    )[5]
    assert "one of `openai`, `mutate`" in _row(doc, "spec.proposer.type")
    assert _row(doc, "spec.proposer.timeoutSeconds")[3] == "> 0"  # exclusiveMinimum
    assert _row(doc, "spec.programRef.name")[4] == "yes"


def test_cel_rules_and_printer_columns_are_listed():
    doc = render()
    rules = doc.split("## Validation rules")[1].split("\n## ")[0]
    assert "set exactly one of spec.program and spec.programRef" in rules
    assert "\\|\\|" in rules, "a || inside a table cell must be escaped or it splits the row"
    columns = doc.split("## Printer columns")[1]
    assert "| Best | number | `.status.best.valBpb` | Best val_bpb |" in columns


def test_a_changed_schema_changes_the_reference():
    crd = copy.deepcopy(build_crd())
    trainer = _schema(crd)["properties"]["spec"]["properties"]["trainer"]
    trainer["properties"]["timeBudgetSeconds"]["maximum"] = 600
    trainer["properties"]["queueName"]["description"] = "Queue for <org> jobs | Kueue."
    doc = render_reference(crd)
    assert doc != render()
    assert _row(doc, "spec.trainer.timeBudgetSeconds")[3] == ">= 1; <= 600"
    assert _row(doc, "spec.trainer.queueName")[5] == "Queue for &lt;org&gt; jobs \\| Kueue."
